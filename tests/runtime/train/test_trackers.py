"""`output { track = [tensorboard, mlflow(...)] }` against a real MLflow tracking server,
started here on loopback with a SQLite store and read back with `MlflowClient`: the plan as
params, the train loss at every step equal to `metrics.jsonl`, the gates and verdict, the
report's files as artifacts, credentials kept out of the run directory; a resumed run
continues the same MLflow run; an unreachable server costs one warning, not the run."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from runtime.train.metrics_log import read_metrics
from sftlang.cli import main
from tests.runtime.run_helpers import SPEC, assert_secret_nowhere, interrupt_at
from tests.runtime.run_helpers import runs as _runs

pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402

SECRET = "do-not-keep-this-password-4711"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """`mlflow server` on a free loopback port with a SQLite store; its URI once it answers."""
    root = tmp_path_factory.mktemp("mlflow_server")
    port = _free_port()
    command = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination",
        str(root / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    server = subprocess.Popen(command, cwd=root, stdout=open(root / "server.log", "wb"), stderr=subprocess.STDOUT)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not start:\n{(root / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield uri
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()


def _tracked_spec(project: Path, uri: str, experiment: str) -> None:
    """tiny.sft with a gate and `track = [tensorboard, mlflow(...)]`."""
    track = f'    track = [tensorboard, mlflow(uri = "{uri}", experiment = "{experiment}")]\n'
    spec = SPEC.replace("output {\n", "accept {\n    loss <= 10\n}\noutput {\n" + track)
    (project / "tiny.sft").write_text(spec)


def _mlflow_run(run_dir: Path, uri: str):
    run_id = json.loads((run_dir / "trackers.json").read_text())["mlflow"]["run_id"]
    return MlflowClient(uri), run_id


@pytest.mark.slow  # ~30 s with the server's start: keeps the default suite under 5 minutes
def test_a_run_is_tracked_in_mlflow(project, mlflow_server, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "someone")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", SECRET)  # the server has no auth; it must not be kept
    _tracked_spec(project, mlflow_server, "tracked")
    assert main(["run", "tiny.sft"]) == 0
    (run_dir,) = _runs(project)
    client, run_id = _mlflow_run(run_dir, mlflow_server)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "tracked"
    params = run.data.params
    assert params["train.steps"] == "12" and params["name"] == "tiny"
    assert float(params["train.optimizer.lr"]) == pytest.approx(1e-2)
    assert params["output.track.1.kind"] == "mlflow"
    # every train step's loss, equal to metrics.jsonl's
    train = {r["step"]: r["loss"] for r in read_metrics(run_dir) if r["kind"] == "train"}
    history = {m.step: m.value for m in client.get_metric_history(run_id, "train/loss")}
    assert history == pytest.approx(train) and sorted(history) == list(range(1, 13))
    final_eval = [r for r in read_metrics(run_dir) if r["kind"] == "eval" and r["source"] is None][-1]
    assert run.data.metrics["eval/loss"] == pytest.approx(final_eval["loss"])
    # the gates, the verdict, the report's files
    assert run.data.metrics["gate/loss"] == 1.0
    assert run.data.metrics["final/loss"] == pytest.approx(
        json.loads((run_dir / "report.json").read_text())["metrics"]["loss"]
    )
    assert run.data.tags["sftc.verdict"] == "accepted"
    assert run.data.tags["sftc.gate.loss"].startswith("passed: ") and run.data.tags["sftc.gate.loss"].endswith("<= 10")
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"report.md", "loss.png", "audit.json", "spec.sft", "plan.json"} <= artifacts
    assert (run_dir / "tb").is_dir()  # tensorboard, as before
    # credentials: neither printed nor written
    out = capsys.readouterr()
    assert_secret_nowhere(SECRET, out.out + out.err, run_dir)


@pytest.mark.slow  # ~25 s: an interrupted run and its resume
def test_a_resumed_run_continues_the_same_mlflow_run(project, mlflow_server, monkeypatch):

    _tracked_spec(project, mlflow_server, "resumed")
    resume = interrupt_at(monkeypatch, 7)
    assert main(["run", "tiny.sft"]) == 130
    (run_dir,) = _runs(project)
    client, run_id = _mlflow_run(run_dir, mlflow_server)
    assert client.get_run(run_id).info.status == "KILLED"
    resume()
    assert main(["run", "tiny.sft"]) == 0
    assert _runs(project) == [run_dir]
    assert _mlflow_run(run_dir, mlflow_server)[1] == run_id
    experiment = client.get_experiment_by_name("resumed")
    assert [r.info.run_id for r in client.search_runs([experiment.experiment_id])] == [run_id]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["sftc.verdict"] == "accepted"
    steps = {m.step for m in client.get_metric_history(run_id, "train/loss")}
    assert steps == set(range(1, 13))


@pytest.mark.slow  # ~10 s: a whole run
def test_an_unreachable_server_warns_once_and_the_run_goes_on(project, capsys):
    _tracked_spec(project, f"http://127.0.0.1:{_free_port()}", "nowhere")  # nothing listens there
    started = time.monotonic()
    assert main(["run", "tiny.sft"]) == 0
    (run_dir,) = _runs(project)
    err = capsys.readouterr().err
    assert err.count("mlflow: cannot reach") == 1, err
    assert "accepted" in err
    assert json.loads((run_dir / "report.json").read_text())["accepted"] is True
    assert [r["step"] for r in read_metrics(run_dir) if r["kind"] == "train"] == list(range(1, 13))
    assert not (run_dir / "trackers.json").exists()
    assert time.monotonic() - started < 120


def test_check_knows_mlflow_and_names_the_extra_when_it_is_missing(project, monkeypatch, capsys):
    _tracked_spec(project, "http://127.0.0.1:5000", "support")
    assert main(["check", "tiny.sft", "--devices", "1"]) == 0
    monkeypatch.setitem(sys.modules, "mlflow", None)  # what an environment without mlflow looks like
    assert main(["check", "tiny.sft", "--devices", "1"]) == 1
    out = capsys.readouterr()
    lines = [line for line in (out.out + out.err).splitlines() if "E073" in line]
    assert lines == [
        "error[E073]: `mlflow` needs the `mlflow` package, which is not installed: pip install 'sftc[mlflow]'"
    ]


def test_plan_params_fit_mlflow_limits():
    from runtime.train.mlflow_tracker import metric_name, shown

    assert metric_name('regex("^a+", faq)') == "regex/_a_/faq"
    assert metric_name("bleu(faq)") == "bleu/faq"
    assert shown("https://me:secret@example.com:8443/x") == "https://example.com:8443/x"


@pytest.mark.slow  # the real server: started once for the slow cases of this module
def test_a_resumed_run_whose_mlflow_run_is_gone_is_not_tracked_twice(tmp_path, mlflow_server):
    from runtime.plan.run_plan import TrackerPlan
    from runtime.train import mlflow_tracker
    from sftlang.check import check_spec_file
    from sftlang.lower import lower
    from tests.runtime.run_helpers import write_project

    write_project(tmp_path)
    _tracked_spec(tmp_path, mlflow_server, "gone")
    spec, problems = check_spec_file(tmp_path / "tiny.sft", devices=1)
    assert spec is not None and problems == []
    warnings: list[str] = []
    setting = TrackerPlan("mlflow", uri=mlflow_server, experiment="gone")
    known = {"run_id": "0" * 32}
    assert mlflow_tracker.start(setting, lower(spec), tmp_path, known, warnings.append) is None
    assert len(warnings) == 1 and f"the MLflow run {'0' * 32} this run logged to is not on" in warnings[0]
    client = MlflowClient(mlflow_server)
    assert client.search_runs([client.get_experiment_by_name("gone").experiment_id]) == []
