"""Using a trained run: `sftc eval` (own and edited gates), `generate`, `chat`, `export`,
and `sftc run` rejecting a spec whose gate cannot hold (exit 3, no export, a report
that says why)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sftlang.cli import main
from tests.runtime.data_helpers import wordlevel_tokenizer
from tests.runtime.run_helpers import NUMBERS, SPEC

pytestmark = pytest.mark.slow  # whole runs of the tool-call spec: about 25 s on 2 cores

GATED = SPEC.replace(
    'output {\n    dir = "runs/{name}"\n}\n',
    "eval {\n    generate = greedy(max_new_tokens = 3)\n}\n"
    "accept {\n    loss <= 50\n    json_valid >= 0\n}\n"
    'output {\n    dir = "runs/{name}"\n}\n',
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("tools")
    with pytest.MonkeyPatch.context() as mp:  # cwd and SFTC_CACHE restored even when the setup fails
        mp.chdir(root)
        mp.setenv("SFTC_CACHE", str(root / "cache"))
        wordlevel_tokenizer().save_pretrained(str(root / "tok"))
        rows = [{"a": NUMBERS[a], "b": NUMBERS[b], "c": NUMBERS[(a + b) % 10]} for a in range(10) for b in range(10)]
        (root / "sums.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (root / "tiny.sft").write_text(GATED)
        assert main(["run", "tiny.sft"]) == 0
        (run_dir,) = sorted((root / "runs" / "tiny").iterdir())
        yield root, run_dir


def test_report_has_the_gates(trained):
    _, run_dir = trained
    report = json.loads((run_dir / "report.json").read_text())
    assert report["accepted"] is True
    assert [g["gate"] for g in report["gates"]] == ["loss", "json_valid"]
    assert "loss.png" in (run_dir / "report.md").read_text()


def test_eval_with_the_runs_gates_and_with_an_edited_spec(trained, capsys):
    root, run_dir = trained
    assert main(["eval", str(run_dir)]) == 0
    strict = root / "strict.sft"
    strict.write_text(GATED.replace("loss <= 50", "loss <= 0.0001"))
    assert main(["eval", str(run_dir), "--spec", str(strict)]) == 3
    err = capsys.readouterr().err
    assert "loss" in err and "✗" in err
    assert len(list((run_dir / "evals").iterdir())) == 2


def test_generate_from_rows_and_refuses_ambiguous_text(trained, capsys):
    root, run_dir = trained
    prompts = root / "prompts.jsonl"
    prompts.write_text('{"a": "two", "b": "three"}\n{"a": "one", "b": "one"}\n')
    assert main(["generate", str(run_dir), "--file", str(prompts), "--json", "--max-new-tokens", "2"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [line["input"] for line in lines] == [{"a": "two", "b": "three"}, {"a": "one", "b": "one"}]
    assert all(line["tokens"] <= 2 for line in lines)
    assert main(["generate", str(run_dir), "--prompt", "two"]) == 1
    assert "takes the columns a, b" in capsys.readouterr().err


def test_chat_streams_answers(trained, monkeypatch, capsys):
    root, run_dir = trained
    # the tiny template takes two columns, so a line of text cannot fill it: refused up front
    assert main(["chat", str(run_dir)]) == 2
    assert "one placeholder" in capsys.readouterr().err
    from runtime.runs.trained_run import load_trained

    trained_run = load_trained(run_dir)
    answers = iter(["two", "three"])
    asked = []

    def fake_input(prompt=""):
        asked.append(prompt)
        try:
            return next(answers)
        except StopIteration:
            raise EOFError from None

    monkeypatch.setattr("builtins.input", fake_input)
    one_column = dict(trained_run.plan.data.templates)
    import dataclasses

    from runtime.plan.data_plan import TemplateSpec

    one_column["sums"] = TemplateSpec(prompt="what is {a} plus two ? ", completion="{c}")
    data = dataclasses.replace(trained_run.plan.data, templates=one_column)
    plan = dataclasses.replace(trained_run.plan, data=data)
    monkeypatch.setattr("runtime.runs.trained_run.read_plan", lambda _: plan)
    assert main(["chat", str(run_dir), "--max-new-tokens", "2"]) == 0
    out = capsys.readouterr().out
    assert asked == ["> ", "> ", "> "]  # two answered prompts, then end of input
    assert out.startswith("tiny at step 12")


def test_export_loads_in_transformers(trained):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from runtime.runs.trained_run import load_trained

    root, run_dir = trained
    assert main(["export", str(run_dir), str(root / "out")]) == 0
    model = AutoModelForCausalLM.from_pretrained(root / "out")
    tokenizer = AutoTokenizer.from_pretrained(root / "out")
    ids = tokenizer("what is two plus three ?")["input_ids"]
    with torch.no_grad():
        theirs = model(torch.tensor([ids])).logits.numpy()
    ours = np.asarray(load_trained(run_dir).model(np.array([ids])))
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


def test_impossible_gate_rejects_the_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SFTC_CACHE", str(tmp_path / "cache"))
    wordlevel_tokenizer().save_pretrained(str(tmp_path / "tok"))
    rows = [{"a": NUMBERS[a], "b": NUMBERS[b], "c": NUMBERS[(a + b) % 10]} for a in range(10) for b in range(10)]
    (tmp_path / "sums.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "tiny.sft").write_text(
        GATED.replace("json_valid >= 0", "exact_match >= 1.0").replace("steps = 12", "steps = 4")
    )
    assert main(["run", "tiny.sft"]) == 3
    err = capsys.readouterr().err
    assert "exact_match" in err and "no export" in err
    (run_dir,) = sorted((tmp_path / "runs" / "tiny").iterdir())
    assert not (run_dir / "export").exists()
    report = json.loads((run_dir / "report.json").read_text())
    assert report["accepted"] is False
    failing = [g for g in report["gates"] if not g["passed"]]
    assert [g["gate"] for g in failing] == ["exact_match"]
