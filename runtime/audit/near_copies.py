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
Jaccards are computed a block at a time by sorting (pair, shingle) keys. The results are those of
the per-row datasketch index this replaced.

Memory is a fixed few bytes per row besides the examples themselves: texts are read from the
examples a chunk at a time and never copied per row; exact copies are found by an 8-byte digest
of each normalized text (rows that share a digest are compared text by text, so a collision
cannot join two texts); what is kept per row is that digest, row numbers and the band keys
(8 bytes per band, 72 bytes for 64 permutations at 0.9), in numpy arrays; shingle sets are
recomputed for the rows of a block of candidates. Besides, one chunk's temporaries (CHUNK_CHARS)
and one block of candidates' shingle sets (PAIR_BLOCK). On bench/audit_vs_text_dedup.py's 1M rows
(about 470 characters each) the peak is about 170 MiB above the 760 MiB the examples take
(AMD EPYC, 2 cores: 1,015 MiB in all, 42 s); copies of the texts and normalized keys per row had
made it 2,550 MiB.

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
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

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
CHUNK_CHARS = 500_000  # code points shingled at once: bounds the temporaries (~30 MB; larger is no faster)
ROW_BLOCK = 65_536  # rows whose indices (or text digests) are Python objects at once
PAIR_BLOCK = 1_024  # candidate pairs confirmed at once: their shingle sets are held (~30 MB for 500-char texts)
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
    if total:  # hashed in place: the temporaries are a few arrays of the chunk's length
        points = np.frombuffer("".join(strings).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
        n = len(points) - SHINGLE + 1
        h = points[:n] + np.uint64(1)
        for j in range(1, SHINGLE):
            h *= np.uint64(1_000_003)
            h += points[j : j + n]
            h += np.uint64(1)
        del points
        crossing = np.zeros(n + SHINGLE, dtype=bool)  # windows that start in a string and end in the next
        ends = np.cumsum(lengths)
        for k in range(1, SHINGLE):
            crossing[ends[lengths >= k] - k] = True
        h = h[~crossing[:n]]
        del crossing
        h ^= h >> np.uint64(29)
        h *= _FOLD
        h >>= np.uint64(32)
        hashes = h.astype(np.uint32)
        del h
    else:
        hashes = np.zeros(0, dtype=np.uint32)
    short = np.flatnonzero((lengths > 0) & (lengths < SHINGLE))
    if len(short):  # a text shorter than a shingle is one shingle
        owner = np.concatenate([owner, short])
        hashes = np.concatenate([hashes, np.concatenate([shingles(strings[i]) for i in short])])
        order = np.argsort(owner, kind="stable")
        owner, hashes = owner[order], hashes[order]
    return owner, hashes


class _Column:
    """One text attribute of each example, read when asked for (nothing copied per row)."""

    def __init__(self, examples: Sequence[Any], attribute: str) -> None:
        self.examples, self.get = examples, attrgetter(attribute)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, row: int) -> str:
        return self.get(self.examples[row])


Texts = Sequence[str] | _Column  # a text per row


def _source_codes(sources: Iterable[str], count: int) -> np.ndarray:
    """Each row's source as a small integer (the order in which sources first appear)."""
    codes: dict[str, int] = {}
    return np.fromiter((codes.setdefault(s, len(codes)) for s in sources), dtype=np.int32, count=count)


def _as_rows(rows: Iterable[int]) -> np.ndarray:
    return rows if isinstance(rows, np.ndarray) else np.asarray(list(rows), dtype=np.int64)


class _Shingler:
    """The shingles of each text less its source's boilerplate, computed for a batch of rows at
    once and on demand (nothing kept per row). ``texts``: a text per row (a list, or a `_Column`
    read as needed); ``sources``: a source per row (names, or `_source_codes`)."""

    def __init__(self, texts: Texts, sources: Sequence[str] | np.ndarray, indices: Iterable[int]) -> None:
        if not isinstance(sources, np.ndarray):
            sources = _source_codes(sources, len(sources))
        self.texts, self.sources = texts, sources
        self.boilerplate: dict[int, np.ndarray] = {}
        indices = _as_rows(indices)
        present = self.sources[indices]
        for source in np.unique(present).tolist():
            rows = indices[present == source]  # in the order of ``indices``
            if len(rows) < BOILERPLATE_MIN_TEXTS:
                continue
            if len(rows) > BOILERPLATE_SAMPLE:  # random.sample draws the same positions for any population
                rows = rows[random.Random(0).sample(range(len(rows)), BOILERPLATE_SAMPLE)]
            common = self._common(rows)
            if len(common):
                self.boilerplate[source] = common

    def _common(self, rows: np.ndarray) -> np.ndarray:
        """The sorted hashes in more than BOILERPLATE_SHARE of the texts of ``rows``, without
        holding all their shingles: a hash above the share of all the texts is above it in one
        chunk of them at least, so each chunk proposes its own, and a second pass counts those."""
        proposed = [np.zeros(0, dtype=np.uint32)]
        for start, end, _, hashes in self.chunks(rows, distinct=True):
            if not len(hashes):
                continue
            hashes = np.sort(hashes)
            starts = np.flatnonzero(np.r_[True, hashes[1:] != hashes[:-1]])
            texts = np.diff(np.r_[starts, len(hashes)])
            proposed.append(hashes[starts][texts > BOILERPLATE_SHARE * (end - start)])
        candidates = _sorted_distinct(np.concatenate(proposed))
        if not len(candidates):
            return candidates
        texts = np.zeros(len(candidates), dtype=np.int64)
        for *_, hashes in self.chunks(rows, distinct=True):
            found = np.searchsorted(candidates, hashes[np.isin(hashes, candidates)])
            texts += np.bincount(found, minlength=len(candidates))
        return candidates[texts > BOILERPLATE_SHARE * len(rows)]

    def chunks(
        self, rows: Sequence[int] | np.ndarray, distinct: bool
    ) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
        """(start, end, owner, hash) for consecutive slices ``rows[start:end]`` of about
        CHUNK_CHARS characters: the shingles of those rows, grouped by owner (the position in
        the slice); ``distinct``: each text's hashes sorted and distinct (its shingle set). Only
        one slice's texts and arrays are held at a time."""
        rows = _as_rows(rows)
        start, strings, chars = 0, [], 0
        for block in range(0, len(rows), ROW_BLOCK):
            for i in rows[block : block + ROW_BLOCK].tolist():
                strings.append(_lower(self.texts[i]))
                chars += len(strings[-1])
                if chars >= CHUNK_CHARS:
                    end = start + len(strings)
                    yield start, end, *self._hashes(rows[start:end], strings, distinct)
                    start, strings, chars = end, [], 0
        if strings:
            yield start, len(rows), *self._hashes(rows[start:], strings, distinct)

    def rows(self, rows: Sequence[int] | np.ndarray, distinct: bool) -> tuple[np.ndarray, np.ndarray]:
        """(owner, hash) of the shingles of ``rows`` (owner: the position in ``rows``), grouped by
        owner; ``distinct``: each text's hashes sorted and distinct (its shingle set)."""
        owners, values = [], []
        for start, _, owner, hashes in self.chunks(rows, distinct):
            owners.append(owner + start)
            values.append(hashes)
        if not owners:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.uint32)
        return np.concatenate(owners), np.concatenate(values)

    def _hashes(self, part: np.ndarray, strings: list[str], distinct: bool) -> tuple[np.ndarray, np.ndarray]:
        owner, hashes = _window_hashes(strings)
        if distinct:
            key = _sorted_distinct((owner.astype(np.uint64) << np.uint64(32)) | hashes)
            owner, hashes = (key >> np.uint64(32)).astype(np.int64), (key & _LOW32).astype(np.uint32)
        if self.boilerplate:
            owner, hashes = self._content(part, owner, hashes)
        return owner, hashes

    def _content(self, part: np.ndarray, owner: np.ndarray, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Leave out each text's boilerplate shingles, unless that leaves none (all template:
        the whole text is compared)."""
        drop = np.zeros(len(hashes), dtype=bool)
        sources = self.sources[part]
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
    hv *= m1
    hv ^= hv >> s2
    hv *= m2
    hv ^= hv >> s3
    signature = np.full((n, len(a)), np.uint32(0xFFFFFFFF), dtype=np.uint32)
    if len(hv):
        firsts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
        present = owner[firsts]
        permuted = np.empty_like(hv)
        for p in range(len(a)):
            np.multiply(hv, a[p], out=permuted)
            permuted += b[p]
            signature[present, p] = np.minimum.reduceat(permuted, firsts)
    return signature


def _band_keys(shingler: _Shingler, rows: np.ndarray, num_perm: int, bands: int, width: int) -> np.ndarray:
    """[bands, len(rows)] uint64: each row's MinHash signature, one key per LSH band (equal bands,
    equal keys), band by band (each band's keys contiguous, to be sorted). The signature is
    `datasketch.MinHash(num_perm, seed=1)` updated with the row's shingle hashes (datasketch's
    permutations and murmur pre-mix), for all rows of a chunk at once: one ``np.minimum.reduceat``
    per permutation over the chunk's concatenated shingle hashes."""
    a, b = MinHash(num_perm=num_perm, seed=1).permutations.astype(np.uint32)
    keys = np.zeros((bands, len(rows)), dtype=np.uint64)
    for start, end, owner, hv in shingler.chunks(rows, distinct=False):
        signature = _signatures(owner, hv, end - start, a, b)
        key = np.zeros((end - start, bands), dtype=np.uint64)
        for c in range(width):
            key = key * np.uint64(0x100000001B3) + signature[:, c : bands * width : width].astype(np.uint64)
            key ^= key >> np.uint64(31)
        keys[:, start:end] = key.T
    return keys


def _candidates(keys: np.ndarray, skip_from: int) -> np.ndarray:
    """Distinct pairs (lo, hi) of row positions sharing at least one band key, as codes
    lo * n + hi, sorted; pairs whose lower position is ``skip_from`` or more are left out."""
    n = keys.shape[1]
    found = []
    for band in keys:
        order = np.argsort(band, kind="stable")
        ordered = band[order]
        same = ordered[1:] == ordered[:-1]
        del ordered
        if not same.any():
            continue
        run = np.cumsum(np.r_[True, ~same])
        run -= 1
        del same
        size = np.bincount(run)
        run_size = size[run]
        small = (run_size >= 2) & (run_size <= BIG_RUN)
        del run_size
        members, member_run = order[small], run[small]
        d = 1
        while d < len(members):
            linked = member_run[d:] == member_run[:-d]
            if not linked.any():
                break
            x, y = members[:-d][linked], members[d:][linked]
            found.append(np.minimum(x, y) * n + np.maximum(x, y))
            d += 1
        big = np.flatnonzero(size > BIG_RUN)
        starts = np.cumsum(size) - size if len(big) else size
        for r in big:
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


def _jaccards(shingler: _Shingler, rows: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The exact Jaccard of each pair of row positions: their shingle sets are computed for a
    block of pairs at a time and intersected by sorting (pair, hash) keys."""
    out = np.zeros(len(lo), dtype=np.float64)
    for s in range(0, len(lo), PAIR_BLOCK):
        a, b = lo[s : s + PAIR_BLOCK], hi[s : s + PAIR_BLOCK]
        involved = _sorted_distinct(np.concatenate([a, b]))
        owner, values = shingler.rows(rows[involved], distinct=True)
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
    texts: Texts,
    sources: Sequence[str] | np.ndarray,
    rows: np.ndarray,
    threshold: float,
    num_perm: int,
    boilerplate_rows: np.ndarray | None = None,
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


def _digest(text: str) -> bytes:
    """8 bytes that stand for a normalized text: equal texts, equal digests (different texts
    that share one are told apart by comparing them, see `_same_text`)."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()


def _groups(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(order, starts, sizes): positions sorted by key (stably: ascending within a key), and
    where each run of equal keys starts in that order and how long it is."""
    order = np.argsort(keys, kind="stable")
    if not len(order):
        return order, order, order
    ordered = keys[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    return order, starts, np.diff(np.r_[starts, len(order)])


def _first_alike(rows: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """For each of ``rows`` (ascending), the first of ``rows`` with the same key."""
    order, starts, sizes = _groups(keys)
    first = np.empty(len(rows), dtype=np.int64)
    first[order] = np.repeat(rows[order[starts]], sizes)
    return first


def _same_text(rows: np.ndarray, text: Callable[[int], str]) -> np.ndarray:
    """For each of ``rows`` (ascending), the first of ``rows`` whose text is the same once
    normalized (`normalized`). What is kept per row is an 8-byte digest, not the text: rows are
    grouped by digest, and the members of a group are compared with its first one by one, so
    that texts that only share a digest are told apart."""
    digests = np.empty(len(rows), dtype=np.uint64)
    for start in range(0, len(rows), ROW_BLOCK):
        part = rows[start : start + ROW_BLOCK].tolist()
        digests[start : start + len(part)] = np.frombuffer(
            b"".join([_digest(normalized(text(i))) for i in part]), dtype=np.uint64
        )
    order, starts, sizes = _groups(digests)
    del digests
    first = np.empty(len(rows), dtype=np.int64)
    first[order] = np.repeat(rows[order[starts]], sizes)
    for start, size in zip(starts[sizes > 1].tolist(), sizes[sizes > 1].tolist()):
        members = rows[order[start : start + size]].tolist()
        head = normalized(text(members[0]))
        if all(normalized(text(i)) == head for i in members[1:]):
            continue
        seen: dict[str, int] = {}  # a digest shared by different texts: group them by the text
        for k, i in zip(order[start : start + size].tolist(), members):
            first[k] = seen.setdefault(normalized(text(i)), i)
    return first


def _listed(rows: np.ndarray, first: np.ndarray) -> list[tuple[int, ...]]:
    """The groups of ``rows`` that share their ``first`` row and have two rows or more, each in
    row order, in the order of their first rows."""
    order, starts, sizes = _groups(first)
    return [
        tuple(rows[order[s : s + z]].tolist()) for s, z in zip(starts[sizes > 1].tolist(), sizes[sizes > 1].tolist())
    ]


def find_copies(examples: Sequence[AuditedExample], threshold: float = 0.9, num_perm: int = 64) -> Copies:
    """Duplicates and near duplicates among the training examples (within a source and across
    sources), eval examples leaked from them, and conflicting answers. Rows are indices into
    ``examples``; each group is in the order of ``examples`` (the first stays).

    Memory beyond the examples is a few arrays of a few bytes per row (an 8-byte text digest and
    row numbers, and ``num_perm`` / rows-per-band LSH keys of 8 bytes) and one chunk of texts
    being shingled; texts are read from the examples as needed and never copied per row."""
    if not 0 < threshold <= 1:
        raise ValueError(f"the near-copy threshold is a Jaccard similarity in (0, 1], not {threshold}")
    n = len(examples)
    texts = _Column(examples, "text")
    sources = _source_codes((e.source for e in examples), n)
    is_train = np.fromiter((e.split == "train" for e in examples), dtype=bool, count=n)
    train, evals = np.flatnonzero(is_train), np.flatnonzero(~is_train)
    del is_train
    same = _same_text(np.arange(n, dtype=np.int64), texts.__getitem__)  # the first row with the same text

    # exact duplicates: one group per normalized text, the first row stays
    first_train = _first_alike(train, same[train])
    duplicates = [CopyGroup(rows, True, 1.0) for rows in _listed(train, first_train)]
    representatives = train[first_train == train]
    del first_train
    taught = np.zeros(n, dtype=bool)  # by `same`: a text that some training row has
    taught[same[train]] = True

    # near duplicates among the distinct training texts, and the eval texts that nearly copy one
    unique_evals = evals[_first_alike(evals, same[evals]) == evals]
    open_evals = unique_evals[~taught[same[unique_evals]]]
    rows = np.concatenate([representatives, open_evals])
    lo, hi, similarity = _near_pairs(
        texts,
        sources,
        rows,
        threshold,
        num_perm,
        np.concatenate([representatives, unique_evals]),
        len(representatives),
    )
    del unique_evals, open_evals
    union, weakest = _UnionFind(), dict[int, float]()
    leaked: dict[int, list[tuple[int, float]]] = defaultdict(list)  # by `same` of the eval row
    for a, b, s in zip(lo.tolist(), hi.tolist(), similarity.tolist()):
        i, j = int(rows[a]), int(rows[b])
        if b >= len(representatives):  # an eval text and the training text it copies
            leaked[int(same[j])].append((i, s))
            continue
        union.union(i, j)
        weakest[i] = min(weakest.get(i, 1.0), s)
        weakest[j] = min(weakest.get(j, 1.0), s)
    del rows, representatives, lo, hi, similarity
    near = [
        CopyGroup(tuple(members), False, min(weakest.get(m, 1.0) for m in members))
        for members in union.groups().values()
        if len(members) > 1
    ]

    # leakage: each eval row with the training rows it copies
    leaks = []
    exact = taught[same[evals]]
    copying = exact | np.isin(same[evals], np.fromiter(leaked, dtype=np.int64, count=len(leaked)))
    order = np.argsort(same[train], kind="stable")
    taught_as = same[train][order]  # training rows by text, in row order within a text
    for i, is_exact in zip(evals[copying].tolist(), exact[copying].tolist()):
        if is_exact:
            k = int(same[i])
            copied = train[order[np.searchsorted(taught_as, k) : np.searchsorted(taught_as, k, side="right")]]
            leaks.append(Leak(i, tuple(copied.tolist()), True, 1.0))
            continue
        found = sorted(leaked[int(same[i])])
        leaks.append(Leak(i, tuple(j for j, _ in found), False, min(s for _, s in found)))
    del same, taught, order, taught_as, evals

    conflicts = _conflicts(examples, train, sources, threshold, num_perm)
    near.sort(key=lambda g: g.rows)
    return Copies(duplicates, near, leaks, conflicts, threshold)


def _conflicts(
    examples: Sequence[AuditedExample], train: np.ndarray, sources: np.ndarray, threshold: float, num_perm: int
) -> list[Conflict]:
    """Prompts (the same after normalizing, or nearly the same at ``threshold``) taught with
    answers that are not near copies of one another. A per-turn example's prompt is its whole
    conversation so far: it conflicts only with an example whose prompt is exactly the same."""
    prompts = _Column(examples, "prompt")
    first = _same_text(train, prompts.__getitem__)  # the first training row with the same prompt
    representatives = train[first == train]
    union = _UnionFind()
    single_turn = representatives[
        np.fromiter(
            ("#" not in examples[i].id for i in representatives.tolist()), dtype=bool, count=len(representatives)
        )
    ]
    del representatives
    if len(single_turn) > 1:
        lo, hi, _ = _near_pairs(prompts, sources, single_turn, threshold, num_perm)
        for a, b in zip(lo.tolist(), hi.tolist()):
            union.union(int(single_turn[a]), int(single_turn[b]))
    del single_turn
    order, starts, sizes = _groups(first)
    by_first = first[order]  # training rows by prompt, in row order within a prompt

    def taught(prompt: int) -> list[int]:
        at = np.searchsorted(by_first, prompt)
        return train[order[at : np.searchsorted(by_first, prompt, side="right")]].tolist()

    # the clusters of two rows or more: prompts joined as near copies, and prompts of several rows
    clusters = list(union.groups().values())
    joined = {p for cluster in clusters for p in cluster}
    clusters += [[p] for p in train[order[starts[sizes > 1]]].tolist() if p not in joined]
    out = []
    for cluster in clusters:
        rows = sorted(r for p in cluster for r in taught(p))
        answers = list(dict.fromkeys(normalized(examples[r].completion) for r in rows))
        if len(answers) < 2:
            continue
        different = _distinct_answers(answers, threshold, {})
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
