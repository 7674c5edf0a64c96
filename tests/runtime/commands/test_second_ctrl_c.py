"""Ctrl-C during `sftc run`, as a real SIGINT to a real process: the first finishes the step in
flight, saves a checkpoint and exits with 130; a second one exits at once with 130, without
waiting for that checkpoint (docs/running.md, runtime/train/loop.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtime.train.metrics_log import read_metrics
from tests.runtime.run_helpers import SLOW_RUN, runs

pytestmark = pytest.mark.slow  # a real `sftc run` process per test

# SLOW_RUN (about 3 steps a second), whose final checkpoint, the one Ctrl-C asks for, says when it
# starts and ends; with SLOW_SAVE set it takes minutes, so a second Ctrl-C can land inside it.
CHILD = (
    """
import os, time
from pathlib import Path
from runtime.checkpoints.orbax_checkpoints import Checkpoints
original_save = Checkpoints.save
def save(self, step, state, record, force=False):
    if not force:
        return original_save(self, step, state, record, force)
    Path("saving").write_text(str(step))
    if os.environ.get("SLOW_SAVE"):
        for _ in range(3000):
            time.sleep(0.1)
    started = original_save(self, step, state, record, force)
    Path("saved").write_text(str(step))
    return started
Checkpoints.save = save
"""
    + SLOW_RUN
)


def _start(project: Path, slow_save: bool) -> subprocess.Popen:
    env = {**os.environ, "SLOW_SAVE": "1" if slow_save else ""}
    log = open(project / "child.log", "w")  # the child writes it; closed when the test ends
    return subprocess.Popen([sys.executable, "-c", CHILD], cwd=project, env=env, stdout=log, stderr=log)


def _wait_for(child: subprocess.Popen, project: Path, ready, what: str) -> None:
    deadline = time.time() + 300  # a hang guard, not a measurement
    while not ready():
        if child.poll() is not None or time.time() > deadline:
            child.kill()
            pytest.fail(f"{what} never happened:\n" + (project / "child.log").read_text()[-3000:])
        time.sleep(0.05)


def _trained_steps(project: Path) -> int:
    found = runs(project) if (project / "runs" / "tiny").is_dir() else []
    return max((r["step"] for r in read_metrics(found[-1]) if r["kind"] == "train"), default=0) if found else 0


def test_the_first_ctrl_c_stops_after_a_checkpoint(project):
    child = _start(project, slow_save=False)
    _wait_for(child, project, lambda: _trained_steps(project) >= 2, "step 2")
    child.send_signal(signal.SIGINT)
    assert child.wait(timeout=300) == 130, (project / "child.log").read_text()[-3000:]
    (run_dir,) = runs(project)
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "interrupted" and 2 <= status["steps"] < 12
    saved = int((project / "saved").read_text())
    assert saved == status["steps"] and (run_dir / "checkpoints" / str(saved)).is_dir()
    assert "resumes from here" in (project / "child.log").read_text()


def test_a_second_ctrl_c_exits_at_once(project):
    child = _start(project, slow_save=True)
    _wait_for(child, project, lambda: _trained_steps(project) >= 2, "step 2")
    child.send_signal(signal.SIGINT)  # the first: the step in flight ends, the checkpoint starts
    _wait_for(child, project, (project / "saving").exists, "the checkpoint after the first Ctrl-C")
    child.send_signal(signal.SIGINT)  # the second, while that checkpoint is being written
    assert child.wait(timeout=300) == 130, (project / "child.log").read_text()[-3000:]
    assert not (project / "saved").exists()  # it did not wait for the checkpoint
    assert "Traceback" not in (project / "child.log").read_text()
