"""The whole audit: every finding (which rows, what is wrong, what to do), the coverage of topics,
and counts per source; `audit(examples, settings)` runs all the checks."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from runtime.audit.audited_example import AuditedExample
from runtime.audit.coverage import Coverage, coverage
from runtime.audit.near_copies import find_copies
from runtime.audit.suspect_rows import MIN_ROWS, find_suspects

KINDS = ("duplicate", "near_duplicate", "leak", "conflict", "suspect")


@dataclass(frozen=True)
class Finding:
    """``kind``: one of `KINDS`; ``what``: "exact" or "near" for copies and conflicts ("prompt"
    for an eval row whose prompt alone is trained, with another answer), and for
    suspect rows one of `runtime.audit.suspect_rows.WHAT` ("empty_answer", "truncated", …).
    ``source``: the source of the first row (the one that stays, or the eval row that leaks);
    ``ids`` and ``wheres``: every row involved, in the order of the examples."""

    kind: str
    what: str
    source: str
    ids: tuple[str, ...]
    wheres: tuple[str, ...]
    message: str
    help: str

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ids"], d["wheres"] = list(self.ids), list(self.wheres)
        return d


@dataclass(frozen=True)
class AuditSettings:
    near_threshold: float = 0.9  # Jaccard similarity of 5-character shingles
    num_perm: int = 64  # MinHash permutations
    topics: int | None = None  # k of the coverage; None: about sqrt(n / 2), 2 to 20
    min_rows: int = MIN_ROWS  # length and language outliers only in sources with this many rows
    coverage: bool = True


@dataclass(frozen=True)
class Audit:
    findings: list[Finding]
    coverage: Coverage | None
    counts: dict[str, dict[str, int]]  # source -> {"examples", "train", "eval", each kind} (and "all")
    settings: AuditSettings
    method: str  # how copies were found

    def of(self, kind: str, what: str | None = None) -> list[Finding]:
        return [f for f in self.findings if f.kind == kind and (what is None or f.what == what)]

    def to_dict(self) -> dict[str, Any]:
        cov = None
        if self.coverage is not None:
            cov = {
                "method": self.coverage.method,
                "k": self.coverage.k,
                "topics": [
                    {
                        "label": t.label,
                        "terms": list(t.terms),
                        "size": t.size,
                        "example_ids": list(t.example_ids),
                        "sources": dict(t.sources),
                    }
                    for t in self.coverage.topics
                ],
            }
        return {
            "settings": asdict(self.settings),
            "method": self.method,
            "counts": {s: dict(c) for s, c in self.counts.items()},
            "findings": [f.to_dict() for f in self.findings],
            "coverage": cov,
        }


def _rows(examples: Sequence[AuditedExample], rows: Sequence[int]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return tuple(examples[i].id for i in rows), tuple(examples[i].where for i in rows)


def _finding(examples, kind, what, rows, message, help) -> Finding:
    ids, wheres = _rows(examples, rows)
    return Finding(kind, what, examples[rows[0]].source, ids, wheres, message, help)


SUSPECT_HELP = {
    "empty_answer": "fill in the answer or drop the row: it teaches the model to stop at once",
    "answer_is_prompt": "write the real answer or drop the row: it teaches the model to echo its input",
    "too_long": "check the row (pasted logs, a whole document?): split it, shorten it or drop it",
    "too_short": "check the row: a fragment or a cut-off answer teaches little",
    "truncated": "raise seq_len or shorten the row: the tail of the answer is never trained",
    "personal_data": "remove or mask the personal data (or drop the row) before training on it",
    "language": "translate or drop the row, or give it its own source if the language is intended",
}


def prompt_leaks(examples: Sequence[AuditedExample], leaked: set[int]) -> list[tuple[int, list[int]]]:
    """Eval rows (not in ``leaked``, the copies already found) whose exact prompt is a training
    row's: the model is taught that prompt, so its eval measures recall, not generalization.
    Prompts are matched by hash, then compared; an empty prompt (text rows) matches nothing."""
    train: dict[int, list[int]] = {}
    for i, e in enumerate(examples):
        if e.split == "train" and e.prompt.strip():
            train.setdefault(hash(e.prompt), []).append(i)
    found = []
    for i, e in enumerate(examples):
        if e.split != "train" and i not in leaked and e.prompt.strip():
            rows = [t for t in train.get(hash(e.prompt), ()) if examples[t].prompt == e.prompt]
            if rows:
                found.append((i, rows))
    return found


def audit(examples: Sequence[AuditedExample], settings: AuditSettings | None = None) -> Audit:
    """Every check over the examples as training renders them; findings in a stable order (by kind,
    then by the first row)."""
    settings = settings or AuditSettings()
    copies = find_copies(examples, settings.near_threshold, settings.num_perm)
    ordered: list[tuple[int, int, Finding]] = []

    def add(kind: str, what: str, rows: Sequence[int], message: str, help: str) -> None:
        ordered.append((KINDS.index(kind), rows[0], _finding(examples, kind, what, rows, message, help)))

    for g in copies.duplicates:
        n = len(g.rows) - 1
        add(
            "duplicate",
            "exact",
            g.rows,
            f"{len(g.rows)} training rows have the same text; {n} {'copy' if n == 1 else 'copies'} of the first",
            "keep the first and remove the copies from the data, or vary them: a copy weighs the row twice",
        )
    for g in copies.near_duplicates:
        add(
            "near_duplicate",
            "near",
            g.rows,
            f"{len(g.rows)} training rows are near copies (similarity ≥ {g.similarity:.2f})",
            "keep the first and remove or rewrite the others",
        )
    for leak in copies.leaks:
        rows = (leak.eval_row, *leak.train_rows)
        how = "an exact copy" if leak.exact else f"a near copy (similarity ≥ {leak.similarity:.2f})"
        add(
            "leak",
            "exact" if leak.exact else "near",
            rows,
            f"the eval row is {how} of {len(leak.train_rows)} training row{'s' * (len(leak.train_rows) > 1)}",
            "drop the eval row or the training rows: a leaked eval row inflates every metric and gate",
        )
    leaked = {leak.eval_row for leak in copies.leaks}
    for eval_row, train_rows in prompt_leaks(examples, leaked):
        rows = (eval_row, *train_rows)
        n = len(train_rows)
        add(
            "leak",
            "prompt",
            rows,
            f"the eval row's prompt is trained, with another answer, in {n} training row{'s' * (n > 1)}",
            "evaluate on rows the model is not trained on: move the row out of the eval split or drop the "
            "training rows (a review correction of an eval row, added as data, is this)",
        )
    for c in copies.conflicts:
        same = "the same prompt" if c.exact else "nearly the same prompt"
        add(
            "conflict",
            "exact" if c.exact else "near",
            c.rows,
            f"{len(c.rows)} training rows have {same} and {c.answers} different answers",
            "decide which answer is right and fix or drop the others: the model is taught both",
        )
    for s in find_suspects(examples, settings.min_rows):
        add("suspect", s.what, (s.row,), s.detail, SUSPECT_HELP[s.what])
    ordered.sort(key=lambda x: (x[0], x[1], x[2].what))
    findings = [f for _, _, f in ordered]

    counts: dict[str, Counter] = {}
    for e in examples:
        c = counts.setdefault(e.source, Counter())
        c["examples"] += 1
        c[e.split] += 1
    by_id = {e.id: e.source for e in examples}
    total: Counter = Counter(examples=len(examples))
    for f in findings:
        for source in dict.fromkeys(by_id[i] for i in f.ids):
            counts[source][f.kind] += 1
        total[f.kind] += 1
    keys = ("examples", "train", "eval", *KINDS)
    table = {s: {k: counts[s][k] for k in keys} for s in sorted(counts)}
    table["all"] = {k: total[k] if k in total or k in KINDS else 0 for k in keys}
    table["all"]["train"] = sum(c["train"] for c in counts.values())
    table["all"]["eval"] = sum(c["eval"] for c in counts.values())
    cov = coverage(examples, settings.topics) if settings.coverage else None
    return Audit(findings, cov, table, settings, copies.method)
