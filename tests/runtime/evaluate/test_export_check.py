"""An export serving can trust: transformers loads it with its tokenizer, chat template and a
generation config that stops where the run's evaluation stopped (ChatML's `<|im_end|>`,
Llama 3's `<|eot_id|>`), and `sftc run` re-scores the files it wrote, refusing a run whose
export does not reproduce the run's metrics."""

from __future__ import annotations

import json
import random

import pytest

from sftlang.cli import main
from tests.fixtures import copy_fixtures
from tests.runtime.data_helpers import CHATML, LLAMA3, WORDS, wordlevel_tokenizer

pytestmark = pytest.mark.slow  # whole runs and exports: about 20 s on 2 cores

SPEC = """\
sft "served"
use "tiny-model.sft"  # tests/fixtures/specs/tiny-model.sft, copied beside this spec
data chat = jsonl("chat.jsonl") {
    split eval = 25% seed 1
}
template instruct for chat {
    prompt     = "{q}"
    completion = "{a}"
    chat       = on
}
train {
    steps = 16
    batch = 8
    seq_len = 48
    optimizer = adamw(lr = 1e-2)
    checkpoint = every 16 steps keep 1
}
eval {
    generate = greedy(max_new_tokens = 6)
    samples  = all
}
accept {
    exact_match >= 0
}
output {
    dir    = "runs/{name}"
    export = hf
}
"""

END_OF_TURN = {"chatml": "<|im_end|>", "llama3": "<|eot_id|>"}


def _write_project(root, style: str) -> None:
    wordlevel_tokenizer({"chatml": CHATML, "llama3": LLAMA3}[style]).save_pretrained(str(root / "tok"))
    rnd = random.Random(0)
    rows = [
        {
            "q": " ".join(rnd.choice(WORDS[14:70]) for _ in range(rnd.randint(1, 5))),
            "a": " ".join(("zero", "one", "two")[: rnd.choice((2, 3))]),
        }
        for _ in range(24)
    ]
    (root / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    copy_fixtures(root, "tiny-model.sft")
    (root / "served.sft").write_text(SPEC)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``runs(style)``: (root, run_dir) of a tiny chat run exported as `hf`, built once per style."""
    built: dict = {}
    with pytest.MonkeyPatch.context() as mp:  # cwd and SFTC_CACHE restored even when a build fails

        def get(style: str):
            if style not in built:
                root = tmp_path_factory.mktemp(style)
                mp.chdir(root)
                mp.setenv("SFTC_CACHE", str(root / "cache"))
                _write_project(root, style)
                assert main(["run", "served.sft"]) == 0
                (run_dir,) = sorted((root / "runs" / "served").iterdir())
                built[style] = (root, run_dir)
            return built[style]

        yield get


@pytest.mark.parametrize("style", ["chatml", pytest.param("llama3", marks=pytest.mark.slow)])
def test_transformers_stops_where_the_run_stopped(runs, style):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from runtime.evaluate.answers import answer_ids, sampling_for, select_prompts
    from runtime.runs.trained_run import load_trained

    root, run_dir = runs(style)
    export = run_dir / "export"
    tokenizer = AutoTokenizer.from_pretrained(export)
    end = tokenizer.convert_tokens_to_ids(END_OF_TURN[style])
    generation_config = GenerationConfig.from_pretrained(export)
    assert sorted(generation_config.eos_token_id) == sorted({tokenizer.eos_token_id, end})
    assert (generation_config.bos_token_id, generation_config.pad_token_id) == (
        tokenizer.bos_token_id,
        tokenizer.pad_token_id,
    )
    assert tokenizer.chat_template == {"chatml": CHATML, "llama3": LLAMA3}[style]

    trained = load_trained(run_dir)
    chosen = select_prompts(trained.with_data().pipeline, None)
    prompts = [prompt.tolist() for _, prompt, _ in chosen]
    ours = answer_ids(trained.model, trained.tokenizer, prompts, 6, sampling_for(trained.plan.eval.generate), seed=0)
    model = AutoModelForCausalLM.from_pretrained(export)
    stopped = 0
    for prompt, (tokens, finished) in zip(prompts, ours):
        with torch.no_grad():
            out = model.generate(
                torch.tensor([prompt]), generation_config=generation_config, max_new_tokens=6, do_sample=False
            )
        theirs = out[0, len(prompt) :].tolist()
        assert theirs == tokens + ([end] if finished else [])
        stopped += finished
    assert stopped >= len(prompts) // 2  # the answers end at the end-of-turn token, not at max_new_tokens


def test_the_run_rescores_its_export_from_disk(runs):
    _, run_dir = runs("chatml")
    report = json.loads((run_dir / "report.json").read_text())
    check = report["export_check"]
    assert report["accepted"] is True and check["passed"] is True and check["exact"] is True
    assert (check["rows"], check["rows_differing"]) == (6, 0)
    assert check["metrics"]["exact_match"]["run"] == check["metrics"]["exact_match"]["export"]
    assert check["logits"]["max_abs_diff"] <= check["logits"]["tolerance"] == 1e-3
    assert "## Export check" in (run_dir / "report.md").read_text()


def test_an_altered_export_rejects_the_run(tmp_path, monkeypatch, capsys):
    """The saver writes, then one weight changes on disk (a bad conversion, a damaged copy)."""
    from safetensors.numpy import load_file, save_file

    import runtime.checkpoints.hf_checkpoint

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SFTC_CACHE", str(tmp_path / "cache"))
    _write_project(tmp_path, "chatml")
    save = runtime.checkpoints.hf_checkpoint.save_pretrained

    def altered(*args, **kwargs):
        out = save(*args, **kwargs)
        tensors = load_file(str(out / "model.safetensors"))
        tensors["model.layers.0.mlp.down_proj.weight"] *= 1.1
        save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
        return out

    monkeypatch.setattr(runtime.checkpoints.hf_checkpoint, "save_pretrained", altered)
    assert main(["run", "served.sft"]) == 3
    assert "export check failed" in capsys.readouterr().err
    (run_dir,) = sorted((tmp_path / "runs" / "served").iterdir())
    report = json.loads((run_dir / "report.json").read_text())
    assert report["accepted"] is False and report["export_check"]["passed"] is False
    assert report["export_check"]["logits"]["max_abs_diff"] > 1e-3
    assert "export check failed" in (run_dir / "report.md").read_text()
