"""The eval token metrics run each eval row once: with several sources the overall figures
are the per-source sums combined, and equal a single pass over every eval row."""

from __future__ import annotations

import json

import pytest

from sftlang.cli import main
from tests.runtime.run_helpers import SPEC

pytestmark = pytest.mark.slow  # a whole run in its fixture: about 10 s on 2 cores


@pytest.fixture()
def two_sources(project):
    rows = (project / "sums.jsonl").read_text().splitlines(keepends=True)
    (project / "first.jsonl").write_text("".join(rows[:50]))
    (project / "second.jsonl").write_text("".join(rows[50:]))
    spec = SPEC.replace(
        'data sums = jsonl("sums.jsonl") {\n    split eval = 10% seed 1\n}',
        'data first = jsonl("first.jsonl") {\n    split eval = 20% seed 1\n}\n'
        'data second = jsonl("second.jsonl") {\n    split eval = 20% seed 2\n}',
    )
    spec = (
        spec.replace("template add for sums", "template add for first, second")
        .replace("steps = 12", "steps = 3")
        .replace("warmup = 2 steps", "warmup = 1 steps")
        .replace("every 4 steps", "every 3 steps")
    )
    (project / "tiny.sft").write_text(spec)
    assert main(["run", "tiny.sft"]) == 0
    (run_dir,) = sorted((project / "runs" / "tiny").iterdir())
    return run_dir


def test_per_source_sums_combine_into_the_overall_figures_in_one_pass(two_sources):
    from runtime.runs.trained_run import load_trained
    from runtime.train.token_metrics import token_metrics

    trained = load_trained(two_sources)
    pipeline = trained.with_data().pipeline
    calls = []
    eval_fn = trained.engine.eval_fn

    def counted(params, frozen, batch):
        calls.append(len(batch["input_ids"]))
        return eval_fn(params, frozen, batch)

    trained.engine.eval_fn = counted
    figures = token_metrics(trained.engine, trained.frozen, pipeline, trained.params)
    per_source_batches = len(calls)
    assert set(figures) == {None, "first", "second"}
    assert figures[None]["tokens"] == figures["first"]["tokens"] + figures["second"]["tokens"]
    calls.clear()
    loss_sum, tokens, right = trained.engine.token_sums(trained.params, trained.frozen, pipeline)
    assert tokens == figures[None]["tokens"]
    assert figures[None]["loss"] == pytest.approx(loss_sum / tokens, rel=1e-5)
    assert figures[None]["token_accuracy"] == pytest.approx(right / tokens, rel=1e-6)
    assert per_source_batches <= len(calls) + 1  # each source once, never the whole set again
    records = [json.loads(line) for line in (two_sources / "metrics.jsonl").read_text().splitlines()]
    final = {r["source"]: r["loss"] for r in records if r["kind"] == "eval" and r["step"] == 3}
    assert final[None] == pytest.approx(figures[None]["loss"], rel=1e-5)
