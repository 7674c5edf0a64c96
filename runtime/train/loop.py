"""The training loop: restore or start, step, log, evaluate, checkpoint, and stop cleanly
(done, interrupted, or too many non-finite steps).

Everything is decided by the prepared Plan and built by `runtime.train.engine`; the loop only
executes it. Batch N is step N (`pipeline.batch(N)`) and the loop counts by the state's
own step, which advances on every step, refused ones included: a resumed run sees
exactly the batches the interrupted one would have, and checkpoint, eval and report
steps always agree.

A step whose loss or gradient is not finite is refused on the device (the update is not
applied) and counted in the state's `skipped`; the loop reads that count with the
metrics on log steps, so every refused step is seen without a host sync per step. The
spec's `max_skipped_steps` (default 0) decides how many a run may skip before it stops.

Ctrl-C sets a flag that the loop reads between steps, so an interrupt never lands
between a step that consumed (donated) the old state and the assignment of the new one.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax

from runtime.checkpoints.hf_checkpoint import CheckpointError
from runtime.checkpoints.orbax_checkpoints import Checkpoints
from runtime.platform.distributed import gather
from runtime.preflight.prepare import Prepared, log_interval
from runtime.train.engine import Engine, StepSettings, load_weights
from runtime.train.metrics_log import MetricsLog
from runtime.train.token_metrics import token_metrics

_NONFINITE_HELP = (
    "lower the learning rate or clip, check the data at these steps, or allow a few skipped "
    "steps with `train { max_skipped_steps = N }`"
)


@dataclass
class TrainResult:
    status: str  # "done" (every step taken) | "interrupted" | "nan" (more non-finite steps than allowed)
    steps: int  # steps taken (the state's step)
    graphdef: Any
    params: Any  # float32 trainable parameters (pure dict)
    frozen: Any
    last_loss: float | None
    message: str = ""
    skipped: int = 0  # steps whose update was refused as non-finite
    notes: list[str] = field(default_factory=list)  # what the user should know (a skipped checkpoint, ...)
    engine: Any = None  # the `Engine` that trained: its eval step scores the final model and the baseline


def _eval_records(engine: Engine, frozen, prepared: Prepared, params, step_number: int) -> list[dict]:
    return [
        {"kind": "eval", "step": step_number, "split": "eval", "source": source, **metrics}
        for source, metrics in token_metrics(engine, frozen, prepared.pipeline, params).items()
    ]


class _Interrupts:
    """Ctrl-C as a flag read between steps (a second Ctrl-C interrupts at once)."""

    def __init__(self):
        self.requested = False

    @contextlib.contextmanager
    def catching(self):
        if threading.current_thread() is not threading.main_thread():
            yield self
            return

        def handler(_signum, _frame):
            if self.requested:
                raise KeyboardInterrupt
            self.requested = True

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)


def train(
    prepared: Prepared, run_dir: Path, progress=None, log: MetricsLog | None = None, checkpoint_dir: Path | None = None
) -> TrainResult:
    """Run (or resume) the plan's training in `run_dir` (checkpoints in `checkpoint_dir`, by
    default `run_dir/checkpoints`; with several processes, the one directory they share);
    returns how it ended."""
    plan = prepared.plan
    total = plan.train.steps
    engine = Engine(StepSettings.of(plan), prepared.config)
    params, frozen = load_weights(engine.settings, prepared.config, prepared.checkpoint)
    frozen = engine.place_frozen(frozen)
    checkpoints = Checkpoints(checkpoint_dir or run_dir / "checkpoints", keep=plan.train.keep)
    log = log or MetricsLog(run_dir)
    notes: list[str] = []
    try:  # a damaged checkpoint is set aside; any other restore error stops here (RestoreError)
        restored = checkpoints.restore_newest_good(engine.restore_target())
    except BaseException:
        checkpoints.close()
        raise
    for skipped_step, reason in restored.skipped:
        notes.append(
            f"checkpoint {skipped_step} does not restore, its files are damaged ({reason}); it was moved "
            f"to {restored.moved_to}"
        )
        log.event(skipped_step, "checkpoint_skipped", reason=reason)
    if restored.state is None and restored.skipped:  # starting over here would make metrics.jsonl go backwards
        checkpoints.close()
        steps = ", ".join(str(step) for step, _ in restored.skipped)
        raise CheckpointError(
            f"every checkpoint of {run_dir} is damaged ({steps}: {restored.skipped[0][1]}); they were moved to "
            f"{restored.moved_to} and nothing is left to resume. `sftc run` again starts a new run directory"
        )
    if restored.state is not None:
        state = restored.state
        del params
        log.event(int(state.step), "resume", checkpoint=restored.step)
    else:
        state = engine.fresh_state(params)
        del params
        log.event(0, "start", steps=total, devices=jax.device_count(), mesh=dict(engine.mesh.shape))
    allowed = plan.train.max_skipped_steps
    every_log = log_interval(plan)
    every_eval = plan.eval.every_steps or _epochs_to_steps(plan.eval.every_epochs, prepared)
    every_ckpt = plan.train.checkpoint_every or _epochs_to_steps(plan.train.checkpoint_every_epochs, prepared)
    tokens_per_step = plan.data.global_batch_size * plan.data.seq_len
    start = int(state.step)
    skipped = seen_skipped = int(state.skipped)
    last_read = start
    last_loss, status, message = None, "done", ""
    end = total
    if skipped > allowed:  # resumed after stopping for it: the spec must allow it now, or nothing runs
        status, end = "nan", start
        message = (
            f"this run has skipped {skipped} non-finite step{'s' * (skipped > 1)} (max_skipped_steps = "
            f"{allowed}); {_NONFINITE_HELP}, or start again with `sftc run --fresh`"
        )
    pool = concurrent.futures.ThreadPoolExecutor(1)
    rows = engine.batch_rows()  # this process's share of every batch
    upcoming = pool.submit(prepared.pipeline.batch, start, rows) if start < end else None
    window_started, window_steps = time.perf_counter(), 0
    if progress:
        progress.start(total, start)
    interrupts = _Interrupts()
    try:
        with interrupts.catching():
            for n in range(start, end):
                if interrupts.requested:
                    raise KeyboardInterrupt
                batch = engine.place(upcoming.result())
                upcoming = pool.submit(prepared.pipeline.batch, n + 1, rows) if n + 1 < end else None
                state, metrics = engine.step_fn(state, frozen, batch)
                window_steps += 1
                done = n + 1  # == state.step: every step advances it, refused ones too
                if done % every_log == 0 or done == total or done == start + 1:
                    metrics = jax.device_get(metrics)
                    skipped = int(metrics["skipped"])
                    if skipped > seen_skipped:
                        new = skipped - seen_skipped
                        where = f"step {done}" if done - last_read == 1 else f"steps {last_read + 1}-{done}"
                        log.event(done, "nonfinite", skipped=new, total_skipped=skipped, window=[last_read + 1, done])
                        seen_skipped = skipped
                        if skipped > allowed:
                            status = "nan"
                            message = (
                                f"{new} step{'s' * (new > 1)} in {where} had a non-finite loss or gradient and "
                                f"{'were' if new > 1 else 'was'} not applied ({skipped} skipped in all, "
                                f"max_skipped_steps = {allowed}); the weights are those of the last good step. "
                                f"help: {_NONFINITE_HELP}"
                            )
                            break
                    last_read = done
                    elapsed = time.perf_counter() - window_started
                    rate = window_steps * tokens_per_step / max(elapsed, 1e-9)
                    window_started, window_steps = time.perf_counter(), 0
                    if bool(metrics["finite"]):
                        last_loss = float(metrics["loss"])
                    log.write(
                        {
                            "kind": "train",
                            "step": done,
                            "loss": float(metrics["loss"]),
                            "lr": float(metrics["lr"]),
                            "grad_norm": float(metrics["grad_norm"]),
                            "tokens": float(metrics["tokens"]),
                            "token_accuracy": float(metrics["token_accuracy"]),
                            "tokens_per_s": rate,
                            "skipped_steps": skipped,
                        }
                    )
                    if progress:
                        progress.update(done, loss=float(metrics["loss"]), lr=float(metrics["lr"]), rate=rate)
                elif progress:
                    progress.update(done)
                if every_eval and done % every_eval == 0 and done < total:
                    for record in _eval_records(engine, frozen, prepared, state.params, done):
                        log.write(record)
                if every_ckpt and done % every_ckpt == 0 and done < total:
                    checkpoints.save(done, state, _record(prepared, done))
                    log.event(done, "checkpoint")
    except KeyboardInterrupt:
        status, message = "interrupted", f"interrupted after step {int(state.step)}; `sftc run` resumes from here"
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    steps = int(state.step)
    skipped = int(state.skipped)
    if steps > 0:
        checkpoints.save(steps, state, _record(prepared, steps), force=True)
    checkpoints.close()
    if status == "done":
        for record in _eval_records(engine, frozen, prepared, state.params, steps):
            log.write(record)
    log.event(steps, "stop" if status != "done" else "done", status=status, skipped_steps=skipped)
    params = gather(state.params)  # every process: the whole model, for evaluation and export
    return TrainResult(
        status, steps, engine.graphdef, params, gather(frozen), last_loss, message, skipped, notes, engine
    )


def _epochs_to_steps(epochs: float | None, prepared: Prepared) -> int | None:
    if epochs is None:
        return None
    per_epoch = prepared.pipeline.stats.steps_per_epoch or 1
    return max(1, int(round(epochs * per_epoch)))


def _record(prepared: Prepared, step_number: int) -> dict:
    return {
        "step": step_number,
        "spec_hash": prepared.plan.spec_hash,
        "seed": prepared.plan.data.seed,
        "time": time.time(),
    }
