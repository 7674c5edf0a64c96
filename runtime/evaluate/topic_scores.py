"""Where the model fails, against how much data each topic has: the audit's coverage topics
(`runtime.audit.coverage`) joined with a run's eval answers, its baseline's and its reviews.

Each generated eval sample falls in the topic of its prompt (`Coverage.topic_of`, keyed by the
sample's one identity, `runtime.plan.sample_origin.sample_id`). Per topic: its training rows, its
eval samples, each score metric over the tuned answers and over the base model's (the same rows),
and the mean review score of the tuned answers. The score metrics are those the spec's gates grade
answers with (higher is better; `gain(m)` counts as `m`), in gate order, else ROUGE-L: the gates
the user chose say what "fails" means. The weakest topic is judged on the first of them that tells
the topics apart (a metric every topic saturates says nothing). Samples whose row the audit did
not read (the data changed since the run) are counted, never guessed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from runtime.audit.coverage import Coverage
from runtime.evaluate import metrics as M
from runtime.plan.sample_origin import sample_id

__all__ = ["TopicScore", "TopicTable", "run_reviews", "score_metrics", "topic_table"]

GRADING = ("exact_match", "rouge_1", "rouge_2", "rouge_l", "bleu", "chrf", "json_valid", "json_match")
DEFAULT_METRIC = "rouge_l"

Reviews = Callable[[list[dict], list[dict] | None], tuple[float | None, int]]  # (mean review score, rows reviewed)


@dataclass(frozen=True)
class TopicScore:
    label: str
    train_rows: int
    eval_rows: int  # generated eval samples in the topic
    tuned: dict[str, float]  # score metric -> its value over them; empty without any
    base: dict[str, float]  # the base model's, on the same rows; empty without a baseline
    review_score: float | None  # mean review score of the tuned answers; None when none is reviewed
    reviewed: int

    def gain(self, metric: str) -> float | None:
        if metric not in self.tuned or metric not in self.base:
            return None
        return self.tuned[metric] - self.base[metric]


@dataclass(frozen=True)
class TopicTable:
    metrics: list[str]  # the score metrics, in the order of the gates that name them
    topics: list[TopicScore]  # in the coverage's order: largest first
    unmatched: int  # eval samples of the run whose row the audit did not read
    method: str = ""  # how the topics were found (`Coverage.method`)

    @property
    def scored(self) -> list[TopicScore]:
        return [t for t in self.topics if t.tuned]

    @property
    def metric(self) -> str:
        """The metric the weakest topic is judged on: the first that tells the topics apart."""
        return next((m for m in self.metrics if len({t.tuned[m] for t in self.scored}) > 1), self.metrics[0])

    @property
    def weakest(self) -> TopicScore | None:
        """The lowest score; among equals, the one with less data. None when every topic scores the same."""
        scored, metric = self.scored, self.metric
        if len({t.tuned[metric] for t in scored}) < 2:
            return None
        return min(scored, key=lambda t: (t.tuned[metric], t.train_rows))

    @property
    def thinnest(self) -> TopicScore | None:
        """Among the topics the eval reaches, the one with the fewest training rows."""
        scored, metric = self.scored, self.metric
        return min(scored, key=lambda t: (t.train_rows, t.tuned[metric])) if scored else None

    def verdict(self) -> str | None:
        """One sentence: the weakest topic, its data, and whether it is also the thinnest."""
        scored, metric = self.scored, self.metric
        if len(scored) < 2:
            return None
        weakest, thinnest = self.weakest, self.thinnest
        if weakest is None or thinnest is None:
            value = scored[0].tuned[metric]
            return f"every topic scores {metric} {value:.2f}: none is weaker than the others"
        said = (
            f"`{weakest.label}`: {weakest.train_rows:,} training rows, {metric} {weakest.tuned[metric]:.2f}, the lowest"
        )
        if weakest is thinnest:
            return said + "; it is also the topic with the least data: add examples of it"
        return (
            said + f"; it is not the topic with the least data (`{thinnest.label}`, {thinnest.train_rows:,} rows, "
            f"{metric} {thinnest.tuned[metric]:.2f}): read its answers and fix its rows before adding more"
        )

    def to_dict(self) -> dict[str, Any]:
        weakest, thinnest = self.weakest, self.thinnest
        return {
            "metrics": list(self.metrics),
            "metric": self.metric,
            "method": self.method,
            "topics": [
                {
                    "label": t.label,
                    "train_rows": t.train_rows,
                    "eval_rows": t.eval_rows,
                    "tuned": dict(t.tuned),
                    "base": dict(t.base),
                    "gain": {m: t.gain(m) for m in t.tuned if t.gain(m) is not None},
                    "review_score": t.review_score,
                    "reviewed": t.reviewed,
                }
                for t in self.topics
            ],
            "unmatched": self.unmatched,
            "weakest": weakest.label if weakest else None,
            "thinnest": thinnest.label if thinnest else None,
            "verdict": self.verdict(),
        }


def score_metrics(gates: Iterable[Any]) -> list[str]:
    """The metrics the gates grade answers with (not `regex`, lengths or token metrics), in gate
    order, each once; ROUGE-L when none does."""
    named = [g.metric for g in gates if g.metric in GRADING]
    return list(dict.fromkeys(named)) or [DEFAULT_METRIC]


def _scores(metrics: Sequence[str], samples: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    if not samples:
        return {}
    preds = [str(s["generated"]) for s in samples]
    refs = [str(s["reference"]) for s in samples]
    counts = [int(s.get("tokens", 0)) for s in samples]
    return {m: float(M.compute(m, preds, refs, counts)) for m in metrics}


def _id(sample: Mapping[str, Any]) -> str:
    return sample_id(str(sample["source"]), sample.get("file"), int(sample["line"]), sample.get("turn"))


def topic_table(
    coverage: Coverage,
    samples: Sequence[Mapping[str, Any]],
    base_samples: Sequence[Mapping[str, Any]] | None,
    metrics: Sequence[str],
    reviews: Reviews | None = None,
) -> TopicTable:
    """Each topic's scores. ``samples`` and ``base_samples`` are report.json's sample dicts (the
    baseline's matched to the tuned ones by identity); ``reviews`` gives the review score of a
    topic's samples (`runtime.review.summary` over the run's store), None: no reviews."""
    base_of = {_id(b): b for b in base_samples or ()}
    members: list[list[Mapping[str, Any]]] = [[] for _ in coverage.topics]
    unmatched = 0
    for s in samples:
        topic = coverage.topic_of.get(_id(s))
        if topic is None:
            unmatched += 1
        else:
            members[topic].append(s)
    rows = []
    for topic, mine in zip(coverage.topics, members, strict=True):
        base = [base_of[_id(s)] for s in mine if _id(s) in base_of]
        review_score, reviewed = (None, 0)
        if reviews is not None and mine:
            review_score, reviewed = reviews([dict(s) for s in mine], [dict(b) for b in base] or None)
        rows.append(
            TopicScore(
                label=topic.label,
                train_rows=topic.size,
                eval_rows=len(mine),
                tuned=_scores(metrics, mine),
                base=_scores(metrics, base) if len(base) == len(mine) else {},
                review_score=review_score,
                reviewed=reviewed,
            )
        )
    return TopicTable(list(metrics), rows, unmatched, coverage.method)


def run_reviews(run_dir: Any, fingerprints: Mapping[str, str]) -> Reviews:
    """A topic's review score from the run's review store (`runtime.review.summary`: only current
    judgements of the answers shown, on the data they were made about)."""
    from pathlib import Path

    from runtime.review.summary import review_summary

    def reviews(samples: list[dict], base: list[dict] | None) -> tuple[float | None, int]:
        summary = review_summary(Path(run_dir), samples, base, dict(fingerprints))
        return summary.values.get("review_score"), summary.reviewed

    return reviews
