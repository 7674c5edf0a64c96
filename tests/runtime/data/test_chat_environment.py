"""A chat template that cannot run at all (jinja2 missing, a template that does not
compile) stops the run with the fix, even with `on_bad_row = skip`: it is never
counted as bad rows, which would silently empty the source. A row the template
itself rejects (jinja's raise_exception) stays one counted bad row."""

from __future__ import annotations

import sys

import pytest

from runtime.data.pipeline import build_pipeline
from runtime.plan.data_errors import BadRowError, ChatTemplateError
from runtime.plan.data_plan import DataPlan, SourceSpec, TemplateSpec
from tests.runtime.data_helpers import CHATML, MISTRAL, wordlevel_tokenizer, write_jsonl

CONV = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}]
MESSAGES = TemplateSpec(messages="messages")
CHAT_ON = TemplateSpec(prompt="{q}", completion="{a}", chat=True)
ROWS = {"messages": [{"messages": CONV}] * 3, "chat = on": [{"q": "hello", "a": "hi"}] * 3}
TEMPLATES = {"messages": MESSAGES, "chat = on": CHAT_ON}


def build(tmp_path, rows, template, tokenizer, on_bad_row="skip"):
    path = write_jsonl(str(tmp_path / "chats.jsonl"), rows)
    plan = DataPlan(
        sources=(SourceSpec(name="chats", kind="jsonl", paths=(path,), on_bad_row=on_bad_row),),
        templates={"chats": template},
        seq_len=32,
        global_batch_size=2,
    )
    return build_pipeline(plan, tokenizer, cache_dir=str(tmp_path / "cache"))


def without_jinja(*args, **kwargs):
    """What transformers raises from apply_chat_template when jinja2 is not installed."""
    raise ImportError(
        "apply_chat_template requires jinja2 to be installed. Please install it using `pip install jinja2`."
    )


@pytest.mark.parametrize("shape", sorted(ROWS))
def test_import_error_while_rendering_is_not_a_bad_row(tmp_path, monkeypatch, shape):
    tok = wordlevel_tokenizer(CHATML)
    monkeypatch.setattr(tok, "apply_chat_template", without_jinja)
    with pytest.raises(ChatTemplateError) as e:
        build(tmp_path, ROWS[shape], TEMPLATES[shape], tok, on_bad_row="skip")
    assert not isinstance(e.value, BadRowError)
    message = str(e.value)
    assert message.startswith("data chats: ") and "requires jinja2" in message
    assert "pip install 'jinja2>=3.1.6'" in message


@pytest.mark.parametrize("shape", sorted(ROWS))
def test_missing_jinja2_stops_before_the_first_row(tmp_path, monkeypatch, shape):
    monkeypatch.setitem(sys.modules, "jinja2", None)  # `import jinja2` now raises ImportError
    with pytest.raises(ChatTemplateError, match=r"(?s)data chats: .*jinja2.*pip install 'jinja2>=3\.1\.6'"):
        build(tmp_path, ROWS[shape], TEMPLATES[shape], wordlevel_tokenizer(CHATML))


def test_a_chat_template_that_does_not_compile_is_not_a_bad_row(tmp_path):
    broken = CHATML.replace("{% endfor %}", "")
    with pytest.raises(ChatTemplateError, match="chat template does not compile"):
        build(tmp_path, ROWS["messages"], MESSAGES, wordlevel_tokenizer(broken))


def test_a_row_the_template_rejects_is_still_a_counted_bad_row(tmp_path):
    system_first = [{"role": "system", "content": "you are a bot"}] + CONV  # MISTRAL raise_exception()s on it
    rows = [{"messages": CONV}, {"messages": system_first}, {"messages": CONV}]
    pipeline = build(tmp_path, rows, MESSAGES, wordlevel_tokenizer(MISTRAL), on_bad_row="skip")
    stats = pipeline.stats.sources["chats"]
    assert (stats.rows, stats.bad_rows, stats.train_examples) == (3, 1, 2)
    assert "chat template failed: TemplateError: Conversation roles must alternate" in stats.bad_examples[0]
    with pytest.raises(BadRowError, match="chats.jsonl, line 2"):
        build(tmp_path, rows, MESSAGES, wordlevel_tokenizer(MISTRAL), on_bad_row="error")
