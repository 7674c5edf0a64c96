"""`sftc diff RUN_A RUN_B`: beyond the spec diff, what two runs measured and ran on.

Reads each run directory's report.json (metrics) and manifest.json (data
fingerprints, package versions, devices); plain JSON, so no runtime import.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from .schema import METRICS


@dataclass(frozen=True)
class MetricDelta:
    metric: str
    old: float | None
    new: float | None
    verdict: str  # "better" | "worse" | "same" | "changed" | "added" | "removed"


@dataclass(frozen=True)
class BeforeAfter:
    """One metric against each run's baseline: (baseline, tuned) of the old run and of the new."""

    metric: str
    old: tuple[float, float] | None
    new: tuple[float, float] | None


@dataclass
class RunDiff:
    metrics: list[MetricDelta] = field(default_factory=list)
    fingerprints: list[tuple[str, str | None, str | None]] = field(default_factory=list)
    packages: list[tuple[str, str | None, str | None]] = field(default_factory=list)
    devices: tuple[dict, dict] | None = None
    baselines: list[BeforeAfter] = field(default_factory=list)
    answers: tuple[int, int] | None = None  # (eval samples answered differently, samples both runs answered)
    inputs: list[str] = field(
        default_factory=list
    )  # what changed among the inputs (runtime.plan.run_inputs), one line each

    @property
    def same(self) -> bool:
        return (
            not self.fingerprints
            and not self.packages
            and not self.inputs
            and all(m.verdict == "same" for m in self.metrics)
            and self.devices is None
            and not (self.answers and self.answers[0])
        )


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and (path / "spec.sft").is_file() and (path / "plan.json").is_file()


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _number(value) -> float | None:
    if isinstance(value, (int, float)):
        return float(value)
    return None


def _direction(metric: str) -> str | None:
    base = metric.split("(", 1)[0]
    if base == "gain":
        return "higher"  # an improvement over the baseline, whatever the metric's own direction
    known = METRICS.get(base)
    return known.better if known else None


def _verdict(metric: str, old: float | None, new: float | None) -> str:
    if old is None:
        return "added"
    if new is None:
        return "removed"
    if math.isclose(old, new, rel_tol=1e-9, abs_tol=1e-12):
        return "same"
    better = _direction(metric)
    if better is None:
        return "changed"
    return "better" if (new < old) == (better == "lower") else "worse"


def _pairs(old: dict, new: dict) -> list[tuple[str, str | None, str | None]]:
    keys = list(dict.fromkeys([*old, *new]))
    return [(k, old.get(k), new.get(k)) for k in keys if old.get(k) != new.get(k)]


def diff_runs(old_dir: Path, new_dir: Path) -> RunDiff:
    old_report, new_report = _read(old_dir / "report.json"), _read(new_dir / "report.json")
    old_metrics, new_metrics = old_report.get("metrics", {}), new_report.get("metrics", {})
    result = RunDiff()
    for metric in dict.fromkeys([*old_metrics, *new_metrics]):
        base = metric.split("(", 1)[0]
        if (
            base != metric
            and old_metrics.get(metric) == old_metrics.get(base)
            and new_metrics.get(metric) == new_metrics.get(base)
        ):
            continue  # a single source's value equal to the overall one says nothing new
        old, new = _number(old_metrics.get(metric)), _number(new_metrics.get(metric))
        result.metrics.append(MetricDelta(metric, old, new, _verdict(metric, old, new)))
    old_manifest, new_manifest = _read(old_dir / "manifest.json"), _read(new_dir / "manifest.json")
    from runtime.plan.run_inputs import Inputs

    old_inputs, new_inputs = Inputs.from_dict(old_manifest.get("inputs")), Inputs.from_dict(new_manifest.get("inputs"))
    if old_inputs is not None and new_inputs is not None:  # every input, in the words resume and caches use
        result.inputs = new_inputs.changes(old_inputs, "run_diff")
    else:  # a run recorded before sftc kept its inputs: its data fingerprints
        result.fingerprints = _pairs(
            old_manifest.get("data", {}).get("fingerprints", {}), new_manifest.get("data", {}).get("fingerprints", {})
        )
    result.packages = _pairs(old_manifest.get("packages", {}), new_manifest.get("packages", {}))
    if old_manifest.get("devices") != new_manifest.get("devices"):
        result.devices = (old_manifest.get("devices", {}), new_manifest.get("devices", {}))
    result.baselines = _before_after(old_report, new_report)
    result.answers = _answers_changed(old_report.get("samples", []), new_report.get("samples", []))
    return result


def _before_after(old_report: dict, new_report: dict) -> list[BeforeAfter]:
    """Each metric both a run and its baseline have, for either run."""

    def pairs(report: dict) -> dict[str, tuple[float, float]]:
        base, tuned = report.get("baseline", {}).get("metrics", {}), report.get("metrics", {})
        return {
            k: (b, t)
            for k in base
            if k in tuned and (b := _number(base[k])) is not None and (t := _number(tuned[k])) is not None
        }

    old, new = pairs(old_report), pairs(new_report)
    rows = []
    for k in dict.fromkeys([*old, *new]):
        overall = k.split("(", 1)[0]
        if overall != k and old.get(k) == old.get(overall) and new.get(k) == new.get(overall):
            continue  # a single source's figures equal to the overall ones say nothing new
        rows.append(BeforeAfter(k, old.get(k), new.get(k)))
    return rows


def _answers_changed(old: list, new: list) -> tuple[int, int] | None:
    from runtime.plan.sample_origin import sample_key

    old_answers = {sample_key(s): s.get("generated") for s in old}
    common = [(old_answers[sample_key(s)], s.get("generated")) for s in new if sample_key(s) in old_answers]
    return (sum(a != b for a, b in common), len(common)) if common else None


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"


def render_lines(result: RunDiff, old_label: str, new_label: str, all_metrics: bool = False) -> list[tuple[str, str]]:
    """(text, rich style) lines: the metric table (changed metrics, or all), then data, packages, devices."""
    shown = [m for m in result.metrics if all_metrics or m.verdict != "same"]
    lines: list[tuple[str, str]] = []
    if shown:
        width = max(len("metric"), *(len(m.metric) for m in shown))
        column = max(10, len(old_label), len(new_label))
        lines.append((f"{'metric'.ljust(width)}  {old_label:>{column}}  {new_label:>{column}}  {'change':>10}", "bold"))
        style = {"better": "green", "worse": "red", "added": "green", "removed": "red"}
        for m in shown:
            change = "" if m.old is None or m.new is None else f"{m.new - m.old:+.4g}"
            text = (
                f"{m.metric.ljust(width)}  {_fmt(m.old):>{column}}  {_fmt(m.new):>{column}}  {change:>10}  {m.verdict}"
            )
            lines.append((text, style.get(m.verdict, "")))
    elif result.metrics:
        lines.append(("metrics: all equal", "dim"))
    if result.baselines:
        lines += _before_after_lines(result.baselines, old_label, new_label)
    if result.answers is not None:
        changed, both = result.answers
        lines.append(
            (f"answers: {changed} of {both} eval samples answered differently", "yellow" if changed else "dim")
        )
    lines += [(line, "yellow") for line in result.inputs]
    for name, old, new in result.fingerprints:
        lines.append((f"~ data {name}  fingerprint {str(old)[:12]} -> {str(new)[:12]}", "yellow"))
    for name, old, new in result.packages:
        lines.append((f"~ package {name}  {old} -> {new}", "yellow"))
    if result.devices is not None:
        old_devices, new_devices = result.devices

        def describe(d: dict) -> str:
            return f"{d.get('count')} x {d.get('kind')}"

        lines.append((f"~ devices  {describe(old_devices)} -> {describe(new_devices)}", "yellow"))
    return lines


def _before_after_lines(rows: list[BeforeAfter], old_label: str, new_label: str) -> list[tuple[str, str]]:
    """`metric  base -> tuned (change)` for each run, against that run's own baseline."""

    def cell(pair: tuple[float, float] | None) -> str:
        return "-" if pair is None else f"{_fmt(pair[0])} -> {_fmt(pair[1])} ({pair[1] - pair[0]:+.3g})"

    width = max(len("vs baseline"), *(len(r.metric) for r in rows))
    cells = [(cell(r.old), cell(r.new)) for r in rows]
    column = max(len(old_label), len(new_label), *(len(c) for pair in cells for c in pair))
    lines = [(f"{'vs baseline'.ljust(width)}  {old_label:>{column}}  {new_label:>{column}}", "bold")]
    for r, (old, new) in zip(rows, cells):
        lines.append((f"{r.metric.ljust(width)}  {old:>{column}}  {new:>{column}}", ""))
    return lines


def to_dict(result: RunDiff) -> dict:
    return {
        "metrics": [m.__dict__ for m in result.metrics],
        "baselines": [
            {"metric": r.metric, "old": list(r.old) if r.old else None, "new": list(r.new) if r.new else None}
            for r in result.baselines
        ],
        "answers_changed": list(result.answers) if result.answers else None,
        "data_fingerprints": [{"source": n, "old": o, "new": w} for n, o, w in result.fingerprints],
        "inputs": list(result.inputs),
        "packages": [{"package": n, "old": o, "new": w} for n, o, w in result.packages],
        "devices": list(result.devices) if result.devices else None,
    }
