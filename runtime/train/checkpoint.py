"""Checkpoints with Orbax: async saves, keep the newest K, restore onto any mesh.

A checkpoint holds the train state (master parameters, optimizer state, step)
and a small JSON record (data position, RNG seed, plan hash, wall time), so a
resumed run continues exactly where the interrupted one stopped. Restoring takes
abstract arrays carrying the *current* shardings, so a run saved on one mesh
resumes on another.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp


@dataclass
class Restored:
    """The newest checkpoint that restores (`state` None: there is none), and the newer
    ones that did not, each with the reason, moved aside to `moved_to`."""

    state: Any = None
    record: dict | None = None
    step: int | None = None
    skipped: list[tuple[int, str]] = field(default_factory=list)
    moved_to: Path | None = None


class Checkpoints:
    def __init__(self, directory: str | Path, keep: int, async_save: bool = True):
        self.directory = Path(directory).resolve()
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save, create=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state: Any, record: dict, force: bool = False) -> bool:
        """Start saving (asynchronously); returns whether a save was started."""
        if step in self.manager.all_steps():
            return False
        return self.manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), record=ocp.args.JsonSave(record)),
            force=force,
        )

    def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict]:
        """(state, record) of `step` (default: the latest), placed by `abstract_state`'s
        shardings (jax.ShapeDtypeStruct leaves with `.sharding`)."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), record=ocp.args.JsonRestore()),
        )
        return restored.state, restored.record

    def restore_newest_good(self, abstract_state: Any, move_aside: bool = True) -> Restored:
        """Restore the newest checkpoint that restores. A newer one that fails (a crash while
        it was written, deleted or corrupted files) is reported and, with `move_aside`, moved
        to `checkpoints.unusable/<step>` beside this directory, so the run can save that step
        again (read-only commands leave it where it is)."""
        result = Restored()
        for step in sorted(self.all_steps(), reverse=True):
            try:
                result.state, result.record = self.restore(abstract_state, step)
                result.step = step
                break
            except Exception as error:  # noqa: BLE001 - orbax and tensorstore raise many types for a bad checkpoint
                reason = " ".join(str(error).split())[:300] or type(error).__name__
                result.skipped.append((step, f"{type(error).__name__}: {reason}"))
        if result.skipped and move_aside:
            aside = self.directory.with_name(self.directory.name + ".unusable")
            aside.mkdir(exist_ok=True)
            for step, _ in result.skipped:
                target = aside / str(step)
                shutil.rmtree(target, ignore_errors=True)
                shutil.move(str(self.directory / str(step)), target)
            result.moved_to = aside
            self.manager.reload()
        return result

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def abstract_like(state: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs of `state` (arrays or abstract) carrying `shardings`."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)
