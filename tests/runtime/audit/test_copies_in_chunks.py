"""`find_copies` holds a fixed few bytes per row besides the examples: texts are read from the
examples a chunk at a time, exact copies are grouped by an 8-byte digest of the normalized text
(and compared text by text within a digest), and what is kept per row is arrays, not Python
objects. These tests pin what that relies on: any chunking and any digest find the same copies,
and the memory that grows with the rows is far below a copy of the texts."""

from __future__ import annotations

import dataclasses
import os
import pickle
import random
import tracemalloc
from collections import Counter

import pytest

import runtime.audit.near_copies as nc
from runtime.audit.audited_example import AuditedExample
from runtime.audit.near_copies import _same_text, _Shingler, find_copies, shingles
from runtime.audit.suspect_rows import common_affixes
from tests.runtime.audit.planted import planted

DIGEST = nc._digest


def _findings(copies: nc.Copies) -> tuple:
    return copies.duplicates, copies.near_duplicates, copies.leaks, copies.conflicts


@pytest.fixture(scope="module")
def shuffled():
    """Planted copies, leaks and conflicts, with eval rows among the training rows and the
    sources interleaved (one of them with a long system prompt: boilerplate), and their copies."""
    examples = list(planted(seed=4, n=300, per_kind=10).examples)
    random.Random(4).shuffle(examples)
    found = find_copies(examples)
    assert found.duplicates and found.near_duplicates and found.leaks and found.conflicts
    assert any(not leak.exact for leak in found.leaks) and any(not c.exact for c in found.conflicts)
    return examples, found


def test_small_chunks_and_blocks_find_the_same_copies(shuffled, monkeypatch):
    examples, whole = shuffled
    monkeypatch.setattr(nc, "CHUNK_CHARS", 2_000)  # a few rows per chunk (the texts span ~150 chunks)
    monkeypatch.setattr(nc, "ROW_BLOCK", 7)
    monkeypatch.setattr(nc, "PAIR_BLOCK", 5)
    assert _findings(find_copies(examples)) == _findings(whole)


@pytest.mark.parametrize("digest", [lambda text: bytes(8), lambda text: DIGEST(text)[:1] * 8])
def test_texts_that_share_a_digest_are_told_apart(shuffled, monkeypatch, digest):
    examples, whole = shuffled
    monkeypatch.setattr(nc, "_digest", digest)  # every text one digest, or 256 digests in all
    assert _findings(find_copies(examples)) == _findings(whole)


def test_same_text_is_the_first_row_with_the_normalized_text(monkeypatch):
    import numpy as np

    texts = ["a b", "c", "a  b", "A b", "a b\n", "", "c ", " "]
    expected = [0, 1, 0, 3, 0, 5, 1, 5]
    rows = np.arange(len(texts))
    assert _same_text(rows, texts.__getitem__).tolist() == expected
    monkeypatch.setattr(nc, "_digest", lambda text: bytes(8))
    assert _same_text(rows, texts.__getitem__).tolist() == expected
    assert _same_text(rows[2:], texts.__getitem__).tolist() == [2, 3, 2, 5, 6, 5]


def test_boilerplate_counted_in_chunks_is_the_same(shuffled, monkeypatch):
    examples, _ = shuffled
    texts, sources = [e.text for e in examples], [e.source for e in examples]
    whole = _Shingler(texts, sources, range(len(texts))).boilerplate
    monkeypatch.setattr(nc, "CHUNK_CHARS", 3_000)
    chunked = _Shingler(texts, sources, range(len(texts))).boilerplate
    assert whole and whole.keys() == chunked.keys()
    assert all((whole[s] == chunked[s]).all() for s in whole)


def test_boilerplate_of_a_sample_is_what_the_sampled_texts_share(shuffled, monkeypatch):
    """Past BOILERPLATE_SAMPLE texts a source's boilerplate is judged on `random.Random(0)`'s
    sample of its rows (in row order): the shingles in more than half of those texts' sets."""
    examples, _ = shuffled
    monkeypatch.setattr(nc, "BOILERPLATE_SAMPLE", 40)
    monkeypatch.setattr(nc, "CHUNK_CHARS", 3_000)
    texts, sources = [e.text for e in examples], [e.source for e in examples]
    shingler = _Shingler(texts, sources, range(len(texts)))
    code = list(dict.fromkeys(sources)).index("support")
    rows = [i for i, s in enumerate(sources) if s == "support"]
    sample = random.Random(0).sample(rows, 40)
    counts = Counter(h for i in sample for h in shingles(texts[i]).tolist())
    expected = sorted(h for h, c in counts.items() if c > 20)
    assert len(rows) > 40 and expected and shingler.boilerplate[code].tolist() == expected


def test_memory_that_grows_with_the_rows_is_far_below_a_copy_of_the_texts(monkeypatch):
    """Past the fixed buffers (made small here), each row costs a few arrays' elements: under
    600 bytes a row for rows of about 2,000 characters (one copy of the texts would be 2,000)."""
    monkeypatch.setattr(nc, "CHUNK_CHARS", 20_000)
    monkeypatch.setattr(nc, "PAIR_BLOCK", 64)
    monkeypatch.setattr(nc, "BOILERPLATE_SAMPLE", 200)
    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghijklmnop") for _ in range(rng.randint(3, 9))) for _ in range(3000)]

    def rows(n: int) -> list[AuditedExample]:
        def text(k: int) -> str:
            return " ".join(rng.choice(words) for _ in range(k))

        return [
            AuditedExample(
                f"s:s.jsonl:{i}", "s", "eval" if i % 10 == 0 else "train", f"s.jsonl:{i}", text(40), text(280), 1, 1
            )
            for i in range(n)
        ]

    peaks = []
    for n in (300, 900):
        examples = rows(n)
        tracemalloc.start()
        try:
            find_copies(examples)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    assert sum(len(e.text) for e in examples) / len(examples) > 2_000
    assert (peaks[1] - peaks[0]) / 600 < 600, peaks


def testcommon_affixes_in_one_pass_are_those_of_the_distinct_texts():
    rng = random.Random(1)
    for _ in range(200):
        pool = ["".join(rng.choice("ab ") for _ in range(rng.randint(0, 6))) for _ in range(3)]
        texts = [rng.choice(pool) for _ in range(rng.randint(0, 6))]
        distinct = list(dict.fromkeys(texts))
        expected = ("", "")
        if len(distinct) >= 2:
            expected = (os.path.commonprefix(distinct), os.path.commonprefix([t[::-1] for t in distinct])[::-1])
        assert common_affixes(iter(texts)) == expected, texts


def test_an_audited_example_is_slotted_and_keeps_its_attributes():
    e = AuditedExample("s:f.jsonl:3#1", "s", "train", "f.jsonl:3#1", "Q? ", "A.", 5, 9)
    assert not hasattr(e, "__dict__")
    assert (e.id, e.source, e.split, e.where, e.prompt, e.completion, e.tokens, e.full_tokens) == (
        "s:f.jsonl:3#1", "s", "train", "f.jsonl:3#1", "Q? ", "A.", 5, 9
    )  # fmt: skip
    assert e.text == "Q? A."
    assert pickle.loads(pickle.dumps(e)) == e and dataclasses.replace(e, split="eval").split == "eval"
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.prompt = "x"  # type: ignore[misc]
