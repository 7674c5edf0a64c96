"""The commands that hand a compiled plan to the runtime: `sftc plan`, `sftc run`,
`sftc preview`. The runtime (and JAX) is imported only when one of them runs."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console

from .check import check_spec_file
from .diagnostics import print_human, summary_line

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_REJECTED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def _compile(path: str, console: Console, devices: int | None = None):
    """The lowered plan of a spec, or None after printing why it is not valid."""
    from .emit import emit_spec
    from .lower import lower

    spec, problems = check_spec_file(path, devices=devices)
    if problems:
        print_human(problems, console)
    if spec is None or any(d.is_error for d in problems):
        console.print(f"[bold red]✗[/] {path}: {summary_line(problems)}; nothing ran")
        return None
    return lower(spec), emit_spec(spec, absolute_paths=True)


def _runtime_error(console: Console, error: Exception) -> int:
    console.print(f"[bold red]error[/]: {error}")
    return EXIT_FAIL


def _runtime_errors():
    from runtime.data.errors import DataError
    from runtime.hf import CheckpointError
    from runtime.mesh import MeshError
    from runtime.prepare import PrepareError
    from runtime.tokenizer import TokenizerError

    return (DataError, CheckpointError, MeshError, PrepareError, TokenizerError)


# ---------------------------------------------------------------- plan


def cmd_plan(args: argparse.Namespace) -> int:
    from runtime.plan_report import plan_report
    from runtime.prepare import prepare

    console = Console(stderr=True, highlight=False)
    compiled = _compile(args.spec, console)
    if compiled is None:
        return EXIT_FAIL
    plan, _ = compiled
    try:
        with console.status("tokenizing and packing the data (cached after the first time)"):
            prepared = prepare(plan)
    except _runtime_errors() as error:
        return _runtime_error(console, error)
    if args.json:
        import json

        print(json.dumps(plan_report(prepared, as_dict=True), indent=2))
    else:
        Console(highlight=False, soft_wrap=True).print(plan_report(prepared))
    return EXIT_OK


# ---------------------------------------------------------------- preview


def cmd_preview(args: argparse.Namespace) -> int:
    from runtime.data.preview import preview
    from runtime.prepare import prepare

    console = Console(stderr=True, highlight=False)
    compiled = _compile(args.spec, console)
    if compiled is None:
        return EXIT_FAIL
    plan, _ = compiled
    if args.source is not None and args.source not in {s.name for s in plan.data.sources}:
        console.print(f"[bold red]error[/]: no trained source `{args.source}` (sources: {', '.join(s.name for s in plan.data.sources)})")
        return EXIT_USAGE
    try:
        with console.status("tokenizing the data"):
            prepared = prepare(plan)
        preview(prepared.pipeline, n=args.n, source=args.source, tokens=args.tokens, json=args.json)
    except _runtime_errors() as error:
        return _runtime_error(console, error)
    return EXIT_OK


# ---------------------------------------------------------------- run


def cmd_run(args: argparse.Namespace) -> int:
    from runtime import run as rundir
    from runtime.data.sources import source_fingerprint
    from runtime.evaluate.final import evaluate_run
    from runtime.evaluate.report import print_gates
    from runtime.prepare import prepare
    from runtime.train.loop import train
    from runtime.train.progress import progress_for
    from runtime.train.metrics_log import MetricsLog

    console = Console(stderr=True, highlight=False)
    compiled = _compile(args.spec, console)
    if compiled is None:
        return EXIT_FAIL
    plan, resolved_text = compiled
    root = Path(plan.output.dir)
    run_dir = None if args.fresh else rundir.resumable(root, plan.spec_hash)
    resuming = run_dir is not None
    run_dir = run_dir or rundir.new_run_dir(root)
    console.print(f"{'resuming' if resuming else 'run'} [bold]{plan.name}[/] in {run_dir}")
    (run_dir / "spec.sft").write_text(f"# resolved by sftc from {plan.spec_path}\n" + resolved_text)
    started = time.time()
    try:
        with console.status("preparing: tokenizer, data (cached after the first time)"):
            prepared = prepare(plan)
        plan = prepared.plan
        rundir.write_plan(run_dir, plan)
        fingerprints = {s.name: source_fingerprint(s) for s in plan.data.sources}
        rundir.write_manifest(run_dir, plan, prepared.pipeline.stats.to_dict(), fingerprints)
        prepared.tokenizer.save_pretrained(str(run_dir / "tokenizer"))
        console.print(prepared.pipeline.stats.summary())
        log = MetricsLog(run_dir)
        with progress_for(console) as progress:
            result = train(prepared, run_dir, progress=progress, log=log)
        log.close()
    except _runtime_errors() as error:
        rundir.write_status(run_dir, "error", message=str(error))
        return _runtime_error(console, error)
    rundir.write_status(run_dir, result.status, steps=result.steps, seconds=round(time.time() - started, 1), message=result.message)
    if result.status == "interrupted":
        console.print(f"[yellow]{result.message}[/]")
        return EXIT_INTERRUPTED
    if result.status == "nan":
        console.print(f"[bold red]error[/]: {result.message}")
        return EXIT_FAIL
    train_seconds = time.time() - started
    console.print(f"[bold green]✓[/] trained {result.steps} steps in {train_seconds:.0f}s; final train loss {result.last_loss:.4f}")
    facts = {"name": plan.name, "run_dir": str(run_dir), "steps": result.steps, "train_s": round(train_seconds, 1), "spec_hash": plan.spec_hash}
    try:
        with console.status("evaluating: generating eval completions"):
            outcome = evaluate_run(prepared, result, run_dir, facts, force_export=args.export)
    except _runtime_errors() as error:
        rundir.write_status(run_dir, "error", message=str(error))
        return _runtime_error(console, error)
    rundir.write_status(run_dir, "done", steps=result.steps, seconds=round(time.time() - started, 1), accepted=outcome.accepted)
    if outcome.verdicts:
        print_gates(outcome.verdicts, console)
    console.print(f"report: {outcome.report}")
    if outcome.export is not None:
        console.print(f"export: {outcome.export}")
    elif not outcome.accepted and plan.output.export != "none":
        console.print("no export: the run was not accepted (`sftc run --export` exports anyway)")
    return EXIT_OK if outcome.accepted else EXIT_REJECTED


def register(commands) -> None:
    plan = commands.add_parser("plan", help="what a run will do: data, steps, parameters, mesh, memory, FLOPs")
    plan.add_argument("spec", metavar="SPEC")
    plan.add_argument("--json", action="store_true", help="print the report as one JSON object")
    plan.set_defaults(run=cmd_plan)

    preview = commands.add_parser("preview", help="rendered examples as the model sees them, with the loss mask")
    preview.add_argument("spec", metavar="SPEC")
    preview.add_argument("-n", type=int, default=3, help="how many examples (default 3)")
    preview.add_argument("--source", default=None, help="only this data source")
    preview.add_argument("--tokens", action="store_true", help="mark token boundaries")
    preview.add_argument("--json", action="store_true", help="one JSON object per example")
    preview.set_defaults(run=cmd_preview)

    run = commands.add_parser("run", help="train, evaluate, apply `accept`, export")
    run.add_argument("spec", metavar="SPEC")
    run.add_argument("--fresh", action="store_true", help="start a new run even if an unfinished one can be resumed")
    run.add_argument("--export", action="store_true", help="export even when a gate fails")
    run.set_defaults(run=cmd_run)
