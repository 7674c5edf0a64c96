"""`sftc export RUN`: a checkpoint transformers / peft / vLLM load as is."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from runtime.commands import EXIT_OK, EXIT_USAGE, load, runtime_error, runtime_errors


def main(args: argparse.Namespace) -> int:
    from runtime.evaluate.final import export_model

    console = Console(stderr=True, highlight=False)
    try:
        trained = load(args, console)
        if args.format == "peft" and trained.plan.model.adapter is None:
            console.print("[bold red]error[/]: this run trained every weight (no LoRA adapter); use --format hf")
            return EXIT_USAGE
        path = export_model(trained.prepared, trained.model, Path(args.out), args.format)
    except runtime_errors() as error:
        return runtime_error(console, error)
    console.print(f"[bold green]✓[/] exported step {trained.step} of {args.run_dir} to {path} ({args.format})")
    return EXIT_OK
