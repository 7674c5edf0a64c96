"""Before → after: a run on a pretrained base also scores the base model on the same eval rows,
shows base → tuned in its report, judges `gain(...)` gates, and caches the baseline's answers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sftlang.cli import main
from tests.fixtures import copy_fixtures
from tests.runtime.run_helpers import NUMBERS, save_tiny_base

pytestmark = pytest.mark.slow  # whole runs over a pretrained base with a baseline: about 50 s on 2 cores

SPEC = """\
sft "before-after"
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
    steps = 30
    batch = 8
    seq_len = 16
    optimizer = adamw(lr = 1e-2)
    checkpoint = every 30 steps keep 1
}
eval {
    generate = greedy(max_new_tokens = 3)
    samples  = all
}
accept {
    gain(loss) >= 0.5
    gain(token_accuracy) >= -1
    gain(exact_match) >= -100%
}
output {
    dir    = "runs/{name}"
    export = none
}
"""


def _write(root, spec: str = SPEC) -> None:
    save_tiny_base(root / "base")
    copy_fixtures(root, "sums.jsonl")  # tests/fixtures/data/sums.jsonl
    (root / "ba.sft").write_text(spec)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A random pretrained base, the sums data and a first run on it (exit 0: every gain gate holds)."""
    root = tmp_path_factory.mktemp("before_after")
    with pytest.MonkeyPatch.context() as mp:  # cwd and SFTC_CACHE restored even when the setup fails
        mp.chdir(root)
        mp.setenv("SFTC_CACHE", str(root / "cache"))
        _write(root)
        assert main(["run", "ba.sft"]) == 0
        yield root


def _runs(root):
    return sorted((root / "runs" / "before-after").iterdir())


def _report(run_dir) -> dict:
    return json.loads((run_dir / "report.json").read_text())


def test_the_report_shows_base_to_tuned_and_the_gain_gates(project):
    report = _report(_runs(project)[0])
    base, tuned = report["baseline"]["metrics"], report["metrics"]
    assert report["baseline"]["kind"] == "base" and not report["baseline"]["cached"]
    assert base["loss"] > tuned["loss"] + 0.5  # a random base against a model that learned the sums
    gates = {g["gate"]: g for g in report["gates"]}
    assert gates["gain(loss)"]["value"] == pytest.approx(base["loss"] - tuned["loss"])  # lower is better
    assert gates["gain(token_accuracy)"]["value"] == pytest.approx(tuned["token_accuracy"] - base["token_accuracy"])
    assert all(g["passed"] for g in report["gates"])
    # the baseline answered the same rows, listed in the order of the tuned samples
    ids = lambda samples: [(s["source"], s["file"], s["line"]) for s in samples]  # noqa: E731
    assert ids(report["baseline"]["samples"]) == ids(report["samples"]) and len(report["samples"]) == 10
    assert [s["prompt"] for s in report["baseline"]["samples"]] == [s["prompt"] for s in report["samples"]]
    md = (_runs(project)[0] / "report.md").read_text()
    assert "## Before → after" in md and "Baseline: the base model." in md
    assert "| `loss` | all |" in md and "Baseline (" in md


def test_the_baseline_is_the_base_model_as_transformers_runs_it(project):
    """The baseline's greedy answers are transformers' greedy answers of the base checkpoint."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    model = AutoModelForCausalLM.from_pretrained(project / "base").eval()
    tokenizer = AutoTokenizer.from_pretrained(project / "base")
    samples = _report(_runs(project)[0])["baseline"]["samples"]
    assert len(samples) == 10
    for sample in samples[:4]:
        ids = torch.tensor([tokenizer(sample["prompt"], add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=3,
                do_sample=False,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        new = [t for t in out[0, ids.shape[1] :].tolist() if t != tokenizer.eos_token_id]
        assert tokenizer.decode(new, skip_special_tokens=True) == sample["generated"]


def test_a_gain_gate_that_does_not_hold_rejects_the_run_and_the_baseline_comes_from_the_cache(project, capsys):
    """An iteration that changes training only reuses the cached baseline; one whose gain gate
    cannot hold is rejected with the gate's value."""
    spec = SPEC.replace("gain(loss) >= 0.5", "gain(loss) >= 50").replace("steps = 30", "steps = 20")
    (project / "ba.sft").write_text(spec)
    try:
        assert main(["run", "ba.sft"]) == 3
    finally:
        (project / "ba.sft").write_text(SPEC)
    first, second = (_report(r) for r in _runs(project)[:2])
    by_row = lambda report: sorted(report["baseline"]["samples"], key=lambda s: s["line"])  # noqa: E731
    assert second["baseline"]["cached"] and by_row(second) == by_row(first)
    failed = [g for g in second["gates"] if not g["passed"]]
    assert [g["gate"] for g in failed] == ["gain(loss)"] and failed[0]["value"] > 0.5
    assert "gain(loss)" in capsys.readouterr().err


def test_sftc_eval_applies_the_gain_gates_again(project, capsys):
    run_dir = _runs(project)[0]
    assert main(["eval", str(run_dir)]) == 0
    (again,) = sorted((run_dir / "evals").iterdir())
    report, first = _report(again), _report(run_dir)
    assert report["baseline"]["cached"]
    assert {g["gate"]: g["value"] for g in report["gates"]} == pytest.approx(
        {g["gate"]: g["value"] for g in first["gates"]}, abs=1e-5
    )


def test_a_lora_baseline_is_the_base_too(project, monkeypatch):
    """With LoRA the baseline is the trained graph with zeroed adapters: the same answers and
    the same loss as the full fine-tune's reloaded base (computed again: an empty cache)."""
    monkeypatch.setenv("SFTC_CACHE", str(project / "cache-lora"))
    spec = SPEC.replace(
        '    base = hf("base")\n', '    base = hf("base")\n    adapter = lora(rank = 4, targets = [q, v])\n'
    )
    spec = spec.replace('sft "before-after"', 'sft "before-after-lora"').replace("gain(loss) >= 0.5", "gain(loss) >= 0")
    (project / "lora.sft").write_text(spec)
    assert main(["run", "lora.sft"]) in (0, 3)
    (run_dir,) = sorted((project / "runs" / "before-after-lora").iterdir())
    lora, full = _report(run_dir)["baseline"], _report(_runs(project)[0])["baseline"]
    assert not lora["cached"]
    answers = lambda baseline: [s["generated"] for s in sorted(baseline["samples"], key=lambda s: s["line"])]  # noqa: E731
    assert answers(lora) == answers(full)
    np.testing.assert_allclose(lora["metrics"]["loss"], full["metrics"]["loss"], rtol=1e-5)


def test_a_few_shot_baseline_puts_training_examples_before_each_prompt(project):
    spec = SPEC.replace("    samples  = all\n", "    samples  = 4\n    baseline = few_shot(k = 2, seed = 3)\n")
    spec = spec.replace('sft "before-after"', 'sft "before-after-few"')
    spec = spec.replace("    gain(loss) >= 0.5\n    gain(token_accuracy) >= -1\n", "")
    (project / "few.sft").write_text(spec)
    assert main(["run", "few.sft"]) == 0
    (run_dir,) = sorted((project / "runs" / "before-after-few").iterdir())
    report = _report(run_dir)
    assert report["baseline"]["kind"] == "few_shot" and report["baseline"]["k"] == 2
    assert "loss" not in report["baseline"]["metrics"]  # generation metrics only
    shots = None
    for tuned, base in zip(report["samples"], report["baseline"]["samples"]):
        # one BOS first, then the two examples (each closed by its EOS), then the row's own prompt
        assert tuned["prompt"].startswith("<s> ") and base["prompt"].startswith("<s> ")
        question = tuned["prompt"].removeprefix("<s> ")
        assert base["prompt"].endswith(" </s> " + question) and base["prompt"].count("<s>") == 1
        prefix = base["prompt"][: -len(question)]
        assert shots in (None, prefix)  # the same examples before every row of the source
        shots = prefix
    train_rows = {
        f"what is {NUMBERS[a]} plus {NUMBERS[b]}? {NUMBERS[(a + b) % 10]} </s>" for a in range(10) for b in range(10)
    }
    assert sum(row in shots for row in train_rows) == 2 and shots.count("</s>") == 2


REVIEW_GATES = """\
accept {
    review_score >= 4
    review_flagged <= 10%
    review_wins >= 50%
}
"""


def _judge(run_dir, rows: int, tuned_score: int = 5, base_score: int = 2, stale: bool = False) -> None:
    """Two experts' judgements of the first ``rows`` rows, as `sftc review` stores them."""
    from runtime.plan.run_inputs import eval_fingerprints
    from runtime.review.store import Judgement, ReviewStore, answer_sha, row_ids

    report = _report(run_dir)
    fingerprint = eval_fingerprints(json.loads((run_dir / "manifest.json").read_text()))["sums"]
    base = {(b["file"], b["line"]): b for b in report["baseline"]["samples"]}
    store = ReviewStore(run_dir)
    for rid, sample in zip(row_ids(report["samples"][:rows]), report["samples"][:rows]):
        shown = sample["generated"] + (" (edited since)" if stale else "")
        for reviewer in ("ada", "lin"):
            store.add(Judgement(rid, "tuned", reviewer, tuned_score, False, None, None, fingerprint, answer_sha(shown)))
            other = base[(sample["file"], sample["line"])]["generated"]
            store.add(Judgement(rid, "base", reviewer, base_score, False, None, None, fingerprint, answer_sha(other)))


def test_review_gates_wait_for_every_row_and_sftc_eval_applies_them(project):
    spec = SPEC[: SPEC.index("accept {")] + REVIEW_GATES + SPEC[SPEC.index("output {") :]
    (project / "reviewed.sft").write_text(spec.replace('sft "before-after"', 'sft "reviewed"'))
    assert main(["run", "reviewed.sft"]) == 3  # nothing reviewed yet
    (run_dir,) = sorted((project / "runs" / "reviewed").iterdir())
    reasons = {g["gate"]: g["reason"] for g in _report(run_dir)["gates"]}
    assert all(r.startswith("10 of 10 rows remain to be reviewed: `sftc review ") for r in reasons.values())
    _judge(run_dir, 10, stale=True)  # judgements of other answers than the ones shown now do not count
    _judge(run_dir, 9)
    assert main(["eval", str(run_dir)]) == 3
    newest = sorted((run_dir / "evals").iterdir())[-1]
    assert all(g["reason"].startswith("1 of 10 rows remain") for g in _report(newest)["gates"])
    _judge(run_dir, 10)
    assert main(["eval", str(run_dir)]) == 0
    newest = sorted((run_dir / "evals").iterdir())[-1]
    values = {g["gate"]: g["value"] for g in _report(newest)["gates"]}
    assert values == {"review_score": 5.0, "review_flagged": 0.0, "review_wins": 1.0}


@pytest.mark.slow
def test_an_edited_eval_file_is_not_served_the_cached_baseline_and_a_forced_export_says_it_was_rejected(
    tmp_path, monkeypatch, capsys
):
    """`split eval = jsonl(...)`: editing the eval file makes other prompts and references, so the
    baseline is computed again (it was served from the cache while only training files were
    fingerprinted). The second run is rejected and exported because `--export` asks: it says so
    once, not both "export:" and "no export"."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SFTC_CACHE", str(tmp_path / "cache"))
    separate = SPEC.replace("split eval = 10% seed 1", 'split eval = jsonl("held.jsonl")')
    _write(tmp_path, separate)
    rows = (tmp_path / "sums.jsonl").read_text().splitlines()
    (tmp_path / "sums.jsonl").write_text("\n".join(rows[:90]) + "\n")
    (tmp_path / "held.jsonl").write_text("\n".join(rows[90:]) + "\n")
    assert main(["run", "ba.sft"]) == 0
    first = _report(_runs(tmp_path)[0])
    assert not first["baseline"]["cached"]
    (tmp_path / "held.jsonl").write_text("\n".join(rows[90:][::-1]) + "\n")  # the same rows, another order
    (tmp_path / "ba.sft").write_text(
        separate.replace("gain(loss) >= 0.5", "gain(loss) >= 50").replace("export = none", "export = hf")
    )
    capsys.readouterr()
    assert main(["run", "ba.sft", "--export"]) == 3
    err = " ".join(capsys.readouterr().err.split())  # as one line: the console wraps at its width
    second = _report(_runs(tmp_path)[1])
    assert not second["baseline"]["cached"]
    by_line = lambda report: {s["line"]: s["reference"] for s in report["baseline"]["samples"]}  # noqa: E731
    assert by_line(second) == {11 - line: ref for line, ref in by_line(first).items()}  # read from the edited file
    assert "the run was not accepted; exported because --export asked" in err and "no export" not in err
