"""Rotary position embeddings, with the `linear` and `llama3` frequency scalings.

The inverse frequencies are computed once in numpy (a constant of the compiled
program); `rope_tables` turns per-token positions into cos/sin tables and
`apply_rope` rotates the two halves of each head, as Hugging Face Llama does
(``rotate_half``, not interleaved pairs).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from runtime.models.config import ModelConfig

__all__ = ["inverse_frequencies", "rope_tables", "apply_rope"]


def inverse_frequencies(config: ModelConfig) -> np.ndarray:
    """float32 ``[head_dim // 2]`` inverse frequencies, scaled per ``config.rope_scaling``."""
    dim = config.head_dim
    exponents = np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / dim
    inv_freq = (1.0 / (config.rope_theta**exponents)).astype(np.float32)
    scaling = config.rope_scaling_dict
    rope_type = scaling.get("rope_type", "default")
    if rope_type == "linear":
        inv_freq = inv_freq / np.float32(scaling["factor"])
    elif rope_type == "llama3":
        factor = scaling["factor"]
        low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
        old_len = scaling["original_max_position_embeddings"]
        low_wavelen, high_wavelen = old_len / low, old_len / high
        wavelen = 2 * math.pi / inv_freq
        scaled = np.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
        inv_freq = np.where(medium, smoothed, scaled)
    return np.asarray(inv_freq, dtype=np.float32)


def rope_tables(positions: jnp.ndarray, inv_freq: np.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """cos, sin of shape ``[*positions.shape, head_dim]`` (float32)."""
    freqs = positions[..., None].astype(jnp.float32) * jnp.asarray(inv_freq)
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb), jnp.sin(emb)


def apply_rope(x: jnp.ndarray, cos: jnp.ndarray, sin: jnp.ndarray) -> jnp.ndarray:
    """Rotate ``x`` of shape ``[batch, length, heads, head_dim]`` by tables ``[batch, length, head_dim]``.

    Computed in float32, returned in ``x.dtype``.
    """
    xf = x.astype(jnp.float32)
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-xf[..., half:], xf[..., :half]], axis=-1)
    out = xf * cos[:, :, None, :] + rotated * sin[:, :, None, :]
    return out.astype(x.dtype)
