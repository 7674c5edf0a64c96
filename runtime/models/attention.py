"""Masked grouped-query attention: the mask, an einsum (XLA) path and jax.nn's.

One mask rule serves training, packed sequences, padding and the KV cache:
query i may attend to key j when

* ``key_index[j] <= query_index[i]``      (causal, in storage order),
* ``key_segment[j] == query_segment[i]``  (same packed example; 0 marks padding), and
* ``query_pos[i] - key_pos[j] < window``  (only for sliding-window layers).

A query always sees itself, so no row of the softmax is empty (padding rows
produce finite garbage that the loss masks out).

Example (two examples packed in one row, then padding)::

    segment_ids = [[1, 1, 1, 2, 2, 0]]
    positions   = [[0, 1, 2, 0, 1, 0]]
    # token 3 (first of example 2) attends only to itself.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["make_mask", "attend", "positions_from_segments"]


def positions_from_segments(segment_ids: jnp.ndarray) -> jnp.ndarray:
    """Positions that restart at 0 wherever the segment id changes (int32 ``[batch, length]``)."""
    length = segment_ids.shape[1]
    index = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), segment_ids.shape)
    starts = jnp.concatenate(
        [jnp.ones_like(segment_ids[:, :1], dtype=bool), segment_ids[:, 1:] != segment_ids[:, :-1]],
        axis=1)
    start_index = jax.lax.cummax(jnp.where(starts, index, 0), axis=1)
    return index - start_index


def make_mask(query_segment, key_segment, query_index, key_index,
              query_pos=None, key_pos=None, window: int | None = None) -> jnp.ndarray:
    """Boolean ``[batch, queries, keys]`` mask (see the module docstring).

    ``*_segment``/``*_pos``: ``[batch, n]``; ``*_index``: ``[n]`` or ``[batch, n]``.
    """
    qi = query_index if query_index.ndim == 2 else query_index[None]
    ki = key_index if key_index.ndim == 2 else key_index[None]
    mask = ki[:, None, :] <= qi[:, :, None]
    mask = mask & (key_segment[:, None, :] == query_segment[:, :, None])
    if window is not None:
        mask = mask & ((query_pos[:, :, None] - key_pos[:, None, :]) < window)
    return mask


def attend(q: jnp.ndarray, k: jnp.ndarray, v: jnp.ndarray, mask: jnp.ndarray,
           impl: str = "xla") -> jnp.ndarray:
    """Scaled dot-product attention with grouped KV heads.

    q: ``[batch, T, heads, head_dim]``; k, v: ``[batch, S, kv_heads, head_dim]``;
    mask: bool ``[batch, T, S]``. Returns ``[batch, T, heads, head_dim]`` in q's dtype.
    The softmax runs in float32 whatever the compute dtype.

    ``impl``: ``"xla"`` (einsum here; causal self-attention longer than one
    query block skips the key blocks above the diagonal), ``"dot_product_attention"`` (jax.nn, its
    default backend) or ``"cudnn"`` (jax.nn with cuDNN flash attention; GPU only).
    """
    if impl == "xla":
        t, s = q.shape[1], k.shape[1]
        block = query_block(t)
        if t == s and t > block:
            return _attend_blocked(q, k, v, mask, block)
        return _attend_einsum(q, k, v, mask)
    # cuDNN flash attention serves self-attention (training, scoring); cached decoding
    # (queries != keys) uses jax.nn's default backend.
    implementation = "cudnn" if impl == "cudnn" and q.shape[1] == k.shape[1] else None
    return jax.nn.dot_product_attention(q, k, v, mask=mask[:, None], implementation=implementation)


def query_block(length: int) -> int:
    """Query block size for causal self-attention: 64, or larger so there are at most 16 blocks."""
    return max(64, -(-length // 16))


def _attend_blocked(q, k, v, mask, block: int):
    """Causal self-attention by query blocks, each against only its key prefix.

    Valid because `make_mask` is causal in storage order: queries in
    ``[start, stop)`` never see keys at ``>= stop``, so the blocks above the
    diagonal (about half the work) are never computed.
    """
    outs = []
    for start in range(0, q.shape[1], block):
        stop = min(start + block, q.shape[1])
        outs.append(_attend_einsum(q[:, start:stop], k[:, :stop], v[:, :stop],
                                   mask[:, start:stop, :stop]))
    return jnp.concatenate(outs, axis=1)


def _attend_einsum(q, k, v, mask):
    b, t, n, h = q.shape
    kv = k.shape[2]
    q = q.reshape(b, t, kv, n // kv, h)
    scores = jnp.einsum("btkgh,bskh->bkgts", q, k, preferred_element_type=jnp.float32)
    scores = scores * (h ** -0.5)
    scores = jnp.where(mask[:, None, None], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgts,bskh->btkgh", probs, v)
    return out.reshape(b, t, n, h)
