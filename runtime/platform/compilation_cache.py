"""JAX's persistent compilation cache, under the sftc cache directory and shared by every command.

A command compiles the same shapes as the last one did (`sftc generate` after `sftc generate`,
`sftc eval` after `sftc run`): with the cache, each executable is compiled once per machine and
read back afterwards. Everything is cached, small compilations too (the default keeps only those
over a second, but a command's start-up is dozens of small ones), up to `MAX_BYTES`, least
recently used first out.

The settings are environment variables that JAX reads when it is imported, so `sftc`'s command
handler sets them first, and they reach the processes a job starts. A process that imported JAX
already (sftc used as a library, the tests) is left as it is. A variable the user set wins:
`JAX_COMPILATION_CACHE_DIR` elsewhere, or `JAX_ENABLE_COMPILATION_CACHE=false` to turn it off.
No JAX here.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from runtime.platform.cache_dir import default_cache

MAX_BYTES = 4 << 30


def compilation_cache_dir(cache_dir: Path | None = None) -> Path:
    return Path(cache_dir if cache_dir is not None else default_cache()) / "xla"


def use_compilation_cache(cache_dir: Path | None = None) -> None:
    """Point JAX, when it is imported after this call, at the cache; a variable already set is kept."""
    if "jax" in sys.modules:
        return
    settings = {
        "JAX_COMPILATION_CACHE_DIR": str(compilation_cache_dir(cache_dir)),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_COMPILATION_CACHE_MAX_SIZE": str(MAX_BYTES),
    }
    for name, value in settings.items():
        os.environ.setdefault(name, value)
