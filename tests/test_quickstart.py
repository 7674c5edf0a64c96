"""The shipped quickstart end to end (slow: about six minutes on 2 CPU cores):
it trains, passes its own gates and exports; the same run judged with an impossible
threshold is rejected with exit code 3 and a report that says why."""

import json
from pathlib import Path

import pytest

from sftlang.cli import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quickstart_is_accepted_and_an_impossible_gate_is_not(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SFTC_CACHE", str(tmp_path / "cache"))
    spec = ROOT / "specs" / "quickstart.sft"
    assert main(["run", str(spec)]) == 0
    (run_dir,) = sorted((tmp_path / "runs" / "quickstart").iterdir())
    report = json.loads((run_dir / "report.json").read_text())
    assert report["accepted"] and (run_dir / "export" / "config.json").exists()
    impossible = tmp_path / "impossible.sft"
    impossible.write_text(
        spec.read_text()
        .replace('"data/', f'"{ROOT}/specs/data/')
        .replace("loss        <= 0.05", "loss        <= 0.00000001")
    )
    assert main(["eval", str(run_dir), "--spec", str(impossible)]) == 3
    (evaluation,) = sorted((run_dir / "evals").iterdir())
    failing = [g for g in json.loads((evaluation / "report.json").read_text())["gates"] if not g["passed"]]
    assert [g["gate"] for g in failing] == ["loss"]
    assert "loss" in (evaluation / "report.md").read_text()
