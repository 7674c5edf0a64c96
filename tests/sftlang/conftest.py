"""Fixtures shared by the `sftc check` tests."""

from __future__ import annotations

import pytest


@pytest.fixture()
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tok.model").write_bytes(b"not read by check")
    return tmp_path
