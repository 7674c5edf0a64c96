"""Hypothesis strategies that generate valid `.sft` spec *text*, laid out messily.

Every syntactic form of the grammar appears: the `sft` header, `use`, the
`model`/`train`/`eval`/`accept`/`output` blocks (and unknown ones), data
declarations with and without a body, labelled entries (`split eval = 5% seed 7`),
template declarations with prompt/completion strings (escapes, triple-quoted
text) or the messages form, calls with positional and keyword arguments, lists,
tuples, percentages, quantities, `every .. keep ..`, `seed`, `init`,
`train .. on ..`, weighted sums, gates with every comparison and call metrics
(`bleu(faq) >= 20`), own-line and trailing comments, blank lines, random
spacing, tabs, CRLF line ends, and line breaks (with comments) inside ( ) and [ ].

The texts always parse; they are *syntactically* valid only. Known keys usually
get a value of a plausible shape, sometimes a random one, and unknown keys turn
up too, so a checker fuzzed with them sees both valid and invalid specs.

    from hypothesis import given
    from tests.sftlang.spec_strategies import spec_texts

    @given(spec_texts())
    def test_check_never_crashes(text): ...

Public: `spec_texts()`, `values()`, `comments()`, `KEYWORDS`.
"""

from __future__ import annotations

from functools import cache

from hypothesis import strategies as st


@cache
def _sampled(options: tuple):
    return st.sampled_from(options)


@cache
def _integers(low: int, high: int):
    return st.integers(low, high)


def _one(draw, options):
    """One of `options` (strategies are built once: drawing is the hot path here)."""
    return draw(_sampled(tuple(options)))


def _int(draw, low: int, high: int) -> int:
    return draw(_integers(low, high))


def _flag(draw) -> bool:
    return draw(_BOOL)


_BOOL = st.booleans()

# Reserved words of the grammar. `init`, `train` and `every` start a value, so
# they can never be plain names there; the others are lexed as names wherever
# the keyword is not expected (`packing = on`, `seed = 42`, `data = tickets`).
KEYWORDS = frozenset({"sft", "use", "data", "template", "for", "init", "train", "on", "every", "keep", "seed"})

_PLAIN = [
    "auto",
    "bfloat16",
    "float32",
    "drop",
    "truncate",
    "error",
    "skip",
    "assistant",
    "all",
    "hf",
    "peft",
    "gguf",
    "none",
    "greedy",
    "off",
    "true",
    "false",
    "full",
    "dots",
    "q",
    "k",
    "v",
    "o",
    "base",
    "x",
    "y_2",
    "_z",
]
_VALUE_NAMES = _PLAIN + ["on"]  # `on` is a name in value position (the example writes `packing = on`)
_UNITS = ["steps", "epochs", "tokens", "GiB", "MiB", "rows"]
_DATA_NAMES = ["tickets", "faq", "chats", "extra", "t2", "on_call"]
_HEADS = [
    "hf",
    "lora",
    "adamw",
    "cosine",
    "greedy",
    "sample",
    "jsonl",
    "parquet",
    "hf_dataset",
    "llama",
    "sentencepiece",
    "f",
    "exact_match",
]
_KEYS = [
    "base",
    "tokenizer",
    "dtype",
    "adapter",
    "quantize",
    "epochs",
    "steps",
    "batch",
    "micro",
    "seq_len",
    "packing",
    "optimizer",
    "schedule",
    "clip",
    "remat",
    "seed",
    "mesh",
    "checkpoint",
    "every",
    "generate",
    "samples",
    "dir",
    "export",
    "overflow",
    "on_bad_row",
    "data",
    "on",
    "train",
    "lrr",
    "zzz",
]
_METRICS = ["loss", "rouge_l", "exact_match", "json_valid", "mean_tokens", "chrf", "perplexity"]
_BLOCKS = ["model", "train", "eval", "accept", "output"]
_OTHER_BLOCKS = ["on", "every", "seed", "keep", "for", "init", "optimizer", "modle"]

_ident = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,7}", fullmatch=True).filter(lambda s: s not in KEYWORDS)
names = st.one_of(st.sampled_from(_VALUE_NAMES), _ident)
_HEAD_NAMES = st.one_of(st.sampled_from(_HEADS), _ident)
# keys of arguments may be any keyword a value cannot start with
_ARG_KEYS = st.one_of(st.sampled_from(["lr", "rank", "alpha", "split", "on", "seed", "data", "keep", "for"]), _ident)
_KEY_NAMES = st.one_of(st.sampled_from(_KEYS), _ident)
_SOURCE_LISTS = st.lists(st.sampled_from(_DATA_NAMES), min_size=1, max_size=3)

# ---------------------------------------------------------------- layout

_HSPACE = ["", "", "", " ", " ", "  ", "\t"]
_REQUIRED = [" ", " ", " ", "  ", "\t", " \t "]
_COMMENT_BODIES = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=24)


@st.composite
def _comments(draw) -> str:
    body = draw(_COMMENT_BODIES)
    return "#" + body + _one(draw, ["", "", " ", "  "])


_COMMENTS = _comments()


def comments():
    """`# ...` (without the newline), sometimes with trailing spaces, quotes or `#` inside."""
    return _COMMENTS


def _sp(draw) -> str:
    return _one(draw, _HSPACE)


def _req(draw) -> str:
    return _one(draw, _REQUIRED)


def _gap(draw, inside: bool, required: bool = False) -> str:
    """Whitespace between two tokens; inside ( ) or [ ] it may break the line,
    leave blank lines and carry comments."""
    if inside and _int(draw, 0, 6) == 0:
        out = _sp(draw)
        if _flag(draw):
            out += draw(_COMMENTS)
        out += "\n"
        if _int(draw, 0, 4) == 0:
            out += _sp(draw) + "\n"
        return out + _one(draw, ["", "  ", "    ", "        ", "\t"])
    return _req(draw) if required else _sp(draw)


# ---------------------------------------------------------------- literals


_NUMBERS = st.one_of(
    st.integers(-5, 5000).map(str),
    st.sampled_from(["0.05", "0.95", "2e-5", "1E+3", "1.0", ".5", "3.", "-0.5", "-1e-3", "0.80", "007"]),
    st.floats(0, 100, allow_nan=False).map(lambda f: f"{f:.3g}" if "e" not in f"{f:.3g}" else "1.5"),
)
_PERCENTS = st.sampled_from(["5%", "3%", "10%", "100%", "0.5%", ".5%", "12.%", "-1%", "0%", "99.99%"])
_LIMITS = st.one_of(_NUMBERS, _PERCENTS)


def numbers():
    """`3`, `2e-5`, `.5`, `-1e-3`, `007`, ..."""
    return _NUMBERS


def percents():
    return _PERCENTS


_short_piece = st.one_of(
    st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"), blacklist_characters='"\\'), max_size=8),
    st.sampled_from(["\\n", "\\t", '\\"', "\\\\", "{question}", "{a.b}", "{{", "}}", "### Answer:", "#not a comment"]),
)


_SHORT_STRINGS = st.lists(_short_piece, max_size=5).map(lambda pieces: '"' + "".join(pieces) + '"')


def short_strings():
    """`"..."` with escapes, braces, `#` and any printable character."""
    return _SHORT_STRINGS


_long_piece = st.one_of(
    st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"), blacklist_characters='"\\'), max_size=10),
    st.sampled_from(["\\n", "\\t", "\\\\", "{question}", "{{x}}", "# not a comment", "  ", "\t"]),
)


_LONG_LINES = st.lists(_long_piece, max_size=3)


@st.composite
def _long_strings(draw) -> str:
    lines = []
    for _ in range(_int(draw, 1, 4)):
        indent = _one(draw, ["", "    ", "        ", "  ", "\t"])
        lines.append(indent + "".join(draw(_LONG_LINES)))
    text = "\n".join(lines)
    if _flag(draw):
        text = "\n" + text + "\n" + _one(draw, ["", "    ", "  "])
    return '"""' + text + '"""'


_LONG_STRINGS = _long_strings()
_STRINGS = st.one_of(_SHORT_STRINGS, _SHORT_STRINGS, _LONG_STRINGS)


def long_strings():
    """`\"\"\"...\"\"\"`, one line or several with their own indentation (kept as written)."""
    return _LONG_STRINGS


def strings():
    return _STRINGS


# ---------------------------------------------------------------- values


def _call(draw, inside: bool, depth: int, head=None) -> str:
    head = head or draw(_HEAD_NAMES)
    return head + _sp(draw) + "(" + _args(draw, depth) + ")"


def _args(draw, depth: int) -> str:
    parts = []
    for _ in range(_int(draw, 0, 3)):
        arg = _value(draw, True, depth + 1)
        if _int(draw, 0, 2):
            key = draw(_ARG_KEYS)
            arg = key + _gap(draw, True) + "=" + _gap(draw, True) + arg
        parts.append(_gap(draw, True) + arg + _gap(draw, True))
    text = ",".join(parts)
    if parts and _int(draw, 0, 4) == 0:
        text += "," + _gap(draw, True)
    return text


def _atom(draw, inside: bool, depth: int) -> str:
    simple = ["string", "number", "percent", "name", "quantity"]
    nested = ["call", "list", "tuple", "init", "train_on", "every", "seeded"]
    kind = _one(draw, simple + (nested if depth < 3 else []))
    g = lambda required=False: _gap(draw, inside, required)  # noqa: E731
    if kind == "string":
        return draw(_STRINGS)
    if kind == "number":
        return draw(_NUMBERS)
    if kind == "percent":
        return draw(_PERCENTS)
    if kind == "name":
        return draw(names)
    if kind == "quantity":
        return draw(_NUMBERS) + g(True) + _one(draw, _UNITS)
    if kind == "call":
        return _call(draw, inside, depth)
    if kind == "list":
        items = [_gap(draw, True) + _value(draw, True, depth + 1) + _gap(draw, True) for _ in range(_int(draw, 0, 4))]
        text = ",".join(items)
        if items and _int(draw, 0, 4) == 0:
            text += ","
        return "[" + text + "]"
    if kind == "tuple":
        return "(" + _args(draw, depth) + ")"
    if kind == "init":
        return "init" + g(True) + _call(draw, inside, depth, head=_one(draw, ["llama", "mistral", "f"]))
    if kind == "train_on":
        return (
            "train"
            + g(True)
            + _call(draw, inside, depth, head="sentencepiece")
            + g(True)
            + "on"
            + g(True)
            + _one(draw, _DATA_NAMES)
        )
    if kind == "every":
        text = "every" + g(True) + draw(_NUMBERS) + g(True) + _one(draw, _UNITS)
        if _flag(draw):
            text += g(True) + "keep" + g(True) + draw(_NUMBERS)
        return text
    # seeded: any atom, then `seed N`
    return _atom(draw, inside, depth + 1) + g(True) + "seed" + g(True) + draw(_NUMBERS)


def _product(draw, inside: bool, depth: int) -> str:
    left = _atom(draw, inside, depth)
    if _int(draw, 0, 3) == 0:
        return left + _gap(draw, inside) + "*" + _gap(draw, inside) + _atom(draw, inside, depth)
    return left


def _value(draw, inside: bool, depth: int = 0) -> str:
    kind = _int(draw, 0, 7)
    if kind == 0:
        terms = [_product(draw, inside, depth) for _ in range(_int(draw, 2, 3))]
        return (_gap(draw, inside) + "+" + _gap(draw, inside)).join(terms)
    if kind == 1:
        return _product(draw, inside, depth)
    return _atom(draw, inside, depth)


@st.composite
def values(draw, inside: bool = False) -> str:
    """The text of any value; `inside=True` as if within brackets (line breaks allowed)."""
    return _value(draw, inside)


@st.composite
def _weighted_sum(draw) -> str:
    sources = draw(_SOURCE_LISTS)
    terms = [s + _sp(draw) + "*" + _sp(draw) + _one(draw, ["0.7", "0.3", "1", "0.25"]) for s in sources]
    if len(terms) == 1 and _flag(draw):
        return sources[0]
    return (_sp(draw) + "+" + _sp(draw)).join(terms)


# Plausible value shapes for known keys (a random value is drawn sometimes instead).
_TYPED = {
    "base": st.sampled_from(['hf("models/SmolLM2-135M")', "init llama(layers = 2, dim = 64, heads = 4, vocab = 256)"]),
    "tokenizer": st.sampled_from(["base", 'hf("dir")', "train sentencepiece(vocab = 4096) on tickets"]),
    "dtype": st.sampled_from(["bfloat16", "float32"]),
    "adapter": st.sampled_from(["lora(rank = 16, alpha = 32, dropout = 0.05, targets = [q, k, v, o])", "none"]),
    "quantize": st.sampled_from(["none", "int8", "nf4"]),
    "data": _weighted_sum(),
    "epochs": st.integers(1, 5).map(str),
    "batch": st.sampled_from(["32", "8", "30"]),
    "micro": st.sampled_from(["8", "4", "7"]),
    "seq_len": st.sampled_from(["1024", "64"]),
    "packing": st.sampled_from(["on", "off"]),
    "optimizer": st.sampled_from(["adamw(lr = 2e-5, b1 = 0.9, b2 = 0.95, weight_decay = 0.01)", "adamw(lrr = 1e-3)"]),
    "schedule": st.sampled_from(["cosine(warmup = 3%, min_lr = 10%)", "constant()"]),
    "mesh": st.sampled_from(["(data = auto, fsdp = 1, tensor = 1)", "(data = 2)"]),
    "checkpoint": st.sampled_from(["every 200 steps keep 3", "every 1 epochs"]),
    "every": st.sampled_from(["100 steps", "0.5 epochs"]),
    "generate": st.sampled_from(["greedy(max_new_tokens = 128)", "sample(temperature = 0.7, top_p = 0.9)"]),
    "dir": st.just('"runs/{name}"'),
    "export": st.sampled_from(["hf", "peft", "gguf", "none"]),
    "overflow": st.sampled_from(["drop", "truncate", "error"]),
    "on_bad_row": st.sampled_from(["error", "skip"]),
    "prompt": strings(),
    "completion": strings(),
    "messages": st.just("messages"),
    "train_on": st.sampled_from(["assistant", "last_assistant", "all"]),
}


# ---------------------------------------------------------------- statements


def _entry(draw, kind: str) -> str:
    if kind == "accept" and _int(draw, 0, 5):
        if _int(draw, 0, 3) == 0:
            metric = (
                _one(draw, ["bleu", "chrf", "rouge_l"])
                + _sp(draw)
                + "("
                + _sp(draw)
                + _one(draw, _DATA_NAMES)
                + _sp(draw)
                + ")"
            )
        else:
            metric = _one(draw, _METRICS)
        op = _one(draw, ["<=", ">=", "<", ">", "=="])
        value = draw(_LIMITS) if _int(draw, 0, 4) else _value(draw, False)
        return metric + _sp(draw) + op + _sp(draw) + value
    if kind == "data" and _int(draw, 0, 2) == 0:
        label = _one(draw, ["eval", "test", "seed"])
        value = _one(draw, ["5% seed 7", "10%", 'jsonl("data/eval.jsonl")', "0.5%  seed 1"])
        return "split" + _req(draw) + label + _sp(draw) + "=" + _sp(draw) + value
    if kind == "template":
        key = _one(draw, ["prompt", "completion", "messages", "train_on", "system"])
    elif kind == "data":
        key = _one(draw, ["overflow", "on_bad_row", "text_column"])
    else:
        key = draw(_KEY_NAMES)
    if key in _TYPED and _int(draw, 0, 3):
        value = draw(_TYPED[key])
    else:
        value = _value(draw, False)
    return key + _sp(draw) + "=" + _sp(draw) + value


def _trailing(draw) -> str:
    return _sp(draw) + draw(_COMMENTS) if _int(draw, 0, 4) == 0 else ""


def _between(draw) -> str:
    """The line ends between statements: blank lines (maybe with spaces), own-line comments."""
    out = _trailing(draw) + "\n"
    for _ in range(_int(draw, 0, 3)):
        indent = _one(draw, ["", "    ", "  ", "\t", "        "])
        out += indent + (draw(_COMMENTS) if _flag(draw) else _sp(draw)) + "\n"
    return out + _one(draw, ["", "", "    ", "  ", "\t"])


def _body(draw, kind: str) -> str:
    count = _int(draw, 0, 5)
    if count == 0 and _flag(draw):
        return "{" + _sp(draw) + "}"
    style = _int(draw, 0, 6)
    entries = [_entry(draw, kind) for _ in range(count)]
    if style == 0 and count <= 2:  # `{ a = 1 }` / `{ a = 1\n b = 2 }`: entries on the brace lines
        return "{" + _sp(draw) + _between(draw).join(entries) + _sp(draw) + "}"
    text = "{" + _between(draw)
    for entry in entries:
        text += entry + _between(draw)
    return text + "}"


def _item(draw, kind: str) -> str:
    if kind == "header":
        return "sft" + _req(draw) + draw(_SHORT_STRINGS)
    if kind == "use":
        return "use" + _req(draw) + draw(_SHORT_STRINGS)
    if kind == "data":
        name = _one(draw, _DATA_NAMES)
        if _flag(draw):
            source = _one(
                draw,
                [
                    'jsonl("data/tickets.jsonl")',
                    'hf_dataset("org/faq", split = "train")',
                    'parquet("data/chats.parquet")',
                ],
            )
        else:
            source = _call(draw, False, 0, head=_one(draw, ["jsonl", "hf_dataset", "parquet"]))
        text = "data" + _req(draw) + name + _sp(draw) + "=" + _sp(draw) + source
        if _flag(draw):
            text += _sp(draw) + _body(draw, "data")
        return text
    if kind == "template":
        sources = draw(_SOURCE_LISTS)
        return (
            "template"
            + _req(draw)
            + _one(draw, ["answer", "dialog", "t"])
            + _req(draw)
            + "for"
            + _req(draw)
            + (_sp(draw) + "," + _sp(draw)).join(sources)
            + _sp(draw)
            + _body(draw, "template")
        )
    return kind + _sp(draw) + _body(draw, kind)


@cache
def _item_kinds(max_items: int):
    return st.lists(
        st.sampled_from(["data", "data", "template"] + _BLOCKS + _BLOCKS + _OTHER_BLOCKS), max_size=max_items
    )


@st.composite
def spec_texts(draw, max_items: int = 8) -> str:
    """A whole `.sft` file that parses, in a random (often ugly) layout."""
    kinds = []
    if _int(draw, 0, 3):
        kinds.append("header")
    kinds += ["use"] * _int(draw, 0, 2)
    kinds += draw(_item_kinds(max_items))
    text = _one(draw, ["", "", "\n", "  \n\n", "# top\n", "# top\n\n"])
    for i, kind in enumerate(kinds):
        text += _item(draw, kind)
        if i + 1 < len(kinds):
            text += _between(draw)
    text += _one(draw, ["", "\n", "\n", "\n\n", "  ", "\n# end", "\n\n# end\n", "\n   \n"])
    if _int(draw, 0, 9) == 0:
        text = text.replace("\n", "\r\n")
    return text
