"""Optax optimizers from the plan: clipping, masked weight decay, the schedule."""

from __future__ import annotations

from typing import Any, Mapping

import jax
import optax

from ..plan import OptimizerPlan


def decay_mask(params) -> Any:
    """Weight decay applies to matrices (kernels, embeddings), never to norms or biases."""
    return jax.tree.map(lambda p: getattr(p, "ndim", 0) >= 2, params)


def optimizer(plan: OptimizerPlan, schedule, clip: float | None) -> optax.GradientTransformation:
    o: Mapping[str, Any] = plan.options
    decay = float(o.get("weight_decay", 0.0))
    if plan.name == "adamw":
        core = optax.adamw(schedule, b1=o["b1"], b2=o["b2"], eps=o["eps"], weight_decay=decay, mask=decay_mask)
    elif plan.name == "lion":
        core = optax.lion(schedule, b1=o["b1"], b2=o["b2"], weight_decay=decay, mask=decay_mask)
    elif plan.name == "adafactor":
        core = optax.adafactor(
            schedule,
            decay_rate=o["decay_rate"],
            eps=o["eps"],
            clipping_threshold=o["clip_threshold"],
            multiply_by_parameter_scale=False,
        )
        if decay > 0:
            core = optax.chain(core, _decoupled_decay(decay, schedule))
    elif plan.name == "sgd":
        core = optax.chain(
            optax.add_decayed_weights(decay, mask=decay_mask),
            optax.sgd(schedule, momentum=o["momentum"] or None, nesterov=bool(o["nesterov"])),
        )
    else:
        raise ValueError(f"unknown optimizer {plan.name!r}")
    if clip is None:
        return core
    return optax.chain(optax.clip_by_global_norm(clip), core)


def _decoupled_decay(decay: float, schedule) -> optax.GradientTransformation:
    """AdamW-style decay for adafactor: subtract lr * decay * param after the update."""

    def init(params):
        return optax.ScaleByScheduleState(count=jax.numpy.zeros([], jax.numpy.int32))

    def update(updates, state, params):
        lr = schedule(state.count)
        updates = jax.tree.map(lambda u, p, m: u - lr * decay * p if m else u, updates, params, decay_mask(params))
        return updates, optax.ScaleByScheduleState(count=state.count + 1)

    return optax.GradientTransformation(init, update)
