"""`sftc plan SPEC`: the decided plan, Terraform-plan style."""

from __future__ import annotations

import argparse

from rich.console import Console

from . import (
    EXIT_OK,
    Compiled,
    runtime_error,
    runtime_errors,
)


def main(args: argparse.Namespace, compiled: Compiled) -> int:
    from runtime.plan_report import plan_report
    from runtime.prepare import prepare

    console = Console(stderr=True, highlight=False)
    plan = compiled.plan
    try:
        with console.status("tokenizing and packing the data (cached after the first time)"):
            prepared = prepare(plan)
    except runtime_errors() as error:
        return runtime_error(console, error)
    if args.json:
        import json

        print(json.dumps(plan_report(prepared, as_dict=True), indent=2))
    else:
        Console(highlight=False, soft_wrap=True).print(plan_report(prepared))
    return EXIT_OK
