"""Peak memory of data preparation as the data grows: one fresh process per size prepares
N prompt/completion rows (`DataPipeline`: load, template, tokenize with an empty cache, pack
epoch 0 and assemble the first batches) and reports its peak RSS and rows/s; then the same
again from the warm cache (what a resumed or repeated run pays).

    .venv/bin/python bench/data_memory.py [--rows 100000 1000000]

The question it answers: does memory grow with the tokens (the whole corpus held in RAM) or
only with the examples (a few integers each)?
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHILD = """
import json, resource, sys, time
sys.path[:0] = [{root!r}, {here!r}]
from data_prep_vs_trl import run_sftc
from transformers import PreTrainedTokenizerFast
tokenizer = PreTrainedTokenizerFast.from_pretrained({tok!r})
started = time.perf_counter()
seconds = run_sftc({path!r}, tokenizer, {cache!r}, 512)
peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"seconds": seconds, "peak_mib": peak_kib / 1024}}))
"""


def measure(path: Path, tokenizer_dir: Path, cache: Path) -> dict:
    code = CHILD.format(root=str(HERE.parent), here=str(HERE), tok=str(tokenizer_dir), path=str(path), cache=str(cache))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    sys.path.insert(0, str(HERE))
    from data_prep_vs_trl import bpe_tokenizer, synthetic_rows

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    args = parser.parse_args()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
        f"python {platform.python_version()}"
    )
    print(
        f"{'rows':>10}  {'cold s':>8}  {'rows/s':>8}  {'peak MiB':>9}  {'warm s':>7}  {'peak MiB':>9}  {'file MiB':>9}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tokenizer = bpe_tokenizer(synthetic_rows(5000))
        tokenizer.save_pretrained(str(tmp / "tok"))
        for n in args.rows:
            path = tmp / f"rows-{n}.jsonl"
            with path.open("w") as out:  # written in chunks: the benchmark's own memory stays small
                for chunk in range(0, n, 100_000):
                    out.writelines(json.dumps(row) + "\n" for row in synthetic_rows(min(100_000, n - chunk), chunk))
            cold = measure(path, tmp / "tok", tmp / f"cache-{n}")
            warm = measure(path, tmp / "tok", tmp / f"cache-{n}")
            print(
                f"{n:>10,}  {cold['seconds']:>8.1f}  {n / cold['seconds']:>8,.0f}  {cold['peak_mib']:>9,.0f}  "
                f"{warm['seconds']:>7.1f}  {warm['peak_mib']:>9,.0f}  {path.stat().st_size / 2**20:>9,.0f}"
            )


if __name__ == "__main__":
    main()
