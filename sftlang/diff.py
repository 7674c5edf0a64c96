"""`sftc diff`: what differs between two resolved specs, as plain data.

Both specs are flattened into ordered `path -> value` entries and compared by
AST equality, so layout, key order, `2e-5` vs `0.00002` and an omitted default
vs the default written out are all "no change":

    name                         "support-bot"
    model.base                   hf                 a call: its head, then each argument
    model.base.path              "models/SmolLM2-135M"
    train.optimizer              adamw
    train.optimizer.lr           2e-5
    train.mesh.data              auto               a tuple: each field
    data.tickets                 jsonl("data/tickets.jsonl")    a source: the whole call
    data.tickets.split           5% seed 7
    template.answer              for tickets, faq
    template.answer.prompt       "### Question:\\n{question}\\n..."
    accept.loss <=               1.2                a gate: keyed by metric and bound side
    output.dir                   "runs/{name}"

A data source or template only on one side is one change (its settings carried
along), not one per key. Changed template text carries a line diff. With
fingerprints (`sftlang.fingerprint`), a source whose files hold different bytes
is a `data` change with its row counts. Rendering lives in `render_human` /
`to_json`; `diff_specs` reads nothing.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from typing import Any

from . import ast, schema
from .fingerprint import Fingerprint, row_delta
from .fmt import format_value
from .resolve import Spec
from .validate import gate_key, metric_text

TEXT_KEYS = ("prompt", "completion")  # template strings shown as a line diff


@dataclass(frozen=True)
class Rows:
    old: int | None
    new: int | None
    added: int | None = None  # rows in new but not old (multiset of row hashes); None: not line-based
    removed: int | None = None


@dataclass(frozen=True)
class Change:
    kind: str  # "added" | "removed" | "changed"
    path: str  # flattened: `train.optimizer.lr`, `data.faq`, `accept.loss <=`
    old: str | None  # canonical text of the value (`sftlang.fmt.format_value`), None when added
    new: str | None
    category: str  # "setting" | "source" | "template" | "gate" | "data"
    text_diff: tuple[str, ...] = ()  # template strings: ` `/`-`/`+` prefixed lines, `…` between hunks
    rows: Rows | None = None  # category "data": row counts
    settings: tuple[tuple[str, str], ...] = ()  # an added/removed source or template: its non-default keys
    error: str | None = None  # category "data": why one side could not be read

    @property
    def label(self) -> str:
        """The path as people read it: `data faq`, `template answer.prompt`, `train.epochs`."""
        for prefix in ("data.", "template."):
            if self.path.startswith(prefix):
                return prefix[:-1] + " " + self.path[len(prefix) :]
        return self.path


@dataclass(frozen=True)
class SpecDiff:
    changes: tuple[Change, ...]

    @property
    def same(self) -> bool:
        return not self.changes

    def summary(self) -> str:
        """`4 settings changed, 1 source added, 1 data change.` (or `no changes`)."""
        if self.same:
            return "no changes"
        counts: dict[tuple[str, str], int] = {}
        for change in self.changes:
            counts[change.category, change.kind] = counts.get((change.category, change.kind), 0) + 1
        parts = []
        for category in ("setting", "source", "template", "gate"):
            for kind in ("changed", "added", "removed"):
                n = counts.get((category, kind), 0)
                if n:
                    parts.append(f"{n} {category}{'s' * (n != 1)} {kind}")
        n = sum(v for (category, _), v in counts.items() if category == "data")
        if n:
            parts.append(f"{n} data change{'s' * (n != 1)}")
        return ", ".join(parts) + "."


# ---------------------------------------------------------------- flattening


@dataclass(frozen=True)
class _Entry:
    path: str
    value: object  # an AST node, or a string for synthetic entries (heads, template sources)
    text: str
    default: bool = False  # filled from the schema, not written
    shown: str | None = None  # the path as displayed, when it is not `path`


def _source_text(call: ast.Call) -> str:
    """A source call with its positional parameters unnamed: `jsonl("a.jsonl")`."""
    signature = schema.SOURCES.variants.get(call.head.name)
    positional = [p.name for p in signature.params[: signature.positional]] if signature is not None else []
    args = [
        format_value(a.value)
        if index < len(positional) and isinstance(a.name, ast.Name) and a.name.name == positional[index]
        else format_value(a)
        for index, a in enumerate(call.args)
    ]
    return f"{call.head.name}({', '.join(args)})"


def _value_text(node) -> str:
    """One line of canonical text (a triple-quoted string is shown with `\\n` escapes)."""
    if isinstance(node, ast.Call) and node.head.name in schema.SOURCES.variants:
        return _source_text(node)
    if isinstance(node, ast.Str) and "\n" in format_value(node):
        return format_value(ast.Str(node.value))
    return format_value(node)


def _flatten_value(path: str, node, default: bool, out: list[_Entry]) -> None:
    """A call: its head, then each argument; a tuple: each field; anything else: itself."""
    if isinstance(node, ast.Call):
        out.append(_Entry(path, ("call", node.head.name), node.head.name, default))
        _flatten_args(path, node.args, default, out)
    elif isinstance(node, ast.Init):
        head = f"init {node.call.head.name}"
        out.append(_Entry(path, ("call", head), head, default))
        _flatten_args(path, node.call.args, default, out)
    elif isinstance(node, ast.TrainOn):
        head = f"train {node.call.head.name} on {node.source.name}"
        out.append(_Entry(path, ("call", head), head, default))
        _flatten_args(path, node.call.args, default, out)
    elif isinstance(node, ast.Tuple):
        _flatten_args(path, node.args, default, out)
    else:
        out.append(_Entry(path, node, _value_text(node), default))


def _flatten_args(path: str, args, default: bool, out: list[_Entry]) -> None:
    for index, arg in enumerate(args):
        name = format_value(arg.name) if arg.name is not None else str(index)
        _flatten_value(f"{path}.{name}", arg.value, default, out)


def _gate_path(gate: ast.Gate) -> str:
    return f"accept.{metric_text(gate.metric)} {gate.op}"


def flatten(spec: Spec) -> dict[str, _Entry]:
    """The resolved spec as ordered `path -> entry`."""
    out: list[_Entry] = [_Entry("name", ast.Str(spec.name), format_value(ast.Str(spec.name)))]
    for block in ("model",):
        for key, setting in spec.blocks.get(block, {}).items():
            _flatten_value(f"{block}.{key}", setting.value, setting.is_default, out)
    for name, source in spec.data.items():
        out.append(_Entry(f"data.{name}", source.source, _source_text(source.source)))
        for key, setting in source.settings.items():
            out.append(_Entry(f"data.{name}.{key}", setting.value, _value_text(setting.value), setting.is_default))
    for name, template in spec.templates.items():
        sources = tuple(s.name for s in template.sources)
        out.append(_Entry(f"template.{name}", ("for", sources), "for " + ", ".join(sources)))
        for key, setting in template.settings.items():
            out.append(_Entry(f"template.{name}.{key}", setting.value, _value_text(setting.value), setting.is_default))
    for block in ("train", "eval"):
        for key, setting in spec.blocks.get(block, {}).items():
            _flatten_value(f"{block}.{key}", setting.value, setting.is_default, out)
    for gate in spec.gates:
        # keyed by (metric, side) so `loss <= 1.2` -> `loss < 1.0` is one change
        metric, side = gate_key(gate)
        out.append(
            _Entry(f"accept:{metric}|{side}", (gate.op, gate.value), format_value(gate.value), shown=_gate_path(gate))
        )
    for block in ("output",):
        for key, setting in spec.blocks.get(block, {}).items():
            _flatten_value(f"{block}.{key}", setting.value, setting.is_default, out)
    return {entry.path: entry for entry in out}


def _merged_order(old: list[str], new: list[str]) -> list[str]:
    """Keys of both sides, each side's order kept (removed keys where they stood)."""
    order: list[str] = []
    matcher = difflib.SequenceMatcher(a=old, b=new, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            order.extend(old[i1:i2])
        else:
            order.extend(k for k in old[i1:i2] if k not in new)
            order.extend(k for k in new[j1:j2] if k not in order)
    return list(dict.fromkeys(order))  # each key once, where it first stands


# ---------------------------------------------------------------- text diffs


def text_diff(old: str, new: str, context: int = 3) -> tuple[str, ...]:
    """A line diff of two strings: ` ` kept, `-` removed, `+` added; `…` between hunks.

    >>> text_diff("### Question:\\n{q}\\n### Answer:\\n", "Question: {q}\\nAnswer:")
    ('-### Question:', '-{q}', '-### Answer:', '-', '+Question: {q}', '+Answer:')
    """
    a, b = old.split("\n"), new.split("\n")
    out: list[str] = []
    for group in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_grouped_opcodes(context):
        if out:
            out.append("…")
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                out.extend(" " + line for line in a[i1:i2])
                continue
            out.extend("-" + line for line in a[i1:i2])
            out.extend("+" + line for line in b[j1:j2])
    return tuple(out)


# ---------------------------------------------------------------- the diff


def _owner(path: str) -> str | None:
    """`data.tickets.split` -> `data.tickets`; the declaration a key belongs to."""
    parts = path.split(".")
    if parts[0] in ("data", "template") and len(parts) > 2:
        return ".".join(parts[:2])
    return None


def _category(path: str) -> str:
    parts = path.split(".")
    if parts[0] == "data" and len(parts) == 2:
        return "source"
    if parts[0] == "template" and len(parts) == 2:
        return "template"
    if path.startswith("accept:"):
        return "gate"
    return "setting"


def _settings_of(entries: dict[str, _Entry], owner: str) -> tuple[tuple[str, str], ...]:
    prefix = owner + "."
    out = []
    for path, entry in entries.items():
        if path.startswith(prefix) and not entry.default:
            key = path[len(prefix) :]
            out.append((f"{key} eval" if key == "split" and owner.startswith("data.") else key, entry.text))
    return tuple(out)


def _content_change(name: str, old: Fingerprint, new: Fingerprint) -> Change | None:
    if old.hub or new.hub or old.digest == new.digest:
        return None
    delta = row_delta(old, new)
    rows = Rows(old.rows, new.rows, *(delta if delta is not None else (None, None)))
    error = old.error if old.digest is None else new.error if new.digest is None else None
    return Change(
        "changed",
        f"data.{name}",
        f"sha256:{old.digest}" if old.digest else None,
        f"sha256:{new.digest}" if new.digest else None,
        "data",
        rows=rows,
        error=error,
    )


def diff_specs(
    old: Spec,
    new: Spec,
    old_prints: dict[str, Fingerprint] | None = None,
    new_prints: dict[str, Fingerprint] | None = None,
) -> SpecDiff:
    """Every difference between two resolved specs, in spec order.

    `old_prints`/`new_prints` are `sftlang.fingerprint.fingerprint_spec` results;
    without them data content is not compared.
    """
    a, b = flatten(old), flatten(new)
    changes: list[Change] = []
    for path in _merged_order(list(a), list(b)):
        before, after = a.get(path), b.get(path)
        owner = _owner(path)
        if owner is not None and ((owner in a) != (owner in b)):
            continue  # folded into its added/removed declaration
        either = after or before
        assert either is not None  # every path is a key of one side at least
        shown = either.shown or path
        category = _category(path)
        if before is None:  # added: `either` is `after`
            settings = _settings_of(b, path) if category in ("source", "template") else ()
            changes.append(Change("added", shown, None, either.text, category, settings=settings))
        elif after is None:
            settings = _settings_of(a, path) if category in ("source", "template") else ()
            changes.append(Change("removed", shown, before.text, None, category, settings=settings))
        elif before.value != after.value:
            old_text, new_text = before.text, after.text
            if (
                path.startswith("accept:")  # a gate's value: (op, threshold)
                and isinstance(before.value, tuple)
                and isinstance(after.value, tuple)
                and before.value[0] != after.value[0]
            ):  # `<=` became `<`
                shown = f"accept.{path[len('accept:') :].rsplit('|', 1)[0]}"
                old_text, new_text = f"{before.value[0]} {old_text}", f"{after.value[0]} {new_text}"
            diff: tuple[str, ...] = ()
            if path.startswith("template.") and path.rsplit(".", 1)[1] in TEXT_KEYS:
                if isinstance(before.value, ast.Str) and isinstance(after.value, ast.Str):
                    diff = text_diff(before.value.value, after.value.value)
            changes.append(Change("changed", shown, old_text, new_text, category, text_diff=diff))
        if category == "source" and old_prints is not None and new_prints is not None:
            for key in (path[len("data.") :], path[len("data.") :] + ".split"):
                if key in old_prints and key in new_prints:
                    content = _content_change(key, old_prints[key], new_prints[key])
                    if content is not None:
                        changes.append(content)
    return SpecDiff(tuple(changes))


# ---------------------------------------------------------------- rendering


def _rows_text(change: Change) -> str:
    rows = change.rows
    assert rows is not None  # a data change carries its row counts (_content_change)

    def side(digest, n):
        if digest is None:
            return f"unreadable ({change.error})"
        return f"{n:,}" if n is not None else "?"

    text = f"content changed: {side(change.old, rows.old)} -> {side(change.new, rows.new)}"
    if change.new is not None:
        text += " rows"
    if rows.added is not None:
        text += f" (+{rows.added:,}, -{rows.removed:,})"
    return text


def _line_value(change: Change) -> str:
    if change.category == "data":
        return _rows_text(change)
    if change.text_diff:
        return ""
    if change.kind == "added":
        text = change.new
    elif change.kind == "removed":
        text = change.old
    else:
        text = f"{change.old} -> {change.new}"
    assert text is not None  # an added change has its new text, a removed one its old
    if change.settings:
        text += " { " + "; ".join(f"{k} = {v}" for k, v in change.settings) + " }"
    return text


MARKS = {"added": ("+", "green"), "removed": ("-", "red"), "changed": ("~", "yellow")}
LINE_STYLES = {"+": "green", "-": "red", " ": "dim", "…": "dim"}


def render_lines(result: SpecDiff) -> list[tuple[str, str]]:
    """(text, rich style) lines of the human rendering, summary line last."""
    if result.same:
        return [("no changes", "")]
    width = min(28, max(len(c.label) for c in result.changes))
    lines: list[tuple[str, str]] = []
    for change in result.changes:
        mark, style = MARKS[change.kind]
        value = _line_value(change)
        lines.append(
            (f"{mark} {change.label:<{width}}  {value}".rstrip() if value else f"{mark} {change.label}", style)
        )
        for line in change.text_diff:
            lines.append(("    " + line, LINE_STYLES.get(line[:1], "")))
    lines.append((result.summary(), "bold"))
    return lines


def render_human(result: SpecDiff) -> str:
    return "\n".join(text for text, _ in render_lines(result))


def to_json(result: SpecDiff, old_label: str | None = None, new_label: str | None = None) -> str:
    changes = []
    for change in result.changes:
        item: dict[str, Any] = {
            "kind": change.kind,
            "path": change.path,
            "category": change.category,
            "old": change.old,
            "new": change.new,
        }
        if change.text_diff:
            item["text_diff"] = list(change.text_diff)
        if change.settings:
            item["settings"] = dict(change.settings)
        if change.rows is not None:
            item["rows"] = {
                "old": change.rows.old,
                "new": change.rows.new,
                "added": change.rows.added,
                "removed": change.rows.removed,
            }
        if change.error is not None:
            item["error"] = change.error
        changes.append(item)
    out: dict[str, Any] = {"same": result.same}
    if old_label is not None:
        out["old"] = old_label
    if new_label is not None:
        out["new"] = new_label
    out["changes"] = changes
    out["summary"] = result.summary()
    return json.dumps(out, indent=2)
