"""Value types of the language: what a key accepts, how to say what it accepts, and
the check of one value node against it.

A type's `check(node, report)` reports diagnostics through `report` and returns
nothing; `describe()` is the phrase used in "expected ..." messages and in the
language reference. Types are plain frozen data so the schema reads as a table.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from . import ast
from .diagnostics import Diagnostic, did_you_mean, join_help, one_of

Report = Callable[[Diagnostic], None]

UNITS = {
    "steps": "steps",
    "step": "steps",
    "epochs": "epochs",
    "epoch": "epochs",
    "tokens": "tokens",
    "KiB": "KiB",
    "MiB": "MiB",
    "GiB": "GiB",
    "TiB": "TiB",
    "KB": "KB",
    "MB": "MB",
    "GB": "GB",
}
BYTE_UNITS = {"KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40, "KB": 10**3, "MB": 10**6, "GB": 10**9}
BOOLEANS = {"on": True, "true": True, "off": False, "false": False}

_KIND_NAMES = {
    ast.Str: "a string",
    ast.Number: "a number",
    ast.Percent: "a percentage",
    ast.Name: "a name",
    ast.Quantity: "a quantity",
    ast.Call: "a call",
    ast.Tuple: "a tuple",
    ast.List: "a list",
    ast.Init: "an `init` model",
    ast.TrainOn: "a `train ... on` tokenizer",
    ast.Every: "an `every` schedule",
    ast.Seeded: "a seeded value",
    ast.Weighted: "a weighted source",
    ast.Sum: "a sum",
}


def found(node) -> str:
    if isinstance(node, ast.Name):
        return f"`{node.name}`"
    if isinstance(node, ast.Call):
        return f"a call to `{node.head.name}`"
    return _KIND_NAMES.get(type(node), "a value")


def mismatch(node, type_: Type, report: Report, where: str = "") -> None:
    place = f" for {where}" if where else ""
    report(Diagnostic("E020", f"expected {type_.describe()}{place}, found {found(node)}", node.span))


def unit_of(name: ast.Name) -> str | None:
    return UNITS.get(name.name)


class Type:
    def describe(self) -> str:
        raise NotImplementedError

    def accepts(self, node) -> bool:
        """Shape test used by OneOf to pick the alternative that should report."""
        raise NotImplementedError

    def check(self, node, report: Report, where: str = "") -> None:
        raise NotImplementedError


@dataclass(frozen=True)
class Str(Type):
    non_empty: bool = False
    doc: str = "a string"
    blank_ok: bool = False  # whitespace counts as content (a tab delimiter)

    def describe(self):
        return self.doc

    def accepts(self, node):
        return isinstance(node, ast.Str)

    def check(self, node, report, where=""):
        if not isinstance(node, ast.Str):
            return mismatch(node, self, report, where)
        if self.non_empty and not (node.value if self.blank_ok else node.value.strip()):
            report(Diagnostic("E022", f"{where or 'this string'} must not be empty", node.span))


@dataclass(frozen=True)
class Num(Type):
    """A number in [low, high]; `integer` refuses fractions; `open_low` excludes low."""

    low: float = -math.inf
    high: float = math.inf
    integer: bool = False
    open_low: bool = False
    open_high: bool = False

    def describe(self):
        kind = "an integer" if self.integer else "a number"
        return kind + self._range()

    def _range(self) -> str:
        if self.low == -math.inf and self.high == math.inf:
            return ""
        if self.high == math.inf:
            return f" {'>' if self.open_low else '>='} {_fmt(self.low)}"
        if self.low == -math.inf:
            return f" {'<' if self.open_high else '<='} {_fmt(self.high)}"
        left = "(" if self.open_low else "["
        right = ")" if self.open_high else "]"
        return f" in {left}{_fmt(self.low)}, {_fmt(self.high)}{right}"

    def accepts(self, node):
        return isinstance(node, ast.Number)

    def check(self, node, report, where=""):
        if not isinstance(node, ast.Number):
            return mismatch(node, self, report, where)
        self.check_value(node.value, node, report, where)

    def check_value(self, value, node, report, where=""):
        if self.integer and not isinstance(value, int):
            report(Diagnostic("E020", f"expected an integer for {where}, found `{node.text or value}`", node.span))
            return
        too_low = value < self.low or (self.open_low and value == self.low)
        too_high = value > self.high or (self.open_high and value == self.high)
        if too_low or too_high:
            report(
                Diagnostic(
                    "E022",
                    f"{where or 'value'} = {node.text or value} is out of range",
                    node.span,
                    f"{where or 'it'} must be {self.describe()}",
                )
            )


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


@dataclass(frozen=True)
class Share(Type):
    """A percentage, or a plain fraction in [0, 1] when `fraction_ok`."""

    low: float = 0.0
    high: float = 1.0
    open_low: bool = False
    open_high: bool = False
    fraction_ok: bool = False

    def describe(self):
        return "a percentage" + (" or a fraction" if self.fraction_ok else "")

    def accepts(self, node):
        return isinstance(node, ast.Percent) or (self.fraction_ok and isinstance(node, ast.Number))

    def check(self, node, report, where=""):
        if not self.accepts(node):
            return mismatch(node, self, report, where)
        value = node.value
        bad = (
            value < self.low
            or value > self.high
            or (self.open_low and value == self.low)
            or (self.open_high and value == self.high)
        )
        if bad:
            left = "more than" if self.open_low else "at least"
            right = "less than" if self.open_high else "at most"
            report(
                Diagnostic(
                    "E022",
                    f"{where or 'share'} = {node.text} is out of range",
                    node.span,
                    f"it must be {left} {_fmt(self.low * 100)}% and {right} {_fmt(self.high * 100)}%",
                )
            )


@dataclass(frozen=True)
class Enum(Type):
    choices: tuple[str, ...]

    def describe(self):
        return one_of(self.choices)

    def accepts(self, node):
        return isinstance(node, ast.Name) and node.name in self.choices

    def check(self, node, report, where=""):
        if not isinstance(node, ast.Name):
            return mismatch(node, self, report, where)
        if node.name not in self.choices:
            report(
                Diagnostic(
                    "E015",
                    f"unknown value `{node.name}` for {where or 'this setting'}",
                    node.span,
                    join_help(did_you_mean(node.name, self.choices), f"(expected {self.describe()})"),
                )
            )


@dataclass(frozen=True)
class Bool(Enum):
    choices: tuple[str, ...] = ("on", "off", "true", "false")

    def describe(self):
        return "`on` or `off`"


@dataclass(frozen=True)
class Quantity(Type):
    """`200 steps`, `0.5 epochs`, `5 GiB`: a positive amount with one of `units`."""

    units: tuple[str, ...]
    integer_units: tuple[str, ...] = ("steps", "tokens")

    def describe(self):
        return "a count like " + " or ".join(f"`N {u}`" for u in self.units)

    def accepts(self, node):
        return isinstance(node, ast.Quantity)

    def check(self, node, report, where=""):
        if not isinstance(node, ast.Quantity):
            return mismatch(node, self, report, where)
        unit = unit_of(node.unit)
        if unit not in self.units:
            known = sorted(set(self.units) | {u for u, canon in UNITS.items() if canon in self.units})
            report(
                Diagnostic(
                    "E021",
                    f"unknown unit `{node.unit.name}` for {where or 'this count'}",
                    node.unit.span,
                    join_help(did_you_mean(node.unit.name, known), f"(expected {one_of(self.units)})"),
                )
            )
            return
        Num(low=0, open_low=True, integer=unit in self.integer_units).check(node.amount, report, where)


@dataclass(frozen=True)
class ListOf(Type):
    item: Type
    non_empty: bool = True

    def describe(self):
        return f"a list of {self.item.describe()}"

    def accepts(self, node):
        return isinstance(node, ast.List)

    def check(self, node, report, where=""):
        if not isinstance(node, ast.List):
            return mismatch(node, self, report, where)
        if self.non_empty and not node.items:
            report(Diagnostic("E022", f"{where or 'this list'} must not be empty", node.span))
        seen = set()
        for item in node.items:
            self.item.check(item, report, where)
            key = item.head.name if isinstance(item, ast.Call) else getattr(item, "name", None)
            if key is not None and key in seen:
                report(Diagnostic("E013", f"`{key}` is listed twice", item.span))
            seen.add(key)


@dataclass(frozen=True)
class Param:
    """One argument of a call. `default` is source text (parsed once), None means absent
    unless `required`; `default_from` names another argument whose value it copies."""

    name: str
    type: Type
    default: str | None = None
    required: bool = False
    doc: str = ""
    default_from: str | None = None


@dataclass(frozen=True)
class Signature:
    params: tuple[Param, ...]
    positional: int = 0  # how many leading params may be given without a name
    doc: str = ""

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]


def check_args(head: str, args, signature: Signature, report: Report, what: str, span) -> None:
    """Arguments of a call or tuple against a signature: unknown, duplicate, missing, typed."""
    given: dict[str, ast.Arg] = {}
    for index, arg in enumerate(args):
        if arg.name is None:
            if index >= signature.positional or any(a.name is not None for a in args[:index]):
                hint = f"write it as `name = value` ({head} takes {', '.join(signature.names)})"
                report(Diagnostic("E020", f"unexpected positional argument to {what}", arg.span, hint))
                continue
            param = signature.params[index]
        elif isinstance(arg.name, ast.Str):
            report(
                Diagnostic(
                    "E020",
                    f"argument names of {what} are written without quotes",
                    arg.name.span,
                    f"write `{arg.name.value} = ...`",
                )
            )
            continue
        else:
            named = signature.param(arg.name.name)
            if named is None:
                report(
                    Diagnostic(
                        "E012",
                        f"unknown argument `{arg.name.name}` for {what}",
                        arg.name.span,
                        join_help(
                            did_you_mean(arg.name.name, signature.names),
                            f"({head} takes {', '.join(signature.names) or 'no arguments'})",
                        ),
                    )
                )
                continue
            param = named
        if param.name in given:
            report(Diagnostic("E013", f"argument `{param.name}` is given twice", (arg.name or arg).span))
            continue
        given[param.name] = arg
        param.type.check(arg.value, report, f"`{param.name}`")
    for param in signature.params:
        if param.required and param.name not in given:
            report(
                Diagnostic(
                    "E014",
                    f"{what} needs the argument `{param.name}`",
                    span,
                    f"add `{param.name} = ...`" + (f" ({param.doc})" if param.doc else ""),
                )
            )


@dataclass(frozen=True)
class Calls(Type):
    """A call to one of several named variants: `adamw(lr = 1e-4)`, `hf("dir")`."""

    variants: dict[str, Signature] = field(hash=False)
    what: str = "call"  # "optimizer", "schedule", ... for messages

    def describe(self):
        article = "an" if self.what[:1] in "aeiou" else "a"
        return f"{article} {self.what} ({one_of(v + '(...)' for v in self.variants)})"

    def accepts(self, node):
        return isinstance(node, ast.Call) and node.head.name in self.variants

    def check(self, node, report, where=""):
        if isinstance(node, ast.Name) and node.name in self.variants:
            return  # `cosine` alone means `cosine()`
        if not isinstance(node, ast.Call):
            return mismatch(node, self, report, where)
        head = node.head.name
        if head not in self.variants:
            report(
                Diagnostic(
                    "E015",
                    f"unknown {self.what} `{head}`",
                    node.head.span,
                    join_help(did_you_mean(head, self.variants), f"(known: {', '.join(self.variants)})"),
                )
            )
            return
        check_args(head, node.args, self.variants[head], report, f"{self.what} `{head}`", node.span)


@dataclass(frozen=True)
class InitModel(Type):
    """`init llama(...)`."""

    calls: Calls

    def describe(self):
        return "`init " + "(...)` or `init ".join(self.calls.variants) + "(...)`"

    def accepts(self, node):
        return isinstance(node, ast.Init)

    def check(self, node, report, where=""):
        if not isinstance(node, ast.Init):
            return mismatch(node, self, report, where)
        self.calls.check(node.call, report, where)


@dataclass(frozen=True)
class TrainTokenizer(Type):
    """`train sentencepiece(vocab = 4096) on tickets`."""

    calls: Calls

    def describe(self):
        return "`train sentencepiece(...) on SOURCE`"

    def accepts(self, node):
        return isinstance(node, ast.TrainOn)

    def check(self, node, report, where=""):
        if not isinstance(node, ast.TrainOn):
            return mismatch(node, self, report, where)
        self.calls.check(node.call, report, where)


@dataclass(frozen=True)
class Record(Type):
    """A tuple of named fields: `(data = auto, fsdp = 1, tensor = 1)`."""

    signature: Signature

    def describe(self):
        return "a tuple (" + ", ".join(f"{p.name} = ..." for p in self.signature.params) + ")"

    def accepts(self, node):
        return isinstance(node, ast.Tuple)

    def check(self, node, report, where=""):
        if not isinstance(node, ast.Tuple):
            return mismatch(node, self, report, where)
        check_args("it", node.args, self.signature, report, where or "this tuple", node.span)


@dataclass(frozen=True)
class Every(Type):
    """`every 200 steps keep 3`."""

    units: tuple[str, ...] = ("steps", "epochs")

    def describe(self):
        return "`every N steps keep K`"

    def accepts(self, node):
        return isinstance(node, ast.Every)

    def check(self, node, report, where=""):
        if not isinstance(node, ast.Every):
            return mismatch(node, self, report, where)
        Quantity(self.units).check(ast.Quantity(node.amount, node.unit, node.span), report, where)
        if node.keep is not None:
            Num(low=1, integer=True).check(node.keep, report, "`keep`")


@dataclass(frozen=True)
class Seeded(Type):
    """`5% seed 7`: a value with an optional seed."""

    inner: Type

    def describe(self):
        return f"{self.inner.describe()} (optionally `seed N`)"

    def accepts(self, node):
        return self.inner.accepts(node.value if isinstance(node, ast.Seeded) else node)

    def check(self, node, report, where=""):
        if isinstance(node, ast.Seeded):
            self.inner.check(node.value, report, where)
            Num(low=0, integer=True).check(node.seed, report, "`seed`")
        else:
            self.inner.check(node, report, where)


@dataclass(frozen=True)
class Mixture(Type):
    """`tickets`, `tickets + faq`, or `tickets * 0.7 + faq * 0.3`."""

    def describe(self):
        return "data sources, optionally weighted (`a * 0.7 + b * 0.3`)"

    def accepts(self, node):
        return isinstance(node, (ast.Name, ast.Sum, ast.Weighted))

    def check(self, node, report, where=""):
        terms = node.terms if isinstance(node, ast.Sum) else (node,)
        weighted = [isinstance(t, ast.Weighted) for t in terms]
        for term in terms:
            source = term.value if isinstance(term, ast.Weighted) else term
            if not isinstance(source, ast.Name):
                report(Diagnostic("E020", f"expected a data source name, found {found(source)}", source.span))
            if isinstance(term, ast.Weighted):
                weight = term.weight
                if not isinstance(weight, (ast.Number, ast.Percent)):
                    report(Diagnostic("E020", f"expected a weight (a number), found {found(weight)}", weight.span))
                elif weight.value <= 0:
                    report(
                        Diagnostic(
                            "E051",
                            f"weight {weight.text} of `{getattr(source, 'name', '?')}` must be positive",
                            weight.span,
                            "leave a source out of `train.data` to not train on it",
                        )
                    )
        if any(weighted) and not all(weighted):
            plain = next(t for t, w in zip(terms, weighted) if not w)
            report(
                Diagnostic(
                    "E051",
                    "either every source of a mixture has a weight or none has",
                    plain.span,
                    f"write `{getattr(plain, 'name', 'source')} * WEIGHT`",
                )
            )


@dataclass(frozen=True)
class OneOf(Type):
    """The first alternative whose shape fits reports; none fits: one clear mismatch."""

    options: tuple[Type, ...]

    def describe(self):
        return " or ".join(o.describe() for o in self.options)

    def accepts(self, node):
        return any(o.accepts(node) for o in self.options)

    def check(self, node, report, where=""):
        for option in self.options:
            if option.accepts(node):
                return option.check(node, report, where)
        # no shape fits: let a same-kind option explain (unknown enum value, unknown call head)
        for option in self.options:
            if isinstance(option, Enum) and not isinstance(option, Bool) and isinstance(node, ast.Name):
                names = [n for o in self.options if isinstance(o, Enum) for n in o.choices]
                names += [n for o in self.options if isinstance(o, Calls) for n in o.variants]
                return Enum(tuple(dict.fromkeys(names))).check(node, report, where)
            if isinstance(option, Calls) and isinstance(node, ast.Call):
                return option.check(node, report, where)
        mismatch(node, self, report, where)


@dataclass(frozen=True)
class Column(Type):
    """A column name of the template's sources (checked against the real columns)."""

    def describe(self):
        return "a column name"

    def accepts(self, node):
        return isinstance(node, ast.Name)

    def check(self, node, report, where=""):
        if not isinstance(node, ast.Name):
            mismatch(node, self, report, where)


@dataclass(frozen=True)
class NameOrString(Type):
    """A column or message key: a plain name, or a string for any other text (`"Question Text"`)."""

    def describe(self):
        return "a name or a string"

    def accepts(self, node):
        return isinstance(node, (ast.Name, ast.Str))

    def check(self, node, report, where=""):
        if not self.accepts(node):
            return mismatch(node, self, report, where)
        if isinstance(node, ast.Str) and not node.value.strip():
            report(
                Diagnostic("E022", f"{where or 'this name'} must not be empty", node.span, "write a column or key name")
            )


def _literal(node) -> tuple[str, object] | None:
    """A literal's comparable value (kind, value), or None when `node` is not one."""
    if isinstance(node, ast.Str):
        return ("str", node.value)
    if isinstance(node, ast.Number):
        return ("number", node.value)
    if isinstance(node, ast.Name) and node.name in BOOLEANS:
        return ("bool", BOOLEANS[node.name])
    return None


def _shown(node) -> str:
    if isinstance(node, ast.Str):
        return node.raw or f'"{node.value}"'
    if isinstance(node, ast.Number):
        return node.text or str(node.value)
    return node.name


@dataclass(frozen=True)
class Literal(Type):
    """A value a data row may hold, as the run compares it: a string, a number, `on`/`off`;
    with `lists`, also a non-empty list of them (a row matches any one)."""

    lists: bool = False

    def describe(self):
        return "a string, a number, `on` or `off`" + (", or a list of them" if self.lists else "")

    def accepts(self, node):
        return _literal(node) is not None or (self.lists and isinstance(node, ast.List))

    def check(self, node, report, where=""):
        if not (self.lists and isinstance(node, ast.List)):
            if _literal(node) is None:
                mismatch(node, self, report, where)
            return
        if not node.items:
            report(
                Diagnostic("E022", f"{where or 'this list'} must not be empty", node.span, "list one value at least")
            )
        seen = set()
        for item in node.items:
            value = _literal(item)
            if value is None:
                mismatch(item, Literal(), report, where)
            elif value in seen:
                report(Diagnostic("E013", f"`{_shown(item)}` is listed twice", item.span, "list each value once"))
            seen.add(value)


@dataclass(frozen=True)
class Mapping(Type):
    """A tuple whose names the user chooses (`rename = (dialog = conversations)`): every entry
    named (a name, or a string for any other text), no name twice, each value a `value`."""

    value: Type
    key_doc: str = "NAME"  # what a name stands for, in messages: "COLUMN", "ROLE"

    def describe(self):
        return f"a tuple ({self.key_doc} = {self.value.describe()}, ...)"

    def accepts(self, node):
        return isinstance(node, ast.Tuple)

    def check(self, node, report, where=""):
        if not isinstance(node, ast.Tuple):
            return mismatch(node, self, report, where)
        if not node.args:
            report(
                Diagnostic(
                    "E022",
                    f"{where or 'this tuple'} must not be empty",
                    node.span,
                    f"write `({self.key_doc} = ...)`, or leave the key out",
                )
            )
        seen: dict[str, ast.Arg] = {}
        for arg in node.args:
            if arg.name is None:
                report(
                    Diagnostic(
                        "E020",
                        f"every entry of {where or 'this tuple'} needs a name",
                        arg.span,
                        f"write `{self.key_doc} = ...`",
                    )
                )
                continue
            key = ast.text_of(arg.name)
            if not key.strip():
                report(
                    Diagnostic(
                        "E022",
                        f"a name in {where or 'this tuple'} must not be empty",
                        arg.name.span,
                        f"write a {self.key_doc.lower()} name",
                    )
                )
                continue
            if key in seen:
                report(
                    Diagnostic(
                        "E013",
                        f"`{key}` is given twice in {where or 'this tuple'}",
                        arg.name.span,
                        f"first given at line {first.line}" if (first := seen[key].span) else None,
                    )
                )
                continue
            seen[key] = arg
            self.value.check(arg.value, report, f"`{key}` in {where}" if where else f"`{key}`")
