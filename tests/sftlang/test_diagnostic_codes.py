"""Every diagnostic code the compiler emits is catalogued and documented."""

import re
from pathlib import Path

from sftlang.diagnostics import CODES

ROOT = Path(__file__).resolve().parents[2]


def _used_codes() -> set[str]:
    used = set()
    for path in (ROOT / "sftlang").glob("*.py"):
        if path.name == "diagnostics.py":
            continue
        used |= set(re.findall(r'"([EW]0\d\d)"', path.read_text()))
    return used


def test_every_emitted_code_is_catalogued():
    assert _used_codes() - set(CODES) == set()


def test_every_catalogued_code_is_emitted():
    assert set(CODES) - _used_codes() == set()


def test_every_code_is_documented():
    docs = (ROOT / "docs" / "language.md").read_text()
    missing = [code for code in CODES if f"`{code}`" not in docs]
    assert missing == []
