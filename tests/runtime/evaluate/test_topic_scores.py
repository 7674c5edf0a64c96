"""Eval results per topic of the data: each sample in its prompt's topic, scores against
hand-computed ones, the base model's answers paired by identity, reviews per topic, the weakest
topic against the thinnest, the chart and the report's "About the data"."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from runtime.audit.coverage import Coverage, Topic
from runtime.evaluate.topic_scores import TopicTable, score_metrics, topic_table


def _sample(source, line, generated, reference, turn=None):
    return {
        "source": source,
        "file": f"/data/{source}.jsonl",
        "line": line,
        "turn": turn,
        "prompt": f"q{line}",
        "reference": reference,
        "generated": generated,
        "tokens": 2,
    }


COVERAGE = Coverage(
    "tf-idf",
    3,
    [
        Topic("orders, shipping", ("orders", "shipping"), 40, ("a:a.jsonl:1",)),
        Topic("returns, refund", ("returns", "refund"), 12, ("a:a.jsonl:2",)),
        Topic("greetings", ("greetings",), 5, ("a:a.jsonl:3",)),
    ],
    {
        "faq:faq.jsonl:1": 0,
        "faq:faq.jsonl:2": 0,
        "faq:faq.jsonl:3": 1,
        "chat:chat.jsonl:4#1": 1,
        "chat:chat.jsonl:4#3": 0,  # two turns of one conversation, two topics
    },
)
SAMPLES = [
    _sample("faq", 1, "ship in 2 days", "ship in 2 days"),
    _sample("faq", 2, "no idea", "we ship to the EU"),
    _sample("faq", 3, "refund in 5 days", "refund in 14 days"),
    _sample("chat", 4, "keep the box", "keep the box", turn=1),
    _sample("chat", 4, "yes", "yes", turn=3),
    _sample("gone", 9, "x", "y"),  # a row the audit did not read
]


def test_each_sample_is_scored_in_its_own_topic_with_its_own_base_answer():
    base = [dict(s, generated=s["reference"] if s["line"] == 2 else "nothing") for s in reversed(SAMPLES)]
    table = topic_table(COVERAGE, SAMPLES, base, ["exact_match"])
    orders, returns, greetings = table.topics
    assert (orders.train_rows, orders.eval_rows) == (40, 3)
    assert (orders.tuned, orders.base) == ({"exact_match": pytest.approx(2 / 3)}, {"exact_match": pytest.approx(1 / 3)})
    assert orders.gain("exact_match") == pytest.approx(1 / 3)
    assert (returns.eval_rows, returns.tuned, returns.base) == (2, {"exact_match": 0.5}, {"exact_match": 0.0})
    assert (greetings.eval_rows, greetings.tuned, greetings.base, greetings.gain("exact_match")) == (0, {}, {}, None)
    assert table.unmatched == 1
    assert table.weakest is returns and table.thinnest is returns
    assert "`returns, refund`: 12 training rows, exact_match 0.50, the lowest" in table.verdict()
    assert "also the topic with the least data" in table.verdict()
    doc = json.loads(json.dumps(table.to_dict()))
    assert doc["weakest"] == "returns, refund" and doc["topics"][0]["gain"] == {"exact_match": pytest.approx(1 / 3)}


def test_without_a_baseline_there_is_no_gain_and_a_rich_topic_can_be_the_weakest():
    samples = [dict(s, generated="wrong") if s["line"] in (1, 2) else s for s in SAMPLES]
    table = topic_table(COVERAGE, samples, None, ["exact_match"])
    assert all(t.base == {} and t.gain("exact_match") is None for t in table.topics)
    assert table.weakest.label == "orders, shipping" and table.thinnest.label == "returns, refund"
    assert "not the topic with the least data (`returns, refund`, 12 rows" in table.verdict()


def test_a_metric_every_topic_saturates_does_not_decide_and_equal_scores_name_no_weakest():
    right = [dict(s, generated=s["reference"]) for s in SAMPLES]
    table = topic_table(COVERAGE, right, None, ["json_valid", "exact_match"])
    assert table.metric == "json_valid" and table.weakest is None  # both score 0 and 1 everywhere: no weakest
    assert table.verdict() == "every topic scores json_valid 0.00: none is weaker than the others"
    table = topic_table(COVERAGE, SAMPLES, None, ["json_valid", "exact_match"])
    assert table.metric == "exact_match"  # json_valid is 0 in every topic: exact_match tells them apart
    assert table.weakest.label == "returns, refund"


def test_review_scores_are_read_per_topic():
    seen = []

    def reviews(samples, base):
        seen.append(sorted((s["source"], s["line"], s["turn"]) for s in samples))
        return 4.0 if len(samples) == 3 else None, len(samples) if len(samples) == 3 else 0

    table = topic_table(COVERAGE, SAMPLES, None, ["rouge_l"], reviews)
    assert seen == [[("chat", 4, 3), ("faq", 1, None), ("faq", 2, None)], [("chat", 4, 1), ("faq", 3, None)]]
    assert (table.topics[0].review_score, table.topics[0].reviewed) == (4.0, 3)
    assert table.topics[1].review_score is None


def test_the_score_metrics_are_the_gates_that_grade_answers_in_their_order():
    metrics = ("loss", "max_tokens", "regex", "json_valid", "exact_match", "json_valid")
    assert score_metrics([SimpleNamespace(metric=m) for m in metrics]) == ["json_valid", "exact_match"]
    assert score_metrics([SimpleNamespace(metric="loss")]) == ["rouge_l"]


def test_the_chart_draws_one_point_per_scored_topic_and_the_weakest_in_red(tmp_path):
    from runtime.evaluate.topic_chart import chart, write_topic_chart

    base = [dict(s, generated="nothing") for s in SAMPLES]
    table = topic_table(COVERAGE, SAMPLES, base, ["exact_match"])
    axes = chart(table).axes[0]
    points = [tuple(c.get_offsets()[0]) for c in axes.collections]
    assert (40, pytest.approx(2 / 3)) in points and (12, 0.5) in points  # tuned
    assert (40, 0.0) in points and (12, 0.0) in points  # the base model, hollow
    assert {t.get_text() for t in axes.texts} == {"orders, shipping", "returns, refund"}
    assert write_topic_chart(tmp_path / "t.png", table).read_bytes()[:4] == b"\x89PNG"
    empty = TopicTable(["exact_match"], [], 0)
    assert write_topic_chart(tmp_path / "none.png", empty) is None and not (tmp_path / "none.png").exists()


def test_the_report_says_what_is_wrong_with_the_data_and_where_the_model_fails(tmp_path):
    from runtime.evaluate.report import write_report

    counts = {
        "faq": {"examples": 60, "train": 50, "eval": 10, "duplicate": 2, "leak": 1},
        "all": {"examples": 60, "train": 50, "eval": 10, "duplicate": 2, "leak": 1},
    }
    table = topic_table(COVERAGE, SAMPLES, None, ["exact_match"])
    md, js = write_report(tmp_path, verdicts=[], values={}, data_stats={"audit": counts}, records=[], topics=table)
    text = md.read_text()
    about = text[text.index("## About the data") :]
    assert "| faq | 50 | 10 | 2 | 0 | 1 | 0 | 0 |" in about and "`sftc audit SPEC` names every row" in about
    assert "| returns, refund | 12 | 2 | 0.500 |  |" in about
    assert "**Weakest topic** `returns, refund`" in about and "![exact_match per topic" in about
    assert "1 eval answer of rows the audit did not read" in about
    report = json.loads(js.read_text())
    assert report["topics"]["weakest"] == "returns, refund" and report["topics"]["chart"] == "topics.png"
    assert (tmp_path / "topics.png").is_file()
