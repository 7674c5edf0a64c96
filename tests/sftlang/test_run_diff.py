"""`sftc diff RUN_A RUN_B`: the spec diff plus metric deltas (better/worse by each
metric's direction), changed data fingerprints and package versions."""

import json

from sftlang.cli import main

SPEC = (
    'sft "r"\n'
    "model {\n"
    '    base = hf("org/model")\n'
    "}\n"
    'data d = jsonl("{data}")\n'
    "train {\n"
    "    optimizer = adamw(lr = {lr})\n"
    "}\n"
)


def _run(root, name, lr, metrics, fingerprint, jax_version, report=None):
    run = root / name
    run.mkdir()
    (run / "spec.sft").write_text(SPEC.replace("{data}", str(root / "d.jsonl")).replace("{lr}", lr))
    (run / "plan.json").write_text("{}")
    (run / "report.json").write_text(json.dumps({"metrics": metrics, **(report or {})}))
    manifest = {
        "data": {"fingerprints": {"d": fingerprint}},
        "packages": {"jax": jax_version},
        "devices": {"count": 1, "kind": "cpu"},
    }
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run


def test_run_diff_shows_metric_deltas_with_direction(tmp_path, capsys):
    (tmp_path / "d.jsonl").write_text('{"prompt": "p", "completion": "c"}\n')
    a = _run(
        tmp_path, "v2", "2e-5", {"loss": 1.31, "rouge_l": 0.41, "mean_tokens": 50, "loss(d)": 1.31}, "aaa", "0.10.2"
    )
    b = _run(
        tmp_path, "v3", "1e-5", {"loss": 1.12, "rouge_l": 0.40, "mean_tokens": 55, "loss(d)": 1.12}, "bbb", "0.10.3"
    )
    assert main(["diff", str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert "~ train.optimizer.lr  2e-5 -> 1e-5" in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.split()}
    assert lines["loss"].split()[-2:] == ["-0.19", "better"]
    assert lines["rouge_l"].split()[-2:] == ["-0.01", "worse"]
    assert lines["mean_tokens"].split()[-1] == "changed"
    assert "loss(d)" not in lines  # one source equal to the overall value: not repeated
    assert "~ data d  fingerprint aaa -> bbb" in out and "~ package jax  0.10.2 -> 0.10.3" in out


def test_identical_runs_are_the_same(tmp_path, capsys):
    (tmp_path / "d.jsonl").write_text('{"prompt": "p", "completion": "c"}\n')
    a = _run(tmp_path, "a", "2e-5", {"loss": 1.0}, "x", "1")
    b = _run(tmp_path, "b", "2e-5", {"loss": 1.0}, "x", "1")
    assert main(["diff", str(a), str(b), "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["same"] is True and out["runs"]["metrics"][0]["verdict"] == "same"


def test_run_diff_shows_each_run_against_its_baseline_and_changed_answers(tmp_path, capsys):
    (tmp_path / "d.jsonl").write_text('{"prompt": "p", "completion": "c"}\n')
    sample = lambda line, text: {"source": "d", "file": "d.jsonl", "line": line, "generated": text}  # noqa: E731
    a = _run(
        tmp_path,
        "a",
        "2e-5",
        {"rouge_l": 0.40, "gain(rouge_l)": 0.10},
        "x",
        "1",
        {"baseline": {"metrics": {"rouge_l": 0.30}}, "samples": [sample(1, "yes"), sample(2, "no")]},
    )
    b = _run(
        tmp_path,
        "b",
        "1e-5",
        {"rouge_l": 0.45, "gain(rouge_l)": 0.15},
        "x",
        "1",
        {"baseline": {"metrics": {"rouge_l": 0.30}}, "samples": [sample(2, "no"), sample(1, "maybe")]},
    )
    assert main(["diff", str(a), str(b)]) == 1
    out = capsys.readouterr().out
    lines = {}
    for line in out.splitlines():  # the first line of each metric: the metric table's
        if line.split():
            lines.setdefault(line.split()[0], line)
    assert lines["gain(rouge_l)"].split()[-1] == "better"  # a gain is better when it grows
    assert lines["rouge_l"].split()[-1] == "better"
    vs = [line for line in out.splitlines() if line.startswith("rouge_l ") and "->" in line]
    assert vs and "0.3 -> 0.4 (+0.1)" in vs[0] and "0.3 -> 0.45 (+0.15)" in vs[0]
    assert "answers: 1 of 2 eval samples answered differently" in out
    assert main(["diff", str(a), str(b), "--format", "json"]) == 1
    runs = json.loads(capsys.readouterr().out)["runs"]
    assert runs["baselines"] == [{"metric": "rouge_l", "old": [0.3, 0.4], "new": [0.3, 0.45]}]
    assert runs["answers_changed"] == [1, 2]
