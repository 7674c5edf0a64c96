"""What the reviewers said about a run, as numbers the gates can hold: `review_summary`.

Only *current, valid* judgements count: the latest judgement per (row, answer, reviewer)
among those whose ``answer_sha`` is the SHA-256 of the answer text in the report and
whose ``data_fingerprint`` is the row's source fingerprint (a judgement about other text
or other data says nothing about this run).

A row is *reviewed* when at least one reviewer has a current valid score of its tuned
answer. Over reviewed rows only (what to do about the rest is the gate's decision):

* ``review_score``   mean over rows of the mean of the reviewers' scores of the tuned answer;
* ``review_flagged`` share of rows where any reviewer's current judgement flags the tuned answer;
* ``review_wins``    share of rows, among the reviewed rows where at least one reviewer scored
  both answers, where the tuned answer's score beats the base answer's (each averaged over
  the reviewers who scored both); a tie does not beat. Needs the run's baseline answers.

and the same per source as ``review_score(faq)`` etc. A key with no row to compute it on
is left out.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean
from typing import Any

from runtime.review.store import Judgement, ReviewStore, answer_sha, current_of, row_ids

__all__ = ["ReviewSummary", "review_summary", "valid_current"]

METRICS = ("review_score", "review_flagged", "review_wins")


@dataclass(frozen=True)
class ReviewSummary:
    total: int  # eval rows
    reviewed: int  # rows whose tuned answer has at least one current valid score
    remaining_by_source: dict[str, int]  # unreviewed rows per source (every source of the samples)
    values: dict[str, float]  # review_score, review_flagged, review_wins, and `name(source)` per source


def _base_by_row(
    samples: Sequence[Mapping[str, Any]], base_samples: Sequence[Mapping[str, Any]] | None, ids: Sequence[str]
) -> dict[str, Mapping[str, Any]]:
    """The base sample of each row id (matched by `runtime.plan.sample_origin.sample_key`, so a baseline
    in another order still lines up; a row the baseline lacks has none)."""
    from runtime.plan.sample_origin import sample_key

    if not base_samples:
        return {}
    by_place = {sample_key(b): b for b in base_samples}
    out = {}
    for rid, s in zip(ids, samples):
        b = by_place.get(sample_key(s))
        if b is not None:
            out[rid] = b
    return out


def valid_current(
    judgements: Sequence[Judgement],
    samples: Sequence[Mapping[str, Any]],
    base_samples: Sequence[Mapping[str, Any]] | None,
    fingerprints: Mapping[str, str],
) -> dict[str, dict[str, dict[str, Judgement]]]:
    """row id -> answer -> reviewer -> the current judgement, keeping only judgements about
    the answer text of ``samples`` / ``base_samples`` and the data of ``fingerprints``."""
    ids = row_ids(samples)
    base = _base_by_row(samples, base_samples, ids)
    expected: dict[tuple[str, str], tuple[str, str]] = {}
    for rid, s in zip(ids, samples):
        fingerprint = fingerprints.get(s["source"], "")
        expected[(rid, "tuned")] = (answer_sha(s["generated"]), fingerprint)
        if rid in base:
            expected[(rid, "base")] = (answer_sha(base[rid]["generated"]), fingerprint)
    valid = [j for j in judgements if expected.get((j.row_id, j.answer)) == (j.answer_sha, j.data_fingerprint)]
    out: dict[str, dict[str, dict[str, Judgement]]] = defaultdict(lambda: defaultdict(dict))
    for j in current_of(valid):
        out[j.row_id][j.answer][j.reviewer] = j
    return out


def _values(rows: list[dict[str, dict[str, Judgement]]], suffix: str, values: dict[str, float]) -> None:
    scores, flagged, wins = [], [], []
    for answers in rows:
        tuned, base = answers.get("tuned", {}), answers.get("base", {})
        scores.append(fmean(j.score for j in tuned.values() if j.score is not None))
        flagged.append(float(any(j.flagged for j in tuned.values())))
        both = [r for r, j in tuned.items() if j.score is not None and r in base and base[r].score is not None]
        if both:
            wins.append(float(fmean(tuned[r].score for r in both) > fmean(base[r].score for r in both)))
    for name, column in zip(METRICS, (scores, flagged, wins)):
        if column:
            values[name + suffix] = fmean(column)


def review_summary(
    run_dir: Path, samples: list[dict], base_samples: list[dict] | None, fingerprints: dict[str, str]
) -> ReviewSummary:
    """The review state of a run's eval rows (see the module docstring). Reads
    `run_dir/reviews.sqlite` when there is one; never creates or writes it."""
    store = ReviewStore(run_dir, create=False)
    judgements = store.history() if store.exists else []
    current = valid_current(judgements, samples, base_samples, fingerprints)
    ids = row_ids(samples)
    remaining: dict[str, int] = {}
    reviewed: dict[str, list[dict[str, dict[str, Judgement]]]] = defaultdict(list)
    for rid, s in zip(ids, samples):
        answers = current.get(rid, {})
        remaining.setdefault(s["source"], 0)
        if any(j.score is not None for j in answers.get("tuned", {}).values()):
            reviewed[s["source"]].append(answers)
        else:
            remaining[s["source"]] += 1
    values: dict[str, float] = {}
    _values([a for rows in reviewed.values() for a in rows], "", values)
    for source in remaining:
        _values(reviewed.get(source, []), f"({source})", values)
    return ReviewSummary(
        total=len(samples),
        reviewed=sum(len(r) for r in reviewed.values()),
        remaining_by_source=remaining,
        values=values,
    )
