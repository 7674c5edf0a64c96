"""Exact loss masks: prompt/completion, four chat template styles, label shift, batch format."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.data.batches import assemble, shift_example
from runtime.data.pipeline import build_pipeline
from runtime.data.sources import load_source
from runtime.data.tokenize import tokenize_source
from runtime.plan.data_errors import TemplateNotPrefixStableError
from runtime.plan.data_plan import DataPlan, SourceSpec, TemplateSpec
from runtime.plan.row_templates import parse_template, placeholders
from tests.runtime.data_helpers import (
    CHATML,
    LLAMA3,
    MISTRAL,
    THINK_DROPPING,
    ZEPHYR,
    bpe_tokenizer,
    ids,
    wordlevel_tokenizer,
    write_jsonl,
)

CONV = [
    {"role": "system", "content": "be good"},
    {"role": "user", "content": "hello"},
    {"role": "assistant", "content": "hi"},
    {"role": "user", "content": "thanks"},
    {"role": "assistant", "content": "ok bye"},
]
CONV_NO_SYSTEM = CONV[1:]


def tokenized(tmp_path, rows, template, tok, name="s", **spec_kw):
    path = write_jsonl(str(tmp_path / f"{name}.jsonl"), rows)
    loaded = load_source(SourceSpec(name=name, kind="jsonl", paths=(path,), **spec_kw), cache_dir=str(tmp_path / "c"))
    return tokenize_source(loaded, template, tok, cache_dir=str(tmp_path / "c"))


def pairs(tok, ts, i=0):
    t, m = ts.example(i)
    return list(zip(tok.convert_ids_to_tokens(t.tolist()), m.tolist()))


# ------------------------------------------------------------------ template strings


def test_parse_template_fields_and_literal_braces():
    assert parse_template("Q: {q}\n{meta.lang} {{x}}") == ["Q: ", ("q",), "\n", ("meta", "lang"), " {x}"]
    assert placeholders("{a} and {b.c} {{d}}") == ["a", "b.c"]


@pytest.mark.parametrize("bad", ["{", "}", "a { b", "{a b}", "{}"])
def test_parse_template_rejects_malformed(bad):
    from runtime.plan.data_errors import TemplateError

    with pytest.raises(TemplateError):
        parse_template(bad)


# ------------------------------------------------------------------ prompt / completion


def test_prompt_completion_mask_hand_computed(tmp_path):
    tok = wordlevel_tokenizer()
    rows = [{"q": "what is two plus three ?", "a": "five", "meta": {"lang": "en"}}]
    ts = tokenized(tmp_path, rows, TemplateSpec(prompt="question : {q} answer :", completion=" {a}"), tok)
    t, m = ts.example(0)
    assert t.tolist() == ids(tok, "<s> question : what is two plus three ? answer : five </s>")
    assert m.tolist() == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1]


def test_nested_field_and_literal_braces_are_rendered(tmp_path):
    tok = wordlevel_tokenizer()
    rows = [{"q": "hello", "meta": {"lang": "paris"}}]
    ts = tokenized(tmp_path, rows, TemplateSpec(prompt="{{ {q} }}", completion="{meta.lang}"), tok)
    assert pairs(tok, ts) == [("<s>", 0), ("{", 0), ("hello", 0), ("}", 0), ("paris", 1), ("</s>", 1)]


def test_conventional_prompt_completion_columns_need_no_template(tmp_path):
    tok = wordlevel_tokenizer()
    # braces inside values are data, never template syntax
    rows = [{"prompt": "question : { q }", "completion": "yes"}]
    ts = tokenized(tmp_path, rows, TemplateSpec(), tok)
    assert pairs(tok, ts) == [
        ("<s>", 0),
        ("question", 0),
        (":", 0),
        ("{", 0),
        ("q", 0),
        ("}", 0),
        ("yes", 1),
        ("</s>", 1),
    ]


def test_conventional_text_column_trains_everything(tmp_path):
    tok = wordlevel_tokenizer()
    ts = tokenized(tmp_path, [{"text": "hello you"}], TemplateSpec(), tok)
    assert pairs(tok, ts) == [("<s>", 0), ("hello", 1), ("you", 1), ("</s>", 1)]


def test_eos_not_doubled_when_completion_ends_with_it(tmp_path):
    tok = wordlevel_tokenizer()
    ts = tokenized(tmp_path, [{"q": "hello", "a": "hi </s>"}], TemplateSpec(prompt="{q}", completion=" {a}"), tok)
    assert pairs(tok, ts) == [("<s>", 0), ("hello", 0), ("hi", 1), ("</s>", 1)]


def test_bpe_boundary_merge_is_counted_and_starts_at_divergence(tmp_path):
    tok = bpe_tokenizer()
    # "Answer: " + "Paris." -> the prompt's trailing space merges into " Paris" (like TRL, the
    # completion starts where prompt and prompt+completion tokenizations diverge).
    ts = tokenized(tmp_path, [{"q": "what", "a": "Paris."}], TemplateSpec(prompt="Answer: ", completion="{a}"), tok)
    t, m = ts.example(0)
    assert ts.boundary_merges == 1
    assert tok.decode(t[m == 1].tolist()) == " Paris.</s>"
    clean = tokenized(
        tmp_path, [{"q": "what", "a": " Paris."}], TemplateSpec(prompt="Answer:", completion="{a}"), tok, name="clean"
    )
    assert clean.boundary_merges == 0


# ------------------------------------------------------------------ label shift and batch format


def test_shift_example_hand_computed():
    tokens = np.array([1, 10, 11, 12, 2])
    trained = np.array([0, 0, 0, 1, 1])
    x, y, m = shift_example(tokens, trained)
    assert x.tolist() == [1, 10, 11, 12]
    assert y.tolist() == [10, 11, 12, 2]
    assert m.tolist() == [0, 0, 1, 1]


def test_docstring_worked_example(tmp_path):
    """The worked example in runtime/data/batches.py, token for token."""
    tok = wordlevel_tokenizer(extra_words=["Q", "A"])
    path = write_jsonl(str(tmp_path / "w.jsonl"), [{"q": "two plus three ?", "a": "five"}])
    plan = DataPlan(
        sources=(SourceSpec(name="w", kind="jsonl", paths=(path,)),),
        templates={"w": TemplateSpec(prompt="Q: {q} A:", completion=" {a}")},
        seq_len=12,
        packing=False,
        global_batch_size=1,
        epochs=1,
    )
    b = build_pipeline(plan, tok, cache_dir=str(tmp_path / "c")).batch(0)
    pad = tok.pad_token_id
    assert b["input_ids"][0].tolist() == ids(tok, "<s> Q : two plus three ? A : five") + [pad, pad]
    assert b["targets"][0].tolist() == ids(tok, "Q : two plus three ? A : five </s>") + [pad, pad]
    assert b["loss_mask"][0].tolist() == [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0]
    assert b["positions"][0].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 0]
    assert b["segment_ids"][0].tolist() == [1] * 10 + [0, 0]
    assert b["loss_mask"].dtype == np.float32 and b["input_ids"].dtype == np.int32


def test_assemble_packs_segments_with_restarting_positions():
    a = (np.array([1, 5, 6, 2]), np.array([0, 0, 1, 1]))
    b = (np.array([1, 7, 2]), np.array([0, 1, 1]))
    out = assemble([[a, b]], seq_len=6, pad_id=0)
    assert out["input_ids"][0].tolist() == [1, 5, 6, 1, 7, 0]
    assert out["targets"][0].tolist() == [5, 6, 2, 7, 2, 0]
    assert out["loss_mask"][0].tolist() == [0, 1, 1, 1, 1, 0]
    assert out["positions"][0].tolist() == [0, 1, 2, 0, 1, 0]
    assert out["segment_ids"][0].tolist() == [1, 1, 1, 2, 2, 0]


# ------------------------------------------------------------------ chat templates

CHAT_EXPECTED = {
    "chatml": (
        CHATML,
        CONV,
        [
            ("<|im_start|>", 0),
            ("system", 0),
            ("be", 0),
            ("good", 0),
            ("<|im_end|>", 0),
            ("<|im_start|>", 0),
            ("user", 0),
            ("hello", 0),
            ("<|im_end|>", 0),
            ("<|im_start|>", 0),
            ("assistant", 0),
            ("hi", 1),
            ("<|im_end|>", 1),
            ("<|im_start|>", 0),
            ("user", 0),
            ("thanks", 0),
            ("<|im_end|>", 0),
            ("<|im_start|>", 0),
            ("assistant", 0),
            ("ok", 1),
            ("bye", 1),
            ("<|im_end|>", 1),
        ],
    ),
    "llama3": (
        LLAMA3,
        CONV,
        [
            ("<s>", 0),
            ("<|start_header_id|>", 0),
            ("system", 0),
            ("<|end_header_id|>", 0),
            ("be", 0),
            ("good", 0),
            ("<|eot_id|>", 0),
            ("<|start_header_id|>", 0),
            ("user", 0),
            ("<|end_header_id|>", 0),
            ("hello", 0),
            ("<|eot_id|>", 0),
            ("<|start_header_id|>", 0),
            ("assistant", 0),
            ("<|end_header_id|>", 0),
            ("hi", 1),
            ("<|eot_id|>", 1),
            ("<|start_header_id|>", 0),
            ("user", 0),
            ("<|end_header_id|>", 0),
            ("thanks", 0),
            ("<|eot_id|>", 0),
            ("<|start_header_id|>", 0),
            ("assistant", 0),
            ("<|end_header_id|>", 0),
            ("ok", 1),
            ("bye", 1),
            ("<|eot_id|>", 1),
        ],
    ),
    "mistral": (
        MISTRAL,
        CONV_NO_SYSTEM,
        [
            ("<s>", 0),
            ("[INST]", 0),
            ("hello", 0),
            ("[/INST]", 0),
            ("hi", 1),
            ("</s>", 1),
            ("[INST]", 0),
            ("thanks", 0),
            ("[/INST]", 0),
            ("ok", 1),
            ("bye", 1),
            ("</s>", 1),
        ],
    ),
    "zephyr": (
        ZEPHYR,
        CONV,
        [
            ("<|system|>", 0),
            ("be", 0),
            ("good", 0),
            ("</s>", 0),
            ("<|user|>", 0),
            ("hello", 0),
            ("</s>", 0),
            ("<|assistant|>", 0),
            ("hi", 1),
            ("</s>", 1),
            ("<|user|>", 0),
            ("thanks", 0),
            ("</s>", 0),
            ("<|assistant|>", 0),
            ("ok", 1),
            ("bye", 1),
            ("</s>", 1),
        ],
    ),
}


@pytest.mark.parametrize("style", sorted(CHAT_EXPECTED))
def test_chat_assistant_masks_hand_computed(tmp_path, style):
    template, conv, expected = CHAT_EXPECTED[style]
    tok = wordlevel_tokenizer(template)
    ts = tokenized(tmp_path, [{"messages": conv}], TemplateSpec(), tok)
    assert pairs(tok, ts) == expected


@pytest.mark.parametrize("style", sorted(CHAT_EXPECTED))
def test_chat_last_assistant_and_all(tmp_path, style):
    template, conv, expected = CHAT_EXPECTED[style]
    tok = wordlevel_tokenizer(template)
    last = tokenized(
        tmp_path, [{"msgs": conv}], TemplateSpec(messages="msgs", train_on="last_assistant"), tok, name="last"
    )
    # only the final assistant turn: the trained tokens are the tail of the "assistant" expectation
    first_final = max(i for i, (_, m) in enumerate(expected) if m == 1 and expected[i - 1][1] == 0)
    assert pairs(tok, last) == [(t, m if i >= first_final else 0) for i, (t, m) in enumerate(expected)]
    everything = tokenized(tmp_path, [{"msgs": conv}], TemplateSpec(messages="msgs", train_on="all"), tok, name="all")
    assert pairs(tok, everything) == [(t, 0 if i == 0 else 1) for i, (t, _) in enumerate(expected)]


def test_chatml_trailing_newline_after_im_end_is_not_trained_with_bpe(tmp_path):
    tok = bpe_tokenizer(CHATML)
    conv = [{"role": "user", "content": "Hello!"}, {"role": "assistant", "content": "I am fine."}]
    ts = tokenized(tmp_path, [{"messages": conv}], TemplateSpec(), tok)
    t, m = ts.example(0)
    assert tok.decode(t[m == 1].tolist()) == "I am fine.<|im_end|>"
    assert tok.decode(t.tolist()) == tok.apply_chat_template(conv, tokenize=False)
    # the prompt tokens equal what inference feeds the model
    prompt = tok.apply_chat_template(conv[:1], add_generation_prompt=True)["input_ids"]
    first = int(np.argmax(m))
    assert t[:first].tolist() == list(prompt)


def test_zephyr_with_bpe_trains_content_and_eos_not_the_newlines(tmp_path):
    tok = bpe_tokenizer(ZEPHYR)
    conv = [{"role": "user", "content": "Hello!"}, {"role": "assistant", "content": "I am fine."}]
    ts = tokenized(tmp_path, [{"messages": conv}], TemplateSpec(), tok)
    t, m = ts.example(0)
    assert tok.decode(t[m == 1].tolist()) == "I am fine.</s>"
    assert tok.convert_ids_to_tokens(t[-1:].tolist()) == ["Ċ"] and m[-1] == 0


def test_generation_prompt_shorter_than_turn_header_trains_the_difference(tmp_path):
    """If the generation prompt is '<|assistant|>' but a turn renders '<|assistant|>\\n', the model must emit '\\n'."""
    tpl = ZEPHYR.replace("{{ '<|assistant|>' }}\n", "{{ '<|assistant|>' }}")
    tok = bpe_tokenizer(tpl)
    conv = [{"role": "user", "content": "Hello!"}, {"role": "assistant", "content": "I am fine."}]
    assert tok.apply_chat_template(conv[:1], tokenize=False, add_generation_prompt=True).endswith("<|assistant|>")
    ts = tokenized(tmp_path, [{"messages": conv}], TemplateSpec(), tok)
    t, m = ts.example(0)
    assert tok.decode(t[m == 1].tolist()) == "\nI am fine.</s>"


def test_a_template_that_rerenders_earlier_turns_trains_each_turn_as_rendered_then(tmp_path):
    """Reasoning templates drop earlier turns' <think>: each assistant turn becomes its own example,
    the conversation through that turn exactly as the template renders it at that point."""
    tok = wordlevel_tokenizer(THINK_DROPPING, extra_words=["<", ">", "</", "think", "hmm"])
    think = [("<", 1), ("think", 1), (">", 1)]  # the word-level tokenizer splits <think> in three
    end_think = [("</", 1), ("think", 1), (">", 1)]
    good = {"messages": CONV_NO_SYSTEM}
    thinking = {
        "messages": [
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": "<think> hmm </think> hi"},
            {"role": "user", "content": "thanks"},
            {"role": "assistant", "content": "<think> think </think> ok"},
        ]
    }
    ts = tokenized(tmp_path, [good, thinking], TemplateSpec(), tok)
    assert len(ts) == 3 and ts.rows.tolist() == [0, 1, 1]
    assert (ts.per_turn_rows, ts.per_turn_examples) == (1, 2)
    first, second = pairs(tok, ts, 1), pairs(tok, ts, 2)
    assert first == [
        ("<|im_start|>", 0),
        ("user", 0),
        ("hello", 0),
        ("<|im_end|>", 0),
        ("<|im_start|>", 0),
        ("assistant", 0),
        *think,
        ("hmm", 1),
        *end_think,
        ("hi", 1),
        ("<|im_end|>", 1),
    ]
    # turn 2 sees turn 1 as the template renders it then: without its <think>
    assert second == [
        ("<|im_start|>", 0),
        ("user", 0),
        ("hello", 0),
        ("<|im_end|>", 0),
        ("<|im_start|>", 0),
        ("assistant", 0),
        ("hi", 0),
        ("<|im_end|>", 0),
        ("<|im_start|>", 0),
        ("user", 0),
        ("thanks", 0),
        ("<|im_end|>", 0),
        ("<|im_start|>", 0),
        ("assistant", 0),
        *think,
        ("think", 1),
        *end_think,
        ("ok", 1),
        ("<|im_end|>", 1),
    ]
    assert [tk for tk, m in pairs(tok, ts, 0) if m] == [
        "hi",
        "<|im_end|>",
        "ok",
        "bye",
        "<|im_end|>",
    ]  # stable row: one example
    # each per-turn example's prompt is what inference gives the model for that turn
    for i, messages in ((1, thinking["messages"][:1]), (2, thinking["messages"][:3])):
        prompt = tok.apply_chat_template(messages, add_generation_prompt=True)["input_ids"]
        t, m = ts.example(i)
        assert t[: int(np.argmax(m))].tolist() == list(prompt)


def test_a_generation_prompt_that_is_not_the_turns_start_is_refused_with_row_and_turn(tmp_path):
    opens_thinking = CHATML.replace("{{ '<|im_start|>assistant\n' }}", "{{ '<|im_start|>assistant\n<think>' }}")
    tok = wordlevel_tokenizer(opens_thinking, extra_words=["<think>"])
    rows = [{"messages": CONV_NO_SYSTEM}]
    with pytest.raises(TemplateNotPrefixStableError) as e:
        tokenized(tmp_path, rows, TemplateSpec(), tok, on_bad_row="skip")  # never skipped silently
    assert e.value.row == 1 and e.value.turn == 1
    assert "add_generation_prompt" in str(e.value) and "last_assistant" in str(e.value)


def test_cross_check_with_transformers_generation_tags(tmp_path):
    """Prefix-rendering spans == transformers' {% generation %} assistant mask (plus the shift of position 0)."""
    gen = (
        "{% for message in messages %}"
        "{% if message['role'] == 'assistant' %}"
        "{{ '<|im_start|>assistant\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
        "{{ '\n' }}"
        "{% else %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}{% endif %}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    tok = bpe_tokenizer(gen)
    convs = [
        [{"role": "user", "content": "Hello!"}, {"role": "assistant", "content": "I am fine."}],
        [
            {"role": "system", "content": "Tell me a joke."},
            {"role": "user", "content": "about cats"},
            {"role": "assistant", "content": "Why did the cat sit on the computer?"},
            {"role": "user", "content": "Why?"},
            {"role": "assistant", "content": "To keep an eye on the mouse."},
        ],
    ]
    ts = tokenized(tmp_path, [{"messages": c} for c in convs], TemplateSpec(), tok)
    for i, conv in enumerate(convs):
        ref = tok.apply_chat_template(conv, return_assistant_tokens_mask=True, return_dict=True)
        t, m = ts.example(i)
        assert t.tolist() == list(ref["input_ids"])
        assert m.tolist() == list(ref["assistant_masks"])


def test_messages_without_a_chat_template_is_a_clear_error(tmp_path):
    from runtime.plan.data_errors import DataError

    with pytest.raises(DataError, match="tokenizer has no chat template"):
        tokenized(tmp_path, [{"messages": CONV}], TemplateSpec(), wordlevel_tokenizer())


def test_eval_prompts_of_a_chat_end_at_the_last_assistant_turn(tmp_path):
    from runtime.plan.data_plan import EvalSplit

    tok = wordlevel_tokenizer(CHATML)
    path = write_jsonl(str(tmp_path / "m.jsonl"), [{"messages": CONV}] * 2)
    plan = DataPlan(
        sources=(SourceSpec(name="m", kind="jsonl", paths=(path,), eval=EvalSplit(fraction=0.5, seed=0)),),
        seq_len=64,
        global_batch_size=1,
    )
    [(ex, prompt, ref)] = build_pipeline(plan, tok, cache_dir=str(tmp_path / "c")).eval_prompts("m")
    assert tok.convert_ids_to_tokens(ref.tolist()) == ["ok", "bye", "<|im_end|>"]
    assert prompt.tolist() == list(tok.apply_chat_template(CONV[:-1], add_generation_prompt=True)["input_ids"])
