"""Files -> one resolved Spec: apply `use`, merge, fill every default.

Merge rules: a `use`d file is a base; the including file overrides it. Blocks
merge key by key, and a key given again as a call of the same function merges
argument by argument (`merge_call`); a redeclared `data` or `template` replaces the base's whole
declaration; an `accept` gate replaces the base's gate on the same metric and
side. Defaults come from schema.py (as source text, parsed once), and calls are
normalised to named arguments in signature order with defaults filled, so two
specs that mean the same thing resolve to equal values.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path

from . import ast, schema
from .diagnostics import Diagnostic
from .files import FileSystem
from .parse import parse
from .source import Span
from .types import Calls, InitModel, OneOf, Record, Signature, TrainTokenizer, Type
from .validate import gate_key, validate_file


@dataclass
class Setting:
    key: str
    value: ast.Value
    span: Span | None = None  # the assignment; None for a default
    label: str | None = None
    origin: Path | None = None  # the file that set it: its relative paths start there

    @property
    def is_default(self) -> bool:
        return self.span is None


@dataclass
class DataSource:
    name: str
    source: ast.Call
    settings: dict[str, Setting]
    base_dir: Path  # paths in this declaration are relative to its file
    span: Span | None = None  # the name in the declaration


@dataclass
class Template:
    name: str
    sources: tuple[ast.Name, ...]
    settings: dict[str, Setting]
    span: Span | None = None


@dataclass
class Spec:
    name: str
    path: Path
    blocks: dict[str, dict[str, Setting]]
    data: dict[str, DataSource]
    templates: dict[str, Template]
    gates: list[ast.Gate]
    files: list[Path] = field(default_factory=list)
    block_spans: dict[str, Span] = field(default_factory=dict)
    header_span: Span | None = None
    anchor: Span | None = None  # the start of the root file, for spec-wide diagnostics

    def dir_of(self, block: str, key: str) -> Path:
        """The directory a path in `block.key` is relative to: that of the file setting it."""
        setting = self.blocks.get(block, {}).get(key)
        origin = setting.origin if setting is not None and setting.origin is not None else self.path
        return origin.parent

    def value(self, block: str, key: str) -> ast.Value | None:
        setting = self.blocks.get(block, {}).get(key)
        return setting.value if setting is not None else None

    def span(self, block: str, key: str) -> Span | None:
        setting = self.blocks.get(block, {}).get(key)
        return setting.span if setting is not None and setting.span is not None else self.block_spans.get(block)


# ---------------------------------------------------------------- defaults


@cache
def parse_value(text: str) -> ast.Value:
    """A value from source text (the schema's defaults)."""
    tree, problems = parse(f"b {{\n    v = {text}\n}}\n", "<default>")
    assert tree is not None and not problems, (text, problems)
    block = tree.items[0]
    assert isinstance(block, ast.Block)  # the one item of the text above
    return block.body.entries[0].value


def _pick(type_: Type, node) -> Type | None:
    """The alternative of a (possibly OneOf) type that describes `node`."""
    if isinstance(type_, OneOf):
        for option in type_.options:
            if option.accepts(node) or (
                isinstance(option, Calls) and isinstance(node, ast.Name) and node.name in option.variants
            ):
                return option
        return None
    return type_


def _fill_args(args: tuple[ast.Arg, ...], signature: Signature, span: Span | None) -> tuple[ast.Arg, ...]:
    """Named arguments in signature order, defaults and `default_from` filled."""
    given: dict[str, ast.Value] = {}
    arg_spans: dict[str, Span | None] = {}
    for index, arg in enumerate(args):
        name = ast.text_of(arg.name) if arg.name is not None else signature.params[index].name
        given[name] = arg.value
        arg_spans[name] = arg.span
    out = []
    for param in signature.params:
        if param.name in given:
            value = normalize(given[param.name], param.type)
        elif param.default_from is not None and param.default_from in given:
            value = normalize(given[param.default_from], param.type)
        elif param.default is not None:
            value = parse_value(param.default)
        else:
            continue
        out.append(ast.Arg(ast.Name(param.name), value, arg_spans.get(param.name, span)))
    return tuple(out)


def normalize(node: ast.Value, type_: Type) -> ast.Value:
    """A checked value in canonical form: calls with every argument named and filled."""
    chosen = _pick(type_, node)
    if isinstance(chosen, Calls) and isinstance(node, (ast.Call, ast.Name)):  # a bare name: `cosine`
        call = node if isinstance(node, ast.Call) else ast.Call(node, (), node.span)
        signature = chosen.variants.get(call.head.name)
        if signature is None:
            return node
        return ast.Call(call.head, _fill_args(call.args, signature, call.span), call.span)
    if isinstance(chosen, InitModel) and isinstance(node, ast.Init):
        return ast.Init(normalize_call(node.call, chosen.calls), node.span)
    if isinstance(chosen, TrainTokenizer) and isinstance(node, ast.TrainOn):
        return ast.TrainOn(normalize_call(node.call, chosen.calls), node.source, node.span)
    if isinstance(chosen, Record) and isinstance(node, ast.Tuple):
        return ast.Tuple(_fill_args(node.args, chosen.signature, node.span), node.span)
    return node


def normalize_call(call: ast.Call, calls: Calls) -> ast.Call:
    """`normalize` of a call of one of `calls`' functions, which stays a call."""
    signature = calls.variants.get(call.head.name)
    if signature is None:
        return call
    return ast.Call(call.head, _fill_args(call.args, signature, call.span), call.span)


def fill_defaults(keys: tuple[schema.Key, ...], settings: dict[str, Setting]) -> dict[str, Setting]:
    """Every key of a block, in schema order: given values normalised, defaults filled."""
    out: dict[str, Setting] = {}
    for key in keys:
        given = settings.get(key.name)
        if given is not None:
            out[key.name] = replace(given, value=normalize(given.value, key.type))
        elif key.default_from is not None and key.default_from in settings:
            source = settings[key.default_from]
            out[key.name] = Setting(key.name, normalize(source.value, key.type))
        elif key.default_from is not None and key.default_from in out:
            out[key.name] = Setting(key.name, out[key.default_from].value)
        elif key.default is not None:
            out[key.name] = Setting(key.name, normalize(parse_value(key.default), key.type))
    return out


# ---------------------------------------------------------------- merging a base's value


def _named_args(args: tuple[ast.Arg, ...], signature: Signature) -> dict[str, ast.Arg] | None:
    """The call's arguments by parameter name (positional ones named); None if one has no parameter."""
    named: dict[str, ast.Arg] = {}
    for index, arg in enumerate(args):
        if arg.name is not None:
            named[ast.text_of(arg.name)] = arg
        elif index < len(signature.params):
            named[signature.params[index].name] = ast.Arg(ast.Name(signature.params[index].name), arg.value, arg.span)
        else:
            return None
    return named


def merge_call(base: ast.Value, override: ast.Value, type_: Type) -> ast.Value:
    """A derived file's value of a key its base also sets: a call of the same function keeps the
    base's arguments the override does not give (`adamw(lr = 1e-3)` over `adamw(lr = 2e-5, b2 = 0.95)`
    is `adamw(lr = 1e-3, b2 = 0.95)`); anything else, and a call that names a path (`hf(...)`,
    `sentencepiece(...)`: a `revision` belongs to its path), replaces the base's value whole."""
    chosen = _pick(type_, override)
    if isinstance(chosen, InitModel) and isinstance(base, ast.Init) and isinstance(override, ast.Init):
        return ast.Init(_merge_calls(base.call, override.call, chosen.calls), override.span)
    if not (isinstance(chosen, Calls) and isinstance(base, ast.Call) and isinstance(override, ast.Call)):
        return override
    return _merge_calls(base, override, chosen)


def _merge_calls(base: ast.Call, override: ast.Call, calls: Calls) -> ast.Call:
    """`merge_call` of two calls of `calls`' functions."""
    signature = calls.variants.get(override.head.name)
    if (
        base.head.name != override.head.name
        or signature is None
        or any(p.type is schema.PATH for p in signature.params)
    ):
        return override
    old, new = _named_args(base.args, signature), _named_args(override.args, signature)
    if old is None or new is None:
        return override
    merged = {**old, **new}
    return ast.Call(override.head, tuple(merged[p.name] for p in signature.params if p.name in merged), override.span)


def _key_type(block: str, key: str) -> Type | None:
    return next((k.type for k in schema.BLOCKS.get(block, ()) if k.name == key), None)


# ---------------------------------------------------------------- loading


class _Loader:
    def __init__(self, files: FileSystem):
        self.files = files
        self.problems: list[Diagnostic] = []
        self.loaded: list[Path] = []

    def report(self, diagnostic: Diagnostic) -> None:
        self.problems.append(diagnostic)

    def display(self, path: Path) -> str:
        try:
            shown = os.path.relpath(path)
        except ValueError:
            shown = str(path)
        if shown.startswith(".." + os.sep + ".."):
            shown = str(path)
        return self.files.label + shown

    def load(self, path: Path, chain: tuple[Path, ...]) -> list[tuple[ast.SpecFile, Path]] | None:
        """The file and, before it, everything it uses (depth first, in order)."""
        text = self.files.read_text(path)
        tree, problems = parse(text, self.display(path))
        self.problems.extend(problems)
        if tree is None:
            return None
        self.loaded.append(path)
        validate_file(tree, self.report)
        ordered: list[tuple[ast.SpecFile, Path]] = []
        for item in tree.items:
            if not isinstance(item, ast.Use) or not item.path.value.strip():
                continue
            target = (path.parent / item.path.value).resolve()
            if target in chain or target == path:
                cycle = " -> ".join(self.display(p) for p in (*chain, path, target))
                self.report(
                    Diagnostic(
                        "E034", f"`use` makes a cycle: {cycle}", item.path.span, "remove one of these `use` lines"
                    )
                )
                continue
            if not self.files.is_file(target):
                self.report(
                    Diagnostic(
                        "E033",
                        f"`use` file `{item.path.value}` not found",
                        item.path.span,
                        f"looked for {self.display(target)}",
                    )
                )
                continue
            base = self.load(target, (*chain, path))
            if base is None:
                continue
            ordered.extend(base)
        ordered.append((tree, path))
        return ordered


def _merge(files: list[tuple[ast.SpecFile, Path]], root: Path) -> Spec:
    blocks: dict[str, dict[str, Setting]] = {name: {} for name in schema.BLOCKS if name != "accept"}
    block_spans: dict[str, Span] = {}
    data: dict[str, DataSource] = {}
    templates: dict[str, Template] = {}
    gates: dict[tuple[str, str], ast.Gate] = {}
    name, header_span = None, None
    for tree, path in files:
        for item in tree.items:
            if isinstance(item, ast.Header) and path == root:
                name, header_span = item.name.value, item.span
            elif isinstance(item, ast.Block) and item.kind.name in schema.BLOCKS:
                kind = item.kind.name
                if item.kind.span is not None:  # a parsed block's name has its span
                    block_spans[kind] = item.kind.span
                if kind == "accept":
                    for entry in item.body.entries:
                        if isinstance(entry, ast.Gate):
                            gates[gate_key(entry)] = entry
                    continue
                for entry in item.body.entries:
                    if isinstance(entry, ast.Assign):
                        label = entry.label.name if entry.label else None
                        value, base = entry.value, blocks[kind].get(entry.key.name)
                        key_type = _key_type(kind, entry.key.name)
                        if base is not None and base.origin != path and key_type is not None:
                            value = merge_call(base.value, value, key_type)
                        blocks[kind][entry.key.name] = Setting(entry.key.name, value, entry.span, label, path)
            elif isinstance(item, ast.DataDecl) and isinstance(item.source, ast.Call):
                settings = {}
                for entry in item.body.entries if item.body else ():
                    if isinstance(entry, ast.Assign):
                        label = entry.label.name if entry.label else None
                        settings[entry.key.name] = Setting(entry.key.name, entry.value, entry.span, label)
                data[item.name.name] = DataSource(item.name.name, item.source, settings, path.parent, item.name.span)
            elif isinstance(item, ast.TemplateDecl):
                settings = {
                    e.key.name: Setting(e.key.name, e.value, e.span)
                    for e in item.body.entries
                    if isinstance(e, ast.Assign)
                }
                templates[item.name.name] = Template(item.name.name, item.sources, settings, item.name.span)
    return Spec(
        name=name if name is not None else root.stem,
        path=root,
        blocks=blocks,
        data=data,
        templates=templates,
        gates=list(gates.values()),
        block_spans=block_spans,
        header_span=header_span,
    )


def _fill(spec: Spec) -> Spec:
    for block, settings in spec.blocks.items():
        spec.blocks[block] = fill_defaults(schema.BLOCKS[block], settings)
    for source in spec.data.values():
        source.source = normalize_call(source.source, schema.SOURCES)
        source.settings = fill_defaults(schema.DATA_KEYS, source.settings)
    for template in spec.templates.values():
        template.settings = fill_defaults(schema.TEMPLATE_KEYS, template.settings)
        if "messages" in template.settings and "train_on" not in template.settings:
            template.settings["train_on"] = Setting("train_on", parse_value("assistant"))
    return spec


def load_spec(path: str | Path, files: FileSystem | None = None) -> tuple[Spec | None, list[Diagnostic]]:
    """Parse, validate and resolve a spec and the files it uses.

    Returns (None, diagnostics) when a syntax error or a per-file error stops
    resolution; otherwise the resolved Spec and the diagnostics found so far
    (warnings only, or none).
    """
    files = files or FileSystem()
    root = Path(path).resolve()
    loader = _Loader(files)
    if not files.is_file(root):
        return None, [Diagnostic("E033", f"spec file `{path}` not found")]
    try:
        ordered = loader.load(root, ())
    except UnicodeDecodeError as error:
        return None, [Diagnostic("E002", f"`{path}` is not UTF-8 text: {error.reason} at byte {error.start}")]
    errors = [d for d in loader.problems if d.is_error]
    if ordered is None or errors:
        return None, loader.problems
    spec = _fill(_merge(ordered, root))
    root_tree = ordered[-1][0]
    spec.anchor = root_tree.source.span(0, 0) if root_tree.source is not None else None
    spec.files = list(dict.fromkeys(loader.loaded))
    return spec, loader.problems
