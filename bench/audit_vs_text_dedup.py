"""Near-duplicate search on N rows: `sftc audit`'s `find_copies` beside text-dedup's MinHash.

Generates N support-like prompt/completion rows (default 1,000,000) with planted exact copies
(whitespace changed) and near copies (one word of the answer replaced), writes them once as
JSON lines, and runs each side in a fresh process on the same file:

- sftc: `runtime.audit.near_copies.find_copies` (exact copies, MinHash LSH near copies confirmed
  by exact Jaccard of 5-character shingles, conflicts), threshold 0.9, 64 permutations;
- text-dedup 0.4.0: `python -m text_dedup.minhash` (load with `datasets`, MinHash, LSH
  clustering, filter, save), threshold 0.9, 64 permutations, xxh3 hashes, word n-grams
  (``--ngram``, default 3: text-dedup splits on non-word characters and has no character
  shingles), ``--num_proc`` 2.

    .venv/bin/pip install --no-deps text-dedup==0.4.0 "click-option-group>=0.5.6,<0.6"
    .venv/bin/python bench/audit_vs_text_dedup.py [--rows 1000000] [--repeats 1]

Prints each side's seconds (load included), peak RSS (the process and, for text-dedup, its
largest worker), how many rows each marks as copies, recall on the planted pairs, their ratio
and the machine. For sftc also the split of its time (loading the rows as `AuditedExample`s, then
`find_copies`) and the peak once the rows are loaded ("data alone"), so that what `find_copies`
adds shows.

A side's peak is its own process's high-water RSS (``VmHWM`` of /proc/self/status), not
``getrusage``'s ``ru_maxrss``: on Linux a process started from this one inherits this one's peak
in ``ru_maxrss`` (the kernel carries it over the fork and exec), and this one held the generated
rows, so ``ru_maxrss`` would report this script's memory whenever it is the larger. Workers'
peaks (text-dedup's ``--num_proc``) are ``ru_maxrss`` of the waited-for children: forked from the
side's process, they count the pages they share with it at the fork.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = "### Question:\n{q}\n### Answer:\n"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def generate(n: int, seed: int = 0) -> tuple[list[dict], list[tuple[int, int]], list[tuple[int, int]]]:
    """N rows: 1 % exact copies (an extra space, a trailing newline) and 1 % near copies (one
    word of a 30-60 word answer replaced) of other rows; the rest distinct. Returns the rows and
    the planted (original, copy) pairs of each kind."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    vocab = sorted({"".join(rng.choice(letters, rng.integers(3, 10))) for _ in range(8000)})
    stop = "the and of to is in that it for with on are as have be at this not but my order".split()
    words = np.array(vocab + stop * 60)
    openers = ["Hi, ", "Hello, ", "", "Good morning. ", "Excuse me, "]

    def sentence(k: int) -> list[str]:
        return list(words[rng.integers(0, len(words), k)])

    n_exact = n_near = n // 100
    n_base = n - n_exact - n_near
    rows = []
    for _ in range(n_base):
        q = openers[rng.integers(0, len(openers))] + " ".join(sentence(int(rng.integers(8, 20)))) + "?"
        a = " ".join(sentence(int(rng.integers(30, 60)))).capitalize() + "."
        rows.append({"prompt": TEMPLATE.format(q=q), "completion": a})
    originals = rng.choice(n_base, n_exact + n_near, replace=False)
    exact, near = [], []
    for k, o in enumerate(originals.tolist()):
        row = rows[o]
        if k < n_exact:
            rows.append({"prompt": row["prompt"].replace(" ", "  ", 1), "completion": row["completion"] + "\n"})
            exact.append((o, len(rows) - 1))
        else:
            answer = row["completion"].split(" ")
            answer[int(rng.integers(1, len(answer) - 1))] = str(words[rng.integers(0, len(vocab))])
            rows.append({"prompt": row["prompt"], "completion": " ".join(answer)})
            near.append((o, len(rows) - 1))
    return rows, exact, near


def peak_mib() -> tuple[float, float]:
    """(this process's peak RSS, its largest waited-for child's) in MiB. The process's own is
    VmHWM, which starts afresh at exec (``ru_maxrss`` carries the parent's over; see above)."""
    unit = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / unit / 1024
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                own = int(line.split()[1]) / 1024
    except OSError:
        pass
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / unit / 1024
    return own, children


def side_sftc(data: Path, threshold: float, num_perm: int) -> dict:
    sys.path.insert(0, str(ROOT))
    from runtime.audit.audited_example import AuditedExample
    from runtime.audit.near_copies import find_copies

    started = time.perf_counter()
    examples = []
    with open(data) as f:
        for line_no, line in enumerate(f, 1):
            r = json.loads(line)
            examples.append(
                AuditedExample(
                    f"rows:{line_no}", "rows", "train", f"rows.jsonl:{line_no}", r["prompt"], r["completion"], 0, 0
                )
            )
    loaded = time.perf_counter()
    loaded_mib = peak_mib()[0]
    copies = find_copies(examples, threshold=threshold, num_perm=num_perm)
    done = time.perf_counter()
    root = {}
    for group in copies.duplicates + copies.near_duplicates:
        for r in group.rows:
            root[r] = group.rows[0]

    # an exact group and a near group can share a row: follow the chain to one root
    def find(x: int) -> int:
        while root.get(x, x) != x:
            x = root[x]
        return x

    return {
        "seconds": done - started,
        "load_seconds": loaded - started,
        "find_seconds": done - loaded,
        "peak_mib": peak_mib()[0],
        "loaded_mib": loaded_mib,
        "children_mib": 0.0,
        "cluster": {r: find(r) for r in root},
        "flagged": sum(len(g.rows) - 1 for g in copies.duplicates + copies.near_duplicates),
        "conflicts": len(copies.conflicts),
    }


def side_text_dedup(data: Path, threshold: float, num_perm: int, ngram: int, num_proc: int, work: Path) -> dict:
    from text_dedup import minhash

    out = work / "text-dedup-out"
    args = [
        "--path", "json", "--data_files", str(data), "--split", "train", "--cache_dir", str(work / "hf-cache"),
        "--output", str(out), "--column", "text", "--num_perm", str(num_perm), "--threshold", str(threshold),
        "--ngram", str(ngram), "--min_length", "0", "--hash_func", "xxh3", "--num_proc", str(num_proc), "--debug",
    ]  # fmt: skip
    started = time.perf_counter()
    minhash.main(args, standalone_mode=False)
    done = time.perf_counter()
    with open(out / "uf.pkl", "rb") as f:
        uf = pickle.load(f)
    cluster = {i: uf.find(i) for i in list(uf.parent)}
    groups: dict[int, int] = {}
    for r in cluster.values():
        groups[r] = groups.get(r, 0) + 1
    own, children = peak_mib()
    return {
        "seconds": done - started,
        "peak_mib": own,
        "children_mib": children,
        "cluster": cluster,
        "flagged": sum(1 for i, r in cluster.items() if i != r),
    }


def recall(cluster: dict, pairs: list[tuple[int, int]]) -> float:
    hit = sum(1 for a, b in pairs if a in cluster and b in cluster and cluster[a] == cluster[b])
    return hit / len(pairs) if pairs else 1.0


def run_side(side: str, data: Path, truth: Path, args) -> dict:
    """One side in a fresh process; returns its summary."""
    with tempfile.TemporaryDirectory(dir=data.parent) as work:
        cmd = [
            sys.executable, __file__, "--side", side, "--data", str(data), "--truth", str(truth), "--work", work,
            "--threshold", str(args.threshold), "--num-perm", str(args.num_perm), "--ngram", str(args.ngram),
            "--num-proc", str(args.num_proc),
        ]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if done.returncode:
            raise SystemExit(f"{side} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])


def child(args) -> None:
    if args.side == "sftc":
        result = side_sftc(args.data, args.threshold, args.num_perm)
    else:
        result = side_text_dedup(args.data, args.threshold, args.num_perm, args.ngram, args.num_proc, args.work)
    truth = json.loads(args.truth.read_text())
    cluster = result.pop("cluster")
    result["recall_exact"] = recall(cluster, truth["exact"])
    result["recall_near"] = recall(cluster, truth["near"])
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=1, help="alternating rounds of both sides")
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--num-perm", type=int, default=64)
    parser.add_argument("--ngram", type=int, default=3, help="text-dedup's word n-gram size")
    parser.add_argument("--num-proc", type=int, default=2, help="text-dedup's worker processes")
    parser.add_argument("--sides", default="sftc,text-dedup")
    parser.add_argument("--side", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--truth", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        child(args)
        return
    started = time.perf_counter()
    rows, exact, near = generate(args.rows)
    print(f"generated {len(rows):,} rows in {time.perf_counter() - started:.1f} s", flush=True)
    sides = args.sides.split(",")
    results: dict[str, list[dict]] = {s: [] for s in sides}
    with tempfile.TemporaryDirectory() as tmp:
        data, truth = Path(tmp) / "rows.jsonl", Path(tmp) / "truth.json"
        with open(data, "w") as f:
            for r in rows:
                f.write(json.dumps({**r, "text": r["prompt"] + r["completion"]}) + "\n")
        truth.write_text(json.dumps({"exact": exact, "near": near}))
        del rows
        for _ in range(args.repeats):
            for side in sides:
                results[side].append(run_side(side, data, truth, args))
                r = results[side][-1]
                print(f"  {side}: {r['seconds']:.1f} s, peak {r['peak_mib']:.0f} MiB", flush=True)
    print(f"machine: {cpu_model()}, {os.cpu_count()} cpus, python {platform.python_version()}")
    print(
        f"{args.rows:,} rows ({len(exact):,} planted exact copies, {len(near):,} near copies), "
        f"threshold {args.threshold}"
    )
    for side, runs in results.items():
        best = min(runs, key=lambda r: r["seconds"])
        spread = ", ".join(f"{r['seconds']:.1f}" for r in runs)
        extra = f" (workers {best['children_mib']:.0f} MiB)" if best["children_mib"] else ""
        if "find_seconds" in best:
            extra += (
                f" (load {best['load_seconds']:.1f} s + find_copies {best['find_seconds']:.1f} s; "
                f"data alone {best['loaded_mib']:.0f} MiB)"
            )
        print(
            f"{side:10s} {best['seconds']:7.1f} s [{spread}]  peak {best['peak_mib']:6.0f} MiB{extra}  "
            f"flagged {best['flagged']:,} rows  recall exact {best['recall_exact']:.3f} near {best['recall_near']:.3f}"
        )
    if len(results) == 2:
        ours, theirs = (min(r["seconds"] for r in results[s]) for s in sides)
        print(f"ratio {sides[1]} time / {sides[0]} time: {theirs / ours:.2f}x")


if __name__ == "__main__":
    main()
