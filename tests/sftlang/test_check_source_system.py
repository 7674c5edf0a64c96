"""A source's `system` message goes first in each conversation the chat template renders.
Rows that no chat template renders (prompt/completion or Alpaca without `chat = on`, `text`,
token ids) cannot carry it: `sftc check` says so at the `system` setting (E045), and the run
refuses it too (tests/runtime/data/test_row_shapes.py), so it is never dropped without a word."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sftlang.check import check_spec_file
from sftlang.diagnostics import render_plain

from .test_check_shapes import spec_text  # the same tiny spec; `project` comes from conftest.py

SYSTEM = '    system = "Be brief."'


def check(project: Path, rows: list[dict], template: str = ""):
    (project / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = project / "spec.sft"
    path.write_text(spec_text(f'data rows = jsonl("rows.jsonl") {{\n{SYSTEM}\n}}', template))
    _, problems = check_spec_file(path, devices=1, offline=True)
    return problems


PC = [{"q": "2 + 2?", "a": "4"}]
ALPACA = [{"instruction": "add 2 and 2", "input": "", "output": "4"}]
CASES = {  # rows, template, the reason, the help
    "prompt/completion": (
        PC,
        'template t for rows {\n    prompt = "{q}"\n    completion = " {a}"\n}',
        "its prompt/completion rows are rendered as plain text, without the chat template, "
        "so no turn would carry the system message",
        "set `chat = on` on template `t` (the prompt becomes a user turn after the system message, "
        "rendered with the tokenizer's chat template), or remove `system`",
    ),
    "prompt/completion columns": (
        [{"prompt": "2 + 2?", "completion": " 4"}],
        "",
        "its prompt/completion rows are rendered as plain text, without the chat template, "
        "so no turn would carry the system message",
        "give it a template with `chat = on`, "
        '`template NAME for rows { prompt = "{prompt}"  completion = "{completion}"  chat = on }`, or remove `system`',
    ),
    "alpaca": (
        ALPACA,
        "template t for rows {\n    format = alpaca\n}",
        "its Alpaca rows are rendered as plain text, without the chat template, "
        "so no turn would carry the system message",
        "set `chat = on` on template `t` (the prompt becomes a user turn after the system message, "
        "rendered with the tokenizer's chat template), or remove `system`",
    ),
    "alpaca columns": (
        ALPACA,
        "",
        "its Alpaca rows are rendered as plain text, without the chat template, "
        "so no turn would carry the system message",
        "give it a template with `chat = on`, "
        "`template NAME for rows { format = alpaca  chat = on }`, or remove `system`",
    ),
    "text": (
        [{"text": "hello world"}],
        "",
        "its `text` rows are trained as written, with no turns to put a system message before",
        "remove `system`, or write the system text into the rows",
    ),
    "tokens": (
        [{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}],
        "template t for rows {\n    format = tokens\n}",
        "its rows are token ids already (pre-tokenized)",
        "remove `system`",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_system_message_no_chat_template_renders_is_an_error_at_the_setting(project, case):
    rows, template, reason, fix = CASES[case]
    (problem,) = check(project, rows, template)
    assert (problem.code, problem.span.line, problem.span.column) == ("E045", 7, 5)
    assert problem.message == f"`system` does not apply to `rows`: {reason}"
    assert problem.help == fix
    shown = render_plain(problem)
    assert "spec.sft:7:5" in shown and SYSTEM in shown and "    ^" in shown


@pytest.mark.parametrize("case", ["prompt/completion", "alpaca"])
def test_with_chat_on_the_system_message_applies(project, case):
    rows, template, _, _ = CASES[case]
    assert check(project, rows, template.replace("\n}", "\n    chat = on\n}")) == []


def test_a_conversation_takes_the_system_message(project):
    rows = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}]
    assert check(project, rows) == []
