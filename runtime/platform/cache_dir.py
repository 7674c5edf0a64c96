"""Where sftc keeps what later commands reuse: tokenized data, trained tokenizers and the
library log of commands that have no run directory. Light: no JAX, so any command can ask."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache() -> Path:
    """``$SFTC_CACHE``, or ``~/.cache/sftc``."""
    return Path(os.environ.get("SFTC_CACHE", Path.home() / ".cache" / "sftc"))
