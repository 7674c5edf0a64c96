"""`sftc preview SPEC`: examples as the model sees them, trained tokens highlighted."""

from __future__ import annotations

from typing import TYPE_CHECKING

from runtime.commands import Compiled, ExitCode

if TYPE_CHECKING:
    import argparse

    from rich.console import Console

NAME = "preview"
HELP = "rendered examples as the model sees them, with the loss mask"
TAKES_SPEC = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", metavar="SPEC")
    parser.add_argument("-n", type=int, default=3, help="how many examples (default 3)")
    parser.add_argument("--source", default=None, help="only this data source")
    parser.add_argument("--tokens", action="store_true", help="mark token boundaries")
    parser.add_argument("--json", action="store_true", help="one JSON object per example")


def main(args: argparse.Namespace, console: Console, compiled: Compiled) -> int:
    from runtime.data.preview import preview
    from runtime.preflight.prepare import prepare

    plan = compiled.plan
    if args.source is not None and args.source not in {s.name for s in plan.data.sources}:
        console.print(
            f"[bold red]error[/]: no trained source `{args.source}` "
            f"(sources: {', '.join(s.name for s in plan.data.sources)})"
        )
        return ExitCode.USAGE
    with console.status("tokenizing the data"):
        prepared = prepare(plan)
    preview(prepared.pipeline, n=args.n, source=args.source, tokens=args.tokens, json=args.json)
    return ExitCode.OK
