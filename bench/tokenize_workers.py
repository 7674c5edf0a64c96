"""Tokenizing a source in a JAX process: one process against a pool of spawned workers.

A process must not fork once JAX has started its threads (a forked child can deadlock on a
lock another thread held), so `Dataset.map(num_proc=N)` cannot use its default forked
workers there. The choices are tokenizing in the process itself (`num_proc=None`; the fast
tokenizer still encodes each batch on every core) or a pool of spawned workers, which each
start a fresh interpreter and import datasets and transformers. This measures both, each in
a fresh process with JAX's backend initialised and an empty cache, and, for reference, the
forked pool in a process without JAX (what `num_proc=N` did before).

    .venv/bin/python bench/tokenize_workers.py [--rows 100000] [--workers 2] [--rounds 2]

Prints seconds and rows/s of each side, the ratio, and the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _side(side: str, path: str, tokenizer_dir: str, cache: str, workers: int) -> float:
    """Seconds `tokenize_source` takes on ``side`` (run in a fresh process)."""
    if side != "fork":
        import jax

        jax.devices()  # the backend's threads are running, as in `sftc run`
    if side == "spawn":
        import multiprocess

        multiprocess.set_start_method("spawn", force=True)  # what datasets' Pool then uses
    from transformers import AutoTokenizer

    from runtime.data.sources import load_source
    from runtime.data.tokenize import tokenize_source
    from runtime.plan.data_plan import SourceSpec, TemplateSpec

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    loaded = load_source(SourceSpec(name="rows", kind="jsonl", paths=(path,)), cache_dir=cache)
    started = time.perf_counter()
    ts = tokenize_source(
        loaded, TemplateSpec(), tokenizer, cache_dir=cache, num_proc=None if side == "serial" else workers
    )
    took = time.perf_counter() - started
    assert len(ts) == len(loaded) and not ts.cache_hit
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--side", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--tokenizer", help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        print(json.dumps(_side(args.side, args.path, args.tokenizer, args.cache, args.workers)))
        return

    from data_prep_vs_trl import bpe_tokenizer, synthetic_rows

    rows = synthetic_rows(args.rows)
    times: dict[str, list[float]] = {"serial": [], "spawn": [], "fork": []}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rows.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        bpe_tokenizer(rows).save_pretrained(str(Path(tmp) / "tok"))
        for r in range(args.rounds):  # alternating, each side in a fresh process with an empty cache
            for side in times:
                cache = Path(tmp) / f"cache-{side}-{r}"
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--side",
                        side,
                        "--path",
                        str(path),
                        "--tokenizer",
                        str(Path(tmp) / "tok"),
                        "--cache",
                        str(cache),
                        "--workers",
                        str(args.workers),
                    ],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                times[side].append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
        f"python {platform.python_version()}"
    )
    print(
        f"{args.rows:,} prompt/completion rows, byte-level BPE, tokenize_source with an empty cache "
        f"(median of {args.rounds})"
    )
    serial = statistics.median(times["serial"])
    for side, label in (
        ("serial", "one process (num_proc=None), JAX started"),
        ("spawn", f"{args.workers} spawned workers, JAX started"),
        ("fork", f"{args.workers} forked workers, no JAX (unsafe with JAX)"),
    ):
        t = statistics.median(times[side])
        print(
            f"{label:48s} {t:7.2f} s  {args.rows / t:9,.0f} rows/s  one process / this: {serial / t:.2f}x  "
            f"(rounds: {', '.join(f'{x:.2f}' for x in times[side])})"
        )


if __name__ == "__main__":
    main()
