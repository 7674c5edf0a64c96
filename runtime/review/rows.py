"""The eval rows of a finished run, as `sftc review` shows them: read from `report.json`
(the tuned answers, and the base model's under ``"baseline"`` when the run has them) and
`manifest.json` (the data fingerprints)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from runtime.plan.run_inputs import eval_fingerprints
from runtime.plan.sample_origin import sample_key
from runtime.plan.sftc_error import SftcError
from runtime.review.store import answer_sha, row_ids

__all__ = ["ReviewError", "Row", "RunRows", "blind_order", "load_rows"]

_SAMPLE_KEYS = ("source", "line", "prompt", "reference", "generated")


class ReviewError(SftcError):
    """A run directory `sftc review` cannot use; the message says which file and why."""


@dataclass(frozen=True)
class Row:
    id: str
    index: int
    source: str
    file: str | None
    line: int
    turn: int | None  # one turn of a conversation trained per turn: its message index (runtime.plan.sample_origin)
    prompt: str
    reference: str
    tuned: str
    base: str | None  # None: the run has no baseline answer for this row
    fingerprint: str

    def text(self, answer: str) -> str | None:
        return self.tuned if answer == "tuned" else self.base

    def sha(self, answer: str) -> str | None:
        text = self.text(answer)
        return None if text is None else answer_sha(text)


@dataclass(frozen=True)
class RunRows:
    run_dir: Path
    rows: tuple[Row, ...]
    samples: list[dict]
    base_samples: list[dict] | None
    base_kind: str | None  # "base" | "few_shot" | None
    fingerprints: dict[str, str]

    def by_id(self, rid: str) -> Row | None:
        return self._index.get(rid)

    @cached_property
    def _index(self) -> dict[str, Row]:
        return {r.id: r for r in self.rows}

    @property
    def sources(self) -> list[str]:
        return list(dict.fromkeys(r.source for r in self.rows))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReviewError(f"{path}: not found; give a finished run directory (runs/<name>/<timestamp>)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ReviewError(f"{path}: cannot read it as JSON ({error})") from None


def _check_samples(path: Path, samples: Any, where: str) -> list[dict]:
    if not isinstance(samples, list):
        raise ReviewError(f"{path}: {where} is not a list of samples")
    for i, s in enumerate(samples):
        missing = [k for k in _SAMPLE_KEYS if not isinstance(s, dict) or k not in s]
        if missing:
            raise ReviewError(f"{path}: {where}[{i}] lacks {', '.join(missing)}")
    return samples


def load_rows(run_dir: str | Path) -> RunRows:
    """The rows of ``run_dir`` (ReviewError: no report, no samples, a baseline that does not line up)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ReviewError(f"{run_dir}: not a directory; give a run directory (runs/<name>/<timestamp>)")
    report_path = run_dir / "report.json"
    report = _read_json(report_path)
    samples = _check_samples(report_path, report.get("samples", []), "samples")
    if not samples:
        raise ReviewError(
            f"{report_path}: the run has no generated eval samples to review; give the spec an "
            f"`eval {{ generate = greedy(...) }}` block and eval rows, then run it again"
        )
    baseline = report.get("baseline")
    base_samples, base_kind = None, None
    if baseline is not None:
        base_samples = _check_samples(report_path, baseline.get("samples"), "baseline.samples")
        base_kind = baseline.get("kind")
    manifest = _read_json(run_dir / "manifest.json")
    fingerprints = eval_fingerprints(manifest)
    base_at = {sample_key(b): b["generated"] for b in base_samples or []}
    rows = []
    for i, (rid, s) in enumerate(zip(row_ids(samples), samples)):
        key = sample_key(s)
        rows.append(
            Row(
                id=rid,
                index=i,
                source=s["source"],
                file=s.get("file"),
                line=int(s["line"]),
                turn=key[3],
                prompt=s["prompt"],
                reference=s["reference"],
                tuned=s["generated"],
                base=base_at.get(key),
                fingerprint=fingerprints.get(s["source"], ""),
            )
        )
    return RunRows(
        run_dir=run_dir,
        rows=tuple(rows),
        samples=samples,
        base_samples=base_samples,
        base_kind=base_kind,
        fingerprints=fingerprints,
    )


def blind_order(row: str, reviewer: str) -> tuple[str, str]:
    """The answers of ``row`` as shown to ``reviewer`` in blind mode, ("A", "B") order:
    random-looking per row, the same on every reload (a hash of row and reviewer)."""
    digest = hashlib.sha256(f"{row}\x00{reviewer}".encode()).digest()
    return ("tuned", "base") if digest[0] & 1 else ("base", "tuned")
