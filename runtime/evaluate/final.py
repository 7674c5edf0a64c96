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

from runtime.evaluate.gates import accepted, compute_metrics, judge
from runtime.evaluate.report import write_report
from runtime.platform.distributed import is_primary
from runtime.train.metrics_log import read_metrics


@dataclass
class Outcome:
    accepted: bool
    verdicts: list
    values: dict
    samples: list
    report: Path
    export: Path | None
    export_check: Any = None  # an `ExportCheck` when the run exported
    baseline: Any = None  # a `Baseline` when the run is compared with one
    base_values: dict | None = None  # the baseline's metric values
    benchmarks: Any = None  # the tuned model's `BenchmarkResult` (`eval.benchmarks`)


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


@dataclass
class Scores:
    """A model's evaluation: samples, every metric value, the baseline's and the gates' verdicts."""

    samples: list
    values: dict
    verdicts: list
    baseline: Any = None  # a `Baseline`, or None
    base_values: dict | None = None  # the baseline's metric values
    benchmarks: Any = None  # the tuned model's `BenchmarkResult`, or None


def benchmark_scores(prepared, model, console=None, which: str = "tuned"):
    """The plan's lm-evaluation-harness tasks (`eval.benchmarks`) scored on ``model``: the one call
    behind the tuned model's scores and the baseline's (``which``: "tuned" or "base"; ``console``:
    where their progress shows). None without benchmarks."""
    bench = prepared.plan.eval.benchmarks
    if bench is None:
        return None
    from runtime.evaluate.benchmarks import run_benchmarks

    if console is not None and is_primary():
        console.print(f"benchmarks on the {which} model: {', '.join(bench.tasks)}", highlight=False)

    return run_benchmarks(
        model,
        prepared.tokenizer,
        bench,
        max_length=int(prepared.config.max_position_embeddings),
        console=console if is_primary() else None,
    )


def score(prepared, engine, params, frozen, model, token_values: dict, run_dir: Path, inputs, console=None) -> Scores:
    """Generate, compare with the baseline, read the reviews and judge the gates: the one
    evaluation `sftc run` and `sftc eval` share. ``token_values`` are the model's token metrics
    by source; ``run_dir`` is the run whose reviews (`reviews.sqlite`) count; ``inputs`` the
    `runtime.plan.run_inputs.Inputs` of this evaluation (the baseline's cache key, the reviews' data);
    ``console`` shows the benchmarks' progress."""
    from runtime.evaluate.baseline import evaluate_baseline
    from runtime.evaluate.gates import gains
    from runtime.plan.run_inputs import eval_fingerprints

    plan = prepared.plan
    samples = []
    if plan.eval.generate is not None:
        from runtime.evaluate.answers import generate_eval

        samples = generate_eval(
            model,
            prepared.tokenizer,
            prepared.pipeline,
            plan.eval.generate,
            plan.eval.samples,
            seed=plan.eval.generate.seed,
            spread=True,
        )
    eval_sources = [s.name for s in plan.data.sources if s.eval is not None]
    benchmarks = benchmark_scores(prepared, model, console)
    baseline = evaluate_baseline(prepared, engine, params, frozen, inputs, console)
    base_values = None
    if baseline is not None:
        base_values = compute_metrics(
            baseline.samples,
            baseline.token_metrics,
            gates=plan.gates,
            eval_sources=eval_sources,
            extra=baseline.benchmark_values(),
        )
    reviews, pending = review_values(run_dir, plan.gates, samples, baseline, eval_fingerprints(inputs.parts))
    extra = {**reviews, **(benchmarks.values() if benchmarks is not None else {})}
    values = compute_metrics(samples, token_values, gates=plan.gates, eval_sources=eval_sources, extra=extra)
    if base_values is not None:
        values.update(gains(values, base_values, plan.gates))
    return Scores(samples, values, judge(plan.gates, values, pending), baseline, base_values, benchmarks)


def review_values(run_dir: Path, gates, samples, baseline, fingerprints: dict[str, str]) -> tuple[dict, dict]:
    """(review metric values, reasons of review gates that must wait): a review gate is judged
    only once every generated row of its scope has a review of the answer shown now."""
    from runtime.evaluate.gates import REVIEW_METRICS, gate_key

    gates = [g for g in gates if g.metric in REVIEW_METRICS]
    if not gates:
        return {}, {}
    from runtime.review.summary import review_summary

    summary = review_summary(
        Path(run_dir),
        [s.to_dict() for s in samples],
        [s.to_dict() for s in baseline.samples] if baseline is not None else None,
        fingerprints,
    )
    pending = {}
    for gate in gates:
        scope = [s for s in samples if gate.source is None or s.source == gate.source]
        remaining = (
            summary.remaining_by_source.get(gate.source, 0)
            if gate.source is not None
            else summary.total - summary.reviewed
        )
        if remaining and scope:
            pending[gate_key(gate)] = (
                f"{remaining} of {len(scope)} rows remain to be reviewed: `sftc review "
                f"{run_dir}`, then `sftc eval {run_dir}`"
            )
    return dict(summary.values), pending


def evaluate_run(
    prepared,
    result,
    run_dir: Path,
    facts: dict[str, Any],
    inputs,
    export: str | None = None,
    force_export: bool = False,
    console=None,
) -> Outcome:
    """Evaluate the trained model, judge the gates, write report.md/json, export if accepted."""
    plan = prepared.plan
    model = trained_model(result.graphdef, result.params, result.frozen)
    scores = score(
        prepared,
        result.engine,
        result.params,
        result.frozen,
        model,
        final_token_metrics(run_dir, result.steps),
        run_dir,
        inputs,
        console,
    )
    samples, values, verdicts = scores.samples, scores.values, scores.verdicts
    ok = accepted(verdicts)
    export_dir = check = None
    export = plan.output.export if export is None else export
    if export != "none" and (ok or force_export) and is_primary():  # one process writes the export
        from runtime.evaluate.export_check import check_export

        export_dir = export_model(prepared, model, run_dir / "export", export)
        check = check_export(prepared, model, samples, export_dir, export)
        ok = ok and check.passed
    facts = {**facts, "accepted": ok, "export": str(export_dir) if export_dir else None}
    report, _ = write_report(
        run_dir,
        verdicts=verdicts,
        values=values,
        samples=samples,
        facts=facts,
        data_stats=prepared.pipeline.stats,
        export_check=check.to_dict() if check else None,
        baseline=scores.baseline,
        base_values=scores.base_values,
        topics=topic_scores(prepared, scores, run_dir, inputs),
        benchmarks=scores.benchmarks,
    )
    return Outcome(
        ok, verdicts, values, samples, report, export_dir, check, scores.baseline, scores.base_values, scores.benchmarks
    )


def topic_scores(prepared, scores: Scores, run_dir: Path, inputs):
    """The eval results per topic of the training prompts (`runtime.evaluate.topic_scores`), when
    the run generated answers: where the model fails, beside how much data each topic has."""
    if not scores.samples:
        return None
    from runtime.audit.coverage import coverage
    from runtime.audit.read_examples import read_examples
    from runtime.evaluate.topic_scores import run_reviews, score_metrics, topic_table
    from runtime.plan.run_inputs import eval_fingerprints

    baseline = scores.baseline
    return topic_table(
        coverage(prepared.data_audit.examples if prepared.data_audit is not None else read_examples(prepared.pipeline)),
        [s.to_dict() for s in scores.samples],
        [s.to_dict() for s in baseline.samples] if baseline is not None else None,
        score_metrics(prepared.plan.gates),
        run_reviews(run_dir, eval_fingerprints(inputs.parts)),
    )


def original_base(prepared, model):
    """The run's adapters over its base as stored before quantization (a quantized-base run), else
    ``model``: what the export holds."""
    from runtime.train.engine import StepSettings, over_original_base

    return over_original_base(model, StepSettings.of(prepared.plan), prepared.config, prepared.checkpoint)


def merged_model(prepared, model):
    """The weights an export holds: the run's adapters merged into its (original) base, or the
    fully tuned model. The one merge behind the `hf` and `gguf` exports."""
    if prepared.plan.model.adapter is None:
        return model
    from runtime.models.lora import merge_lora

    return merge_lora(original_base(prepared, model))


def trained_system(plan) -> str | None:
    """The system message every source trained with (`system_message`), or None: none set, or
    sources that differ (an export then keeps its template's default)."""
    from runtime.plan.data_plan import system_message

    systems = {system_message(plan.data.template_for(s.name), s) for s in plan.data.sources}
    return systems.pop() if len(systems) == 1 else None


def gguf_file(directory: Path, quant: str) -> Path:
    """Where a `gguf` export in ``directory`` keeps its file."""
    return directory / f"model-{quant}.gguf"


def export_model(prepared, model, directory: Path, kind: str, quant: str = "f16") -> Path:
    """A checkpoint transformers (`hf`) or peft (`peft`) loads as is, with the tokenizer; or one GGUF
    file (`gguf`, matrices in ``quant``) with an Ollama Modelfile beside it."""
    from runtime.checkpoints.hf_checkpoint import save_pretrained

    if kind == "hf":
        return save_pretrained(
            merged_model(prepared, model),
            prepared.config,
            directory,
            tokenizer=prepared.tokenizer,
            max_shard_size=prepared.plan.output.shard_size,
            dtype=prepared.plan.model.dtype,
        )
    if kind == "gguf":
        from runtime.checkpoints.gguf_export import write_gguf
        from runtime.checkpoints.ollama_modelfile import write_modelfile
        from runtime.data.prompts import stop_ids

        stops = stop_ids(prepared.tokenizer)
        path = write_gguf(
            merged_model(prepared, model),
            prepared.config,
            prepared.tokenizer,
            gguf_file(directory, quant),
            quant=quant,
            stops=stops,
            name=prepared.plan.name,
        )
        write_modelfile(directory, path.name, prepared.tokenizer, stops, trained_system(prepared.plan))
        return directory
    if kind == "peft":
        from runtime.checkpoints.hf_checkpoint import save_peft

        base = prepared.plan.model.path
        return save_peft(
            model,
            prepared.config,
            directory,
            base,
            prepared.plan.model.adapter,
            tokenizer=prepared.tokenizer,
            revision=prepared.plan.model.revision,
        )
    raise ValueError(f"unknown export format {kind!r}")
