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
the other commands. XLA's own C++ messages bypass Python and are not covered.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
from pathlib import Path

from .cache import default_cache

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
    appending; a second call moves them to the new file. Returns the file's path."""
    path = Path(path) if path is not None else default_cache() / "sftc.log"
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _LogFile)]:
        root.removeHandler(handler)
        handler.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = _LogFile(path, maxBytes=MAX_BYTES, backupCount=1, delay=True, encoding="utf-8")
    handler.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(handler)
    for name in SELF_PRINTING:
        _to_file(name)
    logging.captureWarnings(True)
    return path
