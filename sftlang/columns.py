"""The columns and first rows of a local data file, read cheaply (header or first rows,
never more than SAMPLE_BYTES of a big file), so `sftc check` can prove template
placeholders and a trained tokenizer's vocabulary before a run; and for its row-shape
check (`shape_sample`), SPREAD_ROWS more rows read at evenly spaced offsets to the end of
the file, where a bad row a head-only read never sees would otherwise stop the run."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .files import FileSystem

SAMPLE_ROWS = 100
SAMPLE_BYTES = 1 << 20


@dataclass(frozen=True)
class Columns:
    names: frozenset[str]  # top-level columns
    nested: frozenset[str]  # dotted paths into object-valued columns: `meta.lang`

    def has(self, path: str) -> bool:
        return path in self.names or path in self.nested

    @property
    def all(self) -> list[str]:
        return sorted(self.names | self.nested)


class ColumnsError(Exception):
    """The file cannot be read as its kind says; the message says where."""


def _paths(prefix: str, value, out: set[str], depth: int = 0) -> None:
    if isinstance(value, dict) and depth < 4:
        for key, inner in value.items():
            path = f"{prefix}.{key}"
            out.add(path)
            _paths(path, inner, out, depth + 1)


def _from_rows(rows: list[dict]) -> Columns:
    names: set[str] = set()
    nested: set[str] = set()
    for row in rows:
        for key, value in row.items():
            names.add(key)
            _paths(key, value, nested)
    return Columns(frozenset(names), frozenset(nested))


def _head(files: FileSystem, path: Path) -> bytes:
    if type(files) is FileSystem:
        with open(path, "rb") as handle:
            return handle.read(SAMPLE_BYTES)
    return files.read_bytes(path)[:SAMPLE_BYTES]


def _complete_lines(files: FileSystem, path: Path) -> list[bytes]:
    """The lines of the file's head, without a last line the read may have cut."""
    lines = _head(files, path).split(b"\n")
    return lines[:-1] if len(lines) > 1 else lines


def _jsonl_rows(files: FileSystem, path: Path, limit: int | None, skip_bad: bool = False) -> list[dict]:
    """The rows of the file's head; a line that is no JSON object raises, or with `skip_bad`
    (`on_bad_row = skip`: the run skips and counts it) is left out."""
    rows = []
    for number, line in enumerate(_complete_lines(files, path), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            if skip_bad:
                continue
            raise ColumnsError(f"line {number} is not valid JSON ({error})") from None
        if not isinstance(row, dict):
            if skip_bad:
                continue
            raise ColumnsError(f"line {number} is not a JSON object")
        rows.append(row)
        if limit is not None and len(rows) >= limit:
            break
    return rows


def _jsonl(files: FileSystem, path: Path, skip_bad: bool = False) -> Columns:
    return _from_rows(_jsonl_rows(files, path, SAMPLE_ROWS, skip_bad))


def _json_data(files: FileSystem, path: Path, field: str | None):
    try:
        data = json.loads(files.read_bytes(path))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ColumnsError(f"not valid JSON ({error})") from None
    if field is not None:
        if not isinstance(data, dict) or field not in data:
            raise ColumnsError(f"has no top-level key `{field}`")
        data = data[field]
    return data


def _json(files: FileSystem, path: Path, field: str | None) -> Columns:
    data = _json_data(files, path, field)
    if isinstance(data, dict) and all(isinstance(v, list) for v in data.values()):
        return Columns(frozenset(data), frozenset())  # columnar: {"col": [...]}
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data[:SAMPLE_ROWS]):
        raise ColumnsError("is not a list of objects (use `field = ...` for rows under a key)")
    return _from_rows(data[:SAMPLE_ROWS])


def _csv(files: FileSystem, path: Path, delimiter: str) -> Columns:
    text = _head(files, path).decode("utf-8", errors="replace")
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    header = next(reader, None)
    if not header:
        raise ColumnsError("has no header row")
    return Columns(frozenset(h.strip() for h in header), frozenset())


def _parquet(files: FileSystem, path: Path) -> Columns:
    import pyarrow.parquet as pq

    source = path if type(files) is FileSystem else io.BytesIO(files.read_bytes(path))
    try:
        schema = pq.read_schema(source)
    except Exception as error:  # pyarrow raises several types for a bad file
        raise ColumnsError(f"is not a readable Parquet file ({error})") from None
    nested: set[str] = set()
    for arrow_field in schema:
        _struct_paths(arrow_field.name, arrow_field.type, nested)
    return Columns(frozenset(schema.names), frozenset(nested))


def _struct_paths(prefix: str, arrow_type, out: set[str]) -> None:
    import pyarrow as pa

    if pa.types.is_struct(arrow_type):
        for index in range(arrow_type.num_fields):
            child = arrow_type.field(index)
            out.add(f"{prefix}.{child.name}")
            _struct_paths(f"{prefix}.{child.name}", child.type, out)


def _disk(files: FileSystem, path: Path) -> Columns:
    info = path / "dataset_info.json"
    if not files.is_file(info):
        raise ColumnsError("is not a dataset saved with `save_to_disk` (no dataset_info.json)")
    features = json.loads(files.read_bytes(info)).get("features") or {}
    nested: set[str] = set()
    for name, feature in features.items():
        _feature_paths(name, feature, nested)
    return Columns(frozenset(features), frozenset(nested))


def _feature_paths(prefix: str, feature, out: set[str]) -> None:
    if isinstance(feature, dict) and "_type" not in feature:
        for key, inner in feature.items():
            out.add(f"{prefix}.{key}")
            _feature_paths(f"{prefix}.{key}", inner, out)


def sample_rows(
    kind: str, path: Path, files: FileSystem, options: dict, skip_bad_rows: bool = False
) -> list[dict] | None:
    """The rows in the first SAMPLE_BYTES of a local file (all rows of a `json` file), as the
    runtime will load them; None for kinds not sampled (parquet, disk). `skip_bad_rows`: as
    `read_columns`."""
    if kind == "jsonl":
        return _jsonl_rows(files, path, None, skip_bad_rows)
    if kind == "json":
        data = _json_data(files, path, options.get("field"))
        if isinstance(data, dict) and all(isinstance(v, list) for v in data.values()):
            return [dict(zip(data, values)) for values in zip(*data.values())]
        return [row for row in data if isinstance(row, dict)] if isinstance(data, list) else []
    if kind == "csv":
        text = b"\n".join(_complete_lines(files, path)).decode("utf-8", errors="replace")
        return list(csv.DictReader(io.StringIO(text), delimiter=options.get("delimiter", ",")))
    if kind == "text":
        return [{"text": line.decode("utf-8", errors="replace").rstrip("\r")} for line in _complete_lines(files, path)]
    return None


def read_columns(kind: str, path: Path, files: FileSystem, options: dict, skip_bad_rows: bool = False) -> Columns:
    """Columns of one local file of a source kind (jsonl, json, csv, parquet, arrow, text, disk).
    `skip_bad_rows` (`on_bad_row = skip`): a `jsonl` line that is no JSON object is left out, not an
    error (the shape check reports it as a row the run skips)."""
    if kind == "jsonl":
        return _jsonl(files, path, skip_bad_rows)
    if kind == "json":
        return _json(files, path, options.get("field"))
    if kind == "csv":
        return _csv(files, path, options.get("delimiter", ","))
    if kind == "parquet":
        return _parquet(files, path)
    if kind == "arrow":
        schema = _arrow_reader(files, path).schema
        nested: set[str] = set()
        for arrow_field in schema:
            _struct_paths(arrow_field.name, arrow_field.type, nested)
        return Columns(frozenset(schema.names), frozenset(nested))
    if kind == "text":
        return Columns(frozenset({"text"}), frozenset())
    if kind == "disk":
        return _disk(files, path)
    raise ValueError(kind)


# ---------------------------------------------------------------- the shape check's sample

SPREAD_ROWS = 32  # rows taken evenly over the whole file, after the head's
COUNT_BYTES = 64 << 20  # line-based files up to this size get exact line numbers and a row count


@dataclass(frozen=True)
class SampledRow:
    number: int | None  # 1-based line (unit "line") or row; None: a big file's line, not counted
    offset: int | None  # the line's byte offset (line-based files)
    row: dict | None  # None: the line is no JSON object (`problem` says why)
    problem: str | None = None


@dataclass(frozen=True)
class Sample:
    """Rows of one file for `sftc check`'s shape check: the head (the rows of the first
    SAMPLE_BYTES, or the first SAMPLE_ROWS of json and parquet) and SPREAD_ROWS more
    spread evenly to the last row, where a head-only read never looks."""

    rows: list[SampledRow]
    unit: str  # "line" or "row"
    total: int | None  # rows (unit "row") or lines of the file; None: unknown
    estimated: bool = False  # `total` is estimated from the file size


class _Bytes:
    """A seekable view of a file: the file itself in the working tree, its bytes at a git revision."""

    def __init__(self, files: FileSystem, path: Path):
        self.handle: BinaryIO
        if type(files) is FileSystem:
            self.handle = open(path, "rb")
            self.size = path.stat().st_size
        else:
            data = files.read_bytes(path)
            self.handle, self.size = io.BytesIO(data), len(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()

    def line_start(self, offset: int) -> int:
        """The offset where the line holding byte `offset` starts."""
        position = offset
        while position > 0:
            step = min(1 << 16, position)
            self.handle.seek(position - step)
            chunk = self.handle.read(step)
            found = chunk.rfind(b"\n")
            if found >= 0:
                return position - step + found + 1
            position -= step
        return 0

    def line_at(self, start: int) -> bytes:
        self.handle.seek(start)
        return self.handle.readline().rstrip(b"\n")

    def newlines_before(self, offsets: list[int]) -> tuple[dict[int, int], int]:
        """{offset: newlines before it} for sorted `offsets`, and the file's newline count (one pass)."""
        counts, seen, position, pending = {}, 0, 0, list(offsets)
        self.handle.seek(0)
        while True:
            chunk = self.handle.read(8 << 20)
            if not chunk:
                break
            while pending and pending[0] < position + len(chunk):
                offset = pending.pop(0)
                counts[offset] = seen + chunk.count(b"\n", 0, offset - position)
            seen += chunk.count(b"\n")
            position += len(chunk)
        counts.update({o: seen for o in pending})
        return counts, seen


def _spread_starts(view: _Bytes, head_end: int, count: int) -> list[int]:
    """Starts of `count` lines after the head, evenly spaced by bytes, the file's last line last."""
    if view.size <= head_end:
        return []
    last = view.size - 1
    targets = [head_end + (last - head_end) * i // max(1, count - 1) for i in range(count)]
    return sorted({s for s in (view.line_start(t) for t in targets) if s >= head_end})


def _jsonl_row(line: bytes) -> tuple[dict | None, str | None]:
    try:
        row = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        return None, f"not valid JSON ({error})"
    if not isinstance(row, dict):
        return None, f"a JSON line must be an object, got {type(row).__name__}"
    return row, None


def _line_sample(files: FileSystem, path: Path, parse, spread: int, header: bool = False) -> Sample:
    """Head and spread lines of a line-based file; `parse(line) -> (row, problem)`, None to skip."""
    with _Bytes(files, path) as view:
        view.handle.seek(0)
        lines = view.handle.read(SAMPLE_BYTES).split(b"\n")
        if len(lines) > 1 and view.size > SAMPLE_BYTES:
            lines = lines[:-1]  # a last line the read may have cut
        head_end, rows = 0, []
        for number, line in enumerate(lines, start=1):
            offset, head_end = head_end, head_end + len(line) + 1
            if header and number == 1:
                continue
            parsed = parse(line)
            if parsed is not None:
                rows.append(SampledRow(number, offset, *parsed))
        starts = _spread_starts(view, head_end, spread)
        counted = view.size <= COUNT_BYTES
        numbers, newlines = view.newlines_before(starts) if counted else ({}, None)
        lengths = []
        for start in starts:
            line = view.line_at(start)
            lengths.append(len(line) + 1)
            parsed = parse(line)
            if parsed is not None:
                rows.append(SampledRow(numbers[start] + 1 if counted else None, start, *parsed))
        if counted:
            view.handle.seek(max(0, view.size - 1))
            total = newlines + (view.size > 0 and view.handle.read(1) != b"\n") - header
            return Sample(rows, "line", total)
        lengths += [len(line) + 1 for line in lines]
        return Sample(rows, "line", round(view.size / (sum(lengths) / len(lengths))), estimated=True)


def _spread_indices(total: int, first: int, count: int) -> list[int]:
    """`count` row indices from `first` to the last row, evenly spaced."""
    if total <= first:
        return []
    return sorted({first + (total - 1 - first) * i // max(1, count - 1) for i in range(count)})


def _csv_sample(files: FileSystem, path: Path, delimiter: str, spread: int) -> Sample:
    text = b"\n".join(_complete_lines(files, path)).decode("utf-8", errors="replace")
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    header = next(reader, None) or []

    def as_row(record: list[str]) -> dict:  # as csv.DictReader fills a short record
        return {name: record[i] if i < len(record) else None for i, name in enumerate(header)}

    rows, line, one_line_records = [], reader.line_num, True
    for record in reader:
        start, line = line + 1, reader.line_num
        one_line_records &= line == start
        if record:
            rows.append(SampledRow(start, None, as_row(record)))
    if not one_line_records:  # a quoted field spans lines: a line read mid-file may start inside one
        return Sample(rows, "line", None)

    def parse(raw: bytes):
        text = raw.decode("utf-8", errors="replace").rstrip("\r")
        record = next(csv.reader([text], delimiter=delimiter), []) if text else []
        return (as_row(record), None) if record and len(record) == len(header) else None

    return _line_sample(files, path, parse, spread, header=True)


def _json_sample(files: FileSystem, path: Path, field: str | None, spread: int) -> Sample:
    data = _json_data(files, path, field)
    if isinstance(data, dict) and all(isinstance(v, list) for v in data.values()):
        data = [dict(zip(data, values)) for values in zip(*data.values())]
    rows = data if isinstance(data, list) else []
    picked = list(range(min(len(rows), SAMPLE_ROWS))) + _spread_indices(len(rows), SAMPLE_ROWS, spread)
    return Sample([SampledRow(i + 1, None, rows[i]) for i in picked if isinstance(rows[i], dict)], "row", len(rows))


def _parquet_sample(files: FileSystem, path: Path, columns: list[str] | None, spread: int) -> Sample:
    """The head rows and spread ones, reading only `columns` of the row groups that hold them."""
    import pyarrow.parquet as pq

    source = path if type(files) is FileSystem else io.BytesIO(files.read_bytes(path))
    try:
        handle = pq.ParquetFile(source)
    except Exception as error:  # pyarrow raises several types for a bad file
        raise ColumnsError(f"is not a readable Parquet file ({error})") from None
    if columns is not None:
        columns = [c for c in columns if c in handle.schema_arrow.names] or None
    total = handle.metadata.num_rows
    wanted = list(range(min(total, SAMPLE_ROWS))) + _spread_indices(total, SAMPLE_ROWS, spread)
    rows, first, picked = [], 0, 0
    for group in range(handle.num_row_groups):
        size = handle.metadata.row_group(group).num_rows
        inside = [i - first for i in wanted[picked:] if i < first + size]
        if inside:
            table = handle.read_row_group(group, columns=columns)
            rows += [SampledRow(first + i + 1, None, table.slice(i, 1).to_pylist()[0]) for i in inside]
            picked += len(inside)
        first += size
    return Sample(rows, "row", total)


def _arrow_reader(files: FileSystem, path: Path):
    import pyarrow as pa

    source = pa.OSFile(str(path)) if type(files) is FileSystem else io.BytesIO(files.read_bytes(path))
    try:
        return pa.ipc.open_stream(source)
    except Exception as error:  # pyarrow raises several types for a bad file
        raise ColumnsError(f"is not a readable Arrow stream file ({error})") from None


def _arrow_sample(files: FileSystem, path: Path) -> Sample:
    """The first SAMPLE_ROWS rows: a stream file has no index to seek by, so its rows past the
    head are not sampled (and the row count is not read)."""
    rows: list[SampledRow] = []
    for batch in _arrow_reader(files, path):
        for record in batch.slice(0, SAMPLE_ROWS - len(rows)).to_pylist():
            rows.append(SampledRow(len(rows) + 1, None, record))
        if len(rows) >= SAMPLE_ROWS:
            break
    return Sample(rows, "row", None)


def shape_sample(
    kind: str, path: Path, files: FileSystem, options: dict, columns: list[str] | None = None, spread: int = SPREAD_ROWS
) -> Sample | None:
    """The rows `sftc check` runs the shape rules on: the head and `spread` rows to the file's
    end; None for kinds not sampled (disk). `columns`: all a parquet read needs (None: all)."""
    if kind == "jsonl":
        return _line_sample(files, path, lambda line: _jsonl_row(line) if line.strip() else None, spread)
    if kind == "text":
        return _line_sample(
            files, path, lambda line: ({"text": line.decode("utf-8", errors="replace").rstrip("\r")}, None), spread
        )
    if kind == "csv":
        return _csv_sample(files, path, options.get("delimiter", ","), spread)
    if kind == "json":
        return _json_sample(files, path, options.get("field"), spread)
    if kind == "parquet":
        return _parquet_sample(files, path, columns, spread)
    if kind == "arrow":
        return _arrow_sample(files, path)
    return None
