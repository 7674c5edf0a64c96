"""`sftc audit` from the command line, on every row shape the repository reads.

One project holds a source of each shape (prompt/completion, `chat = on`, OpenAI messages,
ShareGPT with renamed keys and roles, Alpaca, tool calls, a reasoning conversation trained per
turn, pre-tokenized rows, and a source with a separate eval file). In each, the rows are
distinct except two planted copies: one train row written again on another train line (an
exact duplicate) and one train row written again on a line the eval split holds out (an eval
leak). The audit must name those lines, and a project without them must report nothing.
No training: the audit reads the data only.
"""

from __future__ import annotations

import contextlib
import io
import json
import random
from pathlib import Path

import pytest

from sftlang.cli import main
from tests.runtime.test_where_features_meet import SPEC as EVERY_SHAPE

ROOT = Path(__file__).resolve().parents[3]
TOKENIZER = ROOT / "specs" / "data" / "shapes-tokenizer"

# the every-shape project of the where-features-meet tests, with its own chat file (a row of its own)
SPEC = EVERY_SHAPE.replace('sft "meet"', 'sft "audited"').replace(
    'data chat = jsonl("pc.jsonl") { split eval = 25% seed 2 }',
    'data chat = jsonl("chat.jsonl") { split eval = 25% seed 1 }',
)
assert 'sft "audited"' in SPEC and '"chat.jsonl"' in SPEC, "the every-shape spec changed: update the replacements"
SHAPES = ["pc", "chat", "msgs", "share", "alp", "tools", "think", "toks", "sep"]
FILES = {
    "pc": "pc.jsonl",
    "chat": "chat.jsonl",
    "msgs": "msgs.jsonl",
    "share": "share.jsonl",
    "alp": "alpaca.jsonl",
    "tools": "tools.jsonl",
    "think": "think.jsonl",
    "toks": "tokens.jsonl",
    "sep": "sep.jsonl",
}
ROWS = 12  # rows per file (sep: its train file)

WORDS = """
apple river stone cloud lamp garden window pencil mirror ticket jacket bridge candle forest
engine silver planet orange violin kettle harbor basket meadow rocket castle lemon pillow
tunnel carpet marble saddle anchor button feather helmet island jungle ladder magnet needle
oyster parrot quartz ribbon shovel tomato umbrella valley walnut yogurt zipper blanket cactus
dragon falcon glove hammer igloo jigsaw kitten lantern mango napkin oven peanut quilt radish
spider tablet unicorn vessel whistle yacht zebra badge cobalt dinner eagle fabric goblet
""".split()


def _rows(shape: str, rng: random.Random, n: int) -> list[dict]:
    """``n`` distinct rows of ``shape``, each its own random words (no two alike)."""

    def words(k: int) -> str:
        return " ".join(rng.sample(WORDS, k))

    if shape in ("pc", "chat", "sep"):
        return [{"q": f"{words(6)}?", "a": words(5)} for _ in range(n)]
    if shape == "msgs":
        return [
            {
                "messages": [
                    {"role": "user", "content": words(6)},
                    {"role": "assistant", "content": words(5)},
                    {"role": "user", "content": words(4)},
                    {"role": "assistant", "content": words(5)},
                ]
            }
            for _ in range(n)
        ]
    if shape == "share":
        return [
            {
                "dialog": [
                    {"speaker": "customer", "text": f"{words(6)}?"},
                    {"speaker": "bot", "text": words(5)},
                ]
            }
            for _ in range(n)
        ]
    if shape == "alp":
        return [{"instruction": words(6), "input": words(3) if i % 2 else "", "output": words(5)} for i in range(n)]
    if shape == "tools":
        rows = []
        for _ in range(n):
            item, order = rng.choice(WORDS), str(rng.randrange(10000, 99999))
            result = json.dumps({"order_id": order, "status": words(2), "item": item})
            call = {"name": "order_status", "arguments": json.dumps({"order_id": order})}
            rows.append(
                {
                    "messages": [
                        {"role": "user", "content": f"{words(5)} {order}?"},
                        {
                            "role": "assistant",
                            "content": None,
                            "tool_calls": [{"id": "call0", "type": "function", "function": call}],
                        },
                        {"role": "tool", "tool_call_id": "call0", "content": result},
                        {"role": "assistant", "content": f"{words(5)} {item}"},
                    ],
                    "tools": [
                        {
                            "type": "function",
                            "function": {
                                "name": "order_status",
                                "description": "Look up where an order is.",
                                "parameters": {
                                    "type": "object",
                                    "properties": {"order_id": {"type": "string"}},
                                    "required": ["order_id"],
                                },
                            },
                        }
                    ],
                }
            )
        return rows
    if shape == "think":
        return [
            {
                "messages": [
                    {"role": "user", "content": words(6)},
                    {"role": "assistant", "content": f"<think>{words(4)}</think>{words(4)}"},
                    {"role": "user", "content": words(5)},
                    {"role": "assistant", "content": f"<think>{words(4)}</think>{words(4)}"},
                ]
            }
            for _ in range(n)
        ]
    if shape == "toks":
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(TOKENIZER))
        rows = []
        for _ in range(n):
            prompt, answer = tok(f"{words(6)}?\n")["input_ids"], tok(words(5))["input_ids"]
            rows.append({"input_ids": prompt + answer, "labels": [-100] * len(prompt) + answer})
        return rows
    raise AssertionError(shape)


def _write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def write_project(root: Path, planted: bool) -> dict[str, dict[str, list[int]]]:
    """The project in ``root``; with ``planted``, per shape the 1-based lines of the planted
    duplicate pair (``dup``, both train) and of the leak (``leak``: the eval copy, then the
    train row it copies; for ``sep`` the eval copy is line 1 of sep-eval.jsonl)."""
    from runtime.data.pipeline import eval_rows_for

    rng = random.Random(23)
    held = set(eval_rows_for(ROWS, 0.25, 1).tolist())
    train = [i for i in range(ROWS) if i not in held]
    plants: dict[str, dict[str, list[int]]] = {}
    for shape in SHAPES:
        rows = _rows(shape, rng, ROWS)
        if planted:
            a, b, c = train[0], train[3], train[1]
            rows[b] = rows[a]
            if shape == "sep":
                plants[shape] = {"dup": [a + 1, b + 1], "leak": [1, c + 1]}
            else:
                e = min(held)
                rows[e] = rows[c]
                plants[shape] = {"dup": [a + 1, b + 1], "leak": [e + 1, c + 1]}
        _write(root / FILES[shape], rows)
        if shape == "sep":
            evals = _rows("sep", rng, 3)
            if planted:
                evals[0] = rows[train[1]]
            _write(root / "sep-eval.jsonl", evals)
    (root / "audited.sft").write_text(SPEC.replace("TOKENIZER", str(TOKENIZER)))
    return plants


def sftc(root: Path, *args: str) -> tuple[int, str, str]:
    """`sftc <args>` in ``root``: (exit code, stdout, stderr)."""
    import os

    out, err = io.StringIO(), io.StringIO()
    old = os.getcwd()
    os.chdir(root)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as stop:  # argparse refusing a flag
                code = int(stop.code or 0)
    finally:
        os.chdir(old)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """The planted project, its plants, and its audit as JSON (`sftc audit --json`)."""
    root = tmp_path_factory.mktemp("audit-planted")
    plants = write_project(root, planted=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SFTC_CACHE", str(root / "cache"))
        code, out, err = sftc(root, "audit", "audited.sft", "--json")
    assert code == 0, err
    return root, plants, json.loads(out)


def _ids(finding: dict) -> list[str]:
    return list(finding["ids"])


def _of(report: dict, shape: str, kind: str) -> list[dict]:
    return [f for f in report["findings"] if f["source"] == shape and f["kind"] == kind]


def _line(shape: str, line: int, turn: int | None = None, file: str | None = None) -> str:
    from runtime.plan.sample_origin import sample_id

    return sample_id(shape, file or FILES[shape], line, turn)


def _turns(shape: str) -> list[int | None]:
    return [1, 3] if shape == "think" else [None]  # a reasoning conversation: one example per answer


@pytest.mark.parametrize("shape", SHAPES)
def test_a_planted_exact_duplicate_is_found_with_its_lines(planted, shape):
    _, plants, report = planted
    a, b = plants[shape]["dup"]
    found = {tuple(_ids(f)) for f in _of(report, shape, "duplicate")}
    assert found == {(_line(shape, a, t), _line(shape, b, t)) for t in _turns(shape)}


@pytest.mark.parametrize("shape", SHAPES)
def test_a_planted_eval_leak_is_found_with_its_lines(planted, shape):
    _, plants, report = planted
    copy, original = plants[shape]["leak"]
    eval_file = "sep-eval.jsonl" if shape == "sep" else None
    found = {tuple(_ids(f)) for f in _of(report, shape, "leak")}
    expected = {(_line(shape, copy, t, eval_file), _line(shape, original, t)) for t in _turns(shape)}
    assert found == expected


def test_nothing_but_the_plants_is_found(planted):
    _, _, report = planted
    kinds = sorted({f["kind"] for f in report["findings"]})
    assert kinds == ["duplicate", "leak"]


def test_the_human_report_names_each_finding_by_file_and_line(planted, monkeypatch):
    root, plants, _ = planted
    monkeypatch.setenv("SFTC_CACHE", str(root / "cache"))
    code, out, err = sftc(root, "audit", "audited.sft")
    assert code == 0, err
    for shape in SHAPES:
        assert f"source {shape}:" in out
    a, b = plants["pc"]["dup"]
    assert f"pc.jsonl:{a}" in out and f"pc.jsonl:{b}" in out
    assert "think.jsonl:1, message 1" in out and "think.jsonl:1, message 3" in out
    assert "sep-eval.jsonl:1" in out
    assert "= help:" in out and "all sources" in out


def test_source_shows_only_that_source(planted, monkeypatch):
    root, _, _ = planted
    monkeypatch.setenv("SFTC_CACHE", str(root / "cache"))
    code, out, err = sftc(root, "audit", "audited.sft", "--source", "think", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["findings"] and {f["source"] for f in report["findings"]} == {"think"}
    code, out, err = sftc(root, "audit", "audited.sft", "--source", "alp")
    assert code == 0, err
    assert "source alp:" in out and "source pc:" not in out and "alpaca.jsonl:" in out


@pytest.mark.parametrize(
    "flags, says",
    [
        (["--source", "nope"], "no source `nope`"),
        (["--near", "0"], "--near 0"),
        (["--near", "1.5"], "--near 1.5"),
        (["--topics", "0"], "--topics 0"),
        (["--near", "high"], "invalid float value"),
    ],
)
def test_bad_flags_exit_2(planted, flags, says):
    root, _, _ = planted
    code, out, err = sftc(root, "audit", "audited.sft", *flags)
    assert code == 2 and says in err and out == ""


def test_a_clean_project_reports_no_findings(tmp_path, monkeypatch):
    write_project(tmp_path, planted=False)
    monkeypatch.setenv("SFTC_CACHE", str(tmp_path / "cache"))
    code, out, err = sftc(tmp_path, "audit", "audited.sft", "--json")
    assert code == 0, err
    assert json.loads(out)["findings"] == []
    code, out, err = sftc(tmp_path, "audit", "audited.sft")
    assert code == 0, err
    assert out.count("no findings") == len(SHAPES) + 1
