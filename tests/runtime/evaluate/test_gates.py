"""Metric values named as gates write them, and verdicts that never pass by default."""

from __future__ import annotations

import math

import pytest

from runtime.evaluate import Sample, accepted, compute_metrics, gate_key, judge, metric_key
from runtime.evaluate import metrics as M
from runtime.plan.run_plan import GatePlan


def sample(source, generated, reference, tokens=None):
    return Sample(
        source=source,
        file=f"{source}.jsonl",
        line=1,
        prompt="q",
        reference=reference,
        generated=generated,
        tokens=len(generated.split()) if tokens is None else tokens,
    )


SAMPLES = [
    sample("tickets", '{"intent": "refund"}', '{"intent": "refund"}'),
    sample("faq", "returns are free within 30 days", "returns are free for 30 days"),
    sample("tickets", '{"intent": "status"', '{"intent": "status"}'),
    sample("faq", "we ship worldwide", "we ship to the EU only"),
]
TOKENS = {
    None: {"loss": 0.9, "perplexity": math.exp(0.9), "token_accuracy": 0.7, "tokens": 400},
    "tickets": {"loss": 0.5, "token_accuracy": 0.8},
    "faq": {"loss": 1.3, "token_accuracy": 0.6},
}


def test_keys_overall_per_source_and_gate_text():
    gates = [
        GatePlan("bleu", ">=", 20, source="faq", text="bleu(faq)"),
        GatePlan("regex", ">=", 0.9, source="tickets", pattern="^\\{", text='regex("^\\\\{", tickets)'),
        GatePlan("loss", "<=", 1.2, text="loss"),
    ]
    values = compute_metrics(SAMPLES, TOKENS, gates=gates)
    faq = [s for s in SAMPLES if s.source == "faq"]
    assert values["loss"] == 0.9 and values["token_accuracy"] == 0.7 and "tokens" not in values
    assert values["loss(faq)"] == 1.3 and values["perplexity(faq)"] == pytest.approx(math.exp(1.3))
    assert values["bleu"] == M.bleu([s.generated for s in SAMPLES], [s.reference for s in SAMPLES])
    assert values["bleu(faq)"] == M.bleu([s.generated for s in faq], [s.reference for s in faq])
    assert values["json_valid(tickets)"] == 0.5 and values["json_match(tickets)"] == 0.5
    assert values["mean_tokens"] == pytest.approx(sum(s.tokens for s in SAMPLES) / 4)
    assert values['regex("^\\\\{", tickets)'] == 1.0  # the gate's own text is a key
    assert "regex" not in values  # no pattern, no value
    every = {f"{m}({s})" for m in M.GENERATION_METRICS for s in ("faq", "tickets")} | set(M.GENERATION_METRICS)
    assert every <= set(values)


def test_gate_key_without_text_and_metric_key():
    assert gate_key(GatePlan("rouge_l", ">=", 0.4, source="faq")) == "rouge_l(faq)"
    assert metric_key("regex", "faq", "^a\\d") == 'regex("^a\\\\d", faq)'
    assert metric_key("loss") == "loss"


def test_one_eval_source_has_the_overall_token_metrics():
    # the training loop writes only the overall eval record when one source has eval rows
    values = compute_metrics([], {None: {"loss": 0.4}}, eval_sources=["support"])
    assert values["loss(support)"] == 0.4 and values["perplexity(support)"] == pytest.approx(math.exp(0.4))
    # with two eval sources the overall record is not a per-source one
    values = compute_metrics([], {None: {"loss": 0.4}}, eval_sources=["support", "faq"])
    assert "loss(support)" not in values


def test_judge_comparisons():
    values = {"loss": 1.0, "bleu(faq)": 19.99, "exact_match": 0.8, "mean_tokens": 80.0}
    gates = [
        GatePlan("loss", "<=", 1.0, text="loss"),
        GatePlan("loss", "<", 1.0, text="loss"),
        GatePlan("bleu", ">=", 20, source="faq", text="bleu(faq)"),
        GatePlan("exact_match", "==", 0.8, text="exact_match"),
        GatePlan("exact_match", ">", 0.79, text="exact_match"),
        GatePlan("mean_tokens", "<=", 80, text="mean_tokens"),
    ]
    verdicts = judge(gates, values)
    assert [v.passed for v in verdicts] == [True, False, False, True, True, True]
    assert verdicts[2].gate == "bleu(faq)" and verdicts[2].value == 19.99 and verdicts[2].threshold == 20
    assert not accepted(verdicts) and accepted(verdicts[:1]) and accepted([])
    assert verdicts[2].text == "bleu(faq) >= 20"


def test_missing_or_nan_values_fail_with_a_reason():
    gates = [
        GatePlan("rouge_l", ">=", 0.0, source="chats", text="rouge_l(chats)"),
        GatePlan("loss", "<=", 100, source="faq", text="loss(faq)"),
        GatePlan("loss", "<=", 100, text="loss"),
        GatePlan("wer", "<=", 1, text="wer"),
    ]
    verdicts = judge(gates, {"loss": float("nan"), "rouge_l": 1.0})
    assert not any(v.passed for v in verdicts)
    assert "no generations for source `chats`" in verdicts[0].reason and verdicts[0].value is None
    assert "no eval loss for source `faq`" in verdicts[1].reason
    assert verdicts[2].reason == "value is NaN"
    assert "unknown metric `wer`" in verdicts[3].reason


def test_a_gate_on_a_source_without_generations_is_not_computed():
    gates = [GatePlan("exact_match", ">=", 0.0, source="chats", text="exact_match(chats)")]
    values = compute_metrics(SAMPLES, TOKENS, gates=gates)
    [verdict] = judge(gates, values)
    assert not verdict.passed and "not computed" in verdict.reason
