"""`sftc bench`: time the real train step on synthetic tokens of a spec's shapes.

`bench_step` builds the model, the optimizer and schedule exactly as a run does
(`runtime.train.optim`, `runtime.train.schedule`), compiles the jitted step with
`runtime.train.step.compile_step` on the requested mesh, runs warm-up steps and
then times ``steps`` more. The batch is synthetic and sits on the device for the
whole benchmark: full rows (one packed example per row, positions 0..L-1), every
token trained, so the numbers are the step's own, not the data pipeline's.

FLOPs per step (the model FLOPs behind MFU, the convention of PaLM / MaxText)::

    flops_per_step = tokens * (6 * matmul_params + 6 * layers * seq_len * heads * head_dim)

* ``matmul_params``: every parameter that takes part in a matmul, i.e. all
  parameters except the input embedding table (a gather, no FLOPs) and the norm
  scales; a tied embedding counts once, as the output head.
* ``6 * matmul_params``: 2 FLOPs per multiply-add in the forward pass, twice that
  in the backward pass (gradients of activations and of weights).
* attention: scores ``Q K^T`` and ``P V`` cost ``2 * 2 * seq_len * heads * head_dim``
  per token and layer forward, halved for causal masking (only the lower triangle
  is needed), times 3 for forward + backward.

Rematerialisation recomputes activations but is not counted (model FLOPs, not
hardware FLOPs). ``mfu = flops_per_step / step_seconds / peak`` where ``peak``
is the device's dense peak for the compute dtype from `PEAK_FLOPS` (bfloat16
tensor-core peak; float32 uses the TF32 peak on NVIDIA GPUs, which is what XLA's
default matmul precision runs there). On CPUs and unknown devices ``mfu`` is None.

Peak memory: the device allocator's ``peak_bytes_in_use`` summed over the mesh's
devices where the backend reports memory stats (GPU, TPU); otherwise (CPU) the
process's peak resident set size from ``resource.getrusage``, which includes the
Python interpreter and the compiler.

Host memory on CPU: importing this module calls
`runtime.allocator.reuse_freed_memory` (glibc keeps freed blocks for reuse, so a
step's temporary buffer does not page-fault anew each step); the result says
whether it is on (``allocator``) and counts ``page_faults_per_step``.

Example::

    >>> cfg = ModelConfig.llama(layers=4, dim=256, heads=8, kv_heads=4, ffn=688, vocab=8192)
    >>> result = bench_step(cfg, batch=8, micro=8, seq_len=256, steps=10)
    >>> print(format_bench(result))
"""

from __future__ import annotations

import math
import os
import platform
import resource
import sys
import time
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from . import allocator, mesh as meshlib
from .models import ModelConfig, build
from .plan import OptimizerPlan
from .train import optim, schedule as schedulelib, step as steplib

allocator.reuse_freed_memory()  # before JAX's CPU threads first allocate (see runtime.allocator)

__all__ = ["PEAK_FLOPS", "DEFAULT_OPTIMIZER", "StepBench", "bench_step", "flops_per_token", "peak_flops", "format_bench"]

DEFAULT_OPTIMIZER = OptimizerPlan("adamw", 1e-4, {"b1": 0.9, "b2": 0.999, "eps": 1e-8, "weight_decay": 0.01})

# Dense peak FLOP/s per JAX device, by a substring of `device.device_kind`
# (first match wins, so more specific names come first). "float32" on NVIDIA is
# the TF32 tensor-core peak; GPUs without bfloat16 list their float16 peak.
PEAK_FLOPS: tuple[tuple[str, Mapping[str, float]], ...] = (
    ("H100 PCIe", {"bfloat16": 756e12, "float32": 378e12}),
    ("H100 NVL", {"bfloat16": 835e12, "float32": 418e12}),
    ("H100", {"bfloat16": 989e12, "float32": 495e12}),  # SXM ("NVIDIA H100 80GB HBM3")
    ("H200", {"bfloat16": 989e12, "float32": 495e12}),
    ("GH200", {"bfloat16": 989e12, "float32": 495e12}),
    ("B200", {"bfloat16": 2250e12, "float32": 1100e12}),
    ("A100", {"bfloat16": 312e12, "float32": 156e12}),
    ("A10G", {"bfloat16": 70e12, "float32": 35e12}),
    ("L40S", {"bfloat16": 362e12, "float32": 183e12}),
    ("L4", {"bfloat16": 121e12, "float32": 60e12}),
    ("V100", {"bfloat16": 125e12, "float32": 15.7e12}),
    ("T4", {"bfloat16": 65e12, "float32": 8.1e12}),
    ("TPU v6 lite", {"bfloat16": 918e12, "float32": 918e12}),  # Trillium (v6e)
    ("TPU v5 lite", {"bfloat16": 197e12, "float32": 197e12}),  # v5e
    ("TPU v5p", {"bfloat16": 459e12, "float32": 459e12}),
    ("TPU v5", {"bfloat16": 459e12, "float32": 459e12}),  # v5p reports "TPU v5"
    ("TPU v4", {"bfloat16": 275e12, "float32": 275e12}),
    ("TPU v3", {"bfloat16": 61.5e12, "float32": 61.5e12}),  # one device per core
    ("TPU v2", {"bfloat16": 22.5e12, "float32": 22.5e12}),
)


def peak_flops(device_kind: str, dtype: str) -> float | None:
    """Dense peak FLOP/s of one device of this kind for ``dtype``; None when unknown (CPUs)."""
    for name, peaks in PEAK_FLOPS:
        if name.lower() in device_kind.lower():
            return peaks.get(dtype, peaks["bfloat16"])
    return None


def matmul_params(config: ModelConfig, params: int) -> int:
    """Parameters that take part in a matmul: all but the input embedding and the norm scales."""
    c = config
    norms = (2 * c.num_layers + 1) * c.hidden_size + (2 * c.num_layers * c.head_dim if c.qk_norm else 0)
    embedding = 0 if c.tie_embeddings else c.vocab_size * c.hidden_size
    return params - norms - embedding


def flops_per_token(config: ModelConfig, params: int, seq_len: int) -> float:
    """Model FLOPs of forward + backward per trained token (see the module docstring)."""
    c = config
    attention = 6 * c.num_layers * seq_len * c.num_heads * c.head_dim
    return 6.0 * matmul_params(config, params) + attention


def synthetic_batch(config: ModelConfig, accumulation: int, micro: int, seq_len: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Full rows of random tokens ``[accumulation, micro, seq_len]``, every token trained."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, config.vocab_size, (accumulation, micro, seq_len + 1)).astype(np.int32)
    shape = (accumulation, micro, seq_len)
    return {
        "input_ids": ids[..., :-1],
        "targets": ids[..., 1:],
        "loss_mask": np.ones(shape, np.float32),
        "positions": np.broadcast_to(np.arange(seq_len, dtype=np.int32), shape).copy(),
        "segment_ids": np.ones(shape, np.int32),
    }


def _peak_memory(devices) -> tuple[int, str]:
    total, reported = 0, False
    for device in devices:
        try:
            stats = device.memory_stats()
        except Exception:  # noqa: BLE001 - backends without stats raise or return None
            stats = None
        if stats and "peak_bytes_in_use" in stats:
            total += int(stats["peak_bytes_in_use"])
            reported = True
    if reported:
        return total, "device"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024), "process_rss"


class StepBench:
    """The compiled train step of one shape, its state and a synthetic batch, ready to time.

    `bench_step` is the one-call form; `bench/` uses this class directly to time
    rounds interleaved with a peer. Arguments as in `bench_step`.
    """

    def __init__(self, config: ModelConfig, batch: int, micro: int | None = None, seq_len: int = 256,
                 dtype: str = "float32", optimizer: OptimizerPlan | None = None,
                 mesh: Mapping[str, int | str] | None = None, *, clip: float | None = 1.0,
                 schedule: str = "cosine", total_steps: int = 1000, seed: int = 0, devices=None):
        micro = batch if micro is None else micro
        if micro < 1 or batch % micro:
            raise ValueError(f"batch {batch} is not a whole number of micro-batches of {micro}")
        allocator.reuse_freed_memory()
        if dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be float32 or bfloat16, not {dtype!r}")
        self.devices = list(devices) if devices is not None else jax.devices()
        self.mesh_shape = meshlib.mesh_shape(mesh or {"data": "auto"}, len(self.devices))
        mesh_ = meshlib.make_mesh(self.mesh_shape, self.devices)
        parallel = self.mesh_shape["data"] * self.mesh_shape["fsdp"]
        if micro % parallel:
            raise ValueError(f"micro {micro} does not split over {parallel} data-parallel devices (data x fsdp)")
        self.config, self.batch, self.micro, self.seq_len, self.dtype = config, batch, micro, seq_len, dtype
        compute = jnp.bfloat16 if dtype == "bfloat16" else jnp.float32
        optimizer = optimizer or DEFAULT_OPTIMIZER

        lr = schedulelib.learning_rate(schedule, optimizer.lr, 0.0, max(total_steps, 2), 1)
        tx = optim.optimizer(optimizer, lr, clip)
        model = build(config, rngs=seed, dtype=compute, param_dtype=jnp.float32)
        graphdef, params, frozen = nnx.split(model, nnx.Param, ...)
        param_shardings = meshlib.state_shardings(params, mesh_)
        params, frozen = params.to_pure_dict(), frozen.to_pure_dict()
        self.params = int(sum(np.prod(p.shape) for p in jax.tree.leaves(params)))
        abstract = jax.eval_shape(lambda p: steplib.TrainState(jnp.zeros((), jnp.int32), p, tx.init(p)), params)
        shardings = steplib.state_shardings(abstract, param_shardings, mesh_)
        frozen_shardings = jax.tree.map(lambda _: meshlib.replicated(mesh_), frozen)
        self.frozen = jax.device_put(frozen, frozen_shardings)
        self.state = steplib.init_state(params, tx, shardings)
        del model, params
        data = synthetic_batch(config, batch // micro, micro, seq_len, seed)
        self.data = jax.device_put(data, meshlib.batch_sharding(mesh_))
        step_fn = steplib.compile_step(graphdef, tx, lr, compute, shardings, frozen_shardings, mesh_)
        started = time.perf_counter()
        self.compiled = step_fn.lower(self.state, self.frozen, self.data).compile()  # called as runtime.train.loop does
        self.compile_s = time.perf_counter() - started
        self.loss = float("nan")
        self.faults_per_step = 0.0

    def run(self, steps: int) -> list[float]:
        """Run `steps` steps, each waited for; their wall times in seconds."""
        times = []
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(steps):
            started = time.perf_counter()
            self.state, metrics = self.compiled(self.state, self.frozen, self.data)
            jax.block_until_ready((self.state, metrics))
            times.append(time.perf_counter() - started)
        self.faults_per_step = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / max(steps, 1)
        if steps:
            self.loss = float(metrics["loss"])
            if not math.isfinite(self.loss):
                raise FloatingPointError(f"the benchmark's loss is not finite ({self.loss})")
        return times

    def result(self, times: list[float], warmup: int = 0) -> dict[str, Any]:
        """The `bench_step` dict for these step times."""
        step_s = sum(times) / len(times)
        tokens = self.batch * self.seq_len
        flops = tokens * flops_per_token(self.config, self.params, self.seq_len)
        kind = self.devices[0].device_kind
        peak = peak_flops(kind, self.dtype)
        peak_mem, mem_source = _peak_memory(self.devices)
        return {
            "tokens_per_s": tokens / step_s,
            "step_ms": step_s * 1e3,
            "step_ms_min": min(times) * 1e3,
            "compile_s": self.compile_s,
            "params": self.params,
            "flops_per_step": flops,
            "mfu": None if peak is None else flops / step_s / (peak * len(self.devices)),
            "peak_mem_bytes": peak_mem,
            "peak_mem_source": mem_source,
            "page_faults_per_step": self.faults_per_step,
            "allocator": allocator.status(),
            "loss": self.loss,
            "batch": self.batch,
            "micro": self.micro,
            "seq_len": self.seq_len,
            "steps": len(times),
            "warmup": warmup,
            "dtype": self.dtype,
            "mesh": dict(self.mesh_shape),
            "device_kind": kind,
            "devices": len(self.devices),
            "platform": self.devices[0].platform,
            "cpu_count": os.cpu_count(),
            "jax": jax.__version__,
            "python": platform.python_version(),
        }


def bench_step(
    config: ModelConfig,
    batch: int,
    micro: int | None = None,
    seq_len: int = 256,
    steps: int = 10,
    dtype: str = "float32",
    optimizer: OptimizerPlan | None = None,
    mesh: Mapping[str, int | str] | None = None,
    *,
    warmup: int = 4,
    clip: float | None = 1.0,
    schedule: str = "cosine",
    seed: int = 0,
    devices=None,
) -> dict[str, Any]:
    """Compile and time the real train step; returns a JSON-serialisable dict.

    ``batch``: rows per optimizer step (the global batch); ``micro``: rows per
    micro-batch (default ``batch``; ``batch // micro`` micro-batches are
    accumulated inside the step); ``dtype``: compute dtype (``float32`` or
    ``bfloat16``; parameters and optimizer state stay float32, as in a run);
    ``warmup``: untimed steps first (compilation is separate; the default 4 also
    lets the CPU heap settle: with `runtime.allocator` the second to fourth step
    may still grow it, measured ~100k page faults each, then none);
    ``optimizer``: an `OptimizerPlan` (default AdamW); ``mesh``: sizes of
    ``data``/``fsdp``/``tensor`` (one may be ``"auto"``; default: every device
    on ``data``); ``clip``/``schedule``: as a run's (they cost a little time).

    Keys: ``tokens_per_s`` and ``step_ms`` (mean over the timed steps),
    ``step_ms_min``, ``compile_s`` (XLA compilation of the lowered step),
    ``params`` (all parameters), ``flops_per_step``, ``mfu`` (None where the
    device's peak is unknown), ``peak_mem_bytes`` and ``peak_mem_source``
    (``device`` or ``process_rss``), ``loss``, plus the shapes, the device and
    the versions, so a result stands on its own.
    """
    if steps < 1:
        raise ValueError("steps must be at least 1")
    bench = StepBench(config, batch, micro, seq_len, dtype, optimizer, mesh, clip=clip, schedule=schedule,
                      total_steps=warmup + steps, seed=seed, devices=devices)
    bench.run(warmup)
    return bench.result(bench.run(steps), warmup)


def _si(value: float, unit: str) -> str:
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.2f} {prefix}{unit}"
    return f"{value:.0f} {unit}"


def format_bench(result: Mapping[str, Any]) -> str:
    """The human form of a `bench_step` result (aligned ``name  value`` lines)."""
    r = result
    mesh = " x ".join(f"{axis} {size}" for axis, size in r["mesh"].items())
    accumulation = r["batch"] // r["micro"]
    batch = f"{r['batch']} x {r['seq_len']} tokens"
    if accumulation > 1:
        batch += f" ({accumulation} micro-batches of {r['micro']})"
    mem_note = "device peak" if r["peak_mem_source"] == "device" else "process peak RSS"
    mfu = "n/a (peak FLOP/s of this device unknown)" if r["mfu"] is None else f"{100 * r['mfu']:.1f} %"
    rows = [
        ("device", f"{r['devices']} x {r['device_kind']} ({r['platform']}), mesh {mesh}"),
        ("batch", f"{batch}, {r['dtype']}"),
        ("parameters", f"{r['params']:,}"),
        ("compile", f"{r['compile_s']:.1f} s"),
        ("step", f"{r['step_ms']:.1f} ms (best {r['step_ms_min']:.1f} ms, {r['steps']} timed after {r['warmup']} warm-up)"),
        ("tokens/s", f"{r['tokens_per_s']:,.0f}"),
        ("FLOPs/step", _si(r["flops_per_step"], "FLOP")),
        ("achieved", _si(r["flops_per_step"] * 1e3 / r["step_ms"], "FLOP/s")),
        ("MFU", mfu),
        ("peak memory", f"{r['peak_mem_bytes'] / 2**20:,.0f} MiB ({mem_note})"),
        ("host memory", f"{r['page_faults_per_step']:,.0f} page faults/step, malloc {r['allocator']}"),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
