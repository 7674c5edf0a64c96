"""Every shipped row-shape example (specs/shapes-*.sft) passes `sftc check`, plans what its
shape promises, and trains to its gate in a short run, from a copy of the specs directory
with an empty cache: what a user who runs the documented commands gets."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SHAPES = ("sharegpt", "alpaca", "tools", "reasoning", "tokens")
PLANNED = {  # what `sftc plan` must say about each shape
    "sharegpt": ["filtered 12 (where)", "trained tokens, from assistant turns"],
    "alpaca": ["trained tokens, from Alpaca outputs and their end token"],
    "tools": ["tokens in tool calls; tool results are context"],
    "reasoning": ["80 conversations became 160 examples, one per assistant turn"],
    "tokens": ["trained tokens, from the rows' labels"],
}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    shutil.copytree(ROOT / "specs", root / "specs")
    return root


def _sftc(project: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SFTC_CACHE": str(project / "cache"), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "sftlang.cli", *args], cwd=project, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
@pytest.mark.parametrize("shape", SHAPES)
def test_a_shape_example_checks_plans_and_trains_to_its_gate(project, shape):
    spec = f"specs/shapes-{shape}.sft"
    checked = _sftc(project, "check", spec)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    planned = _sftc(project, "plan", spec)
    assert planned.returncode == 0, planned.stderr
    for line in PLANNED[shape]:
        assert line in planned.stdout + planned.stderr, (line, planned.stdout)
    ran = _sftc(project, "run", spec)
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    assert "accepted: all 1 gate hold" in ran.stdout + ran.stderr
