"""Learning-rate schedules with warmup, as pure functions of the step.

Warmup rises linearly from lr/warmup to lr over `warmup` steps (step 0 already
trains, as in Hugging Face's schedulers shifted by one); then, by the plan's
schedule class (AFTER_WARMUP):

    Constant  lr
    Linear    lr -> min_lr, straight line to the last step
    Cosine    min_lr + (lr - min_lr) * (1 + cos(pi * progress)) / 2
    Wsd       lr until the final `decay` steps, then linear to min_lr

`progress` runs from 0 after warmup to 1 at the last step (`total - 1`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from runtime.plan.settings import Constant, Cosine, Linear, Schedule, Wsd

Rate = Callable[[Any], jax.Array]


def _progress(schedule: Schedule, total: int, step: jax.Array) -> jax.Array:
    """0 at the end of warmup, 1 at the last step."""
    warmup, last = schedule.warmup_steps, max(total - 1, 1)
    return (step - warmup) / max(last - warmup, 1)


def _cosine(s: Cosine, lr: float, total: int, step: jax.Array) -> jax.Array:
    return s.min_lr + (lr - s.min_lr) * 0.5 * (1 + jnp.cos(math.pi * _progress(s, total, step)))


def _wsd(s: Wsd, lr: float, total: int, step: jax.Array) -> jax.Array:
    decay = s.decay_steps
    progress = jnp.clip((step - (total - decay) + 1) / max(decay, 1), 0.0, 1.0)
    return lr + (s.min_lr - lr) * progress


# Each schedule class -> its rate after warmup: (settings, lr, total steps, step) -> rate.
AFTER_WARMUP: dict[type[Schedule], Callable[[Any, float, int, jax.Array], jax.Array]] = {
    Constant: lambda s, lr, total, step: jnp.full_like(step, lr),
    Linear: lambda s, lr, total, step: lr + (s.min_lr - lr) * _progress(s, total, step),
    Cosine: _cosine,
    Wsd: _wsd,
}


def build(schedule: Schedule, lr: float, total: int) -> Rate:
    """The step -> rate function of a decided plan schedule (warmup and decay in steps)
    over a `total`-step run from `lr`; it works on Python ints and traced arrays."""
    if not schedule.is_decided:
        raise ValueError(f"{schedule} has shares of the run not yet turned into steps (Schedule.decided)")
    if total < 1:
        raise ValueError("a schedule needs at least one step")
    warmup = schedule.warmup_steps
    if warmup >= total and total > 1:
        raise ValueError(f"warmup ({warmup} steps) must be shorter than training ({total} steps)")
    after = AFTER_WARMUP[type(schedule)]

    def rate(step):
        step = jnp.asarray(step, jnp.float32)
        if warmup <= 0:
            return after(schedule, lr, total, step)
        return jnp.where(step < warmup, lr * (step + 1) / warmup, after(schedule, lr, total, step))

    return rate
