"""Corrections back into data: `sftc review RUN --export corrections.jsonl`.

Each eval row with a current correction becomes one JSON line: the row as it is in its
source file (read through `runtime.data.sources`, the reader training used, located by
the sample's file and line) with the answer the sample was about replaced by the correction,
in the source's own shape (found by the rules that read the row: `resolve_mode`, `shapes`):

* a conversation (OpenAI messages, ShareGPT, renamed message keys, custom roles, stored as
  JSON text): the content of the sample's assistant message (its ``turn`` when the
  conversation was trained per turn, else the last assistant message), under the key the
  message uses; earlier and later messages are kept;
* a prompt/completion source whose completion template is one placeholder ``{col}`` (or
  ``{a.b}``): that column, the template's text around the placeholder taken off the correction
  (whitespace may be left out of it; other text must be in it); Alpaca: ``output``; a renamed
  column is written under its name in the file;

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

from runtime.review.rows import ReviewError, Row, RunRows, load_rows
from runtime.review.store import Judgement, ReviewStore, current_of

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
    fresh = [
        j
        for j in judgements
        if j.answer == "tuned" and (row := rows.by_id(j.row_id)) is not None and j.data_fingerprint == row.fingerprint
    ]
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
            warnings.append(
                f"row {row.id}: corrected by {len(corrections)} reviewers ({latest.reviewer}, {others}); "
                f"took the latest, {latest.reviewer}'s of {latest.created_at}"
            )
        chosen.append((row, latest))
    return chosen, warnings


def _drop_nulls(value: Any) -> Any:
    """Without the null fields datasets adds to a JSON row for keys other rows have."""
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def _corrected(plan: Any, source: str, row: dict, turn: int | None, correction: str, where: str) -> dict:
    """``row`` as it is in its file, with the answer the sample is about replaced by ``correction``,
    in the source's own shape: the rule that reads the row (`resolve_mode`, `shapes`) finds it."""
    from runtime.data.tokenize import resolve_mode
    from runtime.plan import row_shapes as shapes
    from runtime.plan.data_errors import DataError, RowProblem
    from runtime.plan.row_templates import parse_template

    try:
        mode = resolve_mode(plan.data.template_for(source), list(row), plan.data.source(source))
    except DataError as error:
        raise _Refused(f"{where}: {error}") from None
    raw = {new: old for old, new in mode.rename}  # a renamed column is written under its name in the file
    row = json.loads(json.dumps(row, default=str))  # a deep copy in JSON types
    if mode.kind == "messages":
        column = raw.get(mode.column, mode.column)
        value = row.get(column)
        messages = json.loads(value) if isinstance(value, str) else value  # a conversation stored as JSON text
        try:
            said = shapes.conversation(messages, column, mode.roles, mode.keys)  # one per message of the row
        except RowProblem as problem:
            raise _Refused(f"{where}: column {column!r}: {problem.reason}") from None
        assistant = [i for i, m in enumerate(said) if m["role"] == "assistant"]
        index = turn if turn is not None else (assistant[-1] if assistant else None)
        if index is None or index >= len(said) or said[index]["role"] != "assistant":
            raise _Refused(
                f"{where}: column {column!r} has no assistant message "
                f"{'at index ' + str(index) if index is not None else ''} to correct".rstrip()
            )
        if said[index].get("tool_calls"):
            raise _Refused(
                f"{where}: message {index} of column {column!r} is a tool call; a text correction "
                "cannot stand for it, correct the row by hand"
            )
        messages[index][shapes.message_keys(messages[index], mode.keys)[1]] = correction
        row[column] = json.dumps(messages, ensure_ascii=False) if isinstance(value, str) else messages
        return row
    if mode.kind == "prompt_completion":
        parts = parse_template(mode.completion or "")
        fields = [p for p in parts if isinstance(p, tuple)]
        if len(fields) != 1:
            raise _Refused(
                f"{where}: the completion template {mode.completion!r} is not one placeholder "
                f"{{column}} with text around it, so the correction cannot be put back into a column"
            )
        at = parts.index(fields[0])
        correction = _between("".join(parts[:at]), "".join(parts[at + 1 :]), correction, mode.completion or "", where)
        path = (raw.get(fields[0][0], fields[0][0]), *fields[0][1:])
    elif mode.kind == "alpaca":
        path = (raw.get("output", "output"),)
    else:
        what = "pre-tokenized rows hold ids" if mode.kind == "tokens" else "a text row trains its whole text"
        raise _Refused(f"{where}: {what}, with no answer column to put the correction in; correct the row by hand")
    holder: Any = row
    for key in path[:-1]:
        holder = holder.get(key) if isinstance(holder, dict) else None
    if not isinstance(holder, dict) or path[-1] not in holder:
        raise _Refused(f"{where}: the row has no column {'.'.join(path)!r}")
    holder[path[-1]] = correction
    return row


def _between(before: str, after: str, correction: str, template: str, where: str) -> str:
    """The column's value in a correction of the whole completion ``before + {column} + after``:
    the text around the placeholder taken off where the reviewer wrote it; whitespace around it
    (a separating space) may be left out; other text must be there, or the row is refused."""
    for text, present, cut in (
        (before, correction.startswith(before), lambda c: c[len(before) :]),
        (after, correction.endswith(after), lambda c: c[: len(c) - len(after)]),
    ):
        if text and present:
            correction = cut(correction)
        elif text.strip():
            raise _Refused(
                f"{where}: the completion template {template!r} has the text {text.strip()!r} around "
                f"its placeholder and the correction does not, so it cannot be put back into a column; "
                f"write the whole answer as the template renders it"
            )
    return correction


class _Reader:
    """Rows of a source's files by (file, line), read once per file with the training reader."""

    def __init__(self, run_dir: Path, cache_dir: str | None):
        from runtime.plan.run_plan import Plan, PlanVersionError

        path = run_dir / "plan.json"
        try:
            self.plan = Plan.from_json(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ReviewError(f"{path}: not found; the corrections are mapped back through the run's plan") from None
        except (OSError, ValueError, KeyError, TypeError, PlanVersionError) as error:
            raise ReviewError(f"{path}: cannot read the run's plan ({error})") from None
        self.cache_dir = cache_dir
        self.files: dict[str, tuple[Any, dict[int, int]]] = {}
        self.current: dict[str, str | None] = {}  # each source's eval rows' data fingerprint, now

    def part(self, source: str, file: str, where: str):
        from runtime.data.sources import resolve_paths

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
        from runtime.data.sources import load_source
        from runtime.plan.data_errors import DataError
        from runtime.platform.cache_dir import default_cache
        from runtime.preflight.input_fingerprints import eval_rows_fingerprint

        try:
            if source not in self.current:  # the data the run saw: a changed file has other rows at that line
                self.current[source] = eval_rows_fingerprint(self.plan.data.source(source), default_cache())
            if self.current[source] != expected_fingerprint:
                raise _Refused(
                    f"{where}: the data of its eval rows changed since the run (its fingerprint differs "
                    f"from manifest.json); the row at this line may be another row"
                )
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
    from runtime.platform.cache_dir import default_cache

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
                raise _Refused(
                    f"{where}: the row has no local file (a hub or disk dataset) to map the correction "
                    f"back to; copy the row by hand"
                )
            assert reader is not None
            original = reader.row(row.source, row.file, row.line, row.fingerprint, where)
            corrected = _corrected(reader.plan, row.source, original, row.turn, judgement.correction or "", where)
        except _Refused as refusal:
            result.refused.append(str(refusal))
            continue
        corrected["review"] = {
            "reviewer": judgement.reviewer,
            "score": judgement.score,
            "run": str(run_dir),
            "row": row.id,
        }
        lines.append(json.dumps(corrected, ensure_ascii=False, default=str) + "\n")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    tmp.write_text("".join(lines), encoding="utf-8")
    os.replace(tmp, out)
    result.written = len(lines)
    return result
