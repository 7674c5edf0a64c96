"""Checkpoints with Orbax: async saves, keep the newest K, restore onto any mesh.

A checkpoint holds the train state (master parameters, optimizer state, step)
and a small JSON record (data position, RNG seed, plan hash, wall time), so a
resumed run continues exactly where the interrupted one stopped. Restoring takes
abstract arrays carrying the *current* shardings, so a run saved on one mesh
resumes on another.

Only a checkpoint shown to be damaged is ever set aside (`checkpoint_damage` has the rule);
any other restore error stops with a `RestoreError`, on every process of a job alike.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from runtime.checkpoints.checkpoint_damage import damage, describe
from runtime.checkpoints.hf_checkpoint import CheckpointError
from runtime.platform import distributed


class RestoreError(CheckpointError):
    """A checkpoint did not restore, and nothing shows it damaged (out of memory, an I/O
    error, a state of another shape): nothing was set aside; the message says what failed
    and what to do."""


@dataclass
class Restored:
    """The newest checkpoint that restores (`state` None: there is none), and the newer
    ones shown damaged, each with the reason, moved aside to `moved_to`."""

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
        """Restore the newest checkpoint that restores, past the newer ones shown damaged (a
        crash while one was written, files deleted or cut short: `checkpoint_damage`). Those
        are reported and, with `move_aside`, moved to `checkpoints.unusable/<step>` beside this
        directory, by the primary process while the others wait, so the run can save that step
        again (read-only commands leave them where they are). Any other failure, on any process
        of a job (out of memory, an I/O error, a state of another shape), raises `RestoreError`
        on every process and sets nothing aside: the checkpoint may well be good."""
        result = Restored()
        for step in sorted(self.all_steps(), reverse=True):
            verdict = None  # this process's: None (restored), "damaged <reason>" or "failed <reason>"
            try:
                state, record = self.restore(abstract_state, step)
            except Exception as error:  # noqa: BLE001 - orbax and tensorstore raise many types; `damage` sorts them
                _join_restore_barrier(self.manager)
                found = damage(error, self.directory / str(step))
                verdict = f"damaged {found}" if found else f"failed {describe(error)}"
            verdicts = distributed.gather_text(verdict)  # every process decides from every verdict
            failed = [
                (index, v.removeprefix("failed ")) for index, v in enumerate(verdicts) if v and v.startswith("failed ")
            ]
            if failed:
                raise RestoreError(_failure_message(self.directory, step, failed, len(verdicts)))
            damaged = [v.removeprefix("damaged ") for v in verdicts if v]
            if not damaged:
                result.state, result.record, result.step = state, record, step
                break
            result.skipped.append((step, damaged[0]))
        if result.skipped and move_aside:
            result.moved_to = self._set_aside([step for step, _ in result.skipped])
        return result

    def _set_aside(self, steps: list[int]) -> Path:
        """Move damaged `steps` to `checkpoints.unusable/`: the primary moves, every process
        waits for its word (so none lists or restores a half-moved directory), then reloads."""
        aside = self.directory.with_name(self.directory.name + ".unusable")
        problem = None
        if distributed.is_primary():
            try:
                aside.mkdir(exist_ok=True)
                for step in steps:
                    target = aside / str(step)
                    shutil.rmtree(target, ignore_errors=True)
                    shutil.move(str(self.directory / str(step)), target)
            except OSError as error:
                problem = f"could not move damaged checkpoint(s) {', '.join(map(str, steps))} to {aside}: {error}"
        problem = distributed.broadcast_text(problem)
        if problem:
            raise RestoreError(f"{problem}. help: move or delete them by hand, then run again")
        self.manager.reload()
        return aside

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def abstract_like(state: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs of `state` (arrays or abstract) carrying `shardings`."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)


def _failure_message(directory: Path, step: int, failed: list[tuple[int, str]], processes: int) -> str:
    where = "" if processes == 1 else " on process " + ", ".join(str(i) for i, _ in failed)
    return (
        f"checkpoint {step} in {directory} did not restore{where}: {failed[0][1]}. Nothing shows the checkpoint "
        f"damaged, so nothing was set aside. help: if memory ran out or the storage failed, free memory or fix "
        f"the storage and run the command again (it resumes from this checkpoint); if the model, the optimizer "
        f"or the number of devices changed since it was saved, restore them, or start over with `sftc run --fresh`"
    )


# Orbax's Checkpointer.restore ends with this barrier (a collective over every process; its
# key carries the checkpointer's prefix). A process whose restore raised never reached it, so
# it joins it here: then every process of a job meets the others in the same collectives,
# and all decide from all the verdicts. (Orbax-internal: the 2-process test in
# tests/runtime/checkpoints/test_checkpoint_damage.py hangs or fails if this ever stops matching.)
_ORBAX_RESTORE_BARRIER = "Checkpointer:restore"


def _join_restore_barrier(manager: ocp.CheckpointManager) -> None:
    if distributed.process_count() > 1:
        prefix = getattr(getattr(manager, "_checkpointer", None), "_barrier_sync_key_prefix", None)
        ocp.multihost.sync_global_processes(ocp.multihost.unique_barrier_key(_ORBAX_RESTORE_BARRIER, prefix=prefix))
