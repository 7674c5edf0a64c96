"""A GGUF file as a base checkpoint: ``base = hf("models/model.gguf")``.

`runtime.checkpoints.hf_checkpoint.resolve_checkpoint` hands a ``.gguf`` file here and gets back an ordinary checkpoint
directory, so everything downstream (config, tokenizer, `load_pretrained`, exports, a peft
adapter's base) treats a GGUF base like any other::

    directory = checkpoint_dir("models/SmolLM2-135M-Instruct.Q4_1.gguf")
    # $SFTC_CACHE/gguf/<sha256 of the file>/: config.json, tokenizer.json, tokenizer_config.json
    #   (chat template included), gguf.json (which file the weights are read from)
    weights = GgufWeights(directory)   # what load_pretrained reads instead of safetensors

Why the ``gguf`` package and not transformers' GGUF reader: transformers reads GGUF weights,
config and even the tokenizer only with torch installed (its reader and dequantizers are torch
code), and sftc's runtime does not depend on torch. The ``gguf`` package (llama.cpp's own)
dequantizes with numpy. The tokenizer is built with transformers' GGUF tokenizer converter
(``transformers.integrations.gguf.gguf_tokenizer_mapping``, which needs only ``tokenizers``), so it
is the tokenizer ``AutoTokenizer.from_pretrained(dir, gguf_file=NAME)`` gives.

What is cached, keyed by the file's content (sha256): the small directory above. The weights are
not copied: a float32 copy would be 4-8x the quantized file; they are dequantized from the GGUF
at each load (about 2.5 s for 135M parameters). Quantized weights are dequantized to float32
(then cast to the plan's dtype): training sees exactly the values llama.cpp computes with.

Tensor names map through `GGUF_TABLE` (GGUF name -> Hugging Face name, transform). llama.cpp
stores a Llama's q and k projections with the rows of each head interleaved for its rotary
layout; `unpermute_q` / `unpermute_k` restore the Hugging Face order.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from runtime.plan.gguf_header import GgufError, GgufHeader, check_supported, hf_config, read_header
from runtime.platform.cache_dir import default_cache

__all__ = [
    "GGUF_TABLE",
    "GgufError",
    "GgufWeights",
    "build_tokenizer",
    "checkpoint_dir",
    "file_sha256",
    "is_converted",
]

CACHE_VERSION = 1
SOURCE_FILE = "gguf.json"

# GGUF tensor name ({i} = layer)   Hugging Face tensor name                               transform
GGUF_TABLE: tuple[tuple[str, str, str | None], ...] = (
    ("token_embd.weight", "model.embed_tokens.weight", None),
    ("blk.{i}.attn_norm.weight", "model.layers.{i}.input_layernorm.weight", None),
    ("blk.{i}.attn_q.weight", "model.layers.{i}.self_attn.q_proj.weight", "unpermute_q"),
    ("blk.{i}.attn_k.weight", "model.layers.{i}.self_attn.k_proj.weight", "unpermute_k"),
    ("blk.{i}.attn_v.weight", "model.layers.{i}.self_attn.v_proj.weight", None),
    ("blk.{i}.attn_output.weight", "model.layers.{i}.self_attn.o_proj.weight", None),
    ("blk.{i}.ffn_norm.weight", "model.layers.{i}.post_attention_layernorm.weight", None),
    ("blk.{i}.ffn_gate.weight", "model.layers.{i}.mlp.gate_proj.weight", None),
    ("blk.{i}.ffn_up.weight", "model.layers.{i}.mlp.up_proj.weight", None),
    ("blk.{i}.ffn_down.weight", "model.layers.{i}.mlp.down_proj.weight", None),
    ("output_norm.weight", "model.norm.weight", None),
    ("output.weight", "lm_head.weight", None),
)
_BY_GGUF = {gguf_name: (hf, t) for gguf_name, hf, t in GGUF_TABLE}
_LAYER = re.compile(r"(?<=^blk\.)(\d+)(?=\.)")


def _unpermute(weight: np.ndarray, heads: int) -> np.ndarray:
    """Inverse of llama.cpp's ``permute``: ``[heads * head_dim, in]`` rows back to HF's order."""
    rows = weight.shape[0]
    return weight.reshape(heads, rows // heads // 2, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def hf_name(gguf_name: str) -> tuple[str, str | None]:
    """GGUF tensor name -> (Hugging Face name, transform); an unknown name maps to itself."""
    m = _LAYER.search(gguf_name)
    template = gguf_name[: m.start()] + "{i}" + gguf_name[m.end() :] if m else gguf_name
    if template not in _BY_GGUF:
        return gguf_name, None
    hf, transform = _BY_GGUF[template]
    return (hf.format(i=m.group(1)) if m else hf), transform


# ---------------------------------------------------------------- the cached directory
def file_sha256(path: Path) -> str:
    """The content digest of a file: `runtime.platform.file_hashes`, the one rule (read once per change)."""
    from runtime.platform.file_hashes import file_sha256 as digest

    return digest(path)


def _source_record(path: Path, digest: str) -> dict:
    stat = path.stat()
    return {
        "file": str(path),
        "sha256": digest,
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "cache_version": CACHE_VERSION,
    }


def checkpoint_dir(path: str | os.PathLike, cache_dir: Path | None = None) -> Path:
    """The checkpoint directory standing for the GGUF file at ``path`` (made on first use, cached).

    Raises `GgufError` for a file that is not a GGUF of a supported architecture, `OSError` for
    one that cannot be read."""
    p = Path(path).expanduser().resolve()
    digest = file_sha256(p)
    target = Path(cache_dir or default_cache()) / "gguf" / digest[:24]
    record = _source_record(p, digest)
    if (target / SOURCE_FILE).is_file():
        stored = json.loads((target / SOURCE_FILE).read_text())
        if stored != record:  # same content, now at another path or touched: read the weights from here
            _write_json(target / SOURCE_FILE, record)
        return target
    header = read_header(
        p,
        arrays=("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type", "tokenizer.ggml.scores"),
    )
    check_supported(header)
    partial = target.with_name(target.name + f".partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    config = hf_config(header)
    (partial / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    build_tokenizer(header).save_pretrained(partial)
    _write_json(partial / SOURCE_FILE, record)
    try:
        partial.rename(target)
    except OSError:  # another process made it first
        shutil.rmtree(partial, ignore_errors=True)
    return target


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def is_converted(directory: str | os.PathLike) -> bool:
    """Whether ``directory`` is a `checkpoint_dir` (its weights live in a GGUF file)."""
    return (Path(directory) / SOURCE_FILE).is_file()


# ---------------------------------------------------------------- tokenizer
_SPECIAL = {
    "bos_token": "bos_token_id",
    "eos_token": "eos_token_id",
    "unk_token": "unknown_token_id",
    "pad_token": "padding_token_id",
}


def build_tokenizer(header: GgufHeader):
    """The transformers fast tokenizer the GGUF metadata describes, chat template included
    (as transformers builds it for ``gguf_file=``; ``header`` must hold the token arrays)."""
    from transformers import PreTrainedTokenizerFast
    from transformers.integrations.gguf.gguf_tokenizer_mapping import (
        GGUF_TOKENIZER_MAPPING,
        convert_gguf_tokenizer,
    )

    metadata = header.metadata
    if not isinstance(metadata.get("tokenizer.ggml.tokens"), list):
        raise GgufError(
            f"{header.path}: the GGUF file carries no tokenizer (tokenizer.ggml.tokens); "
            'name one with `tokenizer = hf("dir")`'
        )
    grouped = {
        group: {name: metadata[f"tokenizer.{key}"] for key, name in renames.items() if f"tokenizer.{key}" in metadata}
        for group, renames in GGUF_TOKENIZER_MAPPING.items()
    }
    tokenizer_dict, tokenizer_config = grouped["tokenizer"], grouped["tokenizer_config"]
    if tokenizer_dict.get("tokenizer_type") == "llama":
        tokenizer_config.setdefault("add_bos_token", True)  # llama.cpp's default for sentencepiece vocabularies
    tokens = tokenizer_dict["tokens"]
    for name, key in _SPECIAL.items():
        token_id = metadata.get(f"tokenizer.ggml.{key}")
        tokenizer_config[name] = tokens[token_id] if token_id is not None else None
    try:
        backend, extra = convert_gguf_tokenizer(header.architecture, tokenizer_dict)
    except (ValueError, KeyError) as e:
        raise GgufError(f"{header.path}: cannot build its tokenizer: {e}") from None
    return PreTrainedTokenizerFast(tokenizer_object=backend, **tokenizer_config, **extra)


# ---------------------------------------------------------------- weights
class GgufWeights:
    """The weights of a `checkpoint_dir`, read from its GGUF file: the interface of
    `runtime.checkpoints.hf_checkpoint`'s safetensors reader (``files``: HF tensor name -> file, ``read_by_file``)."""

    def __init__(self, directory: str | os.PathLike):
        directory = Path(directory)
        record = json.loads((directory / SOURCE_FILE).read_text())
        self.file = Path(record["file"])
        if not self.file.is_file():
            raise GgufError(f"{self.file}: the GGUF file this base was read from is gone; point hf(...) at it again")
        stat = self.file.stat()
        if (stat.st_size, stat.st_mtime_ns) != (record["size"], record["mtime_ns"]) and file_sha256(
            self.file
        ) != record["sha256"]:
            raise GgufError(
                f"{self.file}: the GGUF file changed since {directory} was made from it; load it through its path again"
            )
        self.header = read_header(self.file)
        self.config = json.loads((directory / "config.json").read_text())
        self.files = {hf_name(name)[0]: self.file for name in self.header.tensors}
        self._gguf_names = {hf_name(name)[0]: name for name in self.header.tensors}

    def read_by_file(self, names: list[str]) -> Iterator[tuple[str, np.ndarray]]:
        """Yield ``(hf name, float32 array in HF layout)``, dequantized one tensor at a time."""
        import gguf

        reader = gguf.GGUFReader(str(self.file))
        by_name = {t.name: t for t in reader.tensors}
        heads = {"unpermute_q": self.config["num_attention_heads"], "unpermute_k": self.config["num_key_value_heads"]}
        for name in names:
            tensor = by_name[self._gguf_names[name]]
            array = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
            array = np.asarray(array, np.float32).reshape(tuple(int(d) for d in reversed(tensor.shape)))
            transform = hf_name(tensor.name)[1]
            if transform is not None:
                array = _unpermute(array, heads[transform])
            yield name, array
