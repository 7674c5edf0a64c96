"""The trackers of `output { track = [...] }`: where a run's metrics go besides
`metrics.jsonl`, started once per run and told everything in order.

`metrics.jsonl` is the record and stays complete whatever happens to a tracker. TensorBoard is
written by `runtime.train.metrics_log` itself (a local file, nothing can fail); a remote tracker
(MLflow, W&B, Trackio: `runtime.train.KIND_tracker`, one module each) receives every train and eval record from the same
`MetricsLog.write`, then the outcome (gates, verdict, baseline and gains, report files) once the
run is judged. Only the primary process of a job has trackers: the others would log the same run
twice. A tracker that cannot be reached is dropped with one warning; the run goes on.

`RUN/trackers.json` keeps what a resumed run needs to continue the same tracker run (an MLflow
run id, a W&B run id, a Trackio run name), never a credential:

    {"mlflow": {"run_id": "...", "experiment_id": "1", "experiment": "support",
                "tracking_uri": "http://127.0.0.1:5000"},
     "wandb": {"run_id": "k2x9...", "project": "support", "entity": null, "mode": "offline", "dir": "..."},
     "trackio": {"project": "support", "run": "20261207-..."}}
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.plan.run_plan import Plan

Warn = Callable[[str], None]


@dataclass
class Trackers:
    """The trackers a run started: `tensorboard` tells MetricsLog whether to write `tb/`; `live`
    are the remote ones that receive records and the outcome."""

    tensorboard: bool
    live: list = field(default_factory=list)

    def metrics(self, record: dict[str, Any]) -> None:
        for tracker in self.live:
            tracker.metrics(record)

    def finish(self, outcome, steps: int, run_dir: Path) -> None:
        """The judged run: gates, verdict, baseline values and gains, the report's files."""
        for tracker in self.live:
            tracker.finish(outcome, steps, run_dir)

    def close(self, status: str) -> None:
        """`status`: FINISHED (judged, accepted or not), KILLED (interrupted) or FAILED."""
        for tracker in self.live:
            tracker.close(status)


def start_trackers(plan: Plan, run_dir: Path, primary: bool, warn: Warn) -> Trackers:
    """The spec's trackers for this process; a remote one continues the run `trackers.json`
    names (a resumed run) or starts a new one and records it there."""
    kinds = {t.kind for t in plan.output.track}
    trackers = Trackers(tensorboard="tensorboard" in kinds)
    if not primary:
        return trackers
    for setting in plan.output.track:
        if setting.kind == "tensorboard":
            continue
        module = importlib.import_module(f"runtime.train.{setting.kind}_tracker")  # mlflow | wandb | trackio
        started = module.start(setting, plan, run_dir, read_trackers(run_dir).get(setting.kind), warn)
        if started is not None:
            record_tracker(run_dir, setting.kind, started.identity())
            trackers.live.append(started)
    return trackers


def read_trackers(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / "trackers.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def record_tracker(run_dir: Path, kind: str, identity: dict[str, Any]) -> None:
    """Write (or keep) the identity of a tracker's run in `trackers.json`."""
    known = read_trackers(run_dir)
    known[kind] = identity
    (Path(run_dir) / "trackers.json").write_text(json.dumps(known, indent=1) + "\n", encoding="utf-8")
