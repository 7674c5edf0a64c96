"""Optax optimizers from the plan: one table from each typed optimizer to optax,
then clipping, masked weight decay and the schedule."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import optax

from runtime.plan.settings import Adafactor, AdamW, Lion, Optimizer, Sgd


def decay_mask(params) -> Any:
    """Weight decay applies to matrices (kernels, embeddings), never to norms or biases."""
    return jax.tree.map(lambda p: getattr(p, "ndim", 0) >= 2, params)


def _adafactor(o: Adafactor, schedule) -> optax.GradientTransformation:
    core = optax.adafactor(
        schedule,
        decay_rate=o.decay_rate,
        eps=o.eps,
        clipping_threshold=o.clip_threshold,
        multiply_by_parameter_scale=False,
    )
    return optax.chain(core, _decoupled_decay(o.weight_decay, schedule)) if o.weight_decay > 0 else core


# Each setting is named as the spec writes it; where optax's name differs, it is written here.
OPTAX: dict[type[Optimizer], Callable[[Any, Any], optax.GradientTransformation]] = {
    AdamW: lambda o, schedule: optax.adamw(
        schedule, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay, mask=decay_mask
    ),
    Lion: lambda o, schedule: optax.lion(schedule, b1=o.b1, b2=o.b2, weight_decay=o.weight_decay, mask=decay_mask),
    Adafactor: _adafactor,
    Sgd: lambda o, schedule: optax.chain(
        optax.add_decayed_weights(o.weight_decay, mask=decay_mask),
        optax.sgd(schedule, momentum=o.momentum or None, nesterov=o.nesterov),
    ),
}


def optimizer(plan: Optimizer, schedule, clip: float | None) -> optax.GradientTransformation:
    """`plan`'s optax optimizer driven by `schedule` (step -> rate), after global-norm clipping."""
    core = OPTAX[type(plan)](plan, schedule)
    if clip is None:
        return core
    return optax.chain(optax.clip_by_global_norm(clip), core)


def at_step(opt_state, step) -> Any:
    """`opt_state` with the count of every schedule in it (optax's `ScaleByScheduleState`) set
    to `step`, the train state's own step.

    optax advances a schedule's count only when an update is applied, so a refused
    (non-finite) step would leave it behind `state.step`: the rate applied would lag the
    logged one and never reach the schedule's end. The train step sets the counts before
    and after each update, so the schedule is a function of the state's step alone. The
    other counts (Adam's and Lion's bias correction, adafactor's decay) belong to the
    moments they correct and stay with them: a refused step changes neither."""

    def synced(node):
        if isinstance(node, optax.ScaleByScheduleState):
            return node._replace(count=jax.numpy.asarray(step).astype(node.count.dtype))
        return node

    return jax.tree.map(synced, opt_state, is_leaf=lambda node: isinstance(node, optax.ScaleByScheduleState))


def _decoupled_decay(decay: float, schedule) -> optax.GradientTransformation:
    """AdamW-style decay for adafactor: subtract lr * decay * param after the update."""

    def init(params):
        return optax.ScaleByScheduleState(count=jax.numpy.zeros([], jax.numpy.int32))

    def update(updates, state, params):
        lr = schedule(state.count)
        updates = jax.tree.map(lambda u, p, m: u - lr * decay * p if m else u, updates, params, decay_mask(params))
        return updates, optax.ScaleByScheduleState(count=state.count + 1)

    return optax.GradientTransformation(init, update)
