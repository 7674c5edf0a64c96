"""`sftc run SPEC`: train (or resume), evaluate, apply `accept`, export."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from runtime.commands import Compiled, ExitCode, SftcError, internal_error, say, show_error

if TYPE_CHECKING:
    import argparse

    from rich.console import Console

NAME = "run"
HELP = "train, evaluate, apply `accept`, export"
TAKES_SPEC = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", metavar="SPEC")
    parser.add_argument("--fresh", action="store_true", help="start a new run even if an unfinished one can be resumed")
    parser.add_argument("--export", action="store_true", help="export even when a gate fails")
    job = parser.add_argument_group("many processes (docs/scaling.md): every process runs the same command")
    job.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address, reachable from every process")
    job.add_argument("--num-processes", type=int, metavar="N", help="processes in the job")
    job.add_argument("--process-id", type=int, metavar="I", help="this process, 0..N-1 (0 prints and writes)")
    job.add_argument(
        "--distributed", action="store_true", help="join the job JAX detects (SLURM, Cloud TPU, Kubernetes, Open MPI)"
    )


def main(args: argparse.Namespace, console: Console, compiled: Compiled) -> int:
    from rich.console import Console
    from rich.text import Text

    from runtime.platform import distributed
    from runtime.platform.library_logs import route_library_logs
    from runtime.preflight.input_fingerprints import gather
    from runtime.preflight.prepare import prepare
    from runtime.runs import run_directory as rundir
    from runtime.runs.resume import differences

    try:
        distributed.join(
            distributed.Launch(
                getattr(args, "coordinator", None),
                getattr(args, "num_processes", None),
                getattr(args, "process_id", None),
                getattr(args, "distributed", False),
            )
        )
    except distributed.LaunchError as error:  # a flag that cannot work: a usage error
        say(console, "error", str(error))
        return ExitCode.USAGE
    primary = distributed.is_primary()
    if not primary:  # one process prints; the others say only what went wrong, and which process they are
        errors = Console(stderr=True, highlight=False)
        errors.print(f"process {args.process_id if args.process_id is not None else '?'} of the job", style="dim")
        console = Console(stderr=True, highlight=False, quiet=True)
    plan, resolved_text = compiled.plan, compiled.text
    root = Path(plan.output.dir)
    started = time.time()
    run_dir = None
    try:
        with console.status("preparing: tokenizer, data (cached after the first time)"):
            prepared = prepare(plan, share=distributed.data_share())  # a job's processes split the work
        if plan.data_gates and not _data_gates_pass(console, prepared):
            return ExitCode.REJECTED  # before the first step: no run directory, no checkpoint
        if plan.eval.benchmarks is not None:  # a misspelt task or a missing lm_eval: before the first step
            from runtime.evaluate.benchmarks import check_tasks

            with console.status("benchmarks: looking up the lm_eval tasks"):
                check_tasks(plan.eval.benchmarks)
        inputs = gather(prepared.plan)  # the identity of every input, for resume, the baseline, review, diff
        refused = False
        if primary:
            run_dir = None if args.fresh else rundir.unfinished(root)
            changed = differences(run_dir, prepared.plan, inputs) if run_dir else []
            if changed:
                refused = True
                console.print(
                    Text.assemble(
                        ("error", "bold red"),
                        f": the unfinished run {run_dir} was trained on other inputs; resuming it would mix them:",
                    ),
                    soft_wrap=True,
                )
                for line in changed:
                    console.print(Text("    " + line, style="yellow"), soft_wrap=True)
                console.print(
                    "  = help: `sftc run --fresh` starts a new run; or restore these inputs to resume this one",
                    soft_wrap=True,
                    markup=False,
                )
            resuming = run_dir is not None
            run_dir = run_dir or (None if refused else rundir.new_run_dir(root))
            decided = None if refused else f"{int(resuming)}{run_dir}"
        decided = distributed.broadcast_text(decided if primary else None)  # every process: the primary's run
        if decided is None:
            return ExitCode.FAIL
    except SftcError as error:
        return show_error(console if primary else errors, error)
    resuming, run_dir = decided[0] == "1", Path(decided[1:])
    evaluating_only = resuming and rundir.read_status(run_dir).get("status") == "trained"
    checkpoints = run_dir / "checkpoints"  # shared: every process writes its part of each checkpoint
    if not primary:  # what only the primary keeps goes to a scratch directory here, removed at exit
        import atexit
        import shutil
        import tempfile

        run_dir = Path(tempfile.mkdtemp(prefix=f"sftc-process{args.process_id}-"))
        atexit.register(shutil.rmtree, run_dir, True)
    route_library_logs(run_dir / "sftc.log")
    what = "finishing the evaluation of" if evaluating_only else ("resuming" if resuming else "run")
    processes = distributed.process_count()
    console.print(f"{what} [bold]{plan.name}[/] in {run_dir}" + (f" ({processes} processes)" if processes > 1 else ""))
    plan = prepared.plan
    (run_dir / "spec.sft").write_text(f"# resolved by sftc from {plan.spec_path}\n" + resolved_text)
    rundir.write_plan(run_dir, plan)  # when resuming, only settings that do not shape the weights may differ
    rundir.write_manifest(run_dir, plan, prepared.pipeline.stats.to_dict(), inputs)
    rundir.write_audit(run_dir, prepared.data_audit.audit)
    if not resuming:
        prepared.tokenizer.save_pretrained(str(run_dir / "tokenizer"))
    try:
        code = _train_and_evaluate(args, console, prepared, run_dir, started, inputs, checkpoints)
    except SftcError as error:
        rundir.write_status(run_dir, "error", message=str(error))
        return show_error(console if primary else errors, error)
    except Exception as error:  # noqa: BLE001 - a bug: say where the details are, no traceback on screen
        return internal_error(console if primary else errors, error, run_dir)
    # The primary's verdict (its export check included) is the job's; waiting for it also keeps
    # the others alive while the primary evaluates and exports.
    return int(distributed.broadcast_text(str(int(code)) if primary else None))


def _data_gates_pass(console: Console, prepared) -> bool:
    """Judge the spec's data gates (`leakage == 0`, ...) on the audit `prepare` made; when one
    fails, print the gate table and the findings behind it as `sftc audit` prints them. Every
    process of a job audits the same data, so each reaches the same verdict."""
    from rich.console import Console

    from runtime.commands import sftc_audit
    from runtime.evaluate.gates import accepted, judge
    from runtime.evaluate.report import print_gates

    plan, found = prepared.plan, prepared.data_audit
    verdicts = judge(plan.data_gates, found.values)
    if accepted(verdicts):
        shown = ", ".join(f"{v.gate} {v.op} {v.threshold:g} ({v.value:g})" for v in verdicts if v.value is not None)
        console.print(f"[bold green]✓[/] the data passes its gates: {shown}", highlight=False)
        return True
    console.print("the data fails its gates; nothing was trained:", style="bold red", highlight=False)
    print_gates(verdicts, console)
    failing = [v.metric for v in verdicts if not v.passed]
    names = [s.name for s in plan.data.sources]
    out = Console(stderr=True, highlight=False, soft_wrap=True, quiet=console.quiet)  # a finding on one line
    sftc_audit.show(out, found.findings_for(failing), found.examples, names, None)
    console.print(
        "  = help: fix the data (`sftc audit SPEC` lists every finding), or set `dedup` on a source to drop copies",
        markup=False,
        soft_wrap=True,
    )
    return False


def _train_and_evaluate(
    args, console: Console, prepared, run_dir: Path, started: float, inputs, checkpoints: Path
) -> int:
    """Train and judge with the spec's trackers (`track = [...]`) open throughout; each tracker's
    run ends FINISHED when judged (accepted or not), KILLED when interrupted, else FAILED."""
    from runtime.platform import distributed
    from runtime.train.trackers import start_trackers

    trackers = start_trackers(
        prepared.plan, run_dir, distributed.is_primary(), lambda message: say(console, "warning", message)
    )
    code = None
    try:
        code = _train_and_judge(args, console, prepared, run_dir, started, inputs, checkpoints, trackers)
        return code
    finally:
        ended = {ExitCode.OK: "FINISHED", ExitCode.REJECTED: "FINISHED", ExitCode.INTERRUPTED: "KILLED"}
        trackers.close(ended.get(code, "FAILED") if code is not None else "FAILED")


def _train_and_judge(
    args, console: Console, prepared, run_dir: Path, started: float, inputs, checkpoints: Path, trackers
) -> int:
    from runtime.evaluate.final import evaluate_run
    from runtime.evaluate.report import print_before_after, print_gates
    from runtime.runs import run_directory as rundir
    from runtime.train.loop import train
    from runtime.train.metrics_log import MetricsLog
    from runtime.train.progress import progress_for

    plan = prepared.plan
    console.print(prepared.pipeline.stats.summary())
    log = MetricsLog(run_dir, tensorboard=trackers.tensorboard, trackers=trackers)
    try:
        with progress_for(console) as progress:
            result = train(prepared, run_dir, progress=progress, log=log, checkpoint_dir=checkpoints)
    finally:
        log.close()
    for note in result.notes:
        say(console, "warning", note)
    seconds = round(time.time() - started, 1)
    if result.status != "done":
        rundir.write_status(
            run_dir,
            result.status,
            steps=result.steps,
            skipped_steps=result.skipped,
            seconds=seconds,
            message=result.message,
        )
        if result.status == "interrupted":
            console.print(f"[yellow]{result.message}[/]")
            return ExitCode.INTERRUPTED
        say(console, "error", result.message)
        return ExitCode.FAIL
    # Trained, not yet evaluated: an interruption from here on leaves `trained`, and the next
    # `sftc run` finishes the evaluation instead of training again.
    rundir.write_status(run_dir, "trained", steps=result.steps, skipped_steps=result.skipped, seconds=seconds)
    loss = f"; final train loss {result.last_loss:.4f}" if result.last_loss is not None else ""
    skipped = f"; {result.skipped} non-finite step{'s' * (result.skipped != 1)} skipped" if result.skipped else ""
    console.print(f"[bold green]✓[/] trained {result.steps} steps in {seconds:.0f}s{loss}{skipped}")
    facts = {
        "name": plan.name,
        "run_dir": str(run_dir),
        "steps": result.steps,
        "skipped_steps": result.skipped,
        "train_s": seconds,
        "spec_hash": plan.spec_hash,
    }
    baseline = " and the baseline's" if plan.eval.baseline is not None else ""
    benchmarks = ", then the benchmark tasks" if plan.eval.benchmarks is not None else ""
    with console.status(f"evaluating: generating eval completions{baseline}{benchmarks}"):
        outcome = evaluate_run(prepared, result, run_dir, facts, inputs, force_export=args.export, console=console)
    trackers.finish(outcome, result.steps, run_dir)
    rundir.write_status(
        run_dir,
        "done",
        steps=result.steps,
        skipped_steps=result.skipped,
        seconds=round(time.time() - started, 1),
        accepted=outcome.accepted,
    )
    print_before_after(outcome.values, outcome.base_values, outcome.baseline, console, outcome.benchmarks)
    if outcome.verdicts:
        print_gates(outcome.verdicts, console)
    console.print(f"report: {outcome.report}")
    if outcome.export is not None:
        rejected = "" if outcome.accepted else " (the run was not accepted; exported because --export asked)"
        console.print(f"export: {outcome.export}{rejected}")
    if outcome.export_check is not None and not outcome.export_check.passed:
        say(console, "error", outcome.export_check.message)
    elif outcome.export is None and not outcome.accepted and plan.output.export != "none":
        console.print("no export: the run was not accepted (`sftc run --export` exports anyway)")
    return ExitCode.OK if outcome.accepted else ExitCode.REJECTED
