"""Random byte and ASCII mutations of valid specs: the checker never crashes, it
answers with diagnostics (and a broken spec always gets at least one error)."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sftlang.check import check_spec_file
from sftlang.diagnostics import Diagnostic, render_json, render_plain
from sftlang.fmt import format_text

from .test_check_errors import BASE

ROOT = Path(__file__).resolve().parents[2]
SEEDS = [BASE.encode()] + [p.read_bytes() for p in sorted((ROOT / "specs").glob("*.sft"))]
ALPHABET = st.sampled_from(list(b' \n\t{}()[]=<>*+,.#"%\\_-0123456789abcdefghijklmnopqrstuvwxyz') + [0xFF, 0xC3, 0x00])


@st.composite
def mutated(draw, ascii_only: bool):
    text = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        position = draw(st.integers(0, len(text)))
        action = draw(st.sampled_from(["insert", "delete", "replace", "duplicate"]))
        byte = draw(ALPHABET) if not ascii_only else draw(st.integers(32, 126))
        if action == "insert":
            text[position:position] = bytes([byte])
        elif action == "delete" and text:
            del text[position : position + draw(st.integers(1, 8))]
        elif action == "replace" and position < len(text):
            text[position] = byte
        else:
            chunk = text[position : position + draw(st.integers(1, 20))]
            text[position:position] = chunk
    return bytes(text)


def _check(tmp: Path, data: bytes) -> list[Diagnostic]:
    spec = tmp / "fuzz.sft"
    spec.write_bytes(data)
    _, problems = check_spec_file(spec, devices=1, offline=True)
    assert all(isinstance(d, Diagnostic) for d in problems)
    for d in problems:
        render_plain(d)
    render_json(problems, [str(spec)])
    return problems


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=mutated(ascii_only=True))
def test_ascii_mutations_never_crash(tmp_path, data):
    (tmp_path / "tickets.jsonl").write_text('{"question": "q", "answer": "a"}\n')
    problems = _check(tmp_path, data)
    text = data.decode()
    formatted, syntax = format_text(text, "fuzz.sft")
    if formatted is None:
        assert any(d.is_error for d in problems) and syntax


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=mutated(ascii_only=False))
def test_byte_mutations_never_crash(tmp_path, data):
    (tmp_path / "tickets.jsonl").write_text('{"question": "q", "answer": "a"}\n')
    _check(tmp_path, data)
