"""`sftc plan` of a spec whose inputs have not changed, reading only metadata.

Everything `sftc plan` reports besides the devices follows from the decided plan, the model's
config and the data's counts, and those follow from the compiled plan, the bytes of the data
files, the tokenizer's files and the checkpoint's config. Preparing the data (`runtime.preflight.prepare`)
records its outcome under a key made of exactly those inputs (`runtime.plan.run_inputs`, the one identity
of a run's inputs); a later `sftc plan` that finds its key recorded reports from the record
without loading transformers, datasets or the data. Any changed byte of a data or eval file,
tokenizer file or config, another sftc (its code, not only its version) or data library version,
or an input that cannot be fingerprinted without loading it (a hub dataset) misses, and the plan
is prepared in full.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from runtime.data.stats import DataStats, SourceStats
from runtime.plan.run_plan import Plan

CACHE_VERSION = 2  # 2: the key's inputs come from runtime.plan.run_inputs


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
    def of(cls, tokenizer) -> TokenizerFacts:
        return cls(len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)


@dataclass(frozen=True)
class Recorded:
    """A prepared plan as recorded: the decided plan, the data's counts, the tokenizer's facts."""

    plan: Plan
    stats: DataStats
    tokenizer: TokenizerFacts


def inputs_key(plan: Plan, cache_dir: Path) -> str | None:
    """The key of everything a prepared plan follows from: the compiled plan and the inputs
    `runtime.plan.run_inputs` names for the plan cache (data and eval files, tokenizer, the base's config,
    sftc's code, the data libraries); None when one cannot be known without loading it (a hub
    dataset, a saved `disk` dataset, a tokenizer not trained yet) or is missing."""
    from runtime.data.tokenize import PIPELINE_VERSION
    from runtime.preflight.input_fingerprints import gather
    from runtime.preflight.prepare import TOKENIZER_CACHE_VERSION

    try:
        inputs = gather(plan, cache_dir, load=False, consumer="plan_cache").key("plan_cache")
    except Exception:  # noqa: BLE001 - a missing or unreadable input: the full preparation says what is wrong
        return None
    if inputs is None:
        return None
    key = [CACHE_VERSION, PIPELINE_VERSION, TOKENIZER_CACHE_VERSION, plan.to_dict(), inputs]
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
    sources = {
        name: SourceStats(**{**{k: v for k, v in s.items() if k in source_names}, "cache_hit": True})
        for name, s in d["sources"].items()
    }  # nothing is tokenized now
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
