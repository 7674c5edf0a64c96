"""From generations and token metrics to metric values, and from values to gate verdicts.

`compute_metrics` names every value the way a gate writes it:

    loss, perplexity, token_accuracy          all eval rows (the loop's source=None record)
    loss(faq), token_accuracy(faq), ...       one source's eval rows
    exact_match, rouge_l, bleu, ...           all generated samples
    rouge_l(faq), bleu(faq), ...              one source's generated samples
    regex("^\\{"), regex("^\\{", faq)         only where a gate names the pattern
    acc(arc_easy), exact_match(gsm8k)         an lm_eval task's metric (`runtime.evaluate.benchmarks`)

and every gate's own text (`GatePlan.text`) is also a key of its value, so
`values[gate.text]` is what the gate is judged on.

`judge` compares each gate's value with its threshold. A gate whose value was
not computed (a source without eval rows, no generation, an unknown metric) or
is NaN fails, with a reason that says so: a gate never passes by default.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from runtime.evaluate import metrics as M
from runtime.evaluate.answers import Sample

__all__ = [
    "TOKEN_METRICS",
    "REVIEW_METRICS",
    "Verdict",
    "compute_metrics",
    "gains",
    "gate_key",
    "metric_key",
    "judge",
    "accepted",
]

TOKEN_METRICS = ("loss", "perplexity", "token_accuracy")
REVIEW_METRICS = ("review_score", "review_flagged", "review_wins")  # from `sftc review` (runtime.review)
ALL_METRICS = TOKEN_METRICS + M.GENERATION_METRICS + ("regex",) + REVIEW_METRICS

_OPS = {
    "<=": lambda v, t: v <= t,
    ">=": lambda v, t: v >= t,
    "<": lambda v, t: v < t,
    ">": lambda v, t: v > t,
    # equality of floats read from a spec and computed by a library: equal to 1e-9 relative
    "==": lambda v, t: math.isclose(v, t, rel_tol=1e-9, abs_tol=1e-12),
}


def metric_key(metric: str, source: str | None = None, pattern: str | None = None) -> str:
    """`loss`, `bleu(faq)`, `regex("^\\\\{", faq)`: a metric's name as a gate writes it."""
    args = ([json.dumps(pattern)] if pattern is not None else []) + ([source] if source is not None else [])
    return f"{metric}({', '.join(args)})" if args else metric


def gate_key(gate: Any) -> str:
    """The key of a gate's value: its text as written in the spec, else `metric_key`."""
    return gate.text or canonical_key(gate)


def canonical_key(gate: Any) -> str:
    """The key of the metric a gate reads (inside its `gain(...)`): over a source, or an lm_eval task."""
    return metric_key(gate.metric, gate.source or getattr(gate, "task", None), gate.pattern)


def _token_values(values: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for name in TOKEN_METRICS:
        v = values.get(name)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[name] = float(v)
    if "perplexity" not in out and "loss" in out:
        out["perplexity"] = math.exp(out["loss"]) if out["loss"] < 700 else math.inf
    return out


def _generation_values(samples: Sequence[Sample]) -> dict[str, float]:
    preds = [s.generated for s in samples]
    refs = [s.reference for s in samples]
    counts = [s.tokens for s in samples]
    return {name: M.compute(name, preds, refs, counts) for name in M.GENERATION_METRICS}


def compute_metrics(
    samples: Sequence[Sample],
    token_metrics: Mapping[str | None, Mapping[str, Any]],
    gates: Iterable[Any] = (),
    eval_sources: Sequence[str] | None = None,
    extra: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """Every metric, overall and per source, plus each gate's value under `gate_key`.

    ``token_metrics`` maps a source name (None: all eval rows) to the loop's eval
    record (``loss``, ``perplexity``, ``token_accuracy``; other keys ignored;
    perplexity is ``exp(loss)`` when absent). ``eval_sources`` names the sources
    that have eval rows (default: those seen in ``samples`` or ``token_metrics``):
    ``extra`` adds values computed elsewhere (the review metrics) under their own keys;
    when there is exactly one, its per-source token metrics are the overall ones
    (the loop writes only the overall record then). Regex match rates are computed
    for the patterns that ``gates`` name.
    """
    gates = list(gates)
    values: dict[str, float] = {}
    sources = list(dict.fromkeys([s.source for s in samples] + [k for k in token_metrics if k is not None]))
    if eval_sources is not None:
        sources = list(dict.fromkeys(list(eval_sources) + sources))
    overall = _token_values(token_metrics.get(None, {}))
    values.update(overall)
    if samples:
        values.update(_generation_values(samples))
    by_source = {name: [s for s in samples if s.source == name] for name in sources}
    eval_set = set(eval_sources) if eval_sources is not None else set(sources)
    for name in sources:
        record = token_metrics.get(name)
        if record is None and len(eval_set) == 1 and name in eval_set:
            record = token_metrics.get(None, {})
        for metric, v in _token_values(record or {}).items():
            values[metric_key(metric, name)] = v
        if by_source[name]:
            for metric, v in _generation_values(by_source[name]).items():
                values[metric_key(metric, name)] = v
    values.update(extra or {})
    for gate in gates:
        canonical = canonical_key(gate)
        if gate.metric == "regex" and gate.pattern is not None:
            chosen = [s for s in samples if gate.source is None or s.source == gate.source]
            if chosen:
                values[canonical] = M.regex([s.generated for s in chosen], gate.pattern)
        if canonical in values and not getattr(gate, "gain", 0):
            values[gate_key(gate)] = values[canonical]
    return values


def gains(values: Mapping[str, float], baseline: Mapping[str, float], gates: Iterable[Any]) -> dict[str, float]:
    """The value of each `gain(...)` gate: the improvement of its metric over the baseline's
    (``gate.gain`` is +1 where higher is better, -1 where lower is)."""
    out = {}
    for gate in gates:
        sign = getattr(gate, "gain", 0)
        canonical = canonical_key(gate)
        if sign and canonical in values and canonical in baseline:
            out[gate_key(gate)] = sign * (float(values[canonical]) - float(baseline[canonical]))
    return out


@dataclass(frozen=True)
class Verdict:
    """One gate, judged: ``passed`` is False whenever ``value`` is missing or NaN (see ``reason``)."""

    gate: str  # the gate's metric as written: `bleu(faq)`
    op: str
    threshold: float
    value: float | None
    passed: bool
    metric: str = ""
    source: str | None = None
    pattern: str | None = None  # regex gates
    reason: str = ""  # why a gate failed without a comparable value
    task: str | None = None  # a gate on an lm_eval task's metric: `acc(arc_easy)`

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["value"] is not None and not math.isfinite(d["value"]):
            d["value"] = str(d["value"])
        return d

    @property
    def text(self) -> str:
        return f"{self.gate} {self.op} {_fmt(self.threshold)}"


def _fmt(x: float) -> str:
    return f"{x:g}"


def _why_missing(gate: Any) -> str:
    task = getattr(gate, "task", None)
    if task is not None:
        return (
            f"not computed: no `{gate.metric}` for benchmark task `{task}` of the tuned model or of the baseline "
            "(the task reports other metrics, or no benchmarks ran)"
            if getattr(gate, "gain", 0)
            else f"not computed: benchmark task `{task}` reports no `{gate.metric}` (or no benchmarks ran)"
        )
    if gate.metric not in ALL_METRICS:
        return f"unknown metric `{gate.metric}` (metrics: {', '.join(ALL_METRICS)})"
    where = f"source `{gate.source}`" if gate.source else "the eval split"
    if getattr(gate, "gain", 0):
        inner = canonical_key(gate)
        return (
            f"not computed: `{inner}` of the tuned model or of the baseline is missing "
            "(no baseline ran, or no eval rows)"
        )
    if gate.metric in REVIEW_METRICS:
        return f"not computed: no reviewed rows for {where} (`sftc review RUN`)"
    if gate.metric in TOKEN_METRICS:
        return f"not computed: no eval {gate.metric} for {where} (no eval rows, or no eval pass ran)"
    if gate.metric == "regex" and gate.pattern is None:
        return 'not computed: regex needs a pattern, e.g. regex("^\\\\{")'
    return (
        f"not computed: no generations for {where} "
        "(eval.generate is off, eval.samples is 0, or the source has no eval rows)"
    )


def judge(gates: Iterable[Any], values: Mapping[str, float], pending: Mapping[str, str] | None = None) -> list[Verdict]:
    """Each gate against its value (`values[gate_key(gate)]`). A gate whose key is in
    ``pending`` (review gates while rows remain unreviewed) fails with that reason, whatever
    its partial value."""
    verdicts = []
    pending = pending or {}
    for gate in gates:
        key = gate_key(gate)
        common = dict(
            gate=key,
            op=gate.op,
            threshold=float(gate.threshold),
            metric=gate.metric,
            source=gate.source,
            pattern=gate.pattern,
            task=getattr(gate, "task", None),
        )
        if gate.op not in _OPS:
            verdicts.append(
                Verdict(value=values.get(key), passed=False, reason=f"unknown comparison `{gate.op}`", **common)
            )
            continue
        if key in pending:
            verdicts.append(Verdict(value=values.get(key), passed=False, reason=pending[key], **common))
            continue
        value = values.get(key)
        if value is None:
            verdicts.append(Verdict(value=None, passed=False, reason=_why_missing(gate), **common))
            continue
        value = float(value)
        if math.isnan(value):
            verdicts.append(Verdict(value=value, passed=False, reason="value is NaN", **common))
            continue
        verdicts.append(Verdict(value=value, passed=bool(_OPS[gate.op](value, float(gate.threshold))), **common))
    return verdicts


def accepted(verdicts: Sequence[Verdict]) -> bool:
    """True when every gate passed (and vacuously with no gates)."""
    return all(v.passed for v in verdicts)
