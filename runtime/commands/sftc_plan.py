"""`sftc plan SPEC`: the decided plan, Terraform-plan style."""

from __future__ import annotations

from typing import TYPE_CHECKING

from runtime.commands import Compiled, ExitCode

if TYPE_CHECKING:
    import argparse

    from rich.console import Console

NAME = "plan"
HELP = "what a run will do: data, steps, parameters, mesh, memory, FLOPs"
TAKES_SPEC = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", metavar="SPEC")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")


def decided(plan):
    """(decided plan, model config, data counts): recalled when the inputs are unchanged
    (`runtime.preflight.plan_cache`: metadata only), else prepared (tokenizing what is not cached)."""
    from runtime.platform.cache_dir import default_cache
    from runtime.preflight import plan_cache
    from runtime.preflight.prepare import planned_config, prepare

    cache = default_cache()
    recorded = plan_cache.recall(plan_cache.inputs_key(plan, cache), cache)
    if recorded is not None:
        config, _ = planned_config(recorded.plan, recorded.tokenizer)
        return recorded.plan, config, recorded.stats
    prepared = prepare(plan, cache)
    return prepared.plan, prepared.config, prepared.pipeline.stats


def main(args: argparse.Namespace, console: Console, compiled: Compiled) -> int:
    from rich.console import Console

    from runtime.preflight.plan_report import plan_report

    with console.status("tokenizing and packing the data (cached after the first time)"):
        plan, config, stats = decided(compiled.plan)
    verdicts = _data_verdicts(plan, stats)
    if args.json:
        import json

        report = plan_report(plan, config, stats, as_dict=True)
        if verdicts is not None:
            report["data_gates"] = [v.to_dict() for v in verdicts]
        print(json.dumps(report, indent=2))
    else:
        out = Console(highlight=False, soft_wrap=True)
        out.print(plan_report(plan, config, stats))
        if verdicts is not None:
            out.print("data gates, judged on the audit `sftc run` repeats before the first step:")
            from runtime.evaluate.report import print_gates

            print_gates(verdicts, out)
    return ExitCode.OK


def _data_verdicts(plan, stats) -> list | None:
    """The spec's data gates (`leakage == 0`, ...) against the audited values; None without any."""
    if not plan.data_gates:
        return None
    from runtime.evaluate.gates import judge

    return judge(plan.data_gates, stats.data_values or {})
