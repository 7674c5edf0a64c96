"""One diagnostic type for syntax and semantic errors, and its three renderings.

Human output follows rustc/Terraform: `error[E012]: message`, `--> file:line:col`,
the source line with a caret under the offending token, then `= help: ...`.
`--format json` mirrors `terraform validate -json`; `--format github` prints
workflow annotation lines.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .source import Span


@dataclass(frozen=True)
class Diagnostic:
    code: str  # E0xx error, W0xx warning
    message: str
    span: Span | None = None
    help: str | None = None
    note: str | None = None  # a fact behind the message (`= note:`), before the help

    @property
    def severity(self) -> str:
        return "error" if self.code.startswith("E") else "warning"

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def sort_key(self):
        if self.span is None:
            return ("", 0, 0, self.code)
        return (self.span.file, self.span.line, self.span.column, self.code)


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """`did you mean `x`?` for the closest choice, or None when nothing is close."""
    choices = list(choices)
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if not close:
        lowered = {c.lower(): c for c in choices}
        close = [lowered[word.lower()]] if word.lower() in lowered else []
    return f"did you mean `{close[0]}`?" if close else None


def one_of(choices: Iterable[str]) -> str:
    names = [f"`{c}`" for c in choices]
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " or " + names[-1]


def join_help(*parts: str | None) -> str | None:
    text = "  ".join(p for p in parts if p)
    return text or None


# ---------------------------------------------------------------- rendering


def _snippet(span: Span) -> tuple[str, int, int]:
    """The span's first line with tabs expanded, and the caret's start and width."""
    raw = span.source.line(span.line)
    before = raw[: span.column - 1].expandtabs(4)
    if span.end_line == span.line:
        inside = raw[span.column - 1 : span.end_column - 1]
    else:
        inside = raw[span.column - 1 :]
    inside = inside.expandtabs(4)
    return raw.expandtabs(4), len(before), max(1, len(inside.rstrip()) or 1)


def render_plain(d: Diagnostic) -> str:
    return "\n".join(text for text, _ in _human_lines(d))


def _human_lines(d: Diagnostic) -> list[tuple[str, str]]:
    """(text, style) lines of the human rendering; style names are rich styles."""
    colour = "bold red" if d.is_error else "bold yellow"
    lines = [(f"{d.severity}[{d.code}]: {d.message}", colour)]
    if d.span is not None:
        number = str(d.span.line)
        pad = " " * len(number)
        code, start, width = _snippet(d.span)
        lines += [
            (f"{pad}--> {d.span}", "blue"),
            (f"{pad} |", "blue"),
            (f"{number} | {code}", ""),
            (f"{pad} | {' ' * start}{'^' * width}", colour),
        ]
    pad = " " * (len(str(d.span.line)) if d.span else 0)
    if d.note:
        lines.append((f"{pad} = note: {d.note}", "cyan"))
    if d.help:
        lines.append((f"{pad} = help: {d.help}", "cyan"))
    return lines


def summary_line(diagnostics: Sequence[Diagnostic]) -> str:
    errors = sum(d.is_error for d in diagnostics)
    warnings = len(diagnostics) - errors
    parts = []
    if errors:
        parts.append(f"{errors} error{'s' * (errors != 1)}")
    if warnings:
        parts.append(f"{warnings} warning{'s' * (warnings != 1)}")
    return ", ".join(parts) if parts else "no problems"


def print_human(diagnostics: Sequence[Diagnostic], console) -> None:
    """Print to a rich Console (colour when it is a terminal)."""
    from rich.text import Text

    for d in diagnostics:
        for text, style in _human_lines(d):
            console.print(Text(text, style=style), soft_wrap=True)
        console.print()


def _position(span: Span, end: bool) -> dict:
    if end:
        return {"line": span.end_line, "column": span.end_column, "byte": span.end}
    return {"line": span.line, "column": span.column, "byte": span.start}


def to_json(d: Diagnostic) -> dict:
    out: dict[str, Any] = {"severity": d.severity, "code": d.code, "summary": d.message, "detail": d.help or ""}
    if d.note:
        out["note"] = d.note
    if d.span is not None:
        out["range"] = {
            "filename": d.span.file,
            "start": _position(d.span, end=False),
            "end": _position(d.span, end=True),
        }
        out["snippet"] = {"code": d.span.source.line(d.span.line), "start_line": d.span.line}
    return out


def render_json(diagnostics: Sequence[Diagnostic], files: Sequence[str]) -> str:
    errors = sum(d.is_error for d in diagnostics)
    return json.dumps(
        {
            "format_version": "1.0",
            "valid": errors == 0,
            "files": list(files),
            "error_count": errors,
            "warning_count": len(diagnostics) - errors,
            "diagnostics": [to_json(d) for d in diagnostics],
        },
        indent=2,
    )


def _escape_github(text: str, property_value: bool = False) -> str:
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    if property_value:
        text = text.replace(":", "%3A").replace(",", "%2C")
    return text


def render_github(d: Diagnostic) -> str:
    level = "error" if d.is_error else "warning"
    props = [f"title={_escape_github(d.code, True)}"]
    if d.span is not None:
        props = [
            f"file={_escape_github(d.span.file, True)}",
            f"line={d.span.line}",
            f"col={d.span.column}",
            f"endLine={d.span.end_line}",
            f"endColumn={d.span.end_column}",
        ] + props
    message = d.message + (f" (note: {d.note})" if d.note else "") + (f" (help: {d.help})" if d.help else "")
    return f"::{level} {','.join(props)}::{_escape_github(message)}"


# ---------------------------------------------------------------- the catalogue

CODES: dict[str, str] = {
    "E001": "syntax error: a token where it cannot stand",
    "E002": "unterminated string, stray character or a file that is not UTF-8",
    "E003": "unknown escape in a string",
    "E004": "a bracket or brace that is never closed",
    "E010": "unknown block",
    "E011": "unknown key",
    "E012": "unknown argument of a call",
    "E013": "something given twice (key, block, declaration, argument, list item)",
    "E014": "something required is missing",
    "E015": "unknown value, call or source kind",
    "E016": "the `sft` header is not first",
    "E017": "a label, gate or setting in the wrong place",
    "E020": "wrong type",
    "E021": "unknown unit",
    "E022": "value out of range",
    "E024": "settings of the model that contradict each other",
    "E030": "unknown data source",
    "E032": "unknown metric",
    "E033": "a spec or `use` file that does not exist",
    "E034": "`use` files that include each other",
    "E035": "a data or tokenizer file that is missing or empty",
    "E036": "a model directory or GGUF file that is missing, or a directory that is not a Hugging Face checkpoint",
    "E037": "a GGUF base that is not a GGUF file or holds an architecture sftc does not support",
    "E040": "a placeholder or column that the source does not have",
    "E041": "a malformed placeholder",
    "E042": "an incomplete or mixed template",
    "E043": "a source with two templates",
    "E044": "a source with neither a template nor conventional columns",
    "E045": "a source's `system` on rows no chat template renders (plain prompt/completion or Alpaca, text, token ids)",
    "E046": "a data file that cannot be read as its kind",
    "E047": "a trained tokenizer's vocabulary smaller than its text's characters need",
    "E051": "mixture weights that are not positive or not given for every source",
    "E052": "`batch` not a multiple of `micro`",
    "E053": "a batch that does not split over the data-parallel devices",
    "E054": "warmup or decay not shorter than training",
    "E055": "a mesh that does not fit the devices",
    "E056": "both `epochs` and `steps`",
    "E057": "a schedule whose `min_lr` is above the optimizer's `lr`",
    "E060": "a generation metric without `eval.generate`",
    "E061": "a metric with no eval rows to compute it on",
    "E062": "gates that contradict each other",
    "E063": "a threshold outside the metric's range",
    "E064": "two gates on the same bound of a metric",
    "E065": "`gain` of a metric that has no better direction, or of a review metric",
    "E066": (
        "a comparison with a baseline that does not exist (scratch model, `baseline = off`, "
        "or a metric the baseline lacks)"
    ),
    "E070": "an export format the model cannot produce",
    "E071": "a sampled row of a data file that the run would stop at as a bad row",
    "E072": "a quantized base (`quantize`) without a LoRA adapter to train over it",
    "E073": "a tracker or benchmark suite whose Python package is not installed (the message names the extra)",
    "E074": "credentials written into a tracker's `uri` (they belong in the environment)",
    "E075": "a benchmark metric whose task is not in `eval.benchmarks`, or a task named like a data source",
    "E076": "a metric that a benchmark task does not report",
    "E077": "`export = gguf` with a unigram SentencePiece tokenizer, which llama.cpp would tokenize differently",
    "W001": "a check skipped because the hub is offline or unreachable",
    "W004": "a data source declared but not trained on",
    "W005": "an interval longer than the whole run",
    "W006": "a sampled row of a data file that the run will skip as a bad row (`on_bad_row = skip`)",
    "W007": "a `where` filter that keeps none of the sampled rows",
    "W008": "a benchmark task found neither in the `include` folder nor among lm_eval's own",
}
