"""The run report: `report.md` + `report.json` (+ `loss.png`) in the run directory, and the
gate table for the terminal.

`report.md` reads top to bottom as the answer to "is this run good enough, and why":

1. the verdict line and the run facts (name, steps, duration, spec hash, ...);
2. the gate table: gate, value, threshold, verdict (a failing gate says why when it has no value),
   then the export check (the exported files reloaded and re-scored; a failed check rejects the run);
3. every metric per source (`all` = every eval row / every generated sample);
4. the loss curve (`loss.png`: train loss and eval loss over steps, from `metrics.jsonl`);
5. data statistics;
6. generations next to their references, worst first by the first failing generation gate
   (or, when none fails, the first generation gate), each with its score on that metric.

`report.json` holds the same facts, every metric value, every verdict and every
sample (with its score) for machines; non-finite numbers are written as strings
("nan", "inf") so the file is strict JSON.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from runtime.evaluate import metrics as M
from runtime.evaluate.answers import Sample
from runtime.evaluate.gates import TOKEN_METRICS, Verdict, accepted, metric_key
from runtime.plan.sample_origin import where

__all__ = [
    "write_report",
    "write_loss_chart",
    "loss_series",
    "rank_samples",
    "gate_table",
    "print_gates",
    "summary_line",
    "format_value",
    "before_after_rows",
    "print_before_after",
]

_GENERATION = set(M.GENERATION_METRICS) | {"regex"}


# ---------------------------------------------------------------- values


def format_value(metric: str, value: float | None) -> str:
    """A metric value for tables: BLEU/chrF with 2 decimals, token counts with 1, others with 4."""
    if value is None:
        return "—"
    value = float(value)
    if not math.isfinite(value):
        return str(value)
    if metric in ("bleu", "chrf"):
        return f"{value:.2f}"
    if metric == "mean_tokens":
        return f"{value:.1f}"
    if metric == "max_tokens":
        return f"{value:.0f}"
    return f"{value:.4f}"


def _threshold_text(v: Verdict) -> str:
    return f"{v.op} {v.threshold:g}"


def summary_line(verdicts: Sequence[Verdict]) -> str:
    """`accepted: all 3 gates hold` / `rejected: 1 of 3 gates failed: bleu(faq) >= 20`."""
    if not verdicts:
        return "accepted: no gates"
    failed = [v for v in verdicts if not v.passed]
    if not failed:
        return f"accepted: all {len(verdicts)} gate{'s' if len(verdicts) != 1 else ''} hold"
    return f"rejected: {len(failed)} of {len(verdicts)} gate{'s' if len(verdicts) != 1 else ''} failed: " + ", ".join(
        v.text for v in failed
    )


def _jsonable(x: Any) -> Any:
    if isinstance(x, float):
        return x if math.isfinite(x) else str(x)
    if isinstance(x, Mapping):
        return {("null" if k is None else str(k)): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if hasattr(x, "item") and callable(x.item):  # numpy scalars
        return _jsonable(x.item())
    if hasattr(x, "to_dict") and callable(x.to_dict):
        return _jsonable(x.to_dict())
    return x


# ---------------------------------------------------------------- loss curve


def _number(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(x) else None


def loss_series(records: Sequence[Mapping[str, Any]]) -> list[tuple[str, list[float], list[float]]]:
    """(name, steps, losses) series from `metrics.jsonl` records: `train loss`, `eval loss`,
    and `eval loss (SOURCE)` per source. A step written twice (training resumed from an
    earlier checkpoint) keeps its latest value; a non-finite latest value leaves the step out."""
    by_series: dict[str, dict[int, float]] = {}
    for r in records:
        if r.get("kind") == "train":
            name = "train loss"
        elif r.get("kind") == "eval":
            name = "eval loss" if r.get("source") is None else f"eval loss ({r['source']})"
        else:
            continue
        step = r.get("step")
        if isinstance(step, int) and "loss" in r:
            by_series.setdefault(name, {})[step] = _number(r["loss"])  # None: not finite
    out = []
    for n in sorted(by_series, key=lambda n: (n != "train loss", n != "eval loss", n)):
        points = sorted((s, v) for s, v in by_series[n].items() if v is not None)
        if points:
            out.append((n, [float(s) for s, _ in points], [v for _, v in points]))
    return out


def write_loss_chart(
    run_dir: str | Path, records: Sequence[Mapping[str, Any]] | None = None, title: str = "loss"
) -> Path | None:
    """`loss.png` in ``run_dir`` from ``records`` (default: its `metrics.jsonl`); None without losses."""
    from runtime.evaluate.loss_plot import line_chart
    from runtime.train.metrics_log import read_metrics

    if records is None:
        records = read_metrics(run_dir)
    series = loss_series(records)
    if not series:
        return None
    return line_chart(Path(run_dir) / "loss.png", series, title)


# ---------------------------------------------------------------- ranking samples


def _ranking_verdict(verdicts: Sequence[Verdict]) -> Verdict | None:
    gen = [
        v
        for v in verdicts
        if v.metric in _GENERATION and v.task is None and not (v.metric == "regex" and v.pattern is None)
    ]
    failing = [v for v in gen if not v.passed]
    return (failing or gen or [None])[0]


def rank_samples(
    samples: Sequence[Sample], verdicts: Sequence[Verdict]
) -> tuple[list[tuple[Sample, float | None]], Verdict | None]:
    """Samples worst first by the first failing generation gate (else the first generation
    gate): the gate's own source first, ordered by each sample's score on that metric
    (lowest first for `>=`/`>` gates, highest first for `<=`/`<`, farthest from the
    threshold for `==`), then the other samples in order. Without a generation gate,
    the samples in order with no score."""
    verdict = _ranking_verdict(verdicts)
    if verdict is None or not samples:
        return [(s, None) for s in samples], None
    scope = [i for i, s in enumerate(samples) if verdict.source is None or s.source == verdict.source]
    chosen = [samples[i] for i in scope]
    scores = (
        M.sample_scores(
            verdict.metric,
            [s.generated for s in chosen],
            [s.reference for s in chosen],
            [s.tokens for s in chosen],
            verdict.pattern,
        )
        if chosen
        else []
    )
    if verdict.op in ("<=", "<"):
        key = lambda k: (-scores[k], k)  # noqa: E731
    elif verdict.op == "==":
        key = lambda k: (-abs(scores[k] - verdict.threshold), k)  # noqa: E731
    else:
        key = lambda k: (scores[k], k)  # noqa: E731
    ranked = [(chosen[k], scores[k]) for k in sorted(range(len(chosen)), key=key)]
    in_scope = set(scope)
    ranked += [(s, None) for i, s in enumerate(samples) if i not in in_scope]
    return ranked, verdict


# ---------------------------------------------------------------- markdown


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _fence(text: str, info: str = "text") -> str:
    longest, run = 0, 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{text}\n{fence}"


def _duration(seconds: float) -> str:
    seconds = float(seconds)
    h, rem = divmod(int(round(seconds)), 3600)
    m, s = divmod(rem, 60)
    if h:
        return f"{h}h {m:02d}m {s:02d}s"
    if m:
        return f"{m}m {s:02d}s"
    return f"{seconds:.1f}s"


def _fact(key: str, value: Any) -> str:
    if key.endswith("_s") and isinstance(value, (int, float)):
        return _duration(value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: Sequence[str] | None = None) -> list[str]:
    align = align or ["l"] * len(header)
    sep = ["---:" if a == "r" else ":---:" if a == "c" else "---" for a in align]
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _metric_rows(values: Mapping[str, float], sources: Sequence[str]) -> list[list[str]]:
    rows = []
    for metric in TOKEN_METRICS + M.GENERATION_METRICS:
        cells = [values.get(metric_key(metric, s)) for s in [None, *sources]]
        if all(c is None for c in cells):
            continue
        rows.append([f"`{metric}`", *(format_value(metric, c) for c in cells)])
    return rows


_STAT_COLUMNS = (
    "rows",
    "train_examples",
    "eval_examples",
    "bad_rows",
    "dropped_overflow",
    "truncated",
    "dropped_no_trainable",
    "train_tokens",
    "eval_tokens",
    "max_tokens",
)


def _data_lines(stats: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    scalars = [(k, v) for k, v in stats.items() if not isinstance(v, (Mapping, list, tuple))]
    if scalars:
        lines += _table(["data", "value"], [[k, _fact(k, v)] for k, v in scalars], ["l", "r"]) + [""]
    sources = stats.get("sources")
    if isinstance(sources, Mapping) and sources:
        first = next(iter(sources.values()))
        cols = [c for c in _STAT_COLUMNS if c in first] or [
            k for k, v in first.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
        ]
        rows = [[name, *(_fact(c, s.get(c, "")) for c in cols)] for name, s in sources.items()]
        lines += _table(["source", *cols], rows, ["l", *("r" * len(cols))]) + [""]
    return lines


def _about_data_lines(counts: Mapping[str, Mapping[str, int]] | None, topics: Any, chart: Path | None) -> list[str]:
    """The audit of the data the run trained on (per source, each kind of finding), then the eval
    results per topic of the training prompts, the weakest topic and the chart."""
    from runtime.data.stats import FINDING_NAMES

    lines = ["## About the data", ""]
    if counts:
        rows = [
            [name if name != "all" else "**all**", f"{c.get('train', 0):,}", f"{c.get('eval', 0):,}"]
            + [f"{c.get(kind, 0):,}" for kind in FINDING_NAMES]
            for name, c in counts.items()
        ]
        header = ["source", "train", "eval", *(many for _, many in FINDING_NAMES.values())]
        lines += _table(header, rows, ["l", *("r" * (len(header) - 1))]) + [""]
        if any(counts.get("all", {}).get(kind) for kind in FINDING_NAMES):
            lines += ["`sftc audit SPEC` names every row of each finding and what to do.", ""]
    if topics is None:
        return lines
    lines += [f"Eval results per topic of the training prompts ({topics.method}).", ""]
    gains = any(t.base for t in topics.topics)
    rows = []
    for t in topics.topics:
        cells = [_cell(t.label), f"{t.train_rows:,}", f"{t.eval_rows:,}"]
        for metric in topics.metrics:
            value = f"{t.tuned[metric]:.3f}" if metric in t.tuned else ""
            if t.gain(metric) is not None:
                value += f" ({t.gain(metric):+.3f})"
            cells.append(value)
        cells.append(f"{t.review_score:.2f} ({t.reviewed})" if t.review_score is not None else "")
        rows.append(cells)
    header = ["topic", "training rows", "eval rows", *topics.metrics, "review (rows)"]
    lines += _table(header, rows, ["l", *("r" * (len(header) - 1))]) + [""]
    if gains:
        lines += ["In parentheses: the gain over the base model on the same rows.", ""]
    verdict = topics.verdict()
    if verdict:
        lines += [f"**Weakest topic** {verdict}.", ""]
    if topics.unmatched:
        n = topics.unmatched
        lines += [
            f"{n:,} eval answer{'s' * (n != 1)} of rows the audit did not read (the data changed?): left out.",
            "",
        ]
    if chart is not None:
        lines += [f"![{topics.metric} per topic against its training rows]({chart.name})", ""]
    return lines


def _baseline_title(baseline: Any) -> str:
    what = (
        "the base model"
        if baseline.kind == "base"
        else f"the base model with {baseline.k} training examples in the prompt (few-shot)"
    )
    return f"Baseline: {what}" + (", answers from the cache" if baseline.cached else "")


def before_after_rows(
    values: Mapping[str, float], base_values: Mapping[str, float], sources: Sequence[str]
) -> list[tuple[str, str, str, str, str]]:
    """(metric, scope, baseline, tuned, change) for every metric and scope both have, formatted:
    the one table behind report.md's "Before → after" and the terminal's."""
    rows = []
    for metric in TOKEN_METRICS + M.GENERATION_METRICS:
        for scope in [None, *sources]:
            key = metric_key(metric, scope)
            if key in values and key in base_values:
                before, after = float(base_values[key]), float(values[key])
                change = after - before
                rows.append(
                    (
                        metric,
                        "all" if scope is None else scope,
                        format_value(metric, before),
                        format_value(metric, after),
                        ("+" if change >= 0 else "") + format_value(metric, change),
                    )
                )
    return rows


def benchmark_rows(tuned: Any, base: Any) -> list[tuple[str, str, str, str, str, str]]:
    """(task, metric, base, tuned, change, documents) for every score of the tuned model's
    `BenchmarkResult`, with ± its standard error where lm_eval gives one: the one table behind
    report.md's "Standard benchmarks" and the terminal's."""
    rows = []
    for task, scores in tuned.scores.items():
        for metric, after in scores.items():
            before = base.scores.get(task, {}).get(metric) if base is not None else None
            err = tuned.stderr.get(task, {}).get(metric)
            shown = format_value(metric, after) + (f" ± {err:.4f}" if err is not None and math.isfinite(err) else "")
            change = "—"
            if before is not None:
                delta = float(after) - float(before)
                change = ("+" if delta >= 0 else "") + format_value(metric, delta)
            rows.append(
                (task, metric, format_value(metric, before), shown, change, str(tuned.documents.get(task, "—")))
            )
    return rows


def _benchmark_lines(tuned: Any, base: Any) -> list[str]:
    lines = ["## Standard benchmarks", ""]
    lines += [
        "lm-evaluation-harness tasks, scored with sftc's own model (no chat template; lm_eval's prompts, "
        "few-shot examples and metrics)" + (" on the base model and the tuned one." if base is not None else "."),
        "",
    ]
    rows = [[f"`{t}`", f"`{m}`", *rest] for t, m, *rest in benchmark_rows(tuned, base)]
    if not rows:
        return lines + ["The tasks reported no score.", ""]
    head = ["task", "metric", "base", "tuned", "change", "documents"]
    return lines + _table(head, rows, ["l", "l", "r", "r", "r", "r"]) + [""]


def _before_after_lines(
    values: Mapping[str, float], base_values: Mapping[str, float], sources: Sequence[str], baseline: Any
) -> list[str]:
    """Per metric and scope: the baseline's value, the tuned model's, and the change."""
    scopes = sources if len(sources) > 1 else []  # one source: its rows are the `all` rows
    rows = [[f"`{m}`", scope, *rest] for m, scope, *rest in before_after_rows(values, base_values, scopes)]
    lines = [
        "## Before → after",
        "",
        _baseline_title(baseline) + ". Same eval rows, prompts, decoding and metrics.",
        "",
    ]
    if not rows:
        return lines + ["No metric was computed for both.", ""]
    return lines + _table(["metric", "scope", "baseline", "tuned", "change"], rows, ["l", "l", "r", "r", "r"]) + [""]


def _sample_lines(
    ranked: Sequence[tuple[Sample, float | None]],
    verdict: Verdict | None,
    limit: int,
    prompt_chars: int,
    base: Mapping[tuple, Sample] | None = None,
) -> list[str]:
    lines: list[str] = []
    shown = ranked[:limit]
    if verdict is not None:
        lines += [
            f"Worst first by `{verdict.gate}` ({'failing' if not verdict.passed else 'first generation'} "
            f"gate), {len(shown)} of {len(ranked)} samples.",
            "",
        ]
    else:
        lines += [f"{len(shown)} of {len(ranked)} samples, in eval order.", ""]
    for n, (s, score) in enumerate(shown, 1):
        head = f"### {n}. `{s.source}` — {where(s.file, s.line, s.turn)}"
        if score is not None and verdict is not None:
            head += f" — {verdict.metric} {format_value(verdict.metric, score)}"
        head += f" — {s.tokens} tokens" + ("" if s.finished else " (cut at max_new_tokens)")
        prompt = s.prompt
        cut = ""
        if len(prompt) > prompt_chars:
            prompt, cut = "…" + prompt[-prompt_chars:], f" (its last {prompt_chars} characters)"
        lines += [
            head,
            "",
            f"Prompt{cut}:",
            "",
            _fence(prompt),
            "",
            "Reference:",
            "",
            _fence(s.reference),
            "",
            "Generated:",
            "",
            _fence(s.generated),
            "",
        ]
        other = (base or {}).get(s.key)
        if other is not None:
            lines += [
                f"Baseline ({other.tokens} tokens{'' if other.finished else ', cut at max_new_tokens'}):",
                "",
                _fence(other.generated),
                "",
            ]
    return lines


def _export_check_lines(check: Mapping[str, Any]) -> list[str]:
    """The export reloaded from disk against the run: per gate metric, and the logits."""
    verdict = "✓ pass" if check["passed"] else "✗ fail"
    gguf = check.get("gguf") or {}
    rule = (
        "identical answers (float32)"
        if check["exact"]
        else f"within tolerance ({gguf['quant']} GGUF)"
        if gguf
        else "within tolerance (16-bit weights)"
    )
    quantization = check.get("quantization") or {}
    against = " (against the adapters over the original base)" if quantization else ""
    lines = [
        "## Export check",
        "",
        f"{verdict}: {check['rows']} eval rows re-scored from the exported files, "
        f"{check['rows_differing']} answer(s) differ{against}; rule: {rule}. See docs/evaluation.md.",
        "",
    ]
    if quantization:
        lines += [
            f"The run trained over a {quantization['kind']} base; the export holds its adapters over the "
            f"original base: {quantization.get('rows_differing_from_run', 0)} answer(s) differ from the run's, "
            f"and the logits by up to {quantization['max_abs_diff']:.3g} ({quantization['share']:.0%} of the "
            f"largest; tolerance {quantization['tolerance']:.3g}).",
            "",
        ]
    if gguf:
        lines += [
            f"The GGUF file `{gguf['file']}`, read back with sftc's GGUF import: logits within "
            f"{gguf['share']:.2%} of the largest (tolerance {gguf['tolerance_share']:.0%} for {gguf['quant']}); "
            f"chat template: {gguf['chat_template']}, {gguf['prompts_rendered_differently']} eval prompt(s) "
            f"rendered and {gguf['prompts_tokenized_differently']} tokenized unlike training; it stops on ids "
            f"{gguf['stop_ids']} (the run on {gguf['run_stop_ids']}).",
            "",
        ]
    rows = [
        [
            f"`{key}`",
            format_value(key.split("(")[0], m["run"]),
            format_value(key.split("(")[0], m["export"]),
            f"{m['tolerance']:g}",
            "✓" if m["passed"] else "✗",
        ]
        for key, m in check["metrics"].items()
    ]
    logits = check["logits"]
    rows.append(
        [
            "max |Δ logit|",
            "",
            f"{logits['max_abs_diff']:.3g}",
            f"{logits['tolerance']:.3g}",
            "✓" if logits["max_abs_diff"] <= logits["tolerance"] else "✗",
        ]
    )
    return lines + _table(["metric", "run", "export", "tolerance", ""], rows, ["l", "r", "r", "r", "l"]) + [""]


def write_report(
    run_dir: str | Path,
    *,
    verdicts: Sequence[Verdict],
    values: Mapping[str, float],
    samples: Sequence[Sample] = (),
    facts: Mapping[str, Any] | None = None,
    data_stats: Mapping[str, Any] | Any | None = None,
    records: Sequence[Mapping[str, Any]] | None = None,
    sources: Sequence[str] | None = None,
    limit: int = 20,
    prompt_chars: int = 800,
    export_check: Mapping[str, Any] | None = None,
    baseline: Any = None,
    base_values: Mapping[str, float] | None = None,
    topics: Any = None,
    benchmarks: Any = None,
) -> tuple[Path, Path]:
    """Write `report.md`, `report.json` and `loss.png` into ``run_dir``; returns the two report paths.

    ``facts``: run facts shown at the top, in order (`name`, `steps`, `duration_s`,
    `spec_hash`, ...; keys ending in `_s` are shown as durations). ``records``:
    `metrics.jsonl` records for the loss curve (default: read from ``run_dir``).
    ``sources``: the per-source columns (default: every source named in ``values``
    or ``samples``). ``limit`` generations are shown in the markdown (all of them
    go to the JSON), prompts cut to their last ``prompt_chars`` characters.
    ``data_stats``: a `DataStats` or its ``to_dict()``. ``export_check``: an
    `ExportCheck.to_dict()`; when it did not pass, the run is reported rejected.
    ``baseline`` (a `runtime.evaluate.baseline.Baseline`) and its ``base_values`` add the
    before → after table and each row's baseline answer; in the JSON, ``baseline.samples``
    are in the order of ``samples``. ``topics`` (a `runtime.evaluate.topic_scores.TopicTable`)
    adds the eval results per topic of the data to "About the data", with its chart `topics.png`.
    ``benchmarks`` (the tuned model's `runtime.evaluate.benchmarks.BenchmarkResult`) adds "Standard
    benchmarks", beside the baseline's own scores where it has them.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    facts = dict(facts or {})
    if data_stats is not None and hasattr(data_stats, "to_dict"):  # a runtime.data.stats.DataStats
        data_stats = data_stats.to_dict()
    if sources is None:
        seen = [s.source for s in samples]
        tasks = set(benchmarks.scores) if benchmarks is not None else set()
        for key in values:
            if key.endswith(")") and "(" in key and not key.startswith("regex("):
                seen.append(key[key.index("(") + 1 : -1])
        sources = [s for s in dict.fromkeys(seen) if s not in tasks]
    base_benchmarks = baseline.benchmarks if baseline is not None else None
    chart = write_loss_chart(run_dir, records)
    ranked, by = rank_samples(samples, verdicts)
    ok = accepted(verdicts) and (export_check is None or bool(export_check["passed"]))
    name = facts.get("name", run_dir.name)

    md: list[str] = [f"# {name}: {'accepted' if ok else 'rejected'}", "", f"**{summary_line(verdicts)}**", ""]
    if export_check is not None and not export_check["passed"]:
        md += [f"**{export_check['message']}**", ""]
    if facts:
        md += _table(["run", ""], [[k, _fact(k, v)] for k, v in facts.items()]) + [""]
    md += ["## Gates", ""]
    if verdicts:
        rows = [
            [
                f"`{v.gate}`",
                format_value(v.metric, v.value),
                _threshold_text(v),
                ("✓ pass" if v.passed else "✗ fail") + (f": {v.reason}" if v.reason else ""),
            ]
            for v in verdicts
        ]
        md += _table(["gate", "value", "threshold", "verdict"], rows, ["l", "r", "r", "l"]) + [""]
    else:
        md += ["No `accept` gates: the run is accepted as is.", ""]
    if export_check is not None:
        md += _export_check_lines(export_check)
    if baseline is not None and base_values is not None:
        md += _before_after_lines(values, base_values, sources, baseline)
    if benchmarks is not None:
        md += _benchmark_lines(benchmarks, base_benchmarks)
    md += ["## Metrics", ""]
    metric_rows = _metric_rows(values, sources)
    if metric_rows:
        md += _table(["metric", "all", *sources], metric_rows, ["l", *("r" * (1 + len(sources)))]) + [""]
        md += [
            "`all`: every eval row for loss, perplexity and token accuracy; every generated sample for "
            "the generation metrics. A source column uses that source's rows only. See docs/evaluation.md.",
            "",
        ]
    else:
        md += ["No metrics were computed.", ""]
    md += ["## Loss", ""]
    md += [f"![loss curve]({chart.name})", ""] if chart is not None else ["No losses were logged.", ""]
    if data_stats:
        md += ["## Data", ""] + _data_lines(data_stats)
    topic_chart = None
    if topics is not None:
        from runtime.evaluate.topic_chart import write_topic_chart

        topic_chart = write_topic_chart(run_dir / "topics.png", topics)
    if (data_stats and data_stats.get("audit")) or topics is not None:
        md += _about_data_lines((data_stats or {}).get("audit"), topics, topic_chart)
    md += ["## Generations", ""]
    base = {b.key: b for b in baseline.samples} if baseline is not None else None
    md += (
        _sample_lines(ranked, by, limit, prompt_chars, base)
        if samples
        else ["No generations (eval.generate is off).", ""]
    )

    md_path = run_dir / "report.md"
    md_path.write_text("\n".join(md).rstrip() + "\n", encoding="utf-8")

    per_source: dict[str, dict[str, float]] = {}
    for scope in [None, *sources]:
        row = {
            m: values[metric_key(m, scope)]
            for m in TOKEN_METRICS + M.GENERATION_METRICS
            if metric_key(m, scope) in values
        }
        if row:
            per_source["all" if scope is None else scope] = row
    doc = {
        "name": name,
        "accepted": ok,
        "summary": summary_line(verdicts),
        "facts": facts,
        "gates": [v.to_dict() for v in verdicts],
        "metrics": dict(values),
        "per_source": per_source,
        "loss_curve": chart.name if chart is not None else None,
        "data": data_stats,
        "topics": {**topics.to_dict(), "chart": topic_chart.name if topic_chart else None} if topics else None,
        "export_check": export_check,
        "benchmarks": (
            {
                "tuned": benchmarks.to_dict(),
                "base": base_benchmarks.to_dict() if base_benchmarks is not None else None,
            }
            if benchmarks is not None
            else None
        ),
        "ranked_by": by.gate if by is not None else None,
        "samples": [{**s.to_dict(), "score": score} for s, score in ranked],
    }
    if baseline is not None:
        doc["baseline"] = {
            "kind": baseline.kind,
            "k": baseline.k,
            "cached": baseline.cached,
            "metrics": dict(base_values or {}),
            "samples": [base[s.key].to_dict() for s, _ in ranked if s.key in base],
        }
    json_path = run_dir / "report.json"
    json_path.write_text(json.dumps(_jsonable(doc), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return md_path, json_path


# ---------------------------------------------------------------- terminal


def gate_table(verdicts: Sequence[Verdict], title: str | None = None):
    """A rich Table: gate, value, threshold, verdict (green ✓ / red ✗ with the reason)."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    table.add_column("gate", style="bold")
    table.add_column("value", justify="right")
    table.add_column("threshold", justify="right")
    table.add_column("verdict")
    for v in verdicts:
        verdict = Text("✓ pass", style="bold green") if v.passed else Text("✗ fail", style="bold red")
        if v.reason:
            verdict.append(f"  {v.reason}", style="red")
        table.add_row(v.gate, format_value(v.metric, v.value), _threshold_text(v), verdict)
    return table


def print_before_after(
    values: Mapping[str, float],
    base_values: Mapping[str, float] | None,
    baseline: Any,
    console=None,
    benchmarks: Any = None,
) -> None:
    """The terminal's before → after table (every eval row's scope only; report.md has each source),
    then the standard benchmarks' table when the run scored any."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    rows = (
        [r for r in before_after_rows(values, base_values, []) if r[1] == "all"]
        if baseline is not None and base_values is not None
        else []
    )
    if rows:
        console.print(f"[bold]Before → after[/] ({_baseline_title(baseline)[len('Baseline: ') :]})")
        table = Table(show_edge=False, pad_edge=False)
        for name, justify in (("metric", "left"), ("baseline", "right"), ("tuned", "right"), ("change", "right")):
            table.add_column(name, justify=justify, style="bold" if name == "metric" else None)
        for metric, _, before, after, change in rows:
            table.add_row(metric, before, after, change)
        console.print(table)
    if benchmarks is not None:
        base = baseline.benchmarks if baseline is not None else None
        console.print("[bold]Standard benchmarks[/] (lm-evaluation-harness)")
        bench = Table(show_edge=False, pad_edge=False)
        for name in ("task", "metric", "base", "tuned", "change", "documents"):
            bench.add_column(name, justify="left" if name in ("task", "metric") else "right")
        for row in benchmark_rows(benchmarks, base):
            bench.add_row(*row)
        console.print(bench)


def print_gates(verdicts: Sequence[Verdict], console=None) -> None:
    """Print the gate table and the summary line (green when accepted, red when not)."""
    from rich.console import Console

    console = console or Console()
    if verdicts:
        console.print(gate_table(verdicts))
    console.print(summary_line(verdicts), style="bold green" if accepted(verdicts) else "bold red", highlight=False)
