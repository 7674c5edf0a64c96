"""The train step against references: hand-computed schedules, a hand-computed
masked loss, accumulation and mesh invariance, and a NaN that changes nothing."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from runtime.models import ModelConfig, build
from runtime.plan.settings import Adafactor, AdamW, Constant, Cosine, Length, Linear, Lion, Sgd, Wsd
from runtime.platform import mesh as meshlib
from runtime.train import optim, schedule, step

ROOT = Path(__file__).resolve().parents[3]
CONFIG = ModelConfig.llama(layers=2, dim=64, heads=4, kv_heads=2, ffn=128, vocab=128)
ADAMW = AdamW(lr=1e-2, weight_decay=0.01)


# ---------------------------------------------------------------- schedules


def test_warmup_then_cosine_by_hand():
    lr = schedule.build(Cosine(warmup=Length(steps=2), min_lr=0.1), 1.0, 11)
    got = [float(lr(s)) for s in range(11)]
    expected = [0.5, 1.0] + [0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (s - 2) / 8)) for s in range(2, 11)]
    assert got == pytest.approx(expected, abs=1e-6)
    assert got[-1] == pytest.approx(0.1)


def test_linear_constant_and_wsd_by_hand():
    linear = schedule.build(Linear(), 1.0, 5)
    assert [float(linear(s)) for s in range(5)] == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])
    constant = schedule.build(Constant(warmup=Length(steps=1)), 2.0, 4)
    assert [float(constant(s)) for s in range(4)] == pytest.approx([2.0, 2.0, 2.0, 2.0])
    wsd = schedule.build(Wsd(warmup=Length(steps=2), decay=Length(steps=4)), 1.0, 10)
    assert [float(wsd(s)) for s in range(10)] == pytest.approx([0.5, 1, 1, 1, 1, 1, 0.75, 0.5, 0.25, 0.0])


def test_warmup_must_be_shorter_than_training():
    with pytest.raises(ValueError, match="warmup"):
        schedule.build(Cosine(warmup=Length(steps=10)), 1.0, 10)


def test_weight_decay_skips_norms_and_biases():
    mask = optim.decay_mask({"kernel": jnp.ones((2, 2)), "scale": jnp.ones(2), "bias": jnp.ones(3)})
    assert mask == {"kernel": True, "scale": False, "bias": False}


# ---------------------------------------------------------------- the step


def _random_batch(rng, accumulation, micro, length=24):
    ids = rng.integers(0, CONFIG.vocab_size, (accumulation, micro, length)).astype(np.int32)
    segments = np.ones_like(ids)
    segments[..., -5:] = 0  # padding at the end of each row
    return {
        "input_ids": ids,
        "targets": np.roll(ids, -1, -1),
        "loss_mask": ((rng.random(ids.shape) > 0.4) & (segments > 0)).astype(np.float32),
        "positions": np.broadcast_to(np.arange(length, dtype=np.int32), ids.shape).copy(),
        "segment_ids": segments,
    }


@pytest.fixture(scope="module")
def setup():
    model = build(CONFIG, 0)
    graphdef, params, frozen = nnx.split(model, nnx.Param, ...)
    params, frozen = nnx.to_pure_dict(params), nnx.to_pure_dict(frozen)
    mesh = meshlib.make_mesh(meshlib.mesh_shape({"data": "auto"}, jax.device_count()))
    abstract = nnx.split(nnx.eval_shape(lambda: build(CONFIG, 0)), nnx.Param, ...)[1]
    lr = schedule.build(Constant(), 1e-2, 100)
    tx = optim.optimizer(ADAMW, lr, clip=1.0)
    abstract_state = jax.eval_shape(lambda p: step.start_state(p, tx), params)
    shardings = step.state_shardings(abstract_state, meshlib.state_shardings(abstract, mesh), mesh)
    frozen_shardings = jax.tree.map(lambda _: meshlib.replicated(mesh), frozen)
    fn = step.compile_step(graphdef, tx, lr, jnp.float32, shardings, frozen_shardings, mesh)
    return model, graphdef, params, frozen, tx, shardings, fn


def test_loss_is_the_mean_over_trained_tokens_of_the_global_batch(setup):
    model, graphdef, params, frozen, tx, shardings, fn = setup
    batch = _random_batch(np.random.default_rng(1), 2, 3)
    _, metrics = fn(step.init_state(params, tx, shardings), frozen, batch)
    flat = {k: v.reshape(6, -1) for k, v in batch.items()}
    logits = np.asarray(
        model(flat["input_ids"], positions=flat["positions"], segment_ids=flat["segment_ids"]), np.float64
    )
    logp = (
        logits
        - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True))
        - logits.max(-1, keepdims=True)
    )
    nll = -np.take_along_axis(logp, flat["targets"][..., None], -1)[..., 0]
    expected = (nll * flat["loss_mask"]).sum() / flat["loss_mask"].sum()
    assert float(metrics["loss"]) == pytest.approx(expected, rel=1e-5)
    assert float(metrics["tokens"]) == flat["loss_mask"].sum()


def test_accumulation_does_not_change_the_update(setup):
    """Same loss, gradient and (plain SGD, so linear in the gradient) update."""
    _, graphdef, params, frozen, _, _, _ = setup
    sgd = optim.optimizer(Sgd(lr=0.1), lambda s: 0.1, clip=None)
    mesh = meshlib.make_mesh(meshlib.mesh_shape({"data": "auto"}, jax.device_count()))
    abstract = nnx.split(nnx.eval_shape(lambda: build(CONFIG, 0)), nnx.Param, ...)[1]
    abstract_state = jax.eval_shape(lambda p: step.start_state(p, sgd), params)
    shardings = step.state_shardings(abstract_state, meshlib.state_shardings(abstract, mesh), mesh)
    fn = step.compile_step(
        graphdef,
        sgd,
        lambda s: 0.1,
        jnp.float32,
        shardings,
        jax.tree.map(lambda _: meshlib.replicated(mesh), frozen),
        mesh,
    )
    batch = _random_batch(np.random.default_rng(2), 1, 4)
    split = {k: v.reshape(2, 2, -1) for k, v in batch.items()}
    one, m1 = fn(step.init_state(params, sgd, shardings), frozen, batch)
    two, m2 = fn(step.init_state(params, sgd, shardings), frozen, split)
    assert float(m1["loss"]) == pytest.approx(float(m2["loss"]), rel=1e-6)
    assert float(m1["grad_norm"]) == pytest.approx(float(m2["grad_norm"]), rel=1e-5)
    for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(two.params)):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_the_loss_falls(setup):
    _, graphdef, params, frozen, tx, shardings, fn = setup
    batch = _random_batch(np.random.default_rng(3), 1, 4)
    state = step.init_state(params, tx, shardings)
    losses = []
    for _ in range(15):
        state, metrics = fn(state, frozen, batch)
        losses.append(float(metrics["loss"]))
    assert losses[-1] < 0.5 * losses[0]
    assert int(state.step) == 15


def test_a_non_finite_step_changes_nothing_but_is_counted(setup):
    """The update is refused, the step counter still advances (batch N stays step N) and the
    state's device-side `skipped` counter, echoed in the metrics, counts the refusal."""
    _, graphdef, params, frozen, tx, shardings, fn = setup
    state = step.init_state(params, tx, shardings)
    poisoned = jax.tree.map(lambda p: p.at[(0,) * p.ndim].set(jnp.nan), state.params)
    state = state._replace(params=poisoned)
    kept = jax.tree.map(np.asarray, (state.params, _moments(state.opt_state)))
    new, metrics = fn(state, frozen, _random_batch(np.random.default_rng(4), 1, 2))
    assert not bool(metrics["finite"]) and int(metrics["skipped"]) == 1
    assert int(new.step) == 1 and int(new.skipped) == 1
    for a, b in zip(jax.tree.leaves(kept), jax.tree.leaves((new.params, _moments(new.opt_state)))):
        np.testing.assert_array_equal(a, np.asarray(b))
    assert _schedule_counts(new.opt_state) == [1]  # only the schedule moves on with the step


def _is_schedule(node) -> bool:
    return isinstance(node, optax.ScaleByScheduleState)


def _schedule_counts(opt_state) -> list[int]:
    return [int(n.count) for n in jax.tree.leaves(opt_state, is_leaf=_is_schedule) if _is_schedule(n)]


def _moments(opt_state):
    """Everything in `opt_state` but the schedules' counts."""
    return jax.tree.map(lambda n: None if _is_schedule(n) else n, opt_state, is_leaf=_is_schedule)


def _poisoned(batch):
    return {**batch, "loss_mask": batch["loss_mask"] * np.nan}


def test_the_rate_applied_after_a_refused_step_is_the_rate_logged_for_its_step(setup):
    """Issue 21.8: a refused step kept optax's schedule count, so every later step applied the
    rate of the step before it (logged lr 0.05, applied 0.075) and the schedule never reached its
    end. Plain SGD makes the update lr x (the update at lr 1) from the same state."""
    _, graphdef, params, frozen, _, _, _ = setup
    mesh = meshlib.make_mesh(meshlib.mesh_shape({"data": "auto"}, jax.device_count()))
    abstract = nnx.split(nnx.eval_shape(lambda: build(CONFIG, 0)), nnx.Param, ...)[1]

    def compiled(lr):
        sgd = optim.optimizer(Sgd(lr=0.1), lr, clip=None)
        abstract_state = jax.eval_shape(lambda p: step.start_state(p, sgd), params)
        shardings = step.state_shardings(abstract_state, meshlib.state_shardings(abstract, mesh), mesh)
        replicated = jax.tree.map(lambda _: meshlib.replicated(mesh), frozen)
        return sgd, shardings, step.compile_step(graphdef, sgd, lr, jnp.float32, shardings, replicated, mesh)

    decaying = schedule.build(Linear(), 0.1, 5)  # 0.1, 0.075, 0.05, 0.025, 0
    sgd, shardings, fn = compiled(decaying)
    batch = _random_batch(np.random.default_rng(5), 1, 2)
    state = step.init_state(params, sgd, shardings)
    state, _ = fn(state, frozen, batch)
    state, metrics = fn(state, frozen, _poisoned(batch))
    assert not bool(metrics["finite"])
    assert int(state.step) == 2 and _schedule_counts(state.opt_state) == [2]

    before = jax.tree.map(np.array, state.params)  # a copy: the step donates (reuses) its input
    _, unit_shardings, unit = compiled(lambda s: 1.0)
    at_one, _ = unit(step.init_state(before, sgd, unit_shardings), frozen, batch)
    state, metrics = fn(state, frozen, batch)
    assert float(metrics["lr"]) == pytest.approx(0.05)
    for old, new, one in zip(jax.tree.leaves(before), jax.tree.leaves(state.params), jax.tree.leaves(at_one.params)):
        np.testing.assert_allclose(np.asarray(new) - old, 0.05 * (np.asarray(one) - old), rtol=1e-4, atol=1e-6)
    state, _ = fn(state, frozen, batch)
    before = jax.tree.map(np.array, state.params)  # a copy: the step donates (reuses) its input
    state, metrics = fn(state, frozen, batch)
    assert float(metrics["lr"]) == 0.0  # the schedule's end is reached, and applied: nothing moves
    for old, new in zip(jax.tree.leaves(before), jax.tree.leaves(state.params)):
        np.testing.assert_array_equal(np.asarray(new), old)
    assert int(state.step) == 5 and _schedule_counts(state.opt_state) == [5]


@pytest.mark.parametrize(
    "plan",
    [AdamW(lr=1e-2, weight_decay=0.1), Lion(lr=1e-3), Adafactor(lr=1e-2, weight_decay=0.1), Sgd(lr=0.1, momentum=0.9)],
    ids=lambda p: type(p).__name__,
)
def test_every_optimizers_schedule_count_follows_the_step(plan):
    """`optim.at_step` reaches each schedule of each optimizer (adafactor's decoupled decay has
    its own) and leaves the counts that belong to the moments alone."""
    params = {"kernel": jnp.ones((2, 2)), "scale": jnp.ones(2)}
    state = optim.optimizer(plan, lambda s: 0.1, clip=1.0).init(params)
    synced = optim.at_step(state, jnp.int32(7))
    counts = _schedule_counts(synced)
    assert counts and set(counts) == {7}
    for a, b in zip(jax.tree.leaves(_moments(state)), jax.tree.leaves(_moments(synced))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# ---------------------------------------------------------------- sharded = unsharded

_SHARDED = textwrap.dedent(
    """
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    from flax import nnx
    from runtime.platform import mesh as meshlib
    from runtime.models import ModelConfig, build
    from runtime.plan.settings import Adafactor, AdamW, Cosine, Length, Lion, Sgd
    from runtime.train import optim, schedule, step

    config = ModelConfig.llama(layers=2, dim=64, heads=4, kv_heads=2, ffn=128, vocab=128)
    plan = AdamW(lr=1e-2, weight_decay=0.01)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 128, (1, 8, 16)).astype(np.int32)
    global_batch = {"input_ids": ids, "targets": np.roll(ids, -1, -1),
                    "loss_mask": (rng.random(ids.shape) > 0.3).astype(np.float32),
                    "positions": np.broadcast_to(np.arange(16, dtype=np.int32), ids.shape).copy(),
                    "segment_ids": np.ones_like(ids)}
    cases = [("1,1,1", 1), ("8,1,1", 1), ("2,4,1", 1), ("2,2,2", 1), ("1,1,1", 4)]
    out = {}
    for name, accumulation in cases:
        data, fsdp, tensor = map(int, name.split(","))
        devices = jax.devices()[: data * fsdp * tensor]
        mesh = meshlib.make_mesh({"data": data, "fsdp": fsdp, "tensor": tensor}, devices)
        batch = {k: v.reshape(accumulation, 8 // accumulation, 16) for k, v in global_batch.items()}
        model = build(config, 0)
        graphdef, params, frozen = nnx.split(model, nnx.Param, ...)
        params, frozen = nnx.to_pure_dict(params), nnx.to_pure_dict(frozen)
        abstract = nnx.split(nnx.eval_shape(lambda: build(config, 0)), nnx.Param, ...)[1]
        lr = schedule.build(Cosine(warmup=Length(steps=2), min_lr=1e-3), 1e-2, 10)
        tx = optim.optimizer(plan, lr, clip=1.0)
        abstract_state = jax.eval_shape(lambda p: step.start_state(p, tx), params)
        shardings = step.state_shardings(abstract_state, meshlib.state_shardings(abstract, mesh), mesh)
        frozen_shardings = jax.tree.map(lambda _: meshlib.replicated(mesh), frozen)
        fn = step.compile_step(graphdef, tx, lr, jnp.float32, shardings, frozen_shardings, mesh)
        state = step.init_state(params, tx, shardings)
        losses = []
        for _ in range(5):
            state, metrics = fn(state, frozen, batch)
            losses.append(float(metrics["loss"]))
        q = state.params["layers"][0]["attn"]["q"]["kernel"]
        out[f"{name} x{accumulation}"] = {"losses": losses, "q": np.asarray(q).tolist(), "q_spec": str(q.sharding.spec),
                                          "devices": len(q.sharding.device_set)}
    print(json.dumps(out))
    """
)


@pytest.mark.slow
def test_loss_trajectory_is_the_same_on_every_mesh_and_accumulation():
    """5 steps on 8 simulated devices: meshes (1,1,1), (8,1,1), (2,4,1), (2,2,2) and
    accumulation 1 vs 4 at equal global batch give the same losses and weights."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", _SHARDED], capture_output=True, text=True, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    reference = result.pop("1,1,1 x1")
    assert result["2,2,2 x1"]["devices"] == 8 and result["2,2,2 x1"]["q_spec"] == "P('fsdp', 'tensor')"
    assert result["8,1,1 x1"]["devices"] == 8  # pure data parallelism: weights on every device
    for name, case in result.items():
        np.testing.assert_allclose(case["losses"], reference["losses"], rtol=1e-5, err_msg=name)
        # Adam divides by sqrt(v): a gradient entry near zero flips its update on a last-bit difference,
        # so weights agree to a small fraction of one step (lr 1e-2), not to float32 precision
        np.testing.assert_allclose(np.array(case["q"]), np.array(reference["q"]), atol=5e-4, err_msg=name)


@pytest.mark.parametrize(
    "plan",
    [
        Adafactor(lr=1e-2, decay_rate=0.8, eps=1e-30, clip_threshold=1.0, weight_decay=0.01),
        pytest.param(Lion(lr=1e-3, b1=0.9, b2=0.99, weight_decay=0.01), marks=pytest.mark.slow),
        pytest.param(Sgd(lr=0.5, momentum=0.9, nesterov=True), marks=pytest.mark.slow),
    ],
    ids=lambda p: p.name,
)
def test_every_optimizer_trains(setup, plan):
    _, graphdef, params, frozen, _, _, _ = setup
    lr = schedule.build(Constant(), plan.lr, 100)
    tx = optim.optimizer(plan, lr, clip=1.0)
    mesh = meshlib.make_mesh(meshlib.mesh_shape({"data": "auto"}, jax.device_count()))
    abstract = nnx.split(nnx.eval_shape(lambda: build(CONFIG, 0)), nnx.Param, ...)[1]
    abstract_state = jax.eval_shape(lambda p: step.start_state(p, tx), params)
    shardings = step.state_shardings(abstract_state, meshlib.state_shardings(abstract, mesh), mesh)
    fn = step.compile_step(
        graphdef, tx, lr, jnp.float32, shardings, jax.tree.map(lambda _: meshlib.replicated(mesh), frozen), mesh
    )
    state = step.init_state(params, tx, shardings)
    batch = _random_batch(np.random.default_rng(5), 1, 4)
    losses = []
    for _ in range(12):
        state, metrics = fn(state, frozen, batch)
        losses.append(float(metrics["loss"]))
    assert losses[-1] < 0.7 * losses[0], losses


@pytest.mark.slow
def test_remat_recomputes_instead_of_storing_with_identical_gradients():
    ids = np.random.default_rng(0).integers(0, CONFIG.vocab_size, (4, 128)).astype(np.int32)
    results = {}
    for remat in ("off", "full", "dots"):
        graphdef, state = nnx.split(build(CONFIG.replace(remat=remat), 0))

        def loss(s, graphdef=graphdef):
            return nnx.merge(graphdef, s)(ids).mean()

        compiled = jax.jit(jax.value_and_grad(loss)).lower(state).compile()
        value, grads = compiled(state)
        memory = compiled.memory_analysis()
        results[remat] = (float(value), jax.tree.leaves(grads), memory.temp_size_in_bytes if memory else None)
    for remat in ("full", "dots"):
        assert results[remat][0] == pytest.approx(results["off"][0], rel=1e-6)
        for a, b in zip(results[remat][1], results["off"][1]):
            np.testing.assert_allclose(a, b, atol=1e-7)
    if results["off"][2] is not None:
        assert results["full"][2] < results["off"][2]
