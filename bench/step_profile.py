"""Where a train step's time goes on this machine: JAX's profiler over a few steps of the 135M
shape of `qlora_vs_peft.py` (LoRA r16 on q,k,v,o, or every weight with ``--full``), grouped by
kind of XLA operation, beside the matrix-multiply rate the same XLA reaches alone.

The step runs as `sftc run` runs it (`runtime.train.throughput.StepBench`). The trace is the profiler's
Perfetto JSON: each XLA operation's time on the CPU threads, summed by its kind (matrix
multiplies, elementwise and reduction fusions, copies, the rest). The step's FLOPs
(`runtime.models.flops`, 6N per trained token plus attention, 4N for a frozen base) over its time give
its achieved rate, and a matrix multiply of the step's own largest shape timed alone gives what
XLA's CPU kernels reach here: the ratio of the two is how far the step is from its matmuls.

    .venv/bin/python bench/step_profile.py [--full] [--layers 30] [--batch 8] [--seq-len 256] [--dtype float32]
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def _kind(name: str) -> str | None:
    """The kind of an XLA operation from its trace event name (None: not an operation)."""
    base = name.split(":")[0].split(" ")[0]
    if re.match(r"^(dot|convolution|ynn_fusion|xnn_fusion|onednn)", base) or "dot" in base and "fusion" in base:
        return "matrix multiplies"
    if re.match(r"^(loop_|input_|wrapped_|fusion)", base):
        return "elementwise / reduction fusions"
    if re.match(r"^(copy|transpose|bitcast|slice|dynamic|concatenate|pad|broadcast)", base):
        return "copies and layout"
    if re.match(
        r"^(reduce|scatter|gather|sort|select|while|conditional|call|custom-call|all-|iota|rng|exponential)", base
    ):
        return "other operations"
    return None


def matmul_rate(m: int, k: int, n: int, dtype: str, repeats: int = 10) -> float:
    """GFLOP/s of one [m, k] x [k, n] product compiled by XLA alone."""
    import jax
    import jax.numpy as jnp

    a = jnp.ones((m, k), dtype)
    b = jnp.ones((k, n), dtype)
    f = jax.jit(lambda x, y: x @ y)
    f(a, b).block_until_ready()
    started = time.perf_counter()
    for _ in range(repeats):
        f(a, b).block_until_ready()
    return 2 * m * k * n * repeats / (time.perf_counter() - started) / 1e9


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA")
    p.add_argument("--layers", type=int, default=30)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--steps", type=int, default=2, help="profiled steps (after 2 warm-up steps)")
    a = p.parse_args(argv)

    import jax
    from qlora_vs_peft import SHAPE

    from runtime.models import ModelConfig
    from runtime.plan.run_plan import LoraPlan
    from runtime.plan.settings import SCHEDULES, AdamW
    from runtime.train.engine import StepSettings
    from runtime.train.throughput import StepBench

    s = SHAPE
    config = ModelConfig(
        vocab_size=s["vocab"],
        hidden_size=s["hidden"],
        intermediate_size=s["ffn"],
        num_layers=a.layers,
        num_heads=s["heads"],
        num_kv_heads=s["kv_heads"],
        head_dim=s["head_dim"],
        tie_embeddings=True,
        rope_theta=s["theta"],
        rms_norm_eps=s["eps"],
        initializer_range=s["init"],
    )
    total = 2 + a.steps
    settings = StepSettings(
        steps=total,
        micro=a.batch,
        accumulation=1,
        dtype=a.dtype,
        optimizer=AdamW(lr=1e-4),
        schedule=SCHEDULES["constant"]().decided(total),
        clip=1.0,
        mesh={"data": "auto"},
        adapter=None if a.full else LoraPlan(16, 32.0, 0.0, ("q", "k", "v", "o")),
        seed=0,
    )
    bench = StepBench(config, settings, a.seq_len)
    bench.run(2)
    with tempfile.TemporaryDirectory(prefix="step_profile-") as tmp:
        with jax.profiler.trace(tmp, create_perfetto_trace=True):
            times = bench.run(a.steps)
        (trace,) = glob.glob(f"{tmp}/**/*.trace.json.gz", recursive=True)
        events = json.loads(gzip.decompress(Path(trace).read_bytes()))["traceEvents"]
    busy = collections.Counter()
    ops = collections.Counter()
    for event in events:
        if event.get("ph") != "X" or "dur" not in event:
            continue
        kind = _kind(event.get("name", ""))
        if kind is not None:
            busy[kind] += event["dur"] / 1e6
            ops[event["name"].split(":")[0]] += event["dur"] / 1e6
    step_s = sum(times) / len(times)
    result = bench.result(times)
    tokens = a.batch * a.seq_len
    from runtime.models.flops import matmul_params

    # what the step computes: a frozen base has no weight gradients (4N per token, not 6N)
    flops = result["flops_per_step"] - (0 if a.full else 2 * tokens * matmul_params(config, result["params"]))
    achieved = flops / step_s / 1e9
    alone = matmul_rate(tokens, s["hidden"], s["ffn"], a.dtype)
    out = {
        "shape": {
            "layers": a.layers,
            "batch": a.batch,
            "seq_len": a.seq_len,
            "dtype": a.dtype,
            "full": a.full,
            "params": result["params"],
            "trainable": result["trainable_params"],
        },
        "step_s": step_s,
        "flops_per_step": flops,
        "achieved_gflops": achieved,
        "matmul_alone_gflops": alone,
        "busy_s_per_step": {k: v / a.steps for k, v in busy.most_common()},
        "top_ops_s_per_step": {k: v / a.steps for k, v in ops.most_common(12)},
        "devices": jax.device_count(),
    }
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
