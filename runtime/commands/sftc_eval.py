"""`sftc eval RUN`: re-evaluate a checkpoint with the run's gates or an edited spec's."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from runtime.commands import EXIT_OK, EXIT_REJECTED, load, runtime_error, runtime_errors
from runtime.plan.run_plan import Plan


def main(args: argparse.Namespace, edited: Plan | None = None) -> int:
    """Re-evaluate a run's checkpoint, with its own gates or those of an edited spec."""
    import dataclasses

    from runtime.evaluate.final import score
    from runtime.evaluate.gates import accepted
    from runtime.evaluate.report import print_before_after, print_gates, write_report
    from runtime.evaluate.tokens import token_metrics
    from runtime.runs.input_fingerprints import gather
    from runtime.runs.run_directory import new_run_dir

    console = Console(stderr=True, highlight=False)
    try:
        trained = load(args, console)
        plan = trained.plan
        if edited is not None:
            plan = dataclasses.replace(plan, gates=edited.gates, eval=edited.eval)
            trained.prepared.plan = plan
        with console.status("evaluating"):
            prepared = trained.with_data()
            by_source = token_metrics(trained.engine, trained.frozen, prepared.pipeline, trained.params)
            scores = score(
                prepared,
                trained.engine,
                trained.params,
                trained.frozen,
                trained.model,
                by_source,
                Path(args.run_dir),
                gather(plan),
            )
    except runtime_errors() as error:
        return runtime_error(console, error)
    out = new_run_dir(Path(args.run_dir) / "evals")
    facts = {"run": str(args.run_dir), "step": trained.step, "spec": args.spec or "the run's own"}
    report, _ = write_report(
        out,
        verdicts=scores.verdicts,
        values=scores.values,
        samples=scores.samples,
        facts=facts,
        data_stats=prepared.pipeline.stats,
        records=[],
        baseline=scores.baseline,
        base_values=scores.base_values,
    )
    print_before_after(scores.values, scores.base_values, scores.baseline, console)
    if scores.verdicts:
        print_gates(scores.verdicts, console)
    else:
        for key in sorted(scores.values):
            console.print(f"{key:24} {scores.values[key]:.4f}")
    console.print(f"report: {report}")
    return EXIT_OK if accepted(scores.verdicts) else EXIT_REJECTED
