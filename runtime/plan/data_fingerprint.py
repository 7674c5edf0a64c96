"""The one rule for a data file's content fingerprint, shared by the compiler (`sftc diff`,
which may read files from a git revision) and the runtime (manifests, resume, caches).

A source's digest is the sha256 over the sha256 of each file it reads, in the order it
reads them: only bytes count, so a renamed or moved file with the same bytes is the same
data, and the same files give the same digest wherever they are read from. Standard
library only: the compiler imports this module.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def file_digest(chunks: Iterable[bytes]) -> bytes:
    """The sha256 of one file's bytes, given as chunks."""
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.digest()


def combine(file_digests: Iterable[bytes]) -> str:
    """A source's hex digest from its files' digests, in reading order."""
    digest = hashlib.sha256()
    for one in file_digests:
        digest.update(one)
    return digest.hexdigest()


def read_chunks(path: str, size: int = 1 << 20) -> Iterable[bytes]:
    with open(path, "rb") as f:
        yield from iter(lambda: f.read(size), b"")
