"""The commands that execute a compiled plan or use a trained run: `sftc plan`, `preview`,
`run`, `eval`, `generate`, `chat`, `export`, `bench`, one module each.

They never read `.sft` text: `sftlang.cli` checks and lowers a spec and hands each
command a `Compiled` (the Plan and the resolved spec text), or, for the commands that
act on a run directory, only the parsed arguments. This module holds what they share:
exit codes, how errors are shown, and loading a trained run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

    from runtime.plan.run_plan import Plan

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_REJECTED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


@dataclass(frozen=True)
class Compiled:
    """What the compiler hands a command: the lowered plan and the resolved spec's text."""

    plan: Plan
    text: str


def start_runtime() -> None:
    """Before any library is imported: its warnings go to a log file (see runtime.platform.library_logs).
    (Host memory is tuned for JAX later, after the data is tokenized: `runtime.platform.allocator`.)"""
    from runtime.platform.library_logs import route_library_logs

    route_library_logs()


def say(console: Console, kind: str, message: str) -> None:
    """`error: ...` / `warning: ...` without markup interpretation: messages hold [brackets]."""
    from rich.text import Text

    style = "bold red" if kind == "error" else "yellow"
    console.print(Text.assemble((kind, style), f": {message}"), soft_wrap=True)


def runtime_error(console: Console, error: Exception) -> int:
    say(console, "error", str(error))
    return EXIT_FAIL


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
    return EXIT_FAIL


def runtime_errors() -> tuple[type[Exception], ...]:
    """The errors whose message already says what to do: shown as one line, exit 1."""
    from runtime.checkpoints.hf_checkpoint import CheckpointError
    from runtime.checkpoints.tokenizer_files import TokenizerError
    from runtime.plan.data_errors import DataError
    from runtime.platform.mesh import MeshError
    from runtime.train.engine import EngineError
    from runtime.train.prepare import PrepareError

    return (DataError, CheckpointError, EngineError, MeshError, PrepareError, TokenizerError)


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
