"""Evaluation and acceptance: generation metrics, eval generation, gates and the run report.

    from runtime.evaluate import generate_eval, compute_metrics, judge, write_report, print_gates
    samples = generate_eval(model, tokenizer, pipeline, plan.eval.generate, plan.eval.samples, seed=0)
    values = compute_metrics(samples, {None: eval_record, "faq": faq_record}, gates=plan.gates,
                             eval_sources=["tickets", "faq"])
    verdicts = judge(plan.gates, values)
    write_report(run_dir, verdicts=verdicts, values=values, samples=samples, facts={...})
    print_gates(verdicts)                    # exit 0 if accepted(verdicts) else 3

`metrics` holds the metric definitions (pure functions over strings); see docs/evaluation.md.
"""

from runtime.evaluate.answers import Sample, generate_eval, select_prompts, stop_ids
from runtime.evaluate.gates import TOKEN_METRICS, Verdict, accepted, compute_metrics, gate_key, judge, metric_key
from runtime.evaluate.report import gate_table, print_gates, rank_samples, summary_line, write_loss_chart, write_report

__all__ = [
    "Sample",
    "TOKEN_METRICS",
    "Verdict",
    "accepted",
    "compute_metrics",
    "gate_key",
    "gate_table",
    "generate_eval",
    "judge",
    "metric_key",
    "print_gates",
    "rank_samples",
    "select_prompts",
    "stop_ids",
    "summary_line",
    "write_loss_chart",
    "write_report",
]
