"""The one rule for "may sftc use the Hugging Face hub?", shared by `sftc check` (the
compiler imports this module: standard library only) and the runtime (checkpoints,
tokenizers, datasets).

Offline is requested by any of `HF_HUB_OFFLINE`, `HF_DATASETS_OFFLINE` or
`TRANSFORMERS_OFFLINE` set to 1/true/yes/on (what the Hugging Face libraries
accept). Otherwise the hub is used only when a TCP connection to its endpoint
(`HF_ENDPOINT`, default https://huggingface.co) opens within the timeout, so a
machine without network says so in about a second instead of retrying for ~20 s.

`local_path_reason` is the one rule for "is `hf(\"...\")` a local path or a hub id?" (docs/language.md,
"Base models"), so `sftc check`, `sftc plan` and the run read a path the same way.
"""

from __future__ import annotations

import functools
import os
import re
import socket
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


def offline_requested() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in OFFLINE_VARIABLES)


@functools.cache
def hub_reachable(timeout: float = 1.5) -> bool:
    """A TCP connect to the hub endpoint, at most `timeout` seconds (asked once per process)."""
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host = url.hostname or "huggingface.co"
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # `org/name`: one `/`, letters, digits, `-`, `_`, `.`
_LOCAL_PREFIXES = ("./", "../", "/", "~")


def local_path_reason(
    text: str,
    base_dir: str | os.PathLike = ".",
    revision: str | None = None,
    is_dir: Callable[[Path], bool] = Path.is_dir,
) -> str | None:
    """Why the missing path `text` of `hf(text)` is a local path and not a hub id; None when it is
    read as a hub id. (A path that exists is always the local one; this decides what a missing one is.)

    Local: it starts with `./`, `../`, `/` or `~`; it names a `.gguf` file; it is not of
    the form `org/name` (exactly one `/`, each part letters, digits, `-`, `_`, `.`); or, when no `revision`
    is given, its first part `org` is an existing directory in `base_dir` (the spec's directory). A hub
    id never starts with `.`, `/` or `~`, never has two `/` and never ends in `.gguf`, so the first three
    rules never misread one; the last reads `org/name` as local only where a directory `org/` sits beside
    the spec, and `revision = ...` (which only the hub has) makes it a hub id again.
    """
    for prefix in _LOCAL_PREFIXES:
        if text.startswith(prefix):
            return f"it starts with `{prefix}`"
    if text.lower().endswith(".gguf"):
        return "it names a `.gguf` file"
    if text.count("/") != 1:
        return "a hub id has the form `org/name`, with one `/`"
    if not HUB_ID.match(text):
        return "a hub id `org/name` has only letters, digits, `-`, `_` and `.`"
    first = text.split("/", 1)[0]
    if revision is None and is_dir(Path(base_dir) / first):
        return f'`{first}/` is a local directory (write `revision = "main"` for the hub repository `{text}`)'
    return None
