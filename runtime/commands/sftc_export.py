"""`sftc export RUN`: a checkpoint transformers / peft / vLLM load as is."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from runtime.commands import ExitCode, load

if TYPE_CHECKING:
    import argparse

    from rich.console import Console

NAME = "export"
HELP = "write a checkpoint transformers / peft / vLLM load as is"
TAKES_SPEC = False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN", help="a run directory: runs/<name>/<timestamp>")
    parser.add_argument("--format", choices=("hf", "peft"), default="hf")
    parser.add_argument("--step", type=int, default=None, help="a checkpoint step (default: the latest)")
    parser.add_argument("out", metavar="OUT", help="the directory to write")


def main(args: argparse.Namespace, console: Console) -> int:
    from runtime.evaluate.final import export_model

    trained = load(args, console)
    if args.format == "peft" and trained.plan.model.adapter is None:
        console.print("[bold red]error[/]: this run trained every weight (no LoRA adapter); use --format hf")
        return ExitCode.USAGE
    path = export_model(trained.prepared, trained.model, Path(args.out), args.format)
    console.print(f"[bold green]✓[/] exported step {trained.step} of {args.run_dir} to {path} ({args.format})")
    return ExitCode.OK
