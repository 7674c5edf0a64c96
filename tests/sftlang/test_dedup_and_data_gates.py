"""`dedup = exact | near(T)` on a source and the data gates of `accept` (`leakage == 0`,
`duplicates <= 1%`, `conflicts == 0`, `suspects`): accepted, lowered into the plan (plan.json
unchanged for a spec without them), and each mistake reported with its code, line and column."""

from __future__ import annotations

import json

import pytest

from runtime.plan.data_plan import Dedup
from runtime.plan.run_plan import Plan
from sftlang.check import check_spec_file
from sftlang.diagnostics import render_plain
from sftlang.lower import lower
from tests.sftlang.test_check_errors import BASE, Case, _column

# BASE line 7 is `split eval = 10% seed 1` of `data tickets`; lines 21-22 the `accept` gates


def _with(edits: dict[int, str]) -> str:
    return Case("", edits, 0, "").text()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("gate-specs")
    (root / "tickets.jsonl").write_text(
        '{"question": "where is my order?", "answer": "soon"}\n{"question": "refund?", "answer": "yes"}\n'
    )
    return root


def _check(workdir, name: str, text: str):
    path = workdir / f"{name}.sft"
    path.write_text(text)
    spec, problems = check_spec_file(path, devices=1, offline=True)
    return spec, [d for d in problems if d.is_error]


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("dedup = exact", Dedup("exact")),
        ("dedup = near()", Dedup("near", 0.9)),
        ("dedup = near(0.8)", Dedup("near", 0.8)),
        ("dedup = near(threshold = 1)", Dedup("near", 1.0)),
    ],
)
def test_dedup_is_accepted_and_lowered(workdir, setting, expected):
    spec, errors = _check(workdir, "dedup_" + expected.kind, _with({7: f"    split eval = 10% seed 1\n    {setting}"}))
    assert errors == []
    plan = lower(spec)
    (source,) = plan.data.sources
    assert source.dedup == expected
    assert source.eval is not None and source.eval.source is None  # the eval rows are a share: never deduplicated
    again = Plan.from_dict(json.loads(plan.to_json()))
    assert again == plan and again.data.sources[0].dedup == expected


def test_data_gates_are_accepted_and_lowered_apart_from_the_model_gates(workdir):
    gates = "    loss <= 2.0\n    leakage == 0\n    duplicates <= 1%\n    conflicts(tickets) == 0\n    suspects < 5"
    spec, errors = _check(workdir, "gates", _with({21: gates, 22: ""}))
    assert errors == []
    plan = lower(spec)
    assert [g.text for g in plan.gates] == ["loss"]
    assert [(g.text, g.op, g.threshold, g.source) for g in plan.data_gates] == [
        ("leakage", "==", 0.0, None),
        ("duplicates", "<=", 0.01, None),
        ("conflicts(tickets)", "==", 0.0, "tickets"),
        ("suspects", "<", 5.0, None),
    ]
    assert Plan.from_dict(json.loads(plan.to_json())) == plan


def test_a_spec_without_them_writes_the_plan_it_wrote_before(workdir):
    spec, errors = _check(workdir, "plain", BASE)
    assert errors == []
    written = json.loads(lower(spec).to_json())
    assert "data_gates" not in written
    assert all("dedup" not in source for source in written["data"]["sources"])
    assert "dedup" not in written["model"]["tokenizer"]["source"]
    old = dict(written)  # a plan.json written before these settings existed reads as "off"
    assert Plan.from_dict(old).data_gates == () and Plan.from_dict(old).data.sources[0].dedup is None


BAD = {
    "near threshold above 1": ("E022", {7: "    dedup = near(1.5)"}, 7, "1.5"),
    "near threshold 0": ("E022", {7: "    dedup = near(0)"}, 7, "0"),
    "unknown dedup": ("E015", {7: "    dedup = fuzzy"}, 7, "fuzzy"),
    "exact takes no threshold": ("E015", {7: "    dedup = exact(0.5)"}, 7, "exact"),
    "unknown near argument": ("E012", {7: "    dedup = near(t = 0.5)"}, 7, "t"),
    "dedup as a string": ("E020", {7: '    dedup = "exact"'}, 7, '"exact"'),
    "equality on a model metric": ("E020", {22: "    loss == 2.0"}, 22, "loss"),
    "data gate of an unknown source": ("E030", {22: "    leakage(tikets) == 0"}, 22, "tikets"),
    "gain of a data metric": ("E065", {22: "    gain(leakage) >= 1"}, 22, "leakage"),
    "duplicates above 100%": ("E063", {22: "    duplicates <= 5"}, 22, "5"),
    "negative leakage": ("E063", {22: "    leakage <= -1"}, 22, "-1"),
    "misspelt data metric": ("E032", {22: "    leakages == 0"}, 22, "leakages"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_values_are_reported_with_code_and_span(workdir, name):
    code, edits, line, at = BAD[name]
    text = _with(edits)
    _, errors = _check(workdir, name.replace(" ", "_"), text)
    rendered = "\n".join(render_plain(d) for d in errors)
    expected = (code, line, _column(text.split("\n")[line - 1], at, 1))
    found = {(d.code, d.span.line, d.span.column): d for d in errors if d.span is not None}
    assert expected in found, rendered
    assert "^" in render_plain(found[expected])
