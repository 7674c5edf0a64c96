"""What a user waits for before training starts, cold: `sftc plan` in a fresh process with empty
sftc and datasets caches, beside TRL's `SFTTrainer` preparation of the same rows in a fresh
process (imports, loading, tokenizing and packing included on both sides).

Both read the same JSON-lines file of N prompt/completion rows with the same byte-level BPE
tokenizer and pack completion-only examples into 512-token rows; sftc's model is a tiny
`init llama`, TRL's a tiny `LlamaForCausalLM` (neither matters for data preparation).

    .venv/bin/python bench/cold_plan_vs_trl.py [--rows 100000] [--repeats 2]

Prints each side's wall time (best of the repeats, each with fresh caches), rows/s and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SPEC = """\
sft "cold-plan"
model {
    base      = init llama(layers = 1, dim = 32, heads = 2, ffn = 64)
    tokenizer = hf("tok")
}
data rows = jsonl("rows.jsonl")
train {
    epochs  = 1
    batch   = 8
    seq_len = 512
    packing = on
}
output {
    dir = "runs/{name}"
}
"""
TRL = """
import datasets
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
from trl import SFTConfig, SFTTrainer
tokenizer = AutoTokenizer.from_pretrained("tok")
model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32,
                                     num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                     pad_token_id=tokenizer.pad_token_id))
dataset = datasets.load_dataset("json", data_files="rows.jsonl", split="train")
args = SFTConfig(output_dir="trl-out", report_to="none", use_cpu=True, bf16=False, max_length=512, packing=True,
                 completion_only_loss=True, dataset_num_proc=None)
SFTTrainer(model=model, args=args, processing_class=tokenizer, train_dataset=dataset)
"""


def timed(command: list[str], cwd: Path, env: dict) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"{' '.join(command[:3])} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return seconds


def fresh_env(root: Path) -> dict:
    """Empty sftc and datasets caches (the tokenizer and data files stay)."""
    for name in ("sftc-cache", "hf-cache", "trl-out", "runs"):
        shutil.rmtree(root / name, ignore_errors=True)
    return {
        **os.environ,
        "SFTC_CACHE": str(root / "sftc-cache"),
        "HF_DATASETS_CACHE": str(root / "hf-cache"),
        "HF_HUB_OFFLINE": "1",
    }  # each side with its own tokenizer threading


def main() -> None:
    sys.path.insert(0, str(HERE))
    from data_prep_vs_trl import bpe_tokenizer, synthetic_rows

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    sftc = str(Path(sys.executable).with_name("sftc"))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rows = synthetic_rows(args.rows)
        bpe_tokenizer(rows).save_pretrained(str(root / "tok"))
        (root / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (root / "cold.sft").write_text(SPEC)
        ours, theirs = [], []
        for _ in range(args.repeats):  # alternating, each with empty caches
            ours.append(timed([sftc, "plan", "cold.sft"], root, fresh_env(root)))
            theirs.append(timed([sys.executable, "-c", TRL], root, fresh_env(root)))
    a, b = min(ours), min(theirs)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
        f"python {platform.python_version()}"
    )
    print(f"{args.rows:,} rows, cold process, empty caches, pack to 512 tokens (best of {args.repeats})")
    print(f"sftc plan    {a:7.2f} s  {args.rows / a:9,.0f} rows/s   (all: {', '.join(f'{x:.1f}' for x in ours)})")
    print(f"TRL SFTTrainer {b:5.2f} s  {args.rows / b:9,.0f} rows/s   (all: {', '.join(f'{x:.1f}' for x in theirs)})")
    print(f"ratio (TRL time / sftc time): {b / a:.2f}x")


if __name__ == "__main__":
    main()
