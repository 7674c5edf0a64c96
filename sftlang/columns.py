"""The columns and first rows of a local data file, read cheaply (header or first rows,
never more than SAMPLE_BYTES of a big file), so `sftc check` can prove template
placeholders and a trained tokenizer's vocabulary before a run."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

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


def _jsonl_rows(files: FileSystem, path: Path, limit: int | None) -> list[dict]:
    rows = []
    for number, line in enumerate(_complete_lines(files, path), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ColumnsError(f"line {number} is not valid JSON ({error})") from None
        if not isinstance(row, dict):
            raise ColumnsError(f"line {number} is not a JSON object")
        rows.append(row)
        if limit is not None and len(rows) >= limit:
            break
    return rows


def _jsonl(files: FileSystem, path: Path) -> Columns:
    return _from_rows(_jsonl_rows(files, path, SAMPLE_ROWS))


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


def sample_rows(kind: str, path: Path, files: FileSystem, options: dict) -> list[dict] | None:
    """The rows in the first SAMPLE_BYTES of a local file (all rows of a `json` file), as the
    runtime will load them; None for kinds not sampled (parquet, disk)."""
    if kind == "jsonl":
        return _jsonl_rows(files, path, None)
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


def read_columns(kind: str, path: Path, files: FileSystem, options: dict) -> Columns:
    """Columns of one local file of a source kind (jsonl, json, csv, parquet, text, disk)."""
    if kind == "jsonl":
        return _jsonl(files, path)
    if kind == "json":
        return _json(files, path, options.get("field"))
    if kind == "csv":
        return _csv(files, path, options.get("delimiter", ","))
    if kind == "parquet":
        return _parquet(files, path)
    if kind == "text":
        return Columns(frozenset({"text"}), frozenset())
    if kind == "disk":
        return _disk(files, path)
    raise ValueError(kind)
