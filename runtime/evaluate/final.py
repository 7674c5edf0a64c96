"""After training: the final evaluation, the `accept` verdicts, the report and the export.

Token metrics (loss, perplexity, token accuracy) come from the loop's final eval
records; generation metrics from decoding `eval.samples` eval prompts with the
trained weights. Export happens only when every gate holds (or when asked); the export is then
reloaded from disk and re-scored (`export_check`), and a run whose export does not reproduce its
metrics is not accepted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..train.metrics_log import read_metrics
from .gates import accepted, compute_metrics, judge
from .report import write_report


@dataclass
class Outcome:
    accepted: bool
    verdicts: list
    values: dict
    samples: list
    report: Path
    export: Path | None
    export_check: Any = None  # an `ExportCheck` when the run exported


def final_token_metrics(run_dir: Path, step: int) -> dict[str | None, dict]:
    """The eval records the loop wrote at `step`, by source (None: all eval rows)."""
    out: dict[str | None, dict] = {}
    for record in read_metrics(run_dir):
        if record.get("kind") == "eval" and record.get("step") == step:
            out[record.get("source")] = record
    return out


def trained_model(graphdef, params, frozen):
    from flax import nnx

    return nnx.merge(graphdef, params, frozen)


def evaluate_run(prepared, result, run_dir: Path, facts: dict[str, Any], export: str | None = None, force_export: bool = False) -> Outcome:
    """Evaluate the trained model, judge the gates, write report.md/json, export if accepted."""
    plan = prepared.plan
    model = trained_model(result.graphdef, result.params, result.frozen)
    samples = []
    if plan.eval.generate is not None:
        from .generation import generate_eval

        samples = generate_eval(model, prepared.tokenizer, prepared.pipeline, plan.eval.generate, plan.eval.samples, seed=plan.eval.generate.seed)
    eval_sources = [s.name for s in plan.data.sources if s.eval is not None]
    values = compute_metrics(samples, final_token_metrics(run_dir, result.steps), gates=plan.gates, eval_sources=eval_sources)
    verdicts = judge(plan.gates, values)
    ok = accepted(verdicts)
    export_dir = check = None
    export = plan.output.export if export is None else export
    if export != "none" and (ok or force_export):
        from .export_check import check_export

        export_dir = export_model(prepared, model, run_dir / "export", export)
        check = check_export(prepared, model, samples, export_dir, export)
        ok = ok and check.passed
    facts = {**facts, "accepted": ok, "export": str(export_dir) if export_dir else None}
    report, _ = write_report(run_dir, verdicts=verdicts, values=values, samples=samples, facts=facts,
                             data_stats=prepared.pipeline.stats, export_check=check.to_dict() if check else None)
    return Outcome(ok, verdicts, values, samples, report, export_dir, check)


def export_model(prepared, model, directory: Path, kind: str) -> Path:
    """A checkpoint transformers (`hf`) or peft (`peft`) loads as is, with the tokenizer."""
    from ..hf import save_pretrained

    if kind == "hf":
        if prepared.plan.model.adapter is not None:
            from ..models.lora import merge_lora

            model = merge_lora(model)
        return save_pretrained(
            model, prepared.config, directory, tokenizer=prepared.tokenizer,
            max_shard_size=prepared.plan.output.shard_size, dtype=prepared.plan.model.dtype,
        )
    if kind == "peft":
        from ..hf import save_peft

        base = prepared.plan.model.path
        return save_peft(model, prepared.config, directory, base, prepared.plan.model.adapter,
                         tokenizer=prepared.tokenizer, revision=prepared.plan.model.revision)
    raise ValueError(f"unknown export format {kind!r}")
