"""Checks of one file on its own: known blocks and keys, no duplicates, typed values,
well-formed gates. Whole-spec checks (references, arithmetic) live in check.py."""

from __future__ import annotations

from . import ast, schema
from .diagnostics import Diagnostic, did_you_mean, join_help, one_of
from .source import Span
from .types import Report

_TOP_WORDS = tuple(schema.BLOCKS) + schema.DECLARATIONS


def _line(span: Span | None) -> int:
    """The line of a node read from a file (the parser gives every node its span)."""
    assert span is not None
    return span.line


def validate_file(tree: ast.SpecFile, report: Report) -> None:
    seen_blocks: dict[str, ast.Block] = {}
    seen_data: dict[str, ast.DataDecl] = {}
    seen_templates: dict[str, ast.TemplateDecl] = {}
    for index, item in enumerate(tree.items):
        if isinstance(item, ast.Header):
            if index != 0:
                report(
                    Diagnostic(
                        "E016", 'the `sft "name"` header must come first', item.span, "move it to the top of the file"
                    )
                )
            if not item.name.value.strip():
                report(Diagnostic("E022", "the spec's name must not be empty", item.name.span))
        elif isinstance(item, ast.Use):
            if not item.path.value.strip():
                report(Diagnostic("E022", "`use` needs a file path", item.path.span))
        elif isinstance(item, ast.Block):
            kind = item.kind.name
            if kind not in schema.BLOCKS:
                report(
                    Diagnostic(
                        "E010",
                        f"unknown block `{kind}`",
                        item.kind.span,
                        join_help(did_you_mean(kind, _TOP_WORDS), f"(blocks: {', '.join(schema.BLOCKS)})"),
                    )
                )
                continue
            if kind in seen_blocks:
                first = _line(seen_blocks[kind].kind.span)
                report(
                    Diagnostic(
                        "E013",
                        f"block `{kind}` appears twice",
                        item.kind.span,
                        f"merge it into the first one at line {first}",
                    )
                )
                continue
            seen_blocks[kind] = item
            if kind == "accept":
                _validate_gates(item.body, report)
            else:
                _validate_body(item.body, schema.keys_of(kind), f"`{kind}`", report)
        elif isinstance(item, ast.DataDecl):
            name = item.name.name
            if name in seen_data:
                report(
                    Diagnostic(
                        "E013",
                        f"data source `{name}` is declared twice",
                        item.name.span,
                        f"first declared at line {_line(seen_data[name].name.span)}",
                    )
                )
                continue
            seen_data[name] = item
            schema.SOURCES.check(item.source, report, f"data `{name}`")
            if item.body is not None:
                _validate_body(item.body, {k.name: k for k in schema.DATA_KEYS}, f"data `{name}`", report)
        elif isinstance(item, ast.TemplateDecl):
            name = item.name.name
            if name in seen_templates:
                report(
                    Diagnostic(
                        "E013",
                        f"template `{name}` is declared twice",
                        item.name.span,
                        f"first declared at line {_line(seen_templates[name].name.span)}",
                    )
                )
                continue
            seen_templates[name] = item
            listed: set[str] = set()
            for source in item.sources:
                if source.name in listed:
                    report(Diagnostic("E013", f"`{source.name}` is listed twice", source.span))
                listed.add(source.name)
            _validate_body(item.body, {k.name: k for k in schema.TEMPLATE_KEYS}, f"template `{name}`", report)


def _validate_body(body: ast.Body, keys: dict[str, schema.Key], where: str, report: Report) -> None:
    seen: dict[str, ast.Assign] = {}
    for entry in body.entries:
        if isinstance(entry, ast.Gate):
            report(
                Diagnostic(
                    "E017",
                    f"a comparison cannot appear in {where}",
                    entry.span,
                    "gates like `loss <= 1.2` belong in the `accept` block",
                )
            )
            continue
        name = entry.key.name
        key = keys.get(name)
        if key is None:
            report(
                Diagnostic(
                    "E011",
                    f"unknown key `{name}` in {where}",
                    entry.key.span,
                    join_help(did_you_mean(name, keys), f"({where} takes {', '.join(keys)})"),
                )
            )
            continue
        if key.label is None and entry.label is not None:
            report(Diagnostic("E017", f"`{name}` takes no label", entry.label.span, f"write `{name} = ...`"))
            continue
        if key.label is not None and (entry.label is None or entry.label.name != key.label):
            span = entry.label.span if entry.label is not None else entry.key.span
            report(
                Diagnostic("E017", f"`{name}` needs the label `{key.label}`", span, f"write `{name} {key.label} = ...`")
            )
            continue
        if name in seen:
            report(
                Diagnostic(
                    "E013",
                    f"`{name}` is set twice in {where}",
                    entry.key.span,
                    f"first set at line {_line(seen[name].key.span)}",
                )
            )
            continue
        seen[name] = entry
        key.type.check(entry.value, report, f"`{name}`")


def gate_key(gate: ast.Gate) -> tuple[str, str]:
    """Identity of a gate for overriding and duplicate detection: metric text and bound side."""
    side = "upper" if gate.op in ("<=", "<") else "lower" if gate.op in (">=", ">") else "equal"
    return metric_text(gate.metric), side


def metric_text(metric: ast.Name | ast.Call) -> str:
    """`loss`, `bleu(faq)`, `regex("^a", faq)`, `gain(bleu(faq))`: how a metric is named in tables and diffs."""
    if isinstance(metric, ast.Name):
        return metric.name

    def arg(value) -> str:
        if isinstance(value, ast.Str):
            return value.raw
        if isinstance(value, ast.Call):
            return metric_text(value)
        return getattr(value, "name", "?")

    return f"{metric.head.name}({', '.join(arg(a.value) for a in metric.args)})"


def unwrap_gain(metric: ast.Name | ast.Call) -> tuple[ast.Name | ast.Call, bool]:
    """`gain(bleu(faq))` -> (`bleu(faq)`, True); any other metric -> (itself, False).
    Assumes a validated gate (`gain` holds exactly one metric)."""
    if isinstance(metric, ast.Call) and metric.head.name == schema.GAIN and len(metric.args) == 1:
        inner = metric.args[0].value
        if isinstance(inner, (ast.Name, ast.Call)):
            return inner, True
    return metric, False


def metric_parts(metric: ast.Name | ast.Call) -> tuple[str, ast.Name | None, ast.Str | None]:
    """(metric name, source or None, regex pattern or None) of a gate's left side (inside `gain(...)`)."""
    metric, _ = unwrap_gain(metric)
    if isinstance(metric, ast.Name):
        return metric.name, None, None
    args = [a.value for a in metric.args]
    pattern = args[0] if args and isinstance(args[0], ast.Str) else None
    if pattern is not None:
        args.pop(0)
    source = args[0] if args and isinstance(args[0], ast.Name) else None
    return metric.head.name, source, pattern


def _validate_gates(body: ast.Body, report: Report) -> None:
    seen: dict[tuple[str, str], ast.Gate] = {}
    for entry in body.entries:
        if isinstance(entry, ast.Assign):
            report(
                Diagnostic(
                    "E017",
                    f"`accept` holds gates, not settings: `{entry.key.name} = ...`",
                    entry.span,
                    "write a comparison such as `loss <= 1.2`",
                )
            )
            continue
        metric_node = entry.metric
        gain = isinstance(metric_node, ast.Call) and metric_node.head.name == schema.GAIN
        if gain and isinstance(metric_node, ast.Call):
            inner = _gain_inner(metric_node, report)
            if inner is None:
                continue
            metric_node = inner
        name_node = metric_node if isinstance(metric_node, ast.Name) else metric_node.head
        metric = schema.METRICS.get(name_node.name)
        if metric is None:
            report(
                Diagnostic(
                    "E032",
                    f"unknown metric `{name_node.name}`",
                    name_node.span,
                    join_help(did_you_mean(name_node.name, schema.METRICS), f"(metrics: {', '.join(schema.METRICS)})"),
                )
            )
            continue
        if not _validate_metric_args(metric, metric_node, report):
            continue
        if gain and not metric.gains:
            why = (
                "it is read from expert reviews; gate `review_wins` instead"
                if metric.review
                else "it counts the data, not the model's answers"
                if metric.data
                else "neither a higher nor a lower value is better"
            )
            report(
                Diagnostic(
                    "E065",
                    f"`gain({metric.name})` is not defined: {why}",
                    name_node.span,
                    f"gate `{metric.name}` itself" if not metric.review else None,
                )
            )
            continue
        _validate_threshold(metric, entry, report, gain)
        key = gate_key(entry)
        if key in seen:
            report(
                Diagnostic(
                    "E064",
                    f"`{key[0]}` has two {key[1]} bounds",
                    entry.span,
                    f"keep one; the other is at line {_line(seen[key].span)}",
                )
            )
            continue
        seen[key] = entry


def _validate_metric_args(metric: schema.Metric, node: ast.Name | ast.Call, report: Report) -> bool:
    if isinstance(node, ast.Name):
        if metric.benchmark:
            report(
                Diagnostic(
                    "E014",
                    f"`{metric.name}` is a metric of a benchmark task: name the task",
                    node.span,
                    f"write `{metric.name}(arc_easy)` with a task of `eval.benchmarks = lm_eval(tasks = [...])`",
                )
            )
            return False
        if metric.pattern:
            report(
                Diagnostic("E014", f"`{metric.name}` needs a pattern", node.span, f'write `{metric.name}("^\\\\{{")`')
            )
            return False
        return True
    args = list(node.args)
    usage = (
        f'`{metric.name}("pattern"[, source])`'
        if metric.pattern
        else f"`{metric.name}(task)`"
        if metric.benchmark
        else f"`{metric.name}(source)`"
    )
    if any(a.name is not None for a in args):
        report(Diagnostic("E012", f"`{metric.name}` takes no named arguments", args[0].span, f"write {usage}"))
        return False
    if metric.pattern:
        if not args or not isinstance(args[0].value, ast.Str):
            report(Diagnostic("E020", f"`{metric.name}` needs a pattern string first", node.span, f"write {usage}"))
            return False
        import re

        try:
            re.compile(args[0].value.value)
        except re.error as error:
            report(Diagnostic("E022", f"invalid regular expression: {error}", args[0].value.span))
            return False
        args = args[1:]
    if len(args) > 1 or (args and not isinstance(args[0].value, ast.Name)):
        report(Diagnostic("E020", f"expected {usage}", node.span))
        return False
    return True


def _gain_inner(node: ast.Call, report: Report) -> ast.Name | ast.Call | None:
    """The metric inside `gain(...)`, or None (reported) when it is not exactly one metric."""
    args = node.args
    if len(args) != 1 or args[0].name is not None or not isinstance(args[0].value, (ast.Name, ast.Call)):
        report(Diagnostic("E020", "`gain` takes one metric", node.span, "write `gain(rouge_l)` or `gain(bleu(faq))`"))
        return None
    inner = args[0].value
    if isinstance(inner, ast.Call) and inner.head.name == schema.GAIN:
        report(Diagnostic("E020", "`gain` of a gain is not a metric", inner.span, "write `gain(rouge_l)`"))
        return None
    return inner


def _validate_threshold(metric: schema.Metric, gate: ast.Gate, report: Report, gain: bool = False) -> None:
    value = gate.value
    if gate.op not in schema.COMPARATORS and not (metric.data and gate.op in schema.DATA_COMPARATORS):
        report(Diagnostic("E020", f"a gate compares with {one_of(schema.COMPARATORS)}, not `{gate.op}`", gate.span))
        return
    if isinstance(value, ast.Percent):
        if metric.high != 1:
            report(Diagnostic("E020", f"`{metric.name}` is not a share; write a plain number", value.span))
            return
    elif not isinstance(value, ast.Number):
        report(Diagnostic("E020", f"expected a number as the threshold of `{metric.name}`", value.span))
        return
    threshold = value.value
    if gain:
        span = metric.high - metric.low
        if abs(threshold) > span:
            report(
                Diagnostic(
                    "E063",
                    f"a gain of {value.text} in `{metric.name}` can never be reached",
                    value.span,
                    f"`{metric.name}` lies in [{_num(metric.low)}, {_num(metric.high)}], "
                    f"so a gain lies within ±{_num(span)}",
                )
            )
        return
    if threshold < metric.low or threshold > metric.high:
        hint = f"`{metric.name}` lies in [{_num(metric.low)}, {_num(metric.high)}]"
        if metric.high == 1 and 1 < threshold <= 100:
            hint += f"; did you mean {_num(threshold / 100)} (or {value.text}%)?"
        report(Diagnostic("E063", f"threshold {value.text} of `{metric.name}` can never be reached", value.span, hint))


def _num(x: float) -> str:
    return "inf" if x == float("inf") else (str(int(x)) if float(x).is_integer() else repr(x))
