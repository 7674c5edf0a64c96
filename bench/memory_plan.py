"""How far `sftc plan`'s memory estimate is from what the compiled train step needs.

For several shapes (full fine-tune and LoRA, float32 and bfloat16, remat off / full / dots,
longer rows, LoRA over an int8 and an nf4 base) it builds the step a run builds
(`runtime.train.throughput.StepBench`: the engine's own
step, state and frozen base), asks XLA for its accounting of the compiled program
(`compiled.memory_analysis()`: the arguments, the outputs not aliased onto them, and the
temporaries its buffer assignment needs at the peak) and prints that beside the estimate
of `runtime.preflight.plan_report.memory_estimate` and the error.

    .venv/bin/python bench/memory_plan.py            # the table
    .venv/bin/python bench/memory_plan.py --json

XLA's accounting is what the device must hold for the step; on this machine the device is
the CPU, whose compiler fuses differently from a GPU's, so the errors are this backend's.
Nothing is run, only compiled: the figures do not depend on the machine's speed.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MiB = 2**20


@dataclass(frozen=True)
class Shape:
    name: str
    layers: int
    dim: int
    heads: int
    kv_heads: int
    ffn: int
    vocab: int
    micro: int
    seq_len: int
    dtype: str = "float32"
    remat: str = "off"
    lora: bool = False
    quantize: str | None = None


SHAPES = (
    Shape("7M full", 4, 256, 8, 4, 688, 8192, 8, 256),
    Shape("7M full bf16", 4, 256, 8, 4, 688, 8192, 8, 256, dtype="bfloat16"),
    Shape("7M remat full", 4, 256, 8, 4, 688, 8192, 8, 256, remat="full"),
    Shape("7M remat dots", 4, 256, 8, 4, 688, 8192, 8, 256, remat="dots"),
    Shape("7M long rows", 4, 256, 8, 4, 688, 8192, 1, 2048),
    Shape("30M full", 6, 512, 8, 8, 1376, 16384, 4, 512),
    Shape("30M LoRA bf16", 6, 512, 8, 8, 1376, 16384, 4, 512, dtype="bfloat16", lora=True),
    Shape("135M-shape LoRA", 30, 576, 9, 3, 1536, 49152, 2, 256, lora=True),
    Shape("135M-shape LoRA bf16 remat", 30, 576, 9, 3, 1536, 49152, 4, 512, dtype="bfloat16", remat="full", lora=True),
    Shape("135M-shape LoRA bf16", 30, 576, 9, 3, 1536, 49152, 2, 256, dtype="bfloat16", lora=True),
    Shape(
        "135M-shape LoRA bf16 int8", 30, 576, 9, 3, 1536, 49152, 2, 256, dtype="bfloat16", lora=True, quantize="int8"
    ),
    Shape("135M-shape LoRA bf16 nf4", 30, 576, 9, 3, 1536, 49152, 2, 256, dtype="bfloat16", lora=True, quantize="nf4"),
)


def measure(shape: Shape) -> dict:
    import jax

    from runtime.models import ModelConfig
    from runtime.models.lora import count_lora_params
    from runtime.plan.run_plan import LoraPlan
    from runtime.plan.settings import SCHEDULES, Length
    from runtime.preflight.plan_report import memory_estimate, parameter_count
    from runtime.train.engine import StepSettings
    from runtime.train.throughput import DEFAULT_OPTIMIZER, StepBench

    config = ModelConfig.llama(
        layers=shape.layers, dim=shape.dim, heads=shape.heads, kv_heads=shape.kv_heads, ffn=shape.ffn, vocab=shape.vocab
    ).replace(remat=shape.remat)
    adapter = LoraPlan(16, 32, 0.0, ("q", "k", "v", "o")) if shape.lora else None
    settings = StepSettings(
        steps=10,
        micro=shape.micro,
        accumulation=1,
        dtype=shape.dtype,
        optimizer=DEFAULT_OPTIMIZER,
        schedule=SCHEDULES["cosine"](warmup=Length(steps=1)).decided(10),
        clip=1.0,
        mesh={"data": "auto"},
        adapter=adapter,
        quantize=shape.quantize,
    )
    bench = StepBench(config, settings, shape.seq_len, jax.devices()[:1])
    analysis = bench.compiled.memory_analysis()
    measured = (
        analysis.argument_size_in_bytes
        + analysis.output_size_in_bytes
        - analysis.alias_size_in_bytes
        + analysis.temp_size_in_bytes
    )
    total = parameter_count(config)["total"]
    trainable = count_lora_params(config, adapter) if adapter else total
    estimate = memory_estimate(
        config,
        trainable=trainable,
        total_params=total + (trainable if adapter else 0),
        dtype=shape.dtype,
        optimizer=DEFAULT_OPTIMIZER,
        micro_tokens=shape.micro * shape.seq_len,
        seq_len=shape.seq_len,
        remat=shape.remat,
        quantize=shape.quantize,
    )
    return {
        "shape": shape.name,
        "params": total,
        "trainable": trainable,
        "measured": measured,
        "arguments": analysis.argument_size_in_bytes,
        "temporaries": analysis.temp_size_in_bytes,
        "estimate": estimate["total"],
        "estimate_activations": estimate["activations"],
        "error": estimate["total"] / measured - 1,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--only", help="shapes whose name contains this")
    args = parser.parse_args(argv)
    rows = [measure(s) for s in SHAPES if not args.only or args.only in s.name]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'shape':30} {'params':>10} {'XLA MiB':>9} {'(args':>8} {'temps)':>8} {'estimate MiB':>13} {'error':>7}")
    for r in rows:
        print(
            f"{r['shape']:30} {r['params']:>10,} {r['measured'] / MiB:>9.1f} {r['arguments'] / MiB:>8.1f} "
            f"{r['temporaries'] / MiB:>8.1f} {r['estimate'] / MiB:>13.1f} {r['error'] * 100:>+6.1f}%"
        )
    worst = max(rows, key=lambda r: abs(r["error"]))
    print(f"largest error: {worst['error'] * 100:+.1f}% ({worst['shape']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
