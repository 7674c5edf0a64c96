"""Content fingerprints of the data a spec reads, so `sftc diff` can tell when the
same `jsonl("data/tickets.jsonl")` now points at different rows.

A local source's fingerprint is the content digest of every file it reads
(globs expanded, in sorted order), by the one rule the runtime uses too
(`runtime.plan.data_fingerprint`: file names do not count, so a renamed file with the
same bytes is the same data), and its row count:

    jsonl, text   non-empty lines
    csv           non-empty records after each file's header row
    json          length of the array (or of the array under `field`)
    parquet       num_rows from the footer metadata (pyarrow)
    disk          rows of the `.arrow` files a `save_to_disk` directory lists

A hub source (`hf_dataset`) is named, not read: its fingerprint is its name,
split, subset and revision. For line-based kinds a fingerprint can also carry
the multiset of its rows' hashes (`lines`), from which `row_delta` counts rows
added and removed; this is only computed where two digests differ
(`fingerprint_pair`), so an unchanged 10M-row file costs one streaming hash.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from runtime.plan import data_fingerprint as content

from . import ast, schema
from .files import FileSystem, GitRevision
from .resolve import normalize_call

LINE_KINDS = ("jsonl", "text", "csv")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Fingerprint:
    kind: str  # the source's head: jsonl, csv, ..., hf_dataset
    digest: str | None  # sha256 hex of the content; None when it cannot be read
    rows: int | None  # None: unknown (hub datasets, unreadable files)
    files: tuple[str, ...] = ()  # the files read, as given to the reader
    error: str | None = None  # why digest is None: "`data/x.jsonl` not found"
    lines: Counter | None = field(default=None, compare=False, repr=False)  # row hash -> count

    @property
    def hub(self) -> bool:
        return self.kind == "hf_dataset"


def row_delta(old: Fingerprint, new: Fingerprint) -> tuple[int, int] | None:
    """(rows added, rows removed) between two fingerprints carrying `lines`, else None.

    >>> a = Fingerprint("jsonl", "x", 3, lines=Counter({b"a": 2, b"b": 1}))
    >>> b = Fingerprint("jsonl", "y", 3, lines=Counter({b"a": 1, b"b": 1, b"c": 1}))
    >>> row_delta(a, b)
    (1, 1)
    """
    if old.lines is None or new.lines is None:
        return None
    return sum((new.lines - old.lines).values()), sum((old.lines - new.lines).values())


# ---------------------------------------------------------------- files


def _string_args(call: ast.Call) -> dict[str, str]:
    return {
        a.name.name: a.value.value for a in call.args if isinstance(a.name, ast.Name) and isinstance(a.value, ast.Str)
    }


def _expand(files: FileSystem, pattern: Path, kind: str) -> list[Path]:
    """The files a path reads: a glob's matches, a file, or everything under a directory."""
    if any(ch in str(pattern) for ch in "*?["):
        return files.glob(pattern)
    if files.is_file(pattern):
        return [pattern]
    if not files.exists(pattern):
        return []
    # a directory (a `disk` dataset, or a folder of parquet parts)
    if isinstance(files, GitRevision):
        found = files.glob(pattern / "*")  # fnmatch's `*` crosses `/`: recursive
    else:
        found = sorted(p for p in Path(pattern).rglob("*") if p.is_file())
    if kind == "disk":
        found = [p for p in found if not p.name.startswith("cache-") and p.suffix in (".arrow", ".json")]
    return found


def _chunks(files: FileSystem, path: Path):
    if type(files) is FileSystem:
        with open(path, "rb") as handle:
            yield from iter(lambda: handle.read(_CHUNK), b"")
    else:
        yield files.read_bytes(path)


def _lines(files: FileSystem, path: Path):
    """Every line of a file (bytes, without its newline)."""
    carry = b""
    for chunk in _chunks(files, path):
        parts = (carry + chunk).split(b"\n")
        carry = parts.pop()
        yield from parts
    if carry:
        yield carry


def _row_hash(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=8).digest()


# ---------------------------------------------------------------- rows


def _count_line_rows(files: FileSystem, path: Path, lines: Counter | None) -> int:
    rows = 0
    for line in _lines(files, path):
        line = line.strip()
        if not line:
            continue
        rows += 1
        if lines is not None:
            lines[_row_hash(line)] += 1
    return rows


def _count_csv_rows(files: FileSystem, path: Path, delimiter: str, lines: Counter | None) -> int:
    text = files.read_bytes(path).decode("utf-8", errors="replace")
    records = (r for r in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter) if any(c.strip() for c in r))
    if next(records, None) is None:  # the header
        return 0
    rows = 0
    for record in records:
        rows += 1
        if lines is not None:
            lines[_row_hash(json.dumps(record).encode())] += 1
    return rows


def _count_json_rows(files: FileSystem, path: Path, field_name: str | None) -> int | None:
    try:
        data = json.loads(files.read_bytes(path))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if field_name is not None:
        data = data.get(field_name) if isinstance(data, dict) else None
    if isinstance(data, list):
        return len(data)
    if isinstance(data, dict) and data and all(isinstance(v, list) for v in data.values()):
        return len(next(iter(data.values())))  # columnar: {"col": [...]}
    return None


def _count_parquet_rows(files: FileSystem, path: Path) -> int | None:
    import pyarrow.parquet as pq

    source = path if type(files) is FileSystem else io.BytesIO(files.read_bytes(path))
    try:
        return pq.ParquetFile(source).metadata.num_rows
    except Exception:  # pyarrow raises several types for a bad file
        return None


def _count_disk_rows(files: FileSystem, paths: list[Path]) -> int | None:
    import pyarrow as pa

    arrows = [p for p in paths if p.suffix == ".arrow"]
    states = [p for p in paths if p.name == "state.json"]
    listed: set[str] = set()
    for state in states:
        try:
            entries = json.loads(files.read_bytes(state)).get("_data_files") or []
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            continue
        listed |= {
            (state.parent / e["filename"]).as_posix() for e in entries if isinstance(e, dict) and "filename" in e
        }
    if listed:
        arrows = [p for p in arrows if p.as_posix() in listed]
    if not arrows:
        return None
    rows = 0
    for path in arrows:
        data = files.read_bytes(path)
        try:
            reader = pa.ipc.open_stream(data)  # what save_to_disk writes
            rows += sum(batch.num_rows for batch in reader)
        except pa.ArrowInvalid:
            try:
                rows += pa.ipc.open_file(data).read_all().num_rows
            except pa.ArrowInvalid:
                return None
    return rows


# ---------------------------------------------------------------- sources


def fingerprint_source(
    call: ast.Call, base_dir: Path, files: FileSystem | None = None, lines: bool = False
) -> Fingerprint:
    """The fingerprint of one source call whose paths are relative to `base_dir`.

    `lines=True` also collects the row-hash multiset of a jsonl/text/csv source.
    """
    files = files or FileSystem()
    call = normalize_call(call, schema.SOURCES)  # positional arguments named, defaults filled
    kind = call.head.name
    options = _string_args(call)
    if kind == "hf_dataset":
        identity = "\0".join(options.get(k, "") for k in ("name", "split", "subset", "revision"))
        return Fingerprint(kind, hashlib.sha256(identity.encode()).hexdigest(), None)
    written = options.get("path", "")
    paths = _expand(files, base_dir / written, kind) if written else []
    if not paths:
        return Fingerprint(kind, None, None, error=f"`{written}` not found")
    multiset: Counter | None = Counter() if lines and kind in LINE_KINDS else None
    rows: int | None = 0
    digests = []
    count: int | None  # the rows of one file; None when they cannot be counted
    for path in paths:
        digests.append(content.file_digest(_chunks(files, path)))
        if kind in ("jsonl", "text"):
            count = _count_line_rows(files, path, multiset)
        elif kind == "csv":
            count = _count_csv_rows(files, path, options.get("delimiter", ","), multiset)
        elif kind == "json":
            count = _count_json_rows(files, path, options.get("field"))
        elif kind == "parquet":
            count = _count_parquet_rows(files, path)
        elif kind == "arrow":
            count = None  # a stream file has no row count short of reading it all
        else:
            count = 0  # disk: counted once over the whole directory below
        rows = None if rows is None or count is None else rows + count
    if kind == "disk":
        rows = _count_disk_rows(files, paths)
    return Fingerprint(kind, content.combine(digests), rows, tuple(str(p) for p in paths), lines=multiset)


def source_calls(spec) -> dict[str, tuple[ast.Call, Path]]:
    """Every source call of a resolved Spec that reads data, keyed `name` and `name.split`."""
    out: dict[str, tuple[ast.Call, Path]] = {}
    for name, source in spec.data.items():
        out[name] = (source.source, source.base_dir)
        split = source.settings.get("split")
        if split is not None and isinstance(split.value, ast.Call):
            out[f"{name}.split"] = (split.value, source.base_dir)
    return out


def fingerprint_spec(spec, files: FileSystem | None = None) -> dict[str, Fingerprint]:
    """Fingerprints of a resolved Spec's sources (`name`, and `name.split` for an eval file)."""
    return {key: fingerprint_source(call, base_dir, files) for key, (call, base_dir) in source_calls(spec).items()}


def fingerprint_pair(old_spec, old_files: FileSystem | None, new_spec, new_files: FileSystem | None):
    """Fingerprints of two specs, with row multisets where a line-based source's content differs."""
    old = fingerprint_spec(old_spec, old_files)
    new = fingerprint_spec(new_spec, new_files)
    for key in old.keys() & new.keys():
        if old[key].digest != new[key].digest and old[key].kind in LINE_KINDS and new[key].kind in LINE_KINDS:
            old[key] = fingerprint_source(*source_calls(old_spec)[key], old_files, lines=True)
            new[key] = fingerprint_source(*source_calls(new_spec)[key], new_files, lines=True)
    return old, new
