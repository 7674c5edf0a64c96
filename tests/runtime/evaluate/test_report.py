"""report.md / report.json / loss.png in a run directory, and the terminal gate table."""

from __future__ import annotations

import io
import json
import math

from rich.console import Console

from runtime.evaluate import Sample, compute_metrics, judge, print_gates, rank_samples, write_report
from runtime.evaluate.report import loss_series
from runtime.plan.run_plan import GatePlan
from runtime.train.metrics_log import MetricsLog


def sample(source, generated, reference, line):
    return Sample(
        source=source,
        file=f"data/{source}.jsonl",
        line=line,
        prompt=f"question {line} | answer :",
        reference=reference,
        generated=generated,
        tokens=len(generated.split()),
        finished=line != 3,
    )


SAMPLES = [
    sample("faq", "returns are free within 30 days", "returns are free within 30 days", 1),
    sample("tickets", '{"intent": "refund"}', '{"intent": "refund"}', 2),
    sample("faq", "```json\nwe ship```", "we ship to the EU only", 3),
    sample("faq", "cats", "free returns", 4),
    sample("tickets", '{"intent": "status"', '{"intent": "status"}', 5),
]
GATES = (
    GatePlan("loss", "<=", 1.2, text="loss"),
    GatePlan("json_valid", ">=", 0.9, source="tickets", text="json_valid(tickets)"),
    GatePlan("rouge_l", ">=", 0.5, source="faq", text="rouge_l(faq)"),
    GatePlan("bleu", ">=", 10, source="chats", text="bleu(chats)"),
)
TOKENS = {None: {"loss": 0.8}, "faq": {"loss": 1.1}, "tickets": {"loss": 0.5}}
RECORDS = (
    [{"kind": "event", "step": 0, "event": "start"}]
    + [{"kind": "train", "step": s, "loss": 3.0 / s} for s in range(1, 11)]
    + [{"kind": "train", "step": 9, "loss": 0.25}]  # resumed: step 9 written again
    + [{"kind": "train", "step": 10, "loss": "nan"}]
    + [{"kind": "eval", "step": s, "source": None, "loss": 2.0 / s} for s in (5, 10)]
    + [{"kind": "eval", "step": 10, "source": "faq", "loss": 0.3}]
)


def test_loss_series_keeps_the_last_value_per_step_and_skips_non_finite():
    series = {name: (xs, ys) for name, xs, ys in loss_series(RECORDS)}
    assert list(series) == ["train loss", "eval loss", "eval loss (faq)"]
    xs, ys = series["train loss"]
    assert xs == [float(s) for s in range(1, 10)] and ys[-1] == 0.25  # step 10's NaN left out
    assert series["eval loss"] == ([5.0, 10.0], [0.4, 0.2])


def test_samples_worst_first_by_the_failing_gate():
    verdicts = judge(GATES, compute_metrics(SAMPLES, TOKENS, gates=GATES))
    assert [v.passed for v in verdicts] == [True, False, False, False]
    ranked, by = rank_samples(SAMPLES, verdicts)
    # json_valid(tickets) is the first failing generation gate: the invalid ticket first
    assert by.gate == "json_valid(tickets)"
    assert [(s.line, score) for s, score in ranked] == [(5, 0.0), (2, 1.0), (1, None), (3, None), (4, None)]
    # with every generation gate passing, the first generation gate orders; `<=` gates worst = highest
    ranked, by = rank_samples(
        SAMPLES, judge([GatePlan("mean_tokens", "<=", 100, text="mean_tokens")], {"mean_tokens": 3.0})
    )
    assert by.gate == "mean_tokens" and [s.tokens for s, _ in ranked] == sorted(
        (s.tokens for s in SAMPLES), reverse=True
    )
    assert rank_samples(SAMPLES, [])[1] is None


def test_report_files(tmp_path):
    log = MetricsLog(tmp_path, tensorboard=False)
    for r in RECORDS:
        log.write(r)
    log.close()
    values = compute_metrics(SAMPLES, TOKENS, gates=GATES)
    verdicts = judge(GATES, values)
    stats = {
        "seq_len": 128,
        "packing": True,
        "total_steps": 10,
        "sources": {
            "faq": {"rows": 30, "train_examples": 27, "eval_examples": 3, "bad_rows": 0},
            "tickets": {"rows": 20, "train_examples": 18, "eval_examples": 2, "bad_rows": 0},
        },
    }
    facts = {"name": "support", "steps": 10, "duration_s": 125.4, "spec_hash": "ab12cd"}
    md_path, json_path = write_report(
        tmp_path, verdicts=verdicts, values=values, samples=SAMPLES, facts=facts, data_stats=stats, limit=4
    )
    md = md_path.read_text()
    png = (tmp_path / "loss.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and "![loss curve](loss.png)" in md
    assert md.startswith("# support: rejected\n")
    assert (
        "**rejected: 3 of 4 gates failed: json_valid(tickets) >= 0.9, rouge_l(faq) >= 0.5, bleu(chats) >= 10**"
    ) in md
    assert "| `loss` | 0.8000 | <= 1.2 | ✓ pass |" in md
    assert "| `json_valid(tickets)` | 0.5000 | >= 0.9 | ✗ fail |" in md
    assert "| `bleu(chats)` | — | >= 10 | ✗ fail: not computed: no generations for source `chats`" in md
    assert "| duration_s | 2m 05s |" in md and "| spec_hash | ab12cd |" in md
    assert "| metric | all | faq | tickets |" in md and "| `loss` | 0.8000 | 1.1000 | 0.5000 |" in md
    assert "| faq | 30 | 27 | 3 | 0 |" in md
    # generations: worst first, 4 of 5 shown, a prompt's `|` and a generation's backticks kept intact
    assert "Worst first by `json_valid(tickets)` (failing gate), 4 of 5 samples." in md
    first = md.index("### 1. `tickets` — data/tickets.jsonl:5 — json_valid 0.0000")
    assert first < md.index("### 2. `tickets` — data/tickets.jsonl:2") < md.index("### 3. `faq` — data/faq.jsonl:1")
    assert "### 4. `faq` — data/faq.jsonl:3 — 3 tokens (cut at max_new_tokens)" in md
    assert "````text\n```json\nwe ship```\n````" in md
    assert "question 5 | answer :" in md and "data/faq.jsonl:4" not in md

    doc = json.loads(json_path.read_text())
    assert doc["accepted"] is False and doc["name"] == "support" and doc["loss_curve"] == "loss.png"
    assert [g["gate"] for g in doc["gates"]] == [g.text for g in GATES]
    assert doc["gates"][3]["value"] is None and "not computed" in doc["gates"][3]["reason"]
    assert doc["per_source"]["faq"]["loss"] == 1.1 and doc["per_source"]["all"]["loss"] == 0.8
    assert doc["metrics"]["json_valid(tickets)"] == 0.5
    assert len(doc["samples"]) == 5 and doc["samples"][0]["line"] == 5 and doc["ranked_by"] == "json_valid(tickets)"
    assert doc["data"]["sources"]["tickets"]["rows"] == 20 and doc["facts"]["duration_s"] == 125.4


def test_report_without_gates_generations_or_metrics_log(tmp_path):
    values = {"loss": float("nan")}
    md_path, json_path = write_report(tmp_path, verdicts=[], values=values, facts={"name": "bare"})
    md = md_path.read_text()
    assert "**accepted: no gates**" in md and "No losses were logged." in md and "No generations" in md
    assert not (tmp_path / "loss.png").exists()
    assert json.loads(json_path.read_text())["metrics"]["loss"] == "nan"  # strict JSON


def test_terminal_gate_table_colours():
    verdicts = judge(GATES[:3], {"loss": 0.8, "json_valid(tickets)": 0.95, "rouge_l(faq)": 0.31})
    console = Console(record=True, width=120, force_terminal=True, color_system="standard", file=io.StringIO())
    print_gates(verdicts, console)
    plain = console.export_text(clear=False)
    assert "json_valid(tickets)" in plain and "0.9500" in plain and ">= 0.9" in plain
    assert plain.count("✓ pass") == 2 and plain.count("✗ fail") == 1
    assert "rejected: 1 of 3 gates failed: rouge_l(faq) >= 0.5" in plain
    styled = console.export_text(styles=True)
    assert "\x1b[1;32m✓ pass" in styled and "\x1b[1;31m✗ fail" in styled
    assert math.isclose(verdicts[2].value, 0.31)
