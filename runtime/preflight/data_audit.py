"""The spec acting on the audit (`runtime.audit`) before the first step.

- `dedup = exact | near(T)` of a source: `copies_to_drop` names the copies among its train
  examples (`runtime.audit.near_copies.find_copies` on the examples as training renders them);
  the data pipeline drops them and counts them. Only train examples: eval rows are never dropped.
- Data gates in `accept` (`leakage == 0`, `duplicates <= 1%`, `conflicts == 0`, `suspects`):
  `audit_data` audits every kept example (after `dedup`) and gives each gate its value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime.audit.audit_report import Audit, AuditSettings, audit
from runtime.audit.audited_example import AuditedExample
from runtime.audit.near_copies import find_copies
from runtime.audit.read_examples import audited, read_examples
from runtime.plan.data_plan import SourceSpec
from runtime.plan.run_plan import GatePlan

KINDS_OF = {  # the data gates (`sftlang.schema`'s data metrics) and the findings each counts
    "leakage": ("leak",),
    "duplicates": ("duplicate", "near_duplicate"),
    "conflicts": ("conflict",),
    "suspects": ("suspect",),
}


def copies_to_drop(pipeline: Any, spec: SourceSpec, train: np.ndarray) -> np.ndarray:
    """The train example ids (of ``train``, one source's) that copy an earlier one: every one
    but the first of each group of exact copies, and with `near(T)` of each group of near copies."""
    dedup = spec.dedup
    if dedup is None or len(train) < 2:
        return np.zeros(0, np.int64)
    examples = audited(pipeline.tokenizer, [pipeline.example(int(g)) for g in train])
    threshold = float(dedup.threshold) if dedup.kind == "near" and dedup.threshold is not None else 1.0
    copies = find_copies(examples, threshold)
    groups = list(copies.duplicates) + (list(copies.near_duplicates) if dedup.kind == "near" else [])
    rows = sorted({row for group in groups for row in group.rows[1:]})
    return np.asarray(train, np.int64)[np.asarray(rows, np.int64)] if rows else np.zeros(0, np.int64)


@dataclass(frozen=True)
class DataAudit:
    """The audit behind the data gates: its findings, the examples they name, each gate's value."""

    audit: Audit
    examples: list[AuditedExample]
    values: dict[str, float]  # by the gate's text: `leakage`, `duplicates(faq)`

    def findings_for(self, metrics: Sequence[str]) -> Audit:
        """The audit with only the findings these metrics count (what a failing gate is about)."""
        import dataclasses

        kinds = {k for m in metrics for k in KINDS_OF.get(m, ())}
        return dataclasses.replace(self.audit, findings=[f for f in self.audit.findings if f.kind in kinds])


def gate_text(gate: GatePlan) -> str:
    """The key of a gate's value: its text as written (`conflicts(faq)`)."""
    return gate.text or (f"{gate.metric}({gate.source})" if gate.source else gate.metric)


def audit_data(pipeline: Any, gates: Sequence[GatePlan]) -> DataAudit:
    """Audit every kept example (train and eval, after `dedup`; no coverage) and give each data
    gate its value: `leakage` eval rows with a copy in training, `duplicates` the share of
    training rows that copy an earlier one, `conflicts` groups of training rows taught different
    answers, `suspects` suspect rows. With a source, `leakage(faq)` counts faq's eval rows,
    `duplicates(faq)` the copies among faq's training rows, the others the findings naming faq."""
    examples = read_examples(pipeline)
    result = audit(examples, AuditSettings(coverage=False))
    source_of = {e.id: e.source for e in examples}
    train = [e.source for e in examples if e.split == "train"]
    values = {}
    for gate in gates:
        values[gate_text(gate)] = _value(result, gate.metric, gate.source, source_of, train)
    return DataAudit(result, examples, values)


def _value(result: Audit, metric: str, source: str | None, source_of: dict[str, str], train: list[str]) -> float:
    def mine(ids: Sequence[str]) -> list[str]:
        return [i for i in ids if source is None or source_of.get(i) == source]

    if metric == "leakage":
        return float(sum(1 for f in result.of("leak") if mine(f.ids[:1])))
    if metric == "duplicates":
        copies = sum(len(mine(f.ids[1:])) for kind in KINDS_OF["duplicates"] for f in result.of(kind))
        rows = sum(1 for s in train if source is None or s == source)
        return copies / rows if rows else 0.0
    if metric in ("conflicts", "suspects"):
        return float(sum(1 for f in result.of(KINDS_OF[metric][0]) if mine(f.ids)))
    raise ValueError(f"`{metric}` is not a data metric ({', '.join(KINDS_OF)})")
