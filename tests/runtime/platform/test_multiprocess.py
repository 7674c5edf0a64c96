"""`sftc run` as a multi-process job (JAX's multi-controller runtime): 2 and 4 processes on a
loopback coordinator with CPU collectives (gloo), each with simulated CPU devices, against one
process with the same 4 devices.

- the losses (train and eval) equal one process's within 1e-5, and so do the final weights;
- only process 0 writes metrics, reports and the export; every process writes its part of the
  checkpoints, into the one run directory;
- one process SIGKILLed: the others exit non-zero within 60 s, and a relaunch with another
  number of processes resumes from the last complete checkpoint to the same final weights
  (2 processes -> 1, and 1 -> 2).

Slow: every run is a few fresh Python processes that start JAX and compile the step."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.runtime.run_helpers import SLOW_RUN, final_params, runs, write_project

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]
DEVICES = 4  # in every job: one process with 4, two with 2 each, four with 1 each
TOLERANCE = 1e-5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(project: Path, devices: int) -> dict:
    return {
        **os.environ,
        "SFTC_CACHE": str(project / "cache"),
        "JAX_NUM_CPU_DEVICES": str(devices),
        "PYTHONPATH": str(ROOT),  # the tests package (tests.runtime.*) imports from the checkout
    }


def start(project: Path, processes: int, slow: bool = False, spec: str = "tiny.sft") -> list[subprocess.Popen]:
    """`sftc run SPEC` as a job of ``processes`` processes (one: no job flags)."""
    port = _free_port()
    code = (
        SLOW_RUN.replace('main(["run", "tiny.sft"])', 'main(["run", "tiny.sft", *sys.argv[1:]])')
        if slow
        else "import sys; from sftlang.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    base = [sys.executable, "-c", code] + ([] if slow else ["run", spec])
    flags = (
        (lambda i: [])
        if processes == 1
        else (
            lambda i: ["--coordinator", f"127.0.0.1:{port}", "--num-processes", str(processes), "--process-id", str(i)]
        )
    )
    return [
        subprocess.Popen(
            base + flags(i),
            cwd=project,
            env=_env(project, DEVICES // processes),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(processes)
    ]


def finish(job: list[subprocess.Popen], timeout: float = 300) -> list[tuple[int, str]]:
    return [(p.wait(timeout=timeout), p.stdout.read()) for p in job]


def run_job(project: Path, processes: int, spec: str = "tiny.sft", name: str = "tiny") -> Path:
    ended = finish(start(project, processes, spec=spec))
    for rc, out in ended:
        assert rc == 0, out[-3000:]
    return sorted((project / "runs" / name).iterdir())[-1]


def losses(run_dir: Path) -> tuple[list[float], list[float]]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return ([r["loss"] for r in records if r["kind"] == "train"], [r["loss"] for r in records if r["kind"] == "eval"])


def assert_same_weights(a: Path, b: Path) -> None:
    step_a, leaves_a = final_params(a)
    step_b, leaves_b = final_params(b)
    assert step_a == step_b
    gap = max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(leaves_a, leaves_b))
    assert gap < TOLERANCE, gap


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """One process with 4 devices, uninterrupted."""
    return run_job(write_project(tmp_path_factory.mktemp("one")), 1)


@pytest.mark.parametrize("processes", [2, 4])
def test_a_job_trains_like_one_process(reference, tmp_path, processes):
    run_dir = run_job(write_project(tmp_path), processes)
    (train_1, eval_1), (train_n, eval_n) = losses(reference), losses(run_dir)
    assert len(train_n) == len(train_1) == 12 and len(eval_n) == len(eval_1)
    np.testing.assert_allclose(train_n, train_1, atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(eval_n, eval_1, atol=TOLERANCE, rtol=0)
    assert_same_weights(run_dir, reference)
    start_event = next(json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if '"start"' in x)
    assert start_event["devices"] == DEVICES and start_event["mesh"]["data"] == DEVICES
    # one run directory, written by process 0; the checkpoints hold every process's part
    assert [p.name for p in runs(tmp_path)] == [run_dir.name]
    assert (run_dir / "report.json").is_file() and (run_dir / "export" / "config.json").is_file()
    assert json.loads((run_dir / "status.json").read_text())["status"] == "done"


def _kill_after_first_checkpoint(job: list[subprocess.Popen], project: Path, victim: int) -> float:
    """SIGKILL process ``victim`` of ``job`` once a checkpoint is complete; returns when."""
    deadline = time.time() + 120
    while time.time() < deadline:
        found = [r for r in runs(project) if (r / "checkpoints" / "4").is_dir()] if (project / "runs").is_dir() else []
        if found and any('"checkpoint"' in line for line in (found[0] / "metrics.jsonl").read_text().splitlines()):
            break
        time.sleep(0.2)
    else:
        pytest.fail("no checkpoint within 120 s: " + "".join(finish(job, 1)[0][1][-2000:]))
    job[victim].send_signal(signal.SIGKILL)
    return time.time()


@pytest.mark.parametrize("before, after", [(2, 1), (1, 2)])
def test_a_killed_process_stops_the_job_and_a_relaunch_with_other_processes_resumes(reference, tmp_path, before, after):
    project = write_project(tmp_path)
    job = start(project, before, slow=True)
    victim = before - 1  # in a job, not the coordinator: the others must notice its death
    _kill_after_first_checkpoint(job, project, victim)
    others = [p for i, p in enumerate(job) if i != victim]
    for p in others:  # each survivor notices the death and stops (the timeout only guards against a hang)
        rc = p.wait(timeout=90)
        out = p.stdout.read()
        assert rc != 0, out[-2000:]
        assert "stopped sending heartbeats" in out or "another task died" in out, out[-2000:]
    job[victim].wait(timeout=10)
    (interrupted,) = runs(project)
    status = interrupted / "status.json"  # written when training ends, which it did not
    assert not status.exists() or json.loads(status.read_text())["status"] != "done"

    ended = finish(start(project, after))
    for rc, out in ended:
        assert rc == 0, out[-3000:]
    assert "resuming tiny" in ended[0][1], ended[0][1][-2000:]
    assert runs(project) == [interrupted]
    assert_same_weights(interrupted, reference)
    train, _ = losses(interrupted)
    np.testing.assert_allclose(train[-1], losses(reference)[0][-1], atol=TOLERANCE, rtol=0)


def test_a_job_on_a_pretrained_base_scores_the_base_and_shares_the_decoding(tmp_path):
    """40 eval rows are two decoding batches: process 0 decodes one, process 1 the other, and
    the report (tuned and base answers, every metric) is the one a single process writes."""
    from tests.runtime.evaluate.test_baseline import SPEC as BASELINE_SPEC
    from tests.runtime.evaluate.test_baseline import _write

    spec = BASELINE_SPEC.replace("split eval = 10% seed 1", "split eval = 40% seed 1")
    reports = []
    for processes in (1, 2):
        project = tmp_path / f"p{processes}"
        project.mkdir()
        _write(project, spec)
        reports.append(json.loads((run_job(project, processes, "ba.sft", "before-after") / "report.json").read_text()))
    one, job = reports
    assert len(one["samples"]) == 40 and job["baseline"]["kind"] == "base"
    assert [s["generated"] for s in job["samples"]] == [s["generated"] for s in one["samples"]]
    assert [s["generated"] for s in job["baseline"]["samples"]] == [s["generated"] for s in one["baseline"]["samples"]]
    for key, value in one["metrics"].items():
        assert job["metrics"][key] == pytest.approx(value, abs=TOLERANCE), key
    assert job["accepted"] == one["accepted"]
