"""`output { track = [tensorboard, wandb(mode = offline)] }` against the real `wandb` package,
offline, read back from the run's own `.wandb` file (W&B's record log, as `wandb sync` reads it):
the plan as config, the train loss at every step equal to `metrics.jsonl`, the gates and verdict
in the summary, the report's files saved with the run, the API key kept out of the run directory;
a resumed run continues the same W&B run id; an online W&B that cannot be reached costs one
warning and keeps the run offline. `trackio(...)`, the same way against the real `trackio`
package, read back from its local store with its own reader (`SQLiteStorage`)."""

from __future__ import annotations

import json
import socket
import struct
import sys
import time
from pathlib import Path

import pytest

from runtime.train.metrics_log import read_metrics
from sftlang.cli import main
from tests.runtime.run_helpers import SPEC, assert_secret_nowhere, interrupt_at
from tests.runtime.run_helpers import runs as _runs

pytest.importorskip("wandb")

SECRET = "0123456789abcdef0123456789abcdef4711beef"  # the shape of a W&B API key; never to be kept

BLOCK = 32 * 1024  # the .wandb file is a LevelDB-style log: 32 KiB blocks of chunks
HEADER = 7  # ":W&B", magic 0xBEE1, version 0; then per chunk: crc32, length (2 bytes), type (1 byte)


def wandb_records(path: Path) -> list:
    """The protobuf records (`wandb_internal_pb2.Record`) of a `.wandb` file, in order."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, pending, offset = [], b"", HEADER
    while offset + 7 <= len(data):
        room = BLOCK - offset % BLOCK
        if room < 7:  # a block's tail too short for a chunk header is padding
            offset += room
            continue
        _, length, kind = struct.unpack("<IHB", data[offset : offset + 7])
        chunk = data[offset + 7 : offset + 7 + length]
        offset += 7 + length
        if kind == 0 and length == 0:
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def wandb_run(run_dir: Path) -> dict:
    """What the run's `.wandb` files hold, all its offline runs (a resume adds one) together:
    history rows, config, summary, saved files."""
    history, config, summary, files, ids = [], {}, {}, set(), set()
    for path in sorted((run_dir / "wandb").glob("*run-*/run-*.wandb")):
        for record in wandb_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                ids.add(record.run.run_id)
                config |= {_key(item): json.loads(item.value_json) for item in record.run.config.update}
            elif kind == "config":
                config |= {_key(item): json.loads(item.value_json) for item in record.config.update}
            elif kind == "history":
                history.append({_key(item): json.loads(item.value_json) for item in record.history.item})
            elif kind == "summary":
                summary |= {_key(item): json.loads(item.value_json) for item in record.summary.update}
            elif kind == "files":
                files |= {Path(f.path).name for f in record.files.files}
    return {"history": history, "config": config, "summary": summary, "files": files, "ids": ids}


def _tracked_spec(project: Path, tracker: str) -> None:
    """tiny.sft with a gate and `track = [tensorboard, TRACKER]`."""
    track = f"    track = [tensorboard, {tracker}]\n"
    spec = SPEC.replace("output {\n", "accept {\n    loss <= 10\n}\noutput {\n" + track)
    (project / "tiny.sft").write_text(spec)


@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb_cache"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb_data"))


@pytest.mark.slow  # ~15 s: a whole run with W&B's service process
def test_a_run_is_tracked_in_wandb_offline(project, wandb_env, capsys):
    _tracked_spec(project, 'wandb(project = "tracked", mode = offline)')
    assert main(["run", "tiny.sft"]) == 0
    (run_dir,) = _runs(project)
    known = json.loads((run_dir / "trackers.json").read_text())["wandb"]
    assert known["mode"] == "offline" and known["project"] == "tracked"
    run = wandb_run(run_dir)
    assert run["ids"] == {known["run_id"]}
    # the plan as config
    assert run["config"]["name"] == "tiny" and run["config"]["train"]["steps"] == 12
    assert run["config"]["output"]["track"][1] == {
        "kind": "wandb",
        "uri": None,
        "experiment": None,
        "project": "tracked",
        "entity": None,
        "mode": "offline",
    }
    # every train step's loss, equal to metrics.jsonl's
    train = {r["step"]: r["loss"] for r in read_metrics(run_dir) if r["kind"] == "train"}
    history = {row["step"]: row["train/loss"] for row in run["history"] if "train/loss" in row}
    assert history == pytest.approx(train) and sorted(history) == list(range(1, 13))
    final_eval = [r for r in read_metrics(run_dir) if r["kind"] == "eval" and r["source"] is None][-1]
    evals = [row for row in run["history"] if "eval/loss" in row]
    assert evals[-1]["eval/loss"] == pytest.approx(final_eval["loss"]) and evals[-1]["step"] == final_eval["step"]
    # the gates, the verdict, the report's files
    summary = run["summary"]
    assert summary["sftc/verdict"] == "accepted" and summary["gate/loss"] == 1.0
    assert summary["sftc/gate/loss"].startswith("passed: ") and summary["sftc/gate/loss"].endswith("<= 10")
    assert summary["final/loss"] == pytest.approx(json.loads((run_dir / "report.json").read_text())["metrics"]["loss"])
    assert {"report.md", "loss.png", "audit.json", "spec.sft", "plan.json"} <= run["files"]
    assert (run_dir / "tb").is_dir()  # tensorboard, as before
    # the API key: neither printed nor written
    out = capsys.readouterr()
    assert_secret_nowhere(SECRET, out.out + out.err, run_dir)


@pytest.mark.slow  # ~25 s: an interrupted run and its resume
def test_a_resumed_run_continues_the_same_wandb_run(project, wandb_env, monkeypatch):

    _tracked_spec(project, 'wandb(project = "resumed", mode = offline)')
    resume = interrupt_at(monkeypatch, 7)
    assert main(["run", "tiny.sft"]) == 130
    (run_dir,) = _runs(project)
    run_id = json.loads((run_dir / "trackers.json").read_text())["wandb"]["run_id"]
    resume()
    assert main(["run", "tiny.sft"]) == 0
    assert _runs(project) == [run_dir]
    assert json.loads((run_dir / "trackers.json").read_text())["wandb"]["run_id"] == run_id
    run = wandb_run(run_dir)
    assert run["ids"] == {run_id}  # both parts: one W&B run
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 2
    assert {row["step"] for row in run["history"] if "train/loss" in row} == set(range(1, 13))
    assert run["summary"]["sftc/verdict"] == "accepted"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow  # ~30 s: a whole run and W&B's start timeout
def test_an_unreachable_wandb_warns_once_and_keeps_the_run_offline(project, wandb_env, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{_free_port()}")  # nothing listens there
    _tracked_spec(project, 'wandb(project = "nowhere")')
    started = time.monotonic()
    assert main(["run", "tiny.sft"]) == 0
    (run_dir,) = _runs(project)
    err = capsys.readouterr().err
    assert err.count("wandb: cannot reach W&B") == 1, err
    assert "wandb sync" in err and "cannot start" not in err
    assert json.loads((run_dir / "report.json").read_text())["accepted"] is True
    known = json.loads((run_dir / "trackers.json").read_text())["wandb"]
    assert known["mode"] == "offline"
    run = wandb_run(run_dir)
    assert {row["step"] for row in run["history"] if "train/loss" in row} == set(range(1, 13))
    assert time.monotonic() - started < 120


def test_check_knows_wandb_and_names_the_extra_when_it_is_missing(project, monkeypatch, capsys):
    _tracked_spec(project, 'wandb(project = "support", entity = "team", mode = offline)')
    assert main(["check", "tiny.sft", "--devices", "1"]) == 0
    monkeypatch.setitem(sys.modules, "wandb", None)  # what an environment without wandb looks like
    assert main(["check", "tiny.sft", "--devices", "1"]) == 1
    out = capsys.readouterr()
    lines = [line for line in (out.out + out.err).splitlines() if "E073" in line]
    assert lines == [
        "error[E073]: `wandb` needs the `wandb` package, which is not installed: pip install 'sftc[wandb]'"
    ]


# ---------------------------------------------------------------- Trackio


@pytest.fixture
def trackio_store(tmp_path, monkeypatch):
    """Trackio's local store in tmp (TRACKIO_DIR, which trackio reads once at import)."""
    trackio = pytest.importorskip("trackio")
    from trackio import sqlite_storage, utils

    store = tmp_path / "trackio"
    monkeypatch.setenv("TRACKIO_DIR", str(store))
    for module in (trackio, sqlite_storage, utils):
        monkeypatch.setattr(module, "TRACKIO_DIR", store)
    return store


@pytest.mark.slow  # ~25 s: an interrupted run and its resume
def test_a_run_is_tracked_in_trackio_and_resumes_into_the_same_run(project, trackio_store, monkeypatch, capsys):
    from trackio.sqlite_storage import SQLiteStorage

    _tracked_spec(project, 'trackio(project = "tracked")')
    resume = interrupt_at(monkeypatch, 7)
    assert main(["run", "tiny.sft"]) == 130
    (run_dir,) = _runs(project)
    resume()
    assert main(["run", "tiny.sft"]) == 0
    known = json.loads((run_dir / "trackers.json").read_text())["trackio"]
    assert known == {"project": "tracked", "run": run_dir.name}
    assert SQLiteStorage.get_runs("tracked") == [run_dir.name]  # the resume: one run
    config = SQLiteStorage.get_run_config("tracked", run_dir.name)
    assert config["name"] == "tiny" and config["train"]["steps"] == 12
    logs = SQLiteStorage.get_logs("tracked", run_dir.name)
    train = {r["step"]: r["loss"] for r in read_metrics(run_dir) if r["kind"] == "train"}
    history = {row["step"]: row["train/loss"] for row in logs if "train/loss" in row}
    assert history == pytest.approx(train) and sorted(history) == list(range(1, 13))
    last = [row for row in logs if "sftc/accepted" in row][-1]
    assert last["sftc/accepted"] == 1.0 and last["gate/loss"] == 1.0 and last["step"] == 12
    assert last["final/loss"] == pytest.approx(json.loads((run_dir / "report.json").read_text())["metrics"]["loss"])
    assert "Trackio" not in capsys.readouterr().out  # its prints went to sftc.log


def test_check_knows_trackio_and_names_the_extra_when_it_is_missing(project, monkeypatch, capsys):
    _tracked_spec(project, "trackio")
    assert main(["check", "tiny.sft", "--devices", "1"]) == 0
    _tracked_spec(project, 'trackio(projet = "x")')
    assert main(["check", "tiny.sft", "--devices", "1"]) == 1
    assert "did you mean `project`" in capsys.readouterr().err.replace("\n", " ")
    _tracked_spec(project, "trackio")
    monkeypatch.setitem(sys.modules, "trackio", None)
    assert main(["check", "tiny.sft", "--devices", "1"]) == 1
    out = capsys.readouterr()
    lines = [line for line in (out.out + out.err).splitlines() if "E073" in line]
    assert lines == [
        "error[E073]: `trackio` needs the `trackio` package, which is not installed: pip install 'sftc[trackio]'"
    ]
