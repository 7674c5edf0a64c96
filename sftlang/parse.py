"""Text -> syntax tree, with every syntax error turned into a Diagnostic.

One LALR parser is built once (lazily) from grammar/sft.lark. After a syntax
error the offending line is blanked and parsing starts again, so one pass
reports every independent syntax error instead of only the first.
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources
from pathlib import Path

import lark
from lark import Token, Tree

from . import ast
from .diagnostics import Diagnostic
from .source import Source

MAX_SYNTAX_ERRORS = 20

_TOKEN_NAMES = {
    "NAME": "a name",
    "NUMBER": "a number",
    "PERCENT": "a percentage",
    "STRING": "a string",
    "LONG_STRING": "a string",
    "COMPARE": "a comparison (`<=`, `>=`)",
    "_NL": "a new line",
    "$END": "the end of the file",
    "LBRACE": "`{`",
    "RBRACE": "`}`",
    "LPAR": "`(`",
    "RPAR": "`)`",
    "LSQB": "`[`",
    "RSQB": "`]`",
    "EQUAL": "`=`",
    "COMMA": "`,`",
    "STAR": "`*`",
    "PLUS": "`+`",
}


def _describe(name: str) -> str:
    if name in _TOKEN_NAMES:
        return _TOKEN_NAMES[name]
    return f"`{name.lower()}`"


class _Layout:
    """Post-lexer: drops newlines inside ( ) and [ ], merges runs of newlines and
    remembers unclosed brackets so an early end of file can point at them."""

    always_accept = ("_NL",)
    _OPEN = {"LPAR": "RPAR", "LSQB": "RSQB", "LBRACE": "RBRACE"}

    def __init__(self):
        self.open: list[Token] = []

    def process(self, stream):
        self.open = []
        previous = None
        for token in stream:
            kind = token.type
            if kind in self._OPEN:
                self.open.append(token)
            elif kind in ("RPAR", "RSQB", "RBRACE") and self.open:
                self.open.pop()
            if kind == "_NL":
                inside_brackets = self.open and self.open[-1].type != "LBRACE"
                if inside_brackets or previous == "_NL":
                    continue
            previous = kind
            yield token


class _Comments:
    def __init__(self):
        self.tokens: list[Token] = []

    def __call__(self, token: Token) -> Token:
        self.tokens.append(token)
        return token


def grammar_text() -> str:
    """grammar/sft.lark: from the checkout when running from it, else the installed package data."""
    checkout = Path(__file__).resolve().parent.parent / "grammar" / "sft.lark"
    if checkout.is_file():
        return checkout.read_text(encoding="utf-8")
    return resources.files("sftlang.grammar").joinpath("sft.lark").read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def _parser() -> tuple[lark.Lark, _Layout, _Comments]:
    grammar = grammar_text()
    layout, comments = _Layout(), _Comments()
    parser = lark.Lark(
        grammar,
        parser="lalr",
        lexer="contextual",
        propagate_positions=True,
        maybe_placeholders=True,
        postlex=layout,
        lexer_callbacks={"COMMENT": comments},
    )
    return parser, layout, comments


# ---------------------------------------------------------------- strings

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}


def _unescape(body: str, span, problems: list[Diagnostic], offset: int) -> str:
    """Decode `\\n \\t \\" \\\\`; an unknown escape is a diagnostic at its column."""
    out, i = [], 0
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            if nxt in 'nt"\\r':
                out.append(_ESCAPES[nxt])
            else:
                problems.append(
                    Diagnostic(
                        "E003",
                        f"unknown escape `\\{nxt}` in string",
                        span.sub(offset + i, offset + i + 2),
                        'strings know `\\n`, `\\t`, `\\r`, `\\"` and `\\\\`; write `\\\\` for a backslash',
                    )
                )
                out.append(nxt)
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _dedent_long(body: str) -> str:
    """Triple-quoted text: drop the newline right after the opening quotes, the
    whitespace-only last line, and the indentation common to all non-blank lines."""
    if body.startswith("\r\n"):
        body = body[2:]
    elif body.startswith("\n"):
        body = body[1:]
    lines = body.split("\n")
    if len(lines) > 1 and not lines[-1].strip():
        lines[-1] = ""
    indents = [len(line) - len(line.lstrip(" \t")) for line in lines if line.strip()]
    cut = min(indents) if indents else 0
    text = "\n".join(line[cut:] for line in lines)
    return text


# ---------------------------------------------------------------- tree -> ast


def _token_span(source: Source, token: Token) -> ast.Span:
    """The span of a token the lexer made (lark types its positions Optional; the lexer sets them)."""
    assert token.start_pos is not None and token.end_pos is not None
    return source.span(token.start_pos, token.end_pos)


def _token(child: Token | Tree) -> Token:
    """A child the grammar makes a token (a NAME, a STRING)."""
    assert isinstance(child, Token), child
    return child


def _subtree(child: Token | Tree) -> Tree:
    """A child the grammar makes a rule's tree (each item of the file)."""
    assert isinstance(child, Tree), child
    return child


class _Builder:
    def __init__(self, source: Source):
        self.source = source
        self.problems: list[Diagnostic] = []

    def span_of(self, node) -> ast.Span:
        if isinstance(node, Token):
            return _token_span(self.source, node)
        return self.source.span(node.meta.start_pos, node.meta.end_pos)

    def name(self, token: Token) -> ast.Name:
        return ast.Name(str(token), self.span_of(token))

    def number(self, token: Token) -> ast.Number:
        text = str(token)
        is_int = re.fullmatch(r"-?\d+", text) is not None
        return ast.Number(int(text) if is_int else float(text), text, self.span_of(token))

    def string(self, token: Token) -> ast.Str:
        raw = str(token)
        span = self.span_of(token)
        if token.type == "LONG_STRING":
            # dedent the lines as written, then decode: an escaped `\n` or `\t` is text, not layout
            _unescape(raw[3:-3], span, self.problems, 3)  # diagnostics at their source columns
            value = _unescape(_dedent_long(raw[3:-3]), span, [], 3)
        else:
            value = _unescape(raw[1:-1], span, self.problems, 1)
        return ast.Str(value, raw, span)

    # -- values
    def value(self, node) -> ast.Value:
        if isinstance(node, Token):
            if node.type == "NAME":
                return self.name(node)
            if node.type == "NUMBER":
                return self.number(node)
            raise AssertionError(node.type)
        kind, kids, span = node.data, node.children, self.span_of(node)
        if kind == "string":
            return self.string(kids[0])
        if kind == "number":
            return self.number(kids[0])
        if kind == "percent":
            text = str(kids[0])
            return ast.Percent(float(text[:-1]) / 100, text, span)
        if kind == "name":
            return self.name(kids[0])
        if kind == "quantity":
            return ast.Quantity(self.number(kids[0]), self.name(kids[1]), span)
        if kind == "call":
            return self.call(node)
        if kind == "tuple":
            return ast.Tuple(self.args(kids), span)
        if kind == "list":
            return ast.List(tuple(self.value(k) for k in kids if k is not None), span)
        if kind == "init":
            return ast.Init(self.call(kids[0]), span)
        if kind == "train_on":
            return ast.TrainOn(self.call(kids[0]), self.name(kids[1]), span)
        if kind == "every":
            keep = self.number(kids[2]) if kids[2] is not None else None
            return ast.Every(self.number(kids[0]), self.name(kids[1]), keep, span)
        if kind == "seeded":
            return ast.Seeded(self.value(kids[0]), self.number(kids[1]), span)
        if kind == "weighted":
            return ast.Weighted(self.value(kids[0]), self.value(kids[1]), span)
        if kind == "weighted_sum":
            return ast.Sum(tuple(self.value(k) for k in kids), span)
        raise AssertionError(kind)

    def call(self, node: Tree) -> ast.Call:
        head, *rest = node.children
        return ast.Call(self.name(_token(head)), self.args(rest), self.span_of(node))

    def args(self, kids) -> tuple[ast.Arg, ...]:
        out = []
        for arg in kids:
            if arg is None:
                continue
            key, value = arg.children
            if key is not None:
                key = self.string(key) if key.type == "STRING" else self.name(key)
            out.append(ast.Arg(key, self.value(value), self.span_of(arg)))
        return tuple(out)

    # -- statements
    def body(self, node: Tree) -> ast.Body:
        return ast.Body(tuple(self.entry(e) for e in node.children), self.span_of(node))

    def entry(self, node: Tree) -> ast.Entry:
        if node.data == "assign":
            key, label, value = node.children
            return ast.Assign(
                self.name(_token(key)),
                self.name(_token(label)) if label is not None else None,
                self.value(value),
                self.span_of(node),
            )
        metric, op, value = node.children
        metric_node = self.name(metric) if isinstance(metric, Token) else self.call(metric)
        return ast.Gate(metric_node, str(op), self.value(value), self.span_of(node))

    def item(self, node: Tree) -> ast.Item:
        kids, span = node.children, self.span_of(node)
        if node.data == "header":
            text = kids[0].children[0] if isinstance(kids[0], Tree) else kids[0]
            return ast.Header(self.string(_token(text)), span)
        if node.data == "use":
            return ast.Use(self.string(_token(kids[0])), span)
        if node.data == "data_decl":
            name, source, body = kids
            return ast.DataDecl(
                self.name(_token(name)), self.value(source), self.body(body) if body is not None else None, span
            )
        if node.data == "template_decl":
            name, names, body = kids
            sources = tuple(self.name(_token(t)) for t in names.children)
            return ast.TemplateDecl(self.name(_token(name)), sources, self.body(body), span)
        if node.data == "block":
            kind, body = kids
            return ast.Block(self.name(_token(kind)), self.body(body), span)
        raise AssertionError(node.data)


# ---------------------------------------------------------------- errors


def _syntax_diagnostic(error: lark.exceptions.UnexpectedInput, source: Source, layout: _Layout) -> Diagnostic:
    if isinstance(error, lark.exceptions.UnexpectedCharacters):
        pos = error.pos_in_stream
        assert pos is not None  # the lexer's position, always set on UnexpectedCharacters
        ch = source.text[pos] if pos < len(source.text) else ""
        span = source.span(pos, pos + 1)
        if ch == '"':
            return Diagnostic(
                "E002",
                "unterminated string",
                source.span(pos, pos + len(source.line(span.line)) - span.column + 1),
                'close it with `"` on the same line, or use `"""` for text over several lines',
            )
        return Diagnostic("E002", f"unexpected character `{ch}`", span, None)
    # the parser's other two kinds of UnexpectedInput
    assert isinstance(error, (lark.exceptions.UnexpectedToken, lark.exceptions.UnexpectedEOF))
    token = error.token
    expected = sorted({_describe(t) for t in getattr(error, "expected", ()) or () if t != "$END"})
    if token.type == "$END" or isinstance(error, lark.exceptions.UnexpectedEOF):
        if layout.open:
            opener = layout.open[-1]
            closer = {"LBRACE": "}", "LPAR": ")", "LSQB": "]"}[opener.type]
            return Diagnostic(
                "E004",
                f"`{opener}` is never closed",
                _token_span(source, opener),
                f"add the matching `{closer}`",
            )
        end = len(source.text)
        return Diagnostic("E004", "unexpected end of file", source.span(end, end), None)
    start = token.start_pos
    assert start is not None  # a token the lexer made (not the end of input)
    span = source.span(start, token.end_pos if token.end_pos is not None else start + 1)
    found = "a new line" if token.type == "_NL" else f"`{token}`"
    if token.type == "_NL":
        span = source.span(start, start + 1)
    if token.type == "_NL" and layout.open and layout.open[-1].type != "LBRACE":
        opener = layout.open[-1]
        return Diagnostic("E004", f"`{opener}` is never closed", _token_span(source, opener), None)
    message = f"unexpected {found}"
    help_ = f"expected {' or '.join(expected)}" if 0 < len(expected) <= 6 else None
    if expected == ["`=`"]:
        help_ = "write `key = value`"
    return Diagnostic("E001", message, span, help_)


def _blank_line(text: str, offset: int) -> str:
    start = text.rfind("\n", 0, offset) + 1
    end = text.find("\n", offset)
    end = len(text) if end == -1 else end
    return text[:start] + re.sub(r"[^\s]", " ", text[start:end]) + text[end:]


def parse(text: str, name: str = "<spec>") -> tuple[ast.SpecFile | None, list[Diagnostic]]:
    """Parse a spec. Returns the tree (None when the syntax is broken) and diagnostics."""
    source = Source(name, text)
    parser, layout, comments = _parser()
    problems: list[Diagnostic] = []
    attempt = text
    for _ in range(MAX_SYNTAX_ERRORS):
        comments.tokens = []
        try:
            tree = parser.parse(attempt)
        except lark.exceptions.UnexpectedInput as error:
            diagnostic = _syntax_diagnostic(error, source, layout)
            problems.append(diagnostic)
            if diagnostic.code == "E004" or diagnostic.span is None:
                break
            blanked = _blank_line(attempt, diagnostic.span.start)
            if blanked == attempt:
                break
            attempt = blanked
            continue
        if problems:
            return None, problems
        builder = _Builder(source)
        items = tuple(builder.item(_subtree(node)) for node in tree.children)
        found = tuple(ast.Comment(str(t), _token_span(source, t)) for t in comments.tokens)
        return ast.SpecFile(items, found, source), builder.problems
    return None, problems
