"""`sftc fmt`: golden layouts, comment placement, and properties on generated specs.

The properties (hypothesis, tests/sftlang/spec_strategies.py): formatting keeps the tree
(`parse(fmt(x)) == parse(x)`, spans aside), is idempotent, and keeps every
comment in order; a tree whose literals lost their source text formats to text
that reads back as the same tree.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from sftlang import ast
from sftlang.fmt import format_spec, format_text, format_value
from sftlang.parse import parse

from .spec_strategies import spec_texts

LANGUAGE_MD = Path(__file__).resolve().parents[2] / "docs" / "LANGUAGE.md"


def fmt(text: str) -> str:
    out, diagnostics = format_text(text, "test.sft")
    assert out is not None, [d.message for d in diagnostics]
    return out


def tree(text: str) -> ast.SpecFile:
    parsed, diagnostics = parse(text, "test.sft")
    assert parsed is not None, [f"{d.span}: {d.message}" for d in diagnostics]
    return parsed


def comment_texts(text: str) -> list[str]:
    return [c.text.rstrip() for c in tree(text).comments]


# ---------------------------------------------------------------- golden

MESSY = '''\
# support bot, messy on purpose$
sft   "support-bot"
use "base.sft"$
use    "more.sft"  # second base



model{   # the model
base=hf( "models/SmolLM2-135M" )
  # the tokenizer comes from the base
    tokenizer=base
  dtype   =    bfloat16    # compute dtype
adapter = lora( rank=16,
      alpha = 32,   # twice the rank
      targets=[ q,k,
         v , o ] )

    remat=off
  # last word on the model

}
data tickets=jsonl("data/tickets.jsonl"){
  split   eval=5%   seed 7
  overflow=drop
}
data faq=hf_dataset( "org/faq",split="train" )   # FAQ
data chats = parquet(  # local copy
    "data/chats.parquet")
template answer for tickets ,faq{
    prompt = """
        ### Question:
        {question}
        ### Answer:
    """
  completion="{answer}\\n"
}
template dialog for chats { messages = messages
	train_on    = assistant }
train {

  data=tickets*0.7+faq*0.3
  optimizer=adamw(lr=2e-5,weight_decay=0.01)
  mesh=( data=auto,fsdp=1 )
  checkpoint = every 200 steps   keep 3


  schedule = cosine(warmup=3%)
  tokenizer = train sentencepiece(vocab=4096) on tickets
  base = init llama( layers=2 )
}
eval{}
accept {
loss<=1.2
    bleu( faq )>=20   # on faq only
}   # end of accept
output { dir = "runs/{name}" }
# the end
'''.replace("$\n", "   \n")  # `$`: trailing spaces to remove

EXPECTED = '''\
# support bot, messy on purpose
sft "support-bot"
use "base.sft"
use "more.sft"  # second base

model {  # the model
    base      = hf("models/SmolLM2-135M")
    # the tokenizer comes from the base
    tokenizer = base
    dtype     = bfloat16  # compute dtype
    # twice the rank
    adapter   = lora(rank = 16, alpha = 32, targets = [q, k, v, o])

    remat = off
    # last word on the model
}

data tickets = jsonl("data/tickets.jsonl") {
    split eval = 5% seed 7
    overflow   = drop
}

data faq = hf_dataset("org/faq", split = "train")  # FAQ

# local copy
data chats = parquet("data/chats.parquet")

template answer for tickets, faq {
    prompt = """
        ### Question:
        {question}
        ### Answer:
    """
    completion = "{answer}\\n"
}

template dialog for chats {
    messages = messages
    train_on = assistant
}

train {
    data       = tickets * 0.7 + faq * 0.3
    optimizer  = adamw(lr = 2e-5, weight_decay = 0.01)
    mesh       = (data = auto, fsdp = 1)
    checkpoint = every 200 steps keep 3

    schedule  = cosine(warmup = 3%)
    tokenizer = train sentencepiece(vocab = 4096) on tickets
    base      = init llama(layers = 2)
}

eval {}

accept {
    loss      <= 1.2
    bleu(faq) >= 20  # on faq only
}  # end of accept

output {
    dir = "runs/{name}"
}
# the end
'''


def test_messy_spec_formats_to_the_canonical_layout():
    assert fmt(MESSY) == EXPECTED


def test_canonical_layout_is_a_fixed_point():
    assert fmt(EXPECTED) == EXPECTED


def _language_example() -> str:
    candidates = [Path("/work/shared/LANGUAGE.md"), LANGUAGE_MD]
    for path in candidates:
        if path.is_file():
            match = re.search(r"```\n(# specs/support\.sft\n.*?)```", path.read_text(encoding="utf-8"), re.S)
            if match:
                return match.group(1)
    pytest.skip("LANGUAGE.md with the complete example is not available")


def test_language_example_round_trips_and_is_idempotent():
    source = _language_example()
    out = fmt(source)
    assert tree(out) == tree(source)
    assert fmt(out) == out
    assert comment_texts(out) == comment_texts(source)
    assert '    split eval = 5% seed 7  # or: eval = jsonl("data/tickets-eval.jsonl")\n' in out
    # trailing comments of consecutive entries line up
    assert "    overflow   = drop       # drop | truncate" in out
    assert "    bleu(faq)   >= 20    # a metric on one source's eval rows\n" in out
    assert "    checkpoint = every 200 steps keep 3\n}\n" in out
    # a continuation comment under a trailing one becomes an own-line comment at the entry's indentation
    assert (
        '    tokenizer = base  # or hf("dir"), sentencepiece("tok.model"),\n'
        "    # train sentencepiece(vocab = 4096) on tickets\n" in out
    )


# ---------------------------------------------------------------- comments and blank lines


def test_comments_inside_multiline_values_move_before_their_entry():
    source = (
        "train {\n"
        "    batch = 32\n"
        "    optimizer = adamw(  # the usual\n"
        "        lr = 2e-5,  # small\n"
        "        # no decay\n"
        "        weight_decay = 0.0,\n"
        "    )  # after\n"
        "}\n"
    )
    assert fmt(source) == (
        "train {\n"
        "    batch     = 32\n"
        "    # the usual\n"
        "    # small\n"
        "    # no decay\n"
        "    optimizer = adamw(lr = 2e-5, weight_decay = 0.0)  # after\n"
        "}\n"
    )


def test_opening_closing_and_end_of_block_comments_stay():
    source = "eval {   # nothing yet\n\n\n   # still nothing\n\n}  # closed\n\n\n\n# bye   \n\n"
    assert fmt(source) == "eval {  # nothing yet\n    # still nothing\n}  # closed\n\n# bye\n"
    assert fmt("eval {  # only this\n}") == "eval {  # only this\n}\n"
    assert fmt("eval {\n}\n") == "eval {}\n"
    assert fmt("eval { } # c\n") == "eval {}  # c\n"


def test_brace_line_entries_and_comment_after_closing_brace():
    assert fmt('model { base = hf("m")\n  dtype = float32 }  # one-liner\n') == (
        'model {\n    base  = hf("m")\n    dtype = float32\n}  # one-liner\n'
    )


def test_blank_lines_between_comments_are_kept_once():
    source = "model {\n    a = 1\n\n\n    # about b\n\n\n    b = 2\n    # c\n    ccc = 3\n}\n"
    assert fmt(source) == "model {\n    a = 1\n\n    # about b\n\n    b   = 2\n    # c\n    ccc = 3\n}\n"


def test_multiline_entry_breaks_the_alignment_run():
    source = 'template t for a {\n  x = 1\n  prompt = """\n  hi\n  """\n  completion = "{y}"\n  z = 2\n}\n'
    assert fmt(source) == (
        'template t for a {\n    x = 1\n    prompt = """\n  hi\n  """\n    completion = "{y}"\n    z          = 2\n}\n'
    )


def test_top_level_separation():
    source = (
        'sft "a"\n\n\nuse "x"\n\nuse "y"\n# about z\nuse "z"\ndata a = jsonl("a")\ndata b = jsonl("b")\n# m\nmodel {}'
    )
    assert fmt(source) == (
        'sft "a"\n\nuse "x"\nuse "y"\n# about z\nuse "z"\n\ndata a = jsonl("a")\n\ndata b = jsonl("b")\n\n# m\nmodel {}\n'
    )
    assert fmt('sft "a"\nuse "x"\n') == 'sft "a"\nuse "x"\n'


def test_crlf_and_edges():
    assert fmt("model {\r\n  a = 1  # c\r\n}\r\n") == "model {\n    a = 1  # c\n}\n"
    assert fmt("") == ""
    assert fmt("\n\n# only a comment\n\n\n# and another\n\n") == "# only a comment\n\n# and another\n"


def test_unparsable_text_gives_diagnostics_not_text():
    out, diagnostics = format_text("model {\n  a = \n}\n", "bad.sft")
    assert out is None
    assert diagnostics and diagnostics[0].code.startswith("E")


# ---------------------------------------------------------------- format_value


def _value(text: str):
    entry = tree(f"x {{\n    v = {text}\n}}\n").items[0].body.entries[0]
    return entry.value


@pytest.mark.parametrize(
    "text, canonical",
    [
        ("2e-5", "2e-5"),
        ("0.80", "0.80"),
        ("5%", "5%"),
        ('"a\\"b"', '"a\\"b"'),
        ("200   steps", "200 steps"),
        ("hf_dataset( 'x' )".replace("'", '"'), 'hf_dataset("x")'),
        ("lora(rank=16,targets=[q,k ,v])", "lora(rank = 16, targets = [q, k, v])"),
        ("(data=auto,fsdp=1,)", "(data = auto, fsdp = 1)"),
        ("[ ]", "[]"),
        ("init   llama(layers=4)", "init llama(layers = 4)"),
        ("train sentencepiece(vocab=4096)on tickets", "train sentencepiece(vocab = 4096) on tickets"),
        ("every 200 steps keep 3", "every 200 steps keep 3"),
        ("5%seed 7", "5% seed 7"),
        ("tickets*0.7+faq*0.3", "tickets * 0.7 + faq * 0.3"),
        ("f(\n  1,  # one\n  [2,\n 3]\n)", "f(1, [2, 3])"),
    ],
)
def test_format_value_of_parsed_values(text, canonical):
    assert format_value(_value(text)) == canonical


def test_format_value_of_nodes_built_by_code():
    assert format_value(ast.Str('say "hi"\\\n\t{x}')) == '"say \\"hi\\"\\\\\\n\\t{x}"'
    assert format_value(ast.Number(16)) == "16"
    assert format_value(ast.Number(2e-5)) == "2e-5"
    assert format_value(ast.Number(0.1)) == "0.1"
    assert format_value(ast.Number(1e22)) == "1e22"
    assert format_value(ast.Number(-3.0)) == "-3.0"
    assert format_value(ast.Percent(0.05)) == "5%"
    assert format_value(ast.Percent(0.035)) == "3.5%"
    assert format_value(ast.Percent(1 / 3)) == "33.33333333333333%"  # no text reads back exactly: the nearest
    call = ast.Call(ast.Name("adamw"), (ast.Arg(ast.Name("lr"), ast.Number(1e-5)), ast.Arg(None, ast.Name("x"))))
    assert format_value(call) == "adamw(lr = 1e-5, x)"
    assert format_value(ast.Quantity(ast.Number(0.5), ast.Name("epochs"))) == "0.5 epochs"
    assert format_value(ast.Every(ast.Number(200), ast.Name("steps"), None)) == "every 200 steps"
    with pytest.raises(TypeError):
        format_value(ast.Body(()))


def test_tree_built_by_code_formats():
    spec = ast.SpecFile(
        (
            ast.Header(ast.Str("demo")),
            ast.Block(
                ast.Name("train"),
                ast.Body(
                    (
                        ast.Assign(ast.Name("batch"), None, ast.Number(32)),
                        ast.Assign(
                            ast.Name("schedule"),
                            None,
                            ast.Call(ast.Name("cosine"), (ast.Arg(ast.Name("warmup"), ast.Percent(0.03)),)),
                        ),
                    )
                ),
            ),
            ast.Block(ast.Name("accept"), ast.Body((ast.Gate(ast.Name("loss"), "<=", ast.Number(1.2)),))),
        )
    )
    out = format_spec(spec)
    assert out == (
        'sft "demo"\n\ntrain {\n    batch    = 32\n    schedule = cosine(warmup = 3%)\n}\n\naccept {\n    loss <= 1.2\n}\n'
    )
    assert tree(out) == spec


# ---------------------------------------------------------------- properties


def _without_source_text(node):
    """The same tree as code would build it: no `.raw`/`.text`, no spans, no comments."""
    if isinstance(node, tuple):
        return tuple(_without_source_text(n) for n in node)
    if not dataclasses.is_dataclass(node):
        return node
    changes = {}
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if f.name in ("raw", "text") and isinstance(node, (ast.Str, ast.Number, ast.Percent)):
            changes[f.name] = ""
        elif f.name == "span" or (f.name == "source" and isinstance(node, ast.SpecFile)):
            changes[f.name] = None
        elif f.name == "comments":
            changes[f.name] = ()
        elif isinstance(value, tuple) or dataclasses.is_dataclass(value):
            changes[f.name] = _without_source_text(value)
    return dataclasses.replace(node, **changes)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(spec_texts())
def test_fmt_keeps_the_tree_and_comments_and_is_idempotent(text):
    original = tree(text)
    out = format_spec(original)
    again = tree(out)
    assert again == original  # same syntax tree (spans aside)
    assert format_spec(again) == out  # idempotent
    assert [c.text.rstrip() for c in again.comments] == [c.text.rstrip() for c in original.comments]
    assert out == "" or (out.endswith("\n") and not out.endswith("\n\n"))
    if '"""' not in out:  # outside triple-quoted text: no trailing spaces, no double blank lines
        assert not re.search(r"[ \t]\n", out)
        assert "\n\n\n" not in out
    # literals without their source text render canonically and read back the same
    assert tree(format_spec(_without_source_text(original))) == original


def test_escapes_in_triple_quoted_text_are_text_not_layout():
    # parser regression: escapes used to be decoded before dedenting, so a leading `\t` was
    # eaten as indentation and an escaped `\n` took part in the common-indent computation
    value = _value('"""\n    \\tx\n    a\\n  b\n    c\n    """')
    assert value.value == "\tx\na\n  b\nc\n"
    assert format_value(value) == '"""\n    \\tx\n    a\\n  b\n    c\n    """'
    assert format_value(dataclasses.replace(value, raw="")) == '"\\tx\\na\\n  b\\nc\\n"'


def test_trailing_comments_of_consecutive_entries_line_up():
    source = (
        "train {\n"
        "    steps = 10 # short\n"
        "    batch = 32     # global\n"
        "    optimizer = adamw(lr = 1e-3)\n"
        "    seed = 1 # alone\n"
        "}\n"
    )
    assert fmt(source) == (
        "train {\n"
        "    steps     = 10  # short\n"
        "    batch     = 32  # global\n"
        "    optimizer = adamw(lr = 1e-3)\n"
        "    seed      = 1  # alone\n"
        "}\n"
    )


# ---------------------------------------------------------------- data shapes (issue 12)

SHAPES_MESSY = """\
data chats=jsonl("c.jsonl"){
rename=( dialog=conversations,"sys prompt" = system_prompt ) # old = new
  where=(lang="en",tier=["gold",
     "silver"],"meta.ok"=on)
system="Be nice."
}
template chat for chats{
messages=conversations
roles=(bot=assistant)
keys=(role=speaker,content="text body")
tools=functions
}
template instr for rows { format=alpaca }
"""

SHAPES_EXPECTED = """\
data chats = jsonl("c.jsonl") {
    rename = (dialog = conversations, "sys prompt" = system_prompt)  # old = new
    where  = (lang = "en", tier = ["gold", "silver"], "meta.ok" = on)
    system = "Be nice."
}

template chat for chats {
    messages = conversations
    roles    = (bot = assistant)
    keys     = (role = speaker, content = "text body")
    tools    = functions
}

template instr for rows {
    format = alpaca
}
"""


def test_source_transforms_and_template_shapes_format_and_round_trip():
    assert fmt(SHAPES_MESSY) == SHAPES_EXPECTED
    assert fmt(SHAPES_EXPECTED) == SHAPES_EXPECTED
    assert tree(SHAPES_EXPECTED) == tree(SHAPES_MESSY)
    assert tree(format_spec(_without_source_text(tree(SHAPES_MESSY)))) == tree(SHAPES_MESSY)


def test_quoted_mapping_names_keep_their_quotes():
    assert format_value(_value('("Question Text"=q, "a\\"b" = c)')) == '("Question Text" = q, "a\\"b" = c)'
    built = ast.Tuple((ast.Arg(ast.Str("sys prompt"), ast.Name("system_prompt")),))
    assert format_value(built) == '("sys prompt" = system_prompt)'
