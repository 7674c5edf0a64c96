"""`sftc review`'s store, the gate summary and the corrections export, on plain data:
a report.json of sample dicts, a manifest's fingerprints, a plan compiled from a spec."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import pytest

from runtime.plan.sample_origin import sample_id as row_id
from runtime.review.store import Judgement, ReviewStore, answer_sha, row_ids
from runtime.review.summary import review_summary
from tests.fixtures import copy_fixtures

FP = {"faq": "f" * 64, "chat": "c" * 64}


def sample(source, line, generated, file="/data/eval.jsonl", reference="ref"):
    return {
        "source": source,
        "file": file,
        "line": line,
        "prompt": f"q{line}",
        "reference": reference,
        "generated": generated,
        "tokens": 3,
        "finished": True,
    }


def judge(
    store,
    row,
    reviewer,
    score=None,
    answer="tuned",
    text="",
    flagged=False,
    correction=None,
    note=None,
    fingerprint=None,
    source="faq",
):
    return store.add(
        Judgement(
            row_id=row,
            answer=answer,
            reviewer=reviewer,
            score=score,
            flagged=flagged,
            correction=correction,
            note=note,
            data_fingerprint=fingerprint or FP[source],
            answer_sha=answer_sha(text),
        )
    )


# ---------------------------------------------------------------- store


def test_row_ids_are_stable_and_unique():
    assert row_id("faq", "/a/b/eval.jsonl", 12) == "faq:eval.jsonl:12"
    assert row_id("hub", None, 3) == "hub::3"
    samples = [sample("faq", 1, "x", "/a/eval.jsonl"), sample("faq", 1, "y", "/b/eval.jsonl"), sample("faq", 2, "z")]
    assert row_ids(samples) == ["faq:eval.jsonl:1", "faq:eval.jsonl:1~2", "faq:eval.jsonl:2"]


def test_store_is_append_only_wal_and_durable_settings(tmp_path):
    store = ReviewStore(tmp_path)
    first = judge(store, "faq:eval.jsonl:1", "ann", 2, text="a")
    second = judge(store, "faq:eval.jsonl:1", "ann", 4, text="a", note="better on reread")
    judge(store, "faq:eval.jsonl:1", "bob", 5, text="a")
    assert first.id < second.id and first.created_at.endswith("+00:00")
    assert [j.score for j in store.history("faq:eval.jsonl:1")] == [2, 4, 5]  # history kept
    assert {(j.reviewer, j.score) for j in store.current()} == {("ann", 4), ("bob", 5)}
    assert [j.note for j in store.current("ann")] == ["better on reread"]
    db = sqlite3.connect(store.path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("UPDATE judgements SET score = 1")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("DELETE FROM judgements")
    with pytest.raises(sqlite3.IntegrityError):  # the table itself refuses a score of 7
        db.execute(
            "INSERT INTO judgements (row_id, answer, reviewer, score, created_at, data_fingerprint,"
            " answer_sha) VALUES ('r', 'tuned', 'x', 7, 'now', 'f', 's')"
        )
    db.close()
    conn = store._connect()
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000
    conn.close()


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"score": 6}, "score must be 1-5"),
        ({"score": 0}, "score must be 1-5"),
        ({"score": True}, "score"),
        ({"reviewer": ""}, "reviewer name is required"),
        ({"answer": "other"}, "answer must be"),
        ({"answer": "base", "correction": "x"}, "tuned answers only"),
        ({"correction": "x" * 20000}, "at most"),
    ],
)
def test_judgement_refuses_malformed_values(bad, message):
    fields = {
        "row_id": "r",
        "answer": "tuned",
        "reviewer": "ann",
        "score": 3,
        "flagged": False,
        "correction": None,
        "note": None,
        "data_fingerprint": "f",
        "answer_sha": "s",
    }
    with pytest.raises(ValueError, match=message):
        Judgement(**{**fields, **bad})


def test_concurrent_writers_lose_nothing(tmp_path):
    store = ReviewStore(tmp_path)
    errors = []

    def write(reviewer):
        try:
            for i in range(40):
                judge(store, f"faq:eval.jsonl:{i}", reviewer, 1 + i % 5, text="t")
        except Exception as error:  # noqa: BLE001 - collected for the assertion
            errors.append(error)

    threads = [threading.Thread(target=write, args=(name,)) for name in ("ann", "bob", "cy", "dee")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(store.history()) == 160 and len(store.current()) == 160


# ---------------------------------------------------------------- summary


@pytest.fixture()
def run(tmp_path):
    samples = [
        sample("faq", 1, "Paris"),
        sample("faq", 2, "four"),
        sample("faq", 3, "blue"),
        sample("chat", 7, "hi", "/data/chat.jsonl"),
    ]
    base = [
        sample("faq", 1, "London"),
        sample("faq", 2, "four"),
        sample("faq", 3, "red"),
        sample("chat", 7, "hello", "/data/chat.jsonl"),
    ]
    return tmp_path, samples, base, row_ids(samples)


def test_summary_without_database_is_all_remaining_and_creates_nothing(run):
    run_dir, samples, base, _ = run
    summary = review_summary(run_dir, samples, base, FP)
    assert (summary.total, summary.reviewed, summary.remaining_by_source, summary.values) == (
        4,
        0,
        {"faq": 2 + 1, "chat": 1},
        {},
    )
    assert not (run_dir / "reviews.sqlite").exists()


def test_summary_values_follow_their_definitions(run):
    run_dir, samples, base, ids = run
    store = ReviewStore(run_dir)
    # row 1: ann 4 vs base 2, bob 2 (tuned only) -> score 3, wins (ann: 4 > 2)
    judge(store, ids[0], "ann", 1, text="Paris")
    judge(store, ids[0], "ann", 4, text="Paris")  # the latest is the current one
    judge(store, ids[0], "ann", 2, answer="base", text="London")
    judge(store, ids[0], "bob", 2, text="Paris", flagged=True)
    # row 2: a tie (3 vs 3) does not beat
    judge(store, ids[1], "ann", 3, text="four")
    judge(store, ids[1], "ann", 3, answer="base", text="four")
    # row 3: only stale judgements (other text, other data): not reviewed
    judge(store, ids[2], "ann", 5, text="green")
    judge(store, ids[2], "bob", 5, text="blue", fingerprint="0" * 64)
    # row 4 (chat): flagged without a score does not make it reviewed
    judge(store, ids[3], "cy", None, text="hi", flagged=True, source="chat")
    summary = review_summary(run_dir, samples, base, FP)
    assert summary.total == 4 and summary.reviewed == 2
    assert summary.remaining_by_source == {"faq": 1, "chat": 1}
    assert summary.values == {
        "review_score": pytest.approx((3 + 3) / 2),
        "review_flagged": 0.5,
        "review_wins": 0.5,
        "review_score(faq)": pytest.approx(3.0),
        "review_flagged(faq)": 0.5,
        "review_wins(faq)": 0.5,
    }  # chat has no reviewed row: its keys are left out
    # without a baseline, wins cannot be computed: the keys are left out
    no_base = review_summary(run_dir, samples, None, FP)
    assert "review_wins" not in no_base.values and no_base.values["review_score"] == pytest.approx(3.0)
    # a new generation (other answer text) makes every earlier judgement stale
    regenerated = [dict(s, generated=s["generated"] + "!") for s in samples]
    assert review_summary(run_dir, regenerated, base, FP).reviewed == 0


def test_wins_average_over_reviewers_who_scored_both(run):
    run_dir, samples, base, ids = run
    store = ReviewStore(run_dir)
    judge(store, ids[0], "ann", 5, text="Paris")
    judge(store, ids[0], "ann", 1, answer="base", text="London")
    judge(store, ids[0], "bob", 1, text="Paris")
    judge(store, ids[0], "bob", 4, answer="base", text="London")  # mean tuned 3 > mean base 2.5
    judge(store, ids[0], "cy", 1, text="Paris")  # scored only the tuned answer: not in wins
    summary = review_summary(run_dir, samples, base, FP)
    assert summary.values["review_wins"] == 1.0
    assert summary.values["review_score"] == pytest.approx((5 + 1 + 1) / 3)


# ---------------------------------------------------------------- export


SPEC = """\
sft "corr"
use "tiny-model.sft"  # tests/fixtures/specs/tiny-model.sft, copied beside this spec
data qa = jsonl("qa.jsonl") { split eval = 50% seed 1 }
data chat = jsonl("chat.jsonl") { split eval = 50% seed 1 }
data lit = jsonl("lit.jsonl") { split eval = 50% seed 1 }
template answer for qa {
    prompt = "Q: {question} A: "
    completion = "{answer}"
}
template talk for chat {
    messages = messages
}
template decorated for lit {
    prompt = "Q: {question} A: "
    completion = "The answer is {answer}"
}
train {
    steps = 1
    batch = 2
    seq_len = 32
    optimizer = adamw(lr = 1e-3)
}
"""


@pytest.fixture(scope="module")
def export_run(tmp_path_factory):
    """A run directory whose plan is compiled from SPEC, with three sources: a one-column
    completion, a messages column and a completion with text around its placeholder."""
    from runtime.data.sources import source_fingerprint
    from runtime.runs.run_directory import write_plan
    from sftlang.check import check_spec_file
    from sftlang.lower import lower
    from tests.runtime.data_helpers import CHATML, wordlevel_tokenizer

    root = tmp_path_factory.mktemp("export")
    wordlevel_tokenizer(CHATML).save_pretrained(str(root / "tok"))
    qa = [{"question": f"what is {n}", "answer": f"{n}", "id": n} for n in ("one", "two", "three", "four")]
    (root / "qa.jsonl").write_text(
        "\n".join(json.dumps(r) for r in qa[:2])
        + "\n\n"  # a blank line: line 4 is qa[2]
        + "\n".join(json.dumps(r) for r in qa[2:])
        + "\n"
    )
    chat = [
        {
            "messages": [
                {"role": "user", "content": f"say {n}"},
                {"role": "assistant", "content": n},
                {"role": "user", "content": "again"},
                {"role": "assistant", "content": n},
            ]
        }
        for n in ("one", "two")
    ]
    (root / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in chat))
    (root / "lit.jsonl").write_text("".join(json.dumps(r) + "\n" for r in qa))
    copy_fixtures(root, "tiny-model.sft")
    (root / "corr.sft").write_text(SPEC)
    spec, problems = check_spec_file(str(root / "corr.sft"))
    assert spec is not None and not [p for p in problems if p.is_error], problems
    plan = lower(spec)
    run_dir = root / "runs" / "corr" / "t0"
    run_dir.mkdir(parents=True)
    write_plan(run_dir, plan)
    fingerprints = {s.name: source_fingerprint(s, str(root / "cache")) for s in plan.data.sources}
    (run_dir / "manifest.json").write_text(json.dumps({"data": {"fingerprints": fingerprints}}))
    samples = [
        sample("qa", 4, "thre", str(root / "qa.jsonl")),
        sample("qa", 2, "two", str(root / "qa.jsonl")),
        sample("chat", 2, "tw", str(root / "chat.jsonl")),
        sample("lit", 1, "1", str(root / "lit.jsonl")),
    ]
    (run_dir / "report.json").write_text(json.dumps({"samples": samples}))
    return root, run_dir, samples, fingerprints


def test_export_replaces_the_trained_part_and_refuses_what_it_cannot_map(export_run, tmp_path):
    from runtime.review.corrections import export_corrections

    root, run_dir, samples, fps = export_run
    ids = row_ids(samples)
    store = ReviewStore(run_dir)
    try:

        def j(i, reviewer, correction, score=2):
            return store.add(
                Judgement(
                    row_id=ids[i],
                    answer="tuned",
                    reviewer=reviewer,
                    score=score,
                    flagged=False,
                    correction=correction,
                    note=None,
                    data_fingerprint=fps[samples[i]["source"]],
                    answer_sha=answer_sha(samples[i]["generated"]),
                )
            )

        j(0, "ann", "three (fixed by ann)")
        j(0, "bob", "three")  # two reviewers: the latest wins, with a warning
        j(2, "ann", "two, again")
        j(3, "ann", "1")  # `The answer is {answer}`: refused
        out = tmp_path / "sub" / "corrections.jsonl"
        result = export_corrections(run_dir, out, cache_dir=str(root / "cache"))
        lines = [json.loads(line) for line in out.read_text().splitlines()]
        assert result.written == 2 and len(lines) == 2
        assert lines[0] == {
            "question": "what is three",
            "answer": "three",
            "id": "three",
            "review": {"reviewer": "bob", "score": 2, "run": str(run_dir), "row": ids[0]},
        }
        assert lines[1]["messages"][-1] == {"role": "assistant", "content": "two, again"}
        assert lines[1]["messages"][1] == {"role": "assistant", "content": "two"}  # earlier turns kept
        assert (
            len(result.warnings) == 1
            and ids[0] in result.warnings[0]
            and "ann" in result.warnings[0]
            and "bob" in result.warnings[0]
        )
        assert (
            len(result.refused) == 1
            and "data lit" in result.refused[0]
            and ids[3] in result.refused[0]
            and "The answer is {answer}" in result.refused[0]
        )
    finally:
        store.path.unlink()
        for suffix in ("-wal", "-shm"):
            Path(str(store.path) + suffix).unlink(missing_ok=True)


def test_export_refuses_rows_of_changed_data_and_rows_without_files(export_run, tmp_path):
    import shutil

    from runtime.review.corrections import export_corrections

    root, run_dir, samples, fps = export_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    hub = dict(samples[1], file=None)
    report = {"samples": [samples[1], hub]}
    (copy / "report.json").write_text(json.dumps(report))
    changed = dict(fps, qa="0" * 64)  # as if qa.jsonl had been edited since the run
    (copy / "manifest.json").write_text(json.dumps({"data": {"fingerprints": changed}}))
    store = ReviewStore(copy)
    for rid, s in zip(row_ids(report["samples"]), report["samples"]):
        store.add(
            Judgement(
                row_id=rid,
                answer="tuned",
                reviewer="ann",
                score=1,
                flagged=False,
                correction="x",
                note=None,
                data_fingerprint=changed["qa"],
                answer_sha=answer_sha(s["generated"]),
            )
        )
    result = export_corrections(copy, tmp_path / "c.jsonl", cache_dir=str(root / "cache"))
    assert result.written == 0 and (tmp_path / "c.jsonl").read_text() == ""
    assert len(result.refused) == 2
    assert "changed since the run" in result.refused[0] and "qa:qa.jsonl:2" in result.refused[0]
    assert "no local file" in result.refused[1] and "qa::2" in result.refused[1]


def test_sftc_review_export_says_where_and_how_many(export_run, tmp_path, capsys, monkeypatch):
    import shutil

    from sftlang.cli import main

    root, run_dir, samples, fps = export_run
    monkeypatch.setenv("SFTC_CACHE", str(root / "sftc-cache"))
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    rid = row_ids(samples)[1]
    ReviewStore(copy).add(
        Judgement(
            row_id=rid,
            answer="tuned",
            reviewer="ann",
            score=5,
            flagged=False,
            correction="TWO",
            note=None,
            data_fingerprint=fps["qa"],
            answer_sha=answer_sha(samples[1]["generated"]),
        )
    )
    out = tmp_path / "corrections.jsonl"
    assert main(["review", str(copy), "--export", str(out)]) == 0
    assert f"wrote 1 corrected row to {out}" in capsys.readouterr().err.replace("\n", "")
    assert json.loads(out.read_text())["answer"] == "TWO"
    (copy / "plan.json").unlink()
    assert main(["review", str(copy), "--export", str(out)]) == 1
    assert "plan.json: not found" in capsys.readouterr().err
