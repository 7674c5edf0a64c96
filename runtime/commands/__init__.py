"""The commands that execute a compiled plan or use a trained run: `sftc plan`, `preview`,
`run`, `eval`, `generate`, `chat`, `export`, `review`, `bench`, one module each.

Each module declares its command next to its handler: `NAME`, `HELP`, `TAKES_SPEC` (the
compiler checks and lowers `args.spec`, when given, before the handler runs),
`add_arguments(parser)` and `main(args, console[, compiled])`. `sftlang.cli` registers the
modules of `COMMANDS` and runs their handlers through `run_command`. Building the parser
imports these modules, and `sftc check` must stay a one-second, JAX-free gate: they import
nothing heavy at module level (their handlers do).

They never read `.sft` text: `sftlang.cli` hands a command that takes a spec a `Compiled`
(the Plan and the resolved spec text); the commands that act on a run directory get only
the parsed arguments. This module holds what they share: the runner (how errors are shown,
exit codes), and loading a trained run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from runtime.plan.sftc_error import ExitCode, SftcError

if TYPE_CHECKING:
    import argparse

    from rich.console import Console

    from runtime.plan.run_plan import Plan

__all__ = [
    "COMMANDS",
    "Compiled",
    "ExitCode",
    "SftcError",
    "internal_error",
    "load",
    "run_command",
    "say",
    "show_error",
    "start_runtime",
]

COMMANDS = ("plan", "preview", "audit", "run", "eval", "generate", "chat", "export", "review", "bench")
"""The runtime's commands, in `sftc --help` order; each is `runtime.commands.sftc_<name>`."""


@dataclass(frozen=True)
class Compiled:
    """What the compiler hands a command: the lowered plan and the resolved spec's text."""

    plan: Plan
    text: str


def start_runtime() -> None:
    """Before any library is imported: its warnings go to a log file (see runtime.platform.library_logs),
    and JAX, once imported, uses the persistent compilation cache (runtime.platform.compilation_cache).
    (Host memory is tuned for JAX later, after the data is tokenized: `runtime.platform.allocator`.)"""
    from runtime.platform.compilation_cache import use_compilation_cache
    from runtime.platform.library_logs import route_library_logs

    route_library_logs()
    use_compilation_cache()


def say(console: Console, kind: str, message: str) -> None:
    """`error: ...` / `warning: ...` without markup interpretation: messages hold [brackets]."""
    from rich.text import Text

    style = "bold red" if kind == "error" else "yellow"
    console.print(Text.assemble((kind, style), f": {message}"), soft_wrap=True)


def show_error(console: Console, error: SftcError) -> int:
    """`error: <message>` (and `  = help: ...` when the error has a help line); its exit code."""
    say(console, "error", str(error))
    if error.help:
        console.print(f"  = help: {error.help}", soft_wrap=True, markup=False, highlight=False)
    return error.exit_code


def run_command(handler: Callable[..., int], args: argparse.Namespace, *rest: object) -> int:
    """Run a command's handler `handler(args, console, *rest)` with a console on stderr: an
    `SftcError` is shown as one line and ends with its exit code, Ctrl-C with 130, anything
    else is a bug (`internal_error`)."""
    from rich.console import Console

    console = Console(stderr=True, highlight=False)
    try:
        return handler(args, console, *rest)
    except SftcError as error:
        return show_error(console, error)
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        raise  # the reader went away (`| head`): `sftlang.cli.main` ends quietly
    except Exception as error:  # noqa: BLE001 - never a traceback on screen (SFTC_DEBUG=1 shows it)
        return internal_error(console, error)


def internal_error(console: Console, error: BaseException, run_dir: Path | None = None) -> int:
    """A failure sftc did not foresee (a bug, or an environment problem): one line on the
    screen, the traceback in a file (and in `status.json` of a run), never a wall of text."""
    import os
    import traceback

    from runtime.platform.cache_dir import default_cache

    if os.environ.get("SFTC_DEBUG"):
        raise error
    text = "".join(traceback.format_exception(error))
    where: Path | None = (run_dir if run_dir is not None else default_cache()) / "traceback.txt"
    try:
        where.parent.mkdir(parents=True, exist_ok=True)
        where.write_text(text)
    except OSError:
        where = None
    if run_dir is not None:
        from runtime.runs import run_directory as rundir

        rundir.write_status(run_dir, "error", message=f"{type(error).__name__}: {error}", traceback=str(where))
    detail = f"the traceback is in {where}" if where else "set SFTC_DEBUG=1 to see the traceback"
    say(
        console,
        "error",
        f"sftc failed unexpectedly: {type(error).__name__}: {error}\n  = note: {detail}; please report it",
    )
    return ExitCode.FAIL


def load(args, console: Console):
    """The trained run `args.run_dir` at `args.step` (default: its newest checkpoint that restores)."""
    from runtime.platform.library_logs import route_library_logs
    from runtime.runs.trained_run import load_trained

    if (Path(args.run_dir) / "plan.json").is_file():
        route_library_logs(Path(args.run_dir) / "sftc.log")
    with console.status(f"loading {args.run_dir}"):
        trained = load_trained(args.run_dir, getattr(args, "step", None))
    for note in trained.notes:
        say(console, "warning", note)
    return trained
