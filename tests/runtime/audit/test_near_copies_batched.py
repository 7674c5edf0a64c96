"""The batched (numpy) near-copy search computes what the per-text definitions say: the same
shingle sets as ``shingles``, the same MinHash signatures as `datasketch.MinHash`, and every pair
at or above the threshold that a brute-force Jaccard finds."""

from __future__ import annotations

import itertools
import random

import numpy as np
from datasketch import MinHash

from runtime.audit.audited_example import AuditedExample
from runtime.audit.near_copies import (
    _lower,
    _Shingler,
    _signatures,
    _window_hashes,
    find_copies,
    jaccard,
    shingles,
)

TEXTS = [
    "",
    "   ",
    "a",
    "Hi",
    "abcd",
    "abcde",
    "Hello   World, this is a  test.",
    "Grüße aus Köln — wie geht's?",
    "你好，我的订单在哪里？请帮我查一下。",
    "emoji 😀 in the middle 😀 twice",
    "aaaaaaaaaaaaaaaa",
]


def test_batched_shingles_equal_the_per_text_sets():
    owner, hashes = _window_hashes([_lower(t) for t in TEXTS])
    for k, text in enumerate(TEXTS):
        assert np.array_equal(np.unique(hashes[owner == k]), shingles(text)), text
    sets = _Shingler(TEXTS, ["s"] * len(TEXTS), range(len(TEXTS)))
    owner, hashes = sets.rows(list(range(len(TEXTS))), distinct=True)
    for k, text in enumerate(TEXTS):
        assert np.array_equal(hashes[owner == k], shingles(text)), text


def test_signatures_equal_datasketch_minhash():
    a, b = MinHash(num_perm=64, seed=1).permutations.astype(np.uint32)
    owner, hashes = _window_hashes([_lower(t) for t in TEXTS])
    ours = _signatures(owner, hashes, len(TEXTS), a, b)
    for k, text in enumerate(TEXTS):
        m = MinHash(num_perm=64, seed=1, hashfunc=lambda v: v)
        values = shingles(text)
        if len(values):
            m.update_batch(values)
        assert np.array_equal(ours[k], m.hashvalues), text


def test_every_pair_at_the_threshold_is_found_and_no_other():
    rng = random.Random(3)
    words = ["".join(rng.choice("abcdefghij") for _ in range(rng.randint(3, 8))) for _ in range(400)]
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(20, 40))) for _ in range(150)]
    for t in list(texts[:60]):  # near copies: 1 to 4 words replaced
        w = t.split(" ")
        for i in rng.sample(range(len(w)), rng.randint(1, 4)):
            w[i] = rng.choice(words)
        texts.append(" ".join(w))
    examples = [
        AuditedExample(f"s:s.jsonl:{i}", "s", "train", f"s.jsonl:{i}", t, "", 1, 1) for i, t in enumerate(texts)
    ]
    copies = find_copies(examples, threshold=0.85)
    found = {
        frozenset(p)
        for g in copies.duplicates + copies.near_duplicates
        for p in itertools.combinations(g.rows, 2)
        if jaccard(shingles(texts[p[0]]), shingles(texts[p[1]])) >= 0.85
    }
    sets = [shingles(t) for t in texts]
    truth = {
        frozenset((i, j)) for i, j in itertools.combinations(range(len(texts)), 2) if jaccard(sets[i], sets[j]) >= 0.85
    }
    assert truth and found == truth
    for g in copies.near_duplicates:  # each group's weakest link is a confirmed similarity
        assert 0.85 <= g.similarity <= 1.0
