"""`sftc bench`: time the real train step on synthetic tokens of a spec's shapes.

`bench_step` builds the model, the optimizer and schedule exactly as a run does
(`runtime.train.optim`, `runtime.train.schedule`), compiles the jitted step with
`runtime.train.step.compile_step` on the requested mesh, runs warm-up steps and
then times ``steps`` more. The batch is synthetic and sits on the device for the
whole benchmark: full rows (one packed example per row, positions 0..L-1), every
token trained, so the numbers are the step's own, not the data pipeline's.

FLOPs per step (the model FLOPs behind MFU, the convention of PaLM / MaxText; computed by
`runtime.models.flops`, which `sftc plan` shares)::

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
`runtime.platform.allocator.reuse_freed_memory` (glibc keeps freed blocks for reuse, so a
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
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from runtime.models import ModelConfig
from runtime.models.flops import flops_per_token
from runtime.plan.run_plan import Plan
from runtime.plan.settings import SCHEDULES, AdamW, Length, Optimizer
from runtime.platform import allocator
from runtime.train.engine import Engine, StepSettings, load_weights

allocator.reuse_freed_memory()  # before JAX's CPU threads first allocate (see runtime.platform.allocator)

__all__ = [
    "PEAK_FLOPS",
    "DEFAULT_OPTIMIZER",
    "StepBench",
    "bench_plan",
    "bench_step",
    "flops_per_token",
    "peak_flops",
    "format_bench",
]

DEFAULT_OPTIMIZER = AdamW(lr=1e-4, weight_decay=0.01)

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


def synthetic_batch(
    config: ModelConfig, accumulation: int, micro: int, seq_len: int, seed: int = 0
) -> dict[str, np.ndarray]:
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

    The step is built by `runtime.train.engine.Engine` from `settings`, exactly as a run builds
    it (LoRA adapters, dtype, accumulation, clipping and mesh included). `bench_step` and
    `bench_plan` are the one-call forms; `bench/` uses this class directly to time rounds
    interleaved with a peer.
    """

    def __init__(self, config: ModelConfig, settings: StepSettings, seq_len: int = 256, devices=None):
        allocator.reuse_freed_memory()
        if settings.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be float32 or bfloat16, not {settings.dtype!r}")
        engine = Engine(settings, config, devices)
        self.devices, self.mesh_shape = engine.devices, engine.mesh_shape
        self.config, self.seq_len, self.dtype = config, seq_len, settings.dtype
        self.micro, self.batch = settings.micro, settings.micro * settings.accumulation
        params, frozen = load_weights(settings, config, None)
        self.trainable = int(sum(np.prod(p.shape) for p in jax.tree.leaves(params)))
        from runtime.models.quantize import is_quantized  # a quantized kernel counts its weights, not its scales

        self.params = self.trainable + int(sum(np.prod(p.shape) for p in jax.tree.leaves(frozen, is_leaf=is_quantized)))
        self.frozen = engine.place_frozen(frozen)
        self.state = engine.fresh_state(params)
        del params, frozen
        data = synthetic_batch(config, settings.accumulation, settings.micro, seq_len, settings.seed)
        self.data = jax.device_put(data, engine.batch_sharding)
        started = time.perf_counter()
        self.compiled = engine.step_fn.lower(
            self.state, self.frozen, self.data
        ).compile()  # called as the run's loop does
        self.compile_s = time.perf_counter() - started
        # jax 0.10 on the CPU: a compiled executable refuses mesh-sharded 4-bit arguments (it reports
        # their packed layout as unpacked), so a 4-bit base steps through the jitted function, as the
        # run's loop calls it (its first call compiles again: the warm-up steps absorb it).
        packed = any(leaf.dtype in (jnp.int4, jnp.uint4) for leaf in jax.tree.leaves(self.frozen))
        self.call = engine.step_fn if packed else self.compiled
        self.loss = float("nan")
        self.faults_per_step = 0.0

    @classmethod
    def for_shape(
        cls,
        config: ModelConfig,
        batch: int,
        micro: int | None = None,
        seq_len: int = 256,
        dtype: str = "float32",
        optimizer: Optimizer | None = None,
        mesh: Mapping[str, int | str] | None = None,
        *,
        clip: float | None = 1.0,
        schedule: str = "cosine",
        total_steps: int = 1000,
        seed: int = 0,
        devices=None,
    ) -> StepBench:
        """A full fine-tune step of these shapes, without a spec (arguments as in `bench_step`)."""
        micro = batch if micro is None else micro
        if micro < 1 or batch % micro:
            raise ValueError(f"batch {batch} is not a whole number of micro-batches of {micro}")
        settings = StepSettings(
            steps=max(total_steps, 2),
            micro=micro,
            accumulation=batch // micro,
            dtype=dtype,
            optimizer=optimizer or DEFAULT_OPTIMIZER,
            schedule=SCHEDULES[schedule](warmup=Length(steps=1)).decided(max(total_steps, 2)),
            clip=clip,
            mesh=mesh or {"data": "auto"},
            seed=seed,
        )
        return cls(config, settings, seq_len, devices)

    def run(self, steps: int) -> list[float]:
        """Run `steps` steps, each waited for; their wall times in seconds."""
        times = []
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(steps):
            started = time.perf_counter()
            self.state, metrics = self.call(self.state, self.frozen, self.data)
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
            "trainable_params": self.trainable,
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
    optimizer: Optimizer | None = None,
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
    lets the CPU heap settle: with `runtime.platform.allocator` the second to fourth step
    may still grow it, measured ~100k page faults each, then none);
    ``optimizer``: a `runtime.plan.settings.Optimizer` (default AdamW); ``mesh``: sizes of
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
    bench = StepBench.for_shape(
        config,
        batch,
        micro,
        seq_len,
        dtype,
        optimizer,
        mesh,
        clip=clip,
        schedule=schedule,
        total_steps=warmup + steps,
        seed=seed,
        devices=devices,
    )
    return _timed(bench, steps, warmup)


def bench_plan(plan: Plan, config: ModelConfig, steps: int = 10, warmup: int = 4, devices=None) -> dict[str, Any]:
    """`bench_step` for a spec's plan: its model, adapter, dtype, optimizer, batch, mesh and
    shapes. The step count and schedule do not change a step's cost; a plan whose steps
    depend on the data is timed as if it ran `warmup + steps` steps."""
    from runtime.preflight.prepare import decide

    if plan.train.steps is None or plan.train.schedule.warmup_steps is None:
        plan = decide(plan, plan.train.steps or max(warmup + steps, 100))
    bench = StepBench(config.replace(remat=plan.train.remat), StepSettings.of(plan), plan.data.seq_len, devices)
    return _timed(bench, steps, warmup)


def _timed(bench: StepBench, steps: int, warmup: int) -> dict[str, Any]:
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
        (
            "parameters",
            f"{r['params']:,}"
            + (
                f" ({r['trainable_params']:,} trainable)"
                if r.get("trainable_params", r["params"]) != r["params"]
                else ""
            ),
        ),
        ("compile", f"{r['compile_s']:.1f} s"),
        (
            "step",
            f"{r['step_ms']:.1f} ms (best {r['step_ms_min']:.1f} ms, {r['steps']} timed after {r['warmup']} warm-up)",
        ),
        ("tokens/s", f"{r['tokens_per_s']:,.0f}"),
        ("FLOPs/step", _si(r["flops_per_step"], "FLOP")),
        ("achieved", _si(r["flops_per_step"] * 1e3 / r["step_ms"], "FLOP/s")),
        ("MFU", mfu),
        ("peak memory", f"{r['peak_mem_bytes'] / 2**20:,.0f} MiB ({mem_note})"),
        ("host memory", f"{r['page_faults_per_step']:,.0f} page faults/step, malloc {r['allocator']}"),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
