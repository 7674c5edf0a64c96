"""`sftc plan SPEC`: the decided plan, Terraform-plan style."""

from __future__ import annotations

import argparse

from rich.console import Console

from runtime.commands import EXIT_OK, Compiled, runtime_error, runtime_errors


def decided(plan):
    """(decided plan, model config, data counts): recalled when the inputs are unchanged
    (`runtime.preflight.plan_cache`: metadata only), else prepared (tokenizing what is not cached)."""
    from runtime.platform.cache_dir import default_cache
    from runtime.preflight import plan_cache
    from runtime.train.prepare import planned_config, prepare

    cache = default_cache()
    recorded = plan_cache.recall(plan_cache.inputs_key(plan, cache), cache)
    if recorded is not None:
        config, _ = planned_config(recorded.plan, recorded.tokenizer)
        return recorded.plan, config, recorded.stats
    prepared = prepare(plan, cache)
    return prepared.plan, prepared.config, prepared.pipeline.stats


def main(args: argparse.Namespace, compiled: Compiled) -> int:
    from runtime.preflight.plan_report import plan_report

    console = Console(stderr=True, highlight=False)
    try:
        with console.status("tokenizing and packing the data (cached after the first time)"):
            plan, config, stats = decided(compiled.plan)
    except runtime_errors() as error:
        return runtime_error(console, error)
    if args.json:
        import json

        print(json.dumps(plan_report(plan, config, stats, as_dict=True), indent=2))
    else:
        Console(highlight=False, soft_wrap=True).print(plan_report(plan, config, stats))
    return EXIT_OK
