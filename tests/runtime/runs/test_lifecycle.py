"""A run's life when things go wrong between invocations: non-finite steps between log
steps, a corrupt newest checkpoint, edited inputs under an unfinished run, an interrupt
during evaluation, an unexpected failure. Each test first reproduces a failure of
issue 9 (numbers 1, 4, 5, 6) and then checks what a user sees instead."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from runtime.train.metrics_log import read_metrics
from sftlang.cli import main
from tests.runtime.data_helpers import wordlevel_tokenizer
from tests.runtime.run_helpers import SLOW_RUN, SPEC, interrupt_at
from tests.runtime.run_helpers import final_params as _final_params
from tests.runtime.run_helpers import runs as _runs


def _status(run_dir: Path) -> dict:
    return json.loads((run_dir / "status.json").read_text())


def _poison(monkeypatch, at: int):
    from runtime.data.pipeline import DataPipeline

    original = DataPipeline.batch

    def poisoned(self, step, rows=None):
        batch = original(self, step, rows)
        if step == at:
            batch["loss_mask"] = batch["loss_mask"] * np.nan
        return batch

    monkeypatch.setattr(DataPipeline, "batch", poisoned)


@pytest.mark.slow
def test_a_non_finite_step_between_log_steps_is_seen_and_stops_the_run(project, monkeypatch, capsys):
    """Issue 9.1: with `log_every = 4 steps` a poisoned batch at step 5 used to pass unseen (exit 0,
    accepted). Now it is counted on the device and the default `max_skipped_steps = 0` stops."""
    (project / "tiny.sft").write_text(
        SPEC.replace("checkpoint = every 4 steps keep 5", "checkpoint = every 4 steps keep 5\n    log_every = 4 steps")
    )
    _poison(monkeypatch, at=4)  # batch 4 is the 5th step
    assert main(["run", "tiny.sft"]) == 1
    (run_dir,) = _runs(project)
    status = _status(run_dir)
    assert status["status"] == "nan" and status["skipped_steps"] == 1
    assert "steps 5-8" in status["message"]
    assert "max_skipped_steps" in capsys.readouterr().err
    events = [r for r in read_metrics(run_dir) if r["kind"] == "event" and r["event"] == "nonfinite"]
    assert [(e["skipped"], e["window"]) for e in events] == [(1, [5, 8])]
    step, params = _final_params(run_dir)
    assert step == 8 and all(np.isfinite(np.asarray(p)).all() for p in params)
    # Running again does not slip past the refused step: the spec must allow it first.
    assert main(["run", "tiny.sft"]) == 1
    assert "this run has skipped 1 non-finite step" in capsys.readouterr().err
    spec = (
        (project / "tiny.sft")
        .read_text()
        .replace("log_every = 4 steps", "log_every = 4 steps\n    max_skipped_steps = 1")
    )
    (project / "tiny.sft").write_text(spec)
    assert main(["run", "tiny.sft"]) == 0  # allowing skipped steps does not touch the weights: it resumes
    assert _runs(project) == [run_dir] and _status(run_dir)["skipped_steps"] == 1


def test_skipped_steps_within_the_specs_allowance_are_counted_everywhere(project, monkeypatch):
    spec = SPEC.replace(
        "checkpoint = every 4 steps keep 5",
        "checkpoint = every 4 steps keep 5\n    log_every = 4 steps\n    max_skipped_steps = 1",
    )
    (project / "tiny.sft").write_text(spec + "accept {\n    loss <= 100\n}\n")
    _poison(monkeypatch, at=4)
    assert main(["run", "tiny.sft"]) == 0
    (run_dir,) = _runs(project)
    assert _status(run_dir)["status"] == "done" and _status(run_dir)["skipped_steps"] == 1
    train = [r for r in read_metrics(run_dir) if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 4, 8, 12] and train[-1]["skipped_steps"] == 1
    report = json.loads((run_dir / "report.json").read_text())
    assert report["facts"]["skipped_steps"] == 1 and report["facts"]["steps"] == 12
    (gate,) = report["gates"]
    assert gate["passed"] and gate["value"] is not None  # the eval loss exists at the step the report reads
    step, _ = _final_params(run_dir)
    assert step == 12


@pytest.mark.slow
def test_a_corrupt_newest_checkpoint_falls_back_to_the_one_before(project, monkeypatch, capsys):
    """Issue 9.4: deleting files of the newest checkpoint used to crash every later run with an
    Orbax traceback. Now the run resumes from the newest checkpoint that restores, says which
    one it skipped and why, and ends where an uninterrupted run ends."""
    assert main(["run", "tiny.sft"]) == 0
    (whole,) = _runs(project)
    resume = interrupt_at(monkeypatch, 10)
    assert main(["run", "tiny.sft", "--fresh"]) == 130
    broken = _runs(project)[-1]
    assert sorted(int(p.name) for p in (broken / "checkpoints").iterdir() if p.name.isdigit()) == [4, 8, 10]
    for victim in ("state/_METADATA", "state/manifest.ocdbt"):  # as a crash or a careless `rm` leaves it
        (broken / "checkpoints" / "10" / victim).unlink()

    resume()
    capsys.readouterr()
    assert main(["run", "tiny.sft"]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "checkpoint 10 does not restore" in err and "checkpoints.unusable" in err
    assert (broken / "checkpoints.unusable" / "10").is_dir()
    resumed = [r for r in read_metrics(broken) if r["kind"] == "event" and r["event"] == "resume"]
    assert resumed[-1]["checkpoint"] == 8
    step_a, params_a = _final_params(whole)
    step_b, params_b = _final_params(broken)
    assert step_a == step_b == 12
    for a, b in zip(params_a, params_b):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_a_restore_error_that_is_not_damage_stops_the_run_and_keeps_every_checkpoint(project, monkeypatch, capsys):
    """Issue 21.7: an I/O error (or out of memory, or another shape) while restoring used to move
    every checkpoint to checkpoints.unusable/ and train again from step 0 in the same directory.
    Now the run stops with one line that says what failed, sets nothing aside, and the next
    `sftc run` resumes from the newest checkpoint."""
    import errno

    from runtime.checkpoints.orbax_checkpoints import Checkpoints

    resume = interrupt_at(monkeypatch, 10)
    assert main(["run", "tiny.sft"]) == 130
    (run_dir,) = _runs(project)

    resume()

    def failing(self, abstract_state, step=None):
        raise OSError(errno.EIO, "Input/output error", str(self.directory / str(step)))

    restore = Checkpoints.restore
    monkeypatch.setattr(Checkpoints, "restore", failing)
    capsys.readouterr()
    assert main(["run", "tiny.sft"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "checkpoint 10 in" in err and "Input/output error" in err
    assert "nothing was set aside" in err and "run the command again" in err
    assert sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit()) == [4, 8, 10]
    assert not (run_dir / "checkpoints.unusable").exists()
    assert _status(run_dir)["status"] == "error"
    assert [r["event"] for r in read_metrics(run_dir) if r["kind"] == "event"][-1] != "start"

    monkeypatch.setattr(Checkpoints, "restore", restore)
    assert main(["run", "tiny.sft"]) == 0
    assert _runs(project) == [run_dir]
    resumed = [r for r in read_metrics(run_dir) if r["kind"] == "event" and r["event"] == "resume"]
    assert resumed[-1]["checkpoint"] == 10
    steps = [r["step"] for r in read_metrics(run_dir) if r["kind"] == "train"]
    assert steps == sorted(steps)  # metrics.jsonl never goes back to step 0
    assert _final_params(run_dir)[0] == 12


@pytest.mark.slow
def test_resume_refuses_edited_data_tokenizer_or_plan_and_accepts_harmless_edits(project, monkeypatch, capsys):
    """Issue 9.5: an unfinished run used to resume whatever changed on disk."""
    resume = interrupt_at(monkeypatch, 6)
    assert main(["run", "tiny.sft"]) == 130
    (run_dir,) = _runs(project)

    resume()
    data = (project / "sums.jsonl").read_text()

    (project / "sums.jsonl").write_text(data + json.dumps({"a": "one", "b": "one", "c": "two"}) + "\n")
    capsys.readouterr()
    assert main(["run", "tiny.sft"]) == 1
    err = capsys.readouterr().err
    assert "~ data sums: content changed" in err and "--fresh" in err
    (project / "sums.jsonl").write_text(data)

    (project / "tiny.sft").write_text(SPEC.replace("steps = 12", "steps = 16"))
    assert main(["run", "tiny.sft"]) == 1
    assert "~ train.steps: 12 -> 16" in capsys.readouterr().err

    shutil.rmtree(project / "tok")
    other = wordlevel_tokenizer()
    other.add_tokens(["eleven"])
    other.save_pretrained(str(project / "tok"))
    (project / "tiny.sft").write_text(SPEC)
    assert main(["run", "tiny.sft"]) == 1
    assert "~ tokenizer: the tokenizer's files changed" in capsys.readouterr().err
    shutil.rmtree(project / "tok")
    wordlevel_tokenizer().save_pretrained(str(project / "tok"))

    (project / "tiny.sft").write_text(
        SPEC.replace("checkpoint = every 4 steps keep 5", "checkpoint = every 4 steps keep 5\n    log_every = 2 steps")
    )
    assert main(["run", "tiny.sft"]) == 0  # logging more often does not touch the weights
    assert _runs(project) == [run_dir] and _status(run_dir)["status"] == "done"
    assert len(_runs(project)) == 1


@pytest.mark.slow
def test_an_interrupted_evaluation_is_finished_by_the_next_run_without_training_again(project, monkeypatch, capsys):
    """Issue 9.6: the status said `done` before evaluation, so a Ctrl-C during generation left a
    run without a report that the next `sftc run` never finished."""
    import runtime.evaluate.final as final

    real = final.evaluate_run

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(final, "evaluate_run", interrupted)
    assert main(["run", "tiny.sft"]) == 130
    (run_dir,) = _runs(project)
    assert _status(run_dir)["status"] == "trained" and not (run_dir / "report.json").exists()
    trained_records = len([r for r in read_metrics(run_dir) if r["kind"] == "train"])
    monkeypatch.setattr(final, "evaluate_run", real)
    capsys.readouterr()
    assert main(["run", "tiny.sft"]) == 0
    assert "finishing the evaluation" in capsys.readouterr().err
    assert _runs(project) == [run_dir] and _status(run_dir)["status"] == "done"
    assert (run_dir / "report.json").exists()
    assert len([r for r in read_metrics(run_dir) if r["kind"] == "train"]) == trained_records  # no step again


@pytest.mark.slow
def test_an_unexpected_failure_prints_one_line_and_keeps_the_traceback(project, monkeypatch, capsys):
    import runtime.evaluate.final as final

    def broken(*args, **kwargs):
        raise RuntimeError("something sftc did not foresee")

    monkeypatch.setattr(final, "evaluate_run", broken)
    assert main(["run", "tiny.sft"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "RuntimeError: something sftc did not foresee" in err
    (run_dir,) = _runs(project)
    status = _status(run_dir)
    assert status["status"] == "error" and "Traceback" in Path(status["traceback"]).read_text()


@pytest.mark.slow
def test_ctrl_c_stops_between_steps_and_saves_the_step_it_reached(project):
    """SIGINT while steps run: the loop finishes the step in flight (never touching a state the
    step consumed), saves it, says `interrupted` and exits 130; the run then resumes to the end."""
    import os
    import signal
    import subprocess
    import sys
    import time

    child = subprocess.Popen(
        [sys.executable, "-c", SLOW_RUN],
        cwd=project,
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline and child.poll() is None:
        time.sleep(0.1)
        dirs = list((project / "runs" / "tiny").glob("*")) if (project / "runs" / "tiny").is_dir() else []
        if dirs and any(r["kind"] == "train" and r["step"] >= 5 for r in read_metrics(dirs[0])):
            child.send_signal(signal.SIGINT)
            break
    _, err = child.communicate(timeout=120)
    assert child.returncode == 130, err
    assert "Traceback" not in err
    (run_dir,) = _runs(project)
    status = _status(run_dir)
    assert status["status"] == "interrupted" and 5 <= status["steps"] < 12
    step, params = _final_params(run_dir)
    assert step == status["steps"] and all(np.isfinite(np.asarray(p)).all() for p in params)
    assert main(["run", "tiny.sft"]) == 0
    assert _status(run_dir)["status"] == "done" and _final_params(run_dir)[0] == 12


@pytest.mark.slow
def test_a_run_whose_every_checkpoint_is_damaged_stops_and_the_next_run_starts_a_new_directory(
    project, monkeypatch, capsys
):
    """Setting every checkpoint aside and training again from step 0 in the same directory made its
    metrics.jsonl go backwards. Now the run says nothing is left to resume and stops (exit 1); the
    next `sftc run` starts a new run directory."""
    resume = interrupt_at(monkeypatch, 6)
    assert main(["run", "tiny.sft"]) == 130
    (broken,) = _runs(project)
    steps = sorted(int(p.name) for p in (broken / "checkpoints").iterdir() if p.name.isdigit())
    assert steps == [4, 6]
    for step in steps:
        (broken / "checkpoints" / str(step) / "state" / "_METADATA").unlink()

    resume()
    capsys.readouterr()
    assert main(["run", "tiny.sft"]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "every checkpoint of" in err and "nothing is left to resume" in err and "Traceback" not in err
    assert _status(broken)["status"] == "error"
    assert sorted(p.name for p in (broken / "checkpoints.unusable").iterdir()) == ["4", "6"]
    assert [r["step"] for r in read_metrics(broken) if r["kind"] == "train"] == sorted(
        r["step"] for r in read_metrics(broken) if r["kind"] == "train"
    )  # never backwards
    assert main(["run", "tiny.sft"]) == 0
    assert len(_runs(project)) == 2 and _status(_runs(project)[1])["status"] == "done"
