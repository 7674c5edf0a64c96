"""Tool-call arguments and tool schemas written as JSON objects reach the chat template as
written. Older `datasets` versions read nested objects as struct columns whose keys are the
union over all rows, a row's missing keys filled with null, which would then be rendered and
trained; the declared `datasets>=5.2` keeps each row's objects as written. This guard holds it
through sftc's own reader (`load_source`) and tokenization, so a change of the version range or
of the reader cannot bring the nulls back silently."""

from __future__ import annotations

import json

from runtime.data.sources import load_source
from runtime.data.tokenize import tokenize_source
from runtime.plan.data_plan import SourceSpec, TemplateSpec
from tests.runtime.data_helpers import CHATML_TOOLS, TOOL_SPECIALS, bpe_tokenizer, write_jsonl


def _schema(name: str, properties: dict) -> dict:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": f"{name} tool",
            "parameters": {"type": "object", "properties": properties},
        },
    }


WEATHER = _schema("get_weather", {"city": {"type": "string"}})
ORDER = _schema("order_status", {"order_id": {"type": "integer"}, "verbose": {"type": "boolean"}})


def _row(name: str, arguments: dict, schema: dict) -> dict:
    return {
        "messages": [
            {"role": "user", "content": "Question?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "c1", "type": "function", "function": {"name": name, "arguments": arguments}}],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "ok"},
            {"role": "assistant", "content": "Done."},
        ],
        "tools": [schema],
    }


ROWS = [_row("get_weather", {"city": "Paris"}, WEATHER), _row("order_status", {"order_id": 7}, ORDER)]


def test_tool_arguments_and_schemas_written_as_objects_are_rendered_as_written(tmp_path):
    path = write_jsonl(str(tmp_path / "tools.jsonl"), ROWS)
    loaded = load_source(SourceSpec(name="tools", kind="jsonl", paths=(path,)), cache_dir=str(tmp_path / "c"))
    for i, row in enumerate(ROWS):  # the reader keeps each row's objects, with no other row's keys
        assert (
            loaded.dataset[i]["messages"][1]["tool_calls"][0]["function"]["arguments"]
            == row["messages"][1]["tool_calls"][0]["function"]["arguments"]
        )
        assert loaded.dataset[i]["tools"] == row["tools"]

    tok = bpe_tokenizer(CHATML_TOOLS, extra_specials=TOOL_SPECIALS)
    ts = tokenize_source(loaded, TemplateSpec(), tok, cache_dir=str(tmp_path / "c"))
    assert len(ts) == 2 and ts.mode.tools == "tools"
    texts = [tok.decode(ts.example(i)[0].tolist()) for i in range(2)]
    calls = [
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>',
        '<tool_call>{"name": "order_status", "arguments": {"order_id": 7}}</tool_call>',
    ]
    for text, call, schema, others in zip(texts, calls, (WEATHER, ORDER), (("order_id", "verbose"), ("city",))):
        assert call in text
        assert json.dumps(schema) in text  # the row's own schema, as written
        for absent in ("null", "None") + others:
            assert absent not in text, (absent, text)
