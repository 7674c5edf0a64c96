"""A resolved Spec back to `.sft` text: one self-contained file, `use` applied and
every default written out. It is the `spec.sft` a run directory keeps (so a run
can be rerun or diffed without the files it came from), and its hash names the
spec in the plan."""

from __future__ import annotations

import os
from pathlib import Path

from . import ast
from .fmt import format_spec
from .resolve import Setting, Spec

PATH_SOURCES = ("jsonl", "json", "csv", "parquet", "arrow", "text", "disk")


def _rebase(call: ast.Call, base_dir: Path, target_dir: Path | None) -> ast.Call:
    """The call with its `path` argument relative to `target_dir` (absolute when None)."""
    if call.head.name not in PATH_SOURCES:
        return call
    args = []
    for a in call.args:
        if isinstance(a.name, ast.Name) and a.name.name == "path" and isinstance(a.value, ast.Str):
            path = Path(a.value.value).expanduser()
            full = os.path.normpath(path if path.is_absolute() else base_dir / path)
            text = full if target_dir is None else os.path.relpath(full, target_dir)
            a = ast.Arg(a.name, ast.Str(Path(text).as_posix()))
        args.append(a)
    return ast.Call(call.head, tuple(args))


def _assign(setting: Setting) -> ast.Assign:
    label = ast.Name(setting.label) if setting.label else None
    return ast.Assign(ast.Name(setting.key), label, setting.value)


def _model_settings(spec: Spec, target_dir: Path | None) -> list[ast.Assign]:
    entries = []
    for key, setting in spec.blocks["model"].items():
        value = setting.value
        if key in ("base", "tokenizer") and isinstance(value, ast.Call) and value.head.name in ("hf", "sentencepiece"):
            path = value.kwarg("path")
            local = (
                spec.dir_of("model", key) / path.value.value
                if path is not None and isinstance(path.value, ast.Str)
                else None
            )
            if local is not None and local.exists():
                text = str(local.resolve()) if target_dir is None else os.path.relpath(local.resolve(), target_dir)
                rest = tuple(a for a in value.args if a is not path)
                value = ast.Call(value.head, (ast.Arg(ast.Name("path"), ast.Str(Path(text).as_posix())),) + rest)
        entries.append(ast.Assign(ast.Name(key), None, value))
    return entries


def emit_spec(spec: Spec, absolute_paths: bool = False) -> str:
    """Canonical text of the resolved spec. Paths are relative to the root spec's
    directory, or absolute with `absolute_paths` (for a copy kept elsewhere)."""
    target_dir = None if absolute_paths else spec.path.parent
    items: list = [ast.Header(ast.Str(spec.name))]
    items.append(ast.Block(ast.Name("model"), ast.Body(tuple(_model_settings(spec, target_dir)))))
    for source in spec.data.values():
        entries = []
        for setting in source.settings.values():
            if isinstance(setting.value, ast.Call):
                setting = Setting(setting.key, _rebase(setting.value, source.base_dir, target_dir), label=setting.label)
            entries.append(_assign(setting))
        call = _rebase(source.source, source.base_dir, target_dir)
        items.append(ast.DataDecl(ast.Name(source.name), call, ast.Body(tuple(entries))))
    for template in spec.templates.values():
        settings = tuple(_assign(s) for s in template.settings.values())
        items.append(
            ast.TemplateDecl(
                ast.Name(template.name), tuple(ast.Name(n.name) for n in template.sources), ast.Body(settings)
            )
        )
    for block in ("train", "eval"):
        items.append(ast.Block(ast.Name(block), ast.Body(tuple(_assign(s) for s in spec.blocks[block].values()))))
    if spec.gates:
        items.append(ast.Block(ast.Name("accept"), ast.Body(tuple(spec.gates))))
    items.append(ast.Block(ast.Name("output"), ast.Body(tuple(_assign(s) for s in spec.blocks["output"].values()))))
    return format_spec(ast.SpecFile(tuple(items)))
