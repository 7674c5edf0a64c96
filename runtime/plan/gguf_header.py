"""The header of a GGUF file: its metadata and tensor table, read without touching the weights.

Light on purpose (the `gguf` package's constants, ``struct`` and ``mmap``; no numpy arrays, no
JAX, no transformers): `sftc check` calls it to prove a ``hf("model.gguf")`` base is a GGUF of a
supported architecture, and `runtime.checkpoints.gguf_checkpoint` derives the model's ``config.json`` from it.

``gguf.GGUFReader`` would do, but it turns every element of every metadata array into numpy
views: 1.6 s on SmolLM2-135M's header (49,152 tokens + 48,900 merges). Here arrays are kept only
when asked for (``arrays=``); the others are skipped and stand as `ArrayInfo` (their length),
which reads the same header in a few tens of milliseconds.

    header = read_header("models/SmolLM2-135M-Instruct.Q4_1.gguf")
    header.architecture          # "llama"
    header.parameter_count       # 134515008 (the tensors' elements; a tied output head counts once)
    hf_config(header)            # the config.json transformers would write for it
"""

from __future__ import annotations

import math
import mmap
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf

from runtime.plan.sftc_error import SftcError

__all__ = [
    "SUPPORTED_ARCHITECTURES",
    "ArrayInfo",
    "GgufError",
    "GgufHeader",
    "TensorInfo",
    "check_supported",
    "hf_config",
    "is_gguf_path",
    "read_header",
]

GGUF_SUFFIX = ".gguf"
# GGUF `general.architecture` -> transformers model_type, for the layouts runtime.models
# implements and runtime.checkpoints.gguf_checkpoint maps tensor by tensor.
SUPPORTED_ARCHITECTURES = {"llama": "llama"}


class GgufError(SftcError):
    """The file is not a GGUF sftc can read; the message says why."""


@dataclass(frozen=True)
class ArrayInfo:
    """A metadata array that was skipped: its element type and length."""

    item_type: int
    count: int

    def __len__(self) -> int:
        return self.count


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # GGUF order: the fastest-varying dimension first (numpy's reversed)
    ggml_type: int
    offset: int  # from the start of the data section

    @property
    def elements(self) -> int:
        return math.prod(self.shape)

    @property
    def type_name(self) -> str:
        try:
            return gguf.GGMLQuantizationType(self.ggml_type).name
        except ValueError:
            return f"type {self.ggml_type}"


@dataclass(frozen=True)
class GgufHeader:
    path: Path
    version: int
    metadata: dict[str, Any]
    tensors: dict[str, TensorInfo] = field(repr=False)

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", ""))

    @property
    def parameter_count(self) -> int:
        return sum(t.elements for t in self.tensors.values())

    def get(self, key: str, default: Any = None) -> Any:
        """An architecture key without its prefix: ``get("block_count")`` reads ``llama.block_count``."""
        return self.metadata.get(f"{self.architecture}.{key}", default)


def is_gguf_path(path: str | os.PathLike) -> bool:
    """Whether a spec's path names a GGUF file (by its suffix; the file may not exist)."""
    return str(path).lower().endswith(GGUF_SUFFIX)


_T = gguf.GGUFValueType
_SCALARS: dict[int, str] = {
    _T.UINT8: "B",
    _T.INT8: "b",
    _T.UINT16: "H",
    _T.INT16: "h",
    _T.UINT32: "I",
    _T.INT32: "i",
    _T.FLOAT32: "f",
    _T.BOOL: "?",
    _T.UINT64: "Q",
    _T.INT64: "q",
    _T.FLOAT64: "d",
}


class _Cursor:
    def __init__(self, buffer, path: Path):
        self.buffer, self.pos, self.path = buffer, 0, path

    def take(self, fmt: str):
        size = struct.calcsize("<" + fmt)
        if self.pos + size > len(self.buffer):
            raise GgufError(f"{self.path}: the GGUF header is truncated (the file ends at byte {len(self.buffer)})")
        values = struct.unpack_from("<" + fmt, self.buffer, self.pos)
        self.pos += size
        return values[0] if len(values) == 1 else values

    def string(self) -> str:
        length = self.take("Q")
        if self.pos + length > len(self.buffer):
            raise GgufError(f"{self.path}: the GGUF header is truncated")
        raw = bytes(self.buffer[self.pos : self.pos + length])
        self.pos += length
        return raw.decode("utf-8", errors="replace")

    def value(self, value_type: int, key: str, keep: bool):
        if value_type == _T.STRING:
            return self.string()
        if value_type == _T.ARRAY:
            item_type, count = self.take("I"), self.take("Q")
            if not keep:
                self.skip(item_type, count, key)
                return ArrayInfo(item_type, count)
            return [self.value(item_type, key, True) for _ in range(count)]
        if value_type not in _SCALARS:
            raise GgufError(f"{self.path}: metadata key {key!r} has an unknown value type {value_type}")
        return self.take(_SCALARS[value_type])

    def skip(self, item_type: int, count: int, key: str) -> None:
        if item_type in _SCALARS:
            self.pos += struct.calcsize("<" + _SCALARS[item_type]) * count
        elif item_type == _T.STRING:
            end = len(self.buffer) - 8
            for _ in range(count):
                if self.pos > end:
                    raise GgufError(f"{self.path}: the GGUF header is truncated")
                self.pos += 8 + struct.unpack_from("<Q", self.buffer, self.pos)[0]
        else:
            for _ in range(count):
                self.value(item_type, key, False)
        if self.pos > len(self.buffer):
            raise GgufError(f"{self.path}: the GGUF header is truncated")


def read_header(path: str | os.PathLike, arrays: Iterable[str] = ()) -> GgufHeader:
    """Metadata and tensor table of the GGUF file at ``path``; arrays named in ``arrays`` are read
    in full, other arrays stand as `ArrayInfo`. Raises `GgufError` (not a GGUF, an unsupported
    version, a truncated header) and `OSError` (missing, unreadable)."""
    p = Path(path)
    keep = set(arrays)
    with open(p, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < 24:
            raise GgufError(f"{p}: not a GGUF file (only {size} bytes)")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
            cursor = _Cursor(buffer, p)
            if cursor.take("I") != gguf.GGUF_MAGIC:
                raise GgufError(f"{p}: not a GGUF file (it does not start with the bytes `GGUF`)")
            version = cursor.take("I")
            if version not in (2, 3):
                raise GgufError(
                    f"{p}: GGUF version {version} is not supported (2 and 3 are); "
                    "re-save the file with a current llama.cpp"
                )
            tensor_count, kv_count = cursor.take("Q"), cursor.take("Q")
            metadata: dict[str, Any] = {}
            for _ in range(kv_count):
                key = cursor.string()
                metadata[key] = cursor.value(cursor.take("I"), key, key in keep)
            tensors: dict[str, TensorInfo] = {}
            for _ in range(tensor_count):
                name = cursor.string()
                dims = cursor.take("I")
                shape = tuple(cursor.take("Q") for _ in range(dims))
                tensors[name] = TensorInfo(name, shape, cursor.take("I"), cursor.take("Q"))
    return GgufHeader(p, version, metadata, tensors)


def check_supported(header: GgufHeader) -> None:
    """Raise `GgufError` unless sftc can load this file's architecture."""
    arch = header.architecture
    if arch not in SUPPORTED_ARCHITECTURES:
        raise GgufError(
            f"GGUF architecture {arch or '(none)'!r} is not supported; sftc reads "
            f"{', '.join(repr(a) for a in SUPPORTED_ARCHITECTURES)} (Llama, SmolLM, Mistral-style) GGUF files"
        )
    scaling = header.get("rope.scaling.type")
    if scaling not in (None, "none"):
        raise GgufError(f"rope scaling {scaling!r} in a GGUF file is not supported")
    for key in ("block_count", "embedding_length", "feed_forward_length", "attention.head_count"):
        if header.get(key) is None:
            raise GgufError(f"the GGUF metadata has no `{arch}.{key}`")


def _token_id(header: GgufHeader, name: str) -> int | None:
    value = header.metadata.get(f"tokenizer.ggml.{name}_token_id")
    return int(value) if value is not None else None


def _decimal(value: float) -> float:
    """A float32 from the file as the decimal it was written from (9.9999997e-06 -> 1e-05)."""
    return float(f"{float(value):.7g}")


def hf_config(header: GgufHeader) -> dict[str, Any]:
    """The ``config.json`` (transformers 5 form) of the model this GGUF file holds."""
    check_supported(header)
    dim, heads = int(header.get("embedding_length")), int(header.get("attention.head_count"))
    embed = header.tensors.get("token_embd.weight")
    tokens = header.metadata.get("tokenizer.ggml.tokens")
    vocab = header.get("vocab_size") or (embed.shape[-1] if embed else None) or (len(tokens) if tokens else None)
    if vocab is None:
        raise GgufError(
            f"{header.path}: the vocabulary size is not recorded (no `{header.architecture}.vocab_size`, "
            "no token_embd.weight)"
        )
    head_dim = header.get("attention.key_length") or header.get("rope.dimension_count") or dim // heads
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": SUPPORTED_ARCHITECTURES[header.architecture],
        "hidden_size": dim,
        "intermediate_size": int(header.get("feed_forward_length")),
        "num_hidden_layers": int(header.get("block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(header.get("attention.head_count_kv") or heads),
        "head_dim": int(head_dim),
        "hidden_act": "silu",
        "rms_norm_eps": _decimal(header.get("attention.layer_norm_rms_epsilon", 1e-5)),
        "rope_parameters": {"rope_type": "default", "rope_theta": _decimal(header.get("rope.freq_base", 10000.0))},
        "max_position_embeddings": int(header.get("context_length", 2048)),
        "vocab_size": int(vocab),
        "tie_word_embeddings": "output.weight" not in header.tensors,
        "attention_bias": False,
        "mlp_bias": False,
        "bos_token_id": _token_id(header, "bos"),
        "eos_token_id": _token_id(header, "eos"),
        "pad_token_id": _token_id(header, "padding"),
        "dtype": "float32",
    }
