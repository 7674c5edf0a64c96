"""A file's content digest (sha256), read once per change of the file rather than once per command.

A base checkpoint of several GB, a GGUF file or a large data file is part of what makes a run's
inputs the same (`runtime.plan.run_inputs`), and reading it whole on every `sftc plan`, `sftc run` or
review export would cost seconds to minutes. So a digest is remembered under
``$SFTC_CACHE/hashes/`` by the file's resolved path, size, modification time and inode: a file
written again (new bytes, a new mtime) or replaced (a new inode) is read again; one left alone
is not. Small files are hashed directly, which is cheaper than the record. Standard library only.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

__all__ = ["file_sha256"]

_DIRECT_BYTES = 1 << 20  # files up to this size are hashed every time
_RECORD_VERSION = 1
_MEMO: dict[tuple, str] = {}


def _stamp(path: Path) -> tuple:
    stat = path.stat()
    return str(path), stat.st_size, stat.st_mtime_ns, stat.st_ino


def _hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _record_path(resolved: Path) -> Path:
    from runtime.platform.cache_dir import default_cache

    return default_cache() / "hashes" / f"{hashlib.sha256(str(resolved).encode()).hexdigest()[:32]}.json"


def file_sha256(path: str | os.PathLike) -> str:
    """The hex sha256 of the file's bytes (a symlink: of its target)."""
    resolved = Path(path).resolve()
    stamp = _stamp(resolved)
    if stamp in _MEMO:
        return _MEMO[stamp]
    if stamp[1] <= _DIRECT_BYTES:
        return _MEMO.setdefault(stamp, _hash(resolved))
    record = _record_path(resolved)
    wanted = {"version": _RECORD_VERSION, "path": stamp[0], "size": stamp[1], "mtime_ns": stamp[2], "inode": stamp[3]}
    try:
        stored = json.loads(record.read_text())
        if {k: stored.get(k) for k in wanted} == wanted and isinstance(stored.get("sha256"), str):
            return _MEMO.setdefault(stamp, stored["sha256"])
    except (OSError, ValueError):
        pass  # no record yet, or an unreadable one: read the file
    digest = _hash(resolved)
    if _stamp(resolved) == stamp:  # not written while it was read: the digest is of these bytes
        try:
            record.parent.mkdir(parents=True, exist_ok=True)
            partial = record.with_name(f"{record.name}.{os.getpid()}.partial")
            partial.write_text(json.dumps({**wanted, "sha256": digest}))
            os.replace(partial, record)
        except OSError:
            pass  # a cache that cannot be written costs the next command a read, nothing else
        _MEMO[stamp] = digest
    return digest
