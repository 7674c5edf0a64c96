"""`sftc check` agrees with the run about bad rows of every shape: a line that is not JSON is a
row the run skips and counts with `on_bad_row = skip` (a warning, not E046), and a row the run
refuses because a template's column is null, missing, not a string, or leaves the completion
empty (prompt/completion and text rows too) is found before the run (E071, or W006 with skip)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sftlang.check import check_spec_file
from sftlang.diagnostics import render_plain

SPEC = """\
model {
    base = init llama(layers = 2, dim = 64, heads = 4, ffn = 128)
    tokenizer = sentencepiece("tok.model")
}
data tickets = jsonl("tickets.jsonl") {
    split eval = 10% seed 1
SETTINGS}
TEMPLATE
train {
    steps = 10
    batch = 4
}
"""
PROMPT_COMPLETION = """template answer for tickets {
    prompt = "Q: {question}\\nA: "
    completion = "{answer}"
CHAT}"""


@pytest.fixture()
def project(tmp_path):
    (tmp_path / "tok.model").write_bytes(b"not read by check")
    return tmp_path


def check(project, lines: list[str], skip: bool = False, template: str = PROMPT_COMPLETION, chat: bool = False):
    (project / "tickets.jsonl").write_text("".join(line + "\n" for line in lines))
    text = SPEC.replace("SETTINGS", "    on_bad_row = skip\n" if skip else "").replace("TEMPLATE", template)
    spec = project / "spec.sft"
    spec.write_text(text.replace("CHAT", "    chat = on\n" if chat else ""))
    _, problems = check_spec_file(spec, devices=1, offline=True)
    return spec, problems


def rows(n: int = 20, **fields) -> list[str]:
    return [json.dumps({"question": f"q{i}", "answer": f"a{i}", **fields}) for i in range(n)]


def test_an_invalid_json_line_with_skip_is_a_row_the_run_skips_not_a_stop(project):
    lines = rows()
    lines[3] = '{"question": "broken", "answer": '
    spec, problems = check(project, lines, skip=True)
    assert [d.code for d in problems] == ["W006"]
    d = problems[0]
    assert (
        d.message == "data tickets: tickets.jsonl line 4: not valid JSON (Expecting value: line 1 column 34 (char 33))"
    )
    # a diagnostic names its file relative to the cwd when that is shorter: compare the files
    assert (Path(d.span.file).resolve(), d.span.line, d.span.column) == (Path(spec).resolve(), 5, 16)
    assert "^^^^^^^^^^^^^^^^^^^^^^" in render_plain(d)


def test_an_invalid_json_line_without_skip_stays_an_error(project):
    lines = rows()
    lines[3] = '{"question": "broken", "answer": '
    spec, problems = check(project, lines)
    errors = [d for d in problems if d.is_error]
    assert [(d.code, d.span.line, d.span.column) for d in errors] == [("E046", 5, 22)]
    assert errors[0].message.startswith("data file `tickets.jsonl` line 4 is not valid JSON")


def test_a_null_completion_column_is_found_by_check_as_the_run_refuses_it(project):
    lines = rows()
    lines[5] = json.dumps({"question": "q", "answer": None})
    spec, problems = check(project, lines)
    assert [(d.code, d.message, d.span.line, d.span.column) for d in problems] == [
        ("E071", "data tickets: tickets.jsonl line 6, column `answer`: value is null or missing", 5, 16)
    ]
    _, problems = check(project, lines, skip=True)
    assert [(d.code, d.message) for d in problems] == [
        ("W006", "data tickets: tickets.jsonl line 6, column `answer`: value is null or missing")
    ]


@pytest.mark.parametrize(
    "row, reason",
    [
        ({"question": None, "answer": "a"}, "column `question`: value is null or missing"),
        ({"answer": "a"}, "column `question`: missing column 'question'"),
        ({"question": "q", "answer": 3}, "column `answer`: value is int (3), not a string"),
        ({"question": "q", "answer": "  "}, "column `answer`: empty completion"),
    ],
)
def test_every_problem_the_template_meets_is_found(project, row, reason):
    lines = rows()
    lines[7] = json.dumps(row)
    _, problems = check(project, lines)
    assert [(d.code, d.message) for d in problems] == [("E071", f"data tickets: tickets.jsonl line 8, {reason}")]


def test_chat_on_prompt_completion_rows_too(project):
    lines = rows()
    lines[2] = json.dumps({"question": "q", "answer": None})
    _, problems = check(project, lines, chat=True)
    assert [(d.code, d.message) for d in problems] == [
        ("E071", "data tickets: tickets.jsonl line 3, column `answer`: value is null or missing")
    ]


def test_conventional_prompt_completion_and_text_rows(project):
    lines = [json.dumps({"prompt": f"p{i}", "completion": f"c{i}"}) for i in range(20)]
    lines[4] = json.dumps({"prompt": "p", "completion": None})
    _, problems = check(project, lines, template="")
    assert [(d.code, d.message) for d in problems] == [
        ("E071", "data tickets: tickets.jsonl line 5, column `completion`: value is null or missing")
    ]
    lines = [json.dumps({"text": f"t{i}"}) for i in range(20)]
    lines[9] = json.dumps({"text": None})
    _, problems = check(project, lines, template="")
    assert [(d.code, d.message) for d in problems] == [
        ("E071", "data tickets: tickets.jsonl line 10, column `text`: value is null or missing")
    ]


def test_clean_rows_stay_clean(project):
    _, problems = check(project, rows())
    assert problems == []
