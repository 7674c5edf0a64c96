"""`{column}` / `{a.b}` placeholders of a template string, with exact spans.

Scanning the raw source text keeps columns exact: escapes such as `\\n` never
contain braces, so an offset in the raw token is an offset in the file.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import ast
from .diagnostics import Diagnostic
from .source import Span


@dataclass(frozen=True)
class Placeholder:
    path: str  # `question` or `meta.lang`
    span: Span


def _span(node: ast.Str) -> Span:
    """The span of a string read from a file (only those hold placeholders to check)."""
    assert node.span is not None, node
    return node.span


def placeholders(node: ast.Str) -> tuple[list[Placeholder], list[Diagnostic]]:
    raw = node.raw or f'"{node.value}"'
    quote = 3 if raw.startswith('"""') else 1
    found: list[Placeholder] = []
    problems: list[Diagnostic] = []
    i, end = quote, len(raw) - quote
    while i < end:
        ch = raw[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{" and raw[i + 1 : i + 2] == "{":
            i += 2
            continue
        if ch == "}" and raw[i + 1 : i + 2] == "}":
            i += 2
            continue
        if ch == "}":
            problems.append(
                Diagnostic(
                    "E041", "`}` without a matching `{`", _span(node).sub(i, i + 1), "write `}}` for a literal brace"
                )
            )
            i += 1
            continue
        if ch == "{":
            close = raw.find("}", i + 1, end)
            newline = raw.find("\n", i + 1, end)
            if close == -1 or (newline != -1 and newline < close) or "{" in raw[i + 1 : close]:
                problems.append(
                    Diagnostic(
                        "E041", "`{` is never closed", _span(node).sub(i, i + 1), "write `{{` for a literal brace"
                    )
                )
                i += 1
                continue
            path = raw[i + 1 : close].strip()
            span = _span(node).sub(i, close + 1)
            if not path or any(not part.strip() for part in path.split(".")):
                problems.append(
                    Diagnostic(
                        "E041",
                        f"empty placeholder `{raw[i : close + 1]}`",
                        span,
                        "write `{column}`, or `{{` for a literal brace",
                    )
                )
            else:
                found.append(Placeholder(path, span))
            i = close + 1
            continue
        i += 1
    return found, problems
