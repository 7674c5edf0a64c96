"""`sftc bench` (runtime.train.throughput) and the exactness of the step's fast paths."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from runtime.models import ModelConfig
from runtime.plan.settings import Sgd
from runtime.train import throughput as bench
from runtime.train.cross_entropy import cross_entropy

pytestmark = pytest.mark.slow  # the bench and the chunked loss over several shapes: about 45 s on 2 cores

ROOT = Path(__file__).resolve().parents[3]
TINY = ModelConfig.llama(layers=1, dim=32, heads=4, kv_heads=2, ffn=64, vocab=64)


@pytest.fixture(scope="module")
def result():
    return bench.bench_step(TINY, batch=4, micro=2, seq_len=16, steps=2, warmup=1)


def test_bench_reports_the_documented_keys(result):
    for key in ("tokens_per_s", "step_ms", "compile_s", "params", "mfu", "peak_mem_bytes", "flops_per_step"):
        assert key in result
    assert result["tokens_per_s"] > 0 and result["step_ms"] > 0 and result["compile_s"] > 0
    assert result["tokens_per_s"] == pytest.approx(4 * 16 / (result["step_ms"] / 1e3))
    assert result["mfu"] is None  # a CPU's peak is unknown
    assert result["peak_mem_bytes"] > 0 and result["peak_mem_source"] == "process_rss"
    assert np.isfinite(result["loss"]) and result["micro"] == 2 and result["steps"] == 2
    json.dumps(result)  # --json prints it as is


def test_params_and_flops_follow_the_documented_formula(result):
    c = TINY
    kernels = c.num_layers * (2 * 32 * 32 + 2 * 32 * 16 + 3 * 32 * 64) + 32 * 64  # q,o + k,v + mlp; head
    norms = (2 * c.num_layers + 1) * 32
    assert result["params"] == kernels + norms + 64 * 32  # + the input embedding
    attention = 6 * c.num_layers * 16 * c.num_heads * c.head_dim
    assert result["flops_per_step"] == 4 * 16 * (6 * kernels + attention)


def test_peak_flops_table():
    assert bench.peak_flops("NVIDIA H100 80GB HBM3", "bfloat16") == 989e12
    assert bench.peak_flops("NVIDIA H100 PCIe", "bfloat16") == 756e12
    assert bench.peak_flops("NVIDIA A100-SXM4-80GB", "float32") == 156e12
    assert bench.peak_flops("TPU v5 lite", "bfloat16") == 197e12
    assert bench.peak_flops("cpu", "float32") is None


def test_format_bench_is_human(result):
    text = bench.format_bench({**result, "mfu": 0.4123})
    assert "tokens/s" in text and "41.2 %" in text and "MiB (process peak RSS)" in text
    assert "2 micro-batches of 2" in text
    assert "n/a" in bench.format_bench(result)


def test_bench_rejects_bad_shapes():
    with pytest.raises(ValueError, match="micro-batches"):
        bench.bench_step(TINY, batch=4, micro=3, seq_len=8, steps=1)
    with pytest.raises(ValueError, match="dtype"):
        bench.bench_step(TINY, batch=4, seq_len=8, steps=1, dtype="float16")


def test_other_optimizers_bench():
    sgd = Sgd(lr=0.1, momentum=0.9)
    out = bench.bench_step(TINY, batch=2, seq_len=8, steps=1, warmup=0, optimizer=sgd, clip=None)
    assert out["tokens_per_s"] > 0


def test_bfloat16_bench():
    out = bench.bench_step(TINY, batch=2, seq_len=8, steps=1, warmup=0, dtype="bfloat16")
    assert out["dtype"] == "bfloat16" and np.isfinite(out["loss"])


@pytest.mark.slow
def test_bench_on_a_data_parallel_mesh():
    code = (
        "import json; from runtime.train import throughput as bench; from runtime.models import ModelConfig\n"
        "cfg = ModelConfig.llama(layers=1, dim=32, heads=4, kv_heads=2, ffn=64, vocab=8192)\n"
        "b = bench.StepBench.for_shape(cfg, batch=4, seq_len=256, mesh={'data': 2, 'fsdp': 1, 'tensor': 1})\n"
        "b.run(1)\n"
        "print(json.dumps(b.result(b.run(1))))"
    )
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["devices"] == 2 and out["mesh"] == {"data": 2, "fsdp": 1, "tensor": 1}
    # 32 MB of logits per device: glibc's own settings return them to the OS and fault them in again
    # every step; the bench's process keeps freed memory for reuse (how many faults that saves is a
    # measurement, reported as `page_faults_per_step`, not a test)
    assert out["allocator"] == "reuse" and "page_faults_per_step" in out


# ------------------------------------------------ the fast cross-entropy is the plain one


def _plain(logits, targets):
    target = jnp.take_along_axis(logits, targets[:, None], axis=-1)[:, 0]
    return jax.nn.logsumexp(logits, axis=-1) - target, jnp.argmax(logits, axis=-1) == targets


def test_cross_entropy_equals_the_plain_expressions_and_their_gradient():
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(40, 33)) * 3, jnp.float32)
    targets = jnp.asarray(rng.integers(0, 33, 40), jnp.int32)
    weights = jnp.asarray(rng.random(40), jnp.float32)
    losses, correct = jax.jit(cross_entropy)(logits, targets)
    ref_losses, ref_correct = _plain(logits, targets)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(correct, ref_correct)
    grad = jax.jit(jax.grad(lambda x: jnp.sum(cross_entropy(x, targets)[0] * weights)))(logits)
    ref_grad = jax.grad(lambda x: jnp.sum(_plain(x, targets)[0] * weights))(logits)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-5, atol=1e-7)


def test_cross_entropy_accuracy_breaks_ties_like_argmax():
    logits = jnp.array([[1.0, 3.0, 3.0, 0.0]] * 4 + [[2.0, 2.0, 2.0, 2.0]] * 2)
    targets = jnp.array([1, 2, 0, 3, 0, 3])  # first maximum, a later tied maximum, smaller, smaller; all tied
    _, correct = cross_entropy(logits, targets)
    np.testing.assert_array_equal(correct, jnp.argmax(logits, -1) == targets)
    assert correct.tolist() == [True, False, False, False, True, False]


@pytest.mark.parametrize(
    "tied, head_trains, dtype",
    [(True, True, "float32"), (False, True, "float32"), (True, False, "float32"), (False, False, "bfloat16")],
)
def test_chunked_cross_entropy_is_the_plain_loss_of_the_logits_and_its_gradient(tied, head_trains, dtype):
    """Slicing the positions and computing each slice's gradient in the forward pass changes
    nothing: the same sums and the same gradients for the hidden states and the head."""
    from runtime.train.cross_entropy import chunked_cross_entropy, logit_chunks

    rng = np.random.default_rng(1)
    rows, length, dim, vocab = 3, 12, 16, 40
    compute = jnp.dtype(dtype)
    x = jnp.asarray(rng.normal(size=(rows * length, dim)), compute)
    weight = jnp.asarray(rng.normal(size=(vocab, dim) if tied else (dim, vocab)), compute)
    targets = jnp.asarray(rng.integers(0, vocab, (rows, length)), jnp.int32)
    mask = jnp.asarray(rng.random((rows, length)) < 0.7, jnp.int32)

    def logits_of(h, w):
        return (h @ (w.T if tied else w)).astype(jnp.float32)

    def plain(h, w):
        losses, correct = _plain(logits_of(h, w), targets.reshape(-1))
        m = mask.reshape(-1).astype(jnp.float32)
        return jnp.sum(losses * m), jnp.sum(correct * m)

    for chunks in (1, 3, 12):

        def chunked(h, w, chunks=chunks):
            return chunked_cross_entropy(logits_of, h, w, targets, mask, chunks, head_trains)

        (loss, right), (ref_loss, ref_right) = jax.jit(chunked)(x, weight), plain(x, weight)
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-5 if dtype == "float32" else 1e-3)
        assert abs(float(right) - float(ref_right)) <= (0 if dtype == "float32" else 1)  # a bf16 near-tie
        argnums = (0, 1) if head_trains else 0
        grads = jax.jit(jax.grad(lambda h, w: chunked(h, w)[0], argnums=argnums))(x, weight)
        ref = jax.grad(lambda h, w: plain(h, w)[0], argnums=argnums)(x, weight)
        for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(ref)):
            assert a.dtype == b.dtype
            a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
            if dtype == "float32":
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
            else:  # bf16 logits round differently per slice: within 1 % of the gradient's scale
                assert np.abs(a - b).max() <= 0.01 * np.abs(b).max()
    # slices keep one slice's float32 logits under the budget, in whole positions
    assert logit_chunks(8, 256, 8192) == 1 and logit_chunks(8, 256, 49152) == 8 and logit_chunks(1, 7, 10**9) == 7


# ------------------------------------------------ the hand-written attention gradient is autodiff's


@pytest.mark.parametrize("window", [None, 7])
def test_blocked_attention_gradient_equals_autodiff(window):
    from runtime.models.attention import _attend_blocked, _attend_einsum, make_mask

    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.normal(size=(2, 150, heads, 8)), jnp.float32) for heads in (6, 2, 2))
    weights = jnp.asarray(rng.normal(size=(2, 150, 6, 8)), jnp.float32)
    seg = jnp.asarray(np.repeat([[1, 2, 3, 0], [1, 1, 2, 2]], [60, 50, 30, 10], axis=1))  # packed, then padding
    idx = jnp.arange(150)
    mask = make_mask(seg, seg, idx, idx, idx[None].repeat(2, 0), idx[None].repeat(2, 0), window)

    def loss(f):
        return lambda q, k, v: jnp.sum(f(q, k, v) * weights)

    blocked = jax.jit(jax.value_and_grad(loss(lambda *a: _attend_blocked(*a, mask, 64)), argnums=(0, 1, 2)))
    plain = jax.jit(jax.value_and_grad(loss(lambda *a: _attend_einsum(*a, mask)), argnums=(0, 1, 2)))
    (value, grads), (ref_value, ref_grads) = blocked(q, k, v), plain(q, k, v)
    np.testing.assert_allclose(value, ref_value, rtol=1e-5)
    for got, want in zip(grads, ref_grads):
        np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-5)
