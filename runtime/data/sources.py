"""Reading sources through HF ``datasets``, with provenance and content fingerprints.

``load_source(spec)`` returns a ``LoadedSource``: the ``datasets.Dataset`` of raw
rows (every matched file concatenated in sorted order), where each row came from
(``locate(i)`` -> file and 1-based line/row), a content fingerprint and the rows
that were rejected while reading (invalid UTF-8 or JSON; counted when
``on_bad_row = skip``).

Fingerprints: for local files, SHA-256 over each file's name and bytes (so a
changed row changes it, a touched mtime does not); for ``hf_dataset``, the
dataset's own ``_fingerprint`` plus hub id, subset, split and revision.

``hf_dataset`` and the network: with ``HF_HUB_OFFLINE=1`` / ``HF_DATASETS_OFFLINE=1``,
or when a 3-second TCP probe of the hub endpoint fails, the dataset is loaded in
offline mode from the datasets cache; if it is not cached, ``HubUnavailableError``
says so at once (instead of datasets' ~22 s of retries).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from runtime.plan.data_errors import BadRowError, HubUnavailableError, SourceError, shorten
from runtime.plan.data_plan import SourceSpec
from runtime.plan.hub_policy import hub_reachable, offline_requested

if TYPE_CHECKING:
    import datasets

_BUILDER = {"jsonl": "json", "json": "json", "csv": "csv", "parquet": "parquet", "arrow": "arrow", "text": "text"}
_LINE_KINDS = ("jsonl", "csv", "text")  # one row per line: bad lines can be found and skipped


@dataclass
class RejectedRow:
    """A row rejected before templating (or by it); kept for the stats report."""

    file: str | None
    row: int  # 1-based line/row number
    column: str | None
    reason: str
    text: str


@dataclass
class LoadedSource:
    spec: SourceSpec
    dataset: datasets.Dataset
    files: list[str]
    fingerprint: str
    offsets: np.ndarray  # rows before file k: offsets[k]; offsets[-1] == len(dataset)
    line_maps: list[np.ndarray | None] = field(default_factory=list)  # cleaned files: kept line numbers
    rejected: list[RejectedRow] = field(default_factory=list)
    unit: str = "row"  # "line" for line-based files

    def __len__(self) -> int:
        return len(self.dataset)

    def locate(self, index: int) -> tuple[str | None, int]:
        """(file, 1-based line or row number) of raw row ``index`` of ``dataset``."""
        if not self.files:
            return None, index + 1
        k = int(np.searchsorted(self.offsets, index, side="right") - 1)
        local = index - int(self.offsets[k])
        lm = self.line_maps[k] if k < len(self.line_maps) else None
        if lm is not None:
            return self.files[k], int(lm[local])
        if self.spec.kind == "jsonl":  # datasets skips blank lines: map rows to line numbers once per file
            self.line_maps[k] = _nonblank_lines(self.files[k])
            return self.files[k], int(self.line_maps[k][local])
        if self.spec.kind == "text":
            return self.files[k], local + 1
        if self.spec.kind == "csv":
            return self.files[k], local + 2  # line number: the header is line 1
        return self.files[k], local + 1


def _nonblank_lines(path: str) -> np.ndarray:
    """1-based numbers of the lines of ``path`` that are not blank."""
    with open(path, "rb") as f:
        return np.asarray([n for n, line in enumerate(f, 1) if line.strip()], dtype=np.int64)


# ---------------------------------------------------------------- paths & fingerprints


def resolve_paths(spec: SourceSpec) -> list[str]:
    """Expand glob patterns; every pattern must match at least one non-empty file."""
    files: list[str] = []
    for pattern in spec.paths:
        pattern = os.path.abspath(os.path.expanduser(pattern))
        if glob.has_magic(pattern):
            matched = sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
            if not matched:
                raise SourceError(f"data {spec.name}: no file matches {pattern!r}")
        else:
            if not os.path.exists(pattern):
                raise SourceError(f"data {spec.name}: file not found: {pattern}")
            matched = [pattern]
        for p in matched:
            if spec.kind != "disk" and not os.path.isfile(p):
                raise SourceError(f"data {spec.name}: not a file: {p}")
            if spec.kind != "disk" and os.path.getsize(p) == 0:
                raise SourceError(f"data {spec.name}: file is empty: {p}")
            if p not in files:
                files.append(p)
    return files


def fingerprint_files(files: list[str]) -> str:
    """The content digest of these files, in order (`runtime.plan.data_fingerprint`: names do not count);
    each file's digest read once per change of the file (`runtime.platform.file_hashes`)."""
    from runtime.plan.data_fingerprint import combine
    from runtime.platform.file_hashes import file_sha256

    return combine(bytes.fromhex(file_sha256(p)) for p in files)


def _disk_files(root: str) -> list[str]:
    out = []
    for dirpath, _, names in os.walk(root):
        for n in names:
            if n.startswith("cache-") or not (n.endswith(".arrow") or n.endswith(".json")):
                continue
            out.append(os.path.join(dirpath, n))
    return sorted(out)


# ---------------------------------------------------------------- bad lines


def _scan_bad_lines(path: str, kind: str) -> Iterator[tuple[int, str, bytes]]:
    """(1-based line number, reason, raw bytes) of each line datasets cannot read."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield lineno, f"invalid UTF-8 (byte {e.start}: {raw[e.start : e.start + 1]!r})", raw
                continue
            if kind == "jsonl" and text.strip():
                try:
                    obj = json.loads(text)
                except json.JSONDecodeError as e:
                    yield lineno, f"invalid JSON: {e.msg} at column {e.colno}", raw
                    continue
                if not isinstance(obj, dict):
                    yield lineno, f"a JSON line must be an object, got {type(obj).__name__}", raw


def _clean_copy(spec: SourceSpec, path: str, bad: set[int], cache_dir: str) -> tuple[str, np.ndarray]:
    """Write ``path`` without the ``bad`` lines into the cache; return the copy and its line map."""
    ext = os.path.splitext(path)[1] or ".txt"
    out_dir = os.path.join(cache_dir, "sftc-clean")
    os.makedirs(out_dir, exist_ok=True)
    out = os.path.join(out_dir, f"{fingerprint_files([path])[:24]}-{spec.kind}{ext}")
    kept = []
    tmp = out + f".tmp{os.getpid()}"
    with open(path, "rb") as src, open(tmp, "wb") as dst:
        for lineno, raw in enumerate(src, 1):
            if lineno in bad:
                continue
            if spec.kind == "jsonl" and not raw.strip():
                continue
            dst.write(raw if raw.endswith(b"\n") else raw + b"\n")
            kept.append(lineno)
    os.replace(tmp, out)
    line_map = np.asarray(kept, dtype=np.int64)
    if spec.kind == "csv":
        line_map = line_map[1:]  # header
    return out, line_map


# ---------------------------------------------------------------- loaders


def _load_file(spec: SourceSpec, path: str, cache_dir: str | None) -> datasets.Dataset:
    import datasets

    kwargs = {}
    if spec.field is not None:
        kwargs["field"] = spec.field
    if spec.kind == "csv" and spec.delimiter is not None:
        kwargs["sep"] = spec.delimiter
    try:
        ds = datasets.load_dataset(_BUILDER[spec.kind], data_files=[path], split="train", cache_dir=cache_dir, **kwargs)
    except StopIteration as e:  # datasets' json builder on a file with no records
        raise SourceError(f"data {spec.name}: {path} has no rows") from e
    except ValueError as e:
        if "corresponds to no data" in str(e):  # only blank lines
            raise SourceError(f"data {spec.name}: {path} has no rows") from e
        raise
    if len(ds) == 0:
        raise SourceError(f"data {spec.name}: {path} has no rows")
    return ds


def _load_local(spec: SourceSpec, cache_dir: str | None) -> LoadedSource:
    import datasets

    files = resolve_paths(spec)
    parts, line_maps, rejected = [], [], []
    for path in files:
        try:
            ds = _load_file(spec, path, cache_dir)
            line_maps.append(None)
        except SourceError:
            raise
        except Exception as e:  # noqa: BLE001 - datasets wraps parse errors in several types
            if spec.kind not in _LINE_KINDS:
                cause = e.__cause__ or e
                raise SourceError(f"data {spec.name}: cannot read {path}: {type(cause).__name__}: {cause}") from e
            bad = list(_scan_bad_lines(path, spec.kind))
            if not bad:
                cause = e.__cause__ or e
                raise SourceError(f"data {spec.name}: cannot read {path}: {type(cause).__name__}: {cause}") from e
            if spec.on_bad_row == "error":
                lineno, reason, raw = bad[0]
                more = f" ({len(bad) - 1} more bad lines in this file)" if len(bad) > 1 else ""
                raise BadRowError(
                    spec.name,
                    path,
                    lineno,
                    None,
                    reason + more,
                    shorten(raw.decode("utf-8", "backslashreplace")),
                    unit="line",
                ) from None
            for lineno, reason, raw in bad:
                rejected.append(
                    RejectedRow(path, lineno, None, reason, shorten(raw.decode("utf-8", "backslashreplace")))
                )
            clean, line_map = _clean_copy(
                spec, path, {b[0] for b in bad}, cache_dir or datasets.config.HF_DATASETS_CACHE
            )
            if len(line_map) == 0:
                raise SourceError(f"data {spec.name}: {path} has no readable rows ({len(bad)} bad lines)") from None
            ds = _load_file(spec, clean, cache_dir)
            line_maps.append(line_map)
        parts.append(ds)
    offsets = np.cumsum([0] + [len(p) for p in parts]).astype(np.int64)
    try:
        dataset = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
    except ValueError as e:
        raise SourceError(f"data {spec.name}: the files have different columns: {e}") from e
    return LoadedSource(
        spec=spec,
        dataset=dataset,
        files=files,
        fingerprint=fingerprint_files(files),
        offsets=offsets,
        line_maps=line_maps,
        rejected=rejected,
        unit="line" if spec.kind in _LINE_KINDS else "row",
    )


def _load_disk(spec: SourceSpec) -> LoadedSource:
    import datasets

    files = resolve_paths(spec)
    if len(files) != 1 or not os.path.isdir(files[0]):
        raise SourceError(
            f"data {spec.name}: disk(...) needs exactly one directory written by save_to_disk, got {files}"
        )
    root = files[0]
    try:
        ds = datasets.load_from_disk(root)
    except FileNotFoundError as e:
        raise SourceError(f"data {spec.name}: {root} is not a dataset saved with save_to_disk: {e}") from e
    if isinstance(ds, datasets.DatasetDict):
        split = spec.split or "train"
        if split not in ds:
            raise SourceError(f"data {spec.name}: {root} has splits {list(ds)}, not {split!r}")
        ds = ds[split]
    if len(ds) == 0:
        raise SourceError(f"data {spec.name}: {root} has no rows")
    fp = fingerprint_files(_disk_files(root)) + ":" + (spec.split or "")
    return LoadedSource(
        spec=spec,
        dataset=ds,
        files=[],
        fingerprint=hashlib.sha256(fp.encode()).hexdigest(),
        offsets=np.asarray([0, len(ds)], np.int64),
        line_maps=[None],
    )


@contextlib.contextmanager
def _offline_mode():
    import datasets
    from huggingface_hub import constants

    saved = (datasets.config.HF_HUB_OFFLINE, datasets.config.HF_DATASETS_OFFLINE, constants.HF_HUB_OFFLINE)
    datasets.config.HF_HUB_OFFLINE = datasets.config.HF_DATASETS_OFFLINE = True
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, datasets.config.HF_DATASETS_OFFLINE, constants.HF_HUB_OFFLINE = saved


def _load_hub(spec: SourceSpec, cache_dir: str | None) -> LoadedSource:
    import datasets

    name = spec.hub
    assert name is not None
    split = spec.split or "train"
    kwargs = dict(name=spec.subset, split=split, revision=spec.revision, cache_dir=cache_dir)
    local_dir = os.path.isdir(name)
    offline = offline_requested()
    why = "offline mode is on (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE / TRANSFORMERS_OFFLINE)"
    if not local_dir and not offline and not hub_reachable():
        offline, why = True, "the hub is not reachable"
    try:
        if offline and not local_dir:
            with _offline_mode():
                ds = datasets.load_dataset(name, **kwargs)
        else:
            ds = datasets.load_dataset(name, **kwargs)
    except Exception as e:  # noqa: BLE001
        if offline and not local_dir:
            raise HubUnavailableError(
                f"data {spec.name}: hf_dataset({name!r}, split={split!r}) is not in the datasets cache "
                f"({cache_dir or datasets.config.HF_DATASETS_CACHE}) and {why}. Load it once while online, "
                f"or point the source at local files. ({type(e).__name__}: {shorten(str(e), 300)})"
            ) from e
        raise SourceError(
            f"data {spec.name}: cannot load hf_dataset({name!r}, split={split!r}): "
            f"{type(e).__name__}: {shorten(str(e), 400)}"
        ) from e
    if isinstance(ds, (datasets.DatasetDict, datasets.IterableDataset)):
        raise SourceError(f"data {spec.name}: expected one split of {name!r}")
    if len(ds) == 0:
        raise SourceError(f"data {spec.name}: hf_dataset({name!r}, split={split!r}) has no rows")
    fp = "|".join([name, spec.subset or "", split, spec.revision or "", ds._fingerprint])
    return LoadedSource(
        spec=spec,
        dataset=ds,
        files=[],
        fingerprint=hashlib.sha256(fp.encode()).hexdigest(),
        offsets=np.asarray([0, len(ds)], np.int64),
        line_maps=[None],
    )


def load_source(spec: SourceSpec, cache_dir: str | None = None) -> LoadedSource:
    """Read one source's raw rows. ``cache_dir`` defaults to the datasets cache."""
    import datasets  # imported when a source is read: `sftc plan` of cached data never needs it

    datasets.disable_progress_bars()
    if spec.kind == "hf_dataset":
        return _load_hub(spec, cache_dir)
    if spec.kind == "disk":
        return _load_disk(spec)
    return _load_local(spec, cache_dir)


def source_fingerprint(spec: SourceSpec, cache_dir: str | None = None) -> str:
    """The content fingerprint alone (for manifests and ``sftc diff``); hashes local files without loading."""
    if spec.kind in _BUILDER:
        return fingerprint_files(resolve_paths(spec))
    return load_source(spec, cache_dir).fingerprint
