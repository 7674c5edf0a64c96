"""`sftc bench SPEC`: steady-state throughput of the spec's own train step on synthetic tokens."""

from __future__ import annotations

import argparse

from rich.console import Console

from runtime.commands import EXIT_OK, Compiled, runtime_error, runtime_errors


def main(args: argparse.Namespace, compiled: Compiled) -> int:
    """Steady-state throughput of the spec's train step on synthetic tokens of its shapes."""
    import json

    from runtime.preflight.throughput import bench_plan, format_bench
    from runtime.train.prepare import default_cache, load_tokenizer, model_config

    console = Console(stderr=True, highlight=False)
    plan = compiled.plan
    try:
        with console.status("loading the tokenizer and the model config"):
            tokenizer = load_tokenizer(plan, default_cache())
            config, _ = model_config(plan, tokenizer)
        if plan.model.kind == "hf":
            console.print("[dim]note: the base weights are random here; a step costs the same with the real ones[/]")
        with console.status(f"compiling and timing {args.steps} steps"):
            result = bench_plan(plan, config, steps=args.steps)
    except runtime_errors() as error:
        return runtime_error(console, error)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        Console(highlight=False, soft_wrap=True).print(format_bench(result))
    return EXIT_OK
