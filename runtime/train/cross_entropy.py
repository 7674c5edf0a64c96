"""Token cross-entropy and argmax-accuracy over the vocabulary, with a hand-written gradient.

``losses, correct = cross_entropy(logits, targets)`` for logits ``[T, V]``
(float32) and integer targets ``[T]``:

* ``losses[t] = logsumexp(logits[t]) - logits[t, targets[t]]``
* ``correct[t] = argmax(logits[t]) == targets[t]`` (the first maximum, as
  ``jnp.argmax``: a target tied with an earlier maximum is not correct)

Same numbers as the plain jnp expressions; cheaper on CPU, where the vocabulary
passes dominate: ``jnp.argmax`` is a variadic (value, index) reduction that XLA's
CPU backend does not vectorise (about as slow as the vocabulary matmul at 8k
entries), so "correct" is computed from the row maximum, which the
log-sum-exp needs anyway; and the gradient ``(softmax - onehot) * g`` is one
elementwise pass over the saved logits instead of autodiff's several.

``loss_sum, correct_sum = chunked_cross_entropy(logits_of, x, weight, targets, mask, chunks,
head_trains)`` is the training loss from the final hidden states instead: the head and the
loss run over ``chunks`` slices of the positions in turn, and the gradient of each slice
(for the hidden states, and the head's weight when it trains) is computed in the same pass,
so neither the logits of the whole micro-batch nor their gradient ever exist at once, and
nothing is recomputed for the backward pass. With a 49k vocabulary the logits are the
largest tensors of a step (8 x 256 tokens: 384 MiB each in float32, and the CPU compiler
keeps several); `logit_chunks` picks how many slices keep one under `LOGITS_CHUNK_BYTES`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["cross_entropy", "chunked_cross_entropy", "logit_chunks", "LOGITS_CHUNK_BYTES"]

LOGITS_CHUNK_BYTES = 64 * 2**20  # float32 logits of one slice of a micro-batch, at most


@jax.custom_vjp
def cross_entropy(logits: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(float32 losses ``[T]``, bool correct ``[T]``); differentiable in ``logits`` only."""
    return _forward(logits, targets)[0]


def _forward(logits, targets):
    targets = targets.astype(jnp.int32)
    row_max = jnp.max(logits, axis=-1)
    lse = row_max + jnp.log(jnp.sum(jnp.exp(logits - row_max[:, None]), axis=-1))
    target_logit = jnp.take_along_axis(logits, targets[:, None], axis=-1)[:, 0]
    vocab = jax.lax.broadcasted_iota(jnp.int32, logits.shape, 1)
    earlier_max = jnp.any((logits == row_max[:, None]) & (vocab < targets[:, None]), axis=-1)
    correct = (target_logit == row_max) & ~earlier_max
    return (lse - target_logit, correct), (logits, lse, targets)


def _backward(residuals, cotangents):
    logits, lse, targets = residuals
    g_losses, _ = cotangents
    vocab = jax.lax.broadcasted_iota(jnp.int32, logits.shape, 1)
    onehot = (vocab == targets[:, None]).astype(logits.dtype)
    return (jnp.exp(logits - lse[:, None]) - onehot) * g_losses[:, None], None


cross_entropy.defvjp(_forward, _backward)


def logit_chunks(batch: int, length: int, vocab: int) -> int:
    """The fewest slices of ``length`` positions (a divisor) whose float32 logits for ``batch``
    rows fit `LOGITS_CHUNK_BYTES` (one slice per position at most)."""
    for chunks in range(1, length + 1):
        if length % chunks == 0 and batch * (length // chunks) * vocab * 4 <= LOGITS_CHUNK_BYTES:
            return chunks
    return length


def chunked_cross_entropy(logits_of, x, weight, targets, mask, chunks: int, head_trains: bool):
    """(sum of ``mask``-weighted token losses, sum of ``mask``-weighted correct tokens).

    ``x``: final hidden states ``[B*L, D]``; ``logits_of(x_slice, weight)``: their float32
    logits; ``targets``, ``mask``: ``[B, L]``. Differentiable in ``x``, and in ``weight`` when
    ``head_trains`` (else its gradient is zero and never computed)."""

    def run(x, weight, with_grads: bool):
        b, length = targets.shape
        width = length // chunks
        xs = x.reshape(b, chunks, width, -1).swapaxes(0, 1)
        ts = targets.reshape(b, chunks, width).swapaxes(0, 1)
        ms = mask.astype(jnp.float32).reshape(b, chunks, width).swapaxes(0, 1)

        def one(carry, piece):
            loss_sum, right, dweight = carry
            x_piece, t, m = piece
            x_piece, t, m = x_piece.reshape(b * width, -1), t.reshape(-1), m.reshape(-1)
            if not with_grads:
                logits = logits_of(x_piece, weight)
            elif head_trains:
                logits, pull = jax.vjp(logits_of, x_piece, weight)
            else:
                logits, pull = jax.vjp(lambda v: logits_of(v, weight), x_piece)
            (losses, correct), (_, lse, t) = _forward(logits, t)
            carry = (loss_sum + jnp.sum(losses * m), right + jnp.sum(correct.astype(jnp.float32) * m), dweight)
            if not with_grads:
                return carry, None
            vocab = jax.lax.broadcasted_iota(jnp.int32, logits.shape, 1)
            dlogits = (jnp.exp(logits - lse[:, None]) - (vocab == t[:, None]).astype(logits.dtype)) * m[:, None]
            grads = pull(dlogits)
            if head_trains:
                carry = carry[:2] + (dweight + grads[1].astype(jnp.float32),)
            return carry, grads[0].reshape(b, width, -1)

        zero = jnp.zeros((), jnp.float32)
        start = (zero, zero, jnp.zeros(weight.shape, jnp.float32) if with_grads and head_trains else zero)
        (loss_sum, right, dweight), dxs = jax.lax.scan(one, start, (xs, ts, ms))
        if not with_grads:
            return loss_sum, right
        dx = dxs.swapaxes(0, 1).reshape(x.shape)
        return (loss_sum, right), (dx, dweight)

    @jax.custom_vjp
    def loss(x, weight):
        return run(x, weight, False)

    def forward(x, weight):
        return run(x, weight, True)

    def backward(residuals, cotangents):
        dx, dweight = residuals
        g = cotangents[0]
        dweight = (dweight * g).astype(weight.dtype) if head_trains else jnp.zeros_like(weight)
        return (dx * g).astype(x.dtype), dweight

    loss.defvjp(forward, backward)
    return loss(x, weight)
