"""Keep freed host memory for reuse (glibc, CPU training): no page faults per step.

XLA's CPU runtime allocates each step's temporary buffer (hundreds of MB: the
logits, their gradient, every saved activation) with one ``malloc`` from a
worker thread, and frees it at the end of the step. glibc serves a request that
large from a fresh ``mmap`` and gives it back with ``munmap``, so every step
touches every page of it anew: measured on 2 CPU cores for the ~7M Llama of
`bench/train_step_vs_torch.py`, ~121k minor page faults and ~0.2 s of kernel
time per step, and a step time that swings between ~370 and ~700 ms with the
load of the machine.

`reuse_freed_memory` sets three glibc ``mallopt`` parameters: one arena for all
threads (``M_ARENA_MAX=1``, so the workers' large blocks can live in the main
heap), no ``mmap`` for large blocks (``M_MMAP_MAX=0``) and no returning of the
heap's top to the system below 2 GiB (``M_TRIM_THRESHOLD``). The buffer freed by
one step is then the buffer of the next: 0 page faults, ~270 ms per step on the
same machine. The price is a higher peak resident size (freed blocks stay
mapped; 1.2 GB became 1.5-2.2 GB at that shape).

It must run before JAX's CPU worker threads first allocate (before the first
computation): threads keep the arena they started with. sftc calls it when the data
is prepared (`runtime.preflight.prepare`) and when an engine is built, not at start-up.

One arena has a cost for other multi-threaded native code: its threads queue on
the arena's lock. The Rust tokenizers' thread pool is the case that matters
(tokenizing the data): measured on 2 cores, 100k short strings took 7.1 s with
two threads on one arena, 3.4 s with one thread and 2.0 s with two threads on
their own arenas. So sftc tokenizes first and calls this afterwards (glibc fixes its
arena limit only when a thread needs a new arena past the first eight, so the
setting still holds for JAX's threads: 0 page faults per step either way,
measured), and, should anything tokenize once this is on, the tokenizers run
single-threaded (``TOKENIZERS_PARALLELISM=false``, unless the user set it). It does nothing off
glibc Linux, when a GPU/TPU plugin is installed (their host side is not the hot
path), or with ``SFTC_MALLOC=system``.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import sys

__all__ = ["reuse_freed_memory", "status"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_ACCELERATOR_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin", "jax_rocm7_plugin", "libtpu")

_status = "system"


def status() -> str:
    """``"reuse"`` once `reuse_freed_memory` took effect in this process, else ``"system"``."""
    return _status


def _accelerator_present() -> bool:
    platforms = os.environ.get("JAX_PLATFORMS", "")
    if platforms:
        return platforms.split(",")[0].strip() not in ("", "cpu")
    return any(importlib.util.find_spec(name) is not None for name in _ACCELERATOR_PLUGINS)


def reuse_freed_memory() -> bool:
    """Tune glibc malloc for CPU training (see the module docstring); True when applied.

    Idempotent; safe to call anywhere (it only changes future allocations).
    """
    global _status
    if _status == "reuse":
        return True
    if os.environ.get("SFTC_MALLOC", "").lower() == "system" or not sys.platform.startswith("linux"):
        return False
    if _accelerator_present():
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - glibc only (musl has a no-op mallopt)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    applied = mallopt(_M_ARENA_MAX, 1) == 1
    applied = applied and mallopt(_M_MMAP_MAX, 0) == 1
    applied = applied and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
    if applied:
        _status = "reuse"
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # see the module docstring
    return applied
