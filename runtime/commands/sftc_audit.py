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
    parser.add_argument(
        "--run",
        dest="run_dir",  # `args.run` is the command's handler
        default=None,
        metavar="RUN",
        help="an evaluated run of this spec: each topic's eval score, base → tuned gain and review score",
    )
    parser.add_argument(
        "--chart", default=None, metavar="FILE", help="with --run: the topic chart's PNG (default RUN/audit-topics.png)"
    )


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

    if args.chart is not None and args.run_dir is None:
        say(console, "error", "--chart draws the topics of a run's eval: give the run with --run RUN")
        return ExitCode.USAGE
    if args.run_dir is not None:
        problem = _not_evaluated(args.run_dir)
        if problem:
            say(console, "error", problem)
            return ExitCode.USAGE

    import dataclasses
    import json

    from rich.console import Console

    from runtime.audit.audit_report import AuditSettings, audit
    from runtime.audit.coverage import coverage
    from runtime.preflight.prepare import prepare

    with console.status("tokenizing and auditing the data"):
        prepared = prepare(plan)  # its audit has every finding at the default settings
    found, examples = prepared.data_audit.audit, prepared.data_audit.examples
    settings = AuditSettings(near_threshold=args.near, topics=args.topics)
    with console.status(f"auditing {len(examples):,} examples"):
        if (settings.near_threshold, settings.num_perm) == (found.settings.near_threshold, found.settings.num_perm):
            result = dataclasses.replace(found, settings=settings, coverage=coverage(examples, settings.topics))
        else:
            result = audit(examples, settings)
    table = chart = None
    if args.run_dir is not None:
        table, chart = _run_topics(args.run_dir, result.coverage, args.chart)
    out = Console(highlight=False, soft_wrap=True)
    if args.json:
        report = result.to_dict()
        if args.source is not None:
            report = _only_source(report, args.source, {e.id: e.source for e in examples})
        if table is not None:
            report["topics"] = {**table.to_dict(), "run": args.run_dir, "chart": str(chart) if chart else None}
        print(json.dumps(report, ensure_ascii=False))
        return ExitCode.OK
    show(out, result, examples, names, args.source, table)
    if table is not None:
        _show_run_topics(out, table, args.run_dir, chart)
    return ExitCode.OK


def _not_evaluated(run: str) -> str | None:
    """Why ``run`` cannot give eval results per topic, or None."""
    from pathlib import Path

    path = Path(run)
    if not (path / "plan.json").is_file():
        return f"--run {run}: not a run directory (it has no plan.json); `sftc run SPEC` makes one under runs/"
    if not (path / "report.json").is_file():
        return f"--run {run}: the run has no evaluation yet (no report.json); `sftc run SPEC` finishes it"
    return None


def _run_topics(run: str, cover: Any, chart_path: str | None) -> tuple[Any, Any]:
    """The run's eval results per topic (`runtime.evaluate.topic_scores`) and its chart."""
    import json
    from pathlib import Path

    from runtime.evaluate.topic_chart import write_topic_chart
    from runtime.evaluate.topic_scores import run_reviews, score_metrics, topic_table
    from runtime.plan.run_inputs import eval_fingerprints
    from runtime.runs.run_directory import read_plan

    run_dir = Path(run)
    report = json.loads((run_dir / "report.json").read_text())
    manifest_path = run_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    baseline = report.get("baseline")
    table = topic_table(
        cover,
        report.get("samples") or [],
        baseline.get("samples") if baseline else None,
        score_metrics(read_plan(run_dir).gates),
        run_reviews(run_dir, eval_fingerprints(manifest)),
    )
    chart = write_topic_chart(Path(chart_path) if chart_path else run_dir / "audit-topics.png", table)
    return table, chart


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


def show(out: Console, result: Any, examples: list, names: list[str], only: str | None, table: Any = None) -> None:
    """Per source: the counts per kind, then each finding with its rows and help line; then
    the counts over all sources and the coverage groups (with a run's ``table``, each group's
    eval results). A finding is listed under every source it names a row of."""
    from rich.text import Text

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
        out.print("  " + _counts(counts), markup=False)
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
        out.print("  " + _counts(counts), markup=False)
        out.print()
    _show_coverage(out, result, _varying_prompts(examples), table)


def _varying_prompts(examples: list) -> dict[str, str]:
    """Each prompt without what every training prompt of its source shares (the template, a
    system prompt), so an example prompt shows the part that tells topics apart."""
    from runtime.audit.suspect_rows import common_affixes

    affixes = {
        source: common_affixes(e.prompt for e in examples if e.source == source and e.split == "train")
        for source in dict.fromkeys(e.source for e in examples)
    }
    shown = {}
    for e in examples:
        prefix, suffix = affixes[e.source]
        end = len(e.prompt) - len(suffix)
        if len(prefix) < end:  # something varies between the affixes: show it, marking what was cut
            shown[e.id] = "…" * bool(prefix) + e.prompt[len(prefix) : end] + "…" * bool(suffix)
        else:
            shown[e.id] = e.prompt
    return shown


def _counts(counts: dict) -> str:
    from runtime.data.stats import findings_text

    return findings_text(counts)


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


def _show_coverage(out: Console, result: Any, prompts: dict[str, str], table: Any = None) -> None:
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
    scores = table.topics if table is not None else [None] * len(cover.topics)
    weakest = table.weakest if table is not None else None
    for topic, score in zip(cover.topics, scores, strict=True):
        out.print(
            Text.assemble(
                f"  {topic.size:>{width},} ",
                (topic.label, "cyan"),
                *(_score_cells(score, table.metrics, score is weakest) if score is not None else ()),
            )
        )
        for example_id in list(topic.example_ids)[:PROMPTS_SHOWN]:
            out.print(f"  {'':>{width}}   · {_one_line(prompts.get(example_id, example_id))}", markup=False)


def _score_cells(score: Any, metrics: list[str], weakest: bool) -> tuple:
    """A topic's eval results after its label: `· 4 eval rows, exact_match 0.50 (base 0.00, +0.50), review 3.5`."""
    if not score.eval_rows:
        return (("  · no eval rows", "dim"),)
    parts = []
    for metric in metrics:
        part = f"{metric} {score.tuned[metric]:.2f}"
        if score.gain(metric) is not None:
            part += f" (base {score.base[metric]:.2f}, {score.gain(metric):+.2f})"
        parts.append(part)
    text = f"  · {score.eval_rows:,} eval row{'s' * (score.eval_rows != 1)}, " + ", ".join(parts)
    if score.review_score is not None:
        text += f", review {score.review_score:.2f} ({score.reviewed} reviewed)"
    return (((text + ", the lowest", "bold red") if weakest else (text, "")),)


def _show_run_topics(out: Console, table: Any, run: str, chart: Any) -> None:
    """Under the coverage: the weakest topic against the thinnest, what was left out, the chart."""
    out.print()
    verdict = table.verdict()
    if verdict is not None:
        out.print(f"the answers of {run} by topic: {verdict}", markup=False)
    elif not table.scored:
        out.print(f"no eval answers of {run} fall in these topics (eval.generate off, or other data)", markup=False)
    if table.unmatched:
        out.print(
            f"  {table.unmatched:,} eval answer{'s' * (table.unmatched != 1)} of {run} of rows this spec's data "
            "does not have (the data changed since the run?): left out",
            style="yellow",
        )
    if chart is not None:
        out.print(f"chart: {chart}", markup=False)


def _one_line(text: str, limit: int = 100) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
