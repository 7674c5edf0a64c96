"""The one identity of a run's inputs: "are these the same inputs?" answered in one place.

Every input that can change what a run computes is fingerprinted here, by one rule each:

    data               each source's own files, by content ("faq")
    eval_data          each separate eval file (`split eval = jsonl(...)`), by content ("faq")
    tokenizer          the tokenizer's files, by content (a trained one: once trained)
    base               the base checkpoint's files, by content: a directory, a GGUF file or a hub
                       snapshot (a hub id without a revision that moved is another snapshot)
    base_config        the base's files other than weights (its config and tokenizer)
    weights            the settings that change the base weights' values: dtype, quantize
    code               sftc's version and the content of its own source files (an editable
                       install keeps one version number across commits)
    data_libraries     versions of the libraries that change how rows are read and rendered
    numeric_libraries  versions of the libraries that change the numbers a model computes
    benchmarks         the lm_eval tasks' own files (`include`), by content, and lm_eval's version;
                       "none" without `eval.benchmarks`

Content digests are sha256 of the bytes (`runtime.platform.file_hashes`: remembered per file by path,
size, mtime and inode, so a multi-GB base is read once per change, not once per command).

Each consumer depends on the parts `CONSUMERS` names, and on nothing else:

    resume       continuing saved weights needs the inputs that shaped them
    plan_cache   `sftc plan`'s counts and estimates (no weights are read)
    baseline     the base model's answers and scores on the eval rows
    run_diff     everything: `sftc diff RUN RUN` shows each part that differs

Review judgements depend on the data of the eval rows they are about (`eval_fingerprints`).
`Inputs.changes` names what changed in the same words for every consumer. A value of None
means "cannot be known without loading it" (a hub dataset, a tokenizer not trained yet); a
key over such a part is None too, so a cache misses rather than hits wrongly.

Plain data, standard library only: the compiler's run diff reads manifests through it.
`runtime.preflight.input_fingerprints` computes each part from the files (`gather`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CONSUMERS", "PARTS", "Inputs", "eval_fingerprints"]

VERSION = 1
PARTS = (
    "data",
    "eval_data",
    "tokenizer",
    "base",
    "base_config",
    "weights",
    "code",
    "data_libraries",
    "numeric_libraries",
    "benchmarks",
)
CONSUMERS: dict[str, tuple[str, ...]] = {
    "resume": ("data", "tokenizer", "base", "weights"),
    "plan_cache": ("data", "eval_data", "tokenizer", "base_config", "weights", "code", "data_libraries"),
    "baseline": (
        "data",
        "eval_data",
        "tokenizer",
        "base",
        "weights",
        "code",
        "data_libraries",
        "numeric_libraries",
        "benchmarks",
    ),
    "run_diff": PARTS,
}
_WHAT = {
    "tokenizer": "the tokenizer's files changed",
    "base": "the base checkpoint's files changed",
    "base_config": "the base checkpoint's config or tokenizer files changed",
    "code": "another sftc (its version or source files)",
    "benchmarks": "the benchmark tasks' files or lm_eval's version changed",
}


@dataclass(frozen=True)
class Inputs:
    """The fingerprint of every input part (see the module docstring); plain JSON data."""

    parts: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"version": VERSION, **self.parts}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> Inputs | None:
        """The inputs a manifest recorded (None: a run recorded before sftc kept them)."""
        if not isinstance(d, Mapping) or d.get("version") != VERSION:
            return None
        return cls({k: d.get(k) for k in PARTS})

    def of(self, consumer: str) -> dict[str, Any]:
        return {name: self.parts.get(name) for name in CONSUMERS[consumer]}

    def key(self, consumer: str) -> str | None:
        """A digest of the parts ``consumer`` depends on; None when one of them is unknown."""
        parts = self.of(consumer)
        if any(_unknown(v) for v in parts.values()):
            return None
        return hashlib.sha256(json.dumps([VERSION, parts], sort_keys=True).encode()).hexdigest()[:32]

    def changes(self, old: Inputs, consumer: str) -> list[str]:
        """``~ data faq: content changed (fingerprint 1a2b3c -> 4d5e6f)`` for each part ``consumer``
        depends on that differs from ``old``: one wording for every consumer."""
        lines: list[str] = []
        for name in CONSUMERS[consumer]:
            before, after = old.parts.get(name), self.parts.get(name)
            if before == after:
                continue
            if name in ("data", "eval_data"):
                label = "data" if name == "data" else "eval data"
                for source in sorted(set(before or {}) | set(after or {})):
                    a, b = (before or {}).get(source), (after or {}).get(source)
                    if a != b:
                        lines.append(f"~ {label} {source}: content changed (fingerprint {_short(a)} -> {_short(b)})")
            elif name in ("weights", "data_libraries", "numeric_libraries"):
                prefix = "model." if name == "weights" else "library "
                for key in sorted(set(before or {}) | set(after or {})):
                    a, b = (before or {}).get(key), (after or {}).get(key)
                    if a != b:
                        lines.append(f"~ {prefix}{key}: {a} -> {b}")
            else:
                lines.append(
                    f"~ {name.replace('_', ' ')}: {_WHAT[name]} (fingerprint {_short(before)} -> {_short(after)})"
                )
        return lines


def _unknown(value: Any) -> bool:
    if value is None:
        return True
    return isinstance(value, Mapping) and any(v is None for v in value.values())


def _short(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, str):
        return value[:12]
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:12]


def eval_fingerprints(data: Mapping[str, Any]) -> dict[str, str]:
    """Per source, the fingerprint of the data its eval rows are read from: its separate eval
    file's, else its own files' (a held-out fraction). ``data`` is a manifest (or its inputs)."""
    inputs = data.get("inputs") if "inputs" in data else (data if "eval_data" in data else None)
    if isinstance(inputs, Mapping) and isinstance(inputs.get("data"), Mapping):
        own, separate = dict(inputs["data"]), dict(inputs.get("eval_data") or {})
    else:  # a manifest written before inputs were recorded: its train fingerprints
        own, separate = dict((data.get("data") or {}).get("fingerprints") or {}), {}
    return {name: str(separate.get(name) or digest or "") for name, digest in own.items()}
