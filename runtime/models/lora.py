"""LoRA adapters for the Llama-family decoder (the language's ``adapter = lora(...)``).

Public API::

    from runtime.models import lora
    model = lora.add_lora(model, plan.model.adapter, rngs=0)   # in place; returns model
    graphdef, params, frozen = nnx.split(model, lora.trainable_filter(plan.model.adapter), ...)
    trainable, total = lora.count_params(model)
    plain = lora.merge_lora(model)       # W + scale * A @ B folded in: export = hf
    # export = peft:
    #   runtime.checkpoints.hf_checkpoint.save_peft(model, config, dir, base_model_name_or_path, plan.model.adapter)

Each targeted projection (``q k v o`` of attention, ``gate up down`` of the
MLP, in every layer) becomes a `LoraLinear`: the same ``kernel``/``bias``
variables at the same state paths (so checkpoints, the HF name table and
shardings of the base are unchanged) plus two adapter matrices::

    layers.{i}.attn.q.lora_a    [in, r]   nnx.LoRAParam, logical axes (in-axis, None)
    layers.{i}.attn.q.lora_b    [r, out]  nnx.LoRAParam, logical axes (None, out-axis)

    y = x @ W + b + scale * dropout(x) @ A @ B,    scale = alpha / r

exactly as peft's ``lora.Linear`` (``use_rslora = False``, ``lora_bias = False``).
A is initialised as peft does (``kaiming_uniform_(a=sqrt(5))`` on its
``[r, in]`` weight, i.e. uniform(-1/sqrt(in), 1/sqrt(in))), B with zeros, so the
adapted model computes exactly the base model until B is trained. Adapter
weights default to float32 (peft's ``autocast_adapter_dtype``) and are cast
to the layer's compute dtype in the forward pass.

Trainable vs frozen: adapter weights are ``nnx.LoRAParam`` (a subclass of
``nnx.Param``). ``trainable_filter(adapter)`` is ``nnx.LoRAParam`` with an
adapter and ``nnx.Param`` without (full fine-tune), so
``nnx.split(model, trainable_filter(adapter), ...)`` gives the train step's
``params`` (only A and B) and ``frozen`` (every base weight).

Dropout (``lora(dropout = p)``) in a pure, jitted step: the model holds no RNG
state (a stream inside ``frozen`` would never advance, because ``frozen`` is
not returned by the step). Instead the key is passed in for one forward::

    def loss_fn(params, frozen, batch, key):                      # inside jit / grad / scan
        model = nnx.merge(graphdef, params, frozen)
        with lora.dropout_rng(key):                              # training forward
            logits = model(batch["input_ids"], ...)

Each adapter folds its own index into the key, so q, k and v see independent
masks (as with peft's per-module ``nn.Dropout``). Without a key in context
(evaluation, generation, export) dropout is off: the forward is deterministic.
A step should derive the key from its seed, the step number and the
micro-batch index, e.g. ``fold_in(fold_in(key(seed), state.step), micro)``, so
a resumed run repeats the same masks; the same key also gives the same masks
when a rematerialised forward is recomputed.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from runtime.models.quantize import is_quantized
from runtime.models.transformer import Linear

__all__ = [
    "TARGETS",
    "LoraLinear",
    "add_lora",
    "trainable_filter",
    "count_params",
    "count_lora_params",
    "merge_lora",
    "dropout_rng",
    "lora_layers",
    "has_lora",
]

# language target -> (block attribute, projection attribute); the state path is
# layers.{i}.<block>.<projection>, as in runtime.checkpoints.hf_checkpoint.WEIGHT_TABLE.
TARGETS: dict[str, tuple[str, str]] = {
    "q": ("attn", "q"),
    "k": ("attn", "k"),
    "v": ("attn", "v"),
    "o": ("attn", "o"),
    "gate": ("mlp", "gate"),
    "up": ("mlp", "up"),
    "down": ("mlp", "down"),
}

_DROPOUT_KEY: contextvars.ContextVar = contextvars.ContextVar("lora_dropout_key", default=None)


@contextlib.contextmanager
def dropout_rng(key: jax.Array | None) -> Iterator[None]:
    """Within this context, LoRA dropout is applied with masks drawn from ``key``.

    ``key`` is a JAX PRNG key (typed or raw uint32), usually a traced argument
    of the jitted step; ``None`` turns dropout off. The context only matters
    while the model's forward is being traced or run.
    """
    token = _DROPOUT_KEY.set(key)
    try:
        yield
    finally:
        _DROPOUT_KEY.reset(token)


def _lora_a_init(key, shape, dtype):
    # peft: nn.init.kaiming_uniform_(A[r, in], a=sqrt(5)) -> bound = sqrt(6 / ((1 + 5) * in)) = 1/sqrt(in)
    bound = 1.0 / math.sqrt(shape[0])
    return jax.random.uniform(key, shape, dtype, -bound, bound)


class LoraLinear(Linear):
    """A projection plus a low-rank update; built from an existing `Linear` (plain or quantized).

    The base ``kernel``/``bias`` variables (and every setting of the base layer)
    are shared, not copied, and keep their state paths. ``index`` (static) makes
    this adapter's dropout mask independent of the others'.
    """

    def __init__(
        self,
        base: nnx.Linear,
        *,
        rank: int,
        alpha: float,
        dropout: float = 0.0,
        index: int = 0,
        rngs: nnx.Rngs,
        param_dtype: Any = jnp.float32,
    ):
        if type(base) is not Linear:
            raise TypeError(f"LoRA wraps the model's Linear projections, got {type(base).__name__}")
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {dropout}")
        for name, value in vars(base).items():
            if not name.startswith("_"):
                setattr(self, name, nnx.data(None) if value is None and name == "bias" else value)
        din, dout = base.in_features, base.out_features
        names = base.kernel.get_metadata().get("out_sharding") or (None, None)
        self.lora_a = nnx.LoRAParam(
            _lora_a_init(rngs.params(), (din, rank), jnp.dtype(param_dtype)),
            out_sharding=(names[0], None),
            eager_sharding=False,
        )
        self.lora_b = nnx.LoRAParam(
            jnp.zeros((rank, dout), jnp.dtype(param_dtype)), out_sharding=(None, names[1]), eager_sharding=False
        )
        self.rank = int(rank)
        self.alpha = float(alpha)
        self.scaling = float(alpha) / int(rank)
        self.dropout = float(dropout)
        self.index = int(index)

    def delta(self) -> jax.Array:
        """The dense update ``scale * A @ B`` ``[in, out]`` in float32."""
        a = self.lora_a[...].astype(jnp.float32)
        b = self.lora_b[...].astype(jnp.float32)
        return self.scaling * (a @ b)

    def __call__(self, inputs: jax.Array, out_sharding=None) -> jax.Array:
        y = super().__call__(inputs, out_sharding)
        x, a, b = self.promote_dtype((inputs, self.lora_a[...], self.lora_b[...]), dtype=self.dtype)
        key = _DROPOUT_KEY.get()
        if key is not None and self.dropout > 0.0:
            keep = jax.random.bernoulli(jax.random.fold_in(key, self.index), 1.0 - self.dropout, x.shape)
            x = jnp.where(keep, x / (1.0 - self.dropout), jnp.zeros((), x.dtype)).astype(x.dtype)
        return y + ((x @ a) @ b) * jnp.asarray(self.scaling, y.dtype)


def lora_layers(model: nnx.Module) -> Iterator[tuple[tuple, LoraLinear]]:
    """``(state path, LoraLinear)`` for every adapter of ``model``, in graph order."""
    for path, node in nnx.iter_graph(model):
        if isinstance(node, LoraLinear):
            yield tuple(path), node


def has_lora(model: nnx.Module) -> bool:
    return next(lora_layers(model), None) is not None


def _targets(plan) -> tuple[str, ...]:
    targets = tuple(plan.targets)
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        raise ValueError(f"unknown LoRA target(s) {', '.join(map(repr, unknown))}; targets are {', '.join(TARGETS)}")
    if not targets:
        raise ValueError("LoRA needs at least one target")
    return targets


def add_lora(model: nnx.Module, plan, rngs: nnx.Rngs | int = 0, *, param_dtype: Any = jnp.float32):
    """Wrap every target projection of every layer in a `LoraLinear` (in place); returns ``model``.

    ``plan``: a `runtime.plan.run_plan.LoraPlan` (``rank``, ``alpha``, ``dropout``,
    ``targets`` among ``q k v o gate up down``). ``rngs``: an ``nnx.Rngs`` or
    an int seed; A matrices draw from its ``params`` stream. Works on an
    abstract model too (inside ``nnx.eval_shape``), e.g. for the shardings of
    the train state. Calling it twice, or on a model with adapters, is an error.
    """
    if isinstance(rngs, int):
        rngs = nnx.Rngs(params=rngs)
    targets = _targets(plan)
    if has_lora(model):
        raise ValueError("the model already has LoRA adapters")
    index = 0
    for layer in model.layers:
        for target in TARGETS:  # fixed order: the same seed gives the same A whatever the list order
            if target not in targets:
                continue
            block_name, proj_name = TARGETS[target]
            block = getattr(layer, block_name)
            base = getattr(block, proj_name)
            setattr(
                block,
                proj_name,
                LoraLinear(
                    base,
                    rank=plan.rank,
                    alpha=plan.alpha,
                    dropout=plan.dropout,
                    index=index,
                    rngs=rngs,
                    param_dtype=param_dtype,
                ),
            )
            index += 1
    return model


def trainable_filter(adapter) -> Any:
    """The nnx filter of what the optimizer trains: ``nnx.LoRAParam`` with an adapter
    (a `LoraPlan`), ``nnx.Param`` without one (full fine-tune)."""
    return nnx.Param if adapter is None else nnx.LoRAParam


def _size(variable) -> int:
    return int(math.prod(variable.shape))


def count_params(model: nnx.Module) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts; works on abstract models.

    Trainable is the adapters' size when the model has any, else every
    parameter; total counts base and adapter parameters.
    """
    total = sum(_size(v) for _, v in nnx.to_flat_state(nnx.state(model, nnx.Param)))
    adapters = sum(_size(v) for _, v in nnx.to_flat_state(nnx.state(model, nnx.LoRAParam)))
    return (adapters if has_lora(model) else total), total


def count_lora_params(config, plan) -> int:
    """Adapter parameters a `LoraPlan` adds to a `ModelConfig` (no model built)."""
    d, f, h = config.hidden_size, config.intermediate_size, config.head_dim
    q, kv = config.num_heads * h, config.num_kv_heads * h
    shapes = {"q": (d, q), "k": (d, kv), "v": (d, kv), "o": (q, d), "gate": (d, f), "up": (d, f), "down": (f, d)}
    per_layer = sum(plan.rank * (shapes[t][0] + shapes[t][1]) for t in _targets(plan))
    return config.num_layers * per_layer


def merge_lora(model: nnx.Module) -> nnx.Module:
    """A plain model (no adapters) with ``W + scale * A @ B`` folded into each kernel.

    The result has the base model's exact structure (built by its own
    constructor, shape only, then filled), so `runtime.checkpoints.hf_checkpoint.save_pretrained`
    writes it as an ordinary checkpoint. The fold is computed in float32 and
    stored in the kernel's dtype. ``model`` is left unchanged.
    """
    from runtime.models.transformer import Transformer

    if not isinstance(model, Transformer):
        raise TypeError(f"merge_lora expects a Transformer, got {type(model).__name__}")
    merged = {}
    for path, variable in nnx.to_flat_state(nnx.state(model)):
        if is_quantized(variable.get_value()):
            raise ValueError(
                f"{'.'.join(map(str, path))} is quantized: merge the adapters into the "
                "unquantized base (runtime.train.engine.over_original_base)"
            )
    for path, layer in lora_layers(model):
        kernel = layer.kernel[...]
        merged[path + ("kernel",)] = (kernel.astype(jnp.float32) + layer.delta()).astype(kernel.dtype)
    abstract = nnx.eval_shape(
        lambda: Transformer(model.config, rngs=nnx.Rngs(0), dtype=model.dtype, param_dtype=model.param_dtype)
    )
    graphdef, _ = nnx.split(abstract)
    leaves = []
    for path, variable in nnx.to_flat_state(nnx.state(model)):
        if isinstance(variable, nnx.LoRAParam):
            continue
        if tuple(path) in merged:
            variable = variable.replace(merged[tuple(path)])
        leaves.append((path, variable))
    return nnx.merge(graphdef, nnx.from_flat_state(leaves))
