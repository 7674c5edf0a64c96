"""`sftc`: the command line. Each subcommand is a small function returning its exit code.

The compiler's own commands (check, fmt, diff) live here, options and handlers; each of the
others is declared by its module in `runtime.commands` (options next to the handler) and
registered here, its spec checked and lowered here: the runtime never reads `.sft` text.

Exit codes (`runtime.plan.sftc_error.ExitCode`): 0 success (valid, formatted, same),
1 the answer is "no" (invalid, would reformat, different), 2 usage or input errors;
`sftc run` adds 3 for a rejected run, and Ctrl-C is 130.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from runtime.plan.sftc_error import ExitCode

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
    return ExitCode.FAIL if any(d.is_error for d in everything) else ExitCode.OK


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
        return ExitCode.USAGE
    if args.check and changed:
        for path in changed:
            console.print(f"[yellow]would reformat[/] {path}")
        return ExitCode.FAIL
    return ExitCode.OK


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
        return ExitCode.USAGE
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
    return ExitCode.OK if result.same and (runs is None or runs.same) else ExitCode.FAIL


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


def _runtime_handler(command):
    """The handler of `sftc NAME` for the module `runtime.commands.sftc_NAME`: compile the spec
    (when the command takes one and it is given) and run the module's `main` with it."""

    def handler(args: argparse.Namespace) -> int:
        from runtime.commands import run_command

        if not command.TAKES_SPEC:
            return run_command(command.main, args)
        compiled = None
        if args.spec is not None:  # `sftc eval RUN --spec SPEC`: optional, the edited spec's gates
            compiled = compile_spec(args.spec, _console(stderr=True))
            if compiled is None:
                return ExitCode.FAIL
        return run_command(command.main, args, compiled)

    return handler


def _register_runtime_commands(commands) -> None:
    """Each runtime command as its module declares it (`runtime.commands.COMMANDS`, in order).
    The modules import nothing heavy: building the parser keeps `sftc check` JAX-free."""
    import importlib

    from runtime.commands import COMMANDS

    for name in COMMANDS:
        command = importlib.import_module(f"runtime.commands.sftc_{name}")
        parser = commands.add_parser(command.NAME, help=command.HELP)
        command.add_arguments(parser)
        parser.set_defaults(run=_runtime_handler(command))


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
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        return ExitCode.OK
    except Exception as error:  # noqa: BLE001 - never a traceback on screen (SFTC_DEBUG=1 shows it)
        from runtime.commands import internal_error

        return internal_error(_console(stderr=True), error)


if __name__ == "__main__":
    sys.exit(main())
