"""Source text and spans: where every node and diagnostic points to."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property


@dataclass(frozen=True, eq=False)
class Source:
    """One spec file's text. `name` is the path as the user should see it."""

    name: str
    text: str

    @cached_property
    def lines(self) -> list[str]:
        return self.text.split("\n")

    def line(self, number: int) -> str:
        """The 1-based line `number`, without its newline ('' past the end)."""
        if 1 <= number <= len(self.lines):
            return self.lines[number - 1].rstrip("\r")
        return ""

    def position(self, offset: int) -> tuple[int, int]:
        """1-based (line, column) of a character offset."""
        offset = max(0, min(offset, len(self.text)))
        line = self.text.count("\n", 0, offset) + 1
        start = self.text.rfind("\n", 0, offset) + 1
        return line, offset - start + 1

    def span(self, start: int, end: int) -> Span:
        line, column = self.position(start)
        end_line, end_column = self.position(end)
        return Span(self, start, end, line, column, end_line, end_column)


@dataclass(frozen=True)
class Span:
    """A half-open character range [start, end) of a source, with 1-based line/column."""

    source: Source = field(repr=False, compare=False)
    start: int
    end: int
    line: int
    column: int
    end_line: int
    end_column: int

    @property
    def file(self) -> str:
        return self.source.name

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"

    def sub(self, start: int, end: int) -> Span:
        """A span for characters [start, end) counted from this span's start."""
        return self.source.span(self.start + start, self.start + end)
