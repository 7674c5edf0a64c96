"""A process where JAX has started never forks a tokenizing worker (a forked child of a
multithreaded process can deadlock on a lock another thread held): `num_proc` then tokenizes
in the process itself, which bench/tokenize_workers.py measured as fast as a pool on 2 cores."""

from __future__ import annotations

import os

import jax

from runtime.data.pipeline import build_pipeline
from runtime.plan.data_plan import DataPlan, SourceSpec, TemplateSpec
from tests.runtime.data_helpers import wordlevel_tokenizer, write_jsonl


def test_data_preparation_in_a_jax_process_never_forks(tmp_path, monkeypatch):
    jax.devices()  # the backend is up and its threads run, as in `sftc run`

    def fork():
        raise AssertionError("os.fork() in a process where JAX has started its threads")

    monkeypatch.setattr(os, "fork", fork)
    path = write_jsonl(str(tmp_path / "rows.jsonl"), [{"q": f"hello {i}", "a": "hi"} for i in range(40)])
    plan = DataPlan(
        sources=(SourceSpec(name="s", kind="jsonl", paths=(path,)),),
        templates={"s": TemplateSpec(prompt="question : {q} answer :", completion=" {a}")},
        seq_len=32,
        global_batch_size=2,
    )
    pipe = build_pipeline(plan, wordlevel_tokenizer(), cache_dir=str(tmp_path / "c"), num_proc=2)
    assert pipe.stats.sources["s"].rows == 40
