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
    parser.add_argument(
        "--benchmarks",
        default=None,
        metavar="TASKS",
        help="lm-evaluation-harness tasks to score, base and tuned, comma-separated, besides the spec's own "
        "`eval.benchmarks` tasks (needs pip install 'sftc[lm_eval]')",
    )
    parser.add_argument("--include", default=None, help="a folder of lm_eval task YAML files (with --benchmarks)")
    parser.add_argument("--limit", type=int, default=None, help="the first N documents of each benchmark task")
    parser.add_argument("--num-fewshot", type=int, default=None, help="few-shot examples before each question")


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
    benchmarks = asked_benchmarks(args, plan.eval.benchmarks)
    if benchmarks is not plan.eval.benchmarks:
        plan = dataclasses.replace(plan, eval=dataclasses.replace(plan.eval, benchmarks=benchmarks))
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
            console,
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
        benchmarks=scores.benchmarks,
    )
    print_before_after(scores.values, scores.base_values, scores.baseline, console, scores.benchmarks)
    if scores.verdicts:
        print_gates(scores.verdicts, console)
    else:
        for key in sorted(scores.values):
            console.print(f"{key:24} {scores.values[key]:.4f}")
    console.print(f"report: {report}")
    return ExitCode.OK if accepted(scores.verdicts) else ExitCode.REJECTED


def asked_benchmarks(args: argparse.Namespace, current):
    """The `BenchmarkPlan` the command line asks for: the spec's own tasks (``current``) and the
    ``--benchmarks`` ones, so that the spec's gates are still judged, with ``--include``,
    ``--limit`` and ``--num-fewshot`` over the spec's settings; ``current`` when none is given."""
    import dataclasses
    import os

    from runtime.plan.run_plan import BenchmarkPlan
    from runtime.plan.sftc_error import SftcError

    if args.benchmarks is None:
        if any(v is not None for v in (args.include, args.limit, args.num_fewshot)):
            if current is None:
                raise SftcError(
                    "--include, --limit and --num-fewshot set benchmark tasks, and this run has none",
                    exit_code=ExitCode.USAGE,
                    help="name them: --benchmarks arc_easy,hellaswag",
                )
        else:
            return current
    base = current or BenchmarkPlan(tasks=())
    changes: dict = {}
    if args.benchmarks is not None:
        tasks = tuple(t.strip() for t in args.benchmarks.split(",") if t.strip())
        if not tasks:
            raise SftcError(
                "--benchmarks needs task names", exit_code=ExitCode.USAGE, help="--benchmarks arc_easy,hellaswag"
            )
        changes["tasks"] = tuple(dict.fromkeys(base.tasks + tasks))
    if args.include is not None:
        include = os.path.abspath(args.include)
        if base.include is not None and base.include != include:
            raise SftcError(
                f"--include {args.include}: the spec's own benchmark tasks come from {base.include}, and one "
                "evaluation reads one task folder",
                exit_code=ExitCode.USAGE,
                help=f"copy the task files into one folder, or leave out --include to use {base.include}",
            )
        changes["include"] = include
    if args.limit is not None:
        changes["limit"] = args.limit
    if args.num_fewshot is not None:
        changes["num_fewshot"] = args.num_fewshot
    return dataclasses.replace(base, **changes)
