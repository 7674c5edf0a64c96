"""The one configuration of the Llama-family decoder, and its Hugging Face form.

A `ModelConfig` describes every architecture this runtime runs: Llama 2/3/3.1/3.2,
Mistral, Qwen2/2.5, Qwen3 and SmolLM2 differ only in a few switches (biases,
q/k norms, tied embeddings, rope scaling, sliding windows), which live in the
`ARCHITECTURES` table below rather than in branches of the model code.

Hugging Face `config.json` files come in two generations and both are read:

* transformers >= 5 writes ``rope_parameters = {"rope_type", "rope_theta", ...}``
  and ``dtype``;
* older checkpoints carry top-level ``rope_theta``, ``rope_scaling`` and
  ``torch_dtype``.

Example::

    >>> cfg = ModelConfig.llama(layers=2, dim=64, heads=4, kv_heads=2, ffn=128, vocab=256)
    >>> cfg.head_dim
    16
    >>> ModelConfig.from_hf_config(cfg.to_hf_config()) == cfg
    True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from runtime.plan.sftc_error import SftcError

ATTENTION_IMPLEMENTATIONS = ("auto", "xla", "dot_product_attention", "cudnn", "splash")  # see models.attention

__all__ = ["ARCHITECTURES", "Architecture", "ModelConfig", "UnsupportedModelError"]


REMAT_POLICIES = ("off", "full", "dots")


class UnsupportedModelError(SftcError, ValueError):
    """A checkpoint's configuration describes a model this runtime cannot run."""


@dataclasses.dataclass(frozen=True)
class Architecture:
    """How one Hugging Face ``model_type`` maps onto the shared decoder.

    Each field is either a fixed value (``True``/``False``) or the name of a
    boolean key of the HF config to read it from.
    """

    qkv_bias: bool | str = False
    o_bias: bool | str = False
    mlp_bias: bool | str = False
    qk_norm: bool = False
    # "all": `sliding_window` applies to every layer (Mistral);
    # "layer_types": per-layer via `layer_types` / `use_sliding_window` (Qwen).
    sliding: str | None = None
    hf_class: str = "LlamaForCausalLM"


ARCHITECTURES: Mapping[str, Architecture] = {
    "llama": Architecture(
        qkv_bias="attention_bias", o_bias="attention_bias", mlp_bias="mlp_bias", hf_class="LlamaForCausalLM"
    ),
    "mistral": Architecture(sliding="all", hf_class="MistralForCausalLM"),
    "qwen2": Architecture(qkv_bias=True, sliding="layer_types", hf_class="Qwen2ForCausalLM"),
    "qwen3": Architecture(
        qkv_bias="attention_bias",
        o_bias="attention_bias",
        qk_norm=True,
        sliding="layer_types",
        hf_class="Qwen3ForCausalLM",
    ),
}

SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")


def _freeze(mapping: Mapping[str, Any] | None) -> tuple[tuple[str, Any], ...] | None:
    if not mapping:
        return None
    return tuple(sorted(mapping.items()))


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Shape and numerics of a Llama-family decoder (immutable, hashable).

    Attributes mirror the HF names where one exists: ``num_layers`` is
    ``num_hidden_layers``, ``num_heads``/``num_kv_heads`` are
    ``num_attention_heads``/``num_key_value_heads``.

    ``rope_scaling`` is ``None`` or a sorted tuple of ``(key, value)`` pairs
    (``rope_type`` plus its parameters, e.g. ``factor``) so the config stays
    hashable; `rope_scaling_dict` gives it back as a dict.

    ``remat`` is a runtime choice too: ``"off"``, ``"full"`` (each decoder layer
    keeps only its input for the backward pass and recomputes the rest) or
    ``"dots"`` (layers keep their matmul outputs, recompute the elementwise work).

    ``attention_impl`` is a runtime choice, not part of the checkpoint: ``"auto"``
    (the accelerator's fused kernel where it serves the shapes, else ``"xla"``; see
    `runtime.models.attention.resolve`), ``"xla"`` (einsum, works everywhere),
    ``"dot_product_attention"`` (``jax.nn.dot_product_attention``), ``"cudnn"`` or
    ``"splash"``.
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    model_type: str = "llama"
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: tuple[tuple[str, Any], ...] | None = None
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False
    tie_embeddings: bool = False
    sliding_window: int | None = None
    layer_types: tuple[str, ...] | None = None
    max_position_embeddings: int = 4096
    initializer_range: float = 0.02
    bos_token_id: int | None = None
    eos_token_id: int | tuple[int, ...] | None = None
    pad_token_id: int | None = None
    attention_impl: str = "auto"
    remat: str = "off"

    def __post_init__(self):
        if self.model_type not in ARCHITECTURES:
            raise UnsupportedModelError(
                f"model_type {self.model_type!r} is not supported; supported: {', '.join(sorted(ARCHITECTURES))}"
            )
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})")
        if self.layer_types is not None and len(self.layer_types) != self.num_layers:
            raise ValueError(f"layer_types has {len(self.layer_types)} entries for {self.num_layers} layers")
        if self.remat not in REMAT_POLICIES:
            raise ValueError(f"remat must be one of {', '.join(REMAT_POLICIES)}, not {self.remat!r}")
        if self.attention_impl not in ATTENTION_IMPLEMENTATIONS:
            raise ValueError(
                f"attention_impl must be one of {', '.join(ATTENTION_IMPLEMENTATIONS)}, not {self.attention_impl!r}"
            )
        rope_type = self.rope_scaling_dict.get("rope_type", "default")
        if rope_type not in SUPPORTED_ROPE_TYPES:
            raise UnsupportedModelError(
                f"rope scaling type {rope_type!r} is not supported; supported: {', '.join(SUPPORTED_ROPE_TYPES)}"
            )

    # ----------------------------------------------------------------- helpers
    @property
    def rope_scaling_dict(self) -> dict[str, Any]:
        return dict(self.rope_scaling or ())

    def layer_window(self, layer: int) -> int | None:
        """The sliding attention window of `layer` (None: full causal attention)."""
        if self.sliding_window is None:
            return None
        if self.layer_types is None:
            return self.sliding_window
        return self.sliding_window if self.layer_types[layer] == "sliding_attention" else None

    def num_params(self) -> int:
        d, f, v, h = self.hidden_size, self.intermediate_size, self.vocab_size, self.head_dim
        q, kv = self.num_heads * h, self.num_kv_heads * h
        attn = d * q + 2 * d * kv + q * d
        attn += (q + 2 * kv) * self.qkv_bias + d * self.o_bias + 2 * h * self.qk_norm
        mlp = 3 * d * f + (2 * f + d) * self.mlp_bias
        per_layer = attn + mlp + 2 * d
        head = 0 if self.tie_embeddings else d * v
        return v * d + self.num_layers * per_layer + d + head

    def replace(self, **changes) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def llama(
        cls,
        *,
        layers: int,
        dim: int,
        heads: int,
        kv_heads: int | None = None,
        ffn: int,
        vocab: int,
        head_dim: int | None = None,
        **overrides,
    ) -> ModelConfig:
        """The config behind the language's ``init llama(layers=, dim=, heads=, kv_heads=, ffn=, vocab=)``."""
        kv_heads = heads if kv_heads is None else kv_heads
        if head_dim is None:
            if dim % heads:
                raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
            head_dim = dim // heads
        return cls(
            vocab_size=vocab,
            hidden_size=dim,
            intermediate_size=ffn,
            num_layers=layers,
            num_heads=heads,
            num_kv_heads=kv_heads,
            head_dim=head_dim,
            **overrides,
        )

    # ------------------------------------------------------- Hugging Face form
    @classmethod
    def from_hf_config(cls, hf: Any, **overrides) -> ModelConfig:
        """Build from a transformers config object or a ``config.json`` dict.

        Reads both the transformers-5 form (``rope_parameters``) and the older
        one (top-level ``rope_theta`` / ``rope_scaling``). Raises
        `UnsupportedModelError` for model types, activations or rope scalings
        this runtime does not implement.
        """
        d = dict(hf.to_dict() if hasattr(hf, "to_dict") else hf)
        model_type = d.get("model_type")
        if model_type not in ARCHITECTURES:
            raise UnsupportedModelError(
                f"model_type {model_type!r} is not supported (supported: "
                f"{', '.join(sorted(ARCHITECTURES))}). Use a Llama, Mistral, Qwen2/2.5, Qwen3 or "
                "SmolLM2 checkpoint, or `init llama(...)` for fresh weights."
            )
        arch = ARCHITECTURES[model_type]
        act = d.get("hidden_act", "silu")
        if act != "silu":
            raise UnsupportedModelError(f"hidden_act {act!r} is not supported (only 'silu')")
        if d.get("partial_rotary_factor", 1.0) != 1.0:
            raise UnsupportedModelError("partial_rotary_factor != 1 is not supported")

        def flag(spec):
            return bool(d.get(spec, False)) if isinstance(spec, str) else spec

        # rope: transformers 5 `rope_parameters`, or legacy `rope_theta` + `rope_scaling`.
        rope_params = dict(d.get("rope_parameters") or {})
        legacy_scaling = dict(d.get("rope_scaling") or {})
        theta = rope_params.get("rope_theta", d.get("rope_theta", 10000.0))
        scaling = {**legacy_scaling, **rope_params}
        scaling.pop("rope_theta", None)
        if "type" in scaling and "rope_type" not in scaling:
            scaling["rope_type"] = scaling.pop("type")
        scaling.pop("type", None)
        if scaling.get("rope_type", "default") == "default":
            scaling = {}
        else:
            if scaling["rope_type"] == "llama3" and "original_max_position_embeddings" not in scaling:
                scaling["original_max_position_embeddings"] = d.get("max_position_embeddings")

        heads = d["num_attention_heads"]
        kv_heads = d.get("num_key_value_heads") or heads
        head_dim = d.get("head_dim") or d["hidden_size"] // heads

        sliding_window, layer_types = None, None
        if arch.sliding == "all":
            sliding_window = d.get("sliding_window")
        elif arch.sliding == "layer_types":
            lt = d.get("layer_types")
            if d.get("use_sliding_window", False) or (lt and "sliding_attention" in lt):
                sliding_window = d.get("sliding_window")
                if lt is None:
                    start = d.get("max_window_layers", d["num_hidden_layers"])
                    lt = [
                        "sliding_attention" if i >= start else "full_attention" for i in range(d["num_hidden_layers"])
                    ]
                layer_types = tuple(lt)
            if sliding_window is None:
                layer_types = None

        eos = d.get("eos_token_id")
        if isinstance(eos, list):
            eos = tuple(eos)
        fields = dict(
            model_type=model_type,
            vocab_size=d["vocab_size"],
            hidden_size=d["hidden_size"],
            intermediate_size=d["intermediate_size"],
            num_layers=d["num_hidden_layers"],
            num_heads=heads,
            num_kv_heads=kv_heads,
            head_dim=head_dim,
            rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
            rope_theta=float(theta),
            rope_scaling=_freeze(scaling),
            qkv_bias=flag(arch.qkv_bias),
            o_bias=flag(arch.o_bias),
            mlp_bias=flag(arch.mlp_bias),
            qk_norm=arch.qk_norm,
            tie_embeddings=bool(d.get("tie_word_embeddings", False)),
            sliding_window=sliding_window,
            layer_types=layer_types,
            max_position_embeddings=d.get("max_position_embeddings", 4096),
            initializer_range=d.get("initializer_range", 0.02),
            bos_token_id=d.get("bos_token_id"),
            eos_token_id=eos,
            pad_token_id=d.get("pad_token_id"),
        )
        fields.update(overrides)
        return cls(**fields)

    def to_hf_config(self, dtype: str | None = None):
        """The equivalent transformers config object (``LlamaConfig``, ``Qwen2Config``, ...).

        ``dtype`` (e.g. ``"bfloat16"``) is recorded as the checkpoint's dtype.
        Its ``save_pretrained(dir)`` writes a ``config.json`` that both
        transformers and `from_hf_config` read.
        """
        import transformers

        arch = ARCHITECTURES[self.model_type]
        kw: dict[str, Any] = dict(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_kv_heads,
            head_dim=self.head_dim,
            hidden_act="silu",
            rms_norm_eps=self.rms_norm_eps,
            rope_parameters={"rope_type": "default", **self.rope_scaling_dict, "rope_theta": self.rope_theta},
            tie_word_embeddings=self.tie_embeddings,
            max_position_embeddings=self.max_position_embeddings,
            initializer_range=self.initializer_range,
            bos_token_id=self.bos_token_id,
            eos_token_id=list(self.eos_token_id) if isinstance(self.eos_token_id, tuple) else self.eos_token_id,
            pad_token_id=self.pad_token_id,
            architectures=[arch.hf_class],
        )
        for name in ("qkv_bias", "o_bias", "mlp_bias"):
            spec = getattr(arch, name)
            if isinstance(spec, str):
                kw[spec] = getattr(self, name)
            elif spec != getattr(self, name):
                raise UnsupportedModelError(f"{self.model_type} cannot express {name}={getattr(self, name)}")
        if self.qkv_bias != self.o_bias and arch.qkv_bias == arch.o_bias:
            raise UnsupportedModelError(
                f"{self.model_type} ties q/k/v and o biases; got qkv_bias={self.qkv_bias}, o_bias={self.o_bias}"
            )
        if arch.sliding == "all":
            kw["sliding_window"] = self.sliding_window
        elif arch.sliding == "layer_types":
            if self.sliding_window is not None:
                kw.update(
                    use_sliding_window=True,
                    sliding_window=self.sliding_window,
                    layer_types=list(self.layer_types or ["sliding_attention"] * self.num_layers),
                )
            else:
                kw.update(use_sliding_window=False)
        elif self.sliding_window is not None:
            raise UnsupportedModelError(f"{self.model_type} has no sliding window attention")
        if dtype is not None:
            kw["dtype"] = str(dtype)
        cfg = transformers.AutoConfig.for_model(self.model_type, **kw)
        return cfg
