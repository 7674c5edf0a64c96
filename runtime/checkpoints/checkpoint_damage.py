"""Which restore errors show a checkpoint's files damaged, and which say nothing against them.

A damaged checkpoint (a crash while it was written, files deleted or cut short) will never
restore: the run sets it aside and resumes from the one before. Any other restore error (out
of memory, an I/O error, a state of another shape, the filesystem gone) says nothing against
the checkpoint, and setting it aside would throw good training away: the run would start
again from an older step, or from step 0, in the same run directory. So only damage that the
checkpoint's files or the error show is taken for damage; everything else stops the run with
the error.

The rule, from what Orbax (0.12) and TensorStore raise for each kind of damage (each is
reproduced in tests/runtime/checkpoints/test_checkpoint_damage.py). A checkpoint whose restore failed is
damaged when a file that every checkpoint of ours has is absent or empty: `state/_METADATA`
(the state's tree: without it a train state does not rebuild, and Orbax says only that the
tree differs), `record/metadata`, and `state/manifest.ocdbt` of a checkpoint in OCDBT form.
Otherwise it is damaged when the error, or an error it was raised `from`, is

- `FileNotFoundError` / `NotADirectoryError` naming a path inside the checkpoint: a file of
  it is absent;
- `json.JSONDecodeError` / `UnicodeDecodeError`: a metadata file is not readable JSON
  (cut short or overwritten);
- Orbax's `KeyError` 'Item "state" was not found in the checkpoint': an item's directory
  is absent;
- a TensorStore status `NOT_FOUND`, `DATA_LOSS` or `OUT_OF_RANGE` naming a path inside the
  checkpoint: an array's data is absent, does not decode, or its file is shorter than its
  index says;

unless the failure lies with the machine instead: anything in the chain (causes and the
errors being handled) is a `MemoryError`, another `OSError` (EIO, ENOSPC, EACCES, ESTALE,
...) or says `RESOURCE_EXHAUSTED`. Nothing is damage when the step's directory is gone or
unreadable (another process or job moved it, the storage is not mounted). A state of another
shape or tree, or a sharding that does not fit, raises a `ValueError` without these
statuses: not damage.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

_MISSING = (FileNotFoundError, NotADirectoryError)
_UNREADABLE = (json.JSONDecodeError, UnicodeDecodeError)
_DAMAGE_STATUSES = ("NOT_FOUND", "DATA_LOSS", "OUT_OF_RANGE")  # TensorStore's absl status, first in its message
_ITEM_MISSING = "was not found in the checkpoint"  # Orbax's KeyError for an item directory that is absent


def _status(error: BaseException) -> str:
    return str(error).split(":", 1)[0].strip("'\" ") if ":" in str(error) else ""


def _chain(error: BaseException, contexts: bool) -> list[BaseException]:
    """`error` and what it was raised from (and, with `contexts`, the errors being handled)."""
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and not any(current is s for s in seen) and len(seen) < 16:
        seen.append(current)
        current = current.__cause__ or (current.__context__ if contexts else None)
    return seen


def _machine_failure(error: BaseException) -> bool:
    if isinstance(error, MemoryError):
        return True
    if isinstance(error, OSError) and not isinstance(error, _MISSING):
        return True
    return "RESOURCE_EXHAUSTED" in str(error)  # XLA's and TensorStore's out of memory


def _inside(error: BaseException, step_dir: Path) -> bool:
    """Whether `error` names a path inside `step_dir` (its `filename`, or in its message)."""
    named = getattr(error, "filename", None)
    if named and Path(named).resolve().is_relative_to(step_dir.resolve()):
        return True
    return any(f"{d}{os.sep}" in str(error) for d in (step_dir, step_dir.resolve()))  # .../10/ is not .../1/


def _evidence(error: BaseException, step_dir: Path) -> str | None:
    if isinstance(error, _MISSING) and _inside(error, step_dir):
        return "a file is missing"
    if isinstance(error, _UNREADABLE):
        return "a metadata file is not readable"
    if isinstance(error, KeyError) and _ITEM_MISSING in str(error):
        return "a part of the checkpoint is missing"
    if _status(error) in _DAMAGE_STATUSES and _inside(error, step_dir):
        return {
            "NOT_FOUND": "data is missing",
            "DATA_LOSS": "data does not decode",
            "OUT_OF_RANGE": "a file is cut short",
        }[_status(error)]
    return None


def _absent(path: Path) -> bool | None:
    """Whether `path` is absent or empty (None: the filesystem did not say)."""
    try:
        return path.stat().st_size == 0
    except FileNotFoundError:
        return True
    except OSError:
        return None


def _missing_file(step_dir: Path) -> str | None:
    """The first file every checkpoint of ours has that `step_dir` lacks (or has empty)."""
    required = ["state/_METADATA", "record/metadata"]
    if any((step_dir / "state").glob("ocdbt.process_*")):
        required.append("state/manifest.ocdbt")
    return next((name for name in required if _absent(step_dir / name)), None)


def damage(error: BaseException, step_dir: Path) -> str | None:
    """What `error`, raised while restoring the checkpoint in `step_dir`, shows damaged in its
    files and what shows it ("a file is cut short: ValueError: OUT_OF_RANGE: ..."), or None
    when nothing shows damage."""
    if not step_dir.is_dir():  # gone (moved by another process or job, storage unmounted) or unreadable
        return None
    missing = _missing_file(step_dir)
    if missing:
        return f"a file is missing: {missing} is absent or empty"
    if any(_machine_failure(e) for e in _chain(error, contexts=True)):
        return None
    for link in _chain(error, contexts=False):
        found = _evidence(link, step_dir)
        if found:
            return f"{found}: {describe(link)}"
    return None


def describe(error: BaseException) -> str:
    """`Type: message` on one line, at most about 300 characters."""
    text = " ".join(str(error).split())[:300]
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
