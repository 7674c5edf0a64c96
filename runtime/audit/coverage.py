"""Which topics the training prompts cover, and how thinly: the prompts grouped with TF-IDF and
k-means (scikit-learn), each group with its size, its top terms as a label and a few example
prompts. Every example, train and eval, is given the topic it falls in (an eval prompt: the
nearest group's centre), so eval results can be read per topic. Deterministic: a fixed random_state."""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from runtime.audit.audited_example import AuditedExample

MAX_TOPICS = 20
EXAMPLES_PER_TOPIC = 3
TERMS_PER_TOPIC = 5
MINIBATCH_FROM = 20_000  # rows from which MiniBatchKMeans replaces KMeans


@dataclass(frozen=True)
class Topic:
    label: str  # its top terms, joined
    terms: tuple[str, ...]
    size: int
    example_ids: tuple[str, ...]  # the prompts nearest the group's centre
    sources: dict[str, int] = field(default_factory=dict)  # rows per source


@dataclass(frozen=True)
class Coverage:
    method: str  # how the prompts were grouped, and why
    k: int
    topics: list[Topic]
    topic_of: dict[str, int] = field(default_factory=dict)  # example id (train and eval) -> index in `topics`


def topic_count(n: int) -> int:
    """About sqrt(n / 2) topics, between 2 and 20."""
    return max(2, min(MAX_TOPICS, round(math.sqrt(n / 2))))


def coverage(examples: Sequence[AuditedExample], k: int | None = None, seed: int = 0) -> Coverage:
    """Topics of the training prompts. TF-IDF leaves out English stop words and terms in more than
    half the prompts (the template); the groups are sorted largest first."""
    from sklearn.cluster import KMeans, MiniBatchKMeans
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.feature_extraction.text import TfidfVectorizer

    train = [e for e in examples if e.split == "train"]
    distinct = len({e.prompt for e in train})
    why = (
        "TF-IDF over the training prompts with k-means (scikit-learn): no model is needed, it is "
        "deterministic, and cheap (mini-batch k-means beyond 20k prompts); words, not meaning, decide the groups"
    )
    if distinct < 4:
        return Coverage(f"none: {distinct} distinct training prompts are too few to group", 0, [])
    k = min(k or topic_count(len(train)), distinct)
    vectorizer = TfidfVectorizer(
        stop_words="english", max_df=0.5, min_df=2 if len(train) >= 1000 else 1, sublinear_tf=True, max_features=50_000
    )
    try:
        matrix = vectorizer.fit_transform([e.prompt for e in train])
    except ValueError:  # nothing left once the template and stop words are out
        return Coverage("none: the prompts share all their words (only the template varies)", 0, [])
    if len(train) >= MINIBATCH_FROM:
        model = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=3, batch_size=4096)
        method = why + f"; MiniBatchKMeans for {len(train)} rows"
    else:
        model = KMeans(n_clusters=k, random_state=seed, n_init=10)
        method = why
    with warnings.catch_warnings():  # prompts alike in their words make fewer groups: the empty ones are left out
        warnings.simplefilter("ignore", ConvergenceWarning)
        labels = model.fit_predict(matrix)
    terms = vectorizer.get_feature_names_out()
    distances = model.transform(matrix)
    found = []  # (topic, its cluster)
    for c in range(k):
        members = np.flatnonzero(labels == c)
        if not len(members):
            continue
        top = tuple(str(terms[t]) for t in np.argsort(-model.cluster_centers_[c])[:TERMS_PER_TOPIC])
        nearest = members[np.argsort(distances[members, c], kind="stable")[:EXAMPLES_PER_TOPIC]]
        sources = Counter(train[i].source for i in members)
        topic = Topic(
            ", ".join(top), top, len(members), tuple(train[i].id for i in nearest), dict(sorted(sources.items()))
        )
        found.append((topic, c))
    found.sort(key=lambda tc: (-tc[0].size, tc[0].label))
    index_of = {c: i for i, (_, c) in enumerate(found)}
    topic_of = {e.id: index_of[int(c)] for e, c in zip(train, labels, strict=True)}
    held_out = [e for e in examples if e.split != "train"]
    if held_out:  # an eval prompt belongs to the nearest centre of a topic (mini-batch k-means may leave one empty)
        kept = np.asarray([c for _, c in found])
        nearest_kept = model.transform(vectorizer.transform([e.prompt for e in held_out]))[:, kept].argmin(axis=1)
        for e, i in zip(held_out, nearest_kept, strict=True):
            topic_of[e.id] = int(i)
    return Coverage(method, k, [t for t, _ in found], topic_of)
