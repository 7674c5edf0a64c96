"""`sftc run` end to end on a tiny spec: the run directory, a resumed run equal to an
uninterrupted one, Ctrl-C, a non-finite loss, `--fresh`, and `sftc plan` / `preview`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from runtime.train.metrics_log import read_metrics
from sftlang.cli import main
from tests.runtime.data_helpers import wordlevel_tokenizer
from tests.runtime.run_helpers import SLOW_RUN, SPEC, interrupt_at, save_tiny_base
from tests.runtime.run_helpers import final_params as _final_params
from tests.runtime.run_helpers import runs as _runs


def test_run_writes_a_complete_run_directory(project, capsys):
    assert main(["run", "tiny.sft"]) == 0
    (run_dir,) = _runs(project)
    for name in (
        "spec.sft",
        "plan.json",
        "manifest.json",
        "metrics.jsonl",
        "status.json",
        "loss.png",
        "report.md",
        "report.json",
        "audit.json",
        "tokenizer/tokenizer.json",
        "export/config.json",
        "export/model.safetensors",
    ):
        assert (run_dir / name).exists(), name
    assert list((run_dir / "tb").iterdir()), "TensorBoard event files"
    plan = json.loads((run_dir / "plan.json").read_text())
    assert plan["train"]["steps"] == 12 and plan["train"]["schedule"]["warmup"] == {"steps": 2, "share": None}
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert set(manifest["data"]["fingerprints"]) == {"sums"} and manifest["packages"]["jax"]
    assert manifest["spec_hash"] == plan["spec_hash"]
    assert json.loads((run_dir / "status.json").read_text())["status"] == "done"
    audit = json.loads((run_dir / "audit.json").read_text())  # what `sftc diff RUN RUN` compares
    assert audit["counts"]["sums"]["train"] + audit["counts"]["sums"]["eval"] == 100
    assert manifest["data"]["stats"]["audit"] == audit["counts"]
    assert "## About the data" in (run_dir / "report.md").read_text()
    train = [r for r in read_metrics(run_dir) if r["kind"] == "train"]
    assert [r["step"] for r in train] == list(range(1, 13))  # a short run logs every step
    assert all({"loss", "lr", "tokens_per_s", "grad_norm"} <= set(r) for r in train)
    assert train[-1]["loss"] < train[0]["loss"]
    evals = [r for r in read_metrics(run_dir) if r["kind"] == "eval"]
    assert evals and {"loss", "perplexity", "token_accuracy"} <= set(evals[-1])
    assert "trained 12 steps" in capsys.readouterr().err
    # the resolved spec in the run directory is a spec of its own
    assert main(["check", str(run_dir / "spec.sft"), "--devices", "1"]) == 0


@pytest.mark.slow  # ~14 s: keeps the default suite under 5 minutes; CI runs it with the slow tests
def test_resumed_run_equals_uninterrupted_run(project, monkeypatch):
    assert main(["run", "tiny.sft"]) == 0
    (whole,) = _runs(project)
    resume = interrupt_at(monkeypatch, 7)
    assert main(["run", "tiny.sft", "--fresh"]) == 130
    interrupted = _runs(project)[-1]
    assert json.loads((interrupted / "status.json").read_text())["status"] == "interrupted"
    resume()
    assert main(["run", "tiny.sft"]) == 0  # resumes the unfinished run, in the same directory
    assert _runs(project)[-1] == interrupted
    events = [r["event"] for r in read_metrics(interrupted) if r["kind"] == "event"]
    assert events[:2] == ["start", "checkpoint"] and "resume" in events and events[-1] == "done"
    step_a, params_a = _final_params(whole)
    step_b, params_b = _final_params(interrupted)
    assert step_a == step_b == 12
    for a, b in zip(params_a, params_b):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    assert main(["run", "tiny.sft"]) == 0  # finished: a new run, not a resume
    assert len(_runs(project)) == 3


def test_non_finite_loss_stops_and_keeps_the_last_good_state(project, monkeypatch, capsys):
    from runtime.data.pipeline import DataPipeline

    original = DataPipeline.batch

    def poisoned_at_five(self, step, rows=None):
        batch = original(self, step, rows)
        if step == 5:
            batch["loss_mask"] = batch["loss_mask"] * np.nan
        return batch

    monkeypatch.setattr(DataPipeline, "batch", poisoned_at_five)
    assert main(["run", "tiny.sft"]) == 1
    (run_dir,) = _runs(project)
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "nan" and "step 6" in status["message"] and status["skipped_steps"] == 1
    assert "non-finite" in capsys.readouterr().err
    step, params = _final_params(run_dir)
    assert step == 6  # batch 5 was step 6: counted, its update refused; the weights are step 5's
    assert all(np.isfinite(np.asarray(p)).all() for p in params)


def test_plan_and_preview(project, capsys):
    assert main(["plan", "tiny.sft"]) == 0
    out = capsys.readouterr().out
    assert "model    llama" in out and "steps    12" in out and "memory" in out and "Plan: 12 steps" in out
    assert main(["plan", "tiny.sft", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["steps"] == 12 and report["tokens_per_step"] == 8 * 16 and report["model"]["params"] > 0
    assert main(["preview", "tiny.sft", "-n", "2", "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(records) == 2
    assert all(len(r["input_ids"]) == len(r["trained"]) and sum(r["trained"]) >= 2 for r in records)


def test_invalid_spec_runs_nothing(project, capsys):
    (project / "tiny.sft").write_text(SPEC.replace("batch = 8", "batch = 7"))
    assert main(["run", "tiny.sft"]) == 1
    assert "E052" in capsys.readouterr().err
    assert not (project / "runs").exists()


LORA_SPEC = """\
sft "tiny-lora"
use "sums.sft"  # tests/fixtures/specs/sums.sft, beside sums.jsonl (write_project copies both)
model {
    base = hf("base")
    adapter = lora(rank = 4, alpha = 8, dropout = 0.1, targets = [q, v])
}
train {
    steps = 6
    batch = 4
    seq_len = 16
    optimizer = adamw(lr = 1e-2)
    remat = full
}
output {
    dir = "runs/{name}"
    export = peft
}
"""


@pytest.mark.slow
def test_lora_run_trains_only_the_adapter_and_exports_for_peft(project):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    save_tiny_base(project / "base")
    tokenizer = wordlevel_tokenizer()
    (project / "lora.sft").write_text(LORA_SPEC)
    assert main(["run", "lora.sft"]) == 0
    (run_dir,) = sorted((project / "runs" / "tiny-lora").iterdir())
    export = run_dir / "export"
    adapter_config = json.loads((export / "adapter_config.json").read_text())
    assert {
        k: adapter_config[k]
        for k in (
            "base_model_name_or_path",
            "revision",
            "r",
            "lora_alpha",
            "lora_dropout",
            "target_modules",
            "task_type",
        )
    } == {
        "base_model_name_or_path": str(project / "base"),
        "revision": None,
        "r": 4,
        "lora_alpha": 8,
        "lora_dropout": 0.1,
        "target_modules": ["q_proj", "v_proj"],
        "task_type": "CAUSAL_LM",
    }
    assert json.loads((export / "generation_config.json").read_text())["eos_token_id"] == [tokenizer.eos_token_id]
    base = AutoModelForCausalLM.from_pretrained(project / "base")
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(project / "base"), export)
    ids = torch.tensor([tokenizer("what is two plus three ?")["input_ids"]])
    with torch.no_grad():
        assert not torch.allclose(base(ids).logits, tuned(ids).logits)  # the adapter learned something
        theirs = tuned(ids).logits.numpy()
    from runtime.runs.trained_run import load_trained

    np.testing.assert_allclose(np.asarray(load_trained(run_dir).model(ids.numpy())), theirs, atol=1e-4)
    plan = json.loads((run_dir / "plan.json").read_text())
    assert plan["model"]["adapter"] == {"rank": 4, "alpha": 8.0, "dropout": 0.1, "targets": ["q", "v"]}


def test_bench_times_the_specs_own_step_adapters_included(project, capsys):
    """`sftc bench` on a LoRA spec builds the run's step (engine), not a full fine-tune of the base."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = wordlevel_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
    )
    LlamaForCausalLM(config).save_pretrained(project / "base")
    tokenizer.save_pretrained(str(project / "base"))
    (project / "lora.sft").write_text(LORA_SPEC)
    assert main(["bench", "lora.sft", "--steps", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    adapters = (32 * 4 + 4 * 32) + (32 * 4 + 4 * 16)  # rank 4 on q (32 -> 32) and v (32 -> 16: one kv head)
    assert result["trainable_params"] == adapters < result["params"]


def test_bench_prints_the_documented_keys(project, capsys):
    assert main(["bench", "tiny.sft", "--steps", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"tokens_per_s", "step_ms", "compile_s", "params", "mfu", "peak_mem_bytes"} <= set(result)
    assert result["tokens_per_s"] > 0 and result["mfu"] is None  # no known peak for a CPU
    assert (result["batch"], result["micro"], result["seq_len"]) == (8, 4, 16)


@pytest.mark.slow
def test_a_run_killed_between_checkpoints_resumes_to_the_same_end(project):
    """SIGKILL after step 6 (checkpoints every 4): restarting ends with the same weights and
    the same per-step metrics as an uninterrupted run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    assert main(["run", "tiny.sft"]) == 0
    (whole,) = _runs(project)
    child = subprocess.Popen(
        [sys.executable, "-c", SLOW_RUN],
        cwd=project,
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    killed_dir = None
    while time.time() < deadline and killed_dir is None:
        time.sleep(0.1)
        for run_dir in _runs(project):
            if run_dir == whole:
                continue
            steps = [r["step"] for r in read_metrics(run_dir) if r["kind"] == "train"]
            if steps and max(steps) >= 6:
                child.send_signal(signal.SIGKILL)
                killed_dir = run_dir
    child.wait()
    assert killed_dir is not None, "the child run never reached step 6"
    assert not (killed_dir / "status.json").exists()  # killed: it could not say anything
    assert main(["run", "tiny.sft"]) == 0
    assert _runs(project)[-1] == killed_dir
    step_a, params_a = _final_params(whole)
    step_b, params_b = _final_params(killed_dir)
    assert step_a == step_b == 12
    for a, b in zip(params_a, params_b):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)

    def last_per_step(run_dir):
        return {r["step"]: r["loss"] for r in read_metrics(run_dir) if r["kind"] == "train"}

    assert last_per_step(killed_dir) == pytest.approx(last_per_step(whole), rel=1e-6)


@pytest.mark.slow
def test_a_tiny_run_overfits_a_handful_of_examples(project):
    rows = [
        {"a": "one", "b": "two", "c": "three"},
        {"a": "two", "b": "two", "c": "four"},
        {"a": "three", "b": "five", "c": "eight"},
        {"a": "four", "b": "five", "c": "nine"},
    ]
    (project / "sums.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = (
        SPEC.replace("    split eval = 10% seed 1\n", "")
        .replace("steps = 12", "steps = 60")
        .replace("batch = 8\n    micro = 4", "batch = 4\n    micro = 4")
    )
    (project / "tiny.sft").write_text(spec.replace("cosine(warmup = 2 steps)", "constant"))
    assert main(["run", "tiny.sft"]) == 0
    (run_dir,) = _runs(project)
    losses = [r["loss"] for r in read_metrics(run_dir) if r["kind"] == "train"]
    assert losses[0] > 1.0 and losses[-1] < 0.05
