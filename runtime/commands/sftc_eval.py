"""`sftc eval RUN`: re-evaluate a checkpoint with the run's gates or an edited spec's."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from runtime.commands import Compiled, ExitCode, load

if TYPE_CHECKING:
    import argparse

    from rich.console import Console

NAME = "eval"
HELP = "re-evaluate a run's checkpoint (optionally with an edited spec's gates)"
TAKES_SPEC = True  # optional: `--spec SPEC`, compiled by the compiler when given


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN", help="a run directory: runs/<name>/<timestamp>")
    parser.add_argument("--spec", default=None, help="judge with this spec's `eval` and `accept` blocks")
    parser.add_argument("--step", type=int, default=None, help="a checkpoint step (default: the latest)")


def main(args: argparse.Namespace, console: Console, compiled: Compiled | None) -> int:
    """Re-evaluate a run's checkpoint, with its own gates or those of an edited spec (`compiled`)."""
    import dataclasses

    from runtime.evaluate.final import score, topic_scores
    from runtime.evaluate.gates import accepted
    from runtime.evaluate.report import print_before_after, print_gates, write_report
    from runtime.preflight.input_fingerprints import gather
    from runtime.runs.run_directory import new_run_dir
    from runtime.train.token_metrics import token_metrics

    trained = load(args, console)
    plan = trained.plan
    if compiled is not None:
        edited = compiled.plan
        plan = dataclasses.replace(plan, gates=edited.gates, eval=edited.eval)
        trained.prepared.plan = plan
    with console.status("evaluating"):
        prepared = trained.with_data()
        by_source = token_metrics(trained.engine, trained.frozen, prepared.pipeline, trained.params)
        inputs = gather(plan)
        scores = score(
            prepared,
            trained.engine,
            trained.params,
            trained.frozen,
            trained.model,
            by_source,
            Path(args.run_dir),
            inputs,
        )
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
        topics=topic_scores(prepared, scores, Path(args.run_dir), inputs),
    )
    print_before_after(scores.values, scores.base_values, scores.baseline, console)
    if scores.verdicts:
        print_gates(scores.verdicts, console)
    else:
        for key in sorted(scores.values):
            console.print(f"{key:24} {scores.values[key]:.4f}")
    console.print(f"report: {report}")
    return ExitCode.OK if accepted(scores.verdicts) else ExitCode.REJECTED
