"""KV-cache generation: greedy equals transformers' generate; batching changes nothing; sampling;
streaming is the same decoding one token at a time."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch

from runtime.checkpoints.hf_checkpoint import load_pretrained
from runtime.models import ModelConfig, Sampling, build, generate, generate_many, generate_padded, stream

PROMPTS = [[1, 17, 45, 99, 3, 201, 77], [1, 5], [1, 250, 13, 13, 88, 42, 7, 19, 160, 4, 8]]


def _hf_greedy(torch_model, prompts, max_new, eos):
    """transformers' greedy generate on a left-padded batch, new tokens cut after the first EOS."""
    width = max(map(len, prompts))
    ids = torch.zeros((len(prompts), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p)
        mask[i, width - len(p) :] = 1
    with torch.no_grad():
        out = torch_model.generate(
            ids, attention_mask=mask, max_new_tokens=max_new, do_sample=False, eos_token_id=eos, pad_token_id=0
        )
    results = []
    for row in out[:, width:].tolist():
        cut = []
        for t in row:
            cut.append(t)
            if t in eos:
                break
        results.append(cut)
    return results


@pytest.mark.parametrize(
    "case",
    [
        "smollm2",
        *(
            pytest.param(c, marks=pytest.mark.slow)  # one family by default
            for c in ("llama31", "mistral", "qwen2", "qwen3")
        ),
    ],
)
def test_greedy_matches_transformers_and_batching(case, hf_checkpoint):
    directory, torch_model = hf_checkpoint(case)
    model, _ = load_pretrained(directory)
    # a frequent token as EOS so that some rows stop early (checked below)
    free = generate(model, PROMPTS, max_new_tokens=20, eos_ids=[])
    counts = np.bincount(np.concatenate(free), minlength=256)
    eos = [int(counts.argmax())]
    ours = generate(model, PROMPTS, max_new_tokens=20, eos_ids=eos)
    ref = _hf_greedy(torch_model, PROMPTS, 20, eos)
    assert ours == ref
    assert all(len(r) <= 20 for r in ours) and any(r[-1] == eos[0] for r in ours)
    assert [generate(model, [p], max_new_tokens=20, eos_ids=eos)[0] for p in PROMPTS] == ours
    assert _hf_greedy(torch_model, PROMPTS, 20, []) == free


def test_right_left_and_no_padding_agree(hf_checkpoint):
    directory, _ = hf_checkpoint("llama")
    model, _ = load_pretrained(directory)
    width = 12
    left = np.zeros((3, width), np.int32)
    right = np.zeros((3, width), np.int32)
    lmask, rmask = np.zeros_like(left), np.zeros_like(right)
    for i, p in enumerate(PROMPTS):
        left[i, width - len(p) :], lmask[i, width - len(p) :] = p, 1
        right[i, : len(p)], rmask[i, : len(p)] = p, 1
    a = generate_padded(model, left, lmask, 15)
    b = generate_padded(model, right, rmask, 15)
    c = [generate(model, [p], 15)[0] for p in PROMPTS]
    assert a == b == c
    assert all(len(r) == 15 for r in a)


def test_sampling_is_seeded_and_filters(hf_checkpoint):
    directory, _ = hf_checkpoint("qwen3")
    model, _ = load_pretrained(directory)
    hot = Sampling(temperature=1.0, top_p=0.9, top_k=50)
    a = generate(model, PROMPTS, 12, sampling=hot, rng=jax.random.key(1))
    b = generate(model, PROMPTS, 12, sampling=hot, rng=jax.random.key(1))
    c = generate(model, PROMPTS, 12, sampling=hot, rng=jax.random.key(2))
    assert a == b and a != c
    greedy = generate(model, PROMPTS, 12)
    assert a != greedy
    # a tiny top_p keeps only the most likely token: greedy, whatever the temperature
    tiny = Sampling(temperature=1.7, top_p=1e-6, top_k=50)
    assert generate(model, PROMPTS, 12, sampling=tiny, rng=4) == greedy


def test_filter_logits_keeps_the_right_tokens():
    import jax.numpy as jnp

    from runtime.models.decode import _filter_logits

    logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
    kept = lambda s: np.asarray(_filter_logits(logits, s) > -1e30)[0].tolist()  # noqa: E731
    assert kept(Sampling(temperature=1.0, top_k=2)) == [True, True, False, False]
    assert kept(Sampling(temperature=1.0, top_p=0.7)) == [True, True, False, False]
    assert kept(Sampling(temperature=1.0, top_p=0.5)) == [True, False, False, False]
    assert kept(Sampling(temperature=1.0, top_p=0.96)) == [True, True, True, True]
    with pytest.raises(ValueError):
        Sampling(top_p=0.0)


@pytest.mark.slow
def test_stream_and_generate_many_are_generate():
    # weights drawn wide (std 0.3) so greedy choices are far from ties
    model = build(
        ModelConfig.llama(layers=2, dim=64, heads=4, kv_heads=2, ffn=128, vocab=256, initializer_range=0.3), rngs=0
    )
    free = generate(model, PROMPTS, 10)
    eos = [free[0][3]]  # row 0 stops early, after (and with) the first of these
    for sampling in (Sampling(), Sampling(temperature=1.2, top_p=0.9, top_k=40)):
        for p in PROMPTS:
            one = generate(model, [p], 10, eos_ids=eos, sampling=sampling, rng=3)[0]
            assert list(stream(model, p, 10, eos_ids=eos, sampling=sampling, rng=3)) == one
    assert list(stream(model, PROMPTS[0], 10, eos_ids=eos)) == free[0][: free[0].index(eos[0]) + 1]
    # any number of prompts, in length-sorted batches, in the input order
    assert generate_many(model, PROMPTS * 2, 10, batch_size=4) == free * 2


def test_top_p_keeps_the_tokens_a_sort_of_the_vocabulary_keeps():
    """The bisection of `_top_p_threshold` against the rule it replaces: sort the logits, keep the
    smallest prefix whose probability reaches top_p (and ties with its last logit)."""
    import jax.numpy as jnp

    from runtime.models.decode import _filter_logits

    def by_sorting(logits, top_p):
        ordered = np.sort(logits, axis=-1)[:, ::-1]
        probs = np.exp(ordered - ordered.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        keep = (np.cumsum(probs, -1) - probs) < top_p
        threshold = np.where(keep, ordered, np.inf).min(-1, keepdims=True)
        return logits >= threshold

    rng = np.random.default_rng(0)
    for scale, top_p in ((1.0, 0.9), (4.0, 0.5), (0.3, 0.95), (8.0, 0.99), (2.0, 1e-6)):
        logits = (scale * rng.standard_normal((16, 3000))).astype(np.float32)
        logits[:, :5] = logits[:, :1]  # ties at the top
        kept = np.asarray(_filter_logits(jnp.asarray(logits), Sampling(temperature=1.0, top_p=top_p)) > -1e30)
        assert (kept == by_sorting(logits, top_p)).all(), (scale, top_p)
        assert kept.sum(-1).min() >= 1
