"""A source is tokenized and cached in shards: sharded preparation equals one piece (tokens,
batches, the file lines of bad rows), an interrupted preparation redoes only the missing shard,
and the processes of a job split the shards between them, on a shared cache and on separate
ones. Processes are threads here with a real barrier; `test_multiprocess` runs real ones."""

from __future__ import annotations

import json
import random
import threading

import numpy as np
import pytest

from runtime.data import tokenize as tokenize_mod
from runtime.data.pipeline import DataPipeline
from runtime.plan.data_plan import DataPlan, SourceSpec
from runtime.platform.process_share import Share
from tests.runtime.data_helpers import wordlevel_tokenizer

NUMBERS = "zero one two three four five six seven eight nine".split()
ROWS, SHARD = 300, 70  # five shards, the last one short
BAD_LINE = 251  # in the fourth shard


def _write(tmp_path):
    rnd = random.Random(1)
    lines = []
    for i in range(1, ROWS + 1):
        row = {
            "prompt": f"what is {rnd.choice(NUMBERS)} plus {rnd.choice(NUMBERS)} ?",
            "completion": " ".join(rnd.choice(NUMBERS) for _ in range(rnd.randint(1, 6))),
        }
        if i == BAD_LINE:
            row = {"prompt": "no completion here", "completion": None}
        lines.append(json.dumps(row))
    path = tmp_path / "sums.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return DataPlan(
        sources=(SourceSpec(name="sums", kind="jsonl", paths=(str(path),), on_bad_row="skip"),),
        seq_len=32,
        packing=True,
        global_batch_size=4,
        epochs=1,
    )


def _same(a: DataPipeline, b: DataPipeline) -> None:
    (x,), (y,) = a._tables, b._tables
    np.testing.assert_array_equal(x.tokens, y.tokens)
    np.testing.assert_array_equal(x.trained, y.trained)
    np.testing.assert_array_equal(x.rows, y.rows)
    assert [(r.file, r.row, r.reason) for r in x.bad_rows] == [(r.file, r.row, r.reason) for r in y.bad_rows]
    assert a.total_steps == b.total_steps
    for step in range(a.total_steps):
        for key, value in a.batch(step).items():
            np.testing.assert_array_equal(value, b.batch(step)[key])


@pytest.fixture
def whole(tmp_path, monkeypatch):
    """The plan, and its pipeline prepared in one piece (one shard) for reference."""
    plan = _write(tmp_path)
    monkeypatch.setattr(tokenize_mod, "SHARD_ROWS", 10 * ROWS)
    reference = DataPipeline(plan, wordlevel_tokenizer(), str(tmp_path / "whole"))
    monkeypatch.setattr(tokenize_mod, "SHARD_ROWS", SHARD)
    return plan, reference


def _recording(monkeypatch) -> list[tuple[str, int]]:
    """(thread name, first row of the shard) of every batch actually tokenized."""
    seen: list[tuple[str, int]] = []
    original = tokenize_mod._Tokenize.__call__

    def call(self, batch, indices):
        seen.append((threading.current_thread().name, self.first_row))
        return original(self, batch, indices)

    monkeypatch.setattr(tokenize_mod._Tokenize, "__call__", call)
    return seen


def test_sharded_preparation_equals_one_piece_and_resumes_by_shard(tmp_path, monkeypatch, whole):
    plan, reference = whole
    seen = _recording(monkeypatch)
    cache = tmp_path / "sharded"
    sharded = DataPipeline(plan, wordlevel_tokenizer(), str(cache))
    assert sorted(first for _, first in seen) == [0, 70, 140, 210, 280]
    _same(sharded, reference)
    (bad,) = sharded._tables[0].bad_rows
    assert bad.row == BAD_LINE  # the shard's rows are counted from its first row
    files = sharded._tables[0].cache_files
    assert [f.rsplit("-", 1)[1] for f in files] == [f"{k:05d}of00005.arrow" for k in range(1, 6)]

    # interrupted: one shard and the token arrays never written; only that shard is tokenized again
    seen.clear()
    (tmp_path / files[2]).unlink()
    for array in cache.rglob("*.npy"):
        array.unlink()
    again = DataPipeline(plan, wordlevel_tokenizer(), str(cache))
    assert [first for _, first in seen] == [140]
    assert not again.stats.sources["sums"].cache_hit
    _same(again, reference)
    seen.clear()
    assert DataPipeline(plan, wordlevel_tokenizer(), str(cache)).stats.sources["sums"].cache_hit and not seen


def _job(plan, caches: list[str]) -> tuple[list[DataPipeline], dict[str, list[str]]]:
    """Two "processes" (threads) preparing ``plan`` at once, each with its own cache directory
    (the same one twice: a shared disk). Returns their pipelines and the barriers each passed."""
    gate = threading.Barrier(2, timeout=120)
    barriers: dict[str, list[str]] = {"p0": [], "p1": []}
    out: list = [None, None]

    def process(index: int) -> None:
        def barrier(name: str) -> None:
            barriers[f"p{index}"].append(name)
            gate.wait()

        try:
            out[index] = DataPipeline(plan, wordlevel_tokenizer(), caches[index], share=Share(index, 2, barrier))
        except BaseException as error:  # noqa: BLE001 - reported by the test below
            out[index] = error
            gate.abort()

    threads = [threading.Thread(target=process, args=(i,), name=f"p{i}") for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    for result in out:
        if isinstance(result, BaseException):
            raise result
    return out, barriers


def test_two_processes_on_a_shared_cache_each_tokenize_their_own_shards(tmp_path, monkeypatch, whole):
    plan, reference = whole
    seen = _recording(monkeypatch)
    pipelines, barriers = _job(plan, [str(tmp_path / "shared")] * 2)
    by_process = {name: sorted(first for who, first in seen if who == name) for name in ("p0", "p1")}
    assert by_process == {"p0": [0, 140, 280], "p1": [70, 210]}  # shards 1, 3, 5 and 2, 4; none twice
    assert barriers["p0"] == barriers["p1"] and len(barriers["p0"]) >= 2  # the same barriers, in order
    for pipeline in pipelines:
        _same(pipeline, reference)


def test_two_processes_on_separate_caches_each_fill_in_what_they_lack(tmp_path, monkeypatch, whole):
    plan, reference = whole
    seen = _recording(monkeypatch)
    pipelines, _ = _job(plan, [str(tmp_path / "host0"), str(tmp_path / "host1")])
    for name in ("p0", "p1"):
        assert sorted(first for who, first in seen if who == name) == [0, 70, 140, 210, 280]
    for pipeline in pipelines:
        _same(pipeline, reference)
