"""How sftc ends: its exit codes, and the one base of the errors it shows as `error: <message>`.

JAX-free and import-free, so every package may import it, the compiler included (it may
import only `runtime.plan`). An `SftcError` reaching a command's runner is shown as one line
(plus its help line, when it has one) and ends the command with its exit code; any other
exception is a bug, shown by `runtime.commands.internal_error` (one line, the traceback in a file).
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["ExitCode", "SftcError"]


class ExitCode(IntEnum):
    """`sftc`'s exit codes, the same for every command."""

    OK = 0  # success: valid, formatted, the same, accepted
    FAIL = 1  # the answer is "no" (invalid, would reformat, different), or the command failed
    USAGE = 2  # a usage or input error
    REJECTED = 3  # `sftc run` / `sftc eval`: trained, but a gate rejected the run
    INTERRUPTED = 130  # Ctrl-C


class SftcError(Exception):
    """An error whose message already says what went wrong (and, ideally, what to do).

    `exit_code` (default `ExitCode.FAIL`) ends the command; `help`, when set, is shown on a
    second line as `  = help: ...`. Subclasses keep a second base (`ValueError`, ...) where
    callers catch that one.
    """

    exit_code: int = ExitCode.FAIL
    help: str | None = None

    def __init__(self, *args: object, exit_code: int | None = None, help: str | None = None) -> None:
        super().__init__(*args)
        if exit_code is not None:
            self.exit_code = exit_code
        if help is not None:
            self.help = help
