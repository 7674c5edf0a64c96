"""Library chatter goes to a log file, never to the terminal: a user reads only sftc's
own lines (progress, results, errors) on screen.

transformers, datasets, huggingface_hub, absl, orbax and jax report through Python
`logging` (and `warnings`). `route_library_logs` sends both to one file: a handler
on the root logger, `warnings` captured into logging, and the stderr handlers that
transformers, datasets and huggingface_hub attach to their own loggers refused,
so their records reach the file instead. It runs before those libraries are
imported (nothing here imports them), so transformers' import-time advisory
("PyTorch was not found...": sftc never runs PyTorch) lands in the file too.

Where the file is: `<run dir>/sftc.log` for `sftc run` (call it again with that
path once the run directory exists), `$SFTC_CACHE/sftc.log` before that and for
the other commands. XLA's own C++ messages bypass Python and are not covered, except
the lines `native_stdout_to_log` takes off the terminal: in a multi-process job, gloo
prints `[Gloo] Rank i is connected to ...` on stdout for every group of processes it connects.
"""

from __future__ import annotations

import atexit
import io
import logging
import logging.handlers
import os
import sys
import threading
from pathlib import Path

from runtime.platform.cache_dir import default_cache

# Libraries that put a stderr handler on their own logger (and may turn propagation off).
SELF_PRINTING = ("transformers", "datasets", "huggingface_hub")
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
MAX_BYTES = 1 << 20  # the shared cache log is rotated at 1 MiB (one old file kept)


class _ToFile(logging.Logger):
    """A library logger that keeps no terminal handler and always passes records up to
    the root logger's file."""

    def addHandler(self, handler: logging.Handler) -> None:
        if type(handler) is logging.StreamHandler:  # the library's own terminal output
            return
        super().addHandler(handler)

    @property
    def propagate(self) -> bool:
        return True

    @propagate.setter
    def propagate(self, value: bool) -> None:
        pass


class _LogFile(logging.handlers.RotatingFileHandler):
    """The one handler this module installs (found again, and replaced, by its type)."""


def _to_file(name: str) -> None:
    existing = logging.Logger.manager.loggerDict.get(name)
    if isinstance(existing, logging.Logger):  # imported before: take its terminal handlers away
        for handler in list(existing.handlers):
            if type(handler) is logging.StreamHandler:
                existing.removeHandler(handler)
        existing.propagate = True
        return
    previous = logging.getLoggerClass()
    logging.setLoggerClass(_ToFile)
    try:
        logging.getLogger(name)
    finally:
        logging.setLoggerClass(previous)


def route_library_logs(path: str | os.PathLike | None = None) -> Path:
    """Send library logging and warnings to ``path`` (default ``$SFTC_CACHE/sftc.log``),
    appending; a second call moves them to the new file. The file exists once this returns.
    Returns the file's path."""
    path = Path(path) if path is not None else default_cache() / "sftc.log"
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _LogFile)]:
        root.removeHandler(handler)
        handler.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()  # the file is there from the start (a run directory's, even if nothing is logged)
    handler = _LogFile(path, maxBytes=MAX_BYTES, backupCount=1, delay=True, encoding="utf-8")
    handler.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(handler)
    for name in SELF_PRINTING:
        _to_file(name)
    logging.captureWarnings(True)
    return path


NATIVE_PREFIXES = (b"[Gloo] ",)  # lines C++ libraries print on stdout that are log, not output
_native: dict = {}  # the installed filter: its thread and the terminal's file descriptor


def native_stdout_to_log(prefixes: tuple[bytes, ...] = NATIVE_PREFIXES, logger: str = "gloo") -> None:
    """Lines that native code writes to file descriptor 1 and that start with one of ``prefixes``
    go to the log file (logger ``logger``), the rest to the terminal as before. Python's own
    ``sys.stdout`` is moved to a copy of the terminal's descriptor, so what sftc prints never
    waits on the filter; descriptor 1 becomes a pipe that a thread reads line by line (a
    partial line that cannot start with a prefix is passed on at once). Once per process."""
    if _native:
        return
    sys.stdout.flush()
    terminal = os.dup(1)
    read, write = os.pipe()
    os.dup2(write, 1)
    os.close(write)
    old = sys.stdout
    sys.stdout = io.TextIOWrapper(
        io.FileIO(os.dup(terminal), "w"), encoding=old.encoding, errors=old.errors, line_buffering=old.line_buffering
    )
    log = logging.getLogger(logger)
    log.setLevel(logging.INFO)  # its records reach the file whatever the root logger's level
    thread = threading.Thread(target=_pump, args=(read, terminal, prefixes, log), name="native-stdout", daemon=True)
    thread.start()
    _native.update(thread=thread, terminal=terminal)
    atexit.register(_stop_native_filter)


def _pump(read: int, terminal: int, prefixes: tuple[bytes, ...], log: logging.Logger) -> None:
    pending = b""
    while True:
        chunk = os.read(read, 1 << 16)
        if not chunk:
            break
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            if line.startswith(prefixes):
                log.info(line.decode(errors="replace"))
            else:
                os.write(terminal, line + b"\n")
        if pending and not any(p.startswith(pending[: len(p)]) for p in prefixes):
            os.write(terminal, pending)
            pending = b""
    if pending:
        os.write(terminal, pending)
    os.close(read)


def _stop_native_filter() -> None:
    """At exit: descriptor 1 is the terminal again, and what the thread holds is passed on."""
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        pass
    os.dup2(_native["terminal"], 1)  # closes the pipe's last writer: the thread reads its end
    _native["thread"].join(timeout=2)
