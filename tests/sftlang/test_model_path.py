"""`hf("...")`: a local path or a hub id? One rule (`runtime.plan.hub_policy.local_path_reason`), read the same
by `sftc check`, `sftc plan` and the run. A mistyped local directory is said to be missing, with the
absolute path that was looked for, instead of being taken for a hub id."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sftlang.check import check_spec_file
from sftlang.diagnostics import render_plain
from sftlang.lower import lower

SPEC = """\
sft "t"
model {
    base = hf(BASE)
}
data tickets = jsonl("tickets.jsonl") {
    split eval = 10% seed 1
}
template answer for tickets {
    prompt = "Q: {question}\\nA: "
    completion = "{answer}"
}
train {
    steps = 10
    batch = 2
}
"""


@pytest.fixture()
def workdir(tmp_path):
    (tmp_path / "tickets.jsonl").write_text('{"question": "q", "answer": "a"}\n' * 20)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf").write_bytes(b"")
    return tmp_path


def _check(workdir, base: str):
    spec = workdir / "t.sft"
    spec.write_text(SPEC.replace("BASE", base))
    return spec, check_spec_file(spec, devices=1, offline=True)


@pytest.mark.parametrize(
    "text, local",
    [
        ("HuggingFaceTB/SmolLM2-135M-Instruct", False),  # a hub id, even with no network
        ("meta-llama/Llama-3.2-1B", False),
        ("models/SmolLM2-135M-Instruct", True),  # `models/` exists beside the spec
        ("./SmolLM2", True),
        ("../models/SmolLM2", True),
        ("/opt/models/SmolLM2", True),
        ("~/models/SmolLM2", True),
        ("checkpoints/run/final", True),  # two `/`: never a hub id
        ("org/model.gguf", True),
        ("SmolLM2", True),  # no `/`
        ("my models/x", True),  # a space: not a hub id
    ],
)
def test_the_rule(workdir, text, local):
    from runtime.plan.hub_policy import local_path_reason

    assert (local_path_reason(text, workdir) is not None) is local


def test_a_revision_makes_org_name_a_hub_id_even_beside_a_directory_of_that_org(workdir):
    from runtime.plan.hub_policy import local_path_reason

    assert local_path_reason("models/SmolLM2-135M-Instruct", workdir) is not None
    assert local_path_reason("models/SmolLM2-135M-Instruct", workdir, revision="main") is None


def test_check_says_the_local_directory_is_missing_with_the_path_it_looked_for(workdir):
    spec, (_, problems) = _check(workdir, '"models/SmolLM2-135M-Instruct"')
    errors = [d for d in problems if d.is_error]
    assert [d.code for d in errors] == ["E036"]
    d = errors[0]
    looked = os.path.join(str(workdir), "models", "SmolLM2-135M-Instruct")
    assert d.message == f"no local model directory `models/SmolLM2-135M-Instruct`: looked for {looked}"
    # a diagnostic names its file relative to the cwd when that is shorter: compare the files
    assert (Path(d.span.file).resolve(), d.span.line, d.span.column) == (Path(spec).resolve(), 3, 15)
    rendered = render_plain(d)
    assert '3 |     base = hf("models/SmolLM2-135M-Instruct")' in rendered
    assert "              ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^" in rendered
    assert "`models/` is a local directory" in d.help
    assert "did you mean `SmolLM2-135M-Instruct.Q4_1.gguf`?" in d.help


def test_check_keeps_reading_a_hub_id_as_one_and_names_the_local_path_it_did_not_find(workdir):
    _, (_, problems) = _check(workdir, '"HuggingFaceTB/SmolLM2-135M-Instruct"')
    assert [d.code for d in problems] == ["W001"]
    looked = os.path.join(str(workdir), "HuggingFaceTB", "SmolLM2-135M-Instruct")
    assert f"there is no local directory {looked}, so it is read as a hub id" in problems[0].help


def test_plan_carries_the_absolute_path_of_a_missing_local_directory(workdir):
    spec, _ = _check(workdir, '"models/SmolLM2-135M-Instruct"')
    from sftlang.resolve import load_spec

    resolved, _ = load_spec(spec)
    assert lower(resolved).model.path == os.path.join(str(workdir), "models", "SmolLM2-135M-Instruct")
    spec.write_text(SPEC.replace("BASE", '"HuggingFaceTB/SmolLM2-135M-Instruct"'))
    resolved, _ = load_spec(spec)
    assert lower(resolved).model.path == "HuggingFaceTB/SmolLM2-135M-Instruct"
