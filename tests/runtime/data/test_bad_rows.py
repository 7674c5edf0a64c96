"""Bad input: on_bad_row = error names file/row/column/row text; skip counts and reports."""

from __future__ import annotations

import pytest

from runtime.data.pipeline import build_pipeline
from runtime.plan.data_errors import BadRowError, DataError
from runtime.plan.data_plan import DataPlan, SourceSpec, TemplateSpec
from tests.runtime.data_helpers import CHATML, wordlevel_tokenizer, write_jsonl

PC = TemplateSpec(prompt="question : {q} answer :", completion=" {a}")
GOOD = {"q": "hello", "a": "hi"}


def plan_for(path, on_bad_row, template=PC, kind="jsonl"):
    return DataPlan(
        sources=(SourceSpec(name="s", kind=kind, paths=(path,), on_bad_row=on_bad_row),),
        templates={"s": template} if template else {},
        seq_len=32,
        global_batch_size=2,
    )


def write_lines(path, lines: list[bytes]) -> str:
    with open(path, "wb") as f:
        f.write(b"\n".join(lines) + b"\n")
    return str(path)


CASES = {
    "missing in row": ([GOOD, {"q": "hello"}, GOOD], PC, "a", "value is null or missing"),
    "null": ([GOOD, GOOD, {"q": None, "a": "hi"}], PC, "q", "value is null"),
    "non-string": ([{"q": "hello", "a": 5}, GOOD], PC, "a", "value is int"),
    "empty completion": ([GOOD, {"q": "hello", "a": "  "}], PC, "a", "empty completion"),
    "no assistant turn": (
        [{"messages": [{"role": "user", "content": "hello"}]}],
        None,
        "messages",
        "no assistant turn",
    ),
    "content not a string": (
        [{"messages": [{"role": "user", "content": ["hello"]}, {"role": "assistant", "content": "hi"}]}],
        None,
        "messages",
        "content is list",
    ),
}
BAD_ROW = {
    "missing in row": 2,
    "null": 3,
    "non-string": 1,
    "empty completion": 2,
    "no assistant turn": 1,
    "content not a string": 1,
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_row_error_names_file_row_column_and_text(tmp_path, case):
    rows, template, column, reason = CASES[case]
    path = write_jsonl(str(tmp_path / "bad.jsonl"), rows)
    tok = wordlevel_tokenizer(CHATML)
    with pytest.raises(BadRowError) as e:
        build_pipeline(plan_for(path, "error", template), tok, cache_dir=str(tmp_path / "c"))
    err = e.value
    assert (err.file, err.row, err.column) == (path, BAD_ROW[case], column)
    assert reason in err.reason
    msg = str(err)
    assert f"{path}, line {BAD_ROW[case]}" in msg and repr(column) in msg and "on_bad_row = skip" in msg
    assert err.row_text and len(err.row_text) <= 200


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_row_skip_counts_and_reports(tmp_path, case):
    rows, template, column, reason = CASES[case]
    good = (
        GOOD
        if template is PC
        else {"messages": [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}]}
    )
    path = write_jsonl(str(tmp_path / "bad.jsonl"), rows + [good])
    tok = wordlevel_tokenizer(CHATML)
    p = build_pipeline(plan_for(path, "skip", template), tok, cache_dir=str(tmp_path / "c"))
    st = p.stats.sources["s"]
    assert st.bad_rows == 1 and st.rows == len(rows) + 1
    assert st.train_examples == len(rows)
    assert any(reason.split(" (")[0] in k for k in st.bad_reasons)
    assert st.bad_examples and f":{BAD_ROW[case]} [{column}]" in st.bad_examples[0]


def test_invalid_json_and_utf8_lines(tmp_path):
    path = write_lines(
        tmp_path / "b.jsonl",
        [
            b'{"q": "hello", "a": "hi"}',
            b'{"q": "x", oops}',
            b'{"q": "\xff\xfe", "a": "hi"}',
            b'{"q": "thanks", "a": "ok"}',
        ],
    )
    tok = wordlevel_tokenizer()
    with pytest.raises(BadRowError) as e:
        build_pipeline(plan_for(path, "error"), tok, cache_dir=str(tmp_path / "c"))
    assert e.value.row == 2 and "invalid JSON" in e.value.reason and "1 more bad lines" in e.value.reason
    assert "oops" in e.value.row_text
    p = build_pipeline(plan_for(path, "skip"), tok, cache_dir=str(tmp_path / "c"))
    st = p.stats.sources["s"]
    assert st.bad_rows == 2 and st.train_examples == 2 and st.rows == 4
    assert st.bad_reasons == {"invalid JSON": 1, "invalid UTF-8": 1}
    assert "line 2" not in st.bad_examples[0] and st.bad_examples[0].endswith(
        ":2: invalid JSON: Expecting property name enclosed in double quotes at column 12"
    )
    # rows after a skipped line still report their original line numbers
    ex = p.examples()
    assert [(e.line, e.row) for e in ex] == [(1, 0), (4, 1)]


def test_invalid_utf8_in_csv(tmp_path):
    path = write_lines(tmp_path / "b.csv", [b"q,a", b"hello,hi", b"\xff,hi", b"thanks,ok"])
    tok = wordlevel_tokenizer()
    with pytest.raises(BadRowError) as e:
        build_pipeline(plan_for(path, "error", kind="csv"), tok, cache_dir=str(tmp_path / "c"))
    assert e.value.row == 3 and "invalid UTF-8" in e.value.reason and "b.csv, line 3" in str(e.value)
    p = build_pipeline(plan_for(path, "skip", kind="csv"), tok, cache_dir=str(tmp_path / "c"))
    assert p.stats.sources["s"].bad_rows == 1 and p.stats.sources["s"].train_examples == 2


def test_column_missing_from_the_source(tmp_path):
    path = write_jsonl(str(tmp_path / "b.jsonl"), [{"q": "hello", "answer": "hi"}])
    with pytest.raises(BadRowError) as e:
        build_pipeline(plan_for(path, "error"), wordlevel_tokenizer(), cache_dir=str(tmp_path / "c"))
    assert e.value.column == "a" and e.value.reason == "missing column 'a'" and e.value.row == 1


def test_all_rows_bad_is_an_error_even_with_skip(tmp_path):
    path = write_jsonl(str(tmp_path / "b.jsonl"), [{"q": "hello"}, {"q": "x"}])
    with pytest.raises(DataError, match="none of its 2 rows became an example"):
        build_pipeline(plan_for(path, "skip"), wordlevel_tokenizer(), cache_dir=str(tmp_path / "c"))


def test_error_mode_after_a_cached_skip_run_still_raises(tmp_path):
    path = write_jsonl(str(tmp_path / "b.jsonl"), [GOOD, {"q": None, "a": "x"}])
    tok = wordlevel_tokenizer()
    build_pipeline(plan_for(path, "skip"), tok, cache_dir=str(tmp_path / "c"))
    with pytest.raises(BadRowError, match="b.jsonl, line 2"):
        build_pipeline(plan_for(path, "error"), tok, cache_dir=str(tmp_path / "c"))


def test_long_row_text_is_shortened(tmp_path):
    path = write_jsonl(str(tmp_path / "b.jsonl"), [{"q": "hello " * 500, "a": None}])
    with pytest.raises(BadRowError) as e:
        build_pipeline(plan_for(path, "error"), wordlevel_tokenizer(), cache_dir=str(tmp_path / "c"))
    assert len(e.value.row_text) == 200 and e.value.row_text.endswith("…")


def test_bad_row_error_crosses_worker_processes(tmp_path):
    import pickle

    err = BadRowError("s", "/f.jsonl", 3, "q", "value is null or missing", "{}", turn=None, unit="line")
    again = pickle.loads(pickle.dumps(err))
    assert (type(again), str(again), again.row, again.unit) == (BadRowError, str(err), 3, "line")
    path = write_jsonl(str(tmp_path / "b.jsonl"), [GOOD] * 30 + [{"q": None, "a": "x"}])
    with pytest.raises(BadRowError, match="b.jsonl, line 31"):
        build_pipeline(plan_for(path, "error"), wordlevel_tokenizer(), cache_dir=str(tmp_path / "c"), num_proc=2)
