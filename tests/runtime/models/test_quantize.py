"""Quantized frozen bases (`quantize = int8 | nf4`): the codes are QLoRA's NF4 and absmax int8
(against a hand computation from their definitions), a quantized model computes exactly the
model of its dequantized kernels (forward and the adapters' gradient), a checkpoint is
quantized tensor by tensor as it is read, and the train step trains over it, sharded as unsharded."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import qwix
from flax import nnx

from runtime.checkpoints.hf_checkpoint import load_pretrained
from runtime.models import ModelConfig, build, forward, lora
from runtime.models.quantize import is_quantized, nf4_block, quantize_kernel, quantize_model
from runtime.plan.run_plan import LoraPlan
from runtime.plan.settings import SCHEDULES, Length
from runtime.train.engine import EngineError, StepSettings, _abstract_model, load_weights, over_original_base
from runtime.train.throughput import DEFAULT_OPTIMIZER, StepBench

ROOT = Path(__file__).resolve().parents[3]
PLAN = LoraPlan(rank=4, alpha=8, dropout=0.0, targets=("q", "k", "v", "o"))
CONFIG = ModelConfig.llama(layers=2, dim=64, heads=4, kv_heads=2, ffn=96, vocab=128)
IDS = np.random.RandomState(3).randint(0, 128, size=(2, 11))

# QLoRA's NormalFloat-4 levels (Dettmers et al. 2023, appendix E): the definition the codes must meet
NF4_LEVELS = np.array(
    [
        -1.0,
        -0.6961928009986877,
        -0.5250730514526367,
        -0.39491748809814453,
        -0.28444138169288635,
        -0.18477343022823334,
        -0.09105003625154495,
        0.0,
        0.07958029955625534,
        0.16093020141124725,
        0.24611230194568634,
        0.33791524171829224,
        0.44070982933044434,
        0.5626170039176941,
        0.7229568362236023,
        1.0,
    ]
)


def _settings(quantize, dtype="float32", **changes):
    return StepSettings(
        steps=50,
        micro=2,
        accumulation=1,
        dtype=dtype,
        optimizer=dataclasses.replace(DEFAULT_OPTIMIZER, lr=1e-2),
        schedule=SCHEDULES["constant"](warmup=Length(steps=0)).decided(50),
        clip=1.0,
        mesh={"data": "auto"},
        quantize=quantize,
        **{"adapter": PLAN, **changes},
    )


def _dense(model):
    """The same model with every quantized kernel replaced by its dequantized values."""
    graphdef, state = nnx.split(model)
    return nnx.merge(
        graphdef, jax.tree.map(lambda v: qwix.dequantize(v) if is_quantized(v) else v, state, is_leaf=is_quantized)
    )


def test_nf4_codes_are_qlora_normal_float_per_64_inputs():
    w = np.random.default_rng(0).standard_normal((192, 40)).astype(np.float32) * 0.05  # [in, out]
    q = quantize_kernel(w, "nf4", jnp.float32)
    assert q.qvalue.dtype == jnp.uint4 and q.qvalue.shape == w.shape and q.scale.shape == (3, 40)
    blocks = w.T.reshape(40, 3, 64)  # per output channel, blocks of 64 consecutive inputs
    absmax = np.abs(blocks).max(-1, keepdims=True)
    codes = np.abs(blocks[..., None] / absmax[..., None] - NF4_LEVELS).argmin(-1)
    expected = (NF4_LEVELS[codes] * absmax).reshape(40, 192).T
    np.testing.assert_allclose(np.asarray(qwix.dequantize(q)), expected, rtol=1e-6, atol=1e-8)


def test_a_width_64_does_not_divide_gets_the_largest_block_below_64_that_divides_it():
    assert [nf4_block(n) for n in (64, 128, 576, 1536, 96, 688, 100, 97, 8)] == [64, 64, 64, 64, 48, 43, 50, 1, 8]
    w = np.random.default_rng(2).standard_normal((96, 40)).astype(np.float32) * 0.05  # [in, out]
    q = quantize_kernel(w, "nf4", jnp.float32)
    assert q.scale.shape == (2, 40)  # two blocks of 48 per output channel (not three of 32)
    blocks = w.T.reshape(40, 2, 48)
    absmax = np.abs(blocks).max(-1, keepdims=True)
    codes = np.abs(blocks[..., None] / absmax[..., None] - NF4_LEVELS).argmin(-1)
    expected = (NF4_LEVELS[codes] * absmax).reshape(40, 96).T
    np.testing.assert_allclose(np.asarray(qwix.dequantize(q)), expected, rtol=1e-6, atol=1e-8)


def test_the_memory_estimate_counts_the_bytes_the_quantizer_stores():
    """`sftc plan`'s estimate of a quantized base is the bytes of the codes and scales the
    quantizer makes, for a model whose `ffn` 64 does not divide (96: blocks of 48)."""
    from runtime.plan.settings import AdamW
    from runtime.preflight.plan_report import memory_estimate, parameter_count

    config = CONFIG  # dim 64, ffn 96: q k v o gate up take 64 inputs, down 96
    model = nnx.eval_shape(lambda: quantize_model(build(config, rngs=0, dtype="bfloat16"), "nf4"))
    kernels = [v.get_value() for _, v in nnx.to_flat_state(nnx.state(model)) if is_quantized(v.get_value())]
    codes = sum(int(np.prod(k.qvalue.shape)) for k in kernels)
    assert codes == parameter_count(config)["projections"]
    stored = codes * 0.5 + sum(int(np.prod(k.scale.shape)) * k.scale.dtype.itemsize for k in kernels)
    blocks = {(k.qvalue.shape[0], k.qvalue.shape[0] // k.scale.shape[0]) for k in kernels}
    assert blocks == {(64, 64), (96, 48)}  # (inputs, block) of each projection

    def params(quantize):
        return memory_estimate(
            config,
            trainable=0,
            total_params=parameter_count(config)["total"],
            dtype="bfloat16",
            optimizer=AdamW(lr=1e-3),
            micro_tokens=16,
            seq_len=16,
            remat="off",
            quantize=quantize,
        )["params"]

    largest = config.hidden_size * max(config.intermediate_size, config.num_heads * config.head_dim) * 2
    assert params("nf4") - params(None) == pytest.approx(stored - codes * 2 + largest, rel=1e-12)


def test_int8_is_absmax_per_output_channel():
    w = np.random.default_rng(1).standard_normal((48, 20)).astype(np.float32)
    q = quantize_kernel(w, "int8", jnp.bfloat16)
    assert q.qvalue.dtype == jnp.int8 and q.scale.shape == (1, 20) and q.scale.dtype == jnp.bfloat16
    # codes from the float32 scale (absmax / 127.5: the top code's bucket is [126.5, 127.5)); the
    # scale is then stored in bf16
    scale = np.abs(w).max(0) / 127.5
    codes, ratio = np.asarray(q.qvalue, np.int32), w / scale
    inner = np.abs(ratio) < 127  # at +-127.5 float rounding may pick either neighbour
    np.testing.assert_array_equal(codes[inner], np.round(ratio[inner]))
    assert (np.abs(codes - np.clip(np.round(ratio), -128, 127)) <= 1).all() and inner.mean() > 0.9
    np.testing.assert_allclose(np.asarray(q.scale, np.float32)[0], scale, rtol=2**-8)
    error = np.abs(np.asarray(qwix.dequantize(q), np.float32) - w)
    assert (error <= 0.5 * scale + 2**-7 * np.abs(w)).all()  # half a step, plus bf16 rounding


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["int8", "nf4"])
def test_a_quantized_model_computes_its_dequantized_model(kind):
    """Forward and the adapters' gradient over the quantized base equal those over a dense base
    holding the dequantized values: the dequantize-per-layer path changes nothing else."""
    model = lora.add_lora(build(CONFIG, rngs=0), PLAN, rngs=1)
    for _, layer in lora.lora_layers(model):
        layer.lora_b.set_value(0.1 * jnp.ones_like(layer.lora_b.get_value()))
    quantize_model(model, kind)
    kernels = [v for _, v in nnx.to_flat_state(nnx.state(model)) if is_quantized(v.get_value())]
    assert len(kernels) == CONFIG.num_layers * 7  # every block projection, nothing else
    assert not is_quantized(model.embed.embedding.get_value()) and not is_quantized(model.lm_head.kernel.get_value())
    dense = _dense(model)
    np.testing.assert_allclose(np.asarray(forward(model, IDS)), np.asarray(forward(dense, IDS)), atol=2e-5)

    def loss(params, graphdef, rest):
        return jnp.mean(nnx.merge(graphdef, params, rest)(IDS) ** 2)

    grads = [jax.grad(loss)(*(lambda g, p, r: (p, g, r))(*nnx.split(m, nnx.LoRAParam, ...))) for m in (model, dense)]
    for a, b in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-7)


def test_a_checkpoint_is_quantized_as_it_is_read_and_exports_over_the_original(hf_checkpoint):
    directory, _ = hf_checkpoint("llama")
    _, config = load_pretrained(directory)
    settings = _settings("nf4", dtype="bfloat16")
    params, frozen = load_weights(settings, config, directory)
    q = frozen["layers"][0]["attn"]["q"]["kernel"]
    assert is_quantized(q) and q.qvalue.dtype == jnp.uint4 and q.scale.dtype == jnp.bfloat16
    assert frozen["embed"]["embedding"].dtype == jnp.bfloat16
    # read tensor by tensor = quantizing a whole bf16 load afterwards, code for code
    whole, _ = load_pretrained(directory, dtype="bfloat16")
    quantize_model(whole, "nf4")
    again = whole.layers[0].attn.q.kernel.get_value()
    assert jnp.array_equal(again.qvalue, q.qvalue) and jnp.array_equal(again.scale, q.scale)
    # the engine's abstract model has the same structure as what was loaded
    graphdef, abstract_params, abstract_frozen = _abstract_model(settings, config)
    assert jax.tree.structure(nnx.to_pure_dict(abstract_frozen)) == jax.tree.structure(frozen)
    model = nnx.merge(graphdef, params, frozen)
    with pytest.raises(ValueError, match="quantized"):
        lora.merge_lora(model)
    # the export's model: these adapters over the unquantized bf16 base
    original = over_original_base(model, settings, config, directory)
    plain_params, plain_frozen = load_weights(dataclasses.replace(settings, quantize=None), config, directory)
    expected = nnx.merge(_abstract_model(dataclasses.replace(settings, quantize=None), config)[0], params, plain_frozen)
    np.testing.assert_array_equal(np.asarray(forward(original, IDS)), np.asarray(forward(expected, IDS)))
    assert not lora.has_lora(lora.merge_lora(original)) and lora.has_lora(original)


def test_quantize_needs_an_adapter():
    with pytest.raises(EngineError, match="needs a LoRA adapter"):
        load_weights(_settings("int8", adapter=None), CONFIG, None)


@pytest.mark.parametrize("kind", [pytest.param("int8", marks=pytest.mark.slow), "nf4"])
def test_the_train_step_trains_over_a_quantized_base(kind):
    bench = StepBench(CONFIG, _settings(kind, dtype="bfloat16"), seq_len=32)
    first = bench.run(1) and bench.loss
    bench.run(15)
    assert np.isfinite(bench.loss) and bench.loss < first - 0.2, (first, bench.loss)
    assert all(is_quantized(bench.frozen["layers"][i]["mlp"]["down"]["kernel"]) for i in range(2))


@pytest.mark.slow
def test_sharded_quantized_step_equals_unsharded(tmp_path):
    """fsdp = 2 over a 4-bit base whose scales do not split evenly: the losses of one device."""
    script = textwrap.dedent(f"""
        import dataclasses, json, sys
        sys.path.insert(0, {str(ROOT)!r})
        import jax
        from runtime.train.throughput import StepBench
        from tests.runtime.models.test_quantize import CONFIG, _settings
        out = {{}}
        meshes = (("one", {{"data": 1}}, jax.devices()[:1]), ("fsdp", {{"data": 1, "fsdp": 2}}, jax.devices()[:2]))
        for name, mesh, devices in meshes:
            b = StepBench(CONFIG, dataclasses.replace(_settings("nf4"), mesh=mesh), seq_len=32, devices=devices)
            out[name] = [float(b.run(1) and b.loss) for _ in range(4)]
        print(json.dumps(out))
    """)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    import json

    losses = json.loads(result.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(losses["fsdp"], losses["one"], rtol=1e-5)
