"""Copies in the data: exact and near duplicates among training examples, eval examples that copy
a training example (leakage), and the same or nearly the same prompt taught with different answers
(conflicts).

Exact means the same text once whitespace is collapsed (case kept). Near means a Jaccard
similarity of at least ``threshold`` between the sets of 5-character shingles of the lowercased,
whitespace-collapsed text: MinHash signatures (`datasketch.MinHash`) find candidate pairs through
an LSH index (`datasketch.MinHashLSH`), and every candidate is confirmed with the exact Jaccard of
its two shingle sets, so a reported pair really is at or above the threshold.

Why 5-character shingles and not 3-word ones: at a threshold of 0.9 a single edited word in a
40-word text already takes word 3-shingles to about 0.85 (three shingles lost, three gained), so
word shingles would only find copies of long texts; character shingles degrade by about one
shingle per edited character and so measure "a few words edited", and they work the same for
short texts and for scripts written without spaces (Chinese, Japanese).

Shingles shared by more than half of a source's texts (the rendered template, a long system
prompt) say nothing about a row's content: they are left out of the sets of that source's rows,
or every row of a source with a long system prompt would be a near copy of every other.

The LSH bands are chosen for recall, not balance: a pair exactly at the threshold becomes a
candidate with probability ≥ 0.99; the confirmation removes the extra candidates."""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from datasketch import MinHash, MinHashLSH

from runtime.audit.audited_example import AuditedExample

SHINGLE = 5  # characters
BOILERPLATE_SHARE = 0.5  # a shingle in more than this share of a source's texts is template, not content
BOILERPLATE_MIN_TEXTS = 20  # ... judged only for sources with at least this many distinct texts
BOILERPLATE_SAMPLE = 20_000  # distinct texts per source that estimate the share
MAX_ANSWERS_COMPARED = 50  # a prompt with more distinct answers than this conflicts without comparing them all

METHOD = (
    "exact: the same text with whitespace collapsed; near: Jaccard similarity of 5-character shingles "
    "(lowercased, template shingles shared by over half of a source left out) at or above the threshold, "
    "candidates from MinHash LSH (datasketch), each confirmed with the exact Jaccard of its shingle sets"
)


@dataclass(frozen=True)
class CopyGroup:
    """Training examples that are copies of one another: ``rows`` index the examples, the first
    is the one that stays. ``similarity``: the lowest confirmed Jaccard of the links that joined
    the group (1.0 for exact copies)."""

    rows: tuple[int, ...]
    exact: bool
    similarity: float


@dataclass(frozen=True)
class Leak:
    """An eval example (``eval_row``) with an exact or near copy among the training examples."""

    eval_row: int
    train_rows: tuple[int, ...]
    exact: bool
    similarity: float


@dataclass(frozen=True)
class Conflict:
    """Training examples with the same (``exact``) or nearly the same prompt and different
    answers; ``answers``: how many different answers."""

    rows: tuple[int, ...]
    exact: bool
    answers: int


@dataclass(frozen=True)
class Copies:
    duplicates: list[CopyGroup]
    near_duplicates: list[CopyGroup]
    leaks: list[Leak]
    conflicts: list[Conflict]
    threshold: float
    method: str = METHOD


def normalized(text: str) -> str:
    """Whitespace collapsed, case kept: what "the same text" means for exact copies."""
    return " ".join(text.split())


def shingles(text: str) -> np.ndarray:
    """The sorted, distinct 32-bit hashes of the 5-character shingles of the lowercased,
    whitespace-collapsed text (a text shorter than a shingle is one shingle; an empty one none).
    A polynomial hash over the code points, computed with numpy: stable across processes."""
    s = " ".join(text.lower().split())
    if not s:
        return np.zeros(0, dtype=np.uint32)
    points = np.frombuffer(s.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    width = min(SHINGLE, len(points))
    count = len(points) - width + 1
    h = np.zeros(count, dtype=np.uint64)
    for j in range(width):
        h = h * np.uint64(1_000_003) + points[j : j + count] + np.uint64(1)
    folded = ((h ^ (h >> np.uint64(29))) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(32)
    return np.unique(folded.astype(np.uint32))


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Jaccard similarity of two sorted distinct hash arrays."""
    if len(a) == 0 and len(b) == 0:
        return 1.0
    common = len(np.intersect1d(a, b, assume_unique=True))
    return common / (len(a) + len(b) - common)


def lsh_bands(threshold: float, num_perm: int, recall: float = 0.99) -> tuple[int, int]:
    """(bands, rows per band) with the fewest bands for which a pair at ``threshold`` becomes a
    candidate with probability ≥ ``recall``: the widest bands that still find it, so that as few
    dissimilar pairs as possible need confirming."""
    for r in range(num_perm // 2, 0, -1):
        b = num_perm // r
        if b >= 2 and 1 - (1 - threshold**r) ** b >= recall:
            return b, r
    return num_perm // 2, 2 if num_perm >= 4 else 1


def _identity(value):
    return value


def _band_key(data: bytes) -> bytes:
    """Bands stored as 8-byte digests: a smaller index for a million rows."""
    return hashlib.blake2b(data, digest_size=8).digest()


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, x: int) -> int:
        parent = self.parent
        root = x
        while parent.get(root, root) != root:
            root = parent[root]
        while parent.get(x, x) != root:
            parent[x], x = root, parent[x]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)  # the earliest row is the root

    def groups(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = defaultdict(list)
        for x in list(self.parent):
            out[self.find(x)].append(x)
        for root, members in out.items():
            if root not in members:
                members.append(root)
            members.sort()
        return out


class _ShingleSets:
    """The shingle set of each text, less its source's boilerplate; computed on demand (nothing
    kept per row, so memory stays bounded by the index)."""

    def __init__(self, texts: Sequence[str], sources: Sequence[str], indices: Iterable[int]) -> None:
        self.texts, self.sources = texts, sources
        by_source: dict[str, list[int]] = defaultdict(list)
        for i in indices:
            by_source[sources[i]].append(i)
        self.boilerplate: dict[str, np.ndarray] = {}
        for source, rows in by_source.items():
            if len(rows) < BOILERPLATE_MIN_TEXTS:
                continue
            sample = rows if len(rows) <= BOILERPLATE_SAMPLE else random.Random(0).sample(rows, BOILERPLATE_SAMPLE)
            values, counts = np.unique(np.concatenate([shingles(texts[i]) for i in sample]), return_counts=True)
            common = values[counts > BOILERPLATE_SHARE * len(sample)]
            if len(common):
                self.boilerplate[source] = common

    def __call__(self, i: int) -> np.ndarray:
        full = shingles(self.texts[i])
        common = self.boilerplate.get(self.sources[i])
        if common is None:
            return full
        content = np.setdiff1d(full, common, assume_unique=True)
        return content if len(content) else full  # all template: compare the whole text


class _NearIndex:
    """MinHash LSH over shingle sets, confirming candidates with the exact Jaccard."""

    def __init__(self, sets: Callable[[int], np.ndarray], threshold: float, num_perm: int) -> None:
        self.sets, self.threshold = sets, threshold
        self.template = MinHash(num_perm=num_perm, seed=1, hashfunc=_identity)
        self.lsh = MinHashLSH(num_perm=num_perm, params=lsh_bands(threshold, num_perm), hashfunc=_band_key)

    def minhash(self, values: np.ndarray) -> MinHash:
        m = self.template.copy()
        if len(values):
            m.update_batch(values)
        return m

    def matches(self, i: int, values: np.ndarray, m: MinHash) -> list[tuple[int, float]]:
        """Indexed rows whose exact Jaccard with row ``i`` is at least the threshold."""
        found = []
        for j in self.lsh.query(m):
            similarity = jaccard(values, self.sets(j))
            if similarity >= self.threshold:
                found.append((j, similarity))
        return sorted(found)

    def add_and_link(self, rows: Iterable[int], union: _UnionFind, weakest: dict[int, float]) -> None:
        """Index each row after linking it to the indexed rows it nearly copies."""
        for i in rows:
            values = self.sets(i)
            m = self.minhash(values)
            for j, similarity in self.matches(i, values, m):
                union.union(i, j)
                weakest[i] = min(weakest.get(i, 1.0), similarity)
                weakest[j] = min(weakest.get(j, 1.0), similarity)
            self.lsh.insert(i, m, check_duplication=False)


def _distinct(rows: Iterable[int], keys: Sequence[str]) -> dict[str, list[int]]:
    """Rows by key, in first-seen order."""
    out: dict[str, list[int]] = {}
    for i in rows:
        out.setdefault(keys[i], []).append(i)
    return out


def find_copies(examples: Sequence[AuditedExample], threshold: float = 0.9, num_perm: int = 64) -> Copies:
    """Duplicates and near duplicates among the training examples (within a source and across
    sources), eval examples leaked from them, and conflicting answers. Rows are indices into
    ``examples``; each group is in the order of ``examples`` (the first stays)."""
    if not 0 < threshold <= 1:
        raise ValueError(f"the near-copy threshold is a Jaccard similarity in (0, 1], not {threshold}")
    texts = [e.text for e in examples]
    sources = [e.source for e in examples]
    train = [i for i, e in enumerate(examples) if e.split == "train"]
    evals = [i for i, e in enumerate(examples) if e.split != "train"]
    keys = [normalized(t) for t in texts]

    # exact duplicates: one group per normalized text, the first row stays
    by_text = _distinct(train, keys)
    duplicates = [CopyGroup(tuple(rows), True, 1.0) for rows in by_text.values() if len(rows) > 1]
    representatives = [rows[0] for rows in by_text.values()]

    # near duplicates among the distinct training texts
    sets = _ShingleSets(texts, sources, representatives + _unique_evals(evals, keys))
    index = _NearIndex(sets, threshold, num_perm)
    union, weakest = _UnionFind(), {}
    index.add_and_link(representatives, union, weakest)
    near = [
        CopyGroup(tuple(members), False, min(weakest.get(m, 1.0) for m in members))
        for members in union.groups().values()
        if len(members) > 1
    ]

    # leakage: each eval row with the training rows it copies
    leaks = []
    for i in evals:
        copied = by_text.get(keys[i])
        if copied:
            leaks.append(Leak(i, tuple(copied), True, 1.0))
            continue
        values = sets(i)
        found = index.matches(i, values, index.minhash(values))
        if found:
            leaks.append(Leak(i, tuple(j for j, _ in found), False, min(s for _, s in found)))
    del index

    conflicts = _conflicts(examples, train, threshold, num_perm)
    near.sort(key=lambda g: g.rows)
    return Copies(duplicates, near, leaks, conflicts, threshold)


def _unique_evals(evals: list[int], keys: Sequence[str]) -> list[int]:
    return [rows[0] for rows in _distinct(evals, keys).values()]


def _conflicts(examples: Sequence[AuditedExample], train: list[int], threshold: float, num_perm: int) -> list[Conflict]:
    """Prompts (the same after normalizing, or nearly the same at ``threshold``) taught with
    answers that are not near copies of one another. A per-turn example's prompt is its whole
    conversation so far: it conflicts only with an example whose prompt is exactly the same."""
    prompts = [normalized(e.prompt) for e in examples]
    by_prompt = _distinct(train, prompts)
    representatives = [rows[0] for rows in by_prompt.values()]
    union = _UnionFind()
    single_turn = [i for i in representatives if "#" not in examples[i].id]
    if len(single_turn) > 1:
        texts = [e.prompt for e in examples]
        sets = _ShingleSets(texts, [e.source for e in examples], single_turn)
        _NearIndex(sets, threshold, num_perm).add_and_link(single_turn, union, {})
    groups = union.groups()
    clusters = [groups.get(i, [i]) for i in representatives if union.find(i) == i]
    out = []
    answer_sets: dict[str, np.ndarray] = {}
    for cluster in clusters:
        rows = sorted(r for p in cluster for r in by_prompt[prompts[p]])
        if len(rows) < 2:
            continue
        answers = list(dict.fromkeys(normalized(examples[r].completion) for r in rows))
        if len(answers) < 2:
            continue
        different = _distinct_answers(answers, threshold, answer_sets)
        if different > 1:
            out.append(Conflict(tuple(rows), len(cluster) == 1, different))
    out.sort(key=lambda c: c.rows)
    return out


def _distinct_answers(answers: list[str], threshold: float, cache: dict[str, np.ndarray]) -> int:
    """How many of the answers are not near copies of an earlier one."""
    if len(answers) > MAX_ANSWERS_COMPARED:
        return len(answers)
    kept: list[np.ndarray] = []
    for answer in answers:
        values = cache.get(answer)
        if values is None:
            values = cache[answer] = shingles(answer)
        if all(jaccard(values, other) < threshold for other in kept):
            kept.append(values)
    return len(kept)
