"""Quantized frozen bases (QLoRA): the block projections of a LoRA run stored in 8 or 4 bits.

``model { quantize = int8 | nf4 }`` stores the kernels of ``q k v o gate up down`` in every
layer as a qwix ``QArray`` (integer codes plus scales) in place of the compute-dtype array, at
the same state path. Embeddings, norms, biases and the head stay in the compute dtype, as
bitsandbytes leaves them. Each projection dequantizes its kernel when it runs (`project`), so
only one layer's kernel exists in the compute dtype at a time; the adapters, their gradients
and the optimizer state stay float32.

The numerics are qwix's (Google's JAX quantization library, the one Tunix's QLoRA uses):

    int8  symmetric absmax, one scale per output channel (max|w| / 127.5): |error| <= scale / 2
    nf4   4-bit NormalFloat codes, one absmax scale per block of consecutive inputs of an output
          channel: QLoRA's NF4 with its block size of 64 (bitsandbytes blocks 64 consecutive
          elements of the row-major ``[out, in]`` weight, the same groups). A projection whose
          input width 64 does not divide gets the largest block below 64 that divides it
          (`nf4_block`: 48 for 96, 43 for 688, 1 for a prime width), so every channel has whole
          blocks and none straddles two channels. Scales are kept in the compute dtype, not
          double-quantized: 0.53 bytes a weight instead of 0.52 (at blocks of 64).

A 4-bit code takes half a byte on the device (XLA packs ``uint4``; measured on the CPU).
Quantizing is done tensor by tensor as a checkpoint is read (`converter`), so a load never
holds the whole base in a wider dtype.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import qwix
from flax import nnx

__all__ = [
    "QUANTIZED",
    "NF4_BLOCK",
    "nf4_block",
    "is_quantized",
    "quantize_kernel",
    "dequantize",
    "project",
    "quantize_model",
    "converter",
    "bytes_per_weight",
]

# the projections a quantized base stores quantized: every block projection (attn.q ... mlp.down)
QUANTIZED = ("q", "k", "v", "o", "gate", "up", "down")
NF4_BLOCK = 64  # inputs per nf4 scale, as QLoRA (when 64 divides the width: `nf4_block`)


def nf4_block(width: int) -> int:
    """Inputs per nf4 scale of a projection with ``width`` inputs: the largest block of at most
    `NF4_BLOCK` that divides ``width`` (64 for every width 64 divides; 48 for 96, 43 for 688, 1
    for a prime width). One rule for the quantizer and for `sftc plan`'s memory estimate."""
    return next(b for b in range(min(NF4_BLOCK, width), 0, -1) if width % b == 0)


def is_quantized(value) -> bool:
    return isinstance(value, qwix.QArray)


def _how(kind: str, din: int) -> dict:
    if kind == "int8":
        return {"qtype": jnp.int8, "channelwise_axes": (1,)}
    if kind == "nf4":
        return {"qtype": "nf4", "channelwise_axes": (1,), "tiled_axes": {0: nf4_block(din)}}
    raise ValueError(f"unknown quantization {kind!r}; use int8 or nf4")


@functools.partial(jax.jit, static_argnums=(1, 2))
def _quantize(kernel: jax.Array, kind: str, dtype) -> qwix.QArray:
    how = _how(kind, kernel.shape[0])
    return qwix.quantize(kernel.astype(jnp.float32), how.pop("qtype"), scale_dtype=dtype, **how)


def quantize_kernel(kernel, kind: str, dtype=jnp.bfloat16) -> qwix.QArray:
    """A ``[in, out]`` kernel as a `qwix.QArray` of ``kind``, dequantizing to ``dtype``."""
    if isinstance(kernel, jax.ShapeDtypeStruct):
        return jax.eval_shape(lambda k: _quantize(k, kind, jnp.dtype(dtype)), kernel)
    return _quantize(jnp.asarray(kernel), kind, jnp.dtype(dtype))


def dequantize(value) -> jax.Array:
    """The kernel in its dequantized dtype (the identity for a plain array)."""
    return qwix.dequantize(value) if is_quantized(value) else value


def project(inputs: jax.Array, kernel, dtype) -> jax.Array:
    """``inputs @ kernel`` in ``dtype``, dequantizing a quantized kernel for this product only.

    The dequantized kernel is recomputed in the backward pass rather than saved, so the
    gradient of the inputs does not keep a compute-dtype copy of every layer's kernel alive."""
    if not is_quantized(kernel):
        return inputs @ kernel
    return _dequantized_product(inputs.astype(dtype), kernel)


@jax.checkpoint
def _dequantized_product(inputs, kernel):
    return inputs @ qwix.dequantize(kernel).astype(inputs.dtype)


def _projections(model: nnx.Module):
    for layer in model.layers:
        for block_name, names in (("attn", ("q", "k", "v", "o")), ("mlp", ("gate", "up", "down"))):
            block = getattr(layer, block_name)
            for name in names:
                yield getattr(block, name)


def quantize_model(model: nnx.Module, kind: str, dtype=None) -> nnx.Module:
    """Store every block projection's kernel of ``model`` as ``kind`` (in place; returns it).

    Works on an abstract model (inside ``nnx.eval_shape``) too. ``dtype``: what the kernels
    dequantize to (default: the model's compute dtype)."""
    dtype = jnp.dtype(dtype or model.dtype)
    for linear in _projections(model):
        if not is_quantized(linear.kernel.get_value()):
            linear.kernel.set_value(quantize_kernel(linear.kernel.get_value(), kind, dtype))
    return model


def converter(kind: str, dtype) -> Callable[[tuple, jax.Array], object]:
    """For `runtime.checkpoints.hf_checkpoint.load_pretrained`: quantize each block projection's kernel as
    it is read."""
    dtype = jnp.dtype(dtype)

    def convert(key_path: tuple, array: jax.Array):
        quantized = (
            len(key_path) == 5 and key_path[0] == "layers" and key_path[3] in QUANTIZED and key_path[4] == "kernel"
        )
        return quantize_kernel(array, kind, dtype) if quantized else array

    return convert


def bytes_per_weight(kind: str | None, dtype_bytes: int, width: int) -> float:
    """Device bytes a weight of a projection with ``width`` inputs takes when stored as ``kind``,
    its share of the scales included (for the memory plan)."""
    if kind is None:
        return float(dtype_bytes)
    if kind == "int8":
        return 1.0  # + one scale per output channel: negligible
    return 0.5 + dtype_bytes / nf4_block(width)
