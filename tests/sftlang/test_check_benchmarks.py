"""`eval.benchmarks = lm_eval(...)` and the gates on its tasks, as `sftc check` and the plan see
them: a table of specs and the diagnostic each must give, and the plan a valid one lowers to."""

from __future__ import annotations

from pathlib import Path

import pytest

from sftlang.check import check_spec_file
from sftlang.lower import lower

SPEC = """\
sft "demo"

model {{
    base = init llama(layers = 2, dim = 64, heads = 4, ffn = 128)
    tokenizer = train sentencepiece(vocab = 300) on rows
}}

data rows = jsonl("rows.jsonl") {{
    split eval = 10%
}}

template qa for rows {{
    prompt = "Q: {{question}}\\nA: "
    completion = "{{answer}}"
}}

train {{
    steps = 20
    batch = 4
}}

eval {{
    benchmarks = {benchmarks}
}}

accept {{
    {gate}
}}
"""

TASK = """\
task: my_mc
dataset_path: json
output_type: multiple_choice
doc_to_text: "{{question}}"
process_docs: !function utils.process_docs
metric_list:
  - metric: acc
  - metric: acc_norm
"""


@pytest.fixture()
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rows.jsonl").write_text('{"question": "a?", "answer": "b"}\n{"question": "c?", "answer": "d"}\n')
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "my_mc.yaml").write_text(TASK)
    return tmp_path


def check(project: Path, gate: str, benchmarks: str = 'lm_eval(tasks = [my_mc], include = "tasks", limit = 5)'):
    path = project / "spec.sft"
    path.write_text(SPEC.format(benchmarks=benchmarks, gate=gate))
    return check_spec_file(path, devices=1, offline=True)


def test_a_gate_on_a_local_task_lowers_to_the_plan(project):
    spec, problems = check(project, "acc_norm(my_mc) >= 0.3")
    assert [p for p in problems if p.is_error] == []
    plan = lower(spec)
    bench = plan.eval.benchmarks
    assert bench is not None
    assert bench.tasks == ("my_mc",) and bench.limit == 5 and bench.num_fewshot is None
    assert bench.include == str((project / "tasks").resolve())
    (gate,) = plan.gates
    assert (gate.metric, gate.task, gate.source, gate.text) == ("acc_norm", "my_mc", None, "acc_norm(my_mc)")


def test_without_benchmarks_the_plan_has_none(project):
    spec, problems = check(project, "loss <= 3", benchmarks="off")
    assert not [p for p in problems if p.is_error]
    assert lower(spec).eval.benchmarks is None


@pytest.mark.parametrize(
    ("gate", "benchmarks", "code", "words"),
    [
        ("acc >= 0.2", None, "E014", "name the task"),
        ("acc(rows) >= 0.2", None, "E075", "`rows` is a data source, not a task"),
        ("acc(my_mcq) >= 0.2", None, "E075", "did you mean `my_mc`"),
        ("f1(my_mc) >= 0.2", None, "E076", "does not report `f1`"),
        ("rouge_l(my_mc) >= 0.2", None, "E076", "not a metric of benchmark tasks"),
        ("gain(acc(my_mc)) >= -1%", None, "E066", "trained from scratch"),
        ("acc(my_mc) >= 2", None, "E063", "can never be reached"),
        ("loss <= 3", 'lm_eval(tasks = [rows], include = "tasks")', "E075", "name of a data source"),
        ("loss <= 3", 'lm_eval(tasks = [my_mc], include = "nope")', "E036", "no task folder"),
        ("acc(my_mc) >= 0.2", "off", "E075", "add `benchmarks = lm_eval"),
        ("loss <= 3", 'lm_eval(include = "tasks")', "E014", "needs the argument `tasks`"),
    ],
)
def test_each_mistake_gets_its_diagnostic(project, gate, benchmarks, code, words):
    _, problems = check(project, gate, *([benchmarks] if benchmarks else []))
    found = [p for p in problems if p.code == code]
    assert found, [(p.code, p.message) for p in problems]
    assert any(words in p.message or words in (p.help or "") for p in found), [(p.message, p.help) for p in found]


def test_an_unknown_shipped_task_is_a_warning_with_the_close_name(project):
    pytest.importorskip("lm_eval")
    spec, problems = check(project, "loss <= 3", benchmarks="lm_eval(tasks = [arc_eassy])")
    (warning,) = [p for p in problems if p.code == "W008"]
    assert not warning.is_error and "arc_easy" in (warning.help or "")
    _, problems = check(project, "acc(arc_easy) >= 0.2", benchmarks="lm_eval(tasks = [arc_easy, hellaswag])")
    assert not [p for p in problems if p.code == "W008" or p.is_error]


def test_lm_eval_missing_names_the_extra(project, monkeypatch):
    import sftlang.check as check_module

    monkeypatch.setattr(check_module, "package_installed", lambda name: name != "lm_eval")
    _, problems = check(project, "acc(my_mc) >= 0.2")
    (missing,) = [p for p in problems if p.code == "E073"]
    assert "pip install 'sftc[lm_eval]'" in missing.message


@pytest.mark.parametrize(
    ("model_type", "code"), [("", "E077"), (", model_type = unigram", "E077"), (", model_type = bpe", None)]
)
def test_a_gguf_export_needs_a_bpe_sentencepiece_tokenizer(project, model_type, code):
    """llama.cpp reads every SentencePiece vocabulary as BPE: a unigram one is refused before training."""
    path = project / "spec.sft"
    text = SPEC.format(benchmarks="off", gate="loss <= 3").replace(
        "train sentencepiece(vocab = 300)", f"train sentencepiece(vocab = 300{model_type})"
    )
    path.write_text(text + "output {\n    export = gguf\n}\n")
    _, problems = check_spec_file(path, devices=1, offline=True)
    assert [p.code for p in problems if p.code == "E077"] == ([code] if code else [])
