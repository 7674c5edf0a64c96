"""Hugging Face checkpoints: import into `runtime.models.Transformer`, export back.

Stable API::

    model, config = load_pretrained("models/SmolLM2-135M", dtype="bfloat16")
    logits = model(input_ids)                        # [B, L] int -> [B, L, V] float32
    save_pretrained(model, config, "runs/x/export", tokenizer=tok)
    # transformers.AutoModelForCausalLM.from_pretrained("runs/x/export") loads it unchanged
    save_peft(lora_model, config, "runs/x/adapter", "models/SmolLM2-135M", plan.model.adapter)
    # peft.PeftModel.from_pretrained(base, "runs/x/adapter") loads the LoRA adapter

Import reads ``config.json`` and ``model.safetensors`` or a sharded
``model.safetensors.index.json``. The model is first created shape-only
(``nnx.eval_shape``), then each tensor is read, transformed, checked and cast
once, so no parameter is materialised twice. Pickled ``pytorch_model.bin``
files are refused (unpickling runs arbitrary code); ``trust_remote_code`` is
never used. A hub id (``org/name``) is fetched with ``huggingface_hub`` when
the hub is reachable; offline it fails with a `CheckpointError` saying what to do.
A ``.gguf`` file stands for a checkpoint directory made by `runtime.checkpoints.gguf_checkpoint` (config and
tokenizer from its header, weights dequantized from the file at load).

Parameter names map through `WEIGHT_TABLE` (a declarative table) and the
`TRANSFORMS` hooks; nothing else in this file knows HF names.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from runtime.models.config import ModelConfig, UnsupportedModelError
from runtime.models.transformer import Transformer
from runtime.plan.hub_policy import local_path_reason, offline_requested
from runtime.plan.sftc_error import SftcError

__all__ = [
    "CheckpointError",
    "WEIGHT_TABLE",
    "TRANSFORMS",
    "load_pretrained",
    "save_pretrained",
    "read_config",
    "resolve_checkpoint",
    "hf_to_ours_name",
    "hf_tensors",
    "save_peft",
    "load_peft",
    "serving_generation_config",
]


class CheckpointError(SftcError):
    """A checkpoint cannot be read or written; the message says what to do."""


# ours (Flax state path, {i} = layer)   hugging face tensor name                               transform
WEIGHT_TABLE: tuple[tuple[str, str, str | None], ...] = (
    ("embed.embedding", "model.embed_tokens.weight", None),
    ("layers.{i}.attn_norm.scale", "model.layers.{i}.input_layernorm.weight", None),
    ("layers.{i}.attn.q.kernel", "model.layers.{i}.self_attn.q_proj.weight", "transpose"),
    ("layers.{i}.attn.q.bias", "model.layers.{i}.self_attn.q_proj.bias", None),
    ("layers.{i}.attn.k.kernel", "model.layers.{i}.self_attn.k_proj.weight", "transpose"),
    ("layers.{i}.attn.k.bias", "model.layers.{i}.self_attn.k_proj.bias", None),
    ("layers.{i}.attn.v.kernel", "model.layers.{i}.self_attn.v_proj.weight", "transpose"),
    ("layers.{i}.attn.v.bias", "model.layers.{i}.self_attn.v_proj.bias", None),
    ("layers.{i}.attn.o.kernel", "model.layers.{i}.self_attn.o_proj.weight", "transpose"),
    ("layers.{i}.attn.o.bias", "model.layers.{i}.self_attn.o_proj.bias", None),
    ("layers.{i}.attn.q_norm.scale", "model.layers.{i}.self_attn.q_norm.weight", None),
    ("layers.{i}.attn.k_norm.scale", "model.layers.{i}.self_attn.k_norm.weight", None),
    ("layers.{i}.mlp_norm.scale", "model.layers.{i}.post_attention_layernorm.weight", None),
    ("layers.{i}.mlp.gate.kernel", "model.layers.{i}.mlp.gate_proj.weight", "transpose"),
    ("layers.{i}.mlp.gate.bias", "model.layers.{i}.mlp.gate_proj.bias", None),
    ("layers.{i}.mlp.up.kernel", "model.layers.{i}.mlp.up_proj.weight", "transpose"),
    ("layers.{i}.mlp.up.bias", "model.layers.{i}.mlp.up_proj.bias", None),
    ("layers.{i}.mlp.down.kernel", "model.layers.{i}.mlp.down_proj.weight", "transpose"),
    ("layers.{i}.mlp.down.bias", "model.layers.{i}.mlp.down_proj.bias", None),
    ("final_norm.scale", "model.norm.weight", None),
    ("lm_head.kernel", "lm_head.weight", "transpose"),
)

# name -> (hf -> ours, ours -> hf); both receive and return arrays (jax or numpy).
TRANSFORMS: dict[str, tuple[Callable[[Any], Any], Callable[[Any], Any]]] = {
    "transpose": (lambda a: a.T, lambda a: a.T),
}

# Tensors some checkpoints carry that hold no learned weights.
IGNORED_HF_TENSORS = (re.compile(r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq"),)

_OURS_TO_HF = {ours: (hf, t) for ours, hf, t in WEIGHT_TABLE}
_HF_TO_OURS = {hf: (ours, t) for ours, hf, t in WEIGHT_TABLE}
_LAYER = re.compile(r"(?<=layers\.)(\d+)(?=\.)")


def _template(name: str) -> tuple[str, str | None]:
    m = _LAYER.search(name)
    if not m:
        return name, None
    return name[: m.start()] + "{i}" + name[m.end() :], m.group(1)


def ours_to_hf_name(ours: str) -> tuple[str, str | None]:
    """Our state path (``layers.3.attn.q.kernel``) -> (HF tensor name, transform name)."""
    template, layer = _template(ours)
    if template not in _OURS_TO_HF:
        raise CheckpointError(f"parameter {ours!r} has no Hugging Face name in WEIGHT_TABLE")
    hf, transform = _OURS_TO_HF[template]
    return (hf.format(i=layer) if layer is not None else hf), transform


def hf_to_ours_name(hf: str) -> str | None:
    """HF tensor name -> our state path, or None when the table has no row for it."""
    template, layer = _template(hf)
    if template not in _HF_TO_OURS:
        return None
    ours = _HF_TO_OURS[template][0]
    return ours.format(i=layer) if layer is not None else ours


# --------------------------------------------------------------------------- locate
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "tokenizer*"]


def resolve_checkpoint(path: str | os.PathLike, revision: str | None = None) -> Path:
    """A local checkpoint directory for ``path``: the directory itself, or a hub snapshot.

    Hub ids (``org/name``) are tried only when no such local path exists and the path is not
    local by `runtime.plan.hub_policy.local_path_reason` (then the error names the absolute path). With
    ``HF_HUB_OFFLINE=1`` only the local hub cache is consulted.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        return p
    if p.is_file() and p.suffix.lower() == ".gguf":
        from runtime.checkpoints import gguf_checkpoint as gguf

        try:
            return gguf.checkpoint_dir(p)
        except gguf.GgufError as e:
            raise CheckpointError(str(e)) from None
    if p.exists():
        raise CheckpointError(f"{path}: expected a checkpoint directory (with config.json), got a file")
    name = str(path)
    reason = local_path_reason(name, ".", revision)
    if reason is not None:
        kind = "file" if name.lower().endswith(".gguf") else "directory"
        raise CheckpointError(
            f"{path}: no such {kind}: looked for {os.path.abspath(p)} (a local path: "
            f"{reason}). Point hf(...) at a local Hugging Face checkpoint directory, a "
            ".gguf file, or a hub id like 'org/name'."
        )
    try:
        from huggingface_hub import snapshot_download

        local = snapshot_download(
            name, revision=revision, allow_patterns=_HUB_PATTERNS, local_files_only=offline_requested()
        )
    except Exception as e:  # the hub client raises many types; all mean "not available"
        kind = type(e).__name__
        if offline_requested():
            why = (
                "HF_HUB_OFFLINE is set and it is not in the local Hugging Face cache; unset "
                "HF_HUB_OFFLINE if this machine is online, or"
            )
        elif kind in ("RepositoryNotFoundError", "GatedRepoError", "RevisionNotFoundError"):
            why = (
                "the hub has no such repository or revision, or it is private/gated (log in "
                "with `hf auth login`); check the id, or"
            )
        else:
            why = "the Hugging Face hub is unreachable from this machine;"
        raise CheckpointError(
            f"cannot load {name!r} (no local directory {os.path.abspath(p)}, so it is read as a hub id): "
            f"{why} download it where the hub is reachable "
            f'(`hf download {name} --local-dir DIR`) and use hf("DIR") ({kind}).'
        ) from None
    return Path(local)


def read_config(directory: str | os.PathLike, **overrides) -> ModelConfig:
    """`ModelConfig` from ``directory/config.json`` (either transformers generation)."""
    cfg_path = Path(directory) / "config.json"
    if not cfg_path.is_file():
        raise CheckpointError(f"{directory}: no config.json; this is not a Hugging Face model directory")
    try:
        raw = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cfg_path}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}") from None
    try:
        return ModelConfig.from_hf_config(raw, **overrides)
    except UnsupportedModelError as e:
        raise CheckpointError(f"{cfg_path}: {e}") from None
    except KeyError as e:
        raise CheckpointError(f"{cfg_path}: missing required key {e.args[0]!r}") from None


# --------------------------------------------------------------------------- reading
class _Weights:
    """Tensor name -> file for a single or sharded safetensors checkpoint."""

    def __init__(self, directory: Path):
        from safetensors import safe_open

        self.directory = directory
        single = directory / "model.safetensors"
        index = directory / "model.safetensors.index.json"
        if index.is_file():
            weight_map = json.loads(index.read_text())["weight_map"]
            self.files = {name: directory / f for name, f in weight_map.items()}
        elif single.is_file():
            with safe_open(str(single), framework="flax") as f:
                self.files = {name: single for name in f.keys()}
        else:
            pickled = [f.name for f in directory.glob("pytorch_model*.bin")]
            if pickled:
                raise CheckpointError(
                    f"{directory}: only pickled PyTorch weights ({', '.join(sorted(pickled))}); "
                    "these are refused because unpickling can run arbitrary code. Convert them "
                    'once, in a trusted environment, with: python -c "from transformers import '
                    f"AutoModelForCausalLM as M; M.from_pretrained('{directory}')"
                    f".save_pretrained('{directory}-safetensors')\" and load that directory."
                )
            raise CheckpointError(f"{directory}: no model.safetensors or model.safetensors.index.json found")
        missing = sorted({str(f.name) for f in self.files.values() if not f.is_file()})
        if missing:
            raise CheckpointError(f"{directory}: shard file(s) listed in the index are missing: {', '.join(missing)}")

    def read_by_file(self, names: list[str]) -> Iterator[tuple[str, jax.Array]]:
        """Yield ``(name, array)`` one file at a time, each file mapped only while it is read."""
        from safetensors import safe_open

        by_file: dict[Path, list[str]] = {}
        for name in names:
            by_file.setdefault(self.files[name], []).append(name)
        for file, file_names in by_file.items():
            with safe_open(str(file), framework="flax") as f:
                for name in file_names:
                    yield name, f.get_tensor(name)


def _weights(directory: Path):
    from runtime.checkpoints import gguf_checkpoint as gguf

    if gguf.is_converted(directory):
        try:
            return gguf.GgufWeights(directory)
        except gguf.GgufError as e:
            raise CheckpointError(str(e)) from None
    return _Weights(directory)


def load_pretrained(
    path: str | os.PathLike,
    dtype: str = "float32",
    *,
    revision: str | None = None,
    convert: Callable[[tuple, Any], Any] | None = None,
    **config_overrides,
) -> tuple[Transformer, ModelConfig]:
    """Load a Hugging Face Llama-family checkpoint: ``(model, config)``.

    ``path``: a local directory (config.json + safetensors), a ``.gguf`` file, or a hub id
    when the hub is reachable. ``dtype``: parameter and compute dtype
    (``"float32"``, ``"bfloat16"``, ...); weights are cast on load.
    ``config_overrides`` replace `ModelConfig` fields (e.g. ``attention_impl``).
    ``convert(key_path, array)`` gives what each tensor is stored as once read and cast (a
    quantized base: `runtime.models.quantize.converter`), one tensor at a time.

    ``model(input_ids)`` with ``input_ids`` an int ``[batch, length]`` array
    returns float32 logits ``[batch, length, vocab]``.

    Raises `CheckpointError` for an unsupported model type, pickled weights,
    missing tensors, unexpected tensors and shape mismatches (naming the tensor).
    """
    directory = resolve_checkpoint(path, revision)
    config = read_config(directory, **config_overrides)
    jdtype = jnp.dtype(dtype)
    abstract = nnx.eval_shape(lambda: Transformer(config, rngs=nnx.Rngs(0), dtype=jdtype))
    graphdef, state = nnx.split(abstract)
    weights = _weights(directory)
    wanted: dict[str, tuple[Any, Any, str | None]] = {}  # hf name -> (key path, variable, transform)
    for key_path, variable in nnx.to_flat_state(state):
        hf_name, transform = ours_to_hf_name(".".join(str(k) for k in key_path))
        if hf_name not in weights.files:
            raise CheckpointError(
                f"{directory}: tensor {hf_name!r} is missing (config.json describes a "
                f"{config.model_type} model that needs it). The weights do not match config.json."
            )
        wanted[hf_name] = (key_path, variable, transform)
    unused = sorted(
        n
        for n in weights.files
        if n not in wanted
        and not any(p.fullmatch(n) for p in IGNORED_HF_TENSORS)
        and not (config.tie_embeddings and n == "lm_head.weight")
    )
    if unused:
        raise CheckpointError(
            f"{directory}: {len(unused)} tensor(s) this {config.model_type} model does not use, "
            f"e.g. {', '.join(unused[:5])}. The checkpoint is not the architecture its "
            "config.json names; nothing was loaded."
        )
    leaves = []
    for hf_name, array in weights.read_by_file(list(wanted)):
        key_path, variable, transform = wanted[hf_name]
        expected = tuple(variable.get_value().shape)
        stored = tuple(array.shape)
        if transform is not None:
            array = TRANSFORMS[transform][0](array)
        if tuple(array.shape) != expected:
            implied = expected if transform is None else expected[::-1]
            raise CheckpointError(
                f"{directory}: tensor {hf_name!r} has shape {stored}, but config.json implies "
                f"{implied}. The weights do not match config.json."
            )
        value = jnp.asarray(array, jdtype)
        leaves.append((key_path, variable.replace(value if convert is None else convert(tuple(key_path), value))))
        del array
    model = nnx.merge(graphdef, nnx.from_flat_state(leaves))
    return model, config


# --------------------------------------------------------------------------- writing
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMG]i?B|B)?\s*$", re.IGNORECASE)
_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_size(size: int | str) -> int:
    """``"5GB"`` -> 5_000_000_000, ``"500MiB"`` -> 524_288_000, ints unchanged."""
    if isinstance(size, int):
        return size
    m = _SIZE.match(size)
    if not m:
        raise ValueError(f"cannot read size {size!r}; use e.g. '5GB', '500MB' or a byte count")
    return int(float(m.group(1)) * _UNITS[(m.group(2) or "B").upper()])


def hf_tensors(model: Transformer, dtype: str | None) -> Iterator[tuple[str, np.ndarray]]:
    """``(Hugging Face name, array in HF layout)`` of every parameter: what an export writes."""
    import ml_dtypes  # noqa: F401  (numpy bfloat16)

    for key_path, variable in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        ours = ".".join(str(k) for k in key_path)
        hf_name, transform = ours_to_hf_name(ours)
        array = np.asarray(jax.device_get(variable.get_value()))
        if transform is not None:
            array = TRANSFORMS[transform][1](array)
        if dtype is not None:
            array = array.astype(jnp.dtype(dtype))
        yield hf_name, np.ascontiguousarray(array)


def serving_generation_config(hf_config, tokenizer=None):
    """The ``GenerationConfig`` an export ships, so servers stop where the run's evaluation stopped.

    transformers and vLLM stop at any of ``eos_token_id``: it is the list of
    `runtime.data.prompts.stop_ids` (the EOS and the chat template's end-of-turn
    token, e.g. ``<|im_end|>`` for ChatML), not only the config's single EOS.
    """
    from transformers import GenerationConfig

    from runtime.data.prompts import stop_ids

    generation_config = GenerationConfig.from_model_config(hf_config)
    if tokenizer is not None:
        stops = stop_ids(tokenizer)
        if stops:
            generation_config.eos_token_id = stops
        for key in ("bos_token_id", "pad_token_id"):
            if getattr(tokenizer, key, None) is not None:
                setattr(generation_config, key, int(getattr(tokenizer, key)))
    return generation_config


def save_pretrained(
    model: Transformer,
    config: ModelConfig,
    path: str | os.PathLike,
    tokenizer=None,
    *,
    max_shard_size: int | str = "5GB",
    dtype: str | None = None,
    generation_config=None,
) -> Path:
    """Write a Hugging Face checkpoint directory that transformers loads unchanged.

    Files: ``config.json``, ``generation_config.json``, ``model.safetensors``
    (or ``model-0000i-of-0000n.safetensors`` + ``model.safetensors.index.json``
    when larger than ``max_shard_size``), and, with ``tokenizer`` (a
    transformers tokenizer), its files including the chat template, and stop ids
    in ``generation_config.json`` (`serving_generation_config`). Existing
    weight files in ``path`` are replaced. ``dtype`` converts the weights
    (default: the model's parameter dtype). Token ids missing from ``config`` (bos, eos,
    pad) are taken from the tokenizer. ``generation_config`` (a dict or a
    ``transformers.GenerationConfig``, e.g. the base model's sampling defaults)
    replaces the one derived from the config.
    """
    from safetensors.numpy import save_file
    from transformers import GenerationConfig

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    save_dtype = jnp.dtype(dtype or model.param_dtype).name
    if tokenizer is not None:
        ids = {
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        }
        config = config.replace(**{k: v for k, v in ids.items() if getattr(config, k) is None and v is not None})
    hf_config = config.to_hf_config(dtype=save_dtype)
    hf_config.save_pretrained(out)
    if generation_config is None:
        generation_config = serving_generation_config(hf_config, tokenizer)
    elif isinstance(generation_config, dict):
        generation_config = GenerationConfig(**generation_config)
    generation_config.save_pretrained(out)

    limit = parse_size(max_shard_size)
    shards: list[dict[str, np.ndarray]] = [{}]
    sizes = [0]
    total = 0
    for name, array in hf_tensors(model, save_dtype):
        if sizes[-1] and sizes[-1] + array.nbytes > limit:
            shards.append({})
            sizes.append(0)
        shards[-1][name] = array
        sizes[-1] += array.nbytes
        total += array.nbytes

    for stale in list(out.glob("model*.safetensors")) + [out / "model.safetensors.index.json"]:
        if stale.exists():
            stale.unlink()
    metadata = {"format": "pt"}
    if len(shards) == 1:
        save_file(shards[0], str(out / "model.safetensors"), metadata=metadata)
    else:
        weight_map = {}
        for i, shard in enumerate(shards, 1):
            fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, str(out / fname), metadata=metadata)
            weight_map.update({name: fname for name in shard})
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    return out


# --------------------------------------------------------------------------- peft adapters
PEFT_PREFIX = "base_model.model."
_PEFT_UNSUPPORTED = {
    "use_dora": False,
    "use_rslora": False,
    "bias": "none",
    "lora_bias": False,
    "fan_in_fan_out": False,
    "modules_to_save": None,
    "layers_to_transform": None,
    "rank_pattern": {},
    "alpha_pattern": {},
}


def _peft_module(ours_path: tuple) -> tuple[str, str | None]:
    """Adapter state path (``layers.0.attn.q``) -> (HF module name, the kernel's transform)."""
    hf_name, transform = ours_to_hf_name(".".join(str(k) for k in ours_path) + ".kernel")
    if not hf_name.endswith(".weight"):
        raise CheckpointError(f"{hf_name!r} is not a module weight; it cannot carry a LoRA adapter")
    return hf_name[: -len(".weight")], transform


def save_peft(
    model: Transformer,
    config: ModelConfig,
    path: str | os.PathLike,
    base_model_name_or_path: str,
    lora,
    tokenizer=None,
    *,
    dtype: str | None = None,
    revision: str | None = None,
) -> Path:
    """Write a peft LoRA adapter directory: ``adapter_config.json`` + ``adapter_model.safetensors``.

    ``model`` carries adapters from `runtime.models.lora.add_lora` with the
    settings of ``lora`` (a `LoraPlan`). The result loads with
    ``peft.PeftModel.from_pretrained(base, path)`` where ``base`` is the
    transformers model at ``base_model_name_or_path`` (recorded in the config,
    with ``revision`` when the base is pinned to one), and with vLLM's LoRA loader. Tensors are named like peft's
    (``base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight``
    ``[r, in]``, ``...lora_B.weight`` ``[out, r]``) and stored in ``dtype``
    (default: the adapters' own, float32). With ``tokenizer``, its files (chat
    template included) and the stop ids of `serving_generation_config` are
    written too, so a server given the adapter directory stops where the run did.
    """
    import ml_dtypes  # noqa: F401  (numpy bfloat16)
    from safetensors.numpy import save_file

    from runtime.models.lora import lora_layers

    layers = list(lora_layers(model))
    if not layers:
        raise CheckpointError("the model has no LoRA adapters; use save_pretrained for a full model")
    tensors: dict[str, np.ndarray] = {}
    modules: set[str] = set()
    for ours_path, layer in layers:
        if (layer.rank, layer.alpha) != (lora.rank, float(lora.alpha)):
            raise CheckpointError(
                f"adapter {'.'.join(map(str, ours_path))} has rank {layer.rank}, "
                f"alpha {layer.alpha}; the plan says rank {lora.rank}, alpha {lora.alpha}"
            )
        module, transform = _peft_module(ours_path)
        modules.add(module.rsplit(".", 1)[-1])
        for which, variable in (("A", layer.lora_a), ("B", layer.lora_b)):
            array = np.asarray(jax.device_get(variable.get_value()))
            if transform is not None:
                array = TRANSFORMS[transform][1](array)
            if dtype is not None:
                array = array.astype(jnp.dtype(dtype))
            tensors[f"{PEFT_PREFIX}{module}.lora_{which}.weight"] = np.ascontiguousarray(array)
    alpha = int(lora.alpha) if float(lora.alpha).is_integer() else float(lora.alpha)
    adapter_config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": str(base_model_name_or_path),
        "revision": revision,
        "inference_mode": True,
        "r": int(lora.rank),
        "lora_alpha": alpha,
        "lora_dropout": float(lora.dropout),
        "target_modules": sorted(modules),
        "init_lora_weights": True,
        "layers_pattern": None,
        **_PEFT_UNSUPPORTED,
    }
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    (out / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2, sort_keys=True) + "\n")
    save_file(dict(sorted(tensors.items())), str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
        serving_generation_config(config.to_hf_config(), tokenizer).save_pretrained(out)
    return out


def load_peft(model: Transformer, path: str | os.PathLike) -> tuple[Transformer, Any]:
    """Add the LoRA adapter saved at ``path`` (peft format) to ``model``: ``(model, LoraPlan)``.

    ``model`` (e.g. from `load_pretrained` of the adapter's base) gains
    adapters in place. Only plain LoRA is read (no DoRA, rsLoRA, per-module
    ranks, biases or extra saved modules); anything else is a `CheckpointError`.
    """
    from safetensors import safe_open

    from runtime.models.lora import TARGETS, add_lora, lora_layers
    from runtime.plan.run_plan import LoraPlan

    directory = Path(path)
    cfg_path, weights_path = directory / "adapter_config.json", directory / "adapter_model.safetensors"
    if not cfg_path.is_file() or not weights_path.is_file():
        raise CheckpointError(f"{directory}: expected adapter_config.json and adapter_model.safetensors")
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("peft_type") != "LORA":
        raise CheckpointError(f"{cfg_path}: peft_type {cfg.get('peft_type')!r} is not supported (only LORA)")
    for key, plain in _PEFT_UNSUPPORTED.items():
        value = cfg.get(key)
        if value and value != plain:
            raise CheckpointError(f"{cfg_path}: {key} = {cfg[key]!r} is not supported")
    by_hf = {
        _peft_module(("layers", 0, block, proj))[0].rsplit(".", 1)[-1]: target
        for target, (block, proj) in TARGETS.items()
    }
    wanted = cfg.get("target_modules")
    if not isinstance(wanted, list) or any(m not in by_hf for m in wanted):
        raise CheckpointError(f"{cfg_path}: target_modules {wanted!r} must be a list of {', '.join(by_hf)}")
    targets = {by_hf[m] for m in wanted}
    plan = LoraPlan(
        int(cfg["r"]),
        float(cfg["lora_alpha"]),
        float(cfg.get("lora_dropout", 0.0)),
        tuple(t for t in TARGETS if t in targets),
    )
    add_lora(model, plan)
    with safe_open(str(weights_path), framework="flax") as f:
        stored = set(f.keys())
        for ours_path, layer in lora_layers(model):
            module, transform = _peft_module(ours_path)
            for which, variable in (("A", layer.lora_a), ("B", layer.lora_b)):
                name = f"{PEFT_PREFIX}{module}.lora_{which}.weight"
                if name not in stored:
                    raise CheckpointError(f"{weights_path}: tensor {name!r} is missing")
                stored.discard(name)
                array = f.get_tensor(name)
                if transform is not None:
                    array = TRANSFORMS[transform][0](array)
                if tuple(array.shape) != tuple(variable.shape):
                    raise CheckpointError(
                        f"{weights_path}: tensor {name!r} has shape {tuple(array.shape)}, "
                        f"expected {tuple(variable.shape)[::-1]}"
                    )
                variable.set_value(jnp.asarray(array, variable.get_value().dtype))
    if stored:
        raise CheckpointError(
            f"{weights_path}: {len(stored)} tensor(s) this model does not use, e.g. {', '.join(sorted(stored)[:3])}"
        )
    return model, plan
