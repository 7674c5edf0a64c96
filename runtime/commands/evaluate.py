"""`sftc eval RUN`: re-evaluate a checkpoint with the run's gates or an edited spec's."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from ..plan import Plan
from . import (
    EXIT_OK,
    EXIT_REJECTED,
    load,
    runtime_error,
    runtime_errors,
)


def main(args: argparse.Namespace, edited: Plan | None = None) -> int:
    """Re-evaluate a run's checkpoint, with its own gates or those of an edited spec."""
    import dataclasses

    from runtime.evaluate.gates import accepted, compute_metrics, judge
    from runtime.evaluate.generation import generate_eval
    from runtime.evaluate.report import print_gates, write_report
    from runtime.evaluate.tokens import token_metrics
    from runtime.run import new_run_dir

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
            sources = [s.name for s in plan.data.sources if s.eval is not None]
            samples = []
            if plan.eval.generate is not None:
                samples = generate_eval(trained.model, trained.tokenizer, prepared.pipeline, plan.eval.generate, plan.eval.samples, seed=plan.eval.generate.seed)
        values = compute_metrics(samples, by_source, gates=plan.gates, eval_sources=sources)
        verdicts = judge(plan.gates, values)
    except runtime_errors() as error:
        return runtime_error(console, error)
    out = new_run_dir(Path(args.run_dir) / "evals")
    facts = {"run": str(args.run_dir), "step": trained.step, "spec": args.spec or "the run's own"}
    report, _ = write_report(out, verdicts=verdicts, values=values, samples=samples, facts=facts, data_stats=prepared.pipeline.stats, records=[])
    if verdicts:
        print_gates(verdicts, console)
    else:
        for key in sorted(values):
            console.print(f"{key:24} {values[key]:.4f}")
    console.print(f"report: {report}")
    return EXIT_OK if accepted(verdicts) else EXIT_REJECTED
