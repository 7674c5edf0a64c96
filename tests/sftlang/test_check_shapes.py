"""`sftc check` runs the runtime's row-shape rules (runtime.plan.row_shapes) on a sample of each
local file: its first rows and rows spread to its end. Each test writes a small file the
way other tools write them (ShareGPT, OpenAI tool calls, Alpaca, pre-tokenized) and a spec
that reads it, and names the diagnostic a user must see, or none."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from sftlang.check import check_spec_file
from sftlang.cli import main
from sftlang.columns import sample_rows
from sftlang.diagnostics import render_plain
from sftlang.files import FileSystem


def spec_text(data: str, template: str = "") -> str:
    return f"""\
model {{
    base = init llama(layers = 2, dim = 64, heads = 4, ffn = 128)
    tokenizer = sentencepiece("tok.model")
}}

{data}

{template}

train {{
    steps = 10
    batch = 4
}}
"""


def jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def check(project: Path, text: str):
    path = project / "spec.sft"
    path.write_text(text)
    _, problems = check_spec_file(path, devices=1, offline=True)
    return problems


def messages(*turns) -> list[dict]:
    return [{"role": role, "content": content} for role, content in turns]


SHAREGPT = {"conversations": [{"from": "human", "value": "my order?"}, {"from": "bot", "value": "on its way"}]}
CHAT = messages(("user", "hi"), ("assistant", "hello"))


# ---------------------------------------------------------------- conversations


def test_sharegpt_role_the_run_does_not_know_and_the_roles_fix(project):
    jsonl(project / "chats.jsonl", [SHAREGPT] * 3)
    text = spec_text('data chats = jsonl("chats.jsonl")', "template chat for chats {\n    messages = conversations\n}")
    problems = check(project, text)
    assert [d.code for d in problems] == ["E071"] * 3
    first = problems[0]
    assert first.message.startswith(
        "data chats: chats.jsonl line 1, column `conversations`, message 1: unknown role 'bot'"
    )
    assert "roles = (bot = " in first.message
    assert (first.span.line, first.span.column) == (6, 14)  # the `jsonl("chats.jsonl")` call
    assert first.note == "checked all 3 rows; 3 have a problem"
    assert "on_bad_row = skip" in first.help
    fixed = text.replace("messages = conversations", "messages = conversations\n    roles = (bot = assistant)")
    assert check(project, fixed) == []


def test_conventional_conversations_column_is_sampled_too(project):
    jsonl(
        project / "chats.jsonl",
        [SHAREGPT, {"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]}],
    )
    (problem,) = check(project, spec_text('data chats = jsonl("chats.jsonl")'))
    assert problem.code == "E071" and "line 1, column `conversations`, message 1: unknown role 'bot'" in problem.message


def test_tool_message_without_a_call(project):
    row = {"messages": messages(("user", "weather?"), ("tool", '{"temp": 21}'), ("assistant", "21 degrees"))}
    jsonl(project / "tools.jsonl", [{"messages": CHAT}, row])
    (problem,) = check(project, spec_text('data tools = jsonl("tools.jsonl")'))
    assert problem.code == "E071"
    assert problem.message == (
        "data tools: tools.jsonl line 2, column `messages`, message 1: a tool message without a preceding "
        "tool call (an assistant message with tool_calls)"
    )
    assert problem.note == "checked all 2 rows; 1 has a problem"


def test_tool_calls_with_schemas_are_clean_and_a_bad_tools_column_is_not(project):
    call = {"type": "function", "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}}
    conversation = [
        {"role": "user", "content": "weather in Oslo?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "content": '{"temp": 21}'},
        {"role": "assistant", "content": "21 degrees"},
    ]
    schema = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
    jsonl(project / "tools.jsonl", [{"messages": conversation, "functions": schema}] * 2)
    template = "template calls for tools {\n    messages = messages\n    tools    = functions\n}"
    assert check(project, spec_text('data tools = jsonl("tools.jsonl")', template)) == []
    jsonl(project / "tools.jsonl", [{"messages": conversation, "functions": "[{not json"}])
    (problem,) = check(project, spec_text('data tools = jsonl("tools.jsonl")', template))
    assert problem.code == "E071" and "column `functions`: tools is not valid JSON" in problem.message


def test_tools_must_be_a_column(project):
    jsonl(project / "tools.jsonl", [{"messages": CHAT, "functions": []}])
    template = "template calls for tools {\n    messages = messages\n    tools    = function\n}"
    (problem,) = check(project, spec_text('data tools = jsonl("tools.jsonl")', template))
    assert (problem.code, problem.span.line) == ("E040", 10)
    assert problem.help.startswith("did you mean `functions`?")


def test_bad_tool_arguments_near_the_end_of_a_big_file_are_found_by_the_spread_sample(project):
    good = {"messages": CHAT, "note": "x" * 300}
    broken = {
        "messages": [
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"function": {"name": "weather", "arguments": "{city: Oslo}"}}],
            },
            {"role": "tool", "content": "21"},
            {"role": "assistant", "content": "21 degrees"},
        ]
    }
    path = project / "big.jsonl"
    jsonl(path, [good] * 4999 + [broken])
    assert path.stat().st_size > 1 << 20
    assert len(sample_rows("jsonl", path, FileSystem(), {})) < 4000  # the head alone never sees line 5,000
    (problem,) = check(project, spec_text('data big = jsonl("big.jsonl")'))
    assert problem.code == "E071"
    assert problem.message.startswith(
        "data big: big.jsonl line 5,000, column `messages`, message 1: tool_calls[0].arguments is not valid JSON"
    )
    assert problem.note.startswith("checked ") and problem.note.endswith("sampled rows of 5,000 lines; 1 has a problem")


def test_a_conversation_must_end_on_the_trained_last_assistant_turn(project):
    jsonl(
        project / "chats.jsonl",
        [{"messages": CHAT}, {"messages": messages(("user", "a"), ("assistant", "b"), ("user", "thanks"))}],
    )
    template = "template chat for chats {\n    messages = messages\n    train_on = last_assistant\n}"
    (problem,) = check(project, spec_text('data chats = jsonl("chats.jsonl")', template))
    assert problem.code == "E071"
    assert problem.message.startswith(
        "data chats: chats.jsonl line 2, column `messages`, message 2: the conversation ends on a user turn"
    )
    assert (
        check(project, spec_text('data chats = jsonl("chats.jsonl")', template.replace("last_assistant", "assistant")))
        == []
    )


def test_csv_conversations_stored_as_json_text(project):
    with open(project / "chats.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "messages"])
        writer.writerow(["1", json.dumps(CHAT)])
        writer.writerow(
            ["2", json.dumps([{"role": "customer", "content": "hi"}, {"role": "assistant", "content": "yes"}])]
        )
    problems = check(project, spec_text('data chats = csv("chats.csv")'))
    assert [(d.code, d.message.split(": unknown role")[0]) for d in problems] == [
        ("E071", "data chats: chats.csv line 3, column `messages`, message 0")
    ]
    fixed = "template chat for chats {\n    messages = messages\n    roles    = (customer = user)\n}"
    assert check(project, spec_text('data chats = csv("chats.csv")', fixed)) == []


# ---------------------------------------------------------------- Alpaca and pre-tokenized


def test_alpaca_needs_its_columns_and_every_row_its_output(project):
    jsonl(project / "instr.jsonl", [{"instruction": "add 2 and 2", "input": ""}])
    template = "template instr for rows {\n    format = alpaca\n}"
    (problem,) = check(project, spec_text('data rows = jsonl("instr.jsonl")', template))
    assert (problem.code, problem.span.line, problem.span.column) == ("E040", 9, 14)
    assert problem.message == "`format = alpaca` reads the column `output`, which `rows` does not have"
    jsonl(
        project / "instr.jsonl",
        [{"instruction": "add 2 and 2", "input": "", "output": "4"}, {"instruction": "hi", "output": None}],
    )
    (problem,) = check(project, spec_text('data rows = jsonl("instr.jsonl")', template))
    assert problem.code == "E071" and problem.message == "data rows: instr.jsonl line 2, column `output`: value is null"
    (conventional,) = check(project, spec_text('data rows = jsonl("instr.jsonl")'))
    assert conventional.message == problem.message


def test_clean_alpaca_with_chat_and_system(project):
    jsonl(
        project / "instr.jsonl",
        [{"instruction": "add", "input": "2 and 2", "output": "4"}, {"instruction": "hi", "output": "hello"}],
    )
    template = 'template instr for rows {\n    format = alpaca\n    chat   = on\n    system = "Be brief."\n}'
    assert check(project, spec_text('data rows = jsonl("instr.jsonl")', template)) == []


def test_pre_tokenized_labels_misaligned_in_parquet(project):
    import pyarrow as pa
    import pyarrow.parquet as pq

    labels = [[-100, 2, 3]] * 199 + [[-100, 5, 3]]
    pq.write_table(
        pa.table({"input_ids": [[1, 2, 3]] * 200, "labels": labels}), project / "toks.parquet", row_group_size=50
    )
    template = "template pre for toks {\n    format = tokens\n}"
    (problem,) = check(project, spec_text('data toks = parquet("toks.parquet")', template))
    assert problem.code == "E071"
    assert problem.message.startswith(
        "data toks: toks.parquet row 200, column `labels`: labels[1] = 5 is neither -100 nor input_ids[1] = 2"
    )
    assert problem.note == "checked 132 sampled rows of 200 rows; 1 has a problem"
    (conventional,) = check(project, spec_text('data toks = parquet("toks.parquet")'))
    assert conventional.message == problem.message


def test_pre_tokenized_needs_labels_or_a_loss_mask(project):
    jsonl(project / "toks.jsonl", [{"input_ids": [1, 2, 3]}])
    template = "template pre for toks {\n    format = tokens\n}"
    (problem,) = check(project, spec_text('data toks = jsonl("toks.jsonl")', template))
    assert (
        problem.code == "E040"
        and problem.message == "`format = tokens` needs a `labels` or `loss_mask` column, which `toks` does not have"
    )
    jsonl(project / "toks.jsonl", [{"input_ids": [1, 2, 3], "loss_mask": [0, 1, 1]}])
    assert check(project, spec_text('data toks = jsonl("toks.jsonl")', template)) == []


# ---------------------------------------------------------------- rename and where


def test_rename_of_a_missing_column_is_an_error_and_the_source_is_not_sampled(project):
    jsonl(project / "chats.jsonl", [{"dialog": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]}])
    data = 'data chats = jsonl("chats.jsonl") {\n    rename = (dialg = conversations)\n}'
    (problem,) = check(project, spec_text(data))
    assert (problem.code, problem.span.line, problem.span.column) == ("E040", 7, 15)
    assert problem.message == "`rename` names `dialg`, which is not a column of `chats`"
    assert problem.help == "did you mean `dialog`?  (columns: dialog)"
    assert check(project, spec_text(data.replace("dialg", "dialog"))) == []  # conventional `conversations`


def test_a_row_problem_names_the_column_as_the_file_has_it(project):
    jsonl(project / "chats.jsonl", [{"dialog": [{"from": "human", "value": "a"}, {"from": "robot", "value": "b"}]}])
    data = 'data chats = jsonl("chats.jsonl") {\n    rename = ("dialog" = conversations)\n}'
    (problem,) = check(project, spec_text(data))
    assert "column `conversations` (`dialog` in the file), message 1: unknown role 'robot'" in problem.message


def test_where_on_a_missing_column(project):
    jsonl(project / "rows.jsonl", [{"prompt": "p", "completion": "c", "lang": "en", "meta": {"tier": "gold"}}])
    data = 'data rows = jsonl("rows.jsonl") {\n    where = (lng = "en")\n}'
    (problem,) = check(project, spec_text(data))
    assert (problem.code, problem.span.line, problem.span.column) == ("E040", 7, 14)
    assert problem.message == "`where` reads `lng`, which is not a column of `rows`"
    assert problem.help.startswith("did you mean `lang`?")
    assert check(project, spec_text(data.replace('lng = "en"', 'lang = "en", "meta.tier" = ["gold", "silver"]'))) == []


def test_where_after_rename_and_a_filter_that_keeps_no_sampled_row(project):
    (project / "reviews.csv").write_text("stars,text\n5,great\n4,fine\n")
    data = 'data reviews = csv("reviews.csv") {\n    rename = (text = body)\n    where  = (stars = 5)\n}'
    template = 'template r for reviews {\n    prompt = "Review: "\n    completion = "{body}"\n}'
    (warning,) = check(project, spec_text(data, template))
    assert (warning.code, warning.span.line) == ("W007", 8)
    assert warning.message == "`where` keeps none of the 2 rows sampled from `reviews.csv`"
    assert "CSV values are strings" in warning.help
    assert check(project, spec_text(data.replace("stars = 5", 'stars = "5"'), template)) == []


def test_eval_file_is_read_like_its_source_and_sampled(project):
    row = {"dialog": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]}
    jsonl(project / "train.jsonl", [row])
    jsonl(project / "eval.jsonl", [row, {"dialog": [{"from": "human", "value": "a"}, {"from": "bot", "value": "b"}]}])
    data = (
        'data chats = jsonl("train.jsonl") {\n'
        "    rename = (dialog = conversations)\n"
        '    split eval = jsonl("eval.jsonl")\n'
        "}"
    )
    (problem,) = check(project, spec_text(data))
    assert problem.code == "E071" and problem.message.startswith(
        "data chats: eval.jsonl line 2, column `conversations`"
    )
    assert (problem.span.line, problem.span.column) == (8, 18)  # the eval call


# ---------------------------------------------------------------- severity and rendering


def test_on_bad_row_skip_makes_them_warnings(project, capsys):
    jsonl(project / "chats.jsonl", [{"messages": CHAT}, {"messages": messages(("user", "a"), ("tool", "b"))}])
    text = spec_text('data chats = jsonl("chats.jsonl") {\n    on_bad_row = skip\n}')
    (warning,) = check(project, text)
    assert warning.code == "W006" and "skips such rows" in warning.help
    assert main(["check", "spec.sft", "--devices", "1", "--offline"]) == 0
    err = capsys.readouterr().err
    assert "warning[W006]: data chats: chats.jsonl line 2, column `messages`, message 1" in err


def test_the_note_comes_before_the_help_and_json_carries_it(project, capsys):
    jsonl(project / "chats.jsonl", [SHAREGPT])
    (problem,) = check(project, spec_text('data chats = jsonl("chats.jsonl")'))
    lines = render_plain(problem).splitlines()
    assert lines[-2] == "  = note: checked all 1 row; 1 has a problem"
    assert lines[-1].startswith("  = help: fix the row")
    assert main(["check", "spec.sft", "--devices", "1", "--offline", "--format", "json"]) == 1
    (d,) = json.loads(capsys.readouterr().out)["diagnostics"]
    assert d["code"] == "E071" and d["note"] == problem.note and d["detail"] == problem.help


def test_at_most_three_rows_are_shown_per_file(project):
    jsonl(project / "chats.jsonl", [SHAREGPT] * 10)
    problems = check(project, spec_text('data chats = jsonl("chats.jsonl")'))
    assert [d.message.split(",")[0] for d in problems] == [f"data chats: chats.jsonl line {n}" for n in (1, 2, 3)]
    assert problems[0].note == "checked all 10 rows; 10 have a problem (the first 3 shown)"


def test_csv_with_fields_over_several_lines_is_checked_by_its_head_only(project):
    with open(project / "instr.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["instruction", "input", "output"])
        for i in range(4000):  # > 1 MiB: a line read mid-file may start inside a quoted field
            writer.writerow([f"list {i}", "", "first line\nsecond, with a comma\n" + "x" * 300])
    assert (project / "instr.csv").stat().st_size > 1 << 20
    template = "template instr for rows {\n    format = alpaca\n}"
    assert check(project, spec_text('data rows = csv("instr.csv")', template)) == []
    (project / "head.csv").write_text('instruction,input,output\n"a\nb",,c\n,,d\n')
    (problem,) = check(project, spec_text('data rows = csv("head.csv")', template))
    assert problem.message == "data rows: head.csv line 4, column `instruction`: empty instruction"
    assert problem.note == "checked the file's first 2 rows; 1 has a problem"


# ---------------------------------------------------------------- a tokenizer trained on the rows


def _trained_tokenizer_spec(data: str, vocab: int = 262) -> str:
    return spec_text(data).replace(
        'tokenizer = sentencepiece("tok.model")', f"tokenizer = train sentencepiece(vocab = {vocab}) on rows"
    )


def test_a_trained_tokenizer_counts_the_characters_of_every_shape(project):
    jsonl(project / "instr.jsonl", [{"instruction": "a", "input": "", "output": "b"}] * 3)
    (problem,) = check(project, _trained_tokenizer_spec('data rows = jsonl("instr.jsonl")'))
    assert problem.code == "E047" and "29 distinct characters" in problem.message  # the Alpaca prompt's too
    jsonl(project / "chats.jsonl", [{"dialog": [{"from": "human", "value": "ab"}, {"from": "gpt", "value": "ba"}]}] * 3)
    data = 'data rows = jsonl("chats.jsonl") {\n    rename = (dialog = conversations)\n    system = "xyz"\n}'
    (problem,) = check(project, _trained_tokenizer_spec(data))
    assert problem.code == "E047" and "7 distinct characters" in problem.message  # a b x y z, the newline and ▁


def test_a_tokenizer_cannot_be_trained_on_token_ids(project):
    jsonl(project / "toks.jsonl", [{"input_ids": [1, 2], "labels": [-100, 2]}])
    problems = check(project, _trained_tokenizer_spec('data rows = jsonl("toks.jsonl")', vocab=300))
    assert [(d.code, d.span.line, d.message) for d in problems] == [
        ("E024", 3, "`rows` is pre-tokenized: a tokenizer cannot be trained on its token ids")
    ]


@pytest.mark.parametrize(
    "turns, reason",
    [
        (messages(("user", "hi"), ("user", "anyone?")), "conversation has no assistant turn"),
        (messages(("user", "hi"), ("assistant", "  ")), "empty assistant message"),
        (messages(("assistant", "hello"), ("user", "hi"), ("assistant", "yes")), "starts with an assistant turn"),
    ],
)
def test_conversations_with_nothing_to_train_are_found_before_the_run(project, turns, reason):
    jsonl(project / "chats.jsonl", [{"messages": CHAT}] * 4 + [{"messages": turns}])
    problems = check(project, spec_text('data chats = jsonl("chats.jsonl")'))
    assert [d.code for d in problems] == ["E071"]
    assert "line 5" in problems[0].message and reason in problems[0].message
