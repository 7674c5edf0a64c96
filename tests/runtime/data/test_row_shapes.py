"""Token-exact masks for the row shapes users bring, on three template families (ChatML,
Llama 3, Mistral): ShareGPT (and its variants), Alpaca, OpenAI tool calls, pre-tokenized rows,
and the source transforms (rename, where, a system prompt). Each shape is proven against a
reference: the hand-checked OpenAI-messages masks of test_data_masks, hand-written strings, or
the row's own labels; packed batches train the same tokens as unpacked ones, and truncation
keeps a prefix of them."""

from __future__ import annotations

import json

import pytest

from runtime.data.pipeline import DataPipeline
from runtime.data.sources import load_source
from runtime.data.tokenize import tokenize_source
from runtime.plan.data_errors import BadRowError, SourceError
from runtime.plan.data_plan import DataPlan, EvalSplit, SourceSpec, TemplateSpec
from runtime.plan.row_shapes import ALPACA_NO_INPUT, ALPACA_WITH_INPUT
from tests.runtime.data_helpers import (
    CHATML,
    CHATML_TOOLS,
    LLAMA3,
    LLAMA3_TOOLS,
    MISTRAL,
    MISTRAL_TOOLS,
    TOOL_SPECIALS,
    bpe_tokenizer,
    wordlevel_tokenizer,
    write_jsonl,
)

FAMILIES = {"chatml": CHATML, "llama3": LLAMA3, "mistral": MISTRAL}
TOOL_FAMILIES = {"chatml": CHATML_TOOLS, "llama3": LLAMA3_TOOLS, "mistral": MISTRAL_TOOLS}

CONV = [
    {"role": "user", "content": "hello"},
    {"role": "assistant", "content": "hi"},
    {"role": "user", "content": "thanks"},
    {"role": "assistant", "content": "ok bye"},
]
SHAREGPT_ROLE = {"user": "human", "assistant": "gpt", "system": "system"}


def tokenized(tmp_path, rows, template, tok, name="s", **spec_kw):
    path = write_jsonl(str(tmp_path / f"{name}.jsonl"), rows)
    spec = SourceSpec(name=name, kind="jsonl", paths=(path,), **spec_kw)
    loaded = load_source(spec, cache_dir=str(tmp_path / "c"))
    return tokenize_source(loaded, template, tok, cache_dir=str(tmp_path / "c"))


def example(ts, i=0) -> tuple[list[int], list[int]]:
    t, m = ts.example(i)
    return t.tolist(), m.tolist()


def runs(tok, ts, i=0) -> list[str]:
    """The decoded text of each run of trained tokens of example ``i``."""
    t, m = ts.example(i)
    out, current = [], []
    for token, flag in zip(t.tolist(), m.tolist()):
        if flag:
            current.append(token)
        elif current:
            out.append(tok.decode(current))
            current = []
    return out + ([tok.decode(current)] if current else [])


def untrained(tok, ts, i=0) -> str:
    t, m = ts.example(i)
    return tok.decode([x for x, f in zip(t.tolist(), m.tolist()) if not f])


# ---------------------------------------------------------------- ShareGPT


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_sharegpt_trains_exactly_like_the_same_openai_messages(tmp_path, family):
    tok = wordlevel_tokenizer(FAMILIES[family])
    conv = ([{"role": "system", "content": "be good"}] if family != "mistral" else []) + CONV
    openai = tokenized(tmp_path, [{"messages": conv}], TemplateSpec(), tok, name="openai")
    sharegpt = tokenized(
        tmp_path,
        [{"conversations": [{"from": SHAREGPT_ROLE[m["role"]], "value": m["content"]} for m in conv]}],
        TemplateSpec(),
        tok,
        name="sharegpt",
    )
    assert sharegpt.mode.kind == "messages" and sharegpt.mode.column == "conversations"
    assert example(sharegpt) == example(openai)
    # a variant with its own key and role names, mapped in the template
    variant = [
        {"speaker": {"user": "customer", "assistant": "agent", "system": "system"}[m["role"]], "text": m["content"]}
        for m in conv
    ]
    mapped = tokenized(
        tmp_path,
        [{"dialog": variant}],
        TemplateSpec(
            messages="dialog",
            roles=(("customer", "user"), ("agent", "assistant")),
            keys=(("role", "speaker"), ("content", "text")),
        ),
        tok,
        name="variant",
    )
    assert example(mapped) == example(openai)


def test_an_unknown_role_is_a_bad_row_naming_the_message_and_the_fix(tmp_path):
    tok = wordlevel_tokenizer(CHATML)
    rows = [{"conversations": [{"from": "human", "value": "hello"}, {"from": "bot", "value": "hi"}]}]
    with pytest.raises(BadRowError) as e:
        tokenized(tmp_path, rows, TemplateSpec(), tok)
    assert e.value.row == 1 and e.value.turn == 1 and e.value.column == "conversations"
    assert "unknown role 'bot'" in str(e.value) and "roles = (bot = " in str(e.value)


# ---------------------------------------------------------------- Alpaca


def test_alpaca_renders_the_alpaca_prompt_and_trains_the_output(tmp_path):
    tok = bpe_tokenizer()
    rows = [
        {"instruction": "Tell me a joke about cats.", "input": "", "output": "Why did the cat sit on the computer?"},
        {"instruction": "What is two plus three?", "input": "Answer in words.", "output": "five."},
    ]
    ts = tokenized(tmp_path, rows, TemplateSpec(), tok)
    assert ts.mode.kind == "alpaca"
    assert runs(tok, ts, 0) == ["Why did the cat sit on the computer?</s>"]
    assert untrained(tok, ts, 0) == ALPACA_NO_INPUT.format(instruction="Tell me a joke about cats.")
    assert "### Input" not in untrained(tok, ts, 0)  # an empty input leaves no dangling section
    assert untrained(tok, ts, 1) == ALPACA_WITH_INPUT.format(
        instruction="What is two plus three?", input="Answer in words."
    )
    assert runs(tok, ts, 1) == ["five.</s>"]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_alpaca_with_chat_is_a_user_and_an_assistant_turn(tmp_path, family):
    tok = wordlevel_tokenizer(FAMILIES[family])
    row = {"instruction": "tell me a joke", "input": "about cats", "output": "why did the chicken cross the road"}
    ts = tokenized(tmp_path, [row], TemplateSpec(format="alpaca", chat=True), tok, name="alpaca")
    conv = [
        {"role": "user", "content": "tell me a joke\n\nabout cats"},
        {"role": "assistant", "content": "why did the chicken cross the road"},
    ]
    reference = tokenized(tmp_path, [{"messages": conv}], TemplateSpec(), tok, name="reference")
    assert example(ts) == example(reference)


# ---------------------------------------------------------------- tool calls

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "order_status",
            "description": "look up an order",
            "parameters": {"type": "object", "properties": {"order": {"type": "string"}}},
        },
    }
]


def _tool_conversation(arguments) -> list[dict]:
    return [
        {"role": "user", "content": "Where is order 12345?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "order_status", "arguments": arguments}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": '{"status": "shipped"}'},
        {"role": "assistant", "content": "It has shipped."},
    ]


TOOL_EXPECTED = {  # the trained runs: the assistant's call and its final answer, each with its end token
    "chatml": [
        '<tool_call>{"name": "order_status", "arguments": {"order": "12345"}}</tool_call><|im_end|>',
        "It has shipped.<|im_end|>",
    ],
    "llama3": ['{"name": "order_status", "parameters": {"order": "12345"}}<|eot_id|>', "It has shipped.<|eot_id|>"],
    "mistral": ['[TOOL_CALLS] [{"name": "order_status", "arguments": {"order": "12345"}}]</s>', "It has shipped.</s>"],
}


@pytest.mark.parametrize("family", sorted(TOOL_FAMILIES))
def test_tool_calls_train_the_calls_and_the_answer_and_tool_results_are_context(tmp_path, family):
    tok = bpe_tokenizer(TOOL_FAMILIES[family], extra_specials=TOOL_SPECIALS)
    # OpenAI sends arguments as JSON text; templates read an object: both forms train alike
    rows = [
        {"messages": _tool_conversation('{"order": "12345"}'), "tools": TOOLS},
        {"messages": _tool_conversation({"order": "12345"}), "tools": json.dumps(TOOLS)},
    ]
    ts = tokenized(tmp_path, rows, TemplateSpec(), tok)
    assert ts.mode.tools == "tools"
    assert runs(tok, ts, 0) == TOOL_EXPECTED[family]
    assert example(ts, 0) == example(ts, 1)
    context = untrained(tok, ts, 0)
    assert "shipped" in context and "order_status" in context  # the result and the schemas are read, not trained
    assert '"description": "look up an order"' in context
    assert ts.tool_tokens.tolist() == [len(tok(TOOL_EXPECTED[family][0], add_special_tokens=False)["input_ids"])] * 2
    assert ts.unclosed_turns == 0


@pytest.mark.parametrize(
    "problem, conversation, reason, turn",
    [
        (
            "a result without a call",
            [
                {"role": "user", "content": "hi"},
                {"role": "tool", "content": "{}"},
                {"role": "assistant", "content": "ok"},
            ],
            "a tool message without a preceding tool call",
            1,
        ),
        (
            "arguments that are not JSON",
            _tool_conversation('{"order": 12345'),
            "tool_calls[0].arguments is not valid JSON",
            1,
        ),
        (
            "a call without a name",
            [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "", "tool_calls": [{"function": {"arguments": "{}"}}]},
            ],
            "tool_calls[0] has no function name",
            1,
        ),
    ],
)
def test_malformed_tool_rows_are_bad_rows_with_the_message_and_key(tmp_path, problem, conversation, reason, turn):
    tok = bpe_tokenizer(CHATML_TOOLS, extra_specials=TOOL_SPECIALS)
    good = {"messages": CONV}
    with pytest.raises(BadRowError) as e:
        tokenized(tmp_path, [good, {"messages": conversation}], TemplateSpec(), tok)
    assert e.value.row == 2 and e.value.turn == turn and reason in str(e.value), problem
    skipped = tokenized(
        tmp_path, [good, {"messages": conversation}], TemplateSpec(), tok, name="skip", on_bad_row="skip"
    )
    assert len(skipped) == 1 and [r.reason for r in skipped.bad_rows][0].startswith(reason)


def test_a_conversation_ending_on_a_user_turn_is_refused_when_the_last_answer_trains(tmp_path):
    tok = wordlevel_tokenizer(CHATML)
    rows = [{"messages": CONV + [{"role": "user", "content": "thanks"}]}]
    with pytest.raises(BadRowError) as e:
        tokenized(tmp_path, rows, TemplateSpec(messages="messages", train_on="last_assistant"), tok)
    assert "ends on a user turn" in str(e.value) and e.value.turn == 4
    # every assistant turn is still well defined
    assert runs(tok, tokenized(tmp_path, rows, TemplateSpec(), tok, name="all")) == [
        "hi <|im_end|>",
        "ok bye <|im_end|>",
    ]


# ---------------------------------------------------------------- pre-tokenized


def test_pretokenized_rows_train_their_labels_or_loss_mask(tmp_path):
    tok = wordlevel_tokenizer()
    rows = [
        {"input_ids": [1, 20, 21, 22, 23, 2], "labels": [-100, -100, -100, 22, 23, 2]},
        {"input_ids": [1, 30, 31, 2], "loss_mask": [1, 0, 1, 1]},
    ]
    ts = tokenized(tmp_path, rows, TemplateSpec(), tok)
    assert ts.mode.kind == "tokens"
    assert example(ts, 0) == ([1, 20, 21, 22, 23, 2], [0, 0, 0, 1, 1, 1])
    assert example(ts, 1) == ([1, 30, 31, 2], [0, 0, 1, 1])  # the first token is never a target


@pytest.mark.parametrize(
    "row, reason",
    [
        ({"input_ids": [1, 5, 100_000], "labels": [-100, 5, 100_000]}, "input_ids[2] = 100000 is not a token id"),
        ({"input_ids": [1, 5, 6], "labels": [-100, 6, 7]}, "labels[1] = 6 is neither -100 nor input_ids[1] = 5"),
        ({"input_ids": [1, 5, 6], "labels": [-100, -100, -100]}, "no trainable tokens"),
        ({"input_ids": [1, 5, 6]}, "needs labels (-100: not trained) or a loss_mask"),
    ],
)
def test_bad_pretokenized_rows_say_what_is_wrong(tmp_path, row, reason):
    tok = wordlevel_tokenizer()
    with pytest.raises(BadRowError) as e:
        tokenized(tmp_path, [{"input_ids": [1, 5, 6], "labels": [-100, 5, 6]}, row], TemplateSpec(), tok)
    assert e.value.row == 2 and reason in str(e.value)


# ---------------------------------------------------------------- source transforms


def test_rename_where_and_a_source_system_prompt(tmp_path):
    tok = wordlevel_tokenizer(CHATML)
    rows = [
        {"dialog": CONV, "lang": "en"},
        {"dialog": CONV, "lang": "de"},
        {"dialog": [{"role": "system", "content": "be good"}] + CONV, "lang": "en"},
    ]
    ts = tokenized(
        tmp_path,
        rows,
        TemplateSpec(),
        tok,
        rename=(("dialog", "messages"),),
        where=(("lang", ("en",)),),
        system="you are a bot",
    )
    assert len(ts) == 2 and ts.rows.tolist() == [0, 2] and ts.filtered == 1 and not ts.bad_rows
    first, third = (tok.decode(ts.example(i)[0].tolist()) for i in (0, 1))
    assert first.startswith("<|im_start|> system you are a bot <|im_end|>")
    assert "you are a bot" not in third and third.startswith("<|im_start|> system be good")  # the row's own wins
    with pytest.raises(SourceError, match="`rename` names the column 'dialog', which the source does not have"):
        tokenized(tmp_path, [{"chat": CONV}], TemplateSpec(), tok, name="missing", rename=(("dialog", "messages"),))
    # a row of a source that has the column elsewhere
    with pytest.raises(BadRowError) as e:
        tokenized(
            tmp_path,
            [{"dialog": CONV}, {"chat": CONV}],
            TemplateSpec(),
            tok,
            name="some",
            rename=(("dialog", "messages"),),
        )
    assert e.value.row == 2 and "missing or null column 'dialog' (renamed to 'messages')" in str(e.value)


NO_CHAT = {  # rows no chat template renders, and why a source's system message cannot apply to them
    "prompt/completion": (
        [{"q": "hello", "a": "hi"}],
        TemplateSpec(prompt="{q}", completion=" {a}"),
        "its prompt/completion rows are rendered as plain text",
    ),
    "prompt/completion columns": (
        [{"prompt": "hello", "completion": " hi"}],
        TemplateSpec(),
        "its prompt/completion rows are rendered as plain text",
    ),
    "alpaca": (
        [{"instruction": "hello", "output": "hi"}],
        TemplateSpec(format="alpaca"),
        "its Alpaca rows are rendered as plain text",
    ),
    "text": ([{"text": "hello hi"}], TemplateSpec(), "its `text` rows are trained as written"),
    "tokens": (
        [{"input_ids": [1, 5, 6], "labels": [-100, 5, 6]}],
        TemplateSpec(format="tokens"),
        "its rows are token ids already",
    ),
}


@pytest.mark.parametrize("case", sorted(NO_CHAT))
def test_a_source_system_prompt_no_turn_carries_is_refused_not_dropped(tmp_path, case):
    rows, template, reason = NO_CHAT[case]
    with pytest.raises(SourceError, match=f"data s: `system` does not apply: {reason}"):
        tokenized(tmp_path, rows, template, wordlevel_tokenizer(CHATML), system="you are a bot")


@pytest.mark.parametrize(
    "template", [TemplateSpec(prompt="{q}", completion=" {a}", chat=True), TemplateSpec(format="alpaca", chat=True)]
)
def test_a_source_system_prompt_goes_first_in_chat_on_rows(tmp_path, template):
    tok = wordlevel_tokenizer(CHATML)
    row = {"q": "hello", "a": "hi", "instruction": "hello", "output": "hi"}
    ts = tokenized(tmp_path, [row], template, tok, system="you are a bot")
    assert tok.decode(ts.example(0)[0].tolist()).startswith("<|im_start|> system you are a bot <|im_end|>")


# ---------------------------------------------------------------- packing and truncation


def _mixed_rows() -> list[dict]:
    sharegpt = {"conversations": [{"from": SHAREGPT_ROLE[m["role"]], "value": m["content"]} for m in CONV]}
    return [dict(sharegpt) for _ in range(6)] + [
        {"conversations": [{"from": "human", "value": "what is two plus three"}, {"from": "gpt", "value": "five"}]}
    ] * 5


def _trained_pairs(pipeline: DataPipeline) -> list[tuple[int, int]]:
    """(input token, target) of every trained position of every batch, sorted: what the loss sees."""
    out = []
    for step in range(pipeline.total_steps):
        b = pipeline.batch(step)
        trained = b["loss_mask"] > 0
        out += list(zip(b["input_ids"][trained].tolist(), b["targets"][trained].tolist()))
    return sorted(out)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_packed_batches_train_the_same_tokens_as_unpacked_ones(tmp_path, family):
    tok = wordlevel_tokenizer(FAMILIES[family])
    path = write_jsonl(str(tmp_path / "mixed.jsonl"), _mixed_rows())

    def pipeline(packing: bool, seq_len: int = 64, overflow: str = "drop") -> DataPipeline:
        spec = SourceSpec(name="mixed", kind="jsonl", paths=(path,), overflow=overflow)
        return DataPipeline(
            DataPlan(sources=(spec,), seq_len=seq_len, packing=packing, global_batch_size=2, epochs=1),
            tok,
            str(tmp_path / "c"),
        )

    packed, unpacked = pipeline(True), pipeline(False)
    assert packed.total_steps < unpacked.total_steps
    assert _trained_pairs(packed) == _trained_pairs(unpacked)
    assert len(_trained_pairs(packed)) == packed.stats.sources["mixed"].train_trained_tokens
    # truncated to fewer positions than the long conversation has: each keeps the start of its trained tokens
    short = pipeline(False, seq_len=10, overflow="truncate")
    assert short.stats.sources["mixed"].truncated >= 6
    (table,) = short._tables
    for gid in range(len(short.ex_table)):
        tokens, trained = short.example_arrays(gid)
        full_tokens, full_trained = table.example(int(short.ex_local[gid]))
        assert len(tokens) <= 11 and trained.any()
        assert tokens.tolist() == full_tokens[: len(tokens)].tolist()
        assert trained.tolist() == full_trained[: len(trained)].tolist()


def test_the_plan_says_where_the_trained_tokens_come_from(tmp_path):
    tok = bpe_tokenizer(CHATML_TOOLS, extra_specials=TOOL_SPECIALS)
    path = write_jsonl(
        str(tmp_path / "tools.jsonl"),
        [
            {"messages": _tool_conversation('{"order": "12345"}'), "tools": TOOLS, "lang": "en"},
            {"messages": CONV, "lang": "fr"},
        ],
    )
    spec = SourceSpec(name="calls", kind="jsonl", paths=(path,), where=(("lang", ("en",)),))
    pipeline = DataPipeline(
        DataPlan(sources=(spec,), seq_len=256, packing=False, global_batch_size=1, epochs=1), tok, str(tmp_path / "c")
    )
    st = pipeline.stats.sources["calls"]
    assert st.filtered == 1 and 0 < st.tool_call_tokens < st.train_trained_tokens and st.resolved["tools"] == "tools"
    lines = "\n".join(pipeline.stats.source_lines())
    assert (
        f"calls: {st.train_trained_tokens:,} trained tokens, from assistant turns ({st.tool_call_tokens:,} tokens "
        "in tool calls; tool results are context)" in lines
    )
    assert "filtered 1 (where)" in pipeline.stats.summary()


def test_a_trained_turn_that_does_not_end_on_an_end_of_turn_token_is_reported(tmp_path):
    plain = (
        "{% for message in messages %}{{ message['role'] + ' : ' + message['content'] + '\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ 'assistant :' }}{% endif %}"
    )
    tok = wordlevel_tokenizer(plain)
    ts = tokenized(tmp_path, [{"messages": CONV}], TemplateSpec(), tok)
    assert ts.unclosed_turns == 2  # both answers end on a word: nothing teaches the model to stop
    plan = DataPlan(
        sources=(SourceSpec(name="s", kind="jsonl", paths=(str(tmp_path / "s.jsonl"),)),),
        seq_len=64,
        global_batch_size=1,
        epochs=1,
    )
    lines = DataPipeline(plan, tok, str(tmp_path / "c")).stats.source_lines()
    assert "warning: 2 trained turns of s do not end on an end-of-turn token" in "\n".join(lines)


# ---------------------------------------------------------------- inference renders alike


def _eval_prompt_cases():
    sharegpt = [
        {"conversations": [{"from": "human", "value": "hello"}, {"from": "gpt", "value": "hi"}]},
        {
            "conversations": [
                {"from": "system", "value": "be good"},
                {"from": "human", "value": "thanks"},
                {"from": "gpt", "value": "ok"},
                {"from": "human", "value": "bye"},
                {"from": "gpt", "value": "ok bye"},
            ]
        },
    ]
    alpaca = [
        {"instruction": "tell me a joke", "input": "about cats", "output": "why did the chicken cross"},
        {"instruction": "say hello", "input": "", "output": "hello"},
    ]
    tools = [{"messages": _tool_conversation('{"order": "12345"}'), "tools": TOOLS}, {"messages": CONV, "tools": None}]
    tokens = [
        {"input_ids": [1, 20, 21, 22, 23, 2], "labels": [-100, -100, -100, 22, 23, 2]},
        {"input_ids": [1, 30, 31, 32, 2], "loss_mask": [0, 0, 1, 1, 1]},
    ]
    return {
        "sharegpt": (CHATML, False, sharegpt, {"system": "you are a bot"}, TemplateSpec()),
        "alpaca": (None, False, alpaca, {}, TemplateSpec()),
        "alpaca-chat": (LLAMA3, False, alpaca, {}, TemplateSpec(format="alpaca", chat=True, system="be good")),
        "tools": (CHATML_TOOLS, True, tools, {}, TemplateSpec()),
        "tokens": (None, False, tokens, {}, TemplateSpec()),
    }


@pytest.mark.parametrize("case", sorted(_eval_prompt_cases()))
def test_generate_renders_a_row_to_the_prompt_evaluation_cut_from_training(tmp_path, case):
    """`sftc generate --file` renders rows with `render_prompt`; evaluation cuts its prompts from the
    training tokens. For every shape they are the same ids."""
    from runtime.data.prompts import render_prompt

    template, tools_tokenizer, rows, source_kw, spec = _eval_prompt_cases()[case]
    tok = bpe_tokenizer(template, extra_specials=TOOL_SPECIALS) if tools_tokenizer else wordlevel_tokenizer(template)
    path = write_jsonl(str(tmp_path / "rows.jsonl"), rows)
    source = SourceSpec(name="s", kind="jsonl", paths=(path,), eval=None, **source_kw)
    held = SourceSpec(name="s", kind="jsonl", paths=(path,), **source_kw, eval=EvalSplit(source=source))
    plan = DataPlan(sources=(held,), templates={"s": spec}, seq_len=256, packing=False, global_batch_size=1, epochs=1)
    pipeline = DataPipeline(plan, tok, str(tmp_path / "c"))
    mode = pipeline._tables[1].mode
    prompts = pipeline.eval_prompts()
    assert len(prompts) == len(rows)
    for (ex, prompt, _), row in zip(prompts, rows):
        assert render_prompt(tok, mode, row).ids == prompt.tolist(), ex.row
