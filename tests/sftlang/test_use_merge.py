"""`use`: a derived spec that gives a call of the same function again changes only the
arguments it writes (`optimizer = adamw(lr = 1e-3)` keeps the base's `b2 = 0.95`); a call of
another function replaces the whole value; `sftc diff base derived` shows the effective change.
A diagnostic that names a setting of the other file names that file."""

from __future__ import annotations

import json

import pytest

from sftlang.check import check_spec_file
from sftlang.cli import main
from sftlang.diagnostics import render_plain
from sftlang.lower import lower
from sftlang.resolve import load_spec

BASE = """\
sft "base"
model {
    base = init llama(layers = 2, dim = 64, heads = 4, ffn = 128, max_seq_len = 256)
    tokenizer = sentencepiece("tok.model")
    adapter = none
}
data tickets = jsonl("tickets.jsonl") {
    split eval = 10% seed 1
}
template answer for tickets {
    prompt = "Q: {question}\\nA: "
    completion = "{answer}"
}
train {
    epochs = 2
    batch = 4
    optimizer = adamw(lr = 2e-5, b2 = 0.95, weight_decay = 0.01)
    schedule = cosine(warmup = 5%, min_lr = 10%)
}
eval {
    generate = sample(temperature = 0.7, top_p = 0.9)
}
"""


@pytest.fixture()
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tok.model").write_bytes(b"not read by check")
    (tmp_path / "tickets.jsonl").write_text(
        "".join(json.dumps({"question": f"q{i}", "answer": f"a{i}"}) + "\n" for i in range(20))
    )
    (tmp_path / "base.sft").write_text(BASE)
    return tmp_path


def derived(project, body: str):
    path = project / "derived.sft"
    path.write_text(f'sft "derived"\nuse "base.sft"\n{body}')
    return path


def resolved(path):
    spec, problems = load_spec(path)
    assert spec is not None, problems
    return spec


def test_a_call_of_the_same_function_keeps_the_arguments_it_does_not_give(project):
    spec = resolved(
        derived(project, "train {\n    optimizer = adamw(lr = 1e-3)\n    schedule = cosine(warmup = 10%)\n}\n")
    )
    optimizer = lower(spec).train.optimizer
    assert (optimizer.name, optimizer.lr, optimizer.b2, optimizer.weight_decay) == ("adamw", 1e-3, 0.95, 0.01)
    schedule = spec.value("train", "schedule")
    assert {a.name.name: a.value for a in schedule.args}["min_lr"].text == "10%"  # the base's
    base_spec = resolved(project / "base.sft")
    assert lower(base_spec).train.optimizer.b2 == 0.95


def test_another_function_replaces_the_whole_value(project):
    spec = resolved(
        derived(project, "train {\n    optimizer = sgd(lr = 1e-2)\n}\neval {\n    generate = greedy()\n}\n")
    )
    assert lower(spec).train.optimizer.name == "sgd"
    assert spec.value("eval", "generate").head.name == "greedy"


def test_sample_keeps_top_p_and_init_keeps_its_optional_shape(project):
    spec = resolved(
        derived(
            project,
            "model {\n    base = init llama(layers = 4, dim = 64, heads = 4, ffn = 128)\n}\n"
            "eval {\n    generate = sample(temperature = 1.0)\n}\n",
        )
    )
    generate = {a.name.name: a.value.value for a in spec.value("eval", "generate").args}
    assert (generate["temperature"], generate["top_p"]) == (1.0, 0.9)
    init = lower(spec).model.init
    assert (init.layers, init.max_seq_len) == (4, 256)


def test_a_path_call_is_replaced_whole(project):
    (project / "other.model").write_bytes(b"x")
    spec = resolved(derived(project, 'model {\n    tokenizer = sentencepiece("other.model")\n}\n'))
    assert [a.value.value for a in spec.value("model", "tokenizer").args] == ["other.model"]


def test_diff_of_base_and_derived_shows_only_the_effective_change(project, capsys):
    derived(project, "train {\n    optimizer = adamw(lr = 1e-3)\n}\n")
    assert main(["diff", "base.sft", "derived.sft"]) == 1
    out = capsys.readouterr().out
    changed = [line for line in out.splitlines() if line.startswith(("~", "+", "-"))]
    assert changed == ['~ name                "base" -> "derived"', "~ train.optimizer.lr  2e-5 -> 1e-3"], out


def test_epochs_and_steps_in_two_files_name_the_other_file(project):
    path = derived(project, "train {\n    steps = 10\n}\n")
    _, problems = check_spec_file(path, devices=1, offline=True)
    found = [d for d in problems if d.code == "E056"]
    assert len(found) == 1, [render_plain(d) for d in problems]
    d = found[0]
    assert (d.span.file, d.span.line, d.span.column) == ("derived.sft", 4, 5)
    assert d.help == "`epochs` is set at base.sft:15"


def test_a_second_template_for_a_source_names_the_file_of_the_first(project):
    path = derived(project, 'template other for tickets {\n    prompt = "{question}"\n    completion = "{answer}"\n}\n')
    _, problems = check_spec_file(path, devices=1, offline=True)
    found = [d for d in problems if d.code == "E043"]
    assert [(d.span.file, d.span.line, d.help) for d in found] == [
        ("derived.sft", 3, "see base.sft:10; a source takes one template")
    ], [render_plain(d) for d in problems]
