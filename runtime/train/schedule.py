"""Learning-rate schedules with warmup, as pure functions of the step.

Warmup rises linearly from lr/warmup to lr over `warmup` steps (step 0 already
trains, as in Hugging Face's schedulers shifted by one); then:

    constant  lr
    linear    lr -> min_lr, straight line to the last step
    cosine    min_lr + (lr - min_lr) * (1 + cos(pi * progress)) / 2
    wsd       lr until the final `decay` steps, then linear to min_lr

`progress` runs from 0 after warmup to 1 at the last step (`total - 1`).
"""

from __future__ import annotations

import math

import jax.numpy as jnp

from runtime.plan.settings import Schedule


def build(schedule: Schedule, lr: float, total: int):
    """The step -> rate function of a decided plan schedule (warmup and decay in steps)
    over a `total`-step run from `lr`."""
    if not schedule.is_decided:
        raise ValueError(f"{schedule} has shares of the run not yet turned into steps (Schedule.decided)")
    return learning_rate(schedule.name, lr, schedule.min_lr, total, schedule.warmup_steps, schedule.decay_steps or 0)


def learning_rate(name: str, lr: float, min_lr: float, total: int, warmup: int, decay: int = 0):
    """A function step -> learning rate (works on Python ints and traced arrays)."""
    if total < 1:
        raise ValueError("a schedule needs at least one step")
    if warmup >= total and total > 1:
        raise ValueError(f"warmup ({warmup} steps) must be shorter than training ({total} steps)")
    last = max(total - 1, 1)

    def warm(step):
        return lr * (step + 1) / warmup

    def after(step):
        if name == "constant":
            return lr + 0.0 * step
        if name == "linear":
            progress = (step - warmup) / max(last - warmup, 1)
            return lr + (min_lr - lr) * progress
        if name == "cosine":
            progress = (step - warmup) / max(last - warmup, 1)
            return min_lr + (lr - min_lr) * 0.5 * (1 + jnp.cos(math.pi * progress))
        if name == "wsd":
            start = total - decay
            progress = jnp.clip((step - start + 1) / max(decay, 1), 0.0, 1.0)
            return lr + (min_lr - lr) * progress
        raise ValueError(f"unknown schedule {name!r}")

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        if warmup <= 0:
            return after(step)
        return jnp.where(step < warmup, warm(step), after(step))

    return schedule
