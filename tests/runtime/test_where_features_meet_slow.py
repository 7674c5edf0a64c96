"""Where features meet, trained: every row shape through the stages that need a real run.

The cheap cells (`test_where_features_meet.py`) write their samples by hand. Here the same
project (`write_project`: a source of every shape over the byte-level shapes tokenizer) is
trained for real through the CLI, on a tiny random *pretrained-style* base (a transformers
Llama saved with `save_pretrained`) under a LoRA adapter, so the run also has a baseline.
One run serves every cell:

    run with a baseline · generate · review export (and the export as training data) ·
    resume after an interrupt · run diff · an edited training file

Four more runs in the whole file: the interrupted one, its resumption, the same spec as a job
of two processes, and a run on an edited training file that stops before its first step (its
manifest is what `sftc diff` reads). About 100 s on 2 shared CPU cores.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from runtime.plan.sample_origin import sample_key
from sftlang.cli import main
from tests.runtime.run_helpers import final_params
from tests.runtime.test_where_features_meet import EXPECTED_EXPORT, SHAPES, SHAPES_TOKENIZER, write_project

pytestmark = pytest.mark.slow

STEPS = 6
# How the cheap project's spec becomes a LoRA run over a pretrained base with a baseline:
# (the text in meet.sft, what it becomes). Each must be there: a change to the cheap spec fails here.
EDITS = [
    (
        "    base      = init llama(layers = 1, dim = 32, heads = 2, ffn = 64, max_seq_len = 512)\n"
        f'    tokenizer = hf("{SHAPES_TOKENIZER}")\n',
        '    base    = hf("base")\n    adapter = lora(rank = 4)\n',
    ),
    ("    steps     = 2\n", f"    steps     = {STEPS}\n    checkpoint = every 2 steps keep 5\n"),
    ("    optimizer = adamw(lr = 1e-3)\n", "    optimizer = adamw(lr = 1e-2)\n"),
    (
        "    generate = greedy(max_new_tokens = 8)\n",
        "    generate = greedy(max_new_tokens = 4)\n    samples  = all\n    baseline = base\n",
    ),
    ("output {", "accept {\n    loss <= 100\n}\noutput {"),
]


def _write_base(root: Path) -> None:
    """A random Llama in Hugging Face form, with the shapes tokenizer (and its chat template)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(SHAPES_TOKENIZER)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(root / "base")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(SHAPES_TOKENIZER / name, root / "base" / name)


def _runs(root: Path) -> list[Path]:
    return sorted((root / "runs" / "meet").iterdir())


def _report(run_dir: Path) -> dict:
    return json.loads((run_dir / "report.json").read_text())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The project over a random pretrained base, trained once by `sftc run` (exit 0): (root, run dir)."""
    root = tmp_path_factory.mktemp("meet_trained")
    write_project(root)
    spec = (root / "meet.sft").read_text()
    for old, new in EDITS:
        assert spec.count(old) == 1, old
        spec = spec.replace(old, new)
    (root / "meet.sft").write_text(spec)
    _write_base(root)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("SFTC_CACHE", str(root / "cache"))
        assert main(["run", "meet.sft"]) == 0
        (run_dir,) = _runs(root)
        yield root, run_dir


def _stats(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())["data"]["stats"]["sources"]


# ---------------------------------------------------------------- run with a baseline


@pytest.mark.parametrize("shape", SHAPES)
def test_the_baseline_answers_every_eval_sample_of_the_shape_with_the_same_prompt(trained, shape):
    root, run_dir = trained
    report = _report(run_dir)
    assert report["baseline"]["kind"] == "base"
    tuned = {sample_key(s): s for s in report["samples"] if s["source"] == shape}
    base = {sample_key(s): s for s in report["baseline"]["samples"] if s["source"] == shape}
    assert len(tuned) == _stats(run_dir)[shape]["eval_examples"] > 0  # samples = all: every eval example
    assert base.keys() == tuned.keys()
    for key, sample in tuned.items():
        assert base[key]["prompt"] == sample["prompt"] and base[key]["reference"] == sample["reference"], key
    if shape == "think":  # per turn: two samples of each row, its answers at messages 1 and 3
        turns = {}
        for _, _, line, turn in tuned:
            turns.setdefault(line, set()).add(turn)
        assert set(map(frozenset, turns.values())) == {frozenset({1, 3})}
    else:
        assert all(turn is None for *_, turn in tuned)


# ---------------------------------------------------------------- generate


def _eval_row(sample: dict) -> dict:
    """The row an eval sample was cut from, as it is in its file; for a turn of a conversation
    trained per turn, the conversation up to that turn's answer (`sftc generate` drops it)."""
    row = json.loads(Path(sample["file"]).read_text().splitlines()[sample["line"] - 1])
    if sample.get("turn") is not None:
        row["messages"] = row["messages"][: sample["turn"] + 1]
    return row


@pytest.mark.parametrize("shape", SHAPES)
def test_generate_answers_an_eval_rows_prompt_as_evaluation_did(trained, shape, capsys, monkeypatch):
    """`sftc generate RUN --file rows.jsonl --source S` renders the row with the source's template,
    decodes greedily with the run's stop tokens and decoder: the report's answer, for every shape."""
    root, run_dir = trained
    monkeypatch.chdir(root)
    monkeypatch.setenv("SFTC_CACHE", str(root / "cache"))
    samples = [s for s in _report(run_dir)["samples"] if s["source"] == shape]
    rows = root / f"generate-{shape}.jsonl"
    rows.write_text("".join(json.dumps(_eval_row(s)) + "\n" for s in samples))
    capsys.readouterr()
    assert main(["generate", str(run_dir), "--file", str(rows), "--json", "--source", shape]) == 0
    answers = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert [a["completion"] for a in answers] == [s["generated"] for s in samples]
    assert all(a["tokens"] <= 4 for a in answers)


# ---------------------------------------------------------------- review export, and back into training


def _fixes_spec(spec: str) -> str:
    """The trained spec with each source reading its exported corrections (`fix-NAME.jsonl`,
    no split) through the same template and source settings; the pre-tokenized source, whose
    rows are refused, and the eval and accept blocks (no eval rows) left out."""
    one_line = r'data (\w+) = jsonl\("[^"]+"\) \{ split eval = [^\n]* \}\n'
    spec, n = re.subn(one_line, lambda m: f'data {m[1]} = jsonl("fix-{m[1]}.jsonl")\n', spec)
    spec, k = re.subn(
        r'data (\w+) = jsonl\("[^"]+"\) \{\n    split eval = [^\n]*\n',
        lambda m: f'data {m[1]} = jsonl("fix-{m[1]}.jsonl") {{\n',
        spec,
    )
    assert (n, k) == (len(SHAPES) - 1, 1), (n, k)
    spec = spec.replace('data toks = jsonl("fix-toks.jsonl")\n', "")
    spec, blocks = re.subn(r"^(eval|accept) \{\n(    [^\n]*\n)*\}\n", "", spec, flags=re.M)
    assert blocks == 2 and "split eval" not in spec and "toks" not in spec
    return spec


def _capture(call) -> tuple[int, str, str]:
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = call()
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def exported(trained):
    """A copy of the run with a correction of every tuned answer, `sftc review --export`ed, and
    the export as every source's data in `fixes.sft`: checked, planned and previewed."""
    from runtime.review.rows import load_rows
    from runtime.review.store import Judgement, ReviewStore, answer_sha

    root, run_dir = trained
    reviewed = root / "reviewed"  # a copy: the run itself stays as `sftc run` left it, for resume and diff
    shutil.copytree(run_dir, reviewed)
    rows = load_rows(reviewed).rows
    store = ReviewStore(reviewed)
    store.add_many(
        [
            Judgement(r.id, "tuned", "ada", 2, False, f"fixed {r.id}", None, r.fingerprint, answer_sha(r.tuned))
            for r in rows
        ]
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("SFTC_CACHE", str(root / "cache"))
        export = _capture(lambda: main(["review", str(reviewed), "--export", "fixes.jsonl"]))
        written = [json.loads(line) for line in (root / "fixes.jsonl").read_text().splitlines()]
        for shape in SHAPES:
            mine = [w for w in written if w["review"]["row"].startswith(f"{shape}:")]
            (root / f"fix-{shape}.jsonl").write_text("".join(json.dumps(w) + "\n" for w in mine))
        (root / "fixes.sft").write_text(_fixes_spec((root / "meet.sft").read_text()))
        check = _capture(lambda: main(["check", "fixes.sft"]))
        plan = _capture(lambda: main(["plan", "fixes.sft", "--json"]))
        preview = _capture(lambda: main(["preview", "fixes.sft", "-n", "1000", "--json"]))
    return {"rows": rows, "export": export, "written": written, "check": check, "plan": plan, "preview": preview}


def test_the_review_export_writes_every_shape_and_refuses_pre_tokenized_rows(exported):
    code, _, err = exported["export"]
    toks = [r for r in exported["rows"] if r.source == "toks"]
    assert code == 1 and toks  # a row refused: the rest is written, and the exit says so
    assert err.count("not exported:") == len(toks) and "pre-tokenized rows hold ids" in err
    assert all(f"row {r.id}" in err for r in toks), err  # each refusal names its row
    assert f"wrote {len(exported['rows']) - len(toks)} corrected rows" in " ".join(err.split())
    others = sorted(r.id for r in exported["rows"] if r.source != "toks")
    assert sorted(w["review"]["row"] for w in exported["written"]) == others
    assert exported["check"][0] == 0, exported["check"]
    assert exported["plan"][0] == 0, exported["plan"][2][-3000:]


@pytest.mark.parametrize("shape", [s for s in SHAPES if s != "toks"])
def test_a_correction_lands_in_its_answer_and_trains_as_that_answer(trained, exported, shape):
    """Each correction is written where the shape keeps its answer (the turn's message for a
    conversation trained per turn), and `fixes.sft` reads the file back as the same shape, through
    the same template, with the correction among the tokens it trains."""
    root, run_dir = trained
    rows = {r.id: r for r in exported["rows"] if r.source == shape}
    written = [w for w in exported["written"] if w["review"]["row"] in rows]
    assert rows and len(written) == len(rows)
    for w in written:
        row = rows[w["review"]["row"]]
        if shape == "think":
            original = json.loads(Path(row.file).read_text().splitlines()[row.line - 1])["messages"]
            assert w["messages"][row.turn]["content"] == f"fixed {row.id}"
            other = 4 - row.turn  # the other assistant turn keeps its answer and reasoning
            assert w["messages"][other] == original[other]
        else:
            assert EXPECTED_EXPORT[shape](w) == f"fixed {row.id}"
    planned = json.loads(exported["plan"][1])["data"]["sources"][shape]
    trained_as = _stats(run_dir)[shape]
    assert planned["resolved"] == trained_as["resolved"]  # the same template and shape, read the same way
    assert set(planned["columns"]) == set(trained_as["columns"]) | {"review"}
    assert planned["rows"] == len(written) and planned["bad_rows"] == 0
    examples = [json.loads(line) for line in exported["preview"][1].splitlines() if line.strip()]
    examples = [e for e in examples if e["source"] == shape]
    assert len(examples) == planned["train_examples"] > 0
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(root / "base")
    for line, w in enumerate(written, start=1):
        spans = [
            tokenizer.decode([t for t, on in zip(e["input_ids"], e["trained"]) if on])
            for e in examples
            if e["line"] == line
        ]
        assert any(f"fixed {w['review']['row']}" in text for text in spans), (line, spans)


# ---------------------------------------------------------------- resume, and the run diff


@pytest.fixture(scope="module")
def resumed(trained):
    """A second run (`--fresh`) interrupted at step 3 (exit 130), then `sftc run` again: it
    resumes in the same directory and finishes (exit 0). Returns that run directory."""
    from runtime.data.pipeline import DataPipeline
    from runtime.train.metrics_log import read_metrics

    root, first = trained
    original = DataPipeline.batch

    def interrupted(self, step, rows=None):
        if step == 3:
            raise KeyboardInterrupt
        return original(self, step, rows)

    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("SFTC_CACHE", str(root / "cache"))
        mp.setattr(DataPipeline, "batch", interrupted)
        before = _runs(root)
        assert main(["run", "meet.sft", "--fresh"]) == 130
        mp.setattr(DataPipeline, "batch", original)
        (second,) = set(_runs(root)) - set(before)
        status = json.loads((second / "status.json").read_text())
        assert (status["status"], status["steps"]) == ("interrupted", 3)
        assert not (second / "report.json").exists()
        assert main(["run", "meet.sft"]) == 0
    assert _runs(root) == before + [second]  # resumed in its own directory, no third one
    events = [r for r in read_metrics(second) if r["kind"] == "event" and r["event"] in ("start", "resume")]
    assert [(e["event"], e["step"]) for e in events] == [("start", 0), ("resume", 3)]
    return second


def test_a_resumed_run_ends_with_the_uninterrupted_runs_weights(trained, resumed):
    _, first = trained
    step_a, params_a = final_params(first)
    step_b, params_b = final_params(resumed)
    assert step_a == step_b == STEPS and len(params_a) == len(params_b) > 0
    for a, b in zip(params_a, params_b):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("shape", SHAPES)
def test_a_resumed_run_answers_every_eval_sample_as_the_uninterrupted_run(trained, resumed, shape):
    _, first = trained

    def answers(run, part):
        return {
            sample_key(s): (s["prompt"], s["reference"], s["generated"])
            for s in part(_report(run))
            if s["source"] == shape
        }

    tuned, base = (lambda r: r["samples"]), (lambda r: r["baseline"]["samples"])
    assert answers(first, tuned) and answers(resumed, tuned) == answers(first, tuned)
    assert answers(resumed, base) == answers(first, base)
    assert _report(resumed)["baseline"]["cached"]  # same inputs: the first run's baseline answers


def test_the_run_diff_of_the_resumed_and_the_uninterrupted_run(trained, resumed, capsys, monkeypatch):
    """Same spec, same inputs, same answers: `sftc diff` says so (exit 0), or at most metrics
    that differ in their last digits; never an input line (`~`) or a changed answer."""
    root, first = trained
    monkeypatch.chdir(root)
    capsys.readouterr()
    code = main(["diff", str(first), str(resumed)])
    out = capsys.readouterr().out
    samples = len(_report(first)["samples"])
    assert code in (0, 1) and f"answers: 0 of {samples} eval samples answered differently" in out, out
    assert code == 0 or "metrics: all equal" not in out, out  # exit 1: only metrics, in their last digits
    assert "no changes" in out  # the spec diff of the two runs' resolved specs
    assert not [line for line in out.splitlines() if line.lstrip().startswith(("~", "+", "-"))], out


def test_a_two_process_job_answers_every_eval_sample_as_one_process(trained):
    """The same spec as a job of two processes (one CPU device each, loopback coordinator): the
    same final weights within 1e-5 and the same report samples, tuned and baseline, every shape."""
    import subprocess
    import sys

    from tests.runtime.platform.test_multiprocess import _env, _free_port, finish

    root, first = trained
    before = set(_runs(root))
    port = _free_port()
    code = "import sys; from sftlang.cli import main; sys.exit(main(sys.argv[1:]))"
    job = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                code,
                "run",
                "meet.sft",
                "--fresh",
                "--coordinator",
                f"127.0.0.1:{port}",
                "--num-processes",
                "2",
                "--process-id",
                str(i),
            ],
            cwd=root,
            env=_env(root, 1),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    for rc, out in finish(job):
        assert rc == 0, out[-3000:]
    (job_run,) = set(_runs(root)) - before
    start = next(json.loads(x) for x in (job_run / "metrics.jsonl").read_text().splitlines() if '"start"' in x)
    assert start["devices"] == 2
    _, params_a = final_params(first)
    _, params_b = final_params(job_run)
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(params_a, params_b)) < 1e-5
    answers = lambda samples: [(sample_key(s), s["prompt"], s["generated"]) for s in samples]  # noqa: E731
    one, two = _report(first), _report(job_run)
    assert {s["source"] for s in two["samples"]} == set(SHAPES)
    assert answers(two["samples"]) == answers(one["samples"])
    assert two["baseline"]["cached"] and answers(two["baseline"]["samples"]) == answers(one["baseline"]["samples"])


def test_an_edited_training_file_is_named_by_the_run_diff(trained, capsys, monkeypatch):
    """A row appended to one source's training file: a run on it (stopped before its first step,
    its manifest written) differs from the first run by that source's data, in the words of
    `runtime.plan.run_inputs`, and by nothing else among the inputs. Last in the file: it edits the project."""
    from runtime.data.pipeline import DataPipeline

    root, first = trained
    monkeypatch.chdir(root)
    monkeypatch.setenv("SFTC_CACHE", str(root / "cache"))
    data = root / "sep.jsonl"  # sep's eval rows are its own file: the edit changes training data only
    kept = data.read_text()
    original = DataPipeline.batch

    def stopped(self, step, rows=None):
        if step == 0:
            raise KeyboardInterrupt
        return original(self, step, rows)

    try:
        data.write_text(kept + json.dumps({"q": "name eight?", "a": "rose"}) + "\n")
        monkeypatch.setattr(DataPipeline, "batch", stopped)
        before = set(_runs(root))
        assert main(["run", "meet.sft", "--fresh"]) == 130
        (edited,) = set(_runs(root)) - before
        capsys.readouterr()
        assert main(["diff", str(first), str(edited)]) == 1
        out = capsys.readouterr().out
        changed = [line.strip() for line in out.splitlines() if line.lstrip().startswith("~")]
        assert len(changed) == 1 and changed[0].startswith("~ data sep: content changed (fingerprint "), out
        # the two spec files of two projects, one with the edit: the spec diff names the source's content
        other = root / "unedited"
        other.mkdir()
        for path in root.glob("*.jsonl"):
            shutil.copy(path, other / path.name)
        (other / "sep.jsonl").write_text(kept)
        shutil.copy(root / "meet.sft", other / "meet.sft")
        assert main(["diff", str(other / "meet.sft"), "meet.sft"]) == 1
        out = capsys.readouterr().out
        changed = [line.strip() for line in out.splitlines() if line.lstrip().startswith("~")]
        assert len(changed) == 1 and re.match(r"~ data sep\s+content changed: 8 -> 9 rows \(\+1, -0\)", changed[0])
    finally:
        data.write_text(kept)
