"""Copies in the data: exact and near duplicates among training examples, eval examples that copy
a training example (leakage), and the same or nearly the same prompt taught with different answers
(conflicts).

Exact means the same text once whitespace is collapsed (case kept). Near means a Jaccard
similarity of at least ``threshold`` between the sets of 5-character shingles of the lowercased,
whitespace-collapsed text: MinHash signatures find candidate pairs through LSH bands, and every
candidate is confirmed with the exact Jaccard of its two shingle sets, so a reported pair really is
at or above the threshold.

The signatures are `datasketch.MinHash`'s (its permutations for ``seed=1`` and its affine32 scheme:
murmur3 finalizer, ``a * h + b`` modulo 2^32, the minimum per permutation; a test holds them
equal) and the bands are `datasketch.MinHashLSH`'s (``lsh_bands`` contiguous ranges), but they are
computed with numpy for a chunk of texts at once instead of one MinHash object and one Python set
per band per row: per-row Python work made 134k rows take 157 s. A chunk's shingles are hashed in
one pass over its code points, each permutation's minima are one ``np.minimum.reduceat``, each
band is one uint64 key per row and rows sharing a key are found by sorting, and the candidate pairs'
Jaccards are computed a block at a time by sorting (pair, shingle) keys. Nothing is kept per row
but the band keys (8 bytes per band); shingle sets are recomputed for the rows of a block of
candidates. The results are those of the per-row datasketch index this replaced.

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

import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from datasketch import MinHash

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


_FOLD = np.uint64(0x9E3779B97F4A7C15)
_LOW32 = np.uint64(0xFFFFFFFF)
_FMIX32 = (np.uint32(16), np.uint32(0x85EBCA6B), np.uint32(13), np.uint32(0xC2B2AE35), np.uint32(16))
CHUNK_CHARS = 2_000_000  # code points shingled at once: bounds the temporaries (~100 MB)
PAIR_BLOCK = 8_192  # candidate pairs confirmed at once
BIG_RUN = 256  # rows sharing one band key above which their pairs are listed run by run


def _sorted_distinct(values: np.ndarray) -> np.ndarray:
    """``np.unique`` by sorting (numpy 2's hash-table ``np.unique`` is many times slower on
    millions of 64-bit keys)."""
    values = np.sort(values)
    if len(values) < 2:
        return values
    return values[np.r_[True, values[1:] != values[:-1]]]


def _lower(text: str) -> str:
    return " ".join(text.lower().split())


def _window_hashes(strings: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Every shingle of every (lowercased, whitespace-collapsed) string as (owner, hash): the
    position of its string and the 32-bit hash ``shingles`` gives it; grouped by owner, in order,
    repeats kept. All the strings' windows are hashed in one numpy pass over their code points."""
    lengths = np.fromiter(map(len, strings), dtype=np.int64, count=len(strings))
    counts = np.where(lengths >= SHINGLE, lengths - SHINGLE + 1, 0)
    owner = np.repeat(np.arange(len(strings), dtype=np.int64), counts)
    total = int(counts.sum())
    if total:
        points = np.frombuffer("".join(strings).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
        n = len(points) - SHINGLE + 1
        h = np.zeros(n, dtype=np.uint64)
        for j in range(SHINGLE):
            h = h * np.uint64(1_000_003) + points[j : j + n] + np.uint64(1)
        del points
        starts = np.cumsum(lengths) - lengths
        first = np.cumsum(counts) - counts
        h = h[starts[owner] + (np.arange(total, dtype=np.int64) - first[owner])]
        hashes = (((h ^ (h >> np.uint64(29))) * _FOLD) >> np.uint64(32)).astype(np.uint32)
    else:
        hashes = np.zeros(0, dtype=np.uint32)
    short = np.flatnonzero((lengths > 0) & (lengths < SHINGLE))
    if len(short):  # a text shorter than a shingle is one shingle
        owner = np.concatenate([owner, short])
        hashes = np.concatenate([hashes, np.concatenate([shingles(strings[i]) for i in short])])
        order = np.argsort(owner, kind="stable")
        owner, hashes = owner[order], hashes[order]
    return owner, hashes


def _chunks(texts: Sequence[str], rows: Sequence[int]) -> Iterable[tuple[int, int]]:
    """[start, end) slices of ``rows`` with about CHUNK_CHARS characters each."""
    start, chars = 0, 0
    for k, i in enumerate(rows):
        chars += len(texts[i])
        if chars >= CHUNK_CHARS:
            yield start, k + 1
            start, chars = k + 1, 0
    if start < len(rows):
        yield start, len(rows)


class _Shingler:
    """The shingles of each text less its source's boilerplate, computed for a batch of rows at
    once and on demand (nothing kept per row)."""

    def __init__(self, texts: Sequence[str], sources: Sequence[str], indices: Iterable[int]) -> None:
        self.texts, self.sources = texts, sources
        self.boilerplate: dict[str, np.ndarray] = {}
        by_source: dict[str, list[int]] = defaultdict(list)
        for i in indices:
            by_source[sources[i]].append(i)
        for source, rows in by_source.items():
            if len(rows) < BOILERPLATE_MIN_TEXTS:
                continue
            sample = rows if len(rows) <= BOILERPLATE_SAMPLE else random.Random(0).sample(rows, BOILERPLATE_SAMPLE)
            _, values = self.rows(sample, distinct=True)
            if not len(values):
                continue
            values = np.sort(values)
            starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
            counts = np.diff(np.r_[starts, len(values)])
            common = values[starts][counts > BOILERPLATE_SHARE * len(sample)]
            if len(common):
                self.boilerplate[source] = common

    def rows(self, rows: Sequence[int], distinct: bool) -> tuple[np.ndarray, np.ndarray]:
        """(owner, hash) of the shingles of ``rows`` (owner: the position in ``rows``), grouped by
        owner; ``distinct``: each text's hashes sorted and distinct (its shingle set)."""
        owners, values = [], []
        for start, end in _chunks(self.texts, rows):
            part = rows[start:end]
            owner, hashes = _window_hashes([_lower(self.texts[i]) for i in part])
            if distinct:
                key = _sorted_distinct((owner.astype(np.uint64) << np.uint64(32)) | hashes)
                owner, hashes = (key >> np.uint64(32)).astype(np.int64), (key & _LOW32).astype(np.uint32)
            if self.boilerplate:
                owner, hashes = self._content(part, owner, hashes)
            owners.append(owner + start)
            values.append(hashes)
        if not owners:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.uint32)
        return np.concatenate(owners), np.concatenate(values)

    def _content(self, part: Sequence[int], owner: np.ndarray, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Leave out each text's boilerplate shingles, unless that leaves none (all template:
        the whole text is compared)."""
        drop = np.zeros(len(hashes), dtype=bool)
        sources = np.array([self.sources[i] for i in part], dtype=object)
        for source, common in self.boilerplate.items():
            mine = sources == source
            if mine.any():
                drop |= mine[owner] & np.isin(hashes, common)
        if not drop.any():
            return owner, hashes
        n = len(part)
        emptied = (np.bincount(owner[~drop], minlength=n) == 0) & (np.bincount(owner, minlength=n) > 0)
        keep = ~drop | emptied[owner]
        return owner[keep], hashes[keep]


def _signatures(owner: np.ndarray, hashes: np.ndarray, n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[n, num_perm] uint32: the MinHash signature of each of ``n`` texts from its shingle hashes
    (``owner``: grouped text positions), as `datasketch.MinHash` (scheme affine32) computes it:
    the murmur3 finalizer, then ``a * h + b`` modulo 2^32 per permutation, the minimum per text;
    a text without shingles keeps the all-maximum signature of an empty MinHash."""
    s1, m1, s2, m2, s3 = _FMIX32
    hv = hashes ^ (hashes >> s1)
    hv = hv * m1
    hv = hv ^ (hv >> s2)
    hv = hv * m2
    hv = hv ^ (hv >> s3)
    signature = np.full((n, len(a)), np.uint32(0xFFFFFFFF), dtype=np.uint32)
    if len(hv):
        firsts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
        present = owner[firsts]
        for p in range(len(a)):
            signature[present, p] = np.minimum.reduceat(hv * a[p] + b[p], firsts)
    return signature


def _band_keys(shingler: _Shingler, rows: Sequence[int], num_perm: int, bands: int, width: int) -> np.ndarray:
    """[len(rows), bands] uint64: each row's MinHash signature, one key per LSH band (equal bands,
    equal keys). The signature is `datasketch.MinHash(num_perm, seed=1)` updated with the row's
    shingle hashes (datasketch's permutations and murmur pre-mix), for all rows of a chunk at once:
    one ``np.minimum.reduceat`` per permutation over the chunk's concatenated shingle hashes."""
    a, b = MinHash(num_perm=num_perm, seed=1).permutations.astype(np.uint32)
    keys = np.zeros((len(rows), bands), dtype=np.uint64)
    for start, end in _chunks(shingler.texts, rows):
        owner, hv = shingler.rows(rows[start:end], distinct=False)
        signature = _signatures(owner, hv, end - start, a, b)
        key = np.zeros((end - start, bands), dtype=np.uint64)
        for c in range(width):
            key = key * np.uint64(0x100000001B3) + signature[:, c : bands * width : width].astype(np.uint64)
            key ^= key >> np.uint64(31)
        keys[start:end] = key
    return keys


def _candidates(keys: np.ndarray, skip_from: int) -> np.ndarray:
    """Distinct pairs (lo, hi) of row positions sharing at least one band key, as codes
    lo * n + hi, sorted; pairs whose lower position is ``skip_from`` or more are left out."""
    n = len(keys)
    found = []
    for band in range(keys.shape[1]):
        order = np.argsort(keys[:, band], kind="stable")
        sorted_keys = keys[order, band]
        same = sorted_keys[1:] == sorted_keys[:-1]
        if not same.any():
            continue
        run = np.cumsum(np.r_[True, ~same]) - 1
        size = np.bincount(run)
        small = (size[run] >= 2) & (size[run] <= BIG_RUN)
        members, member_run = order[small], run[small]
        d = 1
        while d < len(members):
            linked = member_run[d:] == member_run[:-d]
            if not linked.any():
                break
            x, y = members[:-d][linked], members[d:][linked]
            found.append(np.minimum(x, y) * n + np.maximum(x, y))
            d += 1
        starts = np.cumsum(size) - size
        for r in np.flatnonzero(size > BIG_RUN):
            rows = np.sort(order[starts[r] : starts[r] + size[r]])
            i, j = np.triu_indices(len(rows), 1)
            found.append(rows[i] * n + rows[j])
    if not found:
        return np.zeros(0, dtype=np.int64)
    codes = _sorted_distinct(np.concatenate(found))
    return codes[codes // n < skip_from] if skip_from < n else codes


def _segments(offsets: np.ndarray, sizes: np.ndarray, which: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pair number, position) of every element of the segments ``which``."""
    lengths = sizes[which]
    pair = np.repeat(np.arange(len(which), dtype=np.int64), lengths)
    first = np.cumsum(lengths) - lengths
    return pair, offsets[which][pair] + (np.arange(int(lengths.sum()), dtype=np.int64) - first[pair])


def _jaccards(shingler: _Shingler, rows: Sequence[int], lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The exact Jaccard of each pair of row positions: their shingle sets are computed for a
    block of pairs at a time and intersected by sorting (pair, hash) keys."""
    out = np.zeros(len(lo), dtype=np.float64)
    for s in range(0, len(lo), PAIR_BLOCK):
        a, b = lo[s : s + PAIR_BLOCK], hi[s : s + PAIR_BLOCK]
        involved = _sorted_distinct(np.concatenate([a, b]))
        owner, values = shingler.rows([rows[k] for k in involved], distinct=True)
        sizes = np.bincount(owner, minlength=len(involved))
        offsets = np.cumsum(sizes) - sizes
        ia, ib = np.searchsorted(involved, a), np.searchsorted(involved, b)
        pa, xa = _segments(offsets, sizes, ia)
        pb, xb = _segments(offsets, sizes, ib)
        keys = np.concatenate(
            [
                (pa.astype(np.uint64) << np.uint64(32)) | values[xa],
                (pb.astype(np.uint64) << np.uint64(32)) | values[xb],
            ]
        )
        keys.sort()
        repeated = keys[1:][keys[1:] == keys[:-1]]
        common = np.bincount((repeated >> np.uint64(32)).astype(np.int64), minlength=len(a)).astype(np.float64)
        union = sizes[ia] + sizes[ib] - common
        out[s : s + len(a)] = np.divide(common, union, out=np.ones(len(a)), where=union > 0)
    return out


def _near_pairs(
    texts: Sequence[str],
    sources: Sequence[str],
    rows: Sequence[int],
    threshold: float,
    num_perm: int,
    boilerplate_rows: Iterable[int] | None = None,
    skip_from: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs of ``rows`` (as positions lo < hi) whose exact Jaccard is at least ``threshold``,
    found through MinHash LSH: (lo, hi, similarity). Boilerplate is judged over
    ``boilerplate_rows`` (default ``rows``); pairs with lo ≥ ``skip_from`` are not compared."""
    shingler = _Shingler(texts, sources, rows if boilerplate_rows is None else boilerplate_rows)
    bands, width = lsh_bands(threshold, num_perm)
    codes = _candidates(
        _band_keys(shingler, rows, num_perm, bands, width), len(rows) if skip_from is None else skip_from
    )
    lo, hi = codes // len(rows), codes % len(rows)
    similarity = _jaccards(shingler, rows, lo, hi)
    confirmed = similarity >= threshold
    return lo[confirmed], hi[confirmed], similarity[confirmed]


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

    # near duplicates among the distinct training texts, and the eval texts that nearly copy one
    unique_evals = _unique_evals(evals, keys)
    open_evals = [i for i in unique_evals if keys[i] not in by_text]
    rows = representatives + open_evals
    lo, hi, similarity = _near_pairs(
        texts, sources, rows, threshold, num_perm, representatives + unique_evals, len(representatives)
    )
    union, weakest = _UnionFind(), {}
    leaked: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for a, b, s in zip(lo.tolist(), hi.tolist(), similarity.tolist()):
        i, j = rows[a], rows[b]
        if b >= len(representatives):  # an eval text and the training text it copies
            leaked[keys[j]].append((i, s))
            continue
        union.union(i, j)
        weakest[i] = min(weakest.get(i, 1.0), s)
        weakest[j] = min(weakest.get(j, 1.0), s)
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
        found = sorted(leaked.get(keys[i], ()))
        if found:
            leaks.append(Leak(i, tuple(j for j, _ in found), False, min(s for _, s in found)))

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
        lo, hi, _ = _near_pairs(texts, [e.source for e in examples], single_turn, threshold, num_perm)
        for a, b in zip(lo.tolist(), hi.tolist()):
            union.union(single_turn[a], single_turn[b])
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
