"""Which attention kernel runs where, and the fused kernels against the einsum reference.

`attention_impl = "auto"` picks cuDNN flash attention on a GPU and the Pallas splash kernel on
a TPU where they serve the shapes; the CPU keeps the einsum path. The splash kernel runs here in
Pallas' interpret mode, so its numbers (forward and gradients, packed segments, padding, grouped
KV heads) are proven on this machine; cuDNN needs a GPU and is not run here.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from runtime.checkpoints.hf_checkpoint import load_pretrained
from runtime.models import forward
from runtime.models.attention import _attend_einsum, attend_splash, make_mask, resolve


@pytest.mark.parametrize(
    "backend, dtype, head_dim, queries, keys, window, expected",
    [
        ("cpu", jnp.bfloat16, 64, 512, 512, None, "xla"),
        ("gpu", jnp.bfloat16, 64, 512, 512, None, "cudnn"),
        ("gpu", jnp.float16, 128, 300, 300, 4096, "cudnn"),
        ("gpu", jnp.float32, 64, 512, 512, None, "xla"),  # cuDNN's kernel is half precision only
        ("gpu", jnp.bfloat16, 256, 512, 512, None, "xla"),  # head_dim beyond what every GPU serves
        ("gpu", jnp.bfloat16, 64, 1, 600, None, "xla"),  # cached decoding
        ("tpu", jnp.bfloat16, 64, 512, 512, None, "splash"),
        ("tpu", jnp.float32, 128, 256, 256, None, "splash"),
        ("tpu", jnp.bfloat16, 64, 200, 200, None, "xla"),  # not a multiple of the kernel's blocks
        ("tpu", jnp.bfloat16, 64, 512, 512, 128, "xla"),  # sliding window: the einsum path masks it
    ],
)
def test_auto_picks_the_fused_kernel_only_where_it_serves(backend, dtype, head_dim, queries, keys, window, expected):
    assert resolve("auto", backend, dtype, head_dim, queries, keys, window) == expected
    assert resolve("xla", backend, dtype, head_dim, queries, keys, window) == "xla"  # a chosen one stays


def _packed(seed=0, t=256):
    rng = np.random.RandomState(seed)
    q = jnp.asarray(rng.randn(2, t, 4, 32), jnp.float32)
    k = jnp.asarray(rng.randn(2, t, 2, 32), jnp.float32)
    v = jnp.asarray(rng.randn(2, t, 2, 32), jnp.float32)
    seg = np.zeros((2, t), np.int32)
    seg[0, :90], seg[0, 90:200], seg[0, 200:] = 1, 2, 0  # two examples, then padding
    seg[1, :] = np.repeat([1, 2, 3, 4], t // 4)
    return q, k, v, jnp.asarray(seg)


@pytest.mark.slow
def test_splash_kernel_equals_einsum_attention_forward_and_backward():
    q, k, v, seg = _packed()
    idx = jnp.arange(q.shape[1])
    mask = make_mask(seg, seg, idx, idx)
    real = np.asarray(seg) > 0
    want = np.asarray(_attend_einsum(q, k, v, mask))
    got = np.asarray(jax.jit(lambda q, k, v, s: attend_splash(q, k, v, s, interpret=True))(q, k, v, seg))
    np.testing.assert_allclose(got[real], want[real], atol=2e-5)

    weights = jnp.asarray(np.random.RandomState(1).randn(*q.shape), jnp.float32) * jnp.asarray(real)[:, :, None, None]

    def loss(fn):
        return lambda q, k, v: (fn(q, k, v) * weights).sum()

    want_grads = jax.grad(loss(lambda q, k, v: _attend_einsum(q, k, v, mask)), argnums=(0, 1, 2))(q, k, v)
    got_grads = jax.jit(jax.grad(loss(lambda q, k, v: attend_splash(q, k, v, seg, interpret=True)), argnums=(0, 1, 2)))(
        q, k, v
    )
    for name, a, b in zip("qkv", got_grads, want_grads):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=5e-5, err_msg=f"d{name}")


def test_a_model_with_the_splash_kernel_gives_the_einsum_logits(hf_checkpoint):
    directory, _ = hf_checkpoint("llama")
    einsum, _ = load_pretrained(directory, attention_impl="xla")
    splash, config = load_pretrained(directory, attention_impl="splash")
    assert config.attention_impl == "splash"
    ids = np.random.RandomState(2).randint(3, 200, size=(2, 128))
    seg = np.ones((2, 128), np.int32)
    seg[0, 60:] = 2
    seg[1, 100:] = 0
    a, b = np.asarray(forward(einsum, ids, segment_ids=seg)), np.asarray(forward(splash, ids, segment_ids=seg))
    real = seg > 0
    np.testing.assert_allclose(b[real], a[real], atol=1e-4)


def test_layers_of_different_windows_run_under_remat(hf_checkpoint):
    """qwen2 with sliding windows on some layers only: two masks, which remat must carry."""
    directory, _ = hf_checkpoint("qwen2")
    plain, config = load_pretrained(directory)
    assert len({config.layer_window(i) for i in range(config.num_layers)}) == 2
    rematerialized, _ = load_pretrained(directory, remat="full")
    ids = np.random.RandomState(3).randint(3, 200, size=(2, 12))
    np.testing.assert_allclose(np.asarray(forward(rematerialized, ids)), np.asarray(forward(plain, ids)), atol=1e-5)


def test_auto_falls_back_to_einsum_with_a_warning_when_the_kernel_refuses(monkeypatch, caplog):
    from runtime.models import attention

    def refuse(*args, **kwargs):
        raise ValueError("head_dim 48 is not supported")

    real_resolve = attention.resolve
    monkeypatch.setattr(attention, "resolve", lambda impl, *a: "splash" if impl == "auto" else real_resolve(impl, *a))
    monkeypatch.setattr(attention, "attend_splash", refuse)
    q, k, v, seg = _packed(t=128)
    idx = jnp.arange(128)
    mask = make_mask(seg, seg, idx, idx)
    with caplog.at_level("WARNING", logger="sftc"):
        got = attention.attend(q, k, v, mask, "auto", segments=seg)
    np.testing.assert_allclose(np.asarray(got), np.asarray(_attend_einsum(q, k, v, mask)), atol=1e-5)
    assert "splash kernel refused these shapes (head_dim 48 is not supported)" in caplog.text
