"""Corrections back into data: `sftc review RUN --export corrections.jsonl`.

Each eval row with a current correction becomes one JSON line: the row as it is in its
source file (read through `runtime.data.sources`, the reader training used, located by
the sample's file and line) with its trained part replaced by the correction:

* a ``messages`` source (or a conventional source with a ``messages`` column): the
  content of the last assistant turn;
* a prompt/completion source whose completion template is exactly one placeholder
  ``{col}`` (or ``{a.b}``): that column (a conventional source: ``completion``);

plus ``"review": {"reviewer", "score", "run", "row"}`` (sources ignore columns their
template does not name). A row that cannot be mapped back (a completion template with
text around its placeholder, a hub dataset without a local file, a source file changed
since the run, ...) is refused with a message naming source and row, and counted.

The correction of a row is the latest current correction of the tuned answer among its
reviewers (judgements made against other data, by fingerprint, do not count); when
several reviewers corrected one row, the latest wins and a warning names them.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .rows import ReviewError, Row, RunRows, load_rows
from .store import Judgement, ReviewStore, current_of

__all__ = ["ExportResult", "chosen_corrections", "export_corrections"]


@dataclass
class ExportResult:
    path: Path
    written: int = 0
    refused: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class _Refused(Exception):
    pass


def chosen_corrections(rows: RunRows, judgements: list[Judgement]) -> tuple[list[tuple[Row, Judgement]], list[str]]:
    """(row, the judgement whose correction it takes) in row order, and the warnings about
    rows several reviewers corrected."""
    fresh = [j for j in judgements if j.answer == "tuned" and (row := rows.by_id(j.row_id)) is not None
             and j.data_fingerprint == row.fingerprint]
    by_row: dict[str, list[Judgement]] = {}
    for j in current_of(fresh):
        if j.correction is not None:
            by_row.setdefault(j.row_id, []).append(j)
    chosen, warnings = [], []
    for row in rows.rows:
        corrections = by_row.get(row.id)
        if not corrections:
            continue
        latest = max(corrections, key=lambda j: j.id or 0)
        if len(corrections) > 1:
            others = ", ".join(sorted(j.reviewer for j in corrections if j is not latest))
            warnings.append(f"row {row.id}: corrected by {len(corrections)} reviewers ({latest.reviewer}, {others}); "
                            f"took the latest, {latest.reviewer}'s of {latest.created_at}")
        chosen.append((row, latest))
    return chosen, warnings


def _drop_nulls(value: Any) -> Any:
    """Without the null fields datasets adds to a JSON row for keys other rows have."""
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def _target(template, row: dict, where: str) -> tuple[str, tuple[str, ...]]:
    """("messages", (column,)) or ("column", path) of the trained part of ``row``."""
    from ..data.templates import parse_template

    mode = template.mode
    if mode == "messages":
        return "messages", (template.messages,)
    if mode == "prompt_completion":
        parts = parse_template(template.completion)
        if len(parts) != 1 or not isinstance(parts[0], tuple):
            raise _Refused(f"{where}: the completion template {template.completion!r} is not exactly one "
                           f"placeholder {{column}}, so the correction cannot be put back into a column")
        return "column", parts[0]
    if "messages" in row:
        return "messages", ("messages",)
    if "completion" in row and "prompt" in row:
        return "column", ("completion",)
    raise _Refused(f"{where}: the source has no template and no messages or prompt/completion columns; "
                   f"there is no trained column to put the correction in")


def _replace(row: dict, target: tuple[str, tuple[str, ...]], correction: str, where: str) -> dict:
    kind, path = target
    row = json.loads(json.dumps(row, default=str))  # a deep copy in JSON types
    if kind == "messages":
        turns = row.get(path[0])
        if not isinstance(turns, list):
            raise _Refused(f"{where}: column {path[0]!r} is not a list of messages")
        last = [i for i, t in enumerate(turns) if isinstance(t, dict) and t.get("role") == "assistant"]
        if not last:
            raise _Refused(f"{where}: column {path[0]!r} has no assistant turn to correct")
        turns[last[-1]]["content"] = correction
        return row
    holder: Any = row
    for key in path[:-1]:
        holder = holder.get(key) if isinstance(holder, dict) else None
    if not isinstance(holder, dict) or path[-1] not in holder:
        raise _Refused(f"{where}: the row has no column {'.'.join(path)!r}")
    holder[path[-1]] = correction
    return row


class _Reader:
    """Rows of a source's files by (file, line), read once per file with the training reader."""

    def __init__(self, run_dir: Path, cache_dir: str | None):
        from ..plan import Plan, PlanVersionError

        path = run_dir / "plan.json"
        try:
            self.plan = Plan.from_json(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ReviewError(f"{path}: not found; the corrections are mapped back through the run's plan") from None
        except (OSError, ValueError, KeyError, TypeError, PlanVersionError) as error:
            raise ReviewError(f"{path}: cannot read the run's plan ({error})") from None
        self.cache_dir = cache_dir
        self.files: dict[str, tuple[Any, dict[int, int]]] = {}
        self.changed: dict[str, str | None] = {}

    def part(self, source: str, file: str, where: str):
        from ..data.sources import resolve_paths

        try:
            spec = self.plan.data.source(source)
        except KeyError:
            raise _Refused(f"{where}: the run's plan has no source {source!r}") from None
        if file in resolve_paths(spec):
            return spec
        part = spec.eval_part()
        if part is not None and file in resolve_paths(part):
            return part
        raise _Refused(f"{where}: {file} is no longer one of the source's files")

    def row(self, source: str, file: str, line: int, expected_fingerprint: str, where: str) -> dict:
        from ..data.errors import DataError
        from ..data.sources import load_source, source_fingerprint

        try:
            spec = self.plan.data.source(source)
            if source not in self.changed:  # the data the run saw: a changed file has other rows at that line
                self.changed[source] = None if source_fingerprint(spec, self.cache_dir) == expected_fingerprint \
                    else f"data {source} changed since the run (its fingerprint differs from manifest.json)"
            if self.changed[source]:
                raise _Refused(f"{where}: {self.changed[source]}; the row at this line may be another row")
            if file not in self.files:
                part = dataclasses.replace(self.part(source, file, where), paths=(file,))
                loaded = load_source(part, self.cache_dir)
                lines = {loaded.locate(i)[1]: i for i in range(len(loaded))}
                self.files[file] = (loaded, lines)
        except KeyError:
            raise _Refused(f"{where}: the run's plan has no source {source!r}") from None
        except (DataError, OSError) as error:
            raise _Refused(f"{where}: cannot read the source: {error}") from None
        loaded, lines = self.files[file]
        if line not in lines:
            raise _Refused(f"{where}: {file} has no row at line {line}")
        row = dict(loaded.dataset[lines[line]])
        return _drop_nulls(row) if loaded.spec.kind in ("jsonl", "json") else row


def export_corrections(run_dir: str | Path, out: str | Path, cache_dir: str | None = None) -> ExportResult:
    """Write the corrections of ``run_dir`` to ``out`` (JSON lines); see the module docstring.
    ``cache_dir``: the datasets cache (default: sftc's, as `sftc run` uses)."""
    from ..cache import default_cache

    run_dir, out = Path(run_dir), Path(out)
    rows = load_rows(run_dir)
    store = ReviewStore(run_dir, create=False)
    chosen, warnings = chosen_corrections(rows, store.history() if store.exists else [])
    result = ExportResult(path=out, warnings=warnings)
    reader = _Reader(run_dir, cache_dir or str(default_cache() / "data")) if chosen else None
    lines = []
    for row, judgement in chosen:
        where = f"data {row.source}, row {row.id}"
        try:
            if row.file is None:
                raise _Refused(f"{where}: the row has no local file (a hub or disk dataset) to map the correction "
                               f"back to; copy the row by hand")
            assert reader is not None
            template = reader.plan.data.template_for(row.source)
            original = reader.row(row.source, row.file, row.line, row.fingerprint, where)
            corrected = _replace(original, _target(template, original, where), judgement.correction or "", where)
        except _Refused as refusal:
            result.refused.append(str(refusal))
            continue
        corrected["review"] = {"reviewer": judgement.reviewer, "score": judgement.score,
                               "run": str(run_dir), "row": row.id}
        lines.append(json.dumps(corrected, ensure_ascii=False, default=str) + "\n")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    tmp.write_text("".join(lines), encoding="utf-8")
    os.replace(tmp, out)
    result.written = len(lines)
    return result
