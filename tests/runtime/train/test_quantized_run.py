"""A LoRA run over a 4-bit (nf4) base, end to end as a user runs it: `sftc run` trains (the loss
falls), evaluates and exports; the export holds the adapters over the original base, which
transformers (merged, `hf`) and peft (`sftc export --format peft`) load as is with the logits of
sftc's adapters over that base, within the stated quantization gap of the run's own logits."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sftlang.cli import main
from tests.runtime.data_helpers import wordlevel_tokenizer

SPEC = """\
sft "tiny-qlora"
use "sums.sft"  # tests/fixtures/specs/sums.sft, beside sums.jsonl (write_project copies both)
model {
    base = hf("base")
    adapter = lora(rank = 8, alpha = 16, targets = [q, k, v, o, gate, up, down])
    quantize = nf4
}
train {
    steps = 30
    batch = 8
    seq_len = 16
    optimizer = adamw(lr = 1e-2)
    log_every = 1 steps
}
eval {
    generate = greedy(max_new_tokens = 3)
}
output {
    dir = "runs/{name}"
    export = hf
}
"""


pytestmark = pytest.mark.slow  # ~85 s: a run, its evaluation, two exports and their checks


@pytest.fixture(scope="module")
def quantized_run(tmp_path_factory):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.runtime.run_helpers import write_project

    project = write_project(tmp_path_factory.mktemp("qlora"))
    tokenizer = wordlevel_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(project / "base")
    tokenizer.save_pretrained(str(project / "base"))
    (project / "qlora.sft").write_text(SPEC)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(project)
        patch.setenv("SFTC_CACHE", str(project / "cache"))
        assert main(["run", "qlora.sft"]) == 0
        (run_dir,) = sorted((project / "runs" / "tiny-qlora").iterdir())
        assert main(["export", str(run_dir), "--format", "peft", str(project / "adapter")]) == 0
    return project, run_dir


def test_the_run_trains_over_the_4_bit_base_and_its_export_check_states_the_gap(quantized_run):
    _, run_dir = quantized_run
    plan = json.loads((run_dir / "plan.json").read_text())
    assert plan["model"]["quantize"] == "nf4"
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["kind"] == "train"]
    assert len(losses) == 30 and np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.3, losses  # 4.4 -> 4.0 measured
    check = json.loads((run_dir / "report.json").read_text())["export_check"]
    assert check["passed"], check["message"]
    gap = check["quantization"]
    assert gap["kind"] == "nf4" and 0 < gap["max_abs_diff"] <= gap["tolerance"]
    assert check["logits"]["max_abs_diff"] <= 1e-3  # the export is exactly the adapters over the original base
    assert "nf4 base" in (run_dir / "report.md").read_text()


def test_transformers_and_peft_load_the_exports_with_the_logits_of_the_adapters_over_the_original(quantized_run):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from runtime.evaluate.export_check import QUANTIZED_LOGITS
    from runtime.runs.trained_run import load_trained
    from runtime.train.engine import StepSettings, over_original_base

    project, run_dir = quantized_run
    ids = np.array([wordlevel_tokenizer()("what is two plus three ?")["input_ids"]])
    trained = load_trained(run_dir)
    ours_quantized = np.asarray(trained.model(ids))
    original = over_original_base(
        trained.model, StepSettings.of(trained.plan), trained.config, trained.prepared.checkpoint
    )
    ours_original = np.asarray(original(ids))
    merged = AutoModelForCausalLM.from_pretrained(run_dir / "export", dtype=torch.float32).eval()
    with torch.no_grad():
        merged_logits = merged(torch.tensor(ids)).logits.numpy()
        base = AutoModelForCausalLM.from_pretrained(project / "base", dtype=torch.float32)
        peft_logits = PeftModel.from_pretrained(base, project / "adapter").eval()(torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(merged_logits, ours_original, atol=1e-4)
    np.testing.assert_allclose(peft_logits, ours_original, atol=1e-4)
    gap = np.abs(merged_logits - ours_quantized).max()
    assert 0 < gap <= QUANTIZED_LOGITS["nf4"] * np.abs(ours_quantized).max()
