"""Whole-spec checks on a resolved Spec: references, files and columns, arithmetic,
acceptance consistency. Per-file checks (syntax, keys, types) ran in validate.py.

`check_spec_file` is what `sftc check` calls: load, resolve, check, sorted diagnostics.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from runtime.plan import row_shapes as shapes
from runtime.plan import row_templates as templates
from runtime.plan.gguf_header import GgufError, check_supported, is_gguf_path, read_header
from runtime.plan.hub_policy import hub_reachable, local_path_reason, offline_requested
from runtime.plan.vocab_range import explain, fixed_pieces, smallest_vocab

from . import ast, schema
from .columns import Columns, ColumnsError, Sample, read_columns, shape_sample
from .corpus import held_out_by_fraction, training_characters
from .devices import detect_devices
from .diagnostics import Diagnostic, did_you_mean, join_help
from .files import FileSystem, first_match, is_glob, present_file
from .placeholders import placeholders
from .resolve import DataSource, Spec, Template, load_spec
from .types import BOOLEANS
from .validate import gate_key, metric_parts, metric_text, unwrap_gain


def arg(call: ast.Call | None, name: str) -> ast.Value | None:
    if call is None:
        return None
    found = call.kwarg(name)
    return found.value if found is not None else None


def pairs(setting, value=ast.text_of) -> tuple:
    """A mapping or record setting as (name, value) pairs in written order; () when absent."""
    if setting is None or not isinstance(setting.value, ast.Tuple):
        return ()
    return tuple((ast.text_of(a.name), value(a.value)) for a in setting.value.args if a.name is not None)


def _row_value(node):
    return BOOLEANS[node.name] if isinstance(node, ast.Name) else node.value


def where_pairs(setting) -> tuple:
    """`where = (lang = "en", tier = ["a", "b"])` as the plan holds it:
    `(("lang", ("en",)), ("tier", ("a", "b")))`, `on`/`off` as booleans."""
    return pairs(setting, lambda v: tuple(map(_row_value, v.items)) if isinstance(v, ast.List) else (_row_value(v),))


def offline_mode(flag: bool) -> bool:
    return flag or offline_requested()


@dataclass
class _Context:
    spec: Spec
    files: FileSystem
    devices: int
    offline: bool
    problems: list[Diagnostic]
    devices_given: bool = False
    _hub: bool | None = None
    broken: set[str] = field(default_factory=set)  # sources with an error already: their rows are not sampled

    def errors(self) -> int:
        return sum(d.is_error for d in self.problems)

    def report(self, diagnostic: Diagnostic) -> None:
        self.problems.append(diagnostic)

    def hub(self) -> bool:
        if self._hub is None:
            self._hub = not self.offline and hub_reachable()
        return self._hub

    def hub_skip_reason(self) -> str:
        return "offline" if self.offline else "the hub is unreachable"


# ---------------------------------------------------------------- model


def _check_model(ctx: _Context) -> None:
    spec = ctx.spec
    if "model" not in spec.block_spans:
        ctx.report(
            Diagnostic(
                "E014",
                "the spec needs a `model` block",
                spec.anchor,
                'add `model { base = hf("dir") }` or `model { base = init llama(...) }`',
            )
        )
        return
    base = spec.value("model", "base")
    if base is None:
        ctx.report(
            Diagnostic(
                "E014",
                "`model` needs `base`",
                spec.block_spans["model"],
                'add `base = hf("dir")` or `base = init llama(...)`',
            )
        )
        return
    tokenizer = spec.value("model", "tokenizer")
    adapter = spec.value("model", "adapter")
    if isinstance(base, ast.Call):
        _check_model_dir(ctx, base, spec.dir_of("model", "base"))
    if isinstance(base, ast.Init):
        if isinstance(tokenizer, ast.Name) and tokenizer.name == "base":
            ctx.report(
                Diagnostic(
                    "E024",
                    "an `init` model has no tokenizer of its own",
                    spec.span("model", "tokenizer") or base.span,
                    'set `tokenizer = train sentencepiece(vocab = N) on SOURCE`, `hf("dir")` or '
                    '`sentencepiece("file.model")`',
                )
            )
        if isinstance(adapter, ast.Call):
            ctx.report(
                Diagnostic(
                    "E024",
                    "a LoRA adapter needs a pretrained base; an `init` model trains in full",
                    adapter.span,
                    'remove `adapter`, or use `base = hf("dir")`',
                )
            )
        vocab = arg(base.call, "vocab")
        if isinstance(tokenizer, ast.TrainOn) and isinstance(vocab, ast.Number):
            trained = arg(tokenizer.call, "vocab")
            if isinstance(trained, ast.Number) and trained.value > vocab.value:
                ctx.report(
                    Diagnostic(
                        "E024",
                        f"model vocab {vocab.value} is smaller than the tokenizer's {trained.value}",
                        vocab.span,
                        "leave `vocab` out to use the tokenizer's size",
                    )
                )
        longest, seq_len = arg(base.call, "max_seq_len"), spec.value("train", "seq_len")
        if isinstance(longest, ast.Number) and isinstance(seq_len, ast.Number) and seq_len.value > longest.value:
            ctx.report(
                Diagnostic(
                    "E024",
                    f"train.seq_len {seq_len.value} is longer than the model's max_seq_len {longest.value}",
                    spec.span("train", "seq_len") or longest.span,
                    f"raise `max_seq_len` to at least {seq_len.value}",
                )
            )
        dim, heads, head_dim = arg(base.call, "dim"), arg(base.call, "heads"), arg(base.call, "head_dim")
        kv = arg(base.call, "kv_heads")
        if isinstance(heads, ast.Number) and isinstance(kv, ast.Number) and heads.value % kv.value:
            ctx.report(
                Diagnostic("E024", f"heads ({heads.value}) must be a multiple of kv_heads ({kv.value})", kv.span)
            )
        if (
            head_dim is None
            and isinstance(dim, ast.Number)
            and isinstance(heads, ast.Number)
            and dim.value % heads.value
        ):
            ctx.report(
                Diagnostic(
                    "E024",
                    f"dim ({dim.value}) must be a multiple of heads ({heads.value})",
                    dim.span,
                    "or set `head_dim`",
                )
            )
    if isinstance(tokenizer, ast.Call):
        path = arg(tokenizer, "path")
        if isinstance(path, ast.Str):
            base_dir = spec.dir_of("model", "tokenizer")
            if tokenizer.head.name == "sentencepiece" and not ctx.files.is_file(base_dir / path.value):
                ctx.report(
                    Diagnostic(
                        "E035",
                        f"tokenizer file `{path.value}` not found",
                        path.span,
                        f"paths are relative to {base_dir}",
                    )
                )
            if tokenizer.head.name == "hf":
                _check_model_dir(ctx, tokenizer, base_dir, what="tokenizer")
    if isinstance(tokenizer, ast.TrainOn) and _check_source_ref(ctx, tokenizer.source):
        _check_tokenizer_vocab(ctx, tokenizer)
    quantize = spec.value("model", "quantize")
    if isinstance(quantize, ast.Name) and quantize.name != "none":
        if isinstance(base, ast.Init):
            ctx.report(
                Diagnostic(
                    "E072",
                    f"`quantize = {quantize.name}` needs a pretrained base; an `init` model trains in full",
                    quantize.span,
                    "remove `quantize`",
                )
            )
        elif not isinstance(adapter, ast.Call):
            ctx.report(
                Diagnostic(
                    "E072",
                    f"`quantize = {quantize.name}` needs `adapter = lora(...)`",
                    quantize.span,
                    "a quantized base is frozen and only LoRA adapters train over it: add `adapter = lora(rank = 16)`, "
                    "or remove `quantize`",
                )
            )
    export = spec.value("output", "export")
    if isinstance(export, ast.Name) and export.name == "peft":
        if not isinstance(adapter, ast.Call):
            ctx.report(
                Diagnostic(
                    "E070",
                    "`export = peft` needs `adapter = lora(...)`",
                    spec.span("output", "export"),
                    "use `export = hf` for a full fine-tune",
                )
            )
        elif isinstance(base, ast.Init):
            ctx.report(
                Diagnostic(
                    "E070",
                    "`export = peft` needs a pretrained `base = hf(...)` for the adapter to apply to",
                    spec.span("output", "export"),
                    "use `export = hf`",
                )
            )


def _check_tokenizer_vocab(ctx: _Context, tokenizer: ast.TrainOn) -> None:
    """`train sentencepiece(vocab = N)` must hold a piece for every character of the source's
    text (plus the byte and special pieces); the run would stop at tokenizer training."""
    vocab, coverage = arg(tokenizer.call, "vocab"), arg(tokenizer.call, "character_coverage")
    if not isinstance(vocab, ast.Number) or (isinstance(coverage, ast.Number) and coverage.value < 1):
        return  # below full coverage the rare characters needed depend on the whole text
    fallback = arg(tokenizer.call, "byte_fallback")
    byte_fallback = not (isinstance(fallback, ast.Name) and fallback.name in ("off", "false"))
    source = ctx.spec.data[tokenizer.source.name]
    template = next((t for t in ctx.spec.templates.values() if any(s.name == source.name for s in t.sources)), None)
    characters = training_characters(source, template, ctx.files)
    if characters is None:  # unread text has at least one character
        if vocab.value <= smallest_vocab(0, byte_fallback):
            ctx.report(
                Diagnostic(
                    "E047",
                    f"vocab {vocab.value} is too small: it needs {fixed_pieces(byte_fallback)} + a piece per distinct "
                    f"character of `{source.name}`'s text",
                    vocab.span,
                    f"set `vocab` above {smallest_vocab(0, byte_fallback)}",
                )
            )
        return
    needed = characters.required(min_texts=2 if held_out_by_fraction(source) else 1)
    if vocab.value < smallest_vocab(needed, byte_fallback):
        ctx.report(
            Diagnostic(
                "E047",
                f"vocab {vocab.value} is too small for the text of `{source.name}`: it needs "
                f"{explain(needed, byte_fallback)}",
                vocab.span,
                f"set `vocab` to at least {smallest_vocab(needed, byte_fallback)}",
            )
        )


def _check_model_dir(ctx: _Context, call: ast.Call, base_dir: Path, what: str = "model") -> None:
    path = arg(call, "path")
    if not isinstance(path, ast.Str):
        return
    local = base_dir / Path(path.value).expanduser()  # an absolute path stays itself
    if is_gguf_path(path.value):
        _check_gguf(ctx, path, local, base_dir)
        return
    if ctx.files.exists(local):
        if not ctx.files.is_file(
            local / ("config.json" if what == "model" else "tokenizer_config.json")
        ) and not ctx.files.is_file(local / "tokenizer.json"):
            ctx.report(
                Diagnostic("E036", f"`{path.value}` is not a Hugging Face {what} directory (no config.json)", path.span)
            )
        return
    revision = arg(call, "revision")
    looked_for = os.path.abspath(local)
    reason = local_path_reason(
        path.value,
        base_dir,
        revision=None if revision is None else "given",
        is_dir=lambda p: ctx.files.exists(p) and not ctx.files.is_file(p),
    )
    if reason is None:  # `org/name`: a hub id
        if not ctx.hub():
            ctx.report(
                Diagnostic(
                    "W001",
                    f"{what} `{path.value}` not checked: {ctx.hub_skip_reason()}",
                    path.span,
                    f"there is no local directory {looked_for}, so it is read as a hub id; it must be in the Hugging "
                    "Face cache or the hub reachable when the run starts",
                )
            )
        return
    ctx.report(
        Diagnostic(
            "E036",
            f"no local {what} directory `{path.value}`: looked for {looked_for}",
            path.span,
            join_help(f"it is a local path, not a hub id: {reason}.", _nearby_entries(ctx, local)),
        )
    )


def _nearby_entries(ctx: _Context, missing: Path) -> str | None:
    """What the nearest existing parent of a missing path holds, with a "did you mean" (working tree only)."""
    if type(ctx.files) is not FileSystem:
        return None
    parent = Path(os.path.abspath(missing)).parent
    while not parent.is_dir() and parent != parent.parent:
        parent = parent.parent
    try:
        names = sorted(entry.name for entry in os.scandir(parent) if not entry.name.startswith("."))
    except OSError:
        return None
    if not names:
        return f"{parent} is empty"
    wanted = os.path.relpath(os.path.abspath(missing), parent).split(os.sep)[0]
    shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
    return join_help(did_you_mean(wanted, names), f"({parent} holds: {shown})")


def _check_gguf(ctx: _Context, path: ast.Str, local: Path, base_dir: Path) -> None:
    """`hf("model.gguf")`: the file exists, is a GGUF, and holds an architecture sftc loads
    (its header only is read: milliseconds, whatever the size of the weights)."""
    if not ctx.files.is_file(local):
        problem = "is a directory, not a GGUF file" if ctx.files.exists(local) else "not found"
        ctx.report(
            Diagnostic("E036", f"GGUF file `{path.value}` {problem}", path.span, f"paths are relative to {base_dir}")
        )
        return
    if type(ctx.files) is not FileSystem:
        return  # a file at a git revision: its header is not read
    try:
        check_supported(read_header(local))
    except (GgufError, OSError) as error:
        message = str(error).removeprefix(f"{local}: ")
        ctx.report(
            Diagnostic(
                "E037",
                f"`{path.value}`: {message}",
                path.span,
                "use a GGUF file of a Llama-architecture model, or a Hugging Face checkpoint directory",
            )
        )


# ---------------------------------------------------------------- data


def _place(span, seen_from) -> str:
    """`line 14` of the file a diagnostic points into, or `base.sft:14` of another (through `use`)."""
    return f"line {span.line}" if seen_from is None or span.file == seen_from.file else f"{span.file}:{span.line}"


def _check_source_ref(ctx: _Context, name: ast.Name) -> bool:
    if name.name in ctx.spec.data:
        return True
    ctx.report(
        Diagnostic(
            "E030",
            f"unknown data source `{name.name}`",
            name.span,
            join_help(did_you_mean(name.name, ctx.spec.data), f"(declared: {', '.join(ctx.spec.data) or 'none'})"),
        )
    )
    return False


def _skips_bad_rows(source: DataSource) -> bool:
    setting = source.settings.get("on_bad_row")
    return setting is not None and isinstance(setting.value, ast.Name) and setting.value.name == "skip"


def _source_columns(ctx: _Context, source: DataSource, call: ast.Call) -> Columns | None:
    """Columns of a source call (None when unknown); reports missing/empty/broken files."""
    kind = call.head.name
    options = {
        a.name.name: a.value.value for a in call.args if isinstance(a.name, ast.Name) and isinstance(a.value, ast.Str)
    }
    if kind == "hf_dataset":
        return _hub_columns(ctx, call, options)
    path_node = arg(call, "path")
    if not isinstance(path_node, ast.Str):
        return None
    path = first_match(ctx.files, source.base_dir, path_node.value)
    if path is None:  # a glob that matches nothing (a plain path is returned whether it exists or not)
        ctx.report(
            Diagnostic(
                "E035",
                f"no file matches `{path_node.value}`",
                path_node.span,
                f"paths are relative to {source.base_dir}",
            )
        )
        return None
    if not is_glob(path_node.value):
        exists = ctx.files.exists(path) if kind == "disk" else ctx.files.is_file(path)
        if not exists:
            ctx.report(
                Diagnostic(
                    "E035",
                    f"data file `{path_node.value}` not found",
                    path_node.span,
                    f"paths are relative to {source.base_dir}",
                )
            )
            return None
    if kind != "disk" and type(ctx.files) is FileSystem and path.stat().st_size == 0:
        ctx.report(Diagnostic("E035", f"data file `{path_node.value}` is empty", path_node.span))
        return None
    try:
        return read_columns(kind, path, ctx.files, options, skip_bad_rows=_skips_bad_rows(source))
    except ColumnsError as error:
        ctx.report(Diagnostic("E046", f"data file `{path_node.value}` {error}", path_node.span, f"it should be {kind}"))
        return None


def _hub_columns(ctx: _Context, call: ast.Call, options: dict) -> Columns | None:
    name = options.get("name") or ""
    if not ctx.hub():
        ctx.report(
            Diagnostic(
                "W001",
                f"columns of hub dataset `{name}` not checked: {ctx.hub_skip_reason()}",
                call.span,
                "placeholders are checked when the hub is reachable",
            )
        )
        return None
    try:
        import datasets

        builder = datasets.load_dataset_builder(name, options.get("subset"), revision=options.get("revision"))
        features = builder.info.features
    except Exception as error:  # the hub client raises many kinds
        ctx.report(Diagnostic("E035", f"hub dataset `{name}` cannot be loaded: {error}", call.span))
        return None
    if features is None:
        return None
    return Columns(frozenset(features), frozenset())


def _check_data(ctx: _Context) -> dict[str, Columns | None]:
    """Each source's columns as its template reads them: after `rename` (None when unknown)."""
    columns: dict[str, Columns | None] = {}
    for source in ctx.spec.data.values():
        before = ctx.errors()
        known = _source_columns(ctx, source, source.source)
        split = source.settings.get("split")
        if split is not None and isinstance(split.value, ast.Call):
            eval_columns = _source_columns(ctx, source, split.value)
            if known is not None and eval_columns is not None:
                known = Columns(known.names & eval_columns.names, known.nested & eval_columns.nested)
        _check_renames(ctx, source)
        if known is not None:
            known = _transformed(ctx, source, known)
        columns[source.name] = known
        if ctx.errors() > before:
            ctx.broken.add(source.name)
    return columns


def _check_renames(ctx: _Context, source: DataSource) -> None:
    """Two columns renamed to one name would overwrite each other in every row."""
    rename = source.settings.get("rename")
    seen: dict[str, str] = {}
    for arg in rename.value.args if rename is not None and isinstance(rename.value, ast.Tuple) else ():
        if arg.name is None or not isinstance(arg.value, (ast.Name, ast.Str)):
            continue
        old, new = ast.text_of(arg.name), ast.text_of(arg.value)
        if new in seen:
            ctx.report(
                Diagnostic(
                    "E013",
                    f"`{old}` and `{seen[new]}` are both renamed to `{new}`",
                    arg.value.span,
                    "give each column a name of its own",
                )
            )
        seen.setdefault(new, old)


def _transformed(ctx: _Context, source: DataSource, known: Columns) -> Columns:
    """The columns after `rename` (each renamed column must exist), with every `where`
    column present in them: what the runtime's `shapes.transform_row` needs."""
    rename = source.settings.get("rename")
    moved: dict[str, str] = {}
    for arg in rename.value.args if rename is not None and isinstance(rename.value, ast.Tuple) else ():
        if arg.name is None or not isinstance(arg.value, (ast.Name, ast.Str)):
            continue
        old = ast.text_of(arg.name)
        if old not in known.names:
            _not_a_column(
                ctx,
                f"`rename` names `{old}`, which is not a column of `{source.name}`",
                arg.name.span,
                old,
                known.names,
                f"(columns: {', '.join(sorted(known.names))})",
            )
            continue
        moved[old] = ast.text_of(arg.value)

    def renamed(path: str) -> str:
        head, dot, rest = path.partition(".")
        return moved.get(head, head) + dot + rest

    after = Columns(frozenset(map(renamed, known.names)), frozenset(map(renamed, known.nested)))
    where = source.settings.get("where")
    for arg in where.value.args if where is not None and isinstance(where.value, ast.Tuple) else ():
        if arg.name is None:
            continue
        path = ast.text_of(arg.name)
        if not after.has(path):
            _not_a_column(
                ctx,
                f"`where` reads `{path}`, which is not a column of `{source.name}`",
                arg.name.span,
                path,
                after.all,
                f"(columns{' after `rename`' if moved else ''}: {', '.join(after.all)})",
            )
    return after


CONVERSATION_KEYS = ("roles", "keys", "tools")  # what a conversation column's template may say about it


def _check_templates(ctx: _Context, columns: dict[str, Columns | None]) -> None:
    covered: dict[str, ast.Name] = {}
    for template in ctx.spec.templates.values():
        before = ctx.errors()
        settings = template.settings
        has_messages = "messages" in settings
        has_prompt = "prompt" in settings or "completion" in settings
        shape = settings.get("format")
        shape_name = shape.value.name if shape is not None and isinstance(shape.value, ast.Name) else None
        where = f"template `{template.name}`"
        anchor = template.span
        if shape is not None and (has_messages or has_prompt):
            other = "`messages`" if has_messages else "`prompt`/`completion`"
            ctx.report(
                Diagnostic(
                    "E042",
                    f"{where} sets both `format` and {other}",
                    shape.span,
                    f"`format = {shape_name}` reads whole rows by their columns: remove {other}, or `format`",
                )
            )
        elif has_messages and has_prompt:
            first_set = settings["prompt"] if "prompt" in settings else settings["completion"]
            ctx.report(
                Diagnostic(
                    "E042",
                    f"{where} mixes `messages` with `prompt`/`completion`",
                    first_set.span,
                    "a template is either prompt/completion or messages",
                )
            )
        elif not has_messages and not has_prompt and shape is None:
            ctx.report(
                Diagnostic(
                    "E042",
                    f"{where} needs `prompt` and `completion`, `messages` or `format`",
                    anchor,
                    "`prompt`/`completion` for text columns, `messages = COLUMN` for conversations, `format = alpaca` "
                    "or `format = tokens` for those row shapes",
                )
            )
        elif has_prompt and "completion" not in settings:
            ctx.report(
                Diagnostic(
                    "E042",
                    f"{where} needs `completion`",
                    anchor,
                    "the completion is the text the model learns to write",
                )
            )
        elif has_prompt and "prompt" not in settings:
            ctx.report(Diagnostic("E042", f"{where} needs `prompt`", anchor))
        if not has_messages and settings.get("train_on") is not None and not settings["train_on"].is_default:
            ctx.report(Diagnostic("E042", "`train_on` applies to `messages` templates only", settings["train_on"].span))
        for key in CONVERSATION_KEYS:
            if key in settings and (has_prompt or shape is not None):
                kind = f"`format = {shape_name}`" if shape is not None else "prompt/completion"
                ctx.report(
                    Diagnostic(
                        "E042",
                        f"`{key}` describes a conversation column, but {where} is {kind}",
                        settings[key].span,
                        f"use `{key}` with `messages = COLUMN`, or remove it",
                    )
                )
        chat = settings.get("chat")
        chat_on = chat is not None and isinstance(chat.value, ast.Name) and chat.value.name in ("on", "true")
        if has_messages and chat is not None and chat_on:  # chat_on: chat is set
            ctx.report(
                Diagnostic(
                    "E042",
                    "`chat = on` wraps prompt/completion; a `messages` template is rendered with the chat template "
                    "already",
                    chat.span,
                )
            )
        if shape_name == "tokens":
            for key in ("chat", "system"):
                if key in settings and (key == "system" or chat_on):
                    ctx.report(
                        Diagnostic(
                            "E042",
                            f"`{key}` does not apply to `format = tokens`: its rows are token ids already",
                            settings[key].span,
                            f"remove `{key}`",
                        )
                    )
        elif "system" in settings and has_messages:
            first = template.sources[0].name if template.sources else "NAME"
            ctx.report(
                Diagnostic(
                    "E042",
                    "a `messages` template takes no `system`",
                    settings["system"].span,
                    f'set it on the source instead, `data {first} = ... {{ system = "..." }}`: it goes first in each '
                    "conversation that has none",
                )
            )
        elif "system" in settings and not chat_on:
            ctx.report(
                Diagnostic(
                    "E042",
                    "`system` needs `chat = on`",
                    settings["system"].span,
                    "add `chat = on`, or put the system message in the conversation",
                )
            )
        for source in template.sources:
            if not _check_source_ref(ctx, source):
                continue
            if source.name in covered:
                ctx.report(
                    Diagnostic(
                        "E043",
                        f"`{source.name}` already has a template",
                        source.span,
                        f"see {_place(covered[source.name].span, source.span)}; a source takes one template",
                    )
                )
                continue
            covered[source.name] = source
            known = columns.get(source.name)
            _check_template_columns(ctx, template, source.name, known)
        if ctx.errors() > before:
            ctx.broken.update(s.name for s in template.sources)
    for name, declared in ctx.spec.data.items():
        known = columns.get(name)
        if name in covered or known is None or name in ctx.broken:
            continue  # a broken `rename` has said what is wrong already
        if conventional_shape(known.names) is None:
            ctx.broken.add(name)
            ctx.report(
                Diagnostic(
                    "E044",
                    f"`{name}` has no template and no conventional columns",
                    declared.span,
                    f'add `template NAME for {name} {{ prompt = "..."  completion = "..." }}`, or give the rows '
                    "`messages` or `conversations`, `input_ids`, `instruction` + `output`, `prompt` + `completion`, "
                    f"or `text` (columns: {', '.join(known.all)})",
                )
            )


def conventional_shape(names) -> tuple[str, str | None] | None:
    """(kind, column) a source without a template is read as, in the runtime's order: a
    conversation, pre-tokenized ids, Alpaca, prompt + completion, text; None: none fits."""
    for column in shapes.CONVERSATION_COLUMNS:
        if column in names:
            return "conversation", column
    if "input_ids" in names:
        return "tokens", None
    if "instruction" in names and "output" in names:
        return "alpaca", None
    if "prompt" in names and "completion" in names:
        return "prompt_completion", None
    if "text" in names:
        return "text", "text"
    return None


def _check_template_columns(ctx: _Context, template: Template, source: str, known: Columns | None) -> None:
    for key in ("prompt", "completion"):
        setting = template.settings.get(key)
        if setting is None or not isinstance(setting.value, ast.Str):
            continue
        found, problems = placeholders(setting.value)
        for problem in problems:
            if problem not in ctx.problems:
                ctx.report(problem)
        if key == "completion" and not setting.value.value.strip():
            ctx.report(Diagnostic("E042", "the completion template is empty", setting.value.span))
        if known is None:
            continue
        for placeholder in found:
            if not known.has(placeholder.path):
                _not_a_column(
                    ctx,
                    f"`{{{placeholder.path}}}` is not a column of `{source}`",
                    placeholder.span,
                    placeholder.path,
                    known.all,
                    f"(columns: {', '.join(known.all)})",
                )
    messages = template.settings.get("messages")
    if messages is not None and isinstance(messages.value, ast.Name) and known is not None:
        if not known.has(messages.value.name):
            _not_a_column(
                ctx,
                f"`{messages.value.name}` is not a column of `{source}`",
                messages.value.span,
                messages.value.name,
                known.all,
                f"(columns: {', '.join(known.all)})",
            )
    tools = template.settings.get("tools")
    if (
        tools is not None
        and isinstance(tools.value, ast.Name)
        and known is not None
        and tools.value.name not in known.names
    ):
        _not_a_column(
            ctx,
            f"`{tools.value.name}` is not a column of `{source}`",
            tools.value.span,
            tools.value.name,
            known.names,
            f"(columns: {', '.join(known.all)})",
        )
    shape = template.settings.get("format")
    mixed = any(k in template.settings for k in ("prompt", "completion", "messages"))  # reported already
    if shape is not None and isinstance(shape.value, ast.Name) and known is not None and not mixed:
        _check_shape_columns(ctx, shape.value, source, known)


def _not_a_column(ctx: _Context, message: str, span, name: str, candidates, listing: str) -> None:
    """E040: a setting names a column the source does not have; the nearest names, and all of them."""
    ctx.report(Diagnostic("E040", message, span, join_help(did_you_mean(name, candidates), listing)))


SHAPE_COLUMNS = {  # format -> (columns every row needs, columns of which it needs one)
    "alpaca": (("instruction", "output"), ()),
    "tokens": (("input_ids",), ("labels", "loss_mask")),
}


def _check_shape_columns(ctx: _Context, shape: ast.Name, source: str, known: Columns) -> None:
    needed, one_of = SHAPE_COLUMNS.get(shape.name, ((), ()))
    for column in needed:
        if column not in known.names:
            ctx.report(
                Diagnostic(
                    "E040",
                    f"`format = {shape.name}` reads the column `{column}`, which `{source}` does not have",
                    shape.span,
                    join_help(
                        did_you_mean(column, known.names),
                        f"a column of another name can take it: `rename = (OLD = {column})` on the source (columns: "
                        f"{', '.join(known.all)})",
                    ),
                )
            )
    if one_of and not any(c in known.names for c in one_of):
        ctx.report(
            Diagnostic(
                "E040",
                f"`format = {shape.name}` needs a `{'` or `'.join(one_of)}` column, which `{source}` does not have",
                shape.span,
                "`labels` as long as `input_ids` (-100: not trained), or a 0/1 `loss_mask` (columns: "
                f"{', '.join(known.all)})",
            )
        )


# ---------------------------------------------------------------- the rows' shapes

SHOWN_ROWS = 3  # rows reported per file; the note counts the rest
_FILTERED = object()  # a row `where` leaves out: fine


@dataclass(frozen=True)
class _Shape:
    """What the run will read each row as (runtime.data.tokenize's `resolve_mode`, rules in
    runtime.plan.row_shapes): a conversation column with its roles, keys, tools and train_on, an
    Alpaca row, pre-tokenized ids, prompt/completion templates filled in (a null, missing or
    non-string column, an empty completion) or a text column."""

    kind: str
    column: str | None = None
    train_on: str = "assistant"
    roles: tuple = ()
    keys: tuple = ()
    tools: str | None = None
    prompt: str | None = None  # prompt_completion: the two templates, and `chat = on`
    completion: str | None = None
    chat: bool = False

    def columns(self) -> tuple[str, ...]:
        """The columns the shape rules read."""
        if self.kind == "conversation" and self.column is not None:  # shape_of names a conversation's column
            return (self.column,) + ((self.tools,) if self.tools else ())
        if self.kind == "prompt_completion":
            return tuple(
                name.split(".")[0]
                for text in (self.prompt, self.completion)
                if text
                for name in templates.placeholders(text)
            )
        if self.kind == "text" and self.column is not None:  # a text shape reads its column
            return (self.column,)
        return {"alpaca": ("instruction", "input", "output"), "tokens": ("input_ids", "labels", "loss_mask")}.get(
            self.kind, ()
        )


def _parses(template: str) -> bool:
    try:
        templates.parse_template(template)
    except templates.TemplateError:
        return False
    return True


def shape_of(template, known: Columns) -> _Shape | None:
    """What the run reads a source's rows as, from its template and its columns after `rename`."""
    settings = template.settings if template is not None else {}
    if "prompt" in settings:
        prompt, completion, chat = settings["prompt"], settings.get("completion"), settings.get("chat")
        if (
            isinstance(prompt.value, ast.Str)
            and completion is not None
            and isinstance(completion.value, ast.Str)
            and _parses(prompt.value.value)
            and _parses(completion.value.value)
        ):  # else E041 says why
            on = chat is not None and isinstance(chat.value, ast.Name) and BOOLEANS.get(chat.value.name) is True
            return _Shape("prompt_completion", prompt=prompt.value.value, completion=completion.value.value, chat=on)
        return _Shape("prompt_completion")
    if "format" in settings:
        return _Shape(settings["format"].value.name)
    if "messages" in settings:
        column, train_on = settings["messages"].value.name, settings["train_on"].value.name
    else:
        found = conventional_shape(known.names)
        if found is None:
            return None
        if found[0] == "prompt_completion":
            return _Shape("prompt_completion", prompt="{prompt}", completion="{completion}")
        if found[0] != "conversation":
            return _Shape(found[0], column=found[1])
        column, train_on = found[1], "assistant"
    tools = settings.get("tools")
    return _Shape(
        "conversation",
        column,
        train_on,
        roles=pairs(settings.get("roles")),
        keys=pairs(settings.get("keys")),
        tools=tools.value.name if tools is not None else ("tools" if "tools" in known.names else None),
    )


def _row_problem(shape: _Shape, read: dict, rename: tuple, where: tuple):
    """The runtime's shape rules on one row, in its order: None (the run takes it), _FILTERED,
    or the `RowProblem` the run would count as a bad row."""
    try:
        row = shapes.transform_row(read, rename, where)
        if row is None:
            return _FILTERED
        if shape.kind == "conversation" and shape.column is not None:  # shape_of names a conversation's column
            if shape.column not in row:
                raise shapes.RowProblem(f"missing column {shape.column!r}", column=shape.column)
            messages = shapes.conversation(row[shape.column], shape.column, shape.roles, shape.keys)
            if shape.tools:
                shapes.tools_of(row.get(shape.tools), shape.tools)
            if shape.train_on != "all":
                shapes.trained_turns(messages, shape.column, shape.train_on)
        elif shape.kind == "alpaca":
            shapes.alpaca_prompt(row)
        elif shape.kind == "tokens":
            shapes.token_row(row, vocab_size=2**31 - 1)  # the vocabulary is the run's to check
        elif shape.kind == "prompt_completion" and shape.prompt is not None and shape.completion is not None:
            parts = templates.parse_template(shape.prompt), templates.parse_template(shape.completion)
            if shape.chat:
                templates.chat_messages(*parts, row, None)
            else:
                templates.render_prompt_completion(*parts, row)
        elif shape.kind == "text" and shape.column is not None:
            templates.render_text(shape.column, row)
    except shapes.RowProblem as problem:
        return problem
    return None


def _local_file(ctx: _Context, source: DataSource, call: ast.Call) -> Path | None:
    """The file a local source call reads first (a glob's first match), if it is there."""
    path = arg(call, "path")
    if not isinstance(path, ast.Str):
        return None
    return present_file(ctx.files, source.base_dir, path.value)


def _templates_by_source(ctx: _Context) -> dict[str, Template]:
    templates: dict[str, Template] = {}
    for template in ctx.spec.templates.values():
        for name in template.sources:
            templates.setdefault(name.name, template)
    return templates


def _check_tokenizer_source(ctx: _Context, columns: dict[str, Columns | None]) -> None:
    """`train sentencepiece(...) on SOURCE` learns from text: a pre-tokenized source has none."""
    tokenizer = ctx.spec.value("model", "tokenizer")
    if not isinstance(tokenizer, ast.TrainOn):
        return
    name = tokenizer.source.name
    known = columns.get(name)
    if known is None:
        return
    shape = shape_of(_templates_by_source(ctx).get(name), known)
    if shape is not None and shape.kind == "tokens":
        ctx.report(
            Diagnostic(
                "E024",
                f"`{name}` is pre-tokenized: a tokenizer cannot be trained on its token ids",
                tokenizer.source.span,
                'set `tokenizer = hf("dir")` to the tokenizer that made the ids',
            )
        )


def _check_source_system(ctx: _Context, columns: dict[str, Columns | None]) -> None:
    """A source's `system` goes first in each conversation the chat template renders; rows that no
    chat template renders (plain prompt/completion or Alpaca, text, token ids) cannot carry it, and
    the run refuses it rather than drop it (`runtime.plan.row_shapes.system_refused`): E045."""
    templates = _templates_by_source(ctx)
    for source in ctx.spec.data.values():
        setting = source.settings.get("system")
        if setting is None or source.name in ctx.broken:
            continue
        template = templates.get(source.name)
        known = columns.get(source.name)
        settings = template.settings if template is not None else {}
        if template is None and known is None:
            continue  # the columns decide the shape, and they are not known here (hub offline): the run says so
        try:
            shape = shape_of(template, known or Columns(frozenset(), frozenset()))
        except (AttributeError, KeyError):
            continue  # a malformed template, reported already
        if shape is None:
            continue
        chat = settings.get("chat")
        chat_on = chat is not None and isinstance(chat.value, ast.Name) and chat.value.name in ("on", "true")
        refused = shapes.system_refused(shape.kind, chat_on)
        if not refused:
            continue
        reason, fix = refused
        if template is None and shape.kind in ("prompt_completion", "alpaca"):
            body = "format = alpaca" if shape.kind == "alpaca" else 'prompt = "{prompt}"  completion = "{completion}"'
            fix = (
                f"give it a template with `chat = on`, `template NAME for {source.name} {{ {body}  chat = on }}`, "
                "or remove `system`"
            )
        elif template is not None and shape.kind in ("prompt_completion", "alpaca"):
            fix = fix.replace("on its template", f"on template `{template.name}`")
        ctx.report(Diagnostic("E045", f"`system` does not apply to `{source.name}`: {reason}", setting.span, fix))


def _check_shapes(ctx: _Context, columns: dict[str, Columns | None]) -> None:
    """Run the runtime's row-shape rules on a sample of each local file: its first rows and
    rows spread to its end, so a bad row deep in a big file stops `sftc check`, not the run."""
    templates = _templates_by_source(ctx)
    for source in ctx.spec.data.values():
        known = columns.get(source.name)
        if source.name in ctx.broken or known is None or source.source.head.name in ("hf_dataset", "disk"):
            continue
        shape = shape_of(templates.get(source.name), known)
        if shape is None:
            continue
        rename = pairs(source.settings.get("rename"))
        where = where_pairs(source.settings.get("where"))
        split = source.settings.get("split")
        calls = [source.source] + ([split.value] if split is not None and isinstance(split.value, ast.Call) else [])
        for call in calls:
            _check_file_shapes(ctx, source, call, shape, rename, where)


def _check_file_shapes(
    ctx: _Context, source: DataSource, call: ast.Call, shape: _Shape, rename: tuple, where: tuple
) -> None:
    written, path = arg(call, "path"), _local_file(ctx, source, call)
    if path is None or not isinstance(written, ast.Str):  # _local_file: the path is a string
        return
    back = {new: old for old, new in rename}
    needed = [old for old, _ in rename] + [back.get(c, c) for c in (p.split(".")[0] for p, _ in where)]
    needed += [back.get(c, c) for c in shape.columns()]
    options = {
        a.name.name: a.value.value for a in call.args if isinstance(a.name, ast.Name) and isinstance(a.value, ast.Str)
    }
    try:
        sample = shape_sample(call.head.name, path, ctx.files, options, list(dict.fromkeys(needed)))
    except (ColumnsError, OSError):
        return  # reported by the column check
    if sample is None or not sample.rows:
        return
    found, filtered = [], 0
    for sampled in sample.rows:
        if sampled.row is None:
            assert sampled.problem is not None  # columns.SampledRow: a row that could not be read says why
            found.append((sampled, shapes.RowProblem(sampled.problem)))
            continue
        problem = _row_problem(shape, sampled.row, rename, where)
        if problem is _FILTERED:
            filtered += 1
        elif problem is not None:
            found.append((sampled, problem))
    shown = os.path.relpath(path, source.base_dir) if is_glob(written.value) else written.value
    checked = _sampled_note(len(sample.rows), sample) + (f" ({filtered:,} left out by `where`)" if filtered else "")
    skip = _skips_bad_rows(source)
    for sampled, problem in found[:SHOWN_ROWS]:
        place = (
            f" {sample.unit} {sampled.number:,}"
            if sampled.number is not None
            else f", the line at byte {sampled.offset:,}"
        )
        column = f", column `{problem.column}`" if problem.column else ""
        if problem.column in back:
            column += f" (`{back[problem.column]}` in the file)"
        turn = f", message {problem.turn}" if problem.turn is not None else ""
        more = f"; {len(found):,} {'has' if len(found) == 1 else 'have'} a problem" + (
            f" (the first {SHOWN_ROWS} shown)" if len(found) > SHOWN_ROWS else ""
        )
        ctx.report(
            Diagnostic(
                "W006" if skip else "E071",
                f"data {source.name}: {shown}{place}{column}{turn}: {problem.reason}",
                call.span,
                "the run skips such rows and counts them; fix them to train on them"
                if skip
                else f"fix the row, or set `on_bad_row = skip` on data {source.name} to skip and count such rows",
                checked + more,
            )
        )
    if where and filtered == len(sample.rows):
        ctx.report(
            Diagnostic(
                "W007",
                f"`where` keeps none of the {len(sample.rows):,} rows sampled from `{shown}`",
                source.settings["where"].span,
                'compare with the file\'s values: CSV values are strings (`"5"`, not `5`), `on`/`off` match true/false '
                "only",
                checked,
            )
        )


def _sampled_note(count: int, sample: Sample) -> str:
    """`checked 132 sampled rows of 10,000 lines`."""
    if sample.total is not None and not sample.estimated and count >= sample.total:
        return f"checked all {count:,} row{'s' * (count != 1)}"
    if sample.total is None:
        return f"checked the file's first {count:,} row{'s' * (count != 1)}"
    unit = "lines" if sample.unit == "line" else "rows"
    about = "about " if sample.estimated else ""
    return f"checked {count:,} sampled row{'s' * (count != 1)} of {about}{sample.total:,} {unit}"


# ---------------------------------------------------------------- train


def _mixture_sources(value: ast.Value | None) -> list[ast.Name]:
    if value is None:
        return []
    terms = value.terms if isinstance(value, ast.Sum) else (value,)
    out = []
    for term in terms:
        node = term.value if isinstance(term, ast.Weighted) else term
        if isinstance(node, ast.Name):
            out.append(node)
    return out


def _int(value) -> int | None:
    return value.value if isinstance(value, ast.Number) and isinstance(value.value, int) else None


def _check_train(ctx: _Context) -> list[str]:
    """Returns the names of the sources that are trained on."""
    spec = ctx.spec
    mixture = spec.value("train", "data")
    trained: list[str] = []
    if mixture is None:
        trained = list(spec.data)
        if not trained:
            ctx.report(
                Diagnostic("E014", "the spec declares no data", spec.anchor, 'add `data NAME = jsonl("file.jsonl")`')
            )
    else:
        seen: set[str] = set()
        for name in _mixture_sources(mixture):
            if name.name in seen:
                ctx.report(Diagnostic("E013", f"`{name.name}` appears twice in the mixture", name.span))
                continue
            seen.add(name.name)
            if _check_source_ref(ctx, name):
                trained.append(name.name)
        for declared, source in spec.data.items():
            if declared not in seen:
                ctx.report(
                    Diagnostic(
                        "W004",
                        f"data `{declared}` is declared but not trained on",
                        source.span,
                        "add it to `train.data` or remove it",
                    )
                )

    epochs, steps = spec.blocks["train"].get("epochs"), spec.blocks["train"].get("steps")
    if epochs is not None and steps is not None:
        ctx.report(
            Diagnostic(
                "E056",
                "set `epochs` or `steps`, not both",
                steps.span,
                f"`epochs` is set at {_place(epochs.span, steps.span)}",
            )
        )
    total_steps = _int(steps.value) if steps is not None else None

    batch, micro = _int(spec.value("train", "batch")), _int(spec.value("train", "micro"))
    if batch and micro and (micro > batch or batch % micro):
        ctx.report(
            Diagnostic(
                "E052",
                f"batch {batch} is not a multiple of micro {micro}",
                spec.span("train", "micro") or spec.span("train", "batch"),
                "accumulation = batch / micro must be a whole number",
            )
        )
    _check_mesh(ctx, batch, micro)
    _check_schedule(ctx, total_steps)
    checkpoint = spec.value("train", "checkpoint")
    if (
        spec.span("train", "checkpoint") is not None
        and not spec.blocks["train"]["checkpoint"].is_default
        and isinstance(checkpoint, ast.Every)
        and total_steps
        and unit_is(checkpoint.unit, "steps")
        and checkpoint.amount.value > total_steps
    ):
        ctx.report(
            Diagnostic(
                "W005",
                f"checkpoint interval {checkpoint.amount.value} exceeds the {total_steps} training steps",
                spec.span("train", "checkpoint"),
                "only the final checkpoint will be written",
            )
        )
    every = spec.value("eval", "every")
    if (
        not spec.blocks["eval"]["every"].is_default
        and isinstance(every, ast.Quantity)
        and total_steps
        and unit_is(every.unit, "steps")
        and every.amount.value > total_steps
    ):
        ctx.report(
            Diagnostic(
                "W005",
                f"eval interval {every.amount.value} exceeds the {total_steps} training steps",
                spec.span("eval", "every"),
                "only the final evaluation will run",
            )
        )
    return trained


def unit_is(name: ast.Name, unit: str) -> bool:
    from .types import unit_of

    return unit_of(name) == unit


def _check_mesh(ctx: _Context, batch: int | None, micro: int | None) -> None:
    mesh = ctx.spec.value("train", "mesh")
    if not isinstance(mesh, ast.Tuple):
        return
    span = ctx.spec.span("train", "mesh")
    sizes = {a.name.name: a.value for a in mesh.args if isinstance(a.name, ast.Name)}
    autos = [name for name, v in sizes.items() if isinstance(v, ast.Name)]
    fixed: int | float = 1
    for v in sizes.values():
        if isinstance(v, ast.Number):
            fixed *= v.value
    where = (
        f"--devices {ctx.devices}" if ctx.devices_given else f"{ctx.devices} device{'s' * (ctx.devices != 1)} present"
    )
    if len(autos) > 1:
        ctx.report(Diagnostic("E055", f"only one mesh axis can be `auto` ({' and '.join(autos)} are)", span))
        return
    if autos:
        if ctx.devices % fixed:
            ctx.report(
                Diagnostic(
                    "E055", f"the mesh's fixed axes ({fixed} devices) do not divide the device count ({where})", span
                )
            )
            return
        sizes[autos[0]] = ast.Number(ctx.devices // fixed)
    elif fixed != ctx.devices:
        ctx.report(
            Diagnostic(
                "E055",
                f"the mesh covers {fixed} devices but there are {ctx.devices} ({where})",
                span,
                "set one axis to `auto`, or pass `--devices N` to check for another machine",
            )
        )
        return
    data, fsdp = sizes["data"], sizes["fsdp"]
    # validate.py types each axis as a count or `auto` (MESH), and the one `auto` is a count by now
    assert isinstance(data, ast.Number) and isinstance(fsdp, ast.Number)
    parallel = data.value * fsdp.value
    for label, count in (("batch", batch), ("micro", micro)):
        if count and count % parallel:
            ctx.report(
                Diagnostic(
                    "E053",
                    f"{label} {count} does not split over {parallel} data-parallel devices (data x fsdp)",
                    ctx.spec.span("train", label),
                    f"make {label} a multiple of {parallel}",
                )
            )
            break


def _check_schedule(ctx: _Context, total_steps: int | None) -> None:
    schedule = ctx.spec.value("train", "schedule")
    if not isinstance(schedule, ast.Call):
        return
    warmup, decay = arg(schedule, "warmup"), arg(schedule, "decay")
    if total_steps and isinstance(warmup, ast.Quantity) and warmup.amount.value >= total_steps:
        ctx.report(
            Diagnostic(
                "E054",
                f"warmup {warmup.amount.value} steps is not shorter than training ({total_steps} steps)",
                warmup.span,
            )
        )
    if isinstance(warmup, ast.Percent) and isinstance(decay, ast.Percent) and warmup.value + decay.value > 1:
        ctx.report(
            Diagnostic(
                "E054", f"warmup {warmup.text} and decay {decay.text} add up to more than the whole run", decay.span
            )
        )
    if (
        total_steps
        and isinstance(warmup, ast.Quantity)
        and isinstance(decay, ast.Quantity)
        and warmup.amount.value + decay.amount.value > total_steps
    ):
        ctx.report(Diagnostic("E054", "warmup and decay add up to more than the whole run", decay.span))
    optimizer = ctx.spec.value("train", "optimizer")
    min_lr, lr = arg(schedule, "min_lr"), arg(optimizer, "lr") if isinstance(optimizer, ast.Call) else None
    if isinstance(min_lr, ast.Number) and isinstance(lr, ast.Number) and min_lr.value > lr.value:
        ctx.report(
            Diagnostic(
                "E057",
                f"min_lr {min_lr.text} is above the optimizer's lr {lr.text}: the schedule would raise the rate",
                min_lr.span,
                "write a share such as `min_lr = 10%`, or a rate below lr",
            )
        )


# ---------------------------------------------------------------- accept


def has_eval_rows(source: DataSource) -> bool:
    return "split" in source.settings


def benchmark_tasks(spec: Spec) -> list[str]:
    """The task names `eval.benchmarks = lm_eval(tasks = [...])` lists, in order; [] when off."""
    value = spec.value("eval", "benchmarks")
    tasks = arg(value, "tasks") if isinstance(value, ast.Call) else None
    if not isinstance(tasks, ast.List):
        return []
    return [name for item in tasks.items if (name := _task_name(item)) is not None]


def _task_name(item: ast.Value) -> str | None:
    """A task of `tasks = [...]`: a name, or a string for one that is not an identifier."""
    if isinstance(item, ast.Name):
        return item.name
    return item.value if isinstance(item, ast.Str) else None


def _check_benchmarks(ctx: _Context) -> dict[str, tuple[str, ...] | None]:
    """`benchmarks = lm_eval(...)`: lm_eval is installed, the `include` folder exists, each task is
    the spec's own or one lm_eval ships, and no task shares a data source's name (`acc(x)` would
    not say which). Returns each task's metrics where its YAML names them (None: not known here)."""
    from .benchmark_tasks import installed_tasks, local_tasks

    spec = ctx.spec
    value = spec.value("eval", "benchmarks")
    if not isinstance(value, ast.Call):
        return {}
    if not package_installed("lm_eval"):
        ctx.report(
            Diagnostic(
                "E073",
                "`lm_eval` needs the `lm_eval` package, which is not installed: pip install 'sftc[lm_eval]'",
                value.head.span,
                "or set `benchmarks = off`",
            )
        )
    own: dict = {}
    include = arg(value, "include")
    if isinstance(include, ast.Str):
        folder = spec.dir_of("eval", "benchmarks") / Path(include.value).expanduser()
        if not ctx.files.exists(folder) or ctx.files.is_file(folder):
            ctx.report(
                Diagnostic(
                    "E036",
                    f"no task folder `{include.value}`: looked for {os.path.abspath(folder)}",
                    include.span,
                    "`include` names a folder of lm_eval task YAML files, relative to the spec",
                )
            )
        elif type(ctx.files) is FileSystem:
            own = local_tasks(folder)
    tasks_node = arg(value, "tasks")
    known: dict[str, tuple[str, ...] | None] = {}
    shipped = None
    for item in tasks_node.items if isinstance(tasks_node, ast.List) else ():
        name = _task_name(item)
        if name is None:
            continue
        if name in spec.data:
            ctx.report(
                Diagnostic(
                    "E075",
                    f"benchmark task `{name}` has the name of a data source, so `acc({name})` would not say which",
                    item.span,
                    f"rename `data {name}`",
                )
            )
        if name in own:
            known[name] = own[name].metrics or None
            continue
        known[name] = None
        shipped = installed_tasks() if shipped is None else shipped
        if shipped is not None and name not in shipped:
            ctx.report(
                Diagnostic(
                    "W008",
                    f"`{name}` is not a task of the `include` folder nor one lm_eval ships, as far as its YAML "
                    "files show; the run asks lm_eval before its first step",
                    item.span,
                    did_you_mean(name, sorted(set(own) | shipped)),
                )
            )
    return known


def _check_benchmark_gate(
    ctx: _Context, gate: ast.Gate, name: str, task: ast.Name, metrics: tuple[str, ...] | None
) -> None:
    """`acc(task)`: a metric lm_eval tasks report, and one this task reports where its YAML says."""
    metric = schema.METRICS[name]
    if not (metric.benchmark or name in schema.BENCHMARK_SHARED):
        shared = [m.name for m in schema.METRICS.values() if m.benchmark] + list(schema.BENCHMARK_SHARED)
        ctx.report(
            Diagnostic(
                "E076",
                f"`{name}` is not a metric of benchmark tasks; `{task.name}` is a task of `eval.benchmarks`",
                gate.metric.span,
                f"(benchmark metrics: {', '.join(shared)})",
            )
        )
    elif metrics is not None and name not in metrics:
        ctx.report(
            Diagnostic(
                "E076",
                f"task `{task.name}` does not report `{name}`",
                gate.metric.span,
                join_help(did_you_mean(name, metrics), f"(its metric_list: {', '.join(metrics)})"),
            )
        )


def _check_accept(ctx: _Context, trained: list[str]) -> None:
    spec = ctx.spec
    generate = spec.value("eval", "generate")
    generating = not (isinstance(generate, ast.Name) and generate.name == "off")
    any_eval = any(has_eval_rows(spec.data[name]) for name in trained if name in spec.data)
    baseline = _check_baseline(ctx)
    tasks = _check_benchmarks(ctx)
    bounds: dict[str, dict[str, ast.Gate]] = {}
    for gate in spec.gates:
        name, source, _pattern = metric_parts(gate.metric)
        metric = schema.METRICS[name]
        _, gain = unwrap_gain(gate.metric)
        on_task = source is not None and source.name in tasks
        if gain or name == "review_wins":
            _check_compared(ctx, gate, metric, baseline, on_task)
        if source is not None and on_task:
            _check_benchmark_gate(ctx, gate, name, source, tasks[source.name])
            text, side = gate_key(gate)
            bounds.setdefault(text, {})[side] = gate
            continue
        if metric.benchmark:
            listed = benchmark_tasks(spec)
            what = "a data source, not a task" if source is not None and source.name in spec.data else "not a task"
            ctx.report(
                Diagnostic(
                    "E075",
                    f"`{name}` is a metric of benchmark tasks, and `{source.name if source else name}` is {what} "
                    "of `eval.benchmarks`",
                    source.span if source is not None else gate.metric.span,
                    join_help(did_you_mean(source.name, listed), f"(tasks: {', '.join(listed)})")
                    if listed and source is not None
                    else f"add `benchmarks = lm_eval(tasks = [{source.name if source else 'arc_easy'}])` to `eval`",
                )
            )
            continue
        if metric.generation and not generating:
            ctx.report(
                Diagnostic(
                    "E060",
                    f"`{name}` is a generation metric but `eval.generate` is off",
                    gate.metric.span,
                    "add `generate = greedy(max_new_tokens = 128)` to the `eval` block",
                )
            )
        if metric.data:  # counted on the data before the first step: no eval rows needed
            if source is not None:
                _check_source_ref(ctx, source)
        elif source is not None:
            if _check_source_ref(ctx, source) and not has_eval_rows(spec.data[source.name]):
                ctx.report(
                    Diagnostic(
                        "E061",
                        f"`{source.name}` has no eval rows to compute `{name}` on",
                        source.span,
                        f"add `split eval = 5%` to `data {source.name}`",
                    )
                )
        elif not any_eval and trained:
            ctx.report(
                Diagnostic(
                    "E061",
                    f"no trained source has eval rows to compute `{name}` on",
                    gate.metric.span,
                    "add `split eval = 5%` (or a separate eval file) to a data source",
                )
            )
        text, side = gate_key(gate)
        bounds.setdefault(text, {})[side] = gate
    for text, sides in bounds.items():
        upper, lower = sides.get("upper"), sides.get("lower")
        if upper is not None and lower is not None:
            high, low = _threshold(upper), _threshold(lower)
            hi, lo = high.value, low.value
            if lo > hi or (lo == hi and (upper.op == "<" or lower.op == ">")):
                ctx.report(
                    Diagnostic(
                        "E062",
                        f"`{text}` cannot be both {lower.op} {low.text} and {upper.op} {high.text}",
                        upper.span,
                    )
                )


def _threshold(gate: ast.Gate) -> ast.Number | ast.Percent:
    # validate.py's _validate_threshold refuses any other threshold (E020)
    assert isinstance(gate.value, (ast.Number, ast.Percent))
    return gate.value


def baseline_kind(spec: Spec) -> str:
    """`base`, `few_shot` or `off`: the decided `eval.baseline` (`auto`: `base` for a pretrained base)."""
    value = spec.value("eval", "baseline")
    if isinstance(value, ast.Call):
        return value.head.name
    name = value.name if isinstance(value, ast.Name) else "auto"
    if name == "auto":
        return "off" if isinstance(spec.value("model", "base"), ast.Init) else "base"
    return name


def _check_baseline(ctx: _Context) -> str:
    """An explicit baseline needs a pretrained base to compare with; returns the decided kind."""
    spec = ctx.spec
    kind = baseline_kind(spec)
    if kind != "off" and isinstance(spec.value("model", "base"), ast.Init):
        ctx.report(
            Diagnostic(
                "E066",
                f"`baseline = {kind}` compares with the base model, but this model is trained from scratch (`init`): "
                "there is no base to compare with",
                spec.span("eval", "baseline"),
                'remove `baseline`, or fine-tune a pretrained `base = hf("dir")`',
            )
        )
        return "off"
    return kind


def _check_compared(ctx: _Context, gate: ast.Gate, metric: schema.Metric, baseline: str, on_task: bool = False) -> None:
    """`gain(...)` and `review_wins` gates compare with a baseline, which must exist and have the metric
    (a benchmark task always runs on the base itself, whatever the baseline's prompts)."""
    spec = ctx.spec
    what = (
        "`review_wins` compares the tuned answers with the baseline's"
        if metric.review
        else f"`{metric_text(gate.metric)}` is the improvement over the baseline"
    )
    if baseline == "off":
        scratch = isinstance(spec.value("model", "base"), ast.Init)
        why = (
            "this model is trained from scratch (`init`), so there is none"
            if scratch
            else "the spec sets `baseline = off`"
        )
        ctx.report(
            Diagnostic(
                "E066",
                f"{what}, but {why}",
                gate.metric.span,
                'remove the gate, or fine-tune a pretrained `base = hf("dir")`'
                if scratch
                else "set `baseline = base` (or `few_shot(k = 3)`) in the `eval` block",
            )
        )
    elif baseline == "few_shot" and not metric.generation and not on_task:
        ctx.report(
            Diagnostic(
                "E066",
                f"{what}, but a `few_shot` baseline is scored on generations only: it has no `{metric.name}`",
                gate.metric.span,
                "gate the gain of a generation metric, or set `baseline = base`",
            )
        )


def _check_output(ctx: _Context) -> None:
    directory = ctx.spec.value("output", "dir")
    if isinstance(directory, ast.Str):
        found, problems = placeholders(directory)
        for problem in problems:
            ctx.report(problem)
        for placeholder in found:
            if placeholder.path != "name":
                ctx.report(
                    Diagnostic(
                        "E040",
                        f"`{{{placeholder.path}}}` is not known in `output.dir`",
                        placeholder.span,
                        "only `{name}` (the spec's name) is filled in",
                    )
                )
    _check_trackers(ctx)
    _check_gguf_tokenizer(ctx)


def _check_gguf_tokenizer(ctx: _Context) -> None:
    """`export = gguf` with a trained unigram SentencePiece tokenizer: llama.cpp tokenizes every
    SentencePiece (`llama`) vocabulary by merging pieces, as BPE, so the export would be refused
    after training (`runtime.checkpoints.gguf_export`); say so before the first step."""
    export, tokenizer = ctx.spec.value("output", "export"), ctx.spec.value("model", "tokenizer")
    if not (isinstance(export, ast.Name) and export.name == "gguf" and isinstance(tokenizer, ast.TrainOn)):
        return
    kind = arg(tokenizer.call, "model_type")
    if isinstance(kind, ast.Name) and kind.name == "bpe":
        return
    ctx.report(
        Diagnostic(
            "E077",
            "`export = gguf` with a unigram SentencePiece tokenizer: llama.cpp tokenizes SentencePiece vocabularies "
            "as BPE, so it would read other tokens than the run trained on",
            (kind or tokenizer.call).span,
            "set `model_type = bpe` in `train sentencepiece(...)`, or `export = hf`",
        )
    )


def _check_trackers(ctx: _Context) -> None:
    """`track = [...]`: each tracker's package is installed, and no credentials sit in the spec
    (the spec is copied into every run directory)."""
    track = ctx.spec.value("output", "track")
    for item in track.items if isinstance(track, ast.List) else ():
        head = item.head if isinstance(item, ast.Call) else item
        if not isinstance(head, ast.Name):
            continue
        package = schema.TRACKER_PACKAGES.get(head.name)
        if package is not None and not package_installed(package):
            ctx.report(
                Diagnostic(
                    "E073",
                    f"`{head.name}` needs the `{package}` package, which is not installed: "
                    f"pip install 'sftc[{head.name}]'",
                    head.span,
                    f"or remove `{head.name}` from `track`",
                )
            )
        uri = arg(item, "uri") if isinstance(item, ast.Call) else None
        if isinstance(uri, ast.Str):
            parts = urlsplit(uri.value)
            if parts.username or parts.password:
                ctx.report(
                    Diagnostic(
                        "E074",
                        f"the `uri` of `{head.name}` holds credentials, which the run directory would keep",
                        uri.span,
                        "drop them from the uri and set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD "
                        "(or MLFLOW_TRACKING_TOKEN) in the environment",
                    )
                )


def package_installed(name: str) -> bool:
    """Whether `import name` would find the package, without importing it (`sftc check` stays fast)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


# ---------------------------------------------------------------- entry points


def check_spec(
    spec: Spec, devices: int | None = None, offline: bool = False, files: FileSystem | None = None
) -> list[Diagnostic]:
    ctx = _Context(
        spec, files or FileSystem(), devices or detect_devices(), offline_mode(offline), [], devices is not None
    )
    _check_model(ctx)
    columns = _check_data(ctx)
    _check_templates(ctx, columns)
    _check_tokenizer_source(ctx, columns)
    _check_source_system(ctx, columns)
    _check_shapes(ctx, columns)
    trained = _check_train(ctx)
    _check_accept(ctx, trained)
    _check_output(ctx)
    return ctx.problems


def check_spec_file(
    path: str | Path, devices: int | None = None, offline: bool = False, files: FileSystem | None = None
) -> tuple[Spec | None, list[Diagnostic]]:
    """Everything `sftc check` proves about one spec; diagnostics sorted by place."""
    spec, problems = load_spec(path, files)
    if spec is not None:
        problems = problems + check_spec(spec, devices, offline, files)
    unique = list(dict.fromkeys(problems))
    return spec, sorted(unique, key=Diagnostic.sort_key)
