"""Where the model fails, against how much data each topic has: the audit's coverage topics
(`runtime.audit.coverage`) joined with a run's eval answers, its baseline's and its reviews.

Each generated eval sample falls in the topic of its prompt (`Coverage.topic_of`, keyed by the
sample's one identity, `runtime.plan.sample_origin.sample_id`). Per topic: its training rows, its
eval samples, the score metric of the tuned answers and of the base model's (the same rows), the
gain, and the mean review score of the tuned answers. The score metric is the first generation
gate of the spec that grades answers (higher is better), else ROUGE-L: the gate the user chose is
what "fails" means. Samples whose row the audit did not read (the data changed since the run) are
counted, never guessed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from runtime.audit.coverage import Coverage
from runtime.evaluate import metrics as M
from runtime.plan.sample_origin import sample_id

__all__ = ["TopicScore", "TopicTable", "score_metric", "topic_table"]

GRADING = ("exact_match", "rouge_1", "rouge_2", "rouge_l", "bleu", "chrf", "json_valid", "json_match")
DEFAULT_METRIC = "rouge_l"

Reviews = Callable[[list[dict], list[dict] | None], tuple[float | None, int]]  # (mean review score, rows reviewed)


@dataclass(frozen=True)
class TopicScore:
    label: str
    train_rows: int
    eval_rows: int  # generated eval samples in the topic
    tuned: float | None  # the score metric over them; None without any
    base: float | None  # the base model's, on the same rows; None without a baseline
    review_score: float | None  # mean review score of the tuned answers; None when none is reviewed
    reviewed: int

    @property
    def gain(self) -> float | None:
        return None if self.tuned is None or self.base is None else self.tuned - self.base


@dataclass(frozen=True)
class TopicTable:
    metric: str
    topics: list[TopicScore]  # in the coverage's order: largest first
    unmatched: int  # eval samples of the run whose row the audit did not read
    method: str = ""  # how the topics were found (`Coverage.method`)

    @property
    def scored(self) -> list[TopicScore]:
        return [t for t in self.topics if t.tuned is not None]

    @property
    def weakest(self) -> TopicScore | None:
        """The lowest score; among equals, the one with less data."""
        scored = self.scored
        return min(scored, key=lambda t: (t.tuned, t.train_rows)) if scored else None

    @property
    def thinnest(self) -> TopicScore | None:
        """Among the topics the eval reaches, the one with the fewest training rows."""
        scored = self.scored
        return min(scored, key=lambda t: (t.train_rows, t.tuned)) if scored else None

    def verdict(self) -> str | None:
        """One sentence: the weakest topic, its data, and whether it is also the thinnest."""
        weakest, thinnest = self.weakest, self.thinnest
        if weakest is None or thinnest is None or len(self.scored) < 2:
            return None
        said = f"`{weakest.label}`: {weakest.train_rows:,} training rows, {self.metric} {weakest.tuned:.2f}, the lowest"
        if weakest is thinnest:
            return said + "; it is also the topic with the least data: add examples of it"
        return (
            said + f"; it is not the topic with the least data (`{thinnest.label}`, {thinnest.train_rows:,} rows, "
            f"{self.metric} {thinnest.tuned:.2f}): read its answers and fix its rows before adding more"
        )

    def to_dict(self) -> dict[str, Any]:
        weakest, thinnest = self.weakest, self.thinnest
        return {
            "metric": self.metric,
            "method": self.method,
            "topics": [{**asdict(t), "gain": t.gain} for t in self.topics],
            "unmatched": self.unmatched,
            "weakest": weakest.label if weakest else None,
            "thinnest": thinnest.label if thinnest else None,
            "verdict": self.verdict(),
        }


def score_metric(gates: Iterable[Any]) -> str:
    """The first gate's metric that grades answers (not `regex`, lengths or token metrics), else ROUGE-L."""
    return next((g.metric for g in gates if g.metric in GRADING), DEFAULT_METRIC)


def _score(metric: str, samples: Sequence[Mapping[str, Any]]) -> float | None:
    if not samples:
        return None
    preds = [str(s["generated"]) for s in samples]
    refs = [str(s["reference"]) for s in samples]
    return float(M.compute(metric, preds, refs, [int(s.get("tokens", 0)) for s in samples]))


def _id(sample: Mapping[str, Any]) -> str:
    return sample_id(str(sample["source"]), sample.get("file"), int(sample["line"]), sample.get("turn"))


def topic_table(
    coverage: Coverage,
    samples: Sequence[Mapping[str, Any]],
    base_samples: Sequence[Mapping[str, Any]] | None,
    metric: str,
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
        review_score, reviewed = (
            reviews(list(map(dict, mine)), list(map(dict, base)) or None) if reviews and mine else (None, 0)
        )
        rows.append(
            TopicScore(
                label=topic.label,
                train_rows=topic.size,
                eval_rows=len(mine),
                tuned=_score(metric, mine),
                base=_score(metric, base) if base_samples is not None and len(base) == len(mine) else None,
                review_score=review_score,
                reviewed=reviewed,
            )
        )
    return TopicTable(metric, rows, unmatched, coverage.method)


def run_reviews(run_dir: Any, fingerprints: Mapping[str, str]) -> Reviews:
    """A topic's review score from the run's review store (`runtime.review.summary`: only current
    judgements of the answers shown, on the data they were made about)."""
    from pathlib import Path

    from runtime.review.summary import review_summary

    def reviews(samples: list[dict], base: list[dict] | None) -> tuple[float | None, int]:
        summary = review_summary(Path(run_dir), samples, base, dict(fingerprints))
        return summary.values.get("review_score"), summary.reviewed

    return reviews
