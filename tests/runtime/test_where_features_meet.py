"""Where features meet: every row shape through every stage that reads its samples.

One spec holds a source of each shape (prompt/completion, `chat = on`, OpenAI messages,
ShareGPT with renamed keys, roles and column, Alpaca, tool calls, a reasoning conversation
trained per turn, pre-tokenized rows, and a prompt/completion source with a separate eval
file). Each cell of the table below runs that source through one stage:

    check · plan · preview · sample identity · report + baseline pairing · review summary ·
    review export · run diff · an edited eval file

The samples are the run's own eval prompts (`select_prompts`, as `sftc run` decodes them) with
answers written by the test, so the cells need no training; the trained end-to-end cells are
in the slow suite (`test_where_features_meet_slow.py`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sftlang.cli import main

SHAPES_TOKENIZER = Path(__file__).resolve().parents[2] / "specs" / "data" / "shapes-tokenizer"
DATA = Path(__file__).resolve().parents[2] / "specs" / "data"

SPEC = """\
sft "meet"
model {
    base      = init llama(layers = 1, dim = 32, heads = 2, ffn = 64, max_seq_len = 512)
    tokenizer = hf("TOKENIZER")
}
data pc = jsonl("pc.jsonl") { split eval = 25% seed 1 }
data chat = jsonl("pc.jsonl") { split eval = 25% seed 2 }
data msgs = jsonl("msgs.jsonl") { split eval = 25% seed 1 }
data share = jsonl("share.jsonl") {
    split eval = 25% seed 1
    rename     = (dialog = conversations)
}
data alp = jsonl("alpaca.jsonl") { split eval = 25% seed 1 }
data tools = jsonl("tools.jsonl") { split eval = 25% seed 1 }
data think = jsonl("think.jsonl") { split eval = 25% seed 1 }
data toks = jsonl("tokens.jsonl") { split eval = 25% seed 1 }
data sep = jsonl("sep.jsonl") { split eval = jsonl("sep-eval.jsonl") }
template qa for pc, sep {
    prompt     = "Q: {q}\\nA:"
    completion = " {a}"
}
template asked for chat {
    prompt     = "{q}"
    completion = "{a}"
    chat       = on
}
template talk for share {
    messages = conversations
    roles    = (bot = assistant, customer = user)
    keys     = (role = speaker, content = text)
}
template instr for alp {
    format = alpaca
}
train {
    steps     = 2
    batch     = 4
    seq_len   = 512
    optimizer = adamw(lr = 1e-3)
}
eval {
    generate = greedy(max_new_tokens = 8)
}
output {
    dir    = "runs/{name}"
    export = none
}
"""
SHAPES = ["pc", "chat", "msgs", "share", "alp", "tools", "think", "toks", "sep"]


def _lines(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def write_project(root: Path) -> None:
    words = "red green blue amber violet cyan olive pearl".split()
    _lines(root / "pc.jsonl", [{"q": f"colour {i}?", "a": w} for i, w in enumerate(words)])
    _lines(root / "sep.jsonl", [{"q": f"name {i}?", "a": w} for i, w in enumerate(words)])
    _lines(root / "sep-eval.jsonl", [{"q": "name ten?", "a": "tan"}, {"q": "name eleven?", "a": "teal"}])
    _lines(
        root / "msgs.jsonl",
        [
            {
                "messages": [
                    {"role": "user", "content": f"say {w}"},
                    {"role": "assistant", "content": w},
                    {"role": "user", "content": "again"},
                    {"role": "assistant", "content": f"{w} {w}"},
                ]
            }
            for w in words
        ],
    )
    _lines(
        root / "share.jsonl",
        [
            {
                "dialog": [
                    {"speaker": "customer", "text": f"where is {w}?"},
                    {"speaker": "bot", "text": f"{w} is here"},
                ],
                "id": i,
            }
            for i, w in enumerate(words)
        ],
    )
    _lines(
        root / "alpaca.jsonl",
        [
            {"instruction": f"Spell {w}.", "input": "" if i % 2 else "slowly", "output": "-".join(w)}
            for i, w in enumerate(words)
        ],
    )
    for name, source in (
        ("tools.jsonl", "shapes-tools.jsonl"),
        ("think.jsonl", "shapes-reasoning.jsonl"),
        ("tokens.jsonl", "shapes-tokens.jsonl"),
    ):
        (root / name).write_text("".join((DATA / source).read_text().splitlines(keepends=True)[:8]))
    (root / "meet.sft").write_text(SPEC.replace("TOKENIZER", str(SHAPES_TOKENIZER)))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """The project, its plan prepared once (tokenizer, data), and the eval samples by source."""
    import os

    from runtime.evaluate.answers import Sample, select_prompts
    from runtime.preflight.prepare import prepare
    from sftlang.check import check_spec_file
    from sftlang.lower import lower

    root = tmp_path_factory.mktemp("meet")
    write_project(root)
    old = os.getcwd()
    os.chdir(root)
    try:
        spec, problems = check_spec_file("meet.sft")
        assert spec is not None and not [p for p in problems if p.is_error], problems
        prepared = prepare(lower(spec), root / "cache")
    finally:
        os.chdir(old)
    tok = prepared.tokenizer
    samples = [
        Sample(
            ex.source,
            ex.file,
            int(ex.line),
            tok.decode(list(prompt), skip_special_tokens=False),
            tok.decode(list(ref), skip_special_tokens=True),
            f"tuned {k}",
            1,
            turn=ex.turn,
        )
        for k, (ex, prompt, ref) in enumerate(select_prompts(prepared.pipeline, None))
    ]
    return root, prepared, samples


def make_run(root: Path, prepared, samples, name: str, base_text=lambda s, k: f"base {k}") -> Path:
    """A finished run directory as `sftc run` leaves it for review and diff: plan, manifest
    (with the inputs' identity), report.json with the samples and the baseline's (in reverse
    order, so only identity can pair them)."""
    from runtime.preflight.input_fingerprints import gather
    from runtime.runs.run_directory import write_manifest, write_plan

    run_dir = root / "runs" / "meet" / name
    run_dir.mkdir(parents=True)
    prepared.tokenizer.save_pretrained(str(run_dir / "tokenizer"))
    write_plan(run_dir, prepared.plan)
    write_manifest(run_dir, prepared.plan, prepared.pipeline.stats.to_dict(), gather(prepared.plan, root / "cache"))
    base = [dict(s.to_dict(), generated=base_text(s, k)) for k, s in enumerate(samples)][::-1]
    report = {
        "samples": [s.to_dict() for s in samples],
        "metrics": {},
        "baseline": {"kind": "base", "k": 0, "samples": base, "metrics": {}},
    }
    (run_dir / "report.json").write_text(json.dumps(report))
    return run_dir


# ---------------------------------------------------------------- check, plan, preview


@pytest.mark.parametrize("shape", SHAPES)
def test_check_plan_and_preview_read_every_shape(project, shape, capsys, monkeypatch):
    root, prepared, _ = project
    stats = prepared.pipeline.stats.sources[shape]
    assert stats.train_examples > 0 and stats.eval_examples > 0 and stats.bad_rows == 0
    monkeypatch.chdir(root)
    monkeypatch.setenv("SFTC_CACHE", str(root / "cache"))
    assert main(["preview", "meet.sft", "-n", "1", "--source", shape, "--json"]) == 0
    shown = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert shown and all(e["source"] == shape for e in shown)


# ---------------------------------------------------------------- which sample is which


def test_every_eval_sample_has_its_own_identity(project):
    from runtime.plan.sample_origin import sample_key
    from runtime.review.store import row_ids

    _, prepared, samples = project
    keys = [sample_key(s) for s in samples]
    assert len(set(keys)) == len(keys)
    assert all(not i.endswith(("~2", "~3")) for i in row_ids([s.to_dict() for s in samples]))
    think = [s for s in samples if s.source == "think"]
    # a reasoning conversation trained per turn: one sample per assistant message (1 and 3), same line
    assert {s.turn for s in think} == {1, 3} and len({s.line for s in think}) == len(think) // 2
    assert all(s.turn is None for s in samples if s.source != "think")
    first = next(s for s in think if s.turn == 1)
    assert "<think>" not in first.prompt and first.reference.startswith("<think>")
    later = next(s for s in think if s.turn == 3 and s.line == first.line)
    assert first.reference.split("</think>")[-1] in later.prompt  # turn 1's answer, without its reasoning
    assert prepared.pipeline.stats.sources["think"].per_turn_rows > 0


@pytest.mark.parametrize("shape", SHAPES)
def test_report_review_and_diff_pair_each_sample_with_its_own_base_answer(project, shape, tmp_path):
    from runtime.review.rows import load_rows

    root, prepared, samples = project
    run_dir = make_run(tmp_path, prepared, samples, "a")
    rows = [r for r in load_rows(run_dir).rows if r.source == shape]
    assert rows
    for r in rows:
        k = int(r.tuned.split()[-1])
        assert r.base == f"base {k}"  # the baseline's answer to the same sample, whatever its order


def test_review_wins_count_each_turn_against_its_own_base_answer(project, tmp_path):
    """Turn 1 wins (5 against 1) and turn 3 loses (1 against 5): review_wins(think) is 0.5.
    Keyed by row alone, both turns would read the last turn's base answer."""
    from runtime.review.rows import load_rows
    from runtime.review.store import Judgement, ReviewStore, answer_sha
    from runtime.review.summary import review_summary

    root, prepared, samples = project
    run_dir = make_run(tmp_path, prepared, samples, "a")
    rows = load_rows(run_dir)
    store = ReviewStore(run_dir)
    think = [r for r in rows.rows if r.source == "think"]
    for r in think:
        tuned, base = (5, 1) if r.turn == 1 else (1, 5)
        store.add(Judgement(r.id, "tuned", "ada", tuned, False, None, None, r.fingerprint, answer_sha(r.tuned)))
        store.add(Judgement(r.id, "base", "ada", base, False, None, None, r.fingerprint, answer_sha(r.base)))
    summary = review_summary(run_dir, rows.samples, rows.base_samples, rows.fingerprints)
    assert summary.values["review_wins(think)"] == 0.5
    assert summary.values["review_score(think)"] == 3.0


def test_run_diff_counts_answers_per_sample(project, tmp_path):
    from sftlang.run_diff import diff_runs

    root, prepared, samples = project
    old = make_run(tmp_path, prepared, samples, "a")
    turn3 = next(k for k, s in enumerate(samples) if s.source == "think" and s.turn == 3)
    edited = [s if k != turn3 else type(s)(**{**s.to_dict(), "generated": "other"}) for k, s in enumerate(samples)]
    new = make_run(tmp_path, prepared, edited, "b")
    result = diff_runs(old, new)
    assert result.answers == (1, len(samples))
    assert result.inputs == []  # the same inputs, said by the one identity


# ---------------------------------------------------------------- review export, shape by shape

EXPECTED_EXPORT = {  # shape -> (where the correction lands in the row as written, or the refusal's words)
    "pc": lambda row: row["a"],
    "sep": lambda row: row["a"],
    "chat": lambda row: row["a"],
    "msgs": lambda row: row["messages"][3]["content"],
    "share": lambda row: row["dialog"][1]["text"],
    "alp": lambda row: row["output"],
    "tools": lambda row: row["messages"][-1]["content"],
    "toks": "pre-tokenized rows hold ids",
}


def _correct_all(run_dir: Path, text) -> None:
    from runtime.review.rows import load_rows
    from runtime.review.store import Judgement, ReviewStore, answer_sha

    store = ReviewStore(run_dir)
    for r in load_rows(run_dir).rows:
        store.add(Judgement(r.id, "tuned", "ada", 2, False, text(r), None, r.fingerprint, answer_sha(r.tuned)))


def test_review_export_writes_each_correction_into_its_own_answer_in_the_source_shape(project, tmp_path):
    from runtime.review.corrections import export_corrections

    root, prepared, samples = project
    run_dir = make_run(tmp_path, prepared, samples, "a")
    _correct_all(run_dir, lambda r: f"fixed {r.id}")
    result = export_corrections(run_dir, tmp_path / "fixes.jsonl", cache_dir=str(root / "cache" / "data"))
    written = [json.loads(line) for line in (tmp_path / "fixes.jsonl").read_text().splitlines()]
    by_row = {w["review"]["row"]: w for w in written}
    for row_id, w in by_row.items():
        shape = row_id.split(":")[0]
        if shape == "think":
            continue
        assert EXPECTED_EXPORT[shape](w) == f"fixed {row_id}", shape
        assert set(w) - {"review"} == set(json.loads(Path(root / _file(shape)).read_text().splitlines()[0])), shape
    assert {r.split(":")[0] for r in by_row} == set(SHAPES) - {"toks"}
    assert len(result.refused) == sum(s.source == "toks" for s in samples)
    assert all(EXPECTED_EXPORT["toks"] in r for r in result.refused)
    # per turn: each correction goes into its own turn; the other turn keeps its answer and reasoning
    think = {k: w for k, w in by_row.items() if k.startswith("think:")}
    assert think and {k.rsplit("#", 1)[1] for k in think} == {"1", "3"}
    original = {i + 1: json.loads(line) for i, line in enumerate((root / "think.jsonl").read_text().splitlines())}
    for row_id, w in think.items():
        turn, line = int(row_id.rsplit("#", 1)[1]), int(row_id.split(":")[2].split("#")[0])
        other = 4 - turn
        assert w["messages"][turn]["content"] == f"fixed {row_id}"
        assert w["messages"][other] == original[line]["messages"][other]


def _file(shape: str) -> str:
    return {
        "pc": "pc.jsonl",
        "chat": "pc.jsonl",
        "sep": "sep.jsonl",
        "msgs": "msgs.jsonl",
        "share": "share.jsonl",
        "alp": "alpaca.jsonl",
        "tools": "tools.jsonl",
        "think": "think.jsonl",
        "toks": "tokens.jsonl",
    }[shape]


# ---------------------------------------------------------------- an edited eval file


def test_an_edited_eval_file_retires_its_judgements_and_refuses_their_export(project, tmp_path):
    """Two lines of a separate eval file swapped after the run: no correction may land on the
    other prompt, and the judgements stop counting (their data is not the data now)."""
    from runtime.plan.run_inputs import eval_fingerprints
    from runtime.preflight.input_fingerprints import gather
    from runtime.review.corrections import export_corrections
    from runtime.review.rows import load_rows
    from runtime.review.summary import review_summary

    root, prepared, samples = project
    copy = tmp_path / "project"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("cache", "runs"))
    moved = [s for s in samples if s.source == "sep"]
    moved = [type(s)(**{**s.to_dict(), "file": str(copy / "sep-eval.jsonl")}) for s in moved]
    run_dir = make_run(tmp_path, prepared, moved, "a")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    plan = json.loads((run_dir / "plan.json").read_text())
    for source in plan["data"]["sources"]:
        source["paths"] = [str(copy / Path(p).name) for p in source["paths"]]
        if (source.get("eval") or {}).get("source"):
            own = source["eval"]["source"]
            own["paths"] = [str(copy / Path(p).name) for p in own["paths"]]
    (run_dir / "plan.json").write_text(json.dumps(plan))
    _correct_all(run_dir, lambda r: f"fixed {r.line}")
    rows = load_rows(run_dir)
    with_judgements = review_summary(run_dir, rows.samples, None, rows.fingerprints)
    assert with_judgements.reviewed == len(moved)

    lines = (copy / "sep-eval.jsonl").read_text().splitlines()
    (copy / "sep-eval.jsonl").write_text("\n".join(lines[::-1]) + "\n")
    from runtime.plan.run_plan import Plan

    now = eval_fingerprints(gather(Plan.from_dict(plan), root / "cache", load=False).parts)
    assert now["sep"] != eval_fingerprints(manifest)["sep"] and now["pc"] == eval_fingerprints(manifest)["pc"]
    assert review_summary(run_dir, rows.samples, None, now).reviewed == 0  # `sftc eval` reads the data now
    result = export_corrections(run_dir, tmp_path / "fixes.jsonl", cache_dir=str(root / "cache" / "data"))
    assert result.written == 0 and len(result.refused) == len(moved)
    assert all("changed since the run" in r for r in result.refused)


# ---------------------------------------------------------------- the audit: topics, review corrections


def test_every_eval_sample_falls_in_a_topic_with_its_own_base_answer_and_its_own_reviews(project, tmp_path):
    """Each sample of every shape is scored in the topic of its prompt: the base model answers
    exactly (the reference) only on the reasoning turns, so a topic's base score is its share of
    them; a reviewer scores turn 3 five and the rest one, so a topic's review score is its mix."""
    from runtime.audit.coverage import coverage
    from runtime.evaluate.topic_scores import run_reviews, topic_table
    from runtime.plan.sample_origin import sample_id
    from runtime.review.rows import load_rows
    from runtime.review.store import Judgement, ReviewStore, answer_sha

    root, prepared, samples = project
    run_dir = make_run(tmp_path, prepared, samples, "a", base_text=lambda s, k: s.reference if s.turn else "no")
    rows = load_rows(run_dir)
    store = ReviewStore(run_dir)
    for r in rows.rows:
        store.add(
            Judgement(
                r.id, "tuned", "ada", 5 if r.turn == 3 else 1, False, None, None, r.fingerprint, answer_sha(r.tuned)
            )
        )
    cover = coverage(prepared.data_audit.examples)
    ids = [sample_id(s.source, s.file, s.line, s.turn) for s in samples]
    assert all(i in cover.topic_of for i in ids)
    report = json.loads((run_dir / "report.json").read_text())
    base = report["baseline"]["samples"]
    table = topic_table(cover, report["samples"], base, ["exact_match"], run_reviews(run_dir, rows.fingerprints))
    assert table.unmatched == 0 and sum(t.eval_rows for t in table.topics) == len(samples)
    for k, topic in enumerate(table.topics):
        mine = [s for s, i in zip(samples, ids) if cover.topic_of[i] == k]
        assert topic.eval_rows == len(mine)
        if mine:
            share = sum(s.turn is not None for s in mine) / len(mine)
            assert topic.tuned == {"exact_match": 0.0} and topic.base == {"exact_match": pytest.approx(share)}
            scores = [5 if s.turn == 3 else 1 for s in mine]
            assert (topic.review_score, topic.reviewed) == (pytest.approx(sum(scores) / len(scores)), len(mine))


def test_sftc_audit_reads_a_runs_answers_per_topic(project, tmp_path, capsys, monkeypatch):
    root, prepared, samples = project
    run_dir = make_run(tmp_path, prepared, samples, "a")
    monkeypatch.chdir(root)
    monkeypatch.setenv("SFTC_CACHE", str(root / "cache"))
    assert main(["audit", "meet.sft", "--run", str(run_dir), "--json"]) == 0
    topics = json.loads(capsys.readouterr().out)["topics"]
    assert topics["unmatched"] == 0 and topics["metrics"] == ["rouge_l"]
    assert sum(t["eval_rows"] for t in topics["topics"]) == len(samples)
    assert topics["chart"] == str(run_dir / "audit-topics.png") and (run_dir / "audit-topics.png").is_file()
    assert main(["audit", "meet.sft", "--run", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "eval rows, rouge_l" in out and f"chart: {run_dir / 'audit-topics.png'}" in out
    assert main(["audit", "meet.sft", "--run", str(tmp_path)]) == 2  # not a run directory
    assert "not a run directory" in capsys.readouterr().err


FIX_SOURCES = {  # shape -> the source that reads its exported corrections (settings, the template it shares)
    "pc": ("", "qa"),
    "sep": ("", "qa"),
    "chat": ("", "asked"),
    "msgs": ("", None),
    "share": (" { rename = (dialog = conversations) }", "talk"),
    "alp": ("", "instr"),
    "tools": ("", None),
    "think": ("", None),
}


def test_review_corrections_added_as_data_are_audited_as_eval_leaks_in_every_shape(project, tmp_path, capsys):
    """The corrections of every shape, each written back as a source of its own shape: every
    corrected eval row is flagged, its prompt now trained (with the corrected answer), naming the
    eval row and the correction's line."""
    import os

    from runtime.review.corrections import export_corrections

    root, prepared, samples = project
    run_dir = make_run(tmp_path, prepared, samples, "a")
    _correct_all(run_dir, lambda r: f"fixed {r.id}")
    export_corrections(run_dir, tmp_path / "fixes.jsonl", cache_dir=str(root / "cache" / "data"))
    copy = tmp_path / "project"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("cache", "runs"))
    by_shape: dict[str, list[str]] = {}
    for line in (tmp_path / "fixes.jsonl").read_text().splitlines():
        by_shape.setdefault(json.loads(line)["review"]["row"].split(":")[0], []).append(line)
    assert set(by_shape) == set(FIX_SOURCES)
    spec = (copy / "meet.sft").read_text()
    for shape, (settings, template) in FIX_SOURCES.items():
        (copy / f"fix-{shape}.jsonl").write_text("\n".join(by_shape[shape]) + "\n")
        spec = spec.replace(
            "template qa for", f'data fix_{shape} = jsonl("fix-{shape}.jsonl"){settings}\ntemplate qa for', 1
        )
        if template is not None:
            spec = spec.replace(f"template {template} for ", f"template {template} for fix_{shape}, ", 1)
    (copy / "fixed.sft").write_text(spec)
    old = os.getcwd()
    os.chdir(copy)
    try:
        assert main(["audit", "fixed.sft", "--json"]) == 0, capsys.readouterr().err
    finally:
        os.chdir(old)
    report = json.loads(capsys.readouterr().out)
    leaked = {}
    for f in report["findings"]:
        if f["kind"] == "leak" and any(i.startswith("fix_") for i in f["ids"]):
            leaked[f["ids"][0]] = f
    for s in samples:
        if s.source == "toks":
            continue  # pre-tokenized rows are refused by the export
        row = f"{s.source}:{Path(s.file).name}:{s.line}" + (f"#{s.turn}" if s.turn is not None else "")
        assert row in leaked, row
        assert any(f"fix-{s.source}.jsonl:" in w for w in leaked[row]["wheres"]), leaked[row]


# ---------------------------------------------------------------- review judgements as preference pairs


def test_preference_pairs_pair_each_sample_with_its_own_answers_and_trl_reads_the_runs_prompt(project, tmp_path):
    """Sample k: k % 4 == 0 corrected, 1 tuned scored over base, 2 base over tuned, 3 a tie. Each
    pair holds its own sample's answers (the baseline is stored in reverse order) in every shape,
    and TRL's DPO tokenization of its prompt gives the tokens the run's model saw."""
    from trl.data_utils import _tokenize

    from runtime.evaluate.answers import select_prompts
    from runtime.plan.sample_origin import sample_id
    from runtime.review.preference_pairs import export_pairs
    from runtime.review.rows import load_rows
    from runtime.review.store import Judgement, ReviewStore, answer_sha

    root, prepared, samples = project
    run_dir = make_run(tmp_path, prepared, samples, "a")
    store = ReviewStore(run_dir)
    for r in load_rows(run_dir).rows:
        k = int(r.tuned.split()[-1])
        tuned, base = {0: (2, None), 1: (4, 2), 2: (2, 5), 3: (3, 3)}[k % 4]
        fix = f"fixed {k}" if k % 4 == 0 else None
        store.add(Judgement(r.id, "tuned", "ada", tuned, False, fix, None, r.fingerprint, answer_sha(r.tuned)))
        if base is not None:
            store.add(Judgement(r.id, "base", "ada", base, False, None, None, r.fingerprint, answer_sha(r.base)))
    result = export_pairs(run_dir, tmp_path / "pairs.jsonl")
    pairs = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    kinds = [k % 4 for k in range(len(samples))]
    assert (result.by_correction, result.by_scores, result.ties) == (
        kinds.count(0),
        kinds.count(1) + kinds.count(2),
        kinds.count(3),
    )
    assert result.undecided == result.unchanged == 0 and len(pairs) == result.written
    prompts = {
        sample_id(ex.source, ex.file, ex.line, ex.turn): list(prompt)
        for ex, prompt, _ in select_prompts(prepared.pipeline, None)
    }
    by_row = {p["review"]["row"]: p for p in pairs}
    assert {row.split(":")[0] for row in by_row} == set(SHAPES)
    for k, s in enumerate(samples):
        row = sample_id(s.source, s.file, s.line, s.turn)
        if k % 4 == 3:
            assert row not in by_row
            continue
        pair = by_row[row]
        expected = {0: (f"fixed {k}", f"tuned {k}"), 1: (f"tuned {k}", f"base {k}"), 2: (f"base {k}", f"tuned {k}")}
        assert (pair["chosen"], pair["rejected"]) == expected[k % 4], (row, pair)
        assert pair["prompt"] == s.prompt
        assert _tokenize(prepared.tokenizer, pair["prompt"])["input_ids"] == prompts[row], row
