"""The tokenized corpus stays on disk: the token ids and trained flags of a cached source are
written once as .npy files beside its Arrow cache and memory-mapped, so memory does not grow
with the tokens. They equal the arrays built in memory, and a second pipeline reads the same
files and makes the same batches."""

from __future__ import annotations

import json
import random

import datasets
import numpy as np

from runtime.data.pipeline import DataPipeline, trained_between
from runtime.data.tokenize import flat_columns
from runtime.plan.data_plan import DataPlan, SourceSpec
from tests.runtime.data_helpers import wordlevel_tokenizer

NUMBERS = "zero one two three four five six seven eight nine".split()


def _plan(path) -> DataPlan:
    return DataPlan(
        sources=(SourceSpec(name="sums", kind="jsonl", paths=(str(path),)),),
        seq_len=32,
        packing=True,
        global_batch_size=4,
        epochs=1,
    )


def test_tokens_are_memory_mapped_and_equal_the_in_memory_arrays(tmp_path):
    rnd = random.Random(0)
    rows = [
        {
            "prompt": f"what is {rnd.choice(NUMBERS)} plus {rnd.choice(NUMBERS)} ?",
            "completion": " ".join(rnd.choice(NUMBERS) for _ in range(rnd.randint(1, 6))),
        }
        for _ in range(300)
    ]
    path = tmp_path / "sums.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tokenizer, cache = wordlevel_tokenizer(), str(tmp_path / "cache")
    first = DataPipeline(_plan(path), tokenizer, cache)
    (source,) = first._tables
    assert isinstance(source.tokens, np.memmap) and isinstance(source.trained, np.memmap)
    assert len(list((tmp_path / "cache").rglob("*.tokens.npy"))) == 1
    assert not list((tmp_path / "cache").rglob("*.tmp"))

    (shard,) = source.cache_files  # 300 rows: one shard
    table = datasets.Dataset.from_file(shard).with_format("arrow")[:]
    tokens, trained, offsets = flat_columns(table, None)
    np.testing.assert_array_equal(source.tokens, tokens)
    np.testing.assert_array_equal(source.trained, trained)
    np.testing.assert_array_equal(source.offsets, offsets)  # no bad rows here: every row is an example
    assert first.stats.sources["sums"].train_trained_tokens == int(
        sum(trained[a + 1 : b].sum() for a, b in zip(offsets[:-1], offsets[1:]))
    )

    second = DataPipeline(_plan(path), tokenizer, cache)
    assert second._tables[0].cache_hit and isinstance(second._tables[0].tokens, np.memmap)
    assert first.total_steps == second.total_steps > 10
    for step in range(first.total_steps):
        a, b = first.batch(step), second.batch(step)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_trained_between_counts_in_chunks_like_one_sum():
    rng = np.random.default_rng(0)
    trained = rng.integers(0, 2, 10_000).astype(np.int8)
    starts = np.sort(rng.choice(9_000, 500, replace=False))
    ends = starts + rng.integers(0, 900, 500)
    expected = sum(int(trained[a:b].sum()) for a, b in zip(starts, ends))
    assert trained_between(trained, starts, ends, chunk=7) == trained_between(trained, starts, ends) == expected
