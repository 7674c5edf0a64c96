"""The syntax tree of a `.sft` file: frozen dataclasses, each with its source span.

Spans never take part in equality, so two trees are equal when they say the same
thing however they are laid out (this is what `sftc fmt` round-trips against).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeAlias

from .source import Source, Span

_span = field(default=None, compare=False, repr=False)


# ---------------------------------------------------------------- values


@dataclass(frozen=True)
class Str:
    value: str
    raw: str = field(compare=False, repr=False, default="")  # exactly as written, quotes included
    span: Span | None = _span

    @property
    def triple(self) -> bool:
        return self.raw.startswith('"""')


@dataclass(frozen=True)
class Number:
    value: int | float
    text: str = field(compare=False, default="")
    span: Span | None = _span


@dataclass(frozen=True)
class Percent:
    value: float  # as a fraction: `5%` is 0.05
    text: str = field(compare=False, default="")
    span: Span | None = _span


@dataclass(frozen=True)
class Name:
    name: str
    span: Span | None = _span


@dataclass(frozen=True)
class Quantity:
    """`200 steps`, `0.5 epochs`, `16 GiB`."""

    amount: Number
    unit: Name
    span: Span | None = _span


@dataclass(frozen=True)
class Arg:
    """`name = value`, or a value alone. A quoted name (`Str`) names a column or a role in a
    free-form mapping (`rename = ("Question Text" = question)`); calls and records refuse it."""

    name: Name | Str | None
    value: Value
    span: Span | None = _span


@dataclass(frozen=True)
class Call:
    head: Name
    args: tuple[Arg, ...]
    span: Span | None = _span

    def kwarg(self, key: str) -> Arg | None:
        return next((a for a in self.args if isinstance(a.name, Name) and a.name.name == key), None)

    @property
    def positional(self) -> list[Value]:
        return [a.value for a in self.args if a.name is None]


@dataclass(frozen=True)
class Tuple:
    """`(data = auto, fsdp = 1)`."""

    args: tuple[Arg, ...]
    span: Span | None = _span


@dataclass(frozen=True)
class List:
    items: tuple[Value, ...]
    span: Span | None = _span


@dataclass(frozen=True)
class Init:
    """`init llama(layers = 4, ...)`: fresh weights of a named architecture."""

    call: Call
    span: Span | None = _span


@dataclass(frozen=True)
class TrainOn:
    """`train sentencepiece(vocab = 4096) on tickets`."""

    call: Call
    source: Name
    span: Span | None = _span


@dataclass(frozen=True)
class Every:
    """`every 200 steps keep 3`."""

    amount: Number
    unit: Name
    keep: Number | None
    span: Span | None = _span


@dataclass(frozen=True)
class Seeded:
    """`5% seed 7`."""

    value: Value
    seed: Number
    span: Span | None = _span


@dataclass(frozen=True)
class Weighted:
    """`tickets * 0.7`."""

    value: Value
    weight: Value
    span: Span | None = _span


@dataclass(frozen=True)
class Sum:
    """`tickets * 0.7 + faq * 0.3`."""

    terms: tuple[Value, ...]
    span: Span | None = _span


def text_of(node: Name | Str) -> str:
    """The text a name or a string stands for: a mapping's key, a column written either way."""
    return node.name if isinstance(node, Name) else node.value


Value: TypeAlias = (
    Str | Number | Percent | Name | Quantity | Call | Tuple | List | Init | TrainOn | Every | Seeded | Weighted | Sum
)


# ---------------------------------------------------------------- statements


@dataclass(frozen=True)
class Assign:
    """`key = value`, or with a label: `split eval = 5% seed 7`."""

    key: Name
    label: Name | None
    value: Value
    span: Span | None = _span


@dataclass(frozen=True)
class Gate:
    """`loss <= 1.2`, `bleu(faq) >= 20` inside `accept`."""

    metric: Name | Call
    op: str
    value: Value
    span: Span | None = _span


Entry: TypeAlias = Assign | Gate


@dataclass(frozen=True)
class Body:
    entries: tuple[Entry, ...]
    span: Span | None = _span


@dataclass(frozen=True)
class Header:
    name: Str
    span: Span | None = _span


@dataclass(frozen=True)
class Use:
    path: Str
    span: Span | None = _span


@dataclass(frozen=True)
class DataDecl:
    name: Name
    source: Value
    body: Body | None
    span: Span | None = _span


@dataclass(frozen=True)
class TemplateDecl:
    name: Name
    sources: tuple[Name, ...]
    body: Body
    span: Span | None = _span


@dataclass(frozen=True)
class Block:
    kind: Name
    body: Body
    span: Span | None = _span


Item: TypeAlias = Header | Use | DataDecl | TemplateDecl | Block


@dataclass(frozen=True)
class Comment:
    text: str  # with its leading `#`
    span: Span | None = _span


@dataclass(frozen=True)
class SpecFile:
    items: tuple[Item, ...]
    comments: tuple[Comment, ...] = field(default=(), compare=False)
    source: Source | None = field(default=None, compare=False, repr=False)


def children(node) -> list:
    """The direct child nodes of any tree node (for generic walks)."""
    out: list = []
    for name in getattr(node, "__dataclass_fields__", {}):
        if name in ("span", "source", "comments", "raw", "text"):
            continue
        value = getattr(node, name)
        if isinstance(value, tuple):
            out.extend(v for v in value if hasattr(v, "__dataclass_fields__"))
        elif hasattr(value, "__dataclass_fields__"):
            out.append(value)
    return out
