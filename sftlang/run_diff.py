"""`sftc diff RUN_A RUN_B`: beyond the spec diff, what two runs measured and ran on.

Reads each run directory's report.json (metrics), manifest.json (data
fingerprints, package versions, devices) and audit.json (the data audit's findings,
see `AuditDiff`); plain JSON, so no runtime import beyond `runtime.plan`.
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
    audit: AuditDiff | None = None  # None: neither run recorded an audit

    @property
    def same(self) -> bool:
        return (
            not self.fingerprints
            and not self.packages
            and not self.inputs
            and all(m.verdict == "same" for m in self.metrics)
            and self.devices is None
            and not (self.answers and self.answers[0])
            and (self.audit is None or self.audit.same)
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
    result.audit = diff_audits(old_dir, new_dir)
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
    """(text, rich style) lines: the metric table (changed metrics, or all), then data, the data
    audit's changes, packages, devices."""
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
    if result.audit is not None:
        lines += _audit_lines(result.audit, old_label, new_label)
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
        "audit": _audit_dict(result.audit),
    }


# ---------------------------------------------------------------- the data audit


# runtime.audit.audit_report.KINDS, in its order (sftlang may not import runtime.audit; a test holds them equal)
AUDIT_KINDS = ("duplicate", "near_duplicate", "leak", "conflict", "suspect")
FINDINGS_SHOWN = 3  # findings named per direction (fixed, changed, new) before "+N more"
WHERES_SHOWN = 3  # rows named per finding before "+N more"


@dataclass(frozen=True)
class CountChange:
    """How many findings of one kind name a row of ``source`` ("all": over every source)."""

    source: str
    kind: str
    old: int
    new: int


@dataclass(frozen=True)
class ChangedFinding:
    """A copy group, leak or conflict that kept its first row but gained or lost others."""

    old: dict
    new: dict

    @property
    def gained(self) -> list[tuple[str, str]]:
        """(id, where) of the rows only the new finding names."""
        before = set(self.old.get("ids", []))
        return [(i, w) for i, w in zip(self.new.get("ids", []), self.new.get("wheres", [])) if i not in before]

    @property
    def lost(self) -> list[tuple[str, str]]:
        """(id, where) of the rows only the old finding named."""
        after = set(self.new.get("ids", []))
        return [(i, w) for i, w in zip(self.old.get("ids", []), self.old.get("wheres", [])) if i not in after]


@dataclass
class AuditDiff:
    """How the data audit each run recorded (``RUN/audit.json``, `Audit.to_dict()`) changed.

    A finding is the same in both runs when its kind, its ``what`` and its ``ids`` (every row it
    names, in order) are the same: present only in the old run it is **fixed**, only in the new one
    **new**. One step beyond that, so that a group which merely gained or lost a member reads as
    such: a fixed and a new finding of the same kind and ``what`` with the same *first* row (the
    row a copy group keeps, the eval row that leaks, the first of a conflict) are one finding that
    **changed**, shown with the rows it gained and lost. Ids name a row by its file and line, so a
    row that moved (a line inserted above it) is a different row.

    ``missing``: (``"old"`` or ``"new"``, ``"absent"`` or ``"unreadable"``) for a run whose audit
    cannot be compared; then nothing else is. ``counts``: each count of a kind that changed, per
    source and over all (``"all"``); a source's count is left out when both its figures equal the
    overall ones (it says nothing new), as for per-source metrics."""

    missing: list[tuple[str, str]] = field(default_factory=list)
    counts: list[CountChange] = field(default_factory=list)
    fixed: list[dict] = field(default_factory=list)
    new: list[dict] = field(default_factory=list)
    changed: list[ChangedFinding] = field(default_factory=list)
    settings: list[tuple[str, object, object]] = field(default_factory=list)

    @property
    def same(self) -> bool:
        return not (self.counts or self.fixed or self.new or self.changed or self.settings)


def _read_audit(run: Path) -> tuple[dict | None, str]:
    """(the audit, "ok"), or (None, "absent" | "unreadable")."""
    path = run / "audit.json"
    if not path.is_file():
        return None, "absent"
    audit = _read(path)
    if not isinstance(audit.get("findings"), list) or not isinstance(audit.get("counts"), dict):
        return None, "unreadable"
    return audit, "ok"


def _finding_key(f: dict) -> tuple:
    return (f.get("kind"), f.get("what"), tuple(f.get("ids", [])))


def _finding_anchor(f: dict) -> tuple:
    ids = f.get("ids", [])
    return (f.get("kind"), f.get("what"), ids[0] if ids else None)


def diff_audits(old_dir: Path, new_dir: Path) -> AuditDiff | None:
    """None when neither run recorded an audit (both ran before sftc audited the data)."""
    (old, old_state), (new, new_state) = _read_audit(old_dir), _read_audit(new_dir)
    if old_state == new_state == "absent":
        return None
    if old is None or new is None:
        return AuditDiff(
            missing=[(side, state) for side, state in (("old", old_state), ("new", new_state)) if state != "ok"]
        )
    result = AuditDiff()
    old_counts, new_counts = old["counts"], new["counts"]

    def count(counts: dict, source: str, kind: str) -> int:
        value = counts.get(source, {}).get(kind, 0)
        return value if isinstance(value, int) else 0

    sources = sorted(s for s in dict.fromkeys([*old_counts, *new_counts]) if s != "all")
    for kind in AUDIT_KINDS:
        overall = (count(old_counts, "all", kind), count(new_counts, "all", kind))
        for source in ("all", *sources):
            pair = (count(old_counts, source, kind), count(new_counts, source, kind))
            if pair[0] != pair[1] and (source == "all" or pair != overall):
                result.counts.append(CountChange(source, kind, *pair))
    old_findings = [f for f in old["findings"] if isinstance(f, dict)]
    new_findings = [f for f in new["findings"] if isinstance(f, dict)]
    old_keys, new_keys = {_finding_key(f) for f in old_findings}, {_finding_key(f) for f in new_findings}
    gone = [f for f in old_findings if _finding_key(f) not in new_keys]
    came = [f for f in new_findings if _finding_key(f) not in old_keys]
    by_anchor: dict[tuple, dict] = {}
    for f in came:
        by_anchor.setdefault(_finding_anchor(f), f)
    paired: set[int] = set()
    for f in gone:
        match = by_anchor.pop(_finding_anchor(f), None)
        if match is None:
            result.fixed.append(f)
        else:
            result.changed.append(ChangedFinding(f, match))
            paired.add(id(match))
    result.new = [f for f in came if id(f) not in paired]
    old_settings, new_settings = old.get("settings") or {}, new.get("settings") or {}
    result.settings = [
        (k, old_settings.get(k), new_settings.get(k))
        for k in dict.fromkeys([*old_settings, *new_settings])
        if old_settings.get(k) != new_settings.get(k)
    ]
    return result


def _kind_label(finding: dict) -> str:
    """As `sftc audit` names a finding: "near duplicate", "leak (exact)", "suspect (empty answer)"."""
    kind, what = str(finding.get("kind", "")), str(finding.get("what", ""))
    label = kind.replace("_", " ")
    if kind in ("leak", "conflict", "suspect"):
        label += f" ({what.replace('_', ' ')})"
    return label


def _rows(wheres: list) -> str:
    shown = "; ".join(str(w) for w in wheres[:WHERES_SHOWN])
    more = f"; +{len(wheres) - WHERES_SHOWN} more" if len(wheres) > WHERES_SHOWN else ""
    return f"{len(wheres)} row{'s' if len(wheres) != 1 else ''}: {shown}{more}"


def _audit_lines(audit: AuditDiff, old_label: str, new_label: str) -> list[tuple[str, str]]:
    lines: list[tuple[str, str]] = []
    for side, state in audit.missing:
        run = old_label if side == "old" else new_label
        if state == "absent":
            lines.append((f"no audit recorded in {run}: it ran before sftc audited the data", ""))
        else:
            lines.append((f"the audit recorded in {run} cannot be read (audit.json): not compared", "yellow"))
    if audit.missing:
        return lines
    if audit.counts:
        names = [c.kind if c.source == "all" else f"{c.kind}({c.source})" for c in audit.counts]
        width = max(len("audit"), *(len(n) for n in names))
        column = max(10, len(old_label), len(new_label))
        lines.append((f"{'audit'.ljust(width)}  {old_label:>{column}}  {new_label:>{column}}  {'change':>10}", "bold"))
        for name, c in zip(names, audit.counts):
            verdict = "better" if c.new < c.old else "worse"
            text = f"{name.ljust(width)}  {c.old:>{column}}  {c.new:>{column}}  {c.new - c.old:>+10}  {verdict}"
            lines.append((text, "green" if verdict == "better" else "red"))
    for name, old, new in audit.settings:
        lines.append((f"~ audit setting {name}  {old} -> {new}", "yellow"))
    parts = [f"{len(audit.fixed)} fixed"] * bool(audit.fixed)
    parts += [f"{len(audit.changed)} changed"] * bool(audit.changed)
    parts += [f"{len(audit.new)} new"] * bool(audit.new)
    if parts:
        lines.append((f"audit findings: {', '.join(parts)}", "bold"))
    for f in audit.fixed[:FINDINGS_SHOWN]:
        lines.append((f"  fixed    {_kind_label(f)}: {f.get('message')}; {_rows(f.get('wheres', []))}", "green"))
    if len(audit.fixed) > FINDINGS_SHOWN:
        lines.append((f"  +{len(audit.fixed) - FINDINGS_SHOWN} more fixed", "green"))
    for ch in audit.changed[:FINDINGS_SHOWN]:
        rows = [f"gained {_rows([w for _, w in ch.gained])}"] * bool(ch.gained)
        rows += [f"lost {_rows([w for _, w in ch.lost])}"] * bool(ch.lost)
        lines.append((f"  changed  {_kind_label(ch.new)}: {ch.new.get('message')}; {'; '.join(rows)}", "yellow"))
    if len(audit.changed) > FINDINGS_SHOWN:
        lines.append((f"  +{len(audit.changed) - FINDINGS_SHOWN} more changed", "yellow"))
    for f in audit.new[:FINDINGS_SHOWN]:
        lines.append((f"  new      {_kind_label(f)}: {f.get('message')}; {_rows(f.get('wheres', []))}", "red"))
    if len(audit.new) > FINDINGS_SHOWN:
        lines.append((f"  +{len(audit.new) - FINDINGS_SHOWN} more new", "red"))
    return lines


def _audit_dict(audit: AuditDiff | None) -> dict | None:
    if audit is None:
        return None
    return {
        "missing": [{"run": side, "why": state} for side, state in audit.missing],
        "counts": [c.__dict__ for c in audit.counts],
        "settings": [{"setting": n, "old": o, "new": w} for n, o, w in audit.settings],
        "fixed": audit.fixed,
        "changed": [
            {"old": c.old, "new": c.new, "gained": [i for i, _ in c.gained], "lost": [i for i, _ in c.lost]}
            for c in audit.changed
        ],
        "new": audit.new,
    }
