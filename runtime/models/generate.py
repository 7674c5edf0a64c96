"""Batched autoregressive generation with a KV cache: greedy or sampled, stopping on EOS.

`generate` takes prompts as token lists, left-pads them into a batch (prompt
length rounded up to a bucket so few shapes compile), runs one prefill call
and a `lax.while_loop` of one-token decode steps inside a single jitted
function (compiled once per batch size, prompt bucket, length, greedy or not
and top-k; temperature and top-p are runtime values), and stops as soon as
every row has produced an EOS.

`generate_padded` is the same on an already padded ``[B, P]`` array with an
attention mask; left, right or mixed padding all work because padding slots
are masked out of the cache and positions count real tokens only.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .transformer import Transformer, init_cache

__all__ = ["Sampling", "GREEDY", "generate", "generate_padded"]


@dataclasses.dataclass(frozen=True)
class Sampling:
    """Decoding settings. ``temperature == 0`` means greedy (argmax).

    ``top_k = 0`` and ``top_p = 1.0`` disable those filters. Filters apply in
    the order temperature, top-k, top-p (as in transformers).
    """

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if self.top_k < 0:
            raise ValueError("top_k must be >= 0")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


GREEDY = Sampling()


def _filter_logits(logits: jax.Array, sampling: Sampling, temperature=None, top_p=None) -> jax.Array:
    """Temperature, then top-k (static), then top-p; removed tokens get the lowest logit.

    ``temperature``/``top_p`` may be traced values (they default to ``sampling``'s).
    """
    temperature = sampling.temperature if temperature is None else temperature
    top_p = sampling.top_p if top_p is None else top_p
    logits = logits / temperature
    neg = jnp.finfo(logits.dtype).min
    if 0 < sampling.top_k < logits.shape[-1]:
        kth = jax.lax.top_k(logits, sampling.top_k)[0][..., -1:]
        logits = jnp.where(logits < kth, neg, logits)
    sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    cumulative = jnp.cumsum(probs, axis=-1)
    # keep the smallest prefix whose mass reaches top_p (always at least one token)
    keep = (cumulative - probs) < top_p
    threshold = jnp.min(jnp.where(keep, sorted_logits, jnp.inf), axis=-1, keepdims=True)
    filtered = jnp.where(logits < threshold, neg, logits)
    return jnp.where(top_p < 1.0, filtered, logits)


def _next_token(logits, sampling: Sampling, temperature, top_p, rng) -> jax.Array:
    if sampling.greedy:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    filtered = _filter_logits(logits, sampling, temperature, top_p)
    return jax.random.categorical(rng, filtered, axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("graphdef", "max_new_tokens", "sampling", "cache_dtype"))
def _generate_jit(graphdef, state, ids, mask, eos_ids, rng, temperature, top_p, *,
                  max_new_tokens: int, sampling: Sampling, cache_dtype):
    # `sampling` here only carries what must be static: greedy or not, and top_k.
    model: Transformer = nnx.merge(graphdef, state)
    b, p = ids.shape
    cache = init_cache(model.config, b, p + max_new_tokens, cache_dtype)
    mask = mask.astype(jnp.int32)
    positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
    logits, cache = model.decode(ids, positions, mask, cache)
    last = jnp.max(jnp.where(mask > 0, jnp.arange(p)[None], 0), axis=1)
    next_logits = logits[jnp.arange(b), last]
    n_real = jnp.sum(mask, axis=1)

    rng, sub = jax.random.split(rng)
    token = _next_token(next_logits, sampling, temperature, top_p, sub)
    out = jnp.zeros((b, max_new_tokens), jnp.int32)

    def is_eos(t):
        return jnp.any(t[:, None] == eos_ids[None, :], axis=1)

    def cond(carry):
        step, _, _, done, _, _ = carry
        return (step < max_new_tokens) & ~jnp.all(done)

    def body(carry):
        step, token, out, done, cache, rng = carry
        out = out.at[:, step].set(jnp.where(done, 0, token))
        was_done = done
        done = done | is_eos(token)
        pos = (n_real + step)[:, None]
        seg = jnp.where(was_done, 0, 1)[:, None].astype(jnp.int32)
        logits, cache = model.decode(token[:, None], pos, seg, cache)
        rng, sub = jax.random.split(rng)
        token = _next_token(logits[:, 0], sampling, temperature, top_p, sub)
        return step + 1, token, out, done, cache, rng

    done0 = jnp.zeros((b,), bool)
    carry = (jnp.zeros((), jnp.int32), token, out, done0, cache, rng)
    step, _, out, done, _, _ = jax.lax.while_loop(cond, body, carry)
    return out, step


def _bucket(n: int, multiple: int) -> int:
    return max(multiple, -(-n // multiple) * multiple)


def generate_padded(model: Transformer, input_ids, attention_mask, max_new_tokens: int,
                    eos_ids: Sequence[int] = (), sampling: Sampling = GREEDY,
                    rng: jax.Array | int | None = None) -> list[list[int]]:
    """Generate from a padded batch ``input_ids [B, P]`` with ``attention_mask`` (1 = token).

    Returns the new tokens of each row: up to ``max_new_tokens``, ending with
    the first EOS if one was produced (the EOS is included, as transformers does).
    """
    if max_new_tokens <= 0:
        return [[] for _ in range(len(input_ids))]
    ids = jnp.asarray(input_ids, jnp.int32)
    mask = jnp.asarray(attention_mask, jnp.int32)
    if ids.ndim != 2 or ids.shape != mask.shape:
        raise ValueError(f"input_ids {ids.shape} and attention_mask {mask.shape} must both be [B, P]")
    if not bool(jnp.all(jnp.sum(mask, axis=1) > 0)):
        raise ValueError("every prompt needs at least one token")
    if rng is None:
        rng = 0
    if isinstance(rng, int):
        rng = jax.random.key(rng)
    eos = sorted(set(int(e) for e in eos_ids)) or [-1]
    graphdef, state = nnx.split(model)
    static = Sampling(temperature=0.0 if sampling.greedy else 1.0, top_k=sampling.top_k)
    out, _ = _generate_jit(graphdef, state, ids, mask, jnp.asarray(eos, jnp.int32), rng,
                           jnp.float32(sampling.temperature or 1.0), jnp.float32(sampling.top_p),
                           max_new_tokens=int(max_new_tokens), sampling=static,
                           cache_dtype=jnp.dtype(model.dtype).name)
    out = np.asarray(out)
    eos_set = set(eos)
    results = []
    for row in out.tolist():
        tokens = []
        for t in row:
            tokens.append(t)
            if t in eos_set:
                break
        results.append(tokens)
    return results


def generate(model: Transformer, prompt_ids_list: Sequence[Sequence[int]], max_new_tokens: int,
             eos_ids: Sequence[int] = (), sampling: Sampling = GREEDY,
             rng: jax.Array | int | None = None, pad_id: int = 0,
             bucket: int = 16) -> list[list[int]]:
    """Continue each prompt; returns one list of new token ids per prompt.

    Prompts are left-padded to a common length rounded up to ``bucket``. A
    row stops after its first token in ``eos_ids`` (included in its output);
    the call stops when all rows have stopped or after ``max_new_tokens``.

    >>> generate(model, [[1, 5, 9], [1, 7]], max_new_tokens=20, eos_ids=[2])  # doctest: +SKIP
    [[12, 40, 2], [33, 33, ...]]
    """
    prompts = [list(map(int, p)) for p in prompt_ids_list]
    if not prompts:
        return []
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    width = _bucket(max(len(p) for p in prompts), bucket)
    ids = np.full((len(prompts), width), pad_id, np.int32)
    mask = np.zeros((len(prompts), width), np.int32)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = p
        mask[i, width - len(p):] = 1
    return generate_padded(model, ids, mask, max_new_tokens, eos_ids, sampling, rng)
