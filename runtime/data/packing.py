"""Best-fit-decreasing packing of examples into fixed-length rows.

``pack_bfd(sizes, capacity)`` returns bins (lists of item indices; ``pack_table`` the
same bins as one flat table): items are taken longest first (ties keep their given
order, so a shuffled input gives a seeded tie-break) and each goes into the open bin
whose remaining space is the
smallest that still fits it, else into a new bin. Finding that bin is
``O(log capacity)`` with a segment tree over remaining capacities, so packing a
million examples takes seconds, not minutes.
"""

from __future__ import annotations

import heapq
from array import array

import numpy as np


def pack_bfd(sizes: np.ndarray, capacity: int) -> list[list[int]]:
    """The bins as lists of item indices, each in the order its items were placed."""
    items, starts = pack_table(sizes, capacity)
    return [items[a:b].tolist() for a, b in zip(starts[:-1].tolist(), starts[1:].tolist())]


def pack_table(sizes: np.ndarray, capacity: int) -> tuple[np.ndarray, np.ndarray]:
    """The bins as one table, 8 bytes an item: bin ``b`` holds ``items[starts[b]:starts[b + 1]]``
    (int64), in the order they were placed; what a large corpus's epoch keeps in memory."""
    sizes = np.asarray(sizes, dtype=np.int64)
    if sizes.size == 0:
        return np.zeros(0, np.int64), np.zeros(1, np.int64)
    order, bin_of, n_bins = _best_fit(sizes, capacity)
    by_bin = np.argsort(bin_of, kind="stable")  # stable: placement order within a bin
    starts = np.concatenate([[0], np.cumsum(np.bincount(bin_of, minlength=n_bins))]).astype(np.int64)
    return order[by_bin], starts


def _best_fit(sizes: np.ndarray, capacity: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(items in placement order, the bin each was placed in, number of bins)."""
    if sizes.min() < 1 or sizes.max() > capacity:
        raise ValueError(f"item sizes must be in [1, {capacity}], got [{sizes.min()}, {sizes.max()}]")
    order = np.argsort(-sizes, kind="stable")
    size_p = 1
    while size_p < capacity + 1:
        size_p *= 2
    tree = np.zeros(2 * size_p, dtype=np.int64).tolist()  # counts of open bins per remaining capacity
    stacks: list[list[int]] = [[] for _ in range(capacity + 1)]
    bin_of = array("q")  # per placed item: its bin (8 bytes each, no Python objects)
    remaining: list[int] = []

    def add(r: int, delta: int) -> None:
        i = r + size_p
        while i:
            tree[i] += delta
            i >>= 1

    def first_at_least(s: int) -> int:
        """Smallest remaining capacity r >= s with an open bin, or -1."""
        i = s + size_p
        if tree[i]:
            return s
        # climb until a right sibling subtree has something
        while i > 1:
            if i & 1 == 0 and tree[i + 1]:
                i += 1
                break
            i >>= 1
        else:
            return -1
        if i == 1:
            return -1
        while i < size_p:  # descend to the leftmost non-empty leaf
            i = 2 * i if tree[2 * i] else 2 * i + 1
        return i - size_p

    for s in sizes[order].tolist():
        r = first_at_least(s)
        if r < 0:
            b = len(remaining)
            remaining.append(capacity - s)
        else:
            b = heapq.heappop(stacks[r])  # ties: the oldest bin, like textbook BFD
            add(r, -1)
            remaining[b] = r - s
        bin_of.append(b)
        left = remaining[b]
        if left > 0:
            heapq.heappush(stacks[left], b)
            add(left, +1)
    return order.astype(np.int64), np.frombuffer(bin_of, np.int64), len(remaining)


def packing_efficiency(sizes: np.ndarray, n_rows: int, capacity: int) -> float:
    """Share of row positions holding a real token (1.0 = no padding)."""
    if n_rows == 0:
        return 0.0
    return float(np.asarray(sizes).sum()) / float(n_rows * capacity)
