"""`sftc plan` of a spec whose inputs have not changed, reading only metadata.

Everything `sftc plan` reports besides the devices follows from the decided plan, the model's
config and the data's counts, and those follow from the compiled plan, the bytes of the data
files, the tokenizer's files and the checkpoint's config. Preparing the data (`runtime.prepare`)
records its outcome under a key made of exactly those inputs; a later `sftc plan` that finds its
key recorded reports from the record without loading transformers, datasets or the data. Any
changed byte of a data file, tokenizer file or config, another sftc or library version, or an
input that cannot be fingerprinted without loading it (a hub dataset) misses, and the plan is
prepared in full.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, fields
from importlib import metadata
from pathlib import Path
from typing import Any

from .data.stats import DataStats, SourceStats
from .plan import Plan

CACHE_VERSION = 1
# files of a checkpoint directory that are not its weights: config, tokenizer, chat template
_WEIGHTS = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".msgpack", ".h5", ".ckpt")
_LIBRARIES = ("sftc", "datasets", "tokenizers", "transformers", "sentencepiece")


@dataclass(frozen=True)
class TokenizerFacts:
    """What the model's config takes from a tokenizer: its size and special ids."""

    size: int
    bos_token_id: int | None
    eos_token_id: int | None
    pad_token_id: int | None

    def __len__(self) -> int:
        return self.size

    @classmethod
    def of(cls, tokenizer) -> "TokenizerFacts":
        return cls(len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)


@dataclass(frozen=True)
class Recorded:
    """A prepared plan as recorded: the decided plan, the data's counts, the tokenizer's facts."""

    plan: Plan
    stats: DataStats
    tokenizer: TokenizerFacts


def _digest_files(paths: list[Path]) -> str:
    """The sha256 of each file's name (without its directory) and bytes, in order."""
    from .data.content import file_digest, read_chunks

    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + b"\0" + file_digest(read_chunks(str(path))))
    return digest.hexdigest()


def _metadata_files(directory: Path) -> list[Path]:
    """A checkpoint or tokenizer directory's files other than weights, sorted."""
    return sorted(p for p in directory.iterdir() if p.is_file() and not p.name.endswith(_WEIGHTS))


def _model_digest(plan: Plan) -> str | None:
    """The checkpoint's config and tokenizer files (None for an `init` model)."""
    if plan.model.kind != "hf":
        return None
    from .hf import resolve_checkpoint

    return _digest_files(_metadata_files(resolve_checkpoint(plan.model.path, plan.model.revision)))


def _tokenizer_digest(plan: Plan, cache_dir: Path) -> str | None:
    """The tokenizer's own files; for a trained tokenizer, the one its training inputs name, once trained."""
    spec = plan.model.tokenizer
    if spec.kind == "base":
        return "base"  # the checkpoint's files, in `_model_digest`
    if spec.kind == "hf":
        from .hf import resolve_checkpoint

        return _digest_files(_metadata_files(resolve_checkpoint(spec.path, spec.revision)))
    if spec.kind == "sentencepiece":
        return _digest_files([Path(spec.path)])
    from .prepare import trained_tokenizer_dir

    target = trained_tokenizer_dir(plan, cache_dir)
    return _digest_files(_metadata_files(target)) if (target / "tokenizer.json").is_file() else None


def _versions() -> dict[str, str | None]:
    out = {}
    for name in _LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def inputs_key(plan: Plan, cache_dir: Path) -> str | None:
    """The key of everything a prepared plan follows from, or None when an input cannot be
    fingerprinted without loading it (a hub dataset, a saved `disk` dataset, a missing file)."""
    from .data.sources import fingerprint_files, resolve_paths
    from .data.tokenize import PIPELINE_VERSION
    from .prepare import TOKENIZER_CACHE_VERSION

    try:
        sources = {}
        for spec in plan.data.sources:
            parts = [spec] + ([spec.eval_part()] if spec.eval_part() is not None else [])
            for part in parts:
                if part.kind in ("hf_dataset", "disk"):
                    return None
                sources[part.name + ("/eval" if part is not spec else "")] = fingerprint_files(resolve_paths(part))
        tokenizer = _tokenizer_digest(plan, cache_dir)
        if tokenizer is None:
            return None
        model = _model_digest(plan)
    except Exception:  # noqa: BLE001 - a missing or unreadable input: the full preparation says what is wrong
        return None
    key = [CACHE_VERSION, PIPELINE_VERSION, TOKENIZER_CACHE_VERSION, _versions(), plan.to_dict(), sources,
           tokenizer, model]
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _path(cache_dir: Path, key: str) -> Path:
    return cache_dir / "plans" / f"{key}.json"


def record(key: str | None, cache_dir: Path, plan: Plan, stats: DataStats, tokenizer) -> None:
    """Keep a prepared plan's outcome under ``key`` (written whole or not at all). A cache that
    cannot be written costs the next `sftc plan` a full preparation, not this run: said in the log."""
    if key is None:
        return
    target = _path(cache_dir, key)
    body = {"plan": plan.to_dict(), "stats": stats.to_dict(), "tokenizer": TokenizerFacts.of(tokenizer).__dict__}
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps(body))  # in order: the sources as the spec lists them
        partial.replace(target)
    except OSError as error:
        logging.getLogger("sftc").warning("the plan record %s was not written: %s", target, error)


def _stats(d: dict[str, Any]) -> DataStats:
    names = {f.name for f in fields(DataStats)}
    source_names = {f.name for f in fields(SourceStats)}
    sources = {name: SourceStats(**{**{k: v for k, v in s.items() if k in source_names}, "cache_hit": True})
               for name, s in d["sources"].items()}  # nothing is tokenized now
    return DataStats(**{**{k: v for k, v in d.items() if k in names}, "sources": sources})


def recall(key: str | None, cache_dir: Path) -> Recorded | None:
    """The outcome recorded under ``key``, or None (never recorded, or unreadable: prepared again)."""
    if key is None:
        return None
    try:
        body = json.loads(_path(cache_dir, key).read_text())
        return Recorded(Plan.from_dict(body["plan"]), _stats(body["stats"]), TokenizerFacts(**body["tokenizer"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
