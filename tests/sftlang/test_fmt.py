"""`sftc fmt`: golden layouts, the shipped specs, the command line, and properties on generated specs.

Golden cases are files: fmt_cases/<name>.in.sft formats to exactly <name>.out.sft (a new case is
two new files). Every spec the repository ships (specs/*.sft) and every complete spec in a fenced
block of README.md or docs/*.md round-trips.

The properties (hypothesis, tests/sftlang/spec_strategies.py): formatting keeps the tree
(`parse(fmt(x)) == parse(x)`, spans aside), is idempotent, and keeps every
comment in order; a tree whose literals lost their source text formats to text
that reads back as the same tree.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from sftlang import ast
from sftlang.cli import main
from sftlang.fmt import format_spec, format_text, format_value
from sftlang.parse import parse

from .spec_strategies import spec_texts

ROOT = Path(__file__).resolve().parents[2]
CASES = Path(__file__).resolve().parent / "fmt_cases"


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


def read(path: Path) -> str:
    # bytes, not text mode: a case's line ends (CRLF) and trailing spaces are part of it
    return path.read_bytes().decode("utf-8")


# ---------------------------------------------------------------- golden (fmt_cases/<name>.in.sft -> <name>.out.sft)

CASE_NAMES = sorted(p.name.removesuffix(".in.sft") for p in CASES.glob("*.in.sft"))


def test_every_golden_case_has_both_files():
    outs = sorted(p.name.removesuffix(".out.sft") for p in CASES.glob("*.out.sft"))
    assert outs == CASE_NAMES
    assert len(CASE_NAMES) >= 17  # the cases moved out of this file; a lost glob must not pass vacuously


@pytest.mark.parametrize("name", CASE_NAMES)
def test_golden_case_formats_to_its_expected_layout(name):
    source, expected = read(CASES / f"{name}.in.sft"), read(CASES / f"{name}.out.sft")
    out = fmt(source)
    assert out == expected
    assert fmt(expected) == expected  # the canonical layout is a fixed point
    assert tree(expected) == tree(source)
    assert comment_texts(expected) == comment_texts(source)


def test_data_shapes_without_source_text_format_to_the_same_tree():
    source = read(CASES / "data_shapes.in.sft")
    assert tree(format_spec(_without_source_text(tree(source)))) == tree(source)


# ---------------------------------------------------------------- what the repository ships round-trips


def _doc_specs() -> list[tuple[str, str]]:
    """(`file:line`, text) of each fenced block in README.md and docs/*.md that is a complete spec:
    tagged `sft`, or untagged and opening with its `sft "name"` header (untagged fragments such as a
    lone `accept {}` illustrate one block and are not specs)."""
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(r"^```(\w*)[ \t]*\n(.*?)^```", text, re.S | re.M):
            tag, body = match.group(1), match.group(2)
            first = next((line for line in body.splitlines() if line.strip() and not line.startswith("#")), "")
            if tag == "sft" or (tag == "" and re.match(r'sft\s+"', first)):
                line = text.count("\n", 0, match.start()) + 1
                found.append((f"{path.relative_to(ROOT)}:{line}", body))
    return found


SHIPPED_SPECS = sorted((ROOT / "specs").glob("*.sft"))
DOC_SPECS = _doc_specs()


def test_shipped_specs_and_doc_examples_are_found():
    assert ROOT / "specs" / "quickstart.sft" in SHIPPED_SPECS
    assert any(where.startswith("docs/language.md:") for where, _ in DOC_SPECS)


def _round_trips(source: str) -> None:
    out = fmt(source)
    assert tree(out) == tree(source)  # same syntax tree (spans aside)
    assert fmt(out) == out  # a fixed point
    assert comment_texts(out) == comment_texts(source)


@pytest.mark.parametrize("path", SHIPPED_SPECS, ids=lambda p: p.name)
def test_shipped_spec_round_trips(path):
    _round_trips(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("where, source", DOC_SPECS, ids=[where for where, _ in DOC_SPECS])
def test_doc_spec_round_trips(where, source):
    _round_trips(source)


# ---------------------------------------------------------------- `sftc fmt` on the command line

MESSY_SMALL = 'model{\nbase=hf( "m" )   # the base\n  dtype   =   float32\n}\n'
TIDY_SMALL = 'model {\n    base  = hf("m")  # the base\n    dtype = float32\n}\n'


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative names: nothing long for the console to wrap
    return tmp_path


def test_cli_fmt_rewrites_in_place_and_prints_the_path(in_tmp, capsys):
    (in_tmp / "a.sft").write_text(MESSY_SMALL, encoding="utf-8")
    (in_tmp / "b.sft").write_text(TIDY_SMALL, encoding="utf-8")
    assert main(["fmt", "a.sft", "b.sft"]) == 0
    assert (in_tmp / "a.sft").read_text(encoding="utf-8") == TIDY_SMALL
    assert (in_tmp / "b.sft").read_text(encoding="utf-8") == TIDY_SMALL
    assert capsys.readouterr().out.splitlines() == ["a.sft"]  # only the file it changed


def test_cli_fmt_check_fails_and_names_the_file_without_changing_it(in_tmp, capsys):
    (in_tmp / "a.sft").write_text(MESSY_SMALL, encoding="utf-8")
    (in_tmp / "b.sft").write_text(TIDY_SMALL, encoding="utf-8")
    assert main(["fmt", "--check", "a.sft", "b.sft"]) == 1
    assert (in_tmp / "a.sft").read_text(encoding="utf-8") == MESSY_SMALL
    captured = capsys.readouterr()
    assert "a.sft" in captured.err
    assert "b.sft" not in captured.err + captured.out
    assert captured.out == ""


def test_cli_fmt_diff_prints_a_unified_diff(in_tmp, capsys):
    (in_tmp / "a.sft").write_text(MESSY_SMALL, encoding="utf-8")
    assert main(["fmt", "--diff", "a.sft"]) == 0
    out = capsys.readouterr().out
    expected = "".join(
        difflib.unified_diff(MESSY_SMALL.splitlines(True), TIDY_SMALL.splitlines(True), "a/a.sft", "b/a.sft")
    )
    assert out == expected
    assert out.startswith("--- a/a.sft\n+++ b/a.sft\n@@ ")
    assert '+    base  = hf("m")  # the base\n' in out
    assert (in_tmp / "a.sft").read_text(encoding="utf-8") == MESSY_SMALL  # --diff shows, never writes


def test_cli_fmt_leaves_a_formatted_file_alone(in_tmp, capsys):
    spec = in_tmp / "b.sft"
    spec.write_text(TIDY_SMALL, encoding="utf-8")
    before = spec.stat().st_mtime_ns
    for flags in ([], ["--check"], ["--diff"]):
        assert main(["fmt", *flags, "b.sft"]) == 0
        assert capsys.readouterr().out == ""
    assert spec.read_text(encoding="utf-8") == TIDY_SMALL
    assert spec.stat().st_mtime_ns == before  # not even rewritten with the same text


def test_cli_fmt_unparsable_file_exits_2_with_a_located_diagnostic(in_tmp, capsys):
    broken = "model {\n  a = \n}\n"
    (in_tmp / "bad.sft").write_text(broken, encoding="utf-8")
    assert main(["fmt", "bad.sft"]) == 2
    captured = capsys.readouterr()
    assert re.search(r"bad\.sft:2:\d+", captured.err), captured.err
    assert re.search(r"\bE\d{3}\b", captured.err), captured.err
    assert captured.out == ""
    assert (in_tmp / "bad.sft").read_text(encoding="utf-8") == broken


# ---------------------------------------------------------------- diagnostics


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
        'sft "demo"\n\ntrain {\n    batch    = 32\n    schedule = cosine(warmup = 3%)\n}\n\n'
        "accept {\n    loss <= 1.2\n}\n"
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


def test_quoted_mapping_names_keep_their_quotes():
    assert format_value(_value('("Question Text"=q, "a\\"b" = c)')) == '("Question Text" = q, "a\\"b" = c)'
    built = ast.Tuple((ast.Arg(ast.Str("sys prompt"), ast.Name("system_prompt")),))
    assert format_value(built) == '("sys prompt" = system_prompt)'
