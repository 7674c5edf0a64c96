"""Standard benchmarks where they meet the rest of a run: `eval.benchmarks` scored on the tuned
model and on the base, in the report and the terminal, judged by `acc(task)` and `gain(...)`
gates, the base's scores served from the baseline cache when only training changed and scored
again when a task's files change, `sftc eval RUN --benchmarks` on a finished run, `sftc diff`.

The base's scores are lm_eval's own Hugging Face backend's on the same checkpoint (the run is a
full fine-tune, so its baseline is the base reloaded). Slow: three short runs on a tiny random
base, each scoring the shipped multiple-choice task (8 questions) twice."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sftlang.cli import main
from tests.fixtures import copy_fixtures
from tests.runtime.run_helpers import save_tiny_base

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]
TASK = "sftc_general_mc"

SPEC = """\
sft "bench"
model {
    base = hf("base")
}
data sums = jsonl("sums.jsonl") {
    split eval = 10% seed 1
}
template add for sums {
    prompt = "what is {a} plus {b} ? "
    completion = "{c}"
}
train {
    steps = 20
    batch = 8
    seq_len = 16
    optimizer = adamw(lr = 1e-2)
    checkpoint = every 20 steps keep 1
}
eval {
    generate   = greedy(max_new_tokens = 3)
    samples    = 6
    benchmarks = lm_eval(tasks = [sftc_general_mc], include = "tasks", limit = 8)
}
accept {
    gain(acc(sftc_general_mc)) >= -100%
    acc_norm(sftc_general_mc)  >= 0
}
output {
    dir    = "runs/{name}"
    export = none
}
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A random pretrained base with a 512-position window, the sums data, the shipped tasks
    copied (so that a test can edit one) and a first run."""
    pytest.importorskip("lm_eval")
    root = tmp_path_factory.mktemp("bench")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("SFTC_CACHE", str(root / "cache"))
        save_tiny_base(root / "base", positions=512)
        copy_fixtures(root, "sums.jsonl")
        shutil.copytree(ROOT / "specs" / "benchmarks", root / "tasks")
        (root / "bench.sft").write_text(SPEC)
        assert main(["run", "bench.sft"]) == 0
        yield root


def _runs(root: Path) -> list[Path]:
    return sorted((root / "runs" / "bench").iterdir())


def _report(run_dir: Path) -> dict:
    return json.loads((run_dir / "report.json").read_text())


def test_the_report_scores_base_and_tuned_and_the_gates_judge_them(project):
    run_dir = _runs(project)[0]
    report = _report(run_dir)
    tuned, base = report["benchmarks"]["tuned"], report["benchmarks"]["base"]
    assert tuned["documents"][TASK] == 8 and base["documents"][TASK] == 8
    for scores in (tuned["scores"][TASK], base["scores"][TASK]):
        assert set(scores) >= {"acc", "acc_norm"} and all(0 <= v <= 1 for v in scores.values())
    assert report["metrics"][f"acc({TASK})"] == tuned["scores"][TASK]["acc"]
    assert report["baseline"]["metrics"][f"acc({TASK})"] == base["scores"][TASK]["acc"]
    gates = {g["gate"]: g for g in report["gates"]}
    gain = gates[f"gain(acc({TASK}))"]
    assert gain["value"] == pytest.approx(tuned["scores"][TASK]["acc"] - base["scores"][TASK]["acc"])
    assert gain["passed"] and gain["task"] == TASK and gain["source"] is None
    md = (run_dir / "report.md").read_text()
    assert "## Standard benchmarks" in md and f"| `{TASK}` | `acc` |" in md
    # a task is not a data source: no column of its own in the metrics table
    assert f"| metric | all | {TASK} |" not in md


def test_the_base_scores_are_lm_evals_own_on_the_base_checkpoint(project):
    """The baseline reloads the base; lm_eval's Hugging Face backend on that checkpoint agrees."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    base = _report(_runs(project)[0])["benchmarks"]["base"]["scores"][TASK]
    peer = HFLM(pretrained=str(project / "base"), device="cpu", dtype="float32", batch_size=8)
    results = lm_eval.simple_evaluate(
        model=peer, tasks=[TASK], limit=8, task_manager=TaskManager(include_path=str(project / "tasks"))
    )
    theirs = results["results"][TASK]
    assert base["acc"] == pytest.approx(theirs["acc,none"], abs=1e-9)
    assert base["acc_norm"] == pytest.approx(theirs["acc_norm,none"], abs=1e-9)


def test_a_training_change_reuses_the_base_scores_and_a_task_edit_does_not(project, capsys):
    (project / "bench.sft").write_text(SPEC.replace("steps = 20", "steps = 10"))
    try:
        assert main(["run", "bench.sft"]) == 0
        second = _report(_runs(project)[1])
        assert second["baseline"]["cached"]
        assert second["benchmarks"]["base"] == _report(_runs(project)[0])["benchmarks"]["base"]
        assert "Standard benchmarks" in capsys.readouterr().err
        data = project / "tasks" / f"{TASK}.jsonl"
        rows = data.read_text().splitlines()
        first = json.loads(rows[0])
        first["question"] = first["question"] + " Think twice."
        data.write_text("\n".join([json.dumps(first), *rows[1:]]) + "\n")
        assert main(["run", "bench.sft"]) == 0
        assert not _report(_runs(project)[2])["baseline"]["cached"]
    finally:
        (project / "bench.sft").write_text(SPEC)
        shutil.copy(ROOT / "specs" / "benchmarks" / f"{TASK}.jsonl", project / "tasks")


def test_sftc_eval_scores_other_tasks_on_a_finished_run(project, capsys):
    run_dir = _runs(project)[0]
    # the spec's own task is scored too, so that its gates are judged
    assert main(["eval", str(run_dir), "--benchmarks", "sftc_arith_gen", "--limit", "4"]) == 0
    (again,) = sorted((run_dir / "evals").iterdir())
    report = _report(again)
    both = {"sftc_arith_gen": 4, TASK: 4}
    assert report["benchmarks"]["tuned"]["documents"] == both == report["benchmarks"]["base"]["documents"]
    assert "exact_match" in report["benchmarks"]["tuned"]["scores"]["sftc_arith_gen"]
    assert all(g["passed"] for g in report["gates"])
    assert "sftc_arith_gen" in capsys.readouterr().err
    # one evaluation reads one task folder: another one than the spec's is a usage error
    assert main(["eval", str(run_dir), "--benchmarks", "arc_easy", "--include", str(ROOT / "specs")]) == 2
    assert "one task folder" in capsys.readouterr().err


def test_sftc_diff_shows_the_benchmark_change_between_runs(project, capsys):
    first, second = _runs(project)[:2]
    main(["diff", str(first), str(second)])
    out = capsys.readouterr().out
    assert f"acc({TASK})" in out


def test_a_task_lm_eval_does_not_know_stops_the_run_before_its_first_step(project, capsys):
    """`sftc check` only warns (W008: its scan of lm_eval's files is a guess); lm_eval's own index decides."""
    (project / "bench.sft").write_text(SPEC.replace("tasks = [sftc_general_mc]", "tasks = [sftc_general_mc, arc_eazy]"))
    before = len(_runs(project))
    try:
        assert main(["run", "bench.sft"]) == 2
    finally:
        (project / "bench.sft").write_text(SPEC)
    err = capsys.readouterr().err
    assert "W008" in err and "'arc_eazy'" in err and "arc_easy" in err and "step 1/" not in err
    assert len(_runs(project)) == before  # no run directory was made
