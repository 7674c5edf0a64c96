"""`sftc export RUN`: a checkpoint transformers / peft / vLLM load as is, or a GGUF file for
llama.cpp and Ollama (checked like `sftc run` checks its export: read back and compared)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from runtime.commands import ExitCode, load, say

if TYPE_CHECKING:
    import argparse

    from rich.console import Console

NAME = "export"
HELP = "write a checkpoint transformers / peft / vLLM load as is, or a GGUF file for llama.cpp and Ollama"
TAKES_SPEC = False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN", help="a run directory: runs/<name>/<timestamp>")
    parser.add_argument("--format", choices=("hf", "peft", "gguf"), default="hf")
    parser.add_argument(
        "--quant", choices=("f16", "q8_0"), default="f16", help="gguf: how the matrices are stored (default: f16)"
    )
    parser.add_argument("--step", type=int, default=None, help="a checkpoint step (default: the latest)")
    parser.add_argument("out", metavar="OUT", help="the directory to write")


def main(args: argparse.Namespace, console: Console) -> int:
    from runtime.evaluate.final import export_model

    trained = load(args, console)
    if args.format == "peft" and trained.plan.model.adapter is None:
        console.print("[bold red]error[/]: this run trained every weight (no LoRA adapter); use --format hf")
        return ExitCode.USAGE
    path = export_model(trained.prepared, trained.model, Path(args.out), args.format, quant=args.quant)
    what = f"gguf {args.quant}" if args.format == "gguf" else args.format
    console.print(f"[bold green]✓[/] exported step {trained.step} of {args.run_dir} to {path} ({what})")
    if args.format != "gguf":
        return ExitCode.OK
    from runtime.evaluate.export_check import check_export

    with console.status("checking the GGUF file on the run's eval prompts"):
        check = check_export(trained.with_data(), trained.model, [], path, "gguf", quant=args.quant)
    logits = check.logits
    console.print(
        f"  max |Δ logit| {logits['max_abs_diff']:.3g} over {check.gguf['logit_prompts']} eval prompts "
        f"({check.gguf['share']:.2%} of the largest logit; tolerance {logits['tolerance']:.3g}: "
        f"{check.gguf['tolerance_share']:.0%} for {args.quant}); stops on {check.gguf['stop_ids']}",
        soft_wrap=True,
        markup=False,
        highlight=False,
    )
    if not check.passed:
        say(console, "error", check.message)
        return ExitCode.REJECTED
    console.print(f"[bold green]✓[/] {check.message}", soft_wrap=True, highlight=False)
    return ExitCode.OK
