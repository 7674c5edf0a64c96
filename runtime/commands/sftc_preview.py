"""`sftc preview SPEC`: examples as the model sees them, trained tokens highlighted."""

from __future__ import annotations

import argparse

from rich.console import Console

from runtime.commands import EXIT_OK, EXIT_USAGE, Compiled, runtime_error, runtime_errors


def main(args: argparse.Namespace, compiled: Compiled) -> int:
    from runtime.data.preview import preview
    from runtime.train.prepare import prepare

    console = Console(stderr=True, highlight=False)
    plan = compiled.plan
    if args.source is not None and args.source not in {s.name for s in plan.data.sources}:
        console.print(
            f"[bold red]error[/]: no trained source `{args.source}` (sources: {', '.join(s.name for s in plan.data.sources)})"
        )
        return EXIT_USAGE
    try:
        with console.status("tokenizing the data"):
            prepared = prepare(plan)
        preview(prepared.pipeline, n=args.n, source=args.source, tokens=args.tokens, json=args.json)
    except runtime_errors() as error:
        return runtime_error(console, error)
    return EXIT_OK
