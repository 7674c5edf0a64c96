#!/usr/bin/env python3
"""Generate the data of the row-shape examples (specs/shapes-*.sft), one file per shape,
and the small byte-level tokenizer two of them use.

    python specs/data/make_shapes.py           # (re)write the files
    python specs/data/make_shapes.py --check   # exit 1 if the files on disk differ

shapes-sharegpt.jsonl   `conversations` of {"from": human|gpt|system, "value"} turns, and `lang`
                        (a few German rows, which the spec's `where` leaves out)
shapes-alpaca.jsonl     `instruction`, `input` (empty for half the rows), `output`
shapes-tools.jsonl      OpenAI-style `messages` with an assistant tool call, the tool's result
                        and the answer, and `tools` (the function schema)
shapes-reasoning.jsonl  `messages` whose assistant turns think first (<think>...</think>)
shapes-tokens.jsonl     pre-tokenized `input_ids` and `labels` (-100: not trained), made with
                        the tokenizer below
shapes-tokenizer/       a byte-level tokenizer (one token per byte, no merges) whose chat
                        template drops earlier turns' <think> blocks, as reasoning models do

Deterministic: standard library only, one seeded `random.Random` per file. The store,
its orders and every name are made up.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import generated_files
from generated_files import render

HERE = Path(__file__).resolve().parent
TOKENIZER_DIR = HERE / "shapes-tokenizer"
STORE = "Parcelly"
PRODUCTS = ("blender", "desk lamp", "kettle", "headphones", "backpack", "toaster", "yoga mat", "monitor")
STATUS = ("shipped", "out for delivery", "delivered", "being packed")
TOPICS = (
    ("returns", "How long do I have to return an item?", "30 days from delivery, unused and in the original box."),
    ("shipping", "How long does shipping take?", "Standard shipping takes 3 to 5 business days."),
    ("refunds", "When will I get my refund?", "Within 3 business days after your return arrives."),
    ("tracking", "Where can I track my order?", "Use the tracking link in your shipping email."),
    ("payment", "Which payment methods do you take?", "Cards, PayPal and gift cards."),
)

# ---------------------------------------------------------------- ShareGPT


def make_sharegpt() -> list[dict]:
    rng = random.Random(41)
    rows = []
    for i in range(120):
        topic, question, answer = TOPICS[i % len(TOPICS)]
        turns = [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
        if rng.random() < 0.5:
            turns += [
                {"from": "human", "value": rng.choice(("Thanks!", "Great, thank you.", "OK, thanks."))},
                {"from": "gpt", "value": f"You're welcome. Anything else about {topic}?"},
            ]
        if rng.random() < 0.3:
            turns = [{"from": "system", "value": f"You answer {STORE} customers in one sentence."}] + turns
        rows.append({"conversations": turns, "lang": "de" if i % 10 == 9 else "en"})
    return rows


# ---------------------------------------------------------------- Alpaca


def make_alpaca() -> list[dict]:
    rng = random.Random(42)
    rows = []
    for i in range(160):
        product = rng.choice(PRODUCTS)
        if i % 2:
            order = f"{rng.randrange(10_000, 100_000)}"
            rows.append(
                {
                    "instruction": "Write the order number in the message as JSON.",
                    "input": f"Hi, my {product} from order {order} has not arrived yet.",
                    "output": json.dumps({"order_id": order}),
                }
            )
        else:
            topic, question, answer = TOPICS[i // 2 % len(TOPICS)]
            rows.append({"instruction": question, "input": "", "output": answer})
    return rows


# ---------------------------------------------------------------- tool calls

ORDER_TOOL = {
    "type": "function",
    "function": {
        "name": "order_status",
        "description": "Look up where an order is.",
        "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
    },
}


def make_tools() -> list[dict]:
    rng = random.Random(43)
    rows = []
    for i in range(120):
        order, product, status = f"{rng.randrange(10_000, 100_000)}", rng.choice(PRODUCTS), rng.choice(STATUS)
        messages = [
            {
                "role": "user",
                "content": rng.choice(
                    (f"Where is my order {order}?", f"Any news on order {order}?", f"Has order {order} shipped?")
                ),
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": f"call{i}",
                        "type": "function",
                        "function": {"name": "order_status", "arguments": json.dumps({"order_id": order})},
                    }
                ],
            },
            {
                "role": "tool",
                "tool_call_id": f"call{i}",
                "content": json.dumps({"order_id": order, "status": status, "item": product}),
            },
            {"role": "assistant", "content": f"Your {product} (order {order}) is {status}."},
        ]
        rows.append({"messages": messages, "tools": [ORDER_TOOL]})
    return rows


# ---------------------------------------------------------------- reasoning


def make_reasoning() -> list[dict]:
    rng = random.Random(44)
    rows = []
    for _ in range(80):
        a, b = rng.randrange(2, 20), rng.randrange(2, 20)
        c = rng.randrange(2, 10)
        messages = [
            {"role": "user", "content": f"I bought {a} mugs and {b} plates. How many items is that?"},
            {"role": "assistant", "content": f"<think>{a} + {b} = {a + b}</think>That is {a + b} items."},
            {"role": "user", "content": f"And if I return {c} of them?"},
            {"role": "assistant", "content": f"<think>{a + b} - {c} = {a + b - c}</think>Then you keep {a + b - c}."},
        ]
        rows.append({"messages": messages})
    return rows


# ---------------------------------------------------------------- the byte-level tokenizer

SPECIALS = ("<|pad|>", "<|im_start|>", "<|im_end|>")
ADDED = ("<think>", "</think>")  # whole tokens, not special: they are part of what the model writes
BYTES_AT = len(SPECIALS) + len(ADDED)  # the id of byte 0

# ChatML; an assistant turn before the last user message keeps only its answer (its
# <think> block dropped), as reasoning models' templates do: so it is not prefix-stable.
CHAT_TEMPLATE = (
    "{%- set ns = namespace(last_user=-1) %}"
    "{%- for message in messages %}{% if message['role'] == 'user' %}{% set ns.last_user = loop.index0 %}{% endif %}"
    "{%- endfor %}"
    "{%- for message in messages %}"
    "{%- set content = message['content'] %}"
    "{%- if message['role'] == 'assistant' and loop.index0 < ns.last_user and '</think>' in content %}"
    "{%- set content = content.split('</think>')[-1] %}{%- endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + content + '<|im_end|>\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def byte_symbols() -> list[str]:
    """The printable character byte-level BPE writes for each byte (GPT-2's mapping)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            symbols[byte] = chr(byte)
        else:
            symbols[byte] = chr(256 + extra)
            extra += 1
    return [symbols[b] for b in range(256)]


def byte_ids(text: str) -> list[int]:
    """What the tokenizer below makes of ``text``: one id per UTF-8 byte."""
    return [BYTES_AT + b for b in text.encode("utf-8")]


def make_tokenizer() -> dict[str, bytes]:
    vocab = {token: i for i, token in enumerate(SPECIALS + ADDED)}
    vocab.update({symbol: BYTES_AT + b for b, symbol in enumerate(byte_symbols())})
    added = [
        {
            "id": i,
            "content": token,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": token in SPECIALS,
        }
        for i, token in enumerate(SPECIALS + ADDED)
    ]
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": [],
        },
    }
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|pad|>",
        "unk_token": None,
        "model_max_length": 4096,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
    }
    return {
        "tokenizer.json": (json.dumps(tokenizer, ensure_ascii=True, indent=1) + "\n").encode("ascii"),
        "tokenizer_config.json": (json.dumps(config, ensure_ascii=True, indent=1) + "\n").encode("ascii"),
    }


# ---------------------------------------------------------------- pre-tokenized


def make_tokens() -> list[dict]:
    """Question/answer pairs as ChatML token ids; the labels train the answer and its <|im_end|>."""
    rng = random.Random(45)
    start, end = SPECIALS.index("<|im_start|>"), SPECIALS.index("<|im_end|>")
    rows = []
    for _ in range(120):
        topic, question, answer = rng.choice(TOPICS)
        prompt = [start, *byte_ids(f"user\n{question}"), end, *byte_ids("\n"), start, *byte_ids("assistant\n")]
        reply = [*byte_ids(answer), end]
        rows.append({"input_ids": prompt + reply, "labels": [-100] * len(prompt) + reply, "topic": topic})
    return rows


def build() -> dict[Path, bytes]:
    files = {
        HERE / "shapes-sharegpt.jsonl": render(make_sharegpt()),
        HERE / "shapes-alpaca.jsonl": render(make_alpaca()),
        HERE / "shapes-tools.jsonl": render(make_tools()),
        HERE / "shapes-reasoning.jsonl": render(make_reasoning()),
        HERE / "shapes-tokens.jsonl": render(make_tokens()),
    }
    files.update({TOKENIZER_DIR / name: data for name, data in make_tokenizer().items()})
    return files


if __name__ == "__main__":
    TOKENIZER_DIR.mkdir(exist_ok=True)
    sys.exit(generated_files.main(build, __doc__.splitlines()[0], "make_shapes.py"))
