"""A run's GGUF export answered by llama.cpp itself, against the run's own eval answers.

    sftc export RUN --format gguf OUT [--quant q8_0]
    .venv/bin/python bench/gguf_answers_llama_cpp.py RUN OUT

For every eval sample of RUN/report.json, llama.cpp (llama-cpp-python) tokenizes the prompt the
run used (special tokens as text), decodes greedily up to the run's `max_new_tokens`, and its
answer is compared with the run's; it counts the answers that end on the file's end-of-turn or
EOS token. Prints one line per GGUF file in OUT, with the time llama.cpp took and the CPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def answers(gguf: Path, samples: list[dict], max_new_tokens: int, threads: int) -> tuple[int, int, float, list]:
    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf), n_ctx=1024, n_threads=threads, n_threads_batch=threads, verbose=False, seed=0)
    stops = {int(llm.token_eos())}
    if llm.metadata.get("tokenizer.ggml.eot_token_id") is not None:  # metadata values are strings
        stops.add(int(llm.metadata["tokenizer.ggml.eot_token_id"]))
    same = stopped = 0
    differing = []
    started = time.perf_counter()
    for sample in samples:
        ids = llm.tokenize(sample["prompt"].encode(), add_bos=False, special=True)
        new: list[int] = []
        for token in llm.generate(ids, temp=0.0, top_k=1, reset=True):
            if token in stops:
                stopped += 1
                break
            new.append(token)
            if len(new) >= max_new_tokens:
                break
        text = llm.detokenize(new).decode("utf-8", errors="replace")
        if text.strip() == sample["generated"].strip():
            same += 1
        else:
            differing.append((sample["generated"], text))
    return same, stopped, time.perf_counter() - started, differing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="the run directory (its report.json has the eval answers)")
    parser.add_argument("out", type=Path, help="the folder `sftc export RUN --format gguf OUT` wrote")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    report = json.loads((args.run / "report.json").read_text())
    plan = json.loads((args.run / "plan.json").read_text())
    samples, max_new = report["samples"], int(plan["eval"]["generate"]["max_new_tokens"])
    print(f"{len(samples)} eval answers of {args.run}; {cpu_name()}, {args.threads} threads")
    for gguf in sorted(args.out.glob("*.gguf")):
        same, stopped, seconds, differing = answers(gguf, samples, max_new, args.threads)
        print(
            f"{gguf.name}: {same}/{len(samples)} answers equal the run's, {stopped}/{len(samples)} end on a stop "
            f"token; llama.cpp {seconds:.1f} s"
        )
        for ours, theirs in differing[:3]:
            print(f"  sftc:      {ours}\n  llama.cpp: {theirs}")


if __name__ == "__main__":
    main()
