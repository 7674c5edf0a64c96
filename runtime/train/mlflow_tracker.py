"""The MLflow tracker: one MLflow run per sftc run, continued (never duplicated) when the
sftc run resumes.

What it logs: the decided plan as params (flattened to dotted keys, values cut to MLflow's
length limit), every train and eval record of `metrics.jsonl` at its step under the names
TensorBoard uses (`train/loss`, `eval/loss`, `eval/SOURCE/loss`), then the final metrics,
the baseline's, the gains, each gate (a `gate/...` metric, 1 passed, 0 failed, and a tag with
its value and threshold), the verdict as the tag `sftc.verdict`, and the report's files as
artifacts.

Training never waits for the server: records go to a queue that one background thread sends.
The connection check at the start has a few seconds (MLflow's own HTTP timeout and retry
variables, set only for that check), so a dead URI costs seconds; a server lost later is
reported once and dropped. Credentials come only from MLflow's own environment variables
(`MLFLOW_TRACKING_USERNAME`/`_PASSWORD`, `MLFLOW_TRACKING_TOKEN`, ...), which MLflow reads itself:
sftc neither stores nor prints them, and the URI it shows and keeps has any user info removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from runtime.plan.run_plan import Plan, TrackerPlan
from runtime.train import trackers
from runtime.train.trackers import Warn, reason

# The connection check: one try, five seconds (MLflow's defaults retry for minutes).
CHECK_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
# Later requests, off the training thread: a few quick retries unless the user set their own.
SEND_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
# The files of a run directory logged as artifacts, when present.


def tracking_uri(setting: TrackerPlan, plan: Plan) -> str:
    """The spec's `uri`, else `MLFLOW_TRACKING_URI`, else a SQLite store beside the spec's runs
    (`runs/NAME/mlflow.db`), so the runs of one spec are compared in one `mlflow ui`."""
    if setting.uri:
        return setting.uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{Path(plan.output.dir) / 'mlflow.db'}"


def shown(uri: str) -> str:
    """A URI without user info, safe to print and to keep."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    return urlunsplit(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")))


def metric_name(text: str) -> str:
    """`bleu(faq)` -> `bleu/faq` (`trackers.metric_name`), then what MLflow names cannot hold
    replaced: they take letters, digits, `_ - . / : ` and spaces."""
    return re.sub(r"[^/\w.\- :]", "_", trackers.metric_name(text))[:250]


def plan_params(plan: Plan) -> dict[str, str]:
    """The plan as MLflow params: dotted keys (`train.optimizer.lr`), list indexes as keys
    (`data.sources.0.path`), values as JSON text cut to MLflow's 6000 characters."""
    out: dict[str, str] = {}

    def walk(value: Any, prefix: str) -> None:
        if isinstance(value, dict) and value:
            for key, item in value.items():
                walk(item, f"{prefix}.{key}" if prefix else str(key))
        elif isinstance(value, (list, tuple)) and value and any(isinstance(v, (dict, list)) for v in value):
            for index, item in enumerate(value):
                walk(item, f"{prefix}.{index}")
        else:
            text = value if isinstance(value, str) else json.dumps(value)
            out[metric_name(prefix)] = text if len(text) <= 6000 else text[:5999] + "…"

    walk(plan.to_dict(), "")
    return out


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def start(setting: TrackerPlan, plan: Plan, run_dir: Path, known: dict | None, warn: Warn) -> MlflowTracker | None:
    """Reach the server, find or create the experiment, continue the run `known` names or start
    one and log the plan; None (after one warning) when the server cannot be reached."""
    # MLflow's own terminal handler would bypass runtime.platform.library_logs: its records go to sftc.log
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")
    from mlflow.tracking import MlflowClient

    uri = tracking_uri(setting, plan)
    experiment = setting.experiment or plan.name
    try:
        with _environment(CHECK_ENV):
            client = MlflowClient(tracking_uri=uri)
            found = client.get_experiment_by_name(experiment)
            if found is not None:
                experiment_id = found.experiment_id
            else:
                local = uri.startswith("sqlite:") and setting.uri is None
                location = (Path(plan.output.dir) / "mlartifacts").as_uri() if local else None
                experiment_id = client.create_experiment(experiment, artifact_location=location)
            run_id = known.get("run_id") if known else None
            if run_id is not None:
                if not _exists(client, run_id):  # `uri` now names another server: never start a second run
                    warn(
                        f"mlflow: the MLflow run {run_id} this run logged to is not on {shown(uri)}; the rest of "
                        f"this run is not tracked there, its metrics stay in {Path(run_dir) / 'metrics.jsonl'}"
                    )
                    return None
                client.update_run(run_id, status="RUNNING")
                logged = client.get_run(run_id).data.params
            else:
                tags = {"sftc.run_dir": str(run_dir), "sftc.spec_hash": plan.spec_hash, "mlflow.source.name": "sftc"}
                run_id = client.create_run(experiment_id, run_name=Path(run_dir).name, tags=tags).info.run_id
                logged = {}
    except Exception as error:  # noqa: BLE001 - any failure to reach the tracker: say so once, train on
        warn(
            f"mlflow: cannot reach {shown(uri)} ({reason(error)}); this run is not tracked there, its metrics "
            f"stay in {Path(run_dir) / 'metrics.jsonl'}"
        )
        return None
    tracker = MlflowTracker(client, run_id, experiment_id, experiment, uri, warn)
    params = {k: v for k, v in plan_params(plan).items() if k not in logged}  # a resumed run keeps its params
    tracker.send(("params", params))
    return tracker


class MlflowTracker:
    """One MLflow run, fed from a queue by a background thread so training never waits."""

    def __init__(self, client, run_id: str, experiment_id: str, experiment: str, uri: str, warn: Warn):
        self.client, self.run_id, self.uri, self.warn = client, run_id, uri, warn
        self.experiment_id, self.experiment = experiment_id, experiment
        self.lost = False
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="sftc-mlflow", daemon=True)
        self._thread.start()

    def identity(self) -> dict[str, Any]:
        """What `trackers.json` keeps to continue this run: no credentials."""
        return {
            "run_id": self.run_id,
            "experiment_id": self.experiment_id,
            "experiment": self.experiment,
            "tracking_uri": shown(self.uri),
        }

    def send(self, item: tuple) -> None:
        if not self.lost:
            self._queue.put(item)

    def metrics(self, record: dict[str, Any]) -> None:
        """A train or eval record of `metrics.jsonl`, under TensorBoard's names."""
        values = trackers.record_values(record)
        if values is None:
            return
        stamp = int(record.get("time", time.time()) * 1000)
        self.send(("metrics", {metric_name(k): v for k, v in values.items()}, int(record["step"]), stamp))

    def finish(self, outcome, steps: int, run_dir: Path) -> None:
        """Final metrics, the baseline's and the gains; each gate; the verdict; the report's files."""
        metrics = {metric_name(k): v for k, v in trackers.outcome_values(outcome).items()}
        tags = {"sftc.verdict": "accepted" if outcome.accepted else "rejected"}
        tags |= {f"sftc.gate.{metric_name(name)}": text for name, text in trackers.gate_texts(outcome).items()}
        self.send(("metrics", metrics, steps, int(time.time() * 1000)))
        self.send(("tags", tags))
        for name in trackers.REPORT_FILES:
            if (Path(run_dir) / name).exists():
                self.send(("artifact", str(Path(run_dir) / name)))

    def close(self, status: str, wait_s: float = 120.0) -> None:
        """End the MLflow run with `status` once everything queued is sent (at most `wait_s`)."""
        self.send(("end", status))
        self._queue.put(None)
        self._thread.join(wait_s)
        if self._thread.is_alive():
            self.warn(f"mlflow: {shown(self.uri)} did not take the last records within {wait_s:.0f}s")

    def _work(self) -> None:
        from mlflow.entities import Metric, Param, RunTag

        for key, value in SEND_ENV.items():
            os.environ.setdefault(key, value)
        while (item := self._queue.get()) is not None:
            if self.lost:
                continue
            try:
                kind = item[0]
                if kind == "params":
                    pairs = [Param(k, v) for k, v in item[1].items()]
                    for start in range(0, len(pairs), 100):  # MLflow's limit of params per batch
                        self.client.log_batch(self.run_id, params=pairs[start : start + 100])
                elif kind == "metrics":
                    _, values, step, stamp = item
                    self.client.log_batch(self.run_id, metrics=[Metric(k, v, stamp, step) for k, v in values.items()])
                elif kind == "tags":
                    self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in item[1].items()])
                elif kind == "artifact":
                    self.client.log_artifact(self.run_id, item[1])
                elif kind == "end":
                    self.client.set_terminated(self.run_id, item[1])
            except Exception as error:  # noqa: BLE001 - a lost server never stops the run: say so once
                self.lost = True
                self.warn(
                    f"mlflow: lost {shown(self.uri)} ({reason(error)}); the rest of this run is not tracked there, "
                    "its metrics stay in the run directory"
                )


def _exists(client, run_id: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_run(run_id)
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return False
        raise
    return True
