"""`sftc`: the command line. Each subcommand is a small function returning its exit code.

The compiler's own commands (check, fmt, diff) live here; the others are checked and
lowered here and executed by `runtime.commands`, which never reads `.sft` text.

Exit codes: 0 success (valid, formatted, same), 1 the answer is "no" (invalid,
would reformat, different), 2 usage or input errors; `sftc run` adds 3 for a
rejected run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from . import __version__


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


# ---------------------------------------------------------------- check


def cmd_check(args: argparse.Namespace) -> int:
    from .check import check_spec_file
    from .diagnostics import print_human, render_github, render_json, summary_line

    everything = []
    started = time.perf_counter()
    for path in args.specs:
        _spec, problems = check_spec_file(path, devices=args.devices, offline=args.offline)
        everything.extend(problems)
        if args.format == "human":
            console = _console(stderr=True)
            print_human(problems, console)
            errors = sum(d.is_error for d in problems)
            if errors:
                console.print(f"[bold red]✗[/] {path}: {summary_line(problems)}")
            else:
                note = f" ({summary_line(problems)})" if problems else ""
                console.print(f"[bold green]✓[/] {path} is valid{note}")
        elif args.format == "github":
            for d in problems:
                print(render_github(d))
    if args.format == "json":
        print(render_json(everything, args.specs))
    elif args.format == "human" and len(args.specs) > 1:
        elapsed = time.perf_counter() - started
        _console(stderr=True).print(f"{len(args.specs)} specs checked in {elapsed:.2f}s: {summary_line(everything)}")
    return 1 if any(d.is_error for d in everything) else 0


# ---------------------------------------------------------------- fmt


def cmd_fmt(args: argparse.Namespace) -> int:
    import difflib

    from .diagnostics import print_human
    from .fmt import format_text

    console = _console(stderr=True)
    changed, broken = [], False
    for path in args.specs:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            console.print(f"[bold red]error[/]: cannot read {path}: {error}")
            broken = True
            continue
        formatted, problems = format_text(text, path)
        if formatted is None:
            print_human(problems, console)
            broken = True
            continue
        if formatted == text:
            continue
        changed.append(path)
        if args.check or args.diff:
            if args.diff:
                sys.stdout.writelines(
                    difflib.unified_diff(text.splitlines(True), formatted.splitlines(True), f"a/{path}", f"b/{path}")
                )
        else:
            Path(path).write_text(formatted, encoding="utf-8")
            print(path)
    if broken:
        return 2
    if args.check and changed:
        for path in changed:
            console.print(f"[yellow]would reformat[/] {path}")
        return 1
    return 0


# ---------------------------------------------------------------- diff


def _load_for_diff(argument: str, console):
    """(Spec, reader, label) of `PATH`, `REV:PATH` or a run directory; None after printing why not."""
    from rich.text import Text

    from .diagnostics import print_human
    from .files import FileSystem, git_revision
    from .resolve import load_spec

    try:
        revision = git_revision(argument)
    except FileNotFoundError as error:
        console.print(Text.assemble(("error", "bold red"), f": {error}"), soft_wrap=True)
        return None
    files, path = revision if revision is not None else (FileSystem(), Path(argument))
    if files.exists(path) and not files.is_file(path) and files.is_file(path / "spec.sft"):
        path = path / "spec.sft"  # a run directory: the resolved spec it ran
    spec, problems = load_spec(path, files)
    if spec is None:
        print_human(problems, console)
        console.print(
            Text.assemble(("error", "bold red"), f": {argument} does not resolve; nothing to compare"), soft_wrap=True
        )
        return None
    return spec, files, argument


def cmd_diff(args: argparse.Namespace) -> int:
    import json

    from rich.text import Text

    from . import run_diff
    from .diff import diff_specs, render_lines, to_json
    from .fingerprint import fingerprint_pair

    errors = _console(stderr=True)
    sides = [_load_for_diff(argument, errors) for argument in (args.old, args.new)]
    if any(side is None for side in sides):
        return 2
    (old, old_files, old_label), (new, new_files, new_label) = sides
    old_prints, new_prints = fingerprint_pair(old, old_files, new, new_files)
    result = diff_specs(old, new, old_prints, new_prints)
    runs = None
    if all(run_diff.is_run_dir(Path(a)) for a in (args.old, args.new)):
        runs = run_diff.diff_runs(Path(args.old), Path(args.new))
    if args.format == "json":
        out = json.loads(to_json(result, old_label, new_label))
        if runs is not None:
            out["runs"] = run_diff.to_dict(runs)
            out["same"] = out["same"] and runs.same
        print(json.dumps(out, indent=2))
    else:
        console = _console()
        for text, style in render_lines(result):
            console.print(Text(text, style=style), soft_wrap=True)
        if runs is not None:
            for text, style in run_diff.render_lines(runs, Path(args.old).name, Path(args.new).name):
                console.print(Text(text, style=style), soft_wrap=True)
    return 0 if result.same and (runs is None or runs.same) else 1


# ---------------------------------------------------------------- the runtime's commands


COMPILER_COMMANDS = ("check", "fmt", "diff")


def compile_spec(path: str, console, devices: int | None = None):
    """A checked spec lowered to a `runtime.commands.Compiled` (plan + resolved text), or
    None after printing why it is not valid. The runtime never sees the `.sft` text."""
    from runtime.commands import Compiled

    from .check import check_spec_file
    from .diagnostics import print_human, summary_line
    from .emit import emit_spec
    from .lower import lower

    spec, problems = check_spec_file(path, devices=devices)
    if problems:
        print_human(problems, console)
    if spec is None or any(d.is_error for d in problems):
        console.print(f"[bold red]✗[/] {path}: {summary_line(problems)}; nothing ran")
        return None
    return Compiled(lower(spec), emit_spec(spec, absolute_paths=True))


def _runtime_command(module: str, spec: bool = False):
    """The handler of `sftc MODULE`: compile the spec (when it takes one) and hand the plan
    to `runtime.commands.MODULE.main`."""

    def handler(args: argparse.Namespace) -> int:
        import importlib

        from runtime.platform.compilation_cache import use_compilation_cache

        use_compilation_cache()  # before JAX is imported
        command = importlib.import_module(f"runtime.commands.sftc_{module}")
        if not spec:
            return command.main(args)
        compiled = compile_spec(args.spec, _console(stderr=True))
        return 1 if compiled is None else command.main(args, compiled)

    return handler


def _evaluate(args: argparse.Namespace) -> int:
    """`sftc eval RUN [--spec SPEC]`: the edited spec's gates are compiled here."""
    from runtime.platform.compilation_cache import use_compilation_cache

    use_compilation_cache()  # before JAX is imported
    from runtime.commands import sftc_eval as evaluate

    edited = None
    if args.spec is not None:
        compiled = compile_spec(args.spec, _console(stderr=True))
        if compiled is None:
            return 1
        edited = compiled.plan
    return evaluate.main(args, edited)


def _register_runtime_commands(commands) -> None:
    plan = commands.add_parser("plan", help="what a run will do: data, steps, parameters, mesh, memory, FLOPs")
    plan.add_argument("spec", metavar="SPEC")
    plan.add_argument("--json", action="store_true", help="print the report as one JSON object")
    plan.set_defaults(run=_runtime_command("plan", spec=True))

    preview = commands.add_parser("preview", help="rendered examples as the model sees them, with the loss mask")
    preview.add_argument("spec", metavar="SPEC")
    preview.add_argument("-n", type=int, default=3, help="how many examples (default 3)")
    preview.add_argument("--source", default=None, help="only this data source")
    preview.add_argument("--tokens", action="store_true", help="mark token boundaries")
    preview.add_argument("--json", action="store_true", help="one JSON object per example")
    preview.set_defaults(run=_runtime_command("preview", spec=True))

    run = commands.add_parser("run", help="train, evaluate, apply `accept`, export")
    run.add_argument("spec", metavar="SPEC")
    run.add_argument("--fresh", action="store_true", help="start a new run even if an unfinished one can be resumed")
    run.add_argument("--export", action="store_true", help="export even when a gate fails")
    job = run.add_argument_group("many processes (docs/scaling.md): every process runs the same command")
    job.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address, reachable from every process")
    job.add_argument("--num-processes", type=int, metavar="N", help="processes in the job")
    job.add_argument("--process-id", type=int, metavar="I", help="this process, 0..N-1 (0 prints and writes)")
    job.add_argument(
        "--distributed", action="store_true", help="join the job JAX detects (SLURM, Cloud TPU, Kubernetes, Open MPI)"
    )
    run.set_defaults(run=_runtime_command("run", spec=True))

    evaluate = commands.add_parser(
        "eval", help="re-evaluate a run's checkpoint (optionally with an edited spec's gates)"
    )
    evaluate.add_argument("run_dir", metavar="RUN", help="a run directory: runs/<name>/<timestamp>")
    evaluate.add_argument("--spec", default=None, help="judge with this spec's `eval` and `accept` blocks")
    evaluate.add_argument("--step", type=int, default=None, help="a checkpoint step (default: the latest)")
    evaluate.set_defaults(run=_evaluate)

    for name, text in (
        ("generate", "completions from a trained run"),
        ("chat", "talk to a trained run, streaming tokens"),
    ):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("run_dir", metavar="RUN", help="a run directory: runs/<name>/<timestamp>")
        if name == "generate":
            sub.add_argument("--prompt", default=None, help="the input text (fills the template's one placeholder)")
            sub.add_argument(
                "--file",
                default=None,
                help="a JSON-lines file of rows in the source's columns (a conversation's last assistant turn is dropped)",
            )
            sub.add_argument("--json", action="store_true", help="one JSON object per completion")
        sub.add_argument("--source", default=None, help="use this source's template (default: the first)")
        sub.add_argument("--step", type=int, default=None, help="a checkpoint step (default: the latest)")
        sub.add_argument(
            "--max-new-tokens", type=int, default=None, help="(default: the spec's eval.generate, else 128)"
        )
        sub.add_argument(
            "--temperature", type=float, default=None, help="0 is greedy (default: the spec's eval.generate)"
        )
        sub.add_argument(
            "--top-p",
            type=float,
            default=None,
            help="nucleus sampling, in (0, 1]; applies when temperature > 0 (default: the spec's)",
        )
        sub.add_argument(
            "--top-k",
            type=int,
            default=None,
            help="sample among the k likeliest tokens, 0 = all; applies when temperature > 0 (default: the spec's)",
        )
        sub.add_argument(
            "--seed", type=int, default=None, help="the sampling seed (default: the spec's eval.generate seed)"
        )
        sub.set_defaults(run=_runtime_command(name))

    export = commands.add_parser("export", help="write a checkpoint transformers / peft / vLLM load as is")
    export.add_argument("run_dir", metavar="RUN", help="a run directory: runs/<name>/<timestamp>")
    export.add_argument("--format", choices=("hf", "peft"), default="hf")
    export.add_argument("--step", type=int, default=None, help="a checkpoint step (default: the latest)")
    export.add_argument("out", metavar="OUT", help="the directory to write")
    export.set_defaults(run=_runtime_command("export"))

    review = commands.add_parser("review", help="a local web page to score, flag and correct a run's eval answers")
    review.add_argument("run_dir", metavar="RUN", help="a run directory: runs/<name>/<timestamp>")
    review.add_argument("--port", type=int, default=8765, help="(default 8765; 0: any free port)")
    review.add_argument(
        "--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1; any other needs --token)"
    )
    review.add_argument("--token", default=None, help="a secret every request must carry (required off 127.0.0.1)")
    review.add_argument("--reviewer", default=None, help="judge as this reviewer (default: the page asks)")
    review.add_argument(
        "--blind", action="store_true", help="show the tuned and base answers as A/B in a random order per row"
    )
    review.add_argument(
        "--export",
        metavar="FILE",
        default=None,
        help="write the corrections as JSON-lines data rows to FILE; no server",
    )
    review.set_defaults(run=_runtime_command("review"))

    bench = commands.add_parser("bench", help="steady-state training throughput of the spec's model and shapes")
    bench.add_argument("spec", metavar="SPEC")
    bench.add_argument("--steps", type=int, default=10, help="timed steps after the warm-up (default 10)")
    bench.add_argument("--json", action="store_true", help="one JSON object")
    bench.set_defaults(run=_runtime_command("bench", spec=True))


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sftc", description="Compile and run supervised fine-tuning specs (.sft).")
    parser.add_argument("--version", action="version", version=f"sftc {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = commands.add_parser("check", help="prove a spec is right, without a GPU")
    check.add_argument("specs", nargs="+", metavar="SPEC")
    check.add_argument("--format", choices=("human", "json", "github"), default="human")
    check.add_argument(
        "--devices",
        type=_positive_int,
        default=None,
        help="device count the mesh must fit (default: the devices present)",
    )
    check.add_argument("--offline", action="store_true", help="skip checks that need the Hugging Face hub, and say so")
    check.set_defaults(run=cmd_check)

    fmt = commands.add_parser("fmt", help="rewrite specs in the canonical layout")
    fmt.add_argument("specs", nargs="+", metavar="SPEC")
    fmt.add_argument("--check", action="store_true", help="change nothing; exit 1 when a file would change")
    fmt.add_argument("--diff", action="store_true", help="print what would change as a unified diff")
    fmt.set_defaults(run=cmd_fmt)

    diff = commands.add_parser("diff", help="what differs between two specs, after `use` and defaults")
    diff.add_argument("old", metavar="A", help="a spec, `REV:path` (git) or a run directory")
    diff.add_argument("new", metavar="B", help="a spec, `REV:path` (git) or a run directory")
    diff.add_argument("--format", choices=("human", "json"), default="human")
    diff.set_defaults(run=cmd_diff)

    _register_runtime_commands(commands)
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command not in COMPILER_COMMANDS:
        from runtime.commands import start_runtime

        start_runtime()  # before any runtime module imports a library that prints
    try:
        return args.run(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as error:  # noqa: BLE001 - never a traceback on screen (SFTC_DEBUG=1 shows it)
        from runtime.commands import internal_error

        return internal_error(_console(stderr=True), error)


if __name__ == "__main__":
    sys.exit(main())
