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
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.plan.run_plan import Plan

Warn = Callable[[str], None]

REPORT_FILES = ("report.md", "report.json", "loss.png", "topics.png", "audit.json", "spec.sft", "plan.json")
RECORD_FIELDS_SKIPPED = ("kind", "step", "time", "source", "split")  # a record's fields that are not metrics


def metric_name(text: str) -> str:
    """`bleu(faq)` -> `bleu/faq`: a metric's or gate's name as TensorBoard shows it, for every tracker."""
    return text.replace("(", "/").replace(")", "").replace(", ", "/").replace('"', "")


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def reason(error: BaseException) -> str:
    """The first line of an error, short: a library's connection errors run to many lines."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return first if len(first) <= 160 else first[:157] + "..."


def record_values(record: dict[str, Any]) -> dict[str, float] | None:
    """A train or eval record of `metrics.jsonl` as metrics under TensorBoard's names (`train/loss`,
    `eval/faq/loss`); None for any other record."""
    if record.get("kind") not in ("train", "eval"):
        return None
    prefix = record["kind"] if record.get("source") is None else f"eval/{record['source']}"
    return {
        metric_name(f"{prefix}/{key}"): float(value)
        for key, value in record.items()
        if key not in RECORD_FIELDS_SKIPPED and isinstance(value, (int, float)) and not isinstance(value, bool)
    }


def outcome_values(outcome: Any) -> dict[str, float]:
    """The judged run as metrics: `final/…`, `baseline/…`, `gain/…` (finite values only) and
    `gate/…` (1 passed, 0 failed)."""
    values = {k: v for k, v in (outcome.values or {}).items() if finite(v)}
    base = {k: v for k, v in (outcome.base_values or {}).items() if finite(v)}
    metrics = {metric_name(f"final/{k}"): float(v) for k, v in values.items()}
    metrics |= {metric_name(f"baseline/{k}"): float(v) for k, v in base.items()}
    metrics |= {metric_name(f"gain/{k}"): float(values[k] - base[k]) for k in base if k in values}
    for verdict in outcome.verdicts or ():
        metrics[f"gate/{metric_name(verdict.gate)}"] = 1.0 if verdict.passed else 0.0
    return metrics


def gate_texts(outcome: Any) -> dict[str, str]:
    """Each gate's verdict in words, by its metric name: `passed: 0.93 >= 0.5`."""
    texts = {}
    for verdict in outcome.verdicts or ():
        value = "missing" if verdict.value is None else f"{verdict.value:g}"
        texts[metric_name(verdict.gate)] = (
            f"{'passed' if verdict.passed else 'failed'}: {value} {verdict.op} {verdict.threshold:g}"
        )
    return texts


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
