"""A run's model as one GGUF file, for llama.cpp and Ollama: ``sftc export RUN --format gguf``.

The inverse of `runtime.checkpoints.gguf_checkpoint`, written with the ``gguf`` package's
``GGUFWriter`` under the names llama.cpp's own converter (``convert_hf_to_gguf.py``) uses::

    write_gguf(merged, config, tokenizer, "runs/x/export/model-q8_0.gguf", quant="q8_0", stops=[2])
    # general.architecture = llama, llama.* hyperparameters, token_embd / blk.N.* / output tensors,
    # tokenizer.ggml.* (model, pre, tokens, token types, merges or scores, bos/eos/eot/pad ids),
    # tokenizer.chat_template

What is written and why:

* the weights of the model given (the caller passes the merged model the HF export writes, so a
  LoRA run's GGUF holds exactly those weights), in Hugging Face layout from
  `hf_checkpoint.hf_tensors`, renamed through `gguf_checkpoint.GGUF_TABLE` (one table for
  reading and writing) and with the q/k rows of each head interleaved as llama.cpp's rotary code
  expects. Matrices become ``f16`` or ``q8_0`` (blocks of 32 with one scale; a matrix whose rows
  are not a multiple of 32 stays ``f16``, as llama.cpp's converter does); norms stay ``f32``.
* the tokenizer the run trained with, as GGUF metadata: byte-level BPE vocabularies as ``gpt2``
  (tokens in the byte alphabet, merges, the pre-tokenizer's name) and SentencePiece vocabularies
  as ``llama`` (pieces, scores, byte pieces marked; BPE only: llama.cpp tokenizes every ``llama``
  vocabulary as SentencePiece BPE, so a unigram one is refused). Ids the model has beyond the tokenizer's
  (a vocabulary padded to a round size) are ``[PADn]`` tokens marked unused.
* the EOS and end-of-turn ids: ``stops`` is `runtime.data.prompts.stop_ids`, the run's one stop
  rule; the end-of-turn token is written as ``tokenizer.ggml.eot_token_id`` so llama.cpp ends an
  answer where evaluation did.

Only the plain Llama layout (no biases, no q/k norms, no sliding window, default rope) has a
GGUF form llama.cpp and sftc's reader agree on; anything else is a `GgufExportError` naming it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runtime.checkpoints.gguf_checkpoint import GGUF_TABLE
from runtime.data.prompts import adds_special_tokens
from runtime.plan.sftc_error import SftcError

__all__ = ["GGUF_QUANTS", "GgufExportError", "GgufVocab", "gguf_vocab", "permute", "write_gguf"]

# --quant -> (the type of matrices, general.file_type)
GGUF_QUANTS = {"f16": ("F16", "MOSTLY_F16"), "q8_0": ("Q8_0", "MOSTLY_Q8_0")}
ARCHITECTURE = "llama"
_PERMUTED = {"unpermute_q": "q", "unpermute_k": "k"}

# tokenizer.json pre-tokenizers -> llama.cpp's name for them (`tokenizer.ggml.pre`)
_LLAMA3_SPLIT = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}"
_QWEN2_SPLIT = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}|"


class GgufExportError(SftcError):
    """The model or tokenizer has no GGUF form llama.cpp reads; the message says what."""


def permute(weight: np.ndarray, heads: int) -> np.ndarray:
    """Hugging Face q/k rows ``[heads * head_dim, in]`` -> llama.cpp's interleaved rotary order
    (the inverse of `gguf_checkpoint._unpermute`)."""
    rows = weight.shape[0]
    return weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _gguf_names() -> dict[str, tuple[str, str | None]]:
    return {hf: (gguf_name, transform) for gguf_name, hf, transform in GGUF_TABLE}


def _gguf_name(hf_name: str) -> tuple[str, str | None]:
    import re

    m = re.search(r"(?<=layers\.)(\d+)(?=\.)", hf_name)
    template = hf_name[: m.start()] + "{i}" + hf_name[m.end() :] if m else hf_name
    table = _gguf_names()
    if template not in table:
        raise GgufExportError(f"tensor {hf_name!r} has no GGUF name (llama.cpp's llama layout has no such tensor)")
    gguf_name, transform = table[template]
    return (gguf_name.format(i=m.group(1)) if m else gguf_name), transform


def _check_layout(config) -> None:
    """Raise unless ``config`` is the plain Llama layout GGUF's ``llama`` architecture holds."""
    unsupported = [
        what
        for what, present in (
            ("attention/MLP biases", config.qkv_bias or config.o_bias or config.mlp_bias),
            ("q/k norms", config.qk_norm),
            ("a sliding attention window", config.sliding_window is not None),
            (
                "rope scaling",
                config.rope_scaling is not None and config.rope_scaling_dict().get("rope_type") != "default",
            ),
        )
        if present
    ]
    if unsupported:
        raise GgufExportError(
            f"this {config.model_type} model has {', '.join(unsupported)}, which sftc's GGUF export does not write "
            "(it writes the plain Llama layout); use `--format hf` and llama.cpp's convert_hf_to_gguf.py"
        )


# ---------------------------------------------------------------- tokenizer
@dataclass(frozen=True)
class GgufVocab:
    """The tokenizer as GGUF metadata (`tokenizer.ggml.*`)."""

    model: str  # "gpt2" (byte-level BPE) | "llama" (SentencePiece)
    pre: str | None  # llama.cpp's pre-tokenizer name (gpt2 only)
    tokens: list[str]
    token_types: list[int]
    scores: list[float] | None
    merges: list[str] | None
    add_bos: bool
    add_eos: bool
    add_space_prefix: bool | None = None


def _components(part: dict | None) -> list[dict]:
    if not part:
        return []
    if part.get("type") == "Sequence":
        return [c for p in part.get("pretokenizers", part.get("normalizers", [])) for c in _components(p)]
    return [part]


def _pre_name(pre_tokenizer: dict | None) -> str:
    """llama.cpp's name for a byte-level BPE pre-tokenizer (how text is split before the merges)."""
    parts = _components(pre_tokenizer)
    kinds = [p["type"] for p in parts]
    byte_level = next(p for p in parts if p["type"] == "ByteLevel")
    splits = [p for p in parts if p["type"] == "Split"]
    if kinds == ["ByteLevel"] and byte_level.get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and parts[0].get("individual_digits") and byte_level.get("use_regex", True):
        return "smollm"
    if len(splits) == 1 and not byte_level.get("use_regex", True):
        pattern = splits[0].get("pattern", {}).get("Regex", "")
        if pattern.startswith(_LLAMA3_SPLIT):
            return "llama-bpe"
        if pattern.startswith(_QWEN2_SPLIT):
            return "qwen2"
    raise GgufExportError(
        f"the tokenizer's pre-tokenizer ({' + '.join(kinds) or 'none'}) has no llama.cpp name sftc knows "
        "(GPT-2, SmolLM, Llama 3 and Qwen 2 splits are known); use `--format hf` and llama.cpp's converter"
    )


def gguf_vocab(tokenizer: Any, vocab_size: int) -> GgufVocab:
    """The GGUF form of a transformers fast tokenizer whose model has ``vocab_size`` embeddings."""
    import gguf

    state = json.loads(tokenizer.backend_tokenizer.to_str())
    model = state["model"]
    added = {t["id"]: t for t in state.get("added_tokens", [])}
    size = max(len(tokenizer), vocab_size)
    if size > vocab_size:
        raise GgufExportError(f"the tokenizer has {len(tokenizer)} tokens but the model only {vocab_size} embeddings")
    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    T = gguf.TokenType
    tokens: list[str] = []
    types: list[int] = []
    for i in range(size):
        token = by_id.get(i)
        if token is None:
            tokens.append(f"[PAD{i}]")
            types.append(T.UNUSED)
        elif i in added:
            tokens.append(token)
            types.append(T.CONTROL if added[i].get("special") else T.USER_DEFINED)
        else:
            tokens.append(token)
            types.append(T.NORMAL)
    add_bos, add_eos = adds_special_tokens(tokenizer)
    kinds = [p["type"] for p in _components(state.get("pre_tokenizer"))]
    if model["type"] == "BPE" and "ByteLevel" in kinds:
        merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
        return GgufVocab("gpt2", _pre_name(state.get("pre_tokenizer")), tokens, types, None, merges, add_bos, add_eos)
    metaspace = "Metaspace" in kinds or any(
        p.get("type") == "Replace" and p.get("content") == "\u2581" for p in _components(state.get("normalizer"))
    )
    if metaspace and model["type"] == "Unigram":
        # llama.cpp's `llama` tokenizer merges adjacent pieces best score first: SentencePiece BPE's
        # algorithm, not unigram's best segmentation. On a unigram vocabulary trained by sftc it gave
        # other ids than the run's for 204 of 206 texts (and sftc's / transformers' GGUF reader too).
        raise GgufExportError(
            "the run's tokenizer is a SentencePiece unigram model; llama.cpp reads a SentencePiece "
            "vocabulary as BPE (it merges pieces by score) and would cut text into other tokens than "
            "training did. Train it with `model_type = bpe` (`train sentencepiece(vocab = N, model_type = "
            "bpe) on SOURCE`, as specs/quickstart.sft does), or export with `--format hf`"
        )
    if metaspace and model["type"] == "BPE":
        scores = [-float(i) for i in range(size)]  # SentencePiece BPE: a piece's score is its merge priority
        unk = tokenizer.unk_token_id
        for i, token in enumerate(tokens):
            if types[i] == T.NORMAL and len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
                types[i] = T.BYTE
            elif i == unk:
                types[i] = T.UNKNOWN
        return GgufVocab("llama", None, tokens, types, scores, None, add_bos, add_eos, add_space_prefix=True)
    raise GgufExportError(
        f"the run's tokenizer is a {model['type']} model ({' + '.join(kinds) or 'no pre-tokenizer'}); GGUF holds "
        "byte-level BPE (GPT-2, Llama 3 style) and SentencePiece vocabularies"
    )


# ---------------------------------------------------------------- the file
def _tensor(array: np.ndarray, quant: str):
    """(data, raw type) of one tensor: 1-D tensors f32, matrices in ``quant`` (f16 when rows do not
    split into blocks of 32)."""
    import gguf

    Q = gguf.GGMLQuantizationType
    array = np.ascontiguousarray(array, np.float32)
    if array.ndim == 1:
        return array, Q.F32
    kind = Q[GGUF_QUANTS[quant][0]]
    if kind == Q.Q8_0:
        try:
            return gguf.quants.quantize(array, kind), kind
        except gguf.quants.QuantError:
            kind = Q.F16
    return array.astype(np.float16), Q.F16


def write_gguf(
    model,
    config,
    tokenizer,
    path: str | os.PathLike,
    *,
    quant: str = "f16",
    stops: Sequence[int] = (),
    name: str = "sftc",
) -> Path:
    """Write ``model`` (a plain `Transformer`: merge adapters first) with ``tokenizer`` and its chat
    template to the GGUF file ``path``; ``stops`` are the ids that end an answer (EOS first)."""
    import gguf

    from runtime.checkpoints.hf_checkpoint import hf_tensors

    if quant not in GGUF_QUANTS:
        raise GgufExportError(f"unknown GGUF quantization {quant!r}; use {' or '.join(GGUF_QUANTS)}")
    _check_layout(config)
    vocab = gguf_vocab(tokenizer, config.vocab_size)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + f".partial-{os.getpid()}")
    writer = gguf.GGUFWriter(str(partial), ARCHITECTURE)
    writer.add_name(name)
    writer.add_file_type(gguf.LlamaFileType[GGUF_QUANTS[quant][1]])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_vocab_size(config.vocab_size)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_heads)
    writer.add_head_count_kv(config.num_kv_heads)
    writer.add_rope_dimension_count(config.head_dim)
    writer.add_rope_freq_base(float(config.rope_theta))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    if config.head_dim * config.num_heads != config.hidden_size:
        writer.add_key_length(config.head_dim)
        writer.add_value_length(config.head_dim)

    writer.add_tokenizer_model(vocab.model)
    if vocab.pre is not None:
        writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.token_types)
    if vocab.scores is not None:
        writer.add_token_scores(vocab.scores)
    if vocab.merges is not None:
        writer.add_token_merges(vocab.merges)
    if vocab.add_space_prefix is not None:
        writer.add_add_space_prefix(vocab.add_space_prefix)
    writer.add_add_bos_token(vocab.add_bos)
    writer.add_add_eos_token(vocab.add_eos)
    special = {
        "bos": tokenizer.bos_token_id,
        "eos": tokenizer.eos_token_id,
        "unk": tokenizer.unk_token_id,
        "pad": tokenizer.pad_token_id,
    }
    ends = [s for s in stops if s != tokenizer.eos_token_id]
    if len(ends) > 1:
        raise GgufExportError(f"the run stops on {len(stops)} tokens {list(stops)}; GGUF records an EOS and one EOT")
    add = {
        "bos": writer.add_bos_token_id,
        "eos": writer.add_eos_token_id,
        "unk": writer.add_unk_token_id,
        "pad": writer.add_pad_token_id,
    }
    for key, token_id in special.items():
        if token_id is not None:
            add[key](int(token_id))
    if ends:
        writer.add_eot_token_id(int(ends[0]))
    if getattr(tokenizer, "chat_template", None):
        writer.add_chat_template(tokenizer.chat_template)

    heads = {"unpermute_q": config.num_heads, "unpermute_k": config.num_kv_heads}
    for hf_name, array in hf_tensors(model, "float32"):
        gguf_name, transform = _gguf_name(hf_name)
        if transform is not None:
            array = permute(array, heads[transform])
        data, kind = _tensor(array, quant)
        writer.add_tensor(gguf_name, data, raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(partial, out)
    return out
