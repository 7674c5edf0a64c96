"""The one rule for "may sftc use the Hugging Face hub?", shared by `sftc check` (the
compiler imports this module: standard library only) and the runtime (checkpoints,
tokenizers, datasets).

Offline is requested by any of `HF_HUB_OFFLINE`, `HF_DATASETS_OFFLINE` or
`TRANSFORMERS_OFFLINE` set to 1/true/yes/on (what the Hugging Face libraries
accept). Otherwise the hub is used only when a TCP connection to its endpoint
(`HF_ENDPOINT`, default https://huggingface.co) opens within the timeout, so a
machine without network says so in about a second instead of retrying for ~20 s.
"""

from __future__ import annotations

import functools
import os
import socket
from urllib.parse import urlparse

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


def offline_requested() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in OFFLINE_VARIABLES)


@functools.lru_cache(maxsize=None)
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
