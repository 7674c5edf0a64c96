"""The training loop: place the model on the mesh, restore or start, step, log,
evaluate, checkpoint, and stop cleanly (done, interrupted or non-finite).

Everything is decided by the prepared Plan; the loop only executes it. Batches
for step N come from the data pipeline by index (`pipeline.batch(N)`), so a
resumed run sees exactly the batches the interrupted one would have.
"""

from __future__ import annotations

import concurrent.futures
import functools
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .. import mesh as meshlib
from ..models import build
from ..prepare import PrepareError, Prepared, log_interval
from . import optim, schedule, step
from .checkpoint import Checkpoints, abstract_like
from .metrics_log import MetricsLog


@dataclass
class TrainResult:
    status: str  # "done" | "interrupted" | "nan"
    steps: int  # optimizer steps completed
    graphdef: Any
    params: Any  # float32 master parameters (pure dict)
    frozen: Any
    last_loss: float | None
    message: str = ""


def _compute_dtype(name: str):
    return jnp.bfloat16 if name == "bfloat16" else jnp.float32


def _with_adapter(model, prepared: Prepared, seed: int):
    adapter = prepared.plan.model.adapter
    if adapter is None:
        return model
    from ..models import lora

    return lora.add_lora(model, adapter, rngs=seed)


def _trainable(prepared: Prepared):
    from ..models import lora

    return lora.trainable_filter(prepared.plan.model.adapter)


def initial_params(prepared: Prepared, seed: int):
    """(graphdef, float32 trainable params, frozen) of the model the plan names. With a
    LoRA adapter only the adapter trains and the base is frozen in the compute dtype."""
    compute = _compute_dtype(prepared.plan.model.dtype)
    config = prepared.config
    if prepared.checkpoint is None:
        model = build(config, rngs=seed, dtype=compute, param_dtype=jnp.float32)
    else:
        from ..hf import load_pretrained

        loaded, _ = load_pretrained(prepared.checkpoint, dtype="float32")
        graphdef, _ = nnx.split(nnx.eval_shape(lambda: build(config, 0, dtype=compute, param_dtype=jnp.float32)))
        model = nnx.merge(graphdef, nnx.split(loaded)[1])
    model = _with_adapter(model, prepared, seed)
    graphdef, params, frozen = nnx.split(model, _trainable(prepared), ...)
    frozen = step.cast(frozen.to_pure_dict(), compute)
    return graphdef, params.to_pure_dict(), frozen


def _abstract_states(prepared: Prepared):
    """Abstract (trainable, frozen) nnx States: shapes and logical axis names."""
    compute = _compute_dtype(prepared.plan.model.dtype)

    def make():
        return _with_adapter(build(prepared.config, 0, dtype=compute, param_dtype=jnp.float32), prepared, 0)

    _, trainable, frozen = nnx.split(nnx.eval_shape(make), _trainable(prepared), ...)
    return trainable, frozen


class Stepper:
    """The compiled step and everything it needs, on a mesh."""

    def __init__(self, prepared: Prepared, devices=None):
        plan = prepared.plan
        devices = devices if devices is not None else jax.devices()
        shape = meshlib.mesh_shape(plan.train.mesh, len(devices))
        self.mesh = meshlib.make_mesh(shape, devices)
        parallel = shape["data"] * shape["fsdp"]
        if plan.train.micro % parallel:
            raise PrepareError(f"micro {plan.train.micro} does not split over {parallel} data-parallel devices (data x fsdp)")
        total = plan.train.steps
        sched = plan.train.schedule
        self.schedule = schedule.learning_rate(
            sched.name, plan.train.optimizer.lr, sched.min_lr, total, sched.warmup_steps or 0, sched.decay_steps or 0
        )
        self.tx = optim.optimizer(plan.train.optimizer, self.schedule, plan.train.clip)
        self.graphdef, params, self.frozen = initial_params(prepared, plan.data.seed)
        abstract_params, abstract_frozen = _abstract_states(prepared)
        self.abstract_state = jax.eval_shape(
            lambda p: step.TrainState(jnp.zeros((), jnp.int32), p, self.tx.init(p)), params
        )
        self.shardings = step.state_shardings(self.abstract_state, meshlib.state_shardings(abstract_params, self.mesh), self.mesh)
        frozen_shardings = meshlib.state_shardings(abstract_frozen, self.mesh)
        self.frozen = jax.device_put(self.frozen, frozen_shardings)
        self.initial = params
        self.compute = _compute_dtype(plan.model.dtype)
        dropout = plan.model.adapter.dropout if plan.model.adapter is not None else 0.0
        self.step_fn = step.compile_step(
            self.graphdef, self.tx, self.schedule, self.compute, self.shardings, frozen_shardings, self.mesh,
            dropout_seed=plan.data.seed if dropout > 0 else None,
        )
        self.eval_fn = jax.jit(
            functools.partial(step.token_statistics, self.graphdef, compute_dtype=self.compute),
            out_shardings=meshlib.replicated(self.mesh),
        )
        self.accumulation, self.micro = plan.accumulation, plan.train.micro
        self.batch_sharding = meshlib.batch_sharding(self.mesh)

    def fresh_state(self) -> step.TrainState:
        return step.init_state(self.initial, self.tx, self.shardings)

    def place(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        shaped = {k: v.reshape(self.accumulation, self.micro, -1) for k, v in batch.items()}
        return jax.device_put(shaped, self.batch_sharding)

    def evaluate(self, params, batches) -> dict[str, float]:
        """Loss, perplexity and token accuracy over `batches` (dicts of [rows, seq_len])."""
        total = tokens = right = 0.0
        for batch in batches:
            loss_sum, (count, correct) = self.eval_fn(params, self.frozen, batch)
            total, tokens, right = total + float(loss_sum), tokens + float(count), right + float(correct)
        if tokens == 0:
            return {}
        loss = total / tokens
        return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "token_accuracy": right / tokens, "tokens": tokens}


def token_metrics(stepper: Stepper, prepared: Prepared, params) -> dict[str | None, dict]:
    """Eval loss, perplexity and token accuracy over every eval row (key None) and,
    when several sources have eval rows, per source."""
    has_eval = [s.name for s in prepared.plan.data.sources if s.eval is not None]
    out = {}
    for source in [None] + (has_eval if len(has_eval) > 1 else []):
        metrics = stepper.evaluate(params, prepared.pipeline.eval_batches(stepper.micro, source=source))
        if metrics:
            out[source] = metrics
    return out


def _eval_records(stepper: Stepper, prepared: Prepared, params, step_number: int) -> list[dict]:
    return [
        {"kind": "eval", "step": step_number, "split": "eval", "source": source, **metrics}
        for source, metrics in token_metrics(stepper, prepared, params).items()
    ]


def train(prepared: Prepared, run_dir: Path, progress=None, log: MetricsLog | None = None) -> TrainResult:
    """Run (or resume) the plan's training in `run_dir`; returns how it ended."""
    plan = prepared.plan
    total = plan.train.steps
    stepper = Stepper(prepared)
    checkpoints = Checkpoints(run_dir / "checkpoints", keep=plan.train.keep)
    log = log or MetricsLog(run_dir)
    latest = checkpoints.latest_step()
    if latest is not None:
        state, record = checkpoints.restore(abstract_like(stepper.abstract_state, stepper.shardings))
        log.event(int(state.step), "resume", checkpoint=latest)
    else:
        state = stepper.fresh_state()
        log.event(0, "start", steps=total, devices=jax.device_count(), mesh=dict(stepper.mesh.shape))
    every_log = log_interval(plan)
    every_eval = plan.eval.every_steps or _epochs_to_steps(plan.eval.every_epochs, prepared)
    every_ckpt = plan.train.checkpoint_every or _epochs_to_steps(plan.train.checkpoint_every_epochs, prepared)
    tokens_per_step = plan.data.global_batch_size * plan.data.seq_len
    start = int(state.step)
    pool = concurrent.futures.ThreadPoolExecutor(1)
    upcoming = pool.submit(prepared.pipeline.batch, start) if start < total else None
    last_loss, status, message = None, "done", ""
    window_started, window_steps = time.perf_counter(), 0
    if progress:
        progress.start(total, start)
    done = start
    try:
        for n in range(start, total):
            batch = stepper.place(upcoming.result())
            upcoming = pool.submit(prepared.pipeline.batch, n + 1) if n + 1 < total else None
            state, metrics = stepper.step_fn(state, stepper.frozen, batch)
            window_steps += 1
            done = n + 1
            if done % every_log == 0 or done == total or done == start + 1:
                metrics = jax.device_get(metrics)
                if not bool(metrics["finite"]):
                    status, message = "nan", f"the loss or gradient is not finite at step {done}; the last good state is kept"
                    log.event(n, "nan", loss=str(metrics["loss"]), grad_norm=str(metrics["grad_norm"]))
                    done = n
                    break
                elapsed = time.perf_counter() - window_started
                rate = window_steps * tokens_per_step / max(elapsed, 1e-9)
                window_started, window_steps = time.perf_counter(), 0
                last_loss = float(metrics["loss"])
                log.write(
                    {
                        "kind": "train",
                        "step": done,
                        "loss": last_loss,
                        "lr": float(metrics["lr"]),
                        "grad_norm": float(metrics["grad_norm"]),
                        "tokens": float(metrics["tokens"]),
                        "token_accuracy": float(metrics["token_accuracy"]),
                        "tokens_per_s": rate,
                    }
                )
                if progress:
                    progress.update(done, loss=last_loss, lr=float(metrics["lr"]), rate=rate)
            elif progress:
                progress.update(done)
            if every_eval and done % every_eval == 0 and done < total:
                for record in _eval_records(stepper, prepared, state.params, done):
                    log.write(record)
            if every_ckpt and done % every_ckpt == 0 and done < total:
                checkpoints.save(done, state, _record(prepared, done))
                log.event(done, "checkpoint")
    except KeyboardInterrupt:
        status, message = "interrupted", f"interrupted after step {int(state.step)}; `sftc run` resumes from here"
        done = int(state.step)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    if status != "nan" or int(state.step) > 0:
        checkpoints.save(int(state.step), state, _record(prepared, int(state.step)), force=True)
    checkpoints.close()
    if status == "done":
        for record in _eval_records(stepper, prepared, state.params, done):
            log.write(record)
    log.event(int(state.step), "stop" if status != "done" else "done", status=status)
    params = jax.device_get(state.params)
    return TrainResult(status, int(state.step), stepper.graphdef, params, jax.device_get(stepper.frozen), last_loss, message)


def _epochs_to_steps(epochs: float | None, prepared: Prepared) -> int | None:
    if epochs is None:
        return None
    per_epoch = prepared.pipeline.stats.steps_per_epoch or 1
    return max(1, int(round(epochs * per_epoch)))


def _record(prepared: Prepared, step_number: int) -> dict:
    return {"step": step_number, "spec_hash": prepared.plan.spec_hash, "seed": prepared.plan.data.seed, "time": time.time()}
