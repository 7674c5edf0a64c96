"""Literals as the language reference defines them."""

import pytest

from sftlang import ast
from sftlang.parse import parse


def value(text: str):
    tree, problems = parse(f"b {{\n    v = {text}\n}}\n")
    assert problems == [], problems
    return tree.items[0].body.entries[0].value


def test_triple_quoted_text_is_dedented():
    v = value('"""\n        ### Question:\n        {q}\n          indented\n        """')
    assert v.value == "### Question:\n{q}\n  indented\n"


def test_escaped_quote_inside_triple_quoted_text():
    assert value('"""say \\""" twice"""').value == 'say """ twice'


@pytest.mark.parametrize(
    "text, expected",
    [
        ('"a\\tb\\n\\"c\\"\\\\"', 'a\tb\n"c"\\'),
        ("2e-5", 2e-5),
        ("-3", -3),
        ("5%", 0.05),
        ("12.5%", 0.125),
    ],
)
def test_scalars(text, expected):
    assert (
        value(text).value == pytest.approx(expected) if not isinstance(expected, str) else value(text).value == expected
    )


def test_quantities_and_phrases():
    q = value("0.5 epochs")
    assert isinstance(q, ast.Quantity) and q.amount.value == 0.5 and q.unit.name == "epochs"
    e = value("every 200 steps keep 3")
    assert isinstance(e, ast.Every) and (e.amount.value, e.unit.name, e.keep.value) == (200, "steps", 3)
    s = value("5% seed 7")
    assert isinstance(s, ast.Seeded) and s.value.value == 0.05 and s.seed.value == 7
    m = value("a * 0.7 + b * 0.3")
    assert isinstance(m, ast.Sum) and [t.value.name for t in m.terms] == ["a", "b"]


def test_calls_lists_and_tuples_may_span_lines():
    v = value("adamw(\n        lr = 1e-4,   # peak\n        b2 = 0.95,\n    )")
    assert [a.name.name for a in v.args] == ["lr", "b2"]
    t = value("(data = auto,\n fsdp = 2)")
    assert isinstance(t, ast.Tuple) and t.args[1].value.value == 2
    assert [i.name for i in value("[q,\n k, v]").items] == ["q", "k", "v"]


def test_spans_are_exact():
    tree, _ = parse("train {\n    optimizer = adamw(lr = 1e-3)\n}\n", "x.sft")
    arg = tree.items[0].body.entries[0].value.args[0]
    assert (arg.name.span.line, arg.name.span.column, arg.value.span.column, arg.value.span.end_column) == (
        2,
        23,
        28,
        32,
    )
    assert str(arg.name.span) == "x.sft:2:23"


def test_a_tuple_entry_may_be_named_by_a_string():
    t = value('("Question Text" = question, "meta.lang" = "en", tier = ["a", "b"], "x" = on)')
    assert [type(a.name) for a in t.args] == [ast.Str, ast.Str, ast.Name, ast.Str]
    assert [ast.text_of(a.name) for a in t.args] == ["Question Text", "meta.lang", "tier", "x"]
    assert (t.args[0].name.span.column, t.args[0].name.span.end_column) == (10, 25)
    assert value('("a", b)').args[0].name is None  # a string alone is still a positional value
    _, problems = parse('b {\n    v = ("a" b)\n}\n')
    assert [d.code for d in problems] == ["E001"]
