"""Each typed optimizer reaches optax with every setting under its optax name, and each
plan schedule gives the rates worked out by hand and the curves of optax's own schedules."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from runtime.plan.settings import (
    OPTIMIZERS,
    SCHEDULES,
    Adafactor,
    AdamW,
    Constant,
    Cosine,
    Length,
    Linear,
    Lion,
    Sgd,
    Wsd,
)
from runtime.train import optim, schedule

PARAMS = {"kernel": jnp.linspace(-1.0, 1.0, 12).reshape(3, 4), "scale": jnp.linspace(0.5, 1.5, 4)}
GRADS = [jax.tree.map(lambda p, k=k: jnp.sin(p * (k + 1)), PARAMS) for k in range(3)]
LR = 0.05


def _mask(params):
    return {"kernel": True, "scale": False}


# Settings off their defaults, and the optax calls they must become.
CASES = {
    "adamw": (
        AdamW(lr=LR, b1=0.8, b2=0.95, eps=1e-6, weight_decay=0.1),
        optax.adamw(LR, b1=0.8, b2=0.95, eps=1e-6, weight_decay=0.1, mask=_mask),
    ),
    "lion": (
        Lion(lr=LR, b1=0.85, b2=0.9, weight_decay=0.2),
        optax.lion(LR, b1=0.85, b2=0.9, weight_decay=0.2, mask=_mask),
    ),
    "adafactor": (
        Adafactor(lr=LR, decay_rate=0.7, eps=1e-20, clip_threshold=0.5),
        optax.adafactor(LR, decay_rate=0.7, eps=1e-20, clipping_threshold=0.5, multiply_by_parameter_scale=False),
    ),
    "sgd": (
        Sgd(lr=LR, momentum=0.5, nesterov=True, weight_decay=0.1),
        optax.chain(optax.add_decayed_weights(0.1, mask=_mask), optax.sgd(LR, momentum=0.5, nesterov=True)),
    ),
}


def _updates(tx):
    state, params, out = tx.init(PARAMS), PARAMS, []
    for grads in GRADS:
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        out.append(updates)
    return out


def test_every_optimizer_has_an_optax_mapping():
    assert set(optim.OPTAX) == set(OPTIMIZERS.values()) and set(CASES) == set(OPTIMIZERS)


@pytest.mark.parametrize("name", list(CASES))
def test_settings_reach_optax(name):
    settings, expected = CASES[name]
    for ours, theirs in zip(_updates(optim.optimizer(settings, lambda step: LR, clip=None)), _updates(expected)):
        for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


def test_every_schedule_has_a_rate():
    assert set(schedule.AFTER_WARMUP) == set(SCHEDULES.values())


# Rates worked out by hand at chosen steps (lr = 1): warmup climbs lr * (step + 1) / warmup;
# `progress` runs from 0 at the end of warmup to 1 at the last step, `total - 1`.
BY_HAND = [
    # warmup over 3 steps, then lr
    (Constant(warmup=Length(steps=3)), 8, {0: 1 / 3, 1: 2 / 3, 2: 1.0, 3: 1.0, 7: 1.0}),
    # no warmup: 1 -> 0.2 over steps 0..10; halfway at step 5
    (Linear(min_lr=0.2), 11, {0: 1.0, 5: 0.6, 10: 0.2}),
    # warmup 4: 0.25, 0.5, 0.75, 1 at steps 0..3; progress (step - 4) / 6: 0 at step 4, a half at 7
    (Cosine(warmup=Length(steps=4), min_lr=0.1), 11, {0: 0.25, 2: 0.75, 3: 1.0, 4: 1.0, 7: 0.55, 10: 0.1}),
    # the cosine's quarter point: 0.1 + 0.9 * (1 + cos(pi / 4)) / 2
    (Cosine(min_lr=0.1), 5, {1: 0.1 + 0.45 * (1 + math.sqrt(0.5)), 4: 0.1}),
    # warmup 2, stable at lr, the last 4 steps (6..9) decay linearly to 0.2: 0.8, 0.6, 0.4, 0.2
    (
        Wsd(warmup=Length(steps=2), decay=Length(steps=4), min_lr=0.2),
        10,
        {0: 0.5, 1: 1.0, 2: 1.0, 5: 1.0, 6: 0.8, 7: 0.6, 9: 0.2},
    ),
]


@pytest.mark.parametrize("settings, total, rates", BY_HAND)
def test_schedules_give_the_rates_worked_out_by_hand(settings, total, rates):
    built = schedule.build(settings, 1.0, total)
    assert {step: float(built(step)) for step in rates} == pytest.approx(rates, abs=1e-6)
    traced = jax.jit(jax.vmap(built))(jnp.asarray(list(rates)))
    np.testing.assert_allclose(np.asarray(traced), list(rates.values()), atol=1e-6)


def _optax_reference(settings, lr: float, total: int):
    """The same curve from optax's own schedules: after warmup, optax's constant, linear or
    cosine decay over the steps left; wsd joins a constant to a linear decay. Warmup is
    optax's linear ramp one count ahead (step 0 already trains at lr / warmup)."""
    warmup, last = settings.warmup_steps, total - 1
    after = {
        Constant: lambda: optax.constant_schedule(lr),
        Linear: lambda: optax.linear_schedule(lr, settings.min_lr, last - warmup),
        Cosine: lambda: optax.cosine_decay_schedule(lr, last - warmup, alpha=settings.min_lr / lr),
        Wsd: lambda: optax.join_schedules(
            [optax.constant_schedule(lr), optax.linear_schedule(lr, settings.min_lr, settings.decay_steps)],
            [total - settings.decay_steps - 1 - warmup],
        ),
    }[type(settings)]()
    if warmup == 0:
        return after
    ramp = optax.linear_schedule(0.0, lr, warmup)
    return optax.join_schedules([lambda count: ramp(count + 1), after], [warmup])


@pytest.mark.parametrize(
    "settings, total",
    [
        (Constant(warmup=Length(steps=5)), 20),
        (Linear(warmup=Length(steps=3), min_lr=0.01), 17),
        (Linear(min_lr=0.0), 9),
        (Cosine(warmup=Length(steps=6), min_lr=0.005), 40),
        (Cosine(min_lr=0.0), 13),
        (Wsd(warmup=Length(steps=4), decay=Length(steps=7), min_lr=0.002), 30),
        (Wsd(decay=Length(steps=1), min_lr=0.0), 6),
    ],
)
def test_schedules_follow_optaxs_curves(settings, total):
    lr = 0.05
    ours = schedule.build(settings, lr, total)
    theirs = _optax_reference(settings, lr, total)
    np.testing.assert_allclose(
        [float(ours(step)) for step in range(total)], [float(theirs(step)) for step in range(total)], rtol=1e-5
    )


def test_a_schedule_with_shares_must_be_decided_first():
    with pytest.raises(ValueError, match="not yet turned into steps"):
        schedule.build(Cosine(warmup=Length(share=0.1)), 1.0, 10)
    assert float(schedule.build(Cosine(warmup=Length(share=0.1)).decided(10), 1.0, 10)(0)) == pytest.approx(1.0)


def test_decide_turns_shares_into_steps_and_refuses_overlong_ones(tmp_path):
    """With `epochs`, the data gives the step count: what `sftc check` could not prove is refused here."""
    from runtime.preflight.prepare import PrepareError, decide
    from tests.runtime.plan.test_settings import lowered

    decided = decide(lowered(tmp_path, "schedule = wsd(warmup = 10%, decay = 20%)"), 50)
    assert decided.train.steps == 50 and decided.train.schedule == Wsd(warmup=Length(steps=5), decay=Length(steps=10))
    with pytest.raises(
        PrepareError, match=r"warmup \(30 steps\) and decay \(5 steps\) add up to more than training \(32 steps\)"
    ):
        decide(lowered(tmp_path, "schedule = wsd(warmup = 30 steps, decay = 5 steps)"), 32)
