"""Data preparation, sftc beside TRL: template + tokenize + pack N prompt/completion rows.

Both sides start from the same JSON-lines file and the same fast BPE tokenizer and
produce packed, completion-only training data for seq_len 512:

- sftc: `DataPipeline` (datasets-backed load, batched tokenization with exact
  masks, best-fit-decreasing packing of epoch 0), with an empty cache;
- TRL: `SFTTrainer(..., SFTConfig(packing=True, completion_only_loss=True))`,
  whose constructor tokenizes and packs the dataset.

    .venv/bin/python bench/data_prep_vs_trl.py [--rows 100000]

Prints rows/s of each and the ratio, with the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import tempfile
import time
from pathlib import Path

WORDS = (
    "order refund where is my package please help thanks the a delivery late broken item arrived "
    "wrong size colour address change account password login cancel ship today tomorrow week"
).split()


def synthetic_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        prompt = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 30)))
        answer = json.dumps({"intent": rng.choice(WORDS), "order_id": f"{rng.randint(10000, 99999)}"})
        rows.append({"prompt": f"Message: {prompt}\nJSON:", "completion": f" {answer}"})
    return rows


def bpe_tokenizer(rows: list[dict]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=2000,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator((r["prompt"] + r["completion"] for r in rows[:5000]), trainer=trainer)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def run_sftc(path: Path, tokenizer, cache: Path, seq_len: int) -> float:
    from runtime.data.pipeline import DataPipeline
    from runtime.plan.data_plan import DataPlan, SourceSpec

    plan = DataPlan(
        sources=(SourceSpec(name="rows", kind="jsonl", paths=(str(path),)),),
        seq_len=seq_len,
        packing=True,
        global_batch_size=8,
        epochs=1,
    )
    started = time.perf_counter()
    pipeline = DataPipeline(plan, tokenizer, str(cache))
    _ = pipeline.total_steps  # packs epoch 0
    return time.perf_counter() - started


def run_trl(path: Path, tokenizer, out: Path, seq_len: int) -> float:
    import datasets
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl import SFTConfig, SFTTrainer

    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    started = time.perf_counter()
    dataset = datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=str(out / "hf"))
    args = SFTConfig(
        output_dir=str(out / "trl"),
        report_to="none",
        use_cpu=True,
        bf16=False,
        max_length=seq_len,
        packing=True,
        completion_only_loss=True,
        dataset_num_proc=None,
    )
    SFTTrainer(model=model, args=args, processing_class=tokenizer, train_dataset=dataset)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--seq-len", type=int, default=512)
    args = parser.parse_args()
    rows = synthetic_rows(args.rows)
    tokenizer = bpe_tokenizer(rows)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = tmp / "rows.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        ours = run_sftc(path, tokenizer, tmp / "sftc-cache", args.seq_len)
        theirs = run_trl(path, tokenizer, tmp, args.seq_len)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
        f"python {platform.python_version()}"
    )
    print(f"{args.rows:,} rows, template + tokenize + pack to {args.seq_len} tokens")
    print(f"sftc  {ours:7.2f} s  {args.rows / ours:9,.0f} rows/s")
    print(f"TRL   {theirs:7.2f} s  {args.rows / theirs:9,.0f} rows/s")
    print(f"ratio sftc/TRL rows/s: {theirs / ours:.2f}x")


if __name__ == "__main__":
    main()
