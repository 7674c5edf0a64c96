"""Logits of the JAX decoder equal transformers+torch for every supported architecture."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from runtime.checkpoints.hf_checkpoint import load_pretrained
from runtime.models import forward

# the cases of tests/runtime/conftest.py ARCH_CASES (not imported: conftest is not a module to import)
ARCHS = ["llama", "llama31", "llama_bias", "llama_linear", "mistral", "qwen2", "qwen3", "smollm2"]


def _padded_batch(seed=0, vocab=256):
    rng = np.random.RandomState(seed)
    ids = rng.randint(3, vocab, size=(3, 14)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[1, 9:] = 0  # right padding
    mask[2, :5] = 0  # left padding
    ids[mask == 0] = 0
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    return ids, mask, positions


@pytest.fixture(scope="module")
def loaded(hf_checkpoint):
    cache = {}

    def get(case, **kw):
        key = (case, tuple(sorted(kw.items())))
        if key not in cache:
            directory, _ = hf_checkpoint(case)
            cache[key] = load_pretrained(directory, **kw)
        return cache[key]

    return get


@pytest.mark.parametrize("case", ARCHS)
def test_logits_match_transformers_on_padded_batch(case, hf_checkpoint, loaded):
    _, torch_model = hf_checkpoint(case)
    model, config = loaded(case)
    ids, mask, positions = _padded_batch()
    with torch.no_grad():
        ref = torch_model(
            torch.tensor(ids), attention_mask=torch.tensor(mask), position_ids=torch.tensor(positions)
        ).logits.numpy()
    ours = np.asarray(forward(model, ids, attention_mask=mask))
    assert ours.shape == (3, 14, config.vocab_size)
    real = mask.astype(bool)
    assert np.abs(ref[real]).max() > 1.0  # the comparison is not trivially small numbers
    np.testing.assert_allclose(ours[real], ref[real], atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "case", [c if c in ("llama", "qwen3") else pytest.param(c, marks=pytest.mark.slow) for c in ARCHS]
)
def test_packed_segments_equal_examples_alone(case, loaded):
    model, _ = loaded(case)
    rng = np.random.RandomState(1)
    lengths = [6, 6, 6]  # equal, so "alone" compiles once; positions still restart at 6 and 12
    examples = [rng.randint(3, 256, size=n) for n in lengths]
    packed = np.concatenate(examples + [np.zeros(2, np.int64)])[None]
    segments = np.concatenate([np.full(n, i + 1) for i, n in enumerate(lengths)] + [np.zeros(2)])[None]
    logits = np.asarray(forward(model, packed, segment_ids=segments))
    start = 0
    for ex in examples:
        alone = np.asarray(forward(model, ex[None]))[0]
        np.testing.assert_allclose(logits[0, start : start + len(ex)], alone, atol=1e-4, rtol=0)
        start += len(ex)
    # and it is not the unsegmented result
    plain = np.asarray(forward(model, packed))
    assert np.abs(plain[0, 6:18] - logits[0, 6:18]).max() > 1e-2


@pytest.mark.parametrize("case", ["llama", "mistral", "qwen2"])
def test_attention_implementations_agree(case, loaded):
    xla, _ = loaded(case)
    jnn, config = loaded(case, attention_impl="dot_product_attention")
    assert config.attention_impl == "dot_product_attention"
    ids, mask, _ = _padded_batch(seed=3)
    segments = np.array([[1] * 6 + [2] * 8, [1] * 9 + [0] * 5, [0] * 5 + [1] * 9])
    for seg in (mask, segments):
        a = np.asarray(forward(xla, ids, segment_ids=seg))
        b = np.asarray(forward(jnn, ids, segment_ids=seg))
        real = seg > 0
        np.testing.assert_allclose(a[real], b[real], atol=1e-4, rtol=0)


def test_bfloat16_forward_close_to_float32(hf_checkpoint, loaded):
    """bf16 parameters and compute stay as close to float32 as torch's own bf16 does.

    Stated tolerance: max |logit error| <= 1.5 x torch-bf16's max error and
    <= 5% of the largest |logit|; mean error <= 1% of it.
    """
    import copy

    _, torch_model = hf_checkpoint("llama31")
    f32, _ = loaded("llama31")
    bf16, _ = loaded("llama31", dtype="bfloat16")
    assert bf16.embed.embedding[...].dtype == jnp.bfloat16
    ids, mask, positions = _padded_batch(seed=5)
    a = np.asarray(forward(f32, ids, attention_mask=mask))
    b = np.asarray(forward(bf16, ids, attention_mask=mask))
    assert b.dtype == np.float32
    with torch.no_grad():
        t16 = copy.deepcopy(torch_model).to(torch.bfloat16)
        t = (
            t16(torch.tensor(ids), attention_mask=torch.tensor(mask), position_ids=torch.tensor(positions))
            .logits.float()
            .numpy()
        )
    real = mask.astype(bool)
    ours_err = np.abs(a[real] - b[real])
    torch_err = np.abs(a[real] - t[real])
    scale = np.abs(a[real]).max()
    assert ours_err.max() <= 1.5 * torch_err.max(), (ours_err.max(), torch_err.max())
    assert ours_err.max() <= 0.05 * scale and ours_err.mean() <= 0.01 * scale
    assert (a[real].argmax(-1) == b[real].argmax(-1)).mean() > 0.9


@pytest.mark.parametrize("case", ["llama31", "mistral"])
def test_long_packed_rows_match_transformers(case, hf_checkpoint, loaded):
    """Length 200: the blocked causal attention path (query blocks of 64), packed and padded."""
    _, torch_model = hf_checkpoint(case)
    model, _ = loaded(case)
    rng = np.random.RandomState(11)
    lengths = [90, 70, 25]
    examples = [rng.randint(3, 256, size=n) for n in lengths]
    packed = np.concatenate(examples + [np.zeros(15, np.int64)])[None]
    segments = np.concatenate([np.full(n, i + 1) for i, n in enumerate(lengths)] + [np.zeros(15)])[None]
    ours = np.asarray(forward(model, packed, segment_ids=segments))
    start = 0
    for ex in examples:
        with torch.no_grad():
            ref = torch_model(torch.tensor(ex[None])).logits.numpy()[0]
        np.testing.assert_allclose(ours[0, start : start + len(ex)], ref, atol=1e-4, rtol=0)
        start += len(ex)


def test_blocked_attention_equals_full():
    import jax

    from runtime.models.attention import _attend_blocked, _attend_einsum, attend, make_mask

    rng = np.random.RandomState(0)
    q = jnp.asarray(rng.randn(2, 200, 4, 16), jnp.float32)
    k = jnp.asarray(rng.randn(2, 200, 2, 16), jnp.float32)
    v = jnp.asarray(rng.randn(2, 200, 2, 16), jnp.float32)
    seg = jnp.asarray(np.repeat([[1, 2, 3, 0], [1, 1, 2, 2]], 50, axis=1))
    pos = jnp.asarray(rng.randint(0, 50, size=(2, 200)))
    idx = jnp.arange(200)
    full_fn = jax.jit(_attend_einsum)
    blocked_fn = jax.jit(lambda q, k, v, m: _attend_blocked(q, k, v, m, 64))
    for window in (None, 7):
        mask = make_mask(seg, seg, idx, idx, pos, pos, window)
        full = np.asarray(full_fn(q, k, v, mask))
        np.testing.assert_allclose(np.asarray(blocked_fn(q, k, v, mask)), full, atol=1e-5)
        np.testing.assert_allclose(np.asarray(jax.jit(attend)(q, k, v, mask)), full, atol=1e-5)
    grads = [
        jax.jit(jax.grad(lambda q, f=f: (f(q, k, v, mask) ** 2).sum()))(q)
        for f in (_attend_einsum, lambda *a: _attend_blocked(*a, 64))
    ]
    np.testing.assert_allclose(np.asarray(grads[0]), np.asarray(grads[1]), atol=1e-4)


def test_float32_parameters_with_bfloat16_compute():
    """param_dtype=float32, dtype=bfloat16 computes exactly like bf16 parameters."""
    import jax
    from flax import nnx

    from runtime.models import ModelConfig, build

    config = ModelConfig.llama(layers=2, dim=64, heads=4, kv_heads=2, ffn=96, vocab=128)
    mixed = build(config, 0, dtype="bfloat16", param_dtype="float32")
    assert mixed.embed.embedding[...].dtype == jnp.float32
    pure = build(config, 0, dtype="bfloat16")
    nnx.update(pure, jax.tree.map(lambda a: a.astype(jnp.bfloat16), nnx.state(mixed, nnx.Param)))
    ids = np.random.RandomState(0).randint(0, 128, (2, 9))
    np.testing.assert_array_equal(np.asarray(forward(mixed, ids)), np.asarray(forward(pure, ids)))
