"""`sftc bench SPEC`: steady-state throughput of the spec's own train step on synthetic tokens."""

from __future__ import annotations

from typing import TYPE_CHECKING

from runtime.commands import Compiled, ExitCode

if TYPE_CHECKING:
    import argparse

    from rich.console import Console

NAME = "bench"
HELP = "steady-state training throughput of the spec's model and shapes"
TAKES_SPEC = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", metavar="SPEC")
    parser.add_argument("--steps", type=int, default=10, help="timed steps after the warm-up (default 10)")
    parser.add_argument("--json", action="store_true", help="one JSON object")


def main(args: argparse.Namespace, console: Console, compiled: Compiled) -> int:
    """Steady-state throughput of the spec's train step on synthetic tokens of its shapes."""
    import json

    from rich.console import Console

    from runtime.preflight.prepare import default_cache, load_tokenizer, model_config
    from runtime.train.throughput import bench_plan, format_bench

    plan = compiled.plan
    with console.status("loading the tokenizer and the model config"):
        tokenizer = load_tokenizer(plan, default_cache())
        config, _ = model_config(plan, tokenizer)
    if plan.model.kind == "hf":
        console.print("[dim]note: the base weights are random here; a step costs the same with the real ones[/]")
    with console.status(f"compiling and timing {args.steps} steps"):
        result = bench_plan(plan, config, steps=args.steps)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        Console(highlight=False, soft_wrap=True).print(format_bench(result))
    return ExitCode.OK
