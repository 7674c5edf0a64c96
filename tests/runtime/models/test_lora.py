"""LoRA adapters against peft: the same logits for the same adapter weights (through
`save_peft` -> `PeftModel.from_pretrained`), a merged export transformers loads,
gradients only on the adapters through the real train step, and dropout."""

from __future__ import annotations

import copy
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import transformers
from flax import nnx
from safetensors import safe_open

from runtime.checkpoints.hf_checkpoint import CheckpointError, load_peft, load_pretrained, save_peft, save_pretrained
from runtime.models import ModelConfig, build, forward, lora
from runtime.models.transformer import Linear
from runtime.plan.run_plan import LoraPlan
from runtime.platform import mesh as meshlib
from runtime.train import step

peft = pytest.importorskip("peft")

IDS = np.random.RandomState(11).randint(3, 256, size=(2, 9))
ALL = ("q", "k", "v", "o", "gate", "up", "down")


def _torch_logits(model, ids=IDS):
    with torch.no_grad():
        return model(torch.tensor(ids)).logits.float().numpy()


def _randomize(model, seed):
    """Non-zero A and B, large enough that the adapters visibly move the logits."""
    rng = np.random.default_rng(seed)
    for _, layer in lora.lora_layers(model):
        for v in (layer.lora_a, layer.lora_b):
            v.set_value(jnp.asarray(0.3 * rng.standard_normal(v.shape), v.get_value().dtype))


@pytest.mark.parametrize(
    "case, plan",
    [
        ("llama", LoraPlan(rank=4, alpha=8, dropout=0.05, targets=ALL)),
        ("llama_bias", LoraPlan(rank=2, alpha=3.5, dropout=0.0, targets=("q", "k", "v", "o"))),
    ],
)
def test_lora_matches_peft_and_merged_export(case, plan, hf_checkpoint, tmp_path):
    directory, torch_model = hf_checkpoint(case)
    model, config = load_pretrained(directory)
    base = np.asarray(forward(model, IDS))

    lora.add_lora(model, plan, rngs=3)
    # at init the adapted model is the base model, exactly (B = 0)
    np.testing.assert_array_equal(np.asarray(forward(model, IDS)), base)
    layers = dict(lora.lora_layers(model))
    assert len(layers) == config.num_layers * len(plan.targets)
    for _, layer in layers.items():
        a, b = np.asarray(layer.lora_a[...]), np.asarray(layer.lora_b[...])
        assert a.shape == (layer.in_features, plan.rank) and b.shape == (plan.rank, layer.out_features)
        assert not b.any() and a.std() > 0 and np.abs(a).max() <= 1 / np.sqrt(layer.in_features)
        assert layer.scaling == plan.alpha / plan.rank

    _randomize(model, 5)
    ours = np.asarray(forward(model, IDS))
    assert np.abs(ours - base).max() > 0.1  # the adapters matter

    # peft loads our adapter and computes the same logits
    out = save_peft(model, config, tmp_path / "adapter", str(directory), plan, revision="abc123")
    adapter_config = json.loads((out / "adapter_config.json").read_text())
    assert (adapter_config["base_model_name_or_path"], adapter_config["revision"]) == (str(directory), "abc123")
    hf_targets = sorted(
        {
            "q": "q_proj",
            "k": "k_proj",
            "v": "v_proj",
            "o": "o_proj",
            "gate": "gate_proj",
            "up": "up_proj",
            "down": "down_proj",
        }[t]
        for t in plan.targets
    )
    assert adapter_config["target_modules"] == hf_targets
    assert (adapter_config["r"], adapter_config["lora_alpha"], adapter_config["lora_dropout"]) == (
        plan.rank,
        plan.alpha,
        plan.dropout,
    )
    assert adapter_config["task_type"] == "CAUSAL_LM" and adapter_config["peft_type"] == "LORA"
    peft_model = peft.PeftModel.from_pretrained(copy.deepcopy(torch_model), out).eval()
    expected = peft.get_peft_model_state_dict(peft_model)
    with safe_open(str(out / "adapter_model.safetensors"), framework="pt") as f:
        written = {k: f.get_tensor(k) for k in f.keys()}
    assert set(written) == set(expected)
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in written
    for name, tensor in written.items():
        assert torch.equal(tensor, expected[name]), name  # loaded, not left at peft's init
    np.testing.assert_allclose(ours, _torch_logits(peft_model), atol=1e-4, rtol=1e-4)

    # export = hf after a LoRA run: merged weights load in transformers with the same logits
    plain = lora.merge_lora(model)
    assert not lora.has_lora(plain) and lora.has_lora(model)
    assert nnx.graphdef(plain) == nnx.graphdef(load_pretrained(directory)[0])
    merged_dir = save_pretrained(plain, config, tmp_path / "merged")
    merged = transformers.AutoModelForCausalLM.from_pretrained(
        merged_dir, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    np.testing.assert_allclose(_torch_logits(merged), ours, atol=1e-4, rtol=1e-4)
    peft_merged = peft_model.merge_and_unload().state_dict()
    for name, tensor in merged.state_dict().items():
        torch.testing.assert_close(tensor, peft_merged[name], atol=1e-5, rtol=1e-5)

    # and our own reader gives the adapter back bit for bit
    again, read_plan = load_peft(load_pretrained(directory)[0], out)
    assert read_plan == plan
    np.testing.assert_array_equal(np.asarray(forward(again, IDS)), ours)


CONFIG = ModelConfig.llama(layers=2, dim=32, heads=4, kv_heads=2, ffn=48, vocab=64)
PLAN = LoraPlan(rank=4, alpha=16, dropout=0.0, targets=("q", "v", "down"))


def _batch(rng, accumulation=1, micro=2, length=12):
    ids = rng.integers(0, CONFIG.vocab_size, (accumulation, micro, length)).astype(np.int32)
    return {
        "input_ids": ids,
        "targets": np.roll(ids, -1, -1),
        "loss_mask": np.ones(ids.shape, np.float32),
        "positions": np.broadcast_to(np.arange(length, dtype=np.int32), ids.shape).copy(),
        "segment_ids": np.ones_like(ids),
    }


def test_train_step_updates_only_the_adapters():
    model = lora.add_lora(build(CONFIG, 0), PLAN, rngs=1)
    filt = lora.trainable_filter(PLAN)
    assert filt is nnx.LoRAParam and lora.trainable_filter(None) is nnx.Param
    graphdef, params, frozen = nnx.split(model, filt, ...)
    params, frozen = nnx.to_pure_dict(params), nnx.to_pure_dict(frozen)
    names = {path[-1] for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]}
    assert names == {jax.tree_util.DictKey("lora_a"), jax.tree_util.DictKey("lora_b")}
    frozen_names = {str(path[-1]) for path, _ in jax.tree_util.tree_flatten_with_path(frozen)[0]}
    assert not any("lora" in n for n in frozen_names)

    # shardings exactly as the loop derives them, from an abstract adapted model
    mesh = meshlib.make_mesh(meshlib.mesh_shape({"data": "auto"}, jax.device_count()))
    abstract = nnx.split(nnx.eval_shape(lambda: lora.add_lora(build(CONFIG, 0), PLAN, 0)), filt, ...)[1]
    assert meshlib.logical_names(abstract)["layers"][0]["mlp"]["down"] == {
        "lora_a": ("mlp", None),
        "lora_b": (None, "embed"),
    }
    tx = optax.adam(1e-2)
    abstract_state = jax.eval_shape(lambda p: step.start_state(p, tx), params)
    shardings = step.state_shardings(abstract_state, meshlib.state_shardings(abstract, mesh), mesh)
    frozen_shardings = jax.tree.map(lambda _: meshlib.replicated(mesh), frozen)
    fn = step.compile_step(graphdef, tx, lambda s: 1e-2, jnp.float32, shardings, frozen_shardings, mesh)
    frozen_before = jax.tree.map(np.asarray, frozen)
    state = step.init_state(params, tx, shardings)
    batch = _batch(np.random.default_rng(0))

    # at init (B = 0) the gradient reaches every B and no A
    loss = lambda p: step.token_statistics(graphdef, p, frozen, jax.tree.map(lambda x: x[0], batch), jnp.float32)[0]  # noqa: E731
    grads = jax.jit(jax.grad(loss))(params)
    for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
        kind = str(path[-1])
        assert (np.abs(np.asarray(g)).max() > 0) == ("lora_b" in kind), path

    state, metrics = fn(state, frozen, batch)
    assert bool(metrics["finite"])
    for path, new in jax.tree_util.tree_flatten_with_path(state.params)[0]:
        old = params
        for k in path:
            old = old[k.key]
        changed = not np.array_equal(np.asarray(new), np.asarray(old))
        assert changed == ("lora_b" in str(path[-1])), path  # Adam: zero gradient -> zero update
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, frozen), frozen_before)

    # a few more steps: the loss falls, and A trains once B is non-zero
    first = float(metrics["loss"])
    for _ in range(5):
        state, metrics = fn(state, frozen, batch)
    assert float(metrics["loss"]) < first
    a_new = np.asarray(state.params["layers"][0]["attn"]["q"]["lora_a"])
    assert not np.array_equal(a_new, np.asarray(params["layers"][0]["attn"]["q"]["lora_a"]))


@pytest.mark.slow
def test_dropout_needs_a_key_and_is_deterministic_per_key():
    plan = LoraPlan(rank=4, alpha=8, dropout=0.5, targets=("q", "k", "v"))
    model = lora.add_lora(build(CONFIG, 0), plan, rngs=2)
    _randomize(model, 1)
    graphdef, params, frozen = nnx.split(model, nnx.LoRAParam, ...)
    ids = jnp.asarray(_batch(np.random.default_rng(1))["input_ids"][0])

    @jax.jit
    def run(params, key):
        m = nnx.merge(graphdef, params, frozen)
        with lora.dropout_rng(key):
            return m(ids)

    @jax.jit
    def grad(params, key):
        def f(p):
            m = nnx.merge(graphdef, p, frozen)
            with lora.dropout_rng(key):
                return jnp.sum(m(ids) ** 2)

        return jax.grad(f)(params)

    eval_logits = np.asarray(forward(model, ids))
    np.testing.assert_allclose(np.asarray(run(params, None)), eval_logits, atol=1e-5)  # another compile
    k1, k2 = jax.random.key(1), jax.random.key(2)
    a, b, c = (np.asarray(run(params, k)) for k in (k1, k1, k2))
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3 and np.abs(a - eval_logits).max() > 1e-3
    g = grad(params, k1)
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(g))
    # outside the context manager the model is deterministic again
    np.testing.assert_array_equal(np.asarray(forward(model, ids)), eval_logits)

    # one layer: the adapter input is dropped at rate p and the rest scaled by 1/(1-p)
    linear = Linear(8, 8, use_bias=False, rngs=nnx.Rngs(0))
    layer = lora.LoraLinear(linear, rank=8, alpha=8, dropout=0.25, rngs=nnx.Rngs(0))
    layer.lora_a.set_value(jnp.eye(8))
    layer.lora_b.set_value(jnp.eye(8))
    x = jnp.ones((4096, 8))
    with lora.dropout_rng(jax.random.key(0)):
        extra = np.asarray(layer(x) - linear(x))
    dropped, kept = np.isclose(extra, 0.0, atol=1e-5), np.isclose(extra, 1 / 0.75, atol=1e-5)
    assert (dropped | kept).all() and abs(dropped.mean() - 0.25) < 0.02


def test_counts_dtypes_and_errors(tmp_path):
    abstract = nnx.eval_shape(lambda: lora.add_lora(build(CONFIG, 0), PLAN, 0))
    extra = lora.count_lora_params(CONFIG, PLAN)
    d, h = CONFIG.hidden_size, CONFIG.head_dim
    assert extra == 2 * 4 * ((d + 4 * h) + (d + 2 * h) + (CONFIG.intermediate_size + d))
    assert lora.count_params(abstract) == (extra, CONFIG.num_params() + extra)
    assert lora.count_params(build(CONFIG, 0)) == (CONFIG.num_params(),) * 2

    # bfloat16 base, float32 adapters: the forward runs in the compute dtype
    model = lora.add_lora(build(CONFIG, 0, dtype="bfloat16"), PLAN, 0)
    assert model.layers[0].attn.q.lora_a.get_value().dtype == jnp.float32
    assert model.layers[0].attn.q.kernel.get_value().dtype == jnp.bfloat16
    assert np.isfinite(np.asarray(forward(model, _batch(np.random.default_rng(0))["input_ids"][0]))).all()
    plain = lora.merge_lora(model)
    assert plain.layers[0].attn.q.kernel.get_value().dtype == jnp.bfloat16

    with pytest.raises(ValueError, match="already has LoRA"):
        lora.add_lora(model, PLAN)
    with pytest.raises(ValueError, match="unknown LoRA target"):
        lora.add_lora(build(CONFIG, 0), LoraPlan(4, 8, 0.0, ("q", "qkv")))
    with pytest.raises(CheckpointError, match="no LoRA adapters"):
        save_peft(build(CONFIG, 0), CONFIG, tmp_path / "a", "base", PLAN)
    with pytest.raises(CheckpointError, match="rank"):
        save_peft(model, CONFIG, tmp_path / "b", "base", LoraPlan(8, 16, 0.0, PLAN.targets))


def test_a_frozen_bf16_base_is_read_in_bf16_with_the_values_of_a_float32_read(hf_checkpoint):
    """LoRA in bfloat16: the base is loaded tensor by tensor in bfloat16 (no float32 copy of it
    is ever held), and the values are those of a float32 load cast afterwards."""
    import dataclasses

    import jax
    import jax.numpy as jnp

    from runtime.checkpoints.hf_checkpoint import load_pretrained
    from runtime.plan.settings import SCHEDULES, Length
    from runtime.train.engine import StepSettings, load_weights
    from runtime.train.step import cast
    from runtime.train.throughput import DEFAULT_OPTIMIZER

    directory, _ = hf_checkpoint("llama")
    _, config = load_pretrained(directory)
    settings = StepSettings(
        steps=2,
        micro=1,
        accumulation=1,
        dtype="bfloat16",
        optimizer=DEFAULT_OPTIMIZER,
        schedule=SCHEDULES["constant"](warmup=Length(steps=0)).decided(2),
        clip=None,
        mesh={"data": "auto"},
        adapter=PLAN,
    )
    params, frozen = load_weights(settings, config, directory)
    assert {x.dtype for x in jax.tree.leaves(frozen)} == {jnp.dtype(jnp.bfloat16)}
    assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
    _, reference = load_weights(dataclasses.replace(settings, dtype="float32"), config, directory)
    for a, b in zip(jax.tree.leaves(frozen), jax.tree.leaves(cast(reference, jnp.bfloat16))):
        assert jnp.array_equal(a, b)
