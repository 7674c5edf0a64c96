"""The spec acting on the audit: `dedup` drops exactly the planted copies of a source's training
rows (counted, shown by `sftc plan`), and a data gate (`leakage == 0`) stops `sftc run` before
the first step, with the finding named, when the eval split leaks; it passes when it does not.

One project, 40 distinct prompt/completion rows of invented words, and planted: line 41 an exact
copy of line 4, line 42 an exact copy of line 10, line 43 a near copy of line 16 (one letter
added to a 40-word prompt). The eval rows come from their own file; the leaking one copies
training line 21 on its line 2."""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
from pathlib import Path

import pytest

from sftlang.cli import main

ROOT = Path(__file__).resolve().parents[3]
TOKENIZER = ROOT / "specs" / "data" / "shapes-tokenizer"
ROWS = 40
EXACT = {41: 4, 42: 10}  # planted line -> the line it copies
NEAR = {43: 16}

SPEC = """\
sft "gated"
model {
    base      = init llama(layers = 1, dim = 32, heads = 2, ffn = 64, max_seq_len = 512)
    tokenizer = hf("TOKENIZER")
}
data pc = jsonl("pc.jsonl") {
    split eval = jsonl("EVAL")
    DEDUP
}
template qa for pc {
    prompt     = "Q: {q}\\nA:"
    completion = " {a}"
}
train {
    steps     = 2
    batch     = 4
    seq_len   = 512
    optimizer = adamw(lr = 1e-3)
}
eval {
    generate = off
}
ACCEPT
output {
    dir    = "runs/{name}"
    export = none
}
"""


def _words(rng: random.Random, n: int) -> str:
    return " ".join("".join(rng.choice("abcdefghiklmnoprstuvw") for _ in range(rng.randint(4, 8))) for _ in range(n))


def _write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("gated")
    rng = random.Random(7)
    rows = [{"q": _words(rng, 40), "a": _words(rng, 6)} for _ in range(ROWS)]
    for line, original in EXACT.items():
        assert line == len(rows) + 1
        rows.append(dict(rows[original - 1]))
    ((line, original),) = NEAR.items()
    near = dict(rows[original - 1])
    near["q"] = near["q"].replace(" ", "s ", 1)  # one letter added to the first word
    rows.append(near)
    _write(root / "pc.jsonl", rows)
    evals = [{"q": _words(rng, 40), "a": _words(rng, 6)} for _ in range(3)]
    _write(root / "clean.jsonl", evals)
    _write(root / "leaking.jsonl", [evals[0], dict(rows[20]), evals[2]])
    return root


def spec(project: Path, name: str, dedup: str = "", accept: str = "", eval_file: str = "clean.jsonl") -> str:
    text = SPEC.replace("TOKENIZER", str(TOKENIZER)).replace("EVAL", eval_file)
    text = text.replace("    DEDUP\n", f"    dedup = {dedup}\n" if dedup else "")
    text = text.replace("ACCEPT\n", f"accept {{\n    {accept}\n}}\n" if accept else "")
    (project / f"{name}.sft").write_text(text.replace('sft "gated"', f'sft "{name}"'))
    return f"{name}.sft"


def sftc(root: Path, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    old = os.getcwd()
    os.chdir(root)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    finally:
        os.chdir(old)
    return code, out.getvalue(), err.getvalue()


def train_lines(project: Path, name: str) -> list[int]:
    """The training lines of the spec's pipeline, as `prepare` builds it for a run."""
    from runtime.preflight.prepare import prepare
    from sftlang.check import check_spec_file
    from sftlang.lower import lower

    checked, problems = check_spec_file(project / name, offline=True)
    assert checked is not None, problems
    prepared = prepare(lower(checked))
    return sorted(e.line for e in prepared.pipeline.examples(split="train"))


@pytest.mark.parametrize(("dedup", "dropped"), [("exact", EXACT), ("near(0.9)", EXACT | NEAR)])
def test_dedup_drops_exactly_the_planted_copies_and_plan_counts_them(project, dedup, dropped):
    name = spec(project, "dedup_" + dedup.split("(")[0], dedup=dedup)
    kept = train_lines(project, name)
    assert kept == [line for line in range(1, ROWS + 4) if line not in dropped]

    code, out, err = sftc(project, "plan", name, "--json")
    assert code == 0, err
    source = json.loads(out)["data"]["sources"]["pc"]
    assert source["dedup"] == dedup and source["deduplicated"] == len(dropped)
    assert source["train_examples"] == ROWS + 3 - len(dropped) and source["eval_examples"] == 3
    assert source["rows"] - source["bad_rows"] - source["filtered"] == (
        source["train_examples"]
        + source["eval_examples"]
        + source["dropped_overflow"]
        + source["dropped_no_trainable"]
        + source["deduplicated"]
    )
    code, out, err = sftc(project, "plan", name)
    assert code == 0, err
    assert f"deduplicated {len(dropped)} (dedup)" in out
    assert f"pc: {len(dropped)} train examples dropped as copies of an earlier one (dedup = {dedup})" in out


def test_without_dedup_nothing_is_dropped_and_the_stats_read_as_before(project):
    name = spec(project, "kept", accept="duplicates <= 1%")
    code, out, err = sftc(project, "plan", name, "--json")
    assert code == 0, err
    report = json.loads(out)
    source = report["data"]["sources"]["pc"]
    assert "dedup" not in source and "deduplicated" not in source
    assert source["train_examples"] == ROWS + 3
    assert report["data"]["data_values"] == {"duplicates": pytest.approx(3 / (ROWS + 3))}
    assert [(g["gate"], g["passed"]) for g in report["data_gates"]] == [("duplicates", False)]
    plain = spec(project, "plain")
    code, out, err = sftc(project, "plan", plain, "--json")
    assert code == 0, err
    assert "data_values" not in json.loads(out)["data"] and "data_gates" not in json.loads(out)


@pytest.mark.slow  # it trains once the leak is gone
def test_a_leaking_eval_split_stops_the_run_before_the_first_step(project):
    name = spec(project, "leaks", accept="leakage == 0", eval_file="leaking.jsonl")
    code, out, err = sftc(project, "plan", name)
    assert code == 0, err
    assert "leakage" in out and "fail" in out

    code, out, err = sftc(project, "run", name)
    assert code == 3, err
    assert "the data fails its gates; nothing was trained" in err
    assert "leak (exact)" in err and "leaking.jsonl:2" in err and "pc.jsonl:21" in err
    assert not (project / "runs" / "leaks").exists()  # no run directory, no checkpoint

    fixed = spec(project, "fixed", accept="leakage == 0")  # the same spec, the leak removed
    code, out, err = sftc(project, "run", fixed)
    assert code == 0, err
    assert "the data passes its gates: leakage == 0 (0)" in err
    (run_dir,) = (project / "runs" / "fixed").iterdir()
    assert list((run_dir / "checkpoints").iterdir())
    assert json.loads((run_dir / "status.json").read_text())["status"] == "done"


def test_every_data_metric_of_the_language_has_its_findings():
    from runtime.preflight.data_audit import KINDS_OF
    from sftlang.schema import METRICS

    assert set(KINDS_OF) == {name for name, metric in METRICS.items() if metric.data}
