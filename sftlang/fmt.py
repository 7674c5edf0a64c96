"""`sftc fmt`: the one canonical layout of a spec, like `terraform fmt`.

The layout is decided by the syntax tree, not by the text: values are printed
on one line from their nodes (`format_value`, also what `sftc diff` shows), so
odd spacing and line breaks inside calls and lists disappear. What the tree
does not hold is taken from the source: comments (`SpecFile.comments`, with
spans) and where the author left blank lines.

    model{        # note              model {  # note
    base=hf("m")  # local      ->         base    = hf("m")  # local
      dtype = bfloat16                    dtype   = bfloat16
    adapter=lora(rank=16,                 # rank 16 is plenty
       # rank 16 is plenty                adapter = lora(rank = 16, alpha = 32)
       alpha=32)                      }
    }

Rules:
- top-level items in source order, one blank line between them; consecutive
  `use` lines stay together, and `sft "x"` keeps or drops the blank line
  before a following `use` as written;
- blocks are `name {`, entries indented four spaces, `}`; an empty body is
  `name {}`; a data declaration without body is one line;
- within a run of single-line entries not broken by a blank line, the `=`
  signs (and the comparison operators of `accept`) line up;
- between entries, one blank line where the source had one or more; none
  after `{` or before `}`;
- comments keep their place: own-line comments stay before what follows them,
  a trailing comment stays on its line two spaces after the code (the trailing
  comments of consecutive entries line up), a comment on
  a block's opening line stays there, comments before `}` stay at the end of
  the block, a comment inside a value spread over several lines moves to just
  before its entry. None is dropped and their order never changes;
- triple-quoted strings are printed exactly as written (their indentation is
  part of their value), every other line loses trailing whitespace, and the
  file ends with one newline.

`parse(format_spec(tree))` equals `tree` (spans aside), and formatting is
idempotent; tests/sftlang/test_fmt.py checks both on generated specs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal

from . import ast
from .diagnostics import Diagnostic
from .parse import parse
from .source import Span

INDENT = "    "


# ---------------------------------------------------------------- values


def format_value(node) -> str:
    """The canonical one-line text of a value node (or of an `Arg`, `Assign`, `Gate`).

    Numbers, percentages and strings keep the exact text they were written with;
    nodes built by code (empty `.text` / `.raw`) get a canonical rendering of their
    value. Triple-quoted strings are returned as written, newlines included.

    >>> format_value(ast.Call(ast.Name("lora"), (ast.Arg(ast.Name("rank"), ast.Number(16)),)))
    'lora(rank = 16)'
    """
    if isinstance(node, ast.Str):
        return node.raw or _quote(node.value)
    if isinstance(node, ast.Number):
        return node.text or _number_text(node.value)
    if isinstance(node, ast.Percent):
        return node.text or _percent_text(node.value)
    if isinstance(node, ast.Name):
        return node.name
    if isinstance(node, ast.Quantity):
        return f"{format_value(node.amount)} {node.unit.name}"
    if isinstance(node, ast.Call):
        return f"{node.head.name}({_args(node.args)})"
    if isinstance(node, ast.Tuple):
        return f"({_args(node.args)})"
    if isinstance(node, ast.List):
        return "[" + ", ".join(format_value(v) for v in node.items) + "]"
    if isinstance(node, ast.Init):
        return f"init {format_value(node.call)}"
    if isinstance(node, ast.TrainOn):
        return f"train {format_value(node.call)} on {node.source.name}"
    if isinstance(node, ast.Every):
        text = f"every {format_value(node.amount)} {node.unit.name}"
        return text + (f" keep {format_value(node.keep)}" if node.keep is not None else "")
    if isinstance(node, ast.Seeded):
        return f"{format_value(node.value)} seed {format_value(node.seed)}"
    if isinstance(node, ast.Weighted):
        return f"{format_value(node.value)} * {format_value(node.weight)}"
    if isinstance(node, ast.Sum):
        return " + ".join(format_value(t) for t in node.terms)
    if isinstance(node, ast.Arg):
        return (
            format_value(node.value) if node.name is None else f"{format_value(node.name)} = {format_value(node.value)}"
        )
    if isinstance(node, (ast.Assign, ast.Gate)):
        left, op, right = _entry_parts(node)
        return f"{left} {op} {right}"
    raise TypeError(f"format_value: not a value node: {type(node).__name__}")


def _args(args) -> str:
    return ", ".join(format_value(a) for a in args)


_QUOTE_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _quote(value: str) -> str:
    return '"' + "".join(_QUOTE_ESCAPES.get(ch, ch) for ch in value) + '"'


def _number_text(value) -> str:
    """Shortest text that reads back as the same number: `16`, `0.05`, `2e-5`."""
    if isinstance(value, bool):
        raise TypeError("format_value: a boolean is a name (`on`/`off`/`true`/`false`), not a Number")
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        raise ValueError(f"format_value: {value!r} has no .sft spelling")
    text = repr(float(value))
    if "e" in text:
        mantissa, exponent = text.split("e")
        if mantissa.endswith(".0"):
            mantissa = mantissa[:-2]
        text = f"{mantissa}e{int(exponent)}"
    return text


def _percent_text(fraction: float) -> str:
    """`0.05` -> `5%`: the fewest significant digits whose value / 100 reads back as `fraction`."""
    if not math.isfinite(fraction):
        raise ValueError(f"format_value: {fraction!r} has no .sft spelling")
    scaled = fraction * 100
    for digits in range(17):
        text = format(Decimal(f"{scaled:.{digits}e}"), "f")
        if float(text) / 100 == fraction:
            break
    else:  # no decimal text reads back exactly (`1/3`): the nearest short one
        text = format(Decimal(repr(scaled)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return ("0" if text == "-0" else text) + "%"


def _entry_parts(entry) -> tuple[str, str, str]:
    """(left side, operator, value) of an entry, for alignment."""
    if isinstance(entry, ast.Assign):
        left = entry.key.name + (f" {entry.label.name}" if entry.label is not None else "")
        return left, "=", format_value(entry.value)
    return format_value(entry.metric), entry.op, format_value(entry.value)


# ---------------------------------------------------------------- layout

_BLANK = ("blank",)


@dataclass
class _Line:
    """An entry line inside a body, before alignment."""

    left: str
    op: str
    right: str
    trailing: str | None

    @property
    def multiline(self) -> bool:
        return "\n" in self.left or "\n" in self.right


def _at(comment: ast.Comment) -> Span:
    """Where a comment the formatter places stands (it places only comments with a span)."""
    assert comment.span is not None
    return comment.span


class _Formatter:
    """Walks the items in order, handing out each comment exactly once."""

    def __init__(self, tree: ast.SpecFile):
        self.source = tree.source
        self.text = tree.source.text if tree.source is not None else None
        placed: list[ast.Comment] = []
        unplaced: list[ast.Comment] = []
        for comment in tree.comments:
            (placed if self._span(comment) is not None else unplaced).append(comment)
        self.comments = sorted(placed, key=lambda c: _at(c).start)
        self.unplaced = unplaced  # comments of a tree built by code: they go at the end
        self.next = 0
        self.out: list[str] = []

    # -- positions (None for nodes built by code or taken from another file)
    def _span(self, node):
        span = getattr(node, "span", None)
        if span is None or self.source is None or span.source is not self.source:
            return None
        return span

    def _take_before(self, offset: int | None) -> list[ast.Comment]:
        """Every comment not handed out yet that starts before `offset`."""
        if offset is None:
            return []
        taken = []
        while self.next < len(self.comments) and _at(self.comments[self.next]).start < offset:
            taken.append(self.comments[self.next])
            self.next += 1
        return taken

    def _take_trailing(self, line: int, end: int, limit: int | None = None) -> ast.Comment | None:
        """The comment after code ending at `end` on `line` (and before `limit`), if any."""
        if self.next >= len(self.comments):
            return None
        comment = self.comments[self.next]
        span = _at(comment)
        if span.line == line and span.start >= end and (limit is None or span.start < limit):
            self.next += 1
            return comment
        return None

    def _blank_between(self, start: int | None, end: int | None) -> bool:
        if self.text is None or start is None or end is None:
            return False
        return self.text.count("\n", start, end) >= 2

    def _gap(self, after: int | None, comments: list[ast.Comment], before: int | None) -> list:
        """Own-line comments between two things, with a blank marker wherever the
        source had at least one blank line."""
        seq: list[tuple[str, ...]] = []
        last = after
        for comment in comments:
            if self._blank_between(last, _at(comment).start):
                seq.append(_BLANK)
            seq.append(("comment", _comment_text(comment)))
            last = _at(comment).end
        if self._blank_between(last, before):
            seq.append(_BLANK)
        return seq

    # -- emitting
    def _emit(self, indent: str, seq: list) -> None:
        for element in seq:
            if element is _BLANK:
                self.out.append("")
            else:
                self.out.append(indent + element[1])

    def run(self, tree: ast.SpecFile) -> str:
        previous, after = None, None
        for item in tree.items:
            span = self._span(item)
            start = span.start if span else None
            gap = self._gap(after, self._take_before(start), start)
            if previous is None:
                gap = _strip(gap, leading=True)
            elif isinstance(item, ast.Use) and isinstance(previous, ast.Use):
                gap = [e for e in gap if e is not _BLANK]
            elif not (isinstance(item, ast.Use) and isinstance(previous, ast.Header)):
                if not gap or gap[0] is not _BLANK:
                    gap = [_BLANK] + gap
            self._emit("", gap)
            after = self._item(item)
            previous = item
        rest = self.comments[self.next :]
        self.next = len(self.comments)
        tail = self._gap(after, rest, None)
        tail = _strip(tail, leading=not tree.items, trailing=True)
        self._emit("", tail)
        self.out.extend(_comment_text(c) for c in self.unplaced)
        if not self.out:
            return ""
        return "\n".join(self.out) + "\n"

    def _item(self, item) -> int | None:
        """Emits one top-level item; returns the offset where it (or its trailing comment) ends."""
        span = self._span(item)
        if isinstance(item, ast.Header):
            return self._single(f"sft {format_value(item.name)}", span)
        if isinstance(item, ast.Use):
            return self._single(f"use {format_value(item.path)}", span)
        if isinstance(item, ast.DataDecl):
            head = f"data {item.name.name} = {format_value(item.source)}"
            if item.body is None:
                self._emit("", self._hoisted(span.end if span else None))
                return self._single(head, span)
            return self._block(head, item.body)
        if isinstance(item, ast.TemplateDecl):
            head = f"template {item.name.name} for " + ", ".join(n.name for n in item.sources)
            return self._block(head, item.body)
        if isinstance(item, ast.Block):
            return self._block(item.kind.name, item.body)
        raise TypeError(f"format_spec: not an item: {type(item).__name__}")

    def _hoisted(self, end: int | None) -> list:
        """Comments inside a value spread over lines: they move before its line."""
        return [("comment", _comment_text(c)) for c in self._take_before(end)]

    def _single(self, code: str, span) -> int | None:
        if span is None:
            self.out.append(code)
            return None
        trailing = self._take_trailing(span.end_line, span.end)
        self.out.append(code + (f"  {_comment_text(trailing)}" if trailing else ""))
        return _at(trailing).end if trailing else span.end

    def _block(self, head: str, body: ast.Body) -> int | None:
        span = self._span(body)
        open_at = span.start if span else None
        close_at = span.end - 1 if span else None  # the `}`
        self._emit("", self._hoisted(open_at))  # comments inside a data source spread over lines

        first = self._span(body.entries[0]) if body.entries else None
        opening = None
        if span is not None:
            opening = self._take_trailing(span.line, span.start + 1, first.start if first else close_at)

        elements: list = []
        after = _at(opening).end if opening else (span.start + 1 if span else None)
        for index, entry in enumerate(body.entries):
            entry_span = self._span(entry)
            start = entry_span.start if entry_span else None
            gap = self._gap(after, self._take_before(start), start)
            if index == 0:
                gap = _strip(gap, leading=True)
            elements.extend(gap)
            elements.extend(self._hoisted(entry_span.end if entry_span else None))
            trailing = None
            if entry_span is not None:
                trailing = self._take_trailing(entry_span.end_line, entry_span.end, close_at)
            elements.append(_Line(*_entry_parts(entry), _comment_text(trailing) if trailing else None))
            after = _at(trailing).end if trailing else (entry_span.end if entry_span else None)
        closing_gap = self._gap(after, self._take_before(close_at), close_at)
        elements.extend(_strip(closing_gap, leading=not body.entries, trailing=True))

        closing = self._take_trailing(span.end_line, span.end) if span else None
        close_text = "}" + (f"  {_comment_text(closing)}" if closing else "")
        if not elements and opening is None:
            self.out.append(f"{head} {{{close_text}")  # `name {}`
        else:
            self.out.append(f"{head} {{" + (f"  {_comment_text(opening)}" if opening else ""))
            self.out.extend(_render_body(elements))
            self.out.append(close_text)
        if span is None:
            return None
        return _at(closing).end if closing else span.end


def _render_body(elements: list) -> list[str]:
    """Entry lines with `=` (and gate operators) aligned within each run of
    single-line entries; a blank line or a multi-line entry ends a run."""
    widths: dict[int, int] = {}
    run: list[int] = []

    def close_run():
        width = max((len(elements[i].left) for i in run), default=0)
        for i in run:
            widths[i] = width
        run.clear()

    for i, element in enumerate(elements):
        if element is _BLANK:
            close_run()
        elif isinstance(element, _Line):
            if element.multiline:
                close_run()
                widths[i] = len(element.left)
            else:
                run.append(i)
    close_run()

    code = {
        i: f"{INDENT}{e.left.ljust(widths[i])} {e.op} {e.right}" for i, e in enumerate(elements) if isinstance(e, _Line)
    }
    # Trailing comments of consecutive single-line entries line up (gofmt style);
    # any other line ends the group.
    comment_at: dict[int, int] = {}
    group: list[int] = []
    for i, element in enumerate(elements + [_BLANK]):
        if isinstance(element, _Line) and element.trailing and not element.multiline:
            group.append(i)
            continue
        column = max((len(code[j]) for j in group), default=0)
        comment_at.update({j: column for j in group})
        group = []
    lines = []
    for i, element in enumerate(elements):
        if element is _BLANK:
            lines.append("")
        elif isinstance(element, _Line):
            text = code[i]
            if element.trailing:
                text = text.ljust(comment_at.get(i, len(text))) + f"  {element.trailing}"
            lines.append(text)
        else:
            lines.append(INDENT + element[1])
    return lines


def _strip(seq: list, leading: bool = False, trailing: bool = False) -> list:
    seq = list(seq)
    while leading and seq and seq[0] is _BLANK:
        seq.pop(0)
    while trailing and seq and seq[-1] is _BLANK:
        seq.pop()
    return seq


def _comment_text(comment: ast.Comment) -> str:
    return comment.text.rstrip()


# ---------------------------------------------------------------- entry points


def format_spec(tree: ast.SpecFile) -> str:
    """The canonical text of a parsed spec (comments and blank lines taken from
    `tree.source`). A tree built by code formats too, without blank lines."""
    return _Formatter(tree).run(tree)


def format_text(text: str, name: str = "<spec>") -> tuple[str | None, list[Diagnostic]]:
    """Parse and format; None (with the syntax diagnostics) when `text` does not parse."""
    tree, diagnostics = parse(text, name)
    if tree is None:
        return None, diagnostics
    return format_spec(tree), diagnostics
