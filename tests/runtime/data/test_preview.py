"""`sftc preview`: JSON records, plain-text fallback, rich styling, truncation and segment marks."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from runtime.data.pipeline import build_pipeline
from runtime.data.preview import preview, token_pieces
from runtime.plan.data_plan import DataPlan, SourceSpec, TemplateSpec
from tests.runtime.data_helpers import CHATML, bpe_tokenizer, wordlevel_tokenizer, write_jsonl

CONVS = [
    [{"role": "user", "content": "Hello!"}, {"role": "assistant", "content": "I am fine."}],
    [
        {"role": "user", "content": "Tell me a joke about cats."},
        {"role": "assistant", "content": "Why did the cat sit on the computer? To keep an eye on the mouse."},
    ],
]


@pytest.fixture(scope="module")
def chat_pipe(tmp_path_factory):
    d = tmp_path_factory.mktemp("prev")
    path = write_jsonl(str(d / "m.jsonl"), [{"messages": c} for c in CONVS])
    plan = DataPlan(
        sources=(SourceSpec(name="m", kind="jsonl", paths=(path,), overflow="truncate"),),
        seq_len=40,
        global_batch_size=2,
    )
    return build_pipeline(plan, bpe_tokenizer(CHATML), cache_dir=str(d / "c"))


def test_json_mode_one_record_per_example(chat_pipe):
    out = io.StringIO()
    recs = preview(chat_pipe, n=5, json=True, file=out)
    lines = [json.loads(ln) for ln in out.getvalue().splitlines()]
    assert lines == recs and len(recs) == 2
    r = recs[0]
    assert len(r["input_ids"]) == len(r["trained"]) == len(r["tokens"]) == r["n_tokens"]
    trained_text = chat_pipe.tokenizer.decode([t for t, m in zip(r["input_ids"], r["trained"]) if m])
    assert trained_text == "I am fine.<|im_end|>"
    assert r["text"] == chat_pipe.tokenizer.apply_chat_template(CONVS[0], tokenize=False)
    assert (r["source"], r["split"], r["line"], r["truncated"]) == ("m", "train", 1, False)
    assert recs[1]["truncated"] and recs[1]["full_length"] > recs[1]["n_tokens"] == 41


def test_plain_text_marks_trained_spans_tokens_and_truncation(chat_pipe):
    out = io.StringIO()
    preview(chat_pipe, n=2, file=out)
    text = out.getvalue()
    assert "\x1b[" not in text  # not a terminal: no escape codes
    assert "<|im_start|>assistant\n«I am fine.<|im_end|>»\n" in text
    assert "m.jsonl:2 ── 41 tokens, truncated from 49, 16 trained" in text
    assert "✂ [8 tokens cut]" in text
    assert "packing" in text and "truncated 1" in text
    out = io.StringIO()
    preview(chat_pipe, n=1, tokens=True, file=out)
    assert "«I| am| fi|ne|.|<|im_end|>|»" in out.getvalue()


def test_terminal_output_styles_prompt_dim_and_trained_highlighted(chat_pipe):
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, color_system="truecolor", width=120)
    preview(chat_pipe, n=1, console=console)
    text = out.getvalue()
    assert "\x1b[2m<|im_start|>" in text  # dim prompt
    assert "\x1b[1;32;48;5;234mI" in text  # bold green on grey11: trained
    assert "«" not in text


def test_packed_rows_show_segment_boundaries(tmp_path):
    tok = wordlevel_tokenizer()
    path = write_jsonl(str(tmp_path / "a.jsonl"), [{"q": "hello", "a": "hi"}, {"q": "thanks", "a": "ok"}])
    plan = DataPlan(
        sources=(SourceSpec(name="a", kind="jsonl", paths=(path,)),),
        templates={"a": TemplateSpec(prompt="question : {q} answer :", completion=" {a}")},
        seq_len=32,
        global_batch_size=1,
        packing=True,
    )
    p = build_pipeline(plan, tok, cache_dir=str(tmp_path / "c"))
    out = io.StringIO()
    recs = preview(p, n=1, rows=True, file=out)
    text = out.getvalue()
    assert "2 segments, 14/32 positions used, 4 trained" in text
    assert "║2║" in text and text.count("«") == 2
    assert recs[0]["segment_ids"][:14] == [1] * 7 + [2] * 7


def test_token_pieces_join_to_the_decoded_text():
    tok = bpe_tokenizer()
    text = "Hello! How are you today? é"
    ids = tok(text)["input_ids"]
    assert "".join(token_pieces(tok, ids)) == tok.decode(ids)
