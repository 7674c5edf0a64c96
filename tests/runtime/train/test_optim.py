"""Each typed optimizer reaches optax with every setting under its optax name, and a
plan's schedule gives the same rates as the positional form the loop used."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from runtime.plan.settings import OPTIMIZERS, SCHEDULES, Adafactor, AdamW, Cosine, Length, Lion, Sgd, Wsd
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


@pytest.mark.parametrize(
    "settings",
    [
        Cosine(warmup=Length(steps=2), min_lr=0.1),
        Wsd(warmup=Length(steps=1), decay=Length(steps=4), min_lr=0.2),
        SCHEDULES["constant"](warmup=Length(steps=3)),
        SCHEDULES["linear"](min_lr=0.3),
    ],
)
def test_a_plan_schedule_gives_the_positional_forms_rates(settings):
    built = schedule.build(settings, 1.0, 11)
    positional = schedule.learning_rate(
        settings.name, 1.0, settings.min_lr, 11, settings.warmup_steps, settings.decay_steps or 0
    )
    np.testing.assert_allclose([float(built(s)) for s in range(11)], [float(positional(s)) for s in range(11)])


def test_a_schedule_with_shares_must_be_decided_first():
    with pytest.raises(ValueError, match="not yet turned into steps"):
        schedule.build(Cosine(warmup=Length(share=0.1)), 1.0, 10)
    assert float(schedule.build(Cosine(warmup=Length(share=0.1)).decided(10), 1.0, 10)(0)) == pytest.approx(1.0)


def test_decide_turns_shares_into_steps_and_refuses_overlong_ones(tmp_path):
    """With `epochs`, the data gives the step count: what `sftc check` could not prove is refused here."""
    from runtime.train.prepare import PrepareError, decide
    from tests.runtime.plan.test_settings import lowered

    decided = decide(lowered(tmp_path, "schedule = wsd(warmup = 10%, decay = 20%)"), 50)
    assert decided.train.steps == 50 and decided.train.schedule == Wsd(warmup=Length(steps=5), decay=Length(steps=10))
    with pytest.raises(
        PrepareError, match=r"warmup \(30 steps\) and decay \(5 steps\) add up to more than training \(32 steps\)"
    ):
        decide(lowered(tmp_path, "schedule = wsd(warmup = 30 steps, decay = 5 steps)"), 32)
