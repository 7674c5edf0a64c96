"""Autoregressive generation with a KV cache: greedy or sampled, stopping on EOS. The one decoder
of evaluation, `sftc generate` and `sftc chat`.

`generate` takes prompts as token lists, left-pads them into a batch (prompt
length rounded up to a bucket so few shapes compile), runs one prefill call
and a `lax.while_loop` of one-token decode steps inside a single jitted
function (compiled once per batch size, prompt bucket, length, greedy or not
and top-k; temperature and top-p are runtime values), and stops as soon as
every row has produced an EOS. `generate_many` runs any number of prompts
through it in length-sorted batches.

`generate_padded` is the same on an already padded ``[B, P]`` array with an
attention mask; left, right or mixed padding all work because padding slots
are masked out of the cache and positions count real tokens only.

`stream` yields one prompt's tokens as they are chosen (`sftc chat`). It calls
the same `_prefill` and `_advance` functions as the while-loop, each jitted
once per shape, from a Python loop: the tokens, the padding and the key
sequence are those of `generate` for that prompt, and the consumer can stop
at any token (Ctrl-C) without waiting for the compiled loop to finish. A host
callback inside the while-loop was the other way; it cannot be stopped early
and would tie every batched generation to a host round trip per token.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from runtime.models.transformer import Transformer, init_cache

__all__ = ["Sampling", "GREEDY", "generate", "generate_many", "generate_padded", "stream"]


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

    def nucleus(logits):
        keys = _ordered_bits(logits)
        return jnp.where(keys < _top_p_threshold(logits, keys, top_p), neg, logits)

    return jax.lax.cond(jnp.asarray(top_p) < 1.0, nucleus, lambda logits: logits, logits)  # top_p 1: no work


def _ordered_bits(x: jax.Array) -> jax.Array:
    """float32 values as uint32 keys in the same order (negative floats' bits inverted, the sign bit
    set on the others)."""
    bits = jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.uint32)
    return jnp.where((bits >> 31) == 1, ~bits, bits | jnp.uint32(0x80000000))


def _top_p_threshold(logits: jax.Array, keys: jax.Array, top_p) -> jax.Array:
    """Per row, the key (`_ordered_bits`) of the smallest logit top-p keeps: the largest logit whose
    tokens at or above it hold at least ``top_p`` of the probability, which is where the smallest
    prefix of the sorted vocabulary reaching ``top_p`` ends (ties with it kept; at least one token).

    Found by halving the range of keys 32 times, each a masked sum over the vocabulary: a sort of a
    49k vocabulary cost ~0.3 s per decode step of a batch of 32 on 2 CPU cores."""
    probs = jax.nn.softmax(logits, axis=-1)

    def halve(_, bounds):
        lo, hi = bounds  # the mass at or above lo reaches top_p; above hi it does not
        mid = lo + (hi - lo + 1) // 2
        enough = jnp.sum(jnp.where(keys >= mid, probs, 0.0), axis=-1, keepdims=True) >= top_p
        return jnp.where(enough, mid, lo), jnp.where(enough, hi, mid - 1)

    bounds = (jnp.min(keys, axis=-1, keepdims=True), jnp.max(keys, axis=-1, keepdims=True))
    return jax.lax.fori_loop(0, 32, halve, bounds)[0]


def _next_token(logits, sampling: Sampling, temperature, top_p, rng) -> jax.Array:
    if sampling.greedy:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    filtered = _filter_logits(logits, sampling, temperature, top_p)
    return jax.random.categorical(rng, filtered, axis=-1).astype(jnp.int32)


def _prefill(
    model: Transformer, ids, mask, rng, temperature, top_p, *, max_new_tokens: int, sampling: Sampling, cache_dtype
):
    """Run the padded prompt into a fresh cache and choose each row's first new token."""
    b, p = ids.shape
    cache = init_cache(model.config, b, p + max_new_tokens, cache_dtype)
    mask = mask.astype(jnp.int32)
    positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
    last = jnp.max(jnp.where(mask > 0, jnp.arange(p)[None], 0), axis=1)
    logits, cache = model.decode(ids, positions, mask, cache, last=last)
    n_real = jnp.sum(mask, axis=1)
    rng, sub = jax.random.split(rng)
    token = _next_token(logits[:, 0], sampling, temperature, top_p, sub)
    return token, n_real, cache, rng


def _advance(model: Transformer, token, step, n_real, live, cache, rng, temperature, top_p, *, sampling: Sampling):
    """Write ``token`` (the ``step``-th new one) into the cache and choose the next; ``live`` 0 masks a stopped row."""
    pos = (n_real + step)[:, None]
    logits, cache = model.decode(token[:, None], pos, live.astype(jnp.int32)[:, None], cache)
    rng, sub = jax.random.split(rng)
    return _next_token(logits[:, 0], sampling, temperature, top_p, sub), cache, rng


@functools.partial(jax.jit, static_argnames=("graphdef", "max_new_tokens", "sampling", "cache_dtype"))
def _generate_jit(
    graphdef,
    state,
    ids,
    mask,
    eos_ids,
    rng,
    temperature,
    top_p,
    *,
    max_new_tokens: int,
    sampling: Sampling,
    cache_dtype,
):
    # `sampling` here only carries what must be static: greedy or not, and top_k.
    model: Transformer = nnx.merge(graphdef, state)
    b = ids.shape[0]
    token, n_real, cache, rng = _prefill(
        model,
        ids,
        mask,
        rng,
        temperature,
        top_p,
        max_new_tokens=max_new_tokens,
        sampling=sampling,
        cache_dtype=cache_dtype,
    )
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
        token, cache, rng = _advance(
            model, token, step, n_real, ~was_done, cache, rng, temperature, top_p, sampling=sampling
        )
        return step + 1, token, out, done, cache, rng

    done0 = jnp.zeros((b,), bool)
    carry = (jnp.zeros((), jnp.int32), token, out, done0, cache, rng)
    step, _, out, done, _, _ = jax.lax.while_loop(cond, body, carry)
    return out, step


@functools.partial(jax.jit, static_argnames=("graphdef", "max_new_tokens", "sampling", "cache_dtype"))
def _prefill_jit(
    graphdef, state, ids, mask, rng, temperature, top_p, *, max_new_tokens: int, sampling: Sampling, cache_dtype
):
    return _prefill(
        nnx.merge(graphdef, state),
        ids,
        mask,
        rng,
        temperature,
        top_p,
        max_new_tokens=max_new_tokens,
        sampling=sampling,
        cache_dtype=cache_dtype,
    )


@functools.partial(jax.jit, static_argnames=("graphdef", "sampling"), donate_argnames=("cache",))
def _advance_jit(graphdef, state, token, step, n_real, cache, rng, temperature, top_p, *, sampling: Sampling):
    return _advance(
        nnx.merge(graphdef, state),
        token,
        step,
        n_real,
        jnp.ones_like(token),
        cache,
        rng,
        temperature,
        top_p,
        sampling=sampling,
    )


def _bucket(n: int, multiple: int) -> int:
    return max(multiple, -(-n // multiple) * multiple)


def _key(rng: jax.Array | int | None) -> jax.Array:
    return jax.random.key(rng or 0) if rng is None or isinstance(rng, int) else rng


def _decoding(model: Transformer, sampling: Sampling, rng) -> tuple:
    """What every compiled call takes: graphdef and state, the key, the runtime temperature and
    top_p, and the static part of ``sampling`` (greedy or not, top_k: what changes the program)."""
    graphdef, state = nnx.split(model)
    static = Sampling() if sampling.greedy else Sampling(temperature=1.0, top_k=sampling.top_k)
    return (
        graphdef,
        state,
        _key(rng),
        jnp.float32(sampling.temperature or 1.0),
        jnp.float32(sampling.top_p),
        static,
        jnp.dtype(model.dtype).name,
    )


def _left_pad(prompts: Sequence[Sequence[int]], bucket: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    width = _bucket(max(len(p) for p in prompts), bucket)
    ids = np.full((len(prompts), width), pad_id, np.int32)
    mask = np.zeros((len(prompts), width), np.int32)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = p
        mask[i, width - len(p) :] = 1
    return ids, mask


def generate_padded(
    model: Transformer,
    input_ids,
    attention_mask,
    max_new_tokens: int,
    eos_ids: Sequence[int] = (),
    sampling: Sampling = GREEDY,
    rng: jax.Array | int | None = None,
) -> list[list[int]]:
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
    eos = sorted(set(int(e) for e in eos_ids)) or [-1]
    graphdef, state, rng, temperature, top_p, static, cache_dtype = _decoding(model, sampling, rng)
    out, _ = _generate_jit(
        graphdef,
        state,
        ids,
        mask,
        jnp.asarray(eos, jnp.int32),
        rng,
        temperature,
        top_p,
        max_new_tokens=int(max_new_tokens),
        sampling=static,
        cache_dtype=cache_dtype,
    )
    eos_set = set(eos)
    results = []
    for row in np.asarray(out).tolist():
        tokens = []
        for t in row:
            tokens.append(t)
            if t in eos_set:
                break
        results.append(tokens)
    return results


def generate(
    model: Transformer,
    prompt_ids_list: Sequence[Sequence[int]],
    max_new_tokens: int,
    eos_ids: Sequence[int] = (),
    sampling: Sampling = GREEDY,
    rng: jax.Array | int | None = None,
    pad_id: int = 0,
    bucket: int = 16,
) -> list[list[int]]:
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
    ids, mask = _left_pad(prompts, bucket, pad_id)
    return generate_padded(model, ids, mask, max_new_tokens, eos_ids, sampling, rng)


def generate_many(
    model: Transformer,
    prompt_ids_list: Sequence[Sequence[int]],
    max_new_tokens: int,
    eos_ids: Sequence[int] = (),
    sampling: Sampling = GREEDY,
    rng: jax.Array | int | None = None,
    pad_id: int = 0,
    batch_size: int = 32,
    share: tuple[int, int] = (0, 1),
) -> list[list[int] | None]:
    """`generate` over any number of prompts, ``batch_size`` at a time; results in the input order.

    Prompts are sorted by length so that a batch needs little padding; a short
    last batch is filled with copies so its shape (and compilation) is reused.
    Batch ``b`` samples with ``fold_in(rng, b)``: the same prompts in the same
    order give the same tokens, whoever asks (evaluation or ``sftc generate``).
    ``share = (i, n)`` decodes only batches ``b`` with ``b % n == i`` (one process's share of
    the batches); the other prompts' results are None.
    """
    index, count = share
    prompts = [list(map(int, p)) for p in prompt_ids_list]
    if not prompts:
        return []
    key = _key(rng)
    order = sorted(range(len(prompts)), key=lambda i: (len(prompts[i]), i))
    size = max(1, min(int(batch_size), len(prompts)))
    outputs: list[list[int] | None] = [None if count > 1 else [] for _ in prompts]
    for b, start in enumerate(range(0, len(order), size)):
        if b % count != index:
            continue
        idx = order[start : start + size]
        batch = [prompts[i] for i in idx]
        batch += [batch[-1]] * (size - len(batch))
        new = generate(
            model,
            batch,
            max_new_tokens,
            eos_ids=eos_ids,
            sampling=sampling,
            rng=jax.random.fold_in(key, b),
            pad_id=pad_id,
        )
        for i, tokens in zip(idx, new):
            outputs[i] = tokens
    return outputs


def stream(
    model: Transformer,
    prompt: Sequence[int],
    max_new_tokens: int,
    eos_ids: Sequence[int] = (),
    sampling: Sampling = GREEDY,
    rng: jax.Array | int | None = None,
    pad_id: int = 0,
    bucket: int = 16,
) -> Iterator[int]:
    """Yield the new tokens of one prompt as they are chosen: what ``generate(model, [prompt], ...)[0]``
    returns (the stop token included), one token at a time.

    The prompt is padded as `generate` pads it and goes through the same prefill and
    step functions with the same key sequence; each is compiled once per prompt bucket
    and ``max_new_tokens``. Stopping the iteration stops the decoding.
    """
    if max_new_tokens <= 0:
        return
    ids, mask = _left_pad([list(map(int, prompt))], bucket, pad_id)
    graphdef, state, rng, temperature, top_p, static, cache_dtype = _decoding(model, sampling, rng)
    token, n_real, cache, rng = _prefill_jit(
        graphdef,
        state,
        jnp.asarray(ids),
        jnp.asarray(mask),
        rng,
        temperature,
        top_p,
        max_new_tokens=int(max_new_tokens),
        sampling=static,
        cache_dtype=cache_dtype,
    )
    stops = set(int(e) for e in eos_ids)
    for step in range(int(max_new_tokens)):
        chosen = int(token[0])
        yield chosen
        if chosen in stops or step + 1 == max_new_tokens:
            return
        token, cache, rng = _advance_jit(
            graphdef, state, token, jnp.int32(step), n_real, cache, rng, temperature, top_p, sampling=static
        )
