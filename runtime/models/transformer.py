"""The Llama-family decoder in Flax NNX: one configurable module for every architecture.

Shapes use these letters: B batch, L length, T = B*L tokens, D embed,
N heads, K kv heads, H head_dim, F mlp, V vocab, S cache length.

The residual stream stays 2-D ``[T, D]`` between the projections (cheaper
gradients on CPU); it becomes ``[B, L, N, H]`` only inside attention.

Parameters (all 2-D kernels are ``[in, out]``)::

    embed.embedding                     [V, D]      (vocab, embed)
    layers[i].attn_norm.scale           [D]         (embed,)
    layers[i].attn.{q,k,v,o}.kernel     [D, N*H] / [D, K*H] / [N*H, D]
    layers[i].attn.{q,k,v,o}.bias       (qkv_bias / o_bias)
    layers[i].attn.{q,k}_norm.scale     [H]         (qk_norm, Qwen3)
    layers[i].mlp_norm.scale            [D]
    layers[i].mlp.{gate,up,down}.kernel [D, F] / [D, F] / [F, D]
    final_norm.scale                    [D]
    lm_head.kernel                      [D, V]      (absent with tied embeddings)
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from runtime.models.attention import attend, make_mask, positions_from_segments
from runtime.models.config import ModelConfig
from runtime.models.quantize import is_quantized, project
from runtime.models.rope import apply_rope, inverse_frequencies, rope_tables
from runtime.models.sharding import constrain, partitioned

SEGMENTS = "segments"  # the masks' entry holding self-attention's segment ids (for fused kernels)


def mask_key(window: int | None) -> str:
    """The masks' entry for a sliding window (None: full causal). Strings, so the masks stay a
    pytree JAX can flatten (it sorts dict keys; None and ints do not sort together)."""
    return "full" if window is None else f"window {window}"


__all__ = ["Transformer", "KVCache", "build", "forward", "init_cache"]


class _Dtypes(NamedTuple):
    compute: jnp.dtype
    param: jnp.dtype


class RMSNorm(nnx.Module):
    """``scale * (x / rms(x))``, normalised in float32 and cast back (as Hugging Face does)."""

    def __init__(self, dim: int, eps: float, *, dtype: _Dtypes, axis: str = "embed"):
        self.eps = eps
        self.dtype = dtype.compute
        self.scale = nnx.Param(jnp.ones((dim,), dtype.param), out_sharding=(axis,), eager_sharding=False)

    def __call__(self, x: jax.Array) -> jax.Array:
        xf = x.astype(jnp.float32)
        var = jnp.mean(xf * xf, axis=-1, keepdims=True)
        y = (xf * jax.lax.rsqrt(var + self.eps)).astype(self.dtype)
        return self.scale[...].astype(self.dtype) * y


class Linear(nnx.Linear):
    """``nnx.Linear`` whose kernel may be stored quantized (a quantized base: `quantize`)."""

    def __call__(self, inputs: jax.Array, out_sharding=None) -> jax.Array:
        kernel = self.kernel.get_value()
        if not is_quantized(kernel):
            return super().__call__(inputs, out_sharding)
        y = project(inputs, kernel, self.dtype)
        if self.bias is not None:
            y = y + self.bias[...].astype(y.dtype)
        return y


def _linear(
    din: int, dout: int, names: tuple[str, str], bias: bool, config: ModelConfig, dtype: _Dtypes, rngs: nnx.Rngs
) -> Linear:
    return Linear(
        din,
        dout,
        use_bias=bias,
        dtype=dtype.compute,
        param_dtype=dtype.param,
        kernel_init=partitioned(nnx.initializers.normal(config.initializer_range), names),
        bias_init=partitioned(nnx.initializers.zeros_init(), names[1:]),
        rngs=rngs,
    )


class Attention(nnx.Module):
    def __init__(self, config: ModelConfig, *, dtype, rngs: nnx.Rngs):
        c = config
        d, n, k, h = c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = n, k, h
        self.impl = c.attention_impl
        self.q = _linear(d, n * h, ("embed", "heads"), c.qkv_bias, c, dtype, rngs)
        self.k = _linear(d, k * h, ("embed", "kv_heads"), c.qkv_bias, c, dtype, rngs)
        self.v = _linear(d, k * h, ("embed", "kv_heads"), c.qkv_bias, c, dtype, rngs)
        self.o = _linear(n * h, d, ("heads", "embed"), c.o_bias, c, dtype, rngs)
        if c.qk_norm:
            self.q_norm = RMSNorm(h, c.rms_norm_eps, dtype=dtype, axis="head_dim")
            self.k_norm = RMSNorm(h, c.rms_norm_eps, dtype=dtype, axis="head_dim")
        else:
            self.q_norm = self.k_norm = None

    def __call__(self, x_td, shape, cos, sin, mask, kv=None, segments=None, window=None):
        b, length = shape
        n, k, h = self.num_heads, self.num_kv_heads, self.head_dim
        q = self.q(x_td).reshape(b, length, n, h)
        key = self.k(x_td).reshape(b, length, k, h)
        val = self.v(x_td).reshape(b, length, k, h)
        if self.q_norm is not None:
            q, key = self.q_norm(q), self.k_norm(key)
        q, key = apply_rope(q, cos, sin), apply_rope(key, cos, sin)
        q = constrain(q, ("batch", "length", "heads", "head_dim"))
        key = constrain(key, ("batch", "length", "kv_heads", "head_dim"))
        new_kv = None
        if kv is not None:
            cache_k, cache_v, index = kv
            key = jax.lax.dynamic_update_slice(cache_k, key.astype(cache_k.dtype), (0, index, 0, 0))
            val = jax.lax.dynamic_update_slice(cache_v, val.astype(cache_v.dtype), (0, index, 0, 0))
            new_kv = (key, val)
        out = attend(q, key, val, mask, self.impl, segments=segments, window=window)
        out = constrain(out, ("batch", "length", "heads", "head_dim"))
        return self.o(out.reshape(b * length, n * h)), new_kv


class MLP(nnx.Module):
    def __init__(self, config: ModelConfig, *, dtype, rngs: nnx.Rngs):
        c = config
        self.gate = _linear(c.hidden_size, c.intermediate_size, ("embed", "mlp"), c.mlp_bias, c, dtype, rngs)
        self.up = _linear(c.hidden_size, c.intermediate_size, ("embed", "mlp"), c.mlp_bias, c, dtype, rngs)
        self.down = _linear(c.intermediate_size, c.hidden_size, ("mlp", "embed"), c.mlp_bias, c, dtype, rngs)

    def __call__(self, x_td):
        hidden = jax.nn.silu(self.gate(x_td)) * self.up(x_td)
        hidden = constrain(hidden, ("batch", "mlp"))
        return self.down(hidden)


class Block(nnx.Module):
    def __init__(self, config: ModelConfig, layer: int, *, dtype, rngs: nnx.Rngs):
        self.window = config.layer_window(layer)
        self.attn_norm = RMSNorm(config.hidden_size, config.rms_norm_eps, dtype=dtype)
        self.attn = Attention(config, dtype=dtype, rngs=rngs)
        self.mlp_norm = RMSNorm(config.hidden_size, config.rms_norm_eps, dtype=dtype)
        self.mlp = MLP(config, dtype=dtype, rngs=rngs)

    def __call__(self, x_td, shape, cos, sin, masks, kv=None):
        h, kv = self.attn(
            self.attn_norm(x_td),
            shape,
            cos,
            sin,
            masks[mask_key(self.window)],
            kv,
            segments=masks.get(SEGMENTS),
            window=self.window,
        )
        x_td = x_td + h
        x_td = x_td + self.mlp(self.mlp_norm(x_td))
        return constrain(x_td, ("batch", "embed")), kv


class KVCache(NamedTuple):
    """Functional key/value cache for `Transformer.decode` (a pytree).

    keys/values: per layer ``[B, S, K, H]``; segment: ``[B, S]`` (1 = a real
    token, 0 = padding or not yet written); positions: ``[B, S]``; index: the
    next slot to write (int32 scalar).
    """

    keys: tuple
    values: tuple
    segment: jax.Array
    positions: jax.Array
    index: jax.Array


def init_cache(config: ModelConfig, batch: int, length: int, dtype="float32") -> KVCache:
    shape = (batch, length, config.num_kv_heads, config.head_dim)
    zeros = tuple(jnp.zeros(shape, dtype) for _ in range(config.num_layers))
    return KVCache(
        zeros,
        tuple(jnp.zeros(shape, dtype) for _ in range(config.num_layers)),
        jnp.zeros((batch, length), jnp.int32),
        jnp.zeros((batch, length), jnp.int32),
        jnp.zeros((), jnp.int32),
    )


def _rematerialized(layer, x, shape, cos, sin, masks, remat: str):
    """A decoder layer under `jax.checkpoint`: `full` saves only the layer's input for
    the backward pass, `dots` also its matmul outputs."""
    policy = (
        jax.checkpoint_policies.nothing_saveable
        if remat == "full"
        else jax.checkpoint_policies.dots_with_no_batch_dims_saveable
    )

    def run(layer, x, cos, sin, masks):
        return layer(x, shape, cos, sin, masks, None)[0]

    return nnx.remat(run, policy=policy)(layer, x, cos, sin, masks)


class Transformer(nnx.Module):
    """Decoder-only transformer; ``model(input_ids)`` gives logits ``[B, L, V]`` (float32).

    Call signature (training and scoring)::

        logits = model(input_ids,            # int [B, L]
                       positions=None,       # int [B, L]; default restarts at each segment
                       segment_ids=None,     # int [B, L]; 0 = padding, 1.. = packed example id
                       attention_mask=None)  # alias: HF-style 1/0 mask, used as segment_ids

    Example: two examples packed into one row, with a pad token::

        input_ids   = [[5, 6, 7, 8, 9, 0]]
        segment_ids = [[1, 1, 1, 2, 2, 0]]
        positions   = [[0, 1, 2, 0, 1, 0]]   # the default for these segment_ids
        # logits[0, 3:5] equal model([[8, 9]])[0]

    For jit/grad, use ``graphdef, state = nnx.split(model)`` and
    ``nnx.merge(graphdef, state)(...)`` inside the traced function.
    """

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs, dtype="float32", param_dtype=None):
        dtype = _Dtypes(jnp.dtype(dtype), jnp.dtype(param_dtype or dtype))
        c = config
        self.config = c
        self.dtype = dtype.compute
        self.param_dtype = dtype.param
        self.embed = nnx.Embed(
            c.vocab_size,
            c.hidden_size,
            dtype=dtype.compute,
            param_dtype=dtype.param,
            embedding_init=partitioned(nnx.initializers.normal(c.initializer_range), ("vocab", "embed")),
            rngs=rngs,
        )
        self.layers = nnx.List([Block(c, i, dtype=dtype, rngs=rngs) for i in range(c.num_layers)])
        self.final_norm = RMSNorm(c.hidden_size, c.rms_norm_eps, dtype=dtype)
        if c.tie_embeddings:
            self.lm_head = None
        else:
            self.lm_head = _linear(c.hidden_size, c.vocab_size, ("embed", "vocab"), False, c, dtype, rngs)

    # ------------------------------------------------------------------ core
    def _masks(self, q_seg, k_seg, q_idx, k_idx, q_pos, k_pos):
        """The mask of each sliding window the layers use (None: full causal); for self-attention
        also the segment ids (under `SEGMENTS`), which fused kernels mask by instead."""
        windows = {self.config.layer_window(i) for i in range(self.config.num_layers)}
        masks = {mask_key(w): make_mask(q_seg, k_seg, q_idx, k_idx, q_pos, k_pos, w) for w in windows}
        if q_seg is k_seg:
            masks[SEGMENTS] = q_seg
        return masks

    def head_weight(self) -> jax.Array:
        """The output projection: the embedding ``[V, D]`` (tied) or the head's kernel ``[D, V]``."""
        return self.embed.embedding[...] if self.lm_head is None else self.lm_head.kernel[...]

    def logits_of(self, x_td: jax.Array, weight: jax.Array) -> jax.Array:
        """Float32 logits ``[T, V]`` of final hidden states ``[T, D]`` through ``weight``
        (`head_weight`): the one rule for the head, which the chunked loss applies per chunk."""
        x_td, weight = x_td.astype(self.dtype), weight.astype(self.dtype)
        logits = x_td @ (weight.T if self.lm_head is None else weight)
        return constrain(logits, ("batch", "vocab")).astype(jnp.float32)

    def _trunk(self, input_ids, positions, masks, cache: KVCache | None):
        """The final hidden states ``[B*L, D]`` (normalised) and the new cache entries."""
        b, length = input_ids.shape
        x = self.embed(input_ids.reshape(b * length))
        x = constrain(x, ("batch", "embed"))
        cos, sin = rope_tables(positions, inverse_frequencies(self.config))
        new_keys, new_values = [], []
        for i, layer in enumerate(self.layers):
            if cache is None and self.config.remat != "off":
                x = _rematerialized(layer, x, (b, length), cos, sin, masks, self.config.remat)
                continue
            kv = None if cache is None else (cache.keys[i], cache.values[i], cache.index)
            x, kv = layer(x, (b, length), cos, sin, masks, kv)
            if kv is not None:
                new_keys.append(kv[0])
                new_values.append(kv[1])
        return self.final_norm(x), (tuple(new_keys), tuple(new_values))

    def __call__(self, input_ids, positions=None, segment_ids=None, attention_mask=None):
        """Float32 logits ``[B, L, V]``."""
        input_ids, positions, masks = self._inputs(input_ids, positions, segment_ids, attention_mask)
        x, _ = self._trunk(input_ids, positions, masks, None)
        return self.logits_of(x, self.head_weight()).reshape(*input_ids.shape, -1)

    def hidden(self, input_ids, positions=None, segment_ids=None) -> jax.Array:
        """The final hidden states ``[B*L, D]`` (what `logits_of` projects): the training loss
        projects them chunk by chunk, so the logits of a whole batch never exist at once."""
        input_ids, positions, masks = self._inputs(input_ids, positions, segment_ids, None)
        return self._trunk(input_ids, positions, masks, None)[0]

    def _inputs(self, input_ids, positions, segment_ids, attention_mask):
        input_ids = jnp.asarray(input_ids)
        if segment_ids is None:
            segment_ids = attention_mask if attention_mask is not None else jnp.ones_like(input_ids)
        segment_ids = jnp.asarray(segment_ids, jnp.int32)
        if positions is None:
            positions = positions_from_segments(segment_ids)
        positions = jnp.asarray(positions, jnp.int32)
        index = jnp.arange(input_ids.shape[1], dtype=jnp.int32)
        masks = self._masks(segment_ids, segment_ids, index, index, positions, positions)
        return input_ids, positions, masks

    def decode(self, input_ids, positions, segment_ids, cache: KVCache, last: jax.Array | None = None):
        """Run ``L`` new tokens against a KV cache; returns ``(logits [B, L, V], cache)``.

        The tokens are written to cache slots ``[cache.index, cache.index + L)``.
        ``segment_ids`` is 1 for real tokens and 0 for padding (padding is never
        attended to by later tokens). Prefill is one call with the whole
        (padded) prompt; each decode step is a call with ``L = 1``. ``last`` (``[B]``
        indices into ``L``) keeps only those tokens' logits, ``[B, 1, V]``: a prefill needs
        the last prompt token's, and the head of a 49k vocabulary over every prompt token
        would cost as much as a third of the prompt's forward pass.
        """
        b, length = input_ids.shape
        segment_ids = jnp.asarray(segment_ids, jnp.int32)
        positions = jnp.asarray(positions, jnp.int32)
        start = cache.index
        k_seg = jax.lax.dynamic_update_slice(cache.segment, segment_ids, (0, start))
        k_pos = jax.lax.dynamic_update_slice(cache.positions, positions, (0, start))
        s = cache.segment.shape[1]
        q_idx = start + jnp.arange(length, dtype=jnp.int32)
        k_idx = jnp.arange(s, dtype=jnp.int32)
        # A padding query (segment 0) would otherwise see the empty cache slots; it
        # attends to itself only through the same-segment rule, which is harmless.
        masks = self._masks(segment_ids, k_seg, q_idx, k_idx, positions, k_pos)
        x, (keys, values) = self._trunk(input_ids, positions, masks, cache)
        if last is None:
            logits = self.logits_of(x, self.head_weight()).reshape(b, length, -1)
        else:
            logits = self.logits_of(x.reshape(b, length, -1)[jnp.arange(b), last], self.head_weight())[:, None]
        return logits, KVCache(keys, values, k_seg, k_pos, start + length)


def build(config: ModelConfig, rngs: nnx.Rngs | int = 0, dtype="float32", param_dtype=None) -> Transformer:
    """A fresh, randomly initialised model (the language's ``init llama(...)``).

    ``dtype`` is the compute dtype; parameters are stored in ``param_dtype``
    (default: the same), e.g. float32 master weights with bfloat16 compute.

    Weights follow Hugging Face's Llama init: normal(0, initializer_range) for
    every kernel and the embedding, zeros for biases, ones for norms.
    """
    if isinstance(rngs, int):
        rngs = nnx.Rngs(params=rngs)
    return Transformer(config, rngs=rngs, dtype=dtype, param_dtype=param_dtype)


@functools.partial(jax.jit, static_argnums=0)
def _forward_jit(graphdef, state, input_ids, positions, segment_ids):
    return nnx.merge(graphdef, state)(input_ids, positions=positions, segment_ids=segment_ids)


def forward(model: Transformer, input_ids, positions=None, segment_ids=None, attention_mask=None):
    """``model(...)`` compiled with ``jax.jit`` (once per shape): logits ``[B, L, V]`` float32.

    Same arguments as `Transformer.__call__`. Calling the model directly runs
    op by op, which is fine inside a traced function but slow on its own.
    """
    if segment_ids is None and attention_mask is not None:
        segment_ids = attention_mask
    graphdef, state = nnx.split(model)
    as_int = lambda a: None if a is None else jnp.asarray(a, jnp.int32)  # noqa: E731
    return _forward_jit(graphdef, state, as_int(input_ids), as_int(positions), as_int(segment_ids))
