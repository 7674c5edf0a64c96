"""`sftc audit SPEC`: what is wrong with the data before a run trains on it.

Every kept example of every source, train and eval, read as training renders it
(`runtime.audit.read_examples`), then `runtime.audit.audit_report.audit`: duplicates, eval rows
leaked into training, conflicting answers, suspect rows, and the topics the prompts cover.
Findings are information: the command exits 0 when the audit ran, whatever it found.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runtime.commands import Compiled, ExitCode, say

if TYPE_CHECKING:
    import argparse

    from rich.console import Console

NAME = "audit"
HELP = "duplicates, eval leaks, conflicting answers, suspect rows and topic coverage of the data"
TAKES_SPEC = True

ROWS_SHOWN = 6  # rows named per finding before "+N more"
PROMPTS_SHOWN = 3  # example prompts per coverage group
KIND_STYLES = {
    "duplicate": "yellow",
    "near_duplicate": "yellow",
    "leak": "bold red",
    "conflict": "red",
    "suspect": "magenta",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", metavar="SPEC")
    parser.add_argument("--json", action="store_true", help="the whole audit as one JSON object")
    parser.add_argument(
        "--near",
        type=float,
        default=0.9,
        metavar="T",
        help="near copies: estimated Jaccard similarity of the rendered text at least T, in (0, 1] (default 0.9)",
    )
    parser.add_argument("--topics", type=int, default=None, metavar="K", help="coverage groups (default: chosen)")
    parser.add_argument("--source", default=None, metavar="NAME", help="show only this source's findings")


def main(args: argparse.Namespace, console: Console, compiled: Compiled) -> int:
    plan = compiled.plan
    names = [s.name for s in plan.data.sources]
    if args.source is not None and args.source not in names:
        say(console, "error", f"no source `{args.source}` (sources: {', '.join(names)})")
        return ExitCode.USAGE
    if not 0.0 < args.near <= 1.0:
        say(console, "error", f"--near {args.near:g}: the threshold is a similarity in (0, 1], e.g. 0.9")
        return ExitCode.USAGE
    if args.topics is not None and args.topics < 1:
        say(console, "error", f"--topics {args.topics}: the number of coverage groups is at least 1")
        return ExitCode.USAGE

    import json

    from rich.console import Console

    from runtime.audit.audit_report import AuditSettings, audit
    from runtime.audit.read_examples import read_examples
    from runtime.preflight.prepare import prepare

    with console.status("tokenizing the data"):
        prepared = prepare(plan)
    if prepared.data_audit is not None:  # the spec's data gates already read them
        examples = prepared.data_audit.examples
    else:
        with console.status("reading the examples as training renders them"):
            examples = read_examples(prepared.pipeline)
    with console.status(f"auditing {len(examples):,} examples"):
        result = audit(examples, _settings(AuditSettings, args))
    out = Console(highlight=False, soft_wrap=True)
    if args.json:
        report = result.to_dict()
        if args.source is not None:
            report = _only_source(report, args.source, {e.id: e.source for e in examples})
        print(json.dumps(report, ensure_ascii=False))
        return ExitCode.OK
    show(out, result, examples, names, args.source)
    return ExitCode.OK


def _settings(settings_class: Any, args: argparse.Namespace) -> Any:
    return settings_class(near_threshold=args.near, topics=args.topics)


def _touches(finding: Any, source: str, source_of: dict[str, str]) -> bool:
    """Whether a finding names a row of ``source`` (a leak across sources belongs to both)."""
    return any(source_of.get(i) == source for i in finding.ids)


def _only_source(report: dict, source: str, source_of: dict[str, str]) -> dict:
    """The JSON audit with only the findings that name a row of ``source`` and only its counts
    (the coverage as it is: it groups the training prompts of every source)."""
    report = dict(report)
    report["findings"] = [f for f in report["findings"] if any(source_of.get(i) == source for i in f["ids"])]
    report["counts"] = {source: report["counts"][source]}
    return report


# ---------------------------------------------------------------- the human report


def show(out: Console, result: Any, examples: list, names: list[str], only: str | None) -> None:
    """Per source: the counts per kind, then each finding with its rows and help line; then
    the counts over all sources and the coverage groups. A finding is listed under every source
    it names a row of."""
    from rich.text import Text

    from runtime.audit.audit_report import KINDS

    source_of = {e.id: e.source for e in examples}
    for name in [only] if only is not None else names:
        counts = result.counts.get(name, {})
        mine = [f for f in result.findings if _touches(f, name, source_of)]
        out.print(
            Text.assemble(
                ("source ", "bold"),
                (name, "bold cyan"),
                f": {counts.get('train', 0):,} train, {counts.get('eval', 0):,} eval examples",
            )
        )
        out.print("  " + _counts(counts, KINDS), markup=False)
        for finding in mine:
            _show_finding(out, finding)
        out.print()
    if only is None:
        counts = result.counts.get("all", {})
        out.print(
            Text.assemble(
                ("all sources", "bold"),
                f": {counts.get('train', 0):,} train, {counts.get('eval', 0):,} eval examples",
            )
        )
        out.print("  " + _counts(counts, KINDS), markup=False)
        out.print()
    _show_coverage(out, result, {e.id: e.prompt for e in examples})


def _counts(counts: dict, kinds: tuple[str, ...]) -> str:
    found = [f"{counts[k]} {k.replace('_', ' ')}" for k in kinds if counts.get(k)]
    return ", ".join(found) if found else "no findings"


def _show_finding(out: Console, finding: Any) -> None:
    from rich.text import Text

    wheres = list(finding.wheres)
    shown = "; ".join(wheres[:ROWS_SHOWN])  # a row of a conversation is "file:line, message N"
    more = f"; +{len(wheres) - ROWS_SHOWN} more" if len(wheres) > ROWS_SHOWN else ""
    label = finding.kind.replace("_", " ")
    if finding.kind == "suspect":
        label += f" ({finding.what.replace('_', ' ')})"
    elif finding.kind in ("leak", "conflict"):
        label += f" ({finding.what})"
    out.print(
        Text.assemble(
            "  ",
            (label, KIND_STYLES.get(finding.kind, "bold")),
            f": {finding.message}; {len(wheres)} row{'s' if len(wheres) != 1 else ''}: {shown}{more}",
        )
    )
    out.print(f"    = help: {finding.help}", markup=False)


def _show_coverage(out: Console, result: Any, prompts: dict[str, str]) -> None:
    from rich.text import Text

    cover = result.coverage
    if cover is None:
        return
    train = sum(t.size for t in cover.topics)
    out.print(Text.assemble(("coverage", "bold"), f": {len(cover.topics)} topics of {train:,} training prompts"))
    out.print(Text(f"  {cover.method}", style="dim"))
    if not cover.topics:
        return
    width = max(len(f"{t.size:,}") for t in cover.topics)
    for topic in cover.topics:
        out.print(Text.assemble(f"  {topic.size:>{width},} ", (topic.label, "cyan")))
        for example_id in list(topic.example_ids)[:PROMPTS_SHOWN]:
            out.print(f"  {'':>{width}}   · {_one_line(prompts.get(example_id, example_id))}", markup=False)


def _one_line(text: str, limit: int = 100) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
