"""Whole-spec checks on a resolved Spec: references, files and columns, arithmetic,
acceptance consistency. Per-file checks (syntax, keys, types) ran in validate.py.

`check_spec_file` is what `sftc check` calls: load, resolve, check, sorted diagnostics.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from runtime.gguf_header import GgufError, check_supported, is_gguf_path, read_header
from runtime.hub import hub_reachable, offline_requested
from runtime.vocab_range import explain, fixed_pieces, smallest_vocab

from . import ast, schema
from .columns import Columns, ColumnsError, read_columns
from .corpus import held_out_by_fraction, training_characters
from .devices import detect_devices
from .diagnostics import Diagnostic, did_you_mean, join_help
from .files import FileSystem
from .placeholders import placeholders
from .resolve import DataSource, Spec, load_spec
from .validate import gate_key, metric_parts, metric_text, unwrap_gain


def arg(call: ast.Call | None, name: str) -> ast.Value | None:
    if call is None:
        return None
    found = call.kwarg(name)
    return found.value if found is not None else None


def offline_mode(flag: bool) -> bool:
    return flag or offline_requested()


def looks_like_hub_id(text: str) -> bool:
    return not text.startswith((".", "/", "~")) and text.count("/") == 1 and " " not in text


@dataclass
class _Context:
    spec: Spec
    files: FileSystem
    devices: int
    offline: bool
    problems: list[Diagnostic]
    devices_given: bool = False
    _hub: bool | None = None

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
        ctx.report(Diagnostic("E014", "the spec needs a `model` block", spec.anchor, "add `model { base = hf(\"dir\") }` or `model { base = init llama(...) }`"))
        return
    base = spec.value("model", "base")
    if base is None:
        ctx.report(Diagnostic("E014", "`model` needs `base`", spec.block_spans["model"], "add `base = hf(\"dir\")` or `base = init llama(...)`"))
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
                    "set `tokenizer = train sentencepiece(vocab = N) on SOURCE`, `hf(\"dir\")` or `sentencepiece(\"file.model\")`",
                )
            )
        if isinstance(adapter, ast.Call):
            ctx.report(Diagnostic("E024", "a LoRA adapter needs a pretrained base; an `init` model trains in full", adapter.span, "remove `adapter`, or use `base = hf(\"dir\")`"))
        vocab = arg(base.call, "vocab")
        if isinstance(tokenizer, ast.TrainOn) and isinstance(vocab, ast.Number):
            trained = arg(tokenizer.call, "vocab")
            if isinstance(trained, ast.Number) and trained.value > vocab.value:
                ctx.report(Diagnostic("E024", f"model vocab {vocab.value} is smaller than the tokenizer's {trained.value}", vocab.span, "leave `vocab` out to use the tokenizer's size"))
        longest, seq_len = arg(base.call, "max_seq_len"), spec.value("train", "seq_len")
        if isinstance(longest, ast.Number) and isinstance(seq_len, ast.Number) and seq_len.value > longest.value:
            ctx.report(Diagnostic("E024", f"train.seq_len {seq_len.value} is longer than the model's max_seq_len {longest.value}", spec.span("train", "seq_len") or longest.span, f"raise `max_seq_len` to at least {seq_len.value}"))
        dim, heads, head_dim = arg(base.call, "dim"), arg(base.call, "heads"), arg(base.call, "head_dim")
        kv = arg(base.call, "kv_heads")
        if isinstance(heads, ast.Number) and isinstance(kv, ast.Number) and heads.value % kv.value:
            ctx.report(Diagnostic("E024", f"heads ({heads.value}) must be a multiple of kv_heads ({kv.value})", kv.span))
        if head_dim is None and isinstance(dim, ast.Number) and isinstance(heads, ast.Number) and dim.value % heads.value:
            ctx.report(Diagnostic("E024", f"dim ({dim.value}) must be a multiple of heads ({heads.value})", dim.span, "or set `head_dim`"))
    if isinstance(tokenizer, ast.Call):
        path = arg(tokenizer, "path")
        if isinstance(path, ast.Str):
            base_dir = spec.dir_of("model", "tokenizer")
            if tokenizer.head.name == "sentencepiece" and not ctx.files.is_file(base_dir / path.value):
                ctx.report(Diagnostic("E035", f"tokenizer file `{path.value}` not found", path.span, f"paths are relative to {base_dir}"))
            if tokenizer.head.name == "hf":
                _check_model_dir(ctx, tokenizer, base_dir, what="tokenizer")
    if isinstance(tokenizer, ast.TrainOn) and _check_source_ref(ctx, tokenizer.source):
        _check_tokenizer_vocab(ctx, tokenizer)
    export = spec.value("output", "export")
    if isinstance(export, ast.Name) and export.name == "peft":
        if not isinstance(adapter, ast.Call):
            ctx.report(Diagnostic("E070", "`export = peft` needs `adapter = lora(...)`", spec.span("output", "export"), "use `export = hf` for a full fine-tune"))
        elif isinstance(base, ast.Init):
            ctx.report(Diagnostic("E070", "`export = peft` needs a pretrained `base = hf(...)` for the adapter to apply to", spec.span("output", "export"), "use `export = hf`"))


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
            ctx.report(Diagnostic("E047", f"vocab {vocab.value} is too small: it needs {fixed_pieces(byte_fallback)} + a piece per distinct character of `{source.name}`'s text", vocab.span, f"set `vocab` above {smallest_vocab(0, byte_fallback)}"))
        return
    needed = characters.required(min_texts=2 if held_out_by_fraction(source) else 1)
    if vocab.value < smallest_vocab(needed, byte_fallback):
        ctx.report(
            Diagnostic(
                "E047",
                f"vocab {vocab.value} is too small for the text of `{source.name}`: it needs {explain(needed, byte_fallback)}",
                vocab.span,
                f"set `vocab` to at least {smallest_vocab(needed, byte_fallback)}",
            )
        )


def _check_model_dir(ctx: _Context, call: ast.Call, base_dir: Path, what: str = "model") -> None:
    path = arg(call, "path")
    if not isinstance(path, ast.Str):
        return
    local = (base_dir / path.value) if not os.path.isabs(path.value) else Path(path.value)
    if is_gguf_path(path.value):
        _check_gguf(ctx, path, local, base_dir)
        return
    if ctx.files.exists(local):
        if not ctx.files.is_file(local / ("config.json" if what == "model" else "tokenizer_config.json")) and not ctx.files.is_file(local / "tokenizer.json"):
            ctx.report(Diagnostic("E036", f"`{path.value}` is not a Hugging Face {what} directory (no config.json)", path.span))
        return
    if looks_like_hub_id(path.value):
        if not ctx.hub():
            ctx.report(Diagnostic("W001", f"{what} `{path.value}` not checked: {ctx.hub_skip_reason()}", path.span, "it must be in the Hugging Face cache or reachable when the run starts"))
        return
    ctx.report(Diagnostic("E036", f"{what} directory `{path.value}` not found", path.span, f"paths are relative to {base_dir}"))


def _check_gguf(ctx: _Context, path: ast.Str, local: Path, base_dir: Path) -> None:
    """`hf("model.gguf")`: the file exists, is a GGUF, and holds an architecture sftc loads
    (its header only is read: milliseconds, whatever the size of the weights)."""
    if not ctx.files.is_file(local):
        problem = "is a directory, not a GGUF file" if ctx.files.exists(local) else "not found"
        ctx.report(Diagnostic("E036", f"GGUF file `{path.value}` {problem}", path.span, f"paths are relative to {base_dir}"))
        return
    if type(ctx.files) is not FileSystem:
        return  # a file at a git revision: its header is not read
    try:
        check_supported(read_header(local))
    except (GgufError, OSError) as error:
        message = str(error).removeprefix(f"{local}: ")
        ctx.report(Diagnostic("E037", f"`{path.value}`: {message}", path.span, "use a GGUF file of a Llama-architecture model, or a Hugging Face checkpoint directory"))


# ---------------------------------------------------------------- data


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


def _source_columns(ctx: _Context, source: DataSource, call: ast.Call) -> Columns | None:
    """Columns of a source call (None when unknown); reports missing/empty/broken files."""
    kind = call.head.name
    options = {a.name.name: a.value.value for a in call.args if a.name and isinstance(a.value, ast.Str)}
    if kind == "hf_dataset":
        return _hub_columns(ctx, call, options)
    path_node = arg(call, "path")
    if not isinstance(path_node, ast.Str):
        return None
    pattern = source.base_dir / path_node.value
    if any(ch in path_node.value for ch in "*?["):
        matches = ctx.files.glob(pattern)
        if not matches:
            ctx.report(Diagnostic("E035", f"no file matches `{path_node.value}`", path_node.span, f"paths are relative to {source.base_dir}"))
            return None
        path = matches[0]
    else:
        path = pattern
        exists = ctx.files.exists(path) if kind == "disk" else ctx.files.is_file(path)
        if not exists:
            ctx.report(Diagnostic("E035", f"data file `{path_node.value}` not found", path_node.span, f"paths are relative to {source.base_dir}"))
            return None
    if kind != "disk" and type(ctx.files) is FileSystem and path.stat().st_size == 0:
        ctx.report(Diagnostic("E035", f"data file `{path_node.value}` is empty", path_node.span))
        return None
    try:
        return read_columns(kind, path, ctx.files, options)
    except ColumnsError as error:
        ctx.report(Diagnostic("E046", f"data file `{path_node.value}` {error}", path_node.span, f"it should be {kind}"))
        return None


def _hub_columns(ctx: _Context, call: ast.Call, options: dict) -> Columns | None:
    name = options.get("name") or ""
    if not ctx.hub():
        ctx.report(Diagnostic("W001", f"columns of hub dataset `{name}` not checked: {ctx.hub_skip_reason()}", call.span, "placeholders are checked when the hub is reachable"))
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
    columns: dict[str, Columns | None] = {}
    for source in ctx.spec.data.values():
        columns[source.name] = _source_columns(ctx, source, source.source)
        split = source.settings.get("split")
        if split is not None and isinstance(split.value, ast.Call):
            eval_columns = _source_columns(ctx, source, split.value)
            if columns[source.name] is not None and eval_columns is not None:
                columns[source.name] = Columns(
                    columns[source.name].names & eval_columns.names, columns[source.name].nested & eval_columns.nested
                )
    return columns


def _check_templates(ctx: _Context, columns: dict[str, Columns | None]) -> None:
    covered: dict[str, ast.Name] = {}
    for template in ctx.spec.templates.values():
        settings = template.settings
        has_messages = "messages" in settings
        has_prompt = "prompt" in settings or "completion" in settings
        where = f"template `{template.name}`"
        anchor = template.span
        if has_messages and has_prompt:
            first = settings.get("prompt") or settings.get("completion")
            ctx.report(Diagnostic("E042", f"{where} mixes `messages` with `prompt`/`completion`", first.span, "a template is either prompt/completion or messages"))
        elif not has_messages and not has_prompt:
            ctx.report(Diagnostic("E042", f"{where} needs `prompt` and `completion`, or `messages`", anchor))
        elif has_prompt and "completion" not in settings:
            ctx.report(Diagnostic("E042", f"{where} needs `completion`", anchor, "the completion is the text the model learns to write"))
        elif has_prompt and "prompt" not in settings:
            ctx.report(Diagnostic("E042", f"{where} needs `prompt`", anchor))
        if not has_messages and settings.get("train_on") is not None and not settings["train_on"].is_default:
            ctx.report(Diagnostic("E042", "`train_on` applies to `messages` templates only", settings["train_on"].span))
        chat = settings.get("chat")
        chat_on = chat is not None and isinstance(chat.value, ast.Name) and chat.value.name in ("on", "true")
        if has_messages and chat_on:
            ctx.report(Diagnostic("E042", "`chat = on` wraps prompt/completion; a `messages` template is rendered with the chat template already", chat.span))
        if "system" in settings and not chat_on:
            ctx.report(Diagnostic("E042", "`system` needs `chat = on`", settings["system"].span, "add `chat = on`, or put the system message in the conversation"))
        for source in template.sources:
            if not _check_source_ref(ctx, source):
                continue
            if source.name in covered:
                ctx.report(Diagnostic("E043", f"`{source.name}` already has a template", source.span, f"see line {covered[source.name].span.line}; a source takes one template"))
                continue
            covered[source.name] = source
            known = columns.get(source.name)
            _check_template_columns(ctx, template, source.name, known)
    for name, source in ctx.spec.data.items():
        if name in covered or columns.get(name) is None:
            continue
        known = columns[name]
        if not ((known.has("prompt") and known.has("completion")) or known.has("messages") or known.has("text")):
            ctx.report(
                Diagnostic(
                    "E044",
                    f"`{name}` has no template and no `prompt`/`completion`, `messages` or `text` columns",
                    source.span,
                    f"add `template NAME for {name} {{ prompt = \"...\"  completion = \"...\" }}` (columns: {', '.join(known.all)})",
                )
            )


def _check_template_columns(ctx: _Context, template, source: str, known: Columns | None) -> None:
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
                ctx.report(
                    Diagnostic(
                        "E040",
                        f"`{{{placeholder.path}}}` is not a column of `{source}`",
                        placeholder.span,
                        join_help(did_you_mean(placeholder.path, known.all), f"(columns: {', '.join(known.all)})"),
                    )
                )
    messages = template.settings.get("messages")
    if messages is not None and isinstance(messages.value, ast.Name) and known is not None:
        if not known.has(messages.value.name):
            ctx.report(
                Diagnostic(
                    "E040",
                    f"`{messages.value.name}` is not a column of `{source}`",
                    messages.value.span,
                    join_help(did_you_mean(messages.value.name, known.all), f"(columns: {', '.join(known.all)})"),
                )
            )


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
            ctx.report(Diagnostic("E014", "the spec declares no data", spec.anchor, "add `data NAME = jsonl(\"file.jsonl\")`"))
    else:
        seen: set[str] = set()
        for name in _mixture_sources(mixture):
            if name.name in seen:
                ctx.report(Diagnostic("E013", f"`{name.name}` appears twice in the mixture", name.span))
                continue
            seen.add(name.name)
            if _check_source_ref(ctx, name):
                trained.append(name.name)
        for name, source in spec.data.items():
            if name not in seen:
                ctx.report(Diagnostic("W004", f"data `{name}` is declared but not trained on", source.span, "add it to `train.data` or remove it"))

    epochs, steps = spec.blocks["train"].get("epochs"), spec.blocks["train"].get("steps")
    if epochs is not None and steps is not None:
        ctx.report(Diagnostic("E056", "set `epochs` or `steps`, not both", steps.span, f"`epochs` is set at line {epochs.span.line}"))
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
    if spec.span("train", "checkpoint") is not None and not spec.blocks["train"]["checkpoint"].is_default and isinstance(checkpoint, ast.Every) and total_steps and unit_is(checkpoint.unit, "steps") and checkpoint.amount.value > total_steps:
        ctx.report(Diagnostic("W005", f"checkpoint interval {checkpoint.amount.value} exceeds the {total_steps} training steps", spec.span("train", "checkpoint"), "only the final checkpoint will be written"))
    every = spec.value("eval", "every")
    if not spec.blocks["eval"]["every"].is_default and isinstance(every, ast.Quantity) and total_steps and unit_is(every.unit, "steps") and every.amount.value > total_steps:
        ctx.report(Diagnostic("W005", f"eval interval {every.amount.value} exceeds the {total_steps} training steps", spec.span("eval", "every"), "only the final evaluation will run"))
    return trained


def unit_is(name: ast.Name, unit: str) -> bool:
    from .types import unit_of

    return unit_of(name) == unit


def _check_mesh(ctx: _Context, batch: int | None, micro: int | None) -> None:
    mesh = ctx.spec.value("train", "mesh")
    if not isinstance(mesh, ast.Tuple):
        return
    span = ctx.spec.span("train", "mesh")
    sizes = {a.name.name: a.value for a in mesh.args if a.name}
    autos = [name for name, v in sizes.items() if isinstance(v, ast.Name)]
    fixed = 1
    for v in sizes.values():
        if isinstance(v, ast.Number):
            fixed *= v.value
    where = f"--devices {ctx.devices}" if ctx.devices_given else f"{ctx.devices} device{'s' * (ctx.devices != 1)} present"
    if len(autos) > 1:
        ctx.report(Diagnostic("E055", f"only one mesh axis can be `auto` ({' and '.join(autos)} are)", span))
        return
    if autos:
        if ctx.devices % fixed:
            ctx.report(Diagnostic("E055", f"the mesh's fixed axes ({fixed} devices) do not divide the device count ({where})", span))
            return
        sizes[autos[0]] = ast.Number(ctx.devices // fixed)
    elif fixed != ctx.devices:
        ctx.report(Diagnostic("E055", f"the mesh covers {fixed} devices but there are {ctx.devices} ({where})", span, "set one axis to `auto`, or pass `--devices N` to check for another machine"))
        return
    parallel = sizes["data"].value * sizes["fsdp"].value
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
        ctx.report(Diagnostic("E054", f"warmup {warmup.amount.value} steps is not shorter than training ({total_steps} steps)", warmup.span))
    if isinstance(warmup, ast.Percent) and isinstance(decay, ast.Percent) and warmup.value + decay.value > 1:
        ctx.report(Diagnostic("E054", f"warmup {warmup.text} and decay {decay.text} add up to more than the whole run", decay.span))
    if total_steps and isinstance(warmup, ast.Quantity) and isinstance(decay, ast.Quantity) and warmup.amount.value + decay.amount.value > total_steps:
        ctx.report(Diagnostic("E054", "warmup and decay add up to more than the whole run", decay.span))
    min_lr, lr = arg(schedule, "min_lr"), arg(ctx.spec.value("train", "optimizer"), "lr")
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


def _check_accept(ctx: _Context, trained: list[str]) -> None:
    spec = ctx.spec
    generate = spec.value("eval", "generate")
    generating = not (isinstance(generate, ast.Name) and generate.name == "off")
    any_eval = any(has_eval_rows(spec.data[name]) for name in trained if name in spec.data)
    baseline = _check_baseline(ctx)
    bounds: dict[str, dict[str, ast.Gate]] = {}
    for gate in spec.gates:
        name, source, _pattern = metric_parts(gate.metric)
        metric = schema.METRICS[name]
        _, gain = unwrap_gain(gate.metric)
        if gain or name == "review_wins":
            _check_compared(ctx, gate, metric, baseline)
        if metric.generation and not generating:
            ctx.report(
                Diagnostic(
                    "E060",
                    f"`{name}` is a generation metric but `eval.generate` is off",
                    gate.metric.span,
                    "add `generate = greedy(max_new_tokens = 128)` to the `eval` block",
                )
            )
        if source is not None:
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
            ctx.report(Diagnostic("E061", f"no trained source has eval rows to compute `{name}` on", gate.metric.span, "add `split eval = 5%` (or a separate eval file) to a data source"))
        text, side = gate_key(gate)
        bounds.setdefault(text, {})[side] = gate
    for text, sides in bounds.items():
        upper, lower = sides.get("upper"), sides.get("lower")
        if upper is not None and lower is not None:
            hi, lo = upper.value.value, lower.value.value
            if lo > hi or (lo == hi and (upper.op == "<" or lower.op == ">")):
                ctx.report(Diagnostic("E062", f"`{text}` cannot be both {lower.op} {lower.value.text} and {upper.op} {upper.value.text}", upper.span))


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
                f"`baseline = {kind}` compares with the base model, but this model is trained from scratch (`init`): there is no base to compare with",
                spec.span("eval", "baseline"),
                "remove `baseline`, or fine-tune a pretrained `base = hf(\"dir\")`",
            )
        )
        return "off"
    return kind


def _check_compared(ctx: _Context, gate: ast.Gate, metric: schema.Metric, baseline: str) -> None:
    """`gain(...)` and `review_wins` gates compare with a baseline, which must exist and have the metric."""
    spec = ctx.spec
    what = "`review_wins` compares the tuned answers with the baseline's" if metric.review else f"`{metric_text(gate.metric)}` is the improvement over the baseline"
    if baseline == "off":
        scratch = isinstance(spec.value("model", "base"), ast.Init)
        ctx.report(
            Diagnostic(
                "E066",
                f"{what}, but {'this model is trained from scratch (`init`), so there is none' if scratch else 'the spec sets `baseline = off`'}",
                gate.metric.span,
                "remove the gate, or fine-tune a pretrained `base = hf(\"dir\")`" if scratch else "set `baseline = base` (or `few_shot(k = 3)`) in the `eval` block",
            )
        )
    elif baseline == "few_shot" and not metric.generation:
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
                ctx.report(Diagnostic("E040", f"`{{{placeholder.path}}}` is not known in `output.dir`", placeholder.span, "only `{name}` (the spec's name) is filled in"))


# ---------------------------------------------------------------- entry points


def check_spec(spec: Spec, devices: int | None = None, offline: bool = False, files: FileSystem | None = None) -> list[Diagnostic]:
    ctx = _Context(spec, files or FileSystem(), devices or detect_devices(), offline_mode(offline), [], devices is not None)
    _check_model(ctx)
    columns = _check_data(ctx)
    _check_templates(ctx, columns)
    trained = _check_train(ctx)
    _check_accept(ctx, trained)
    _check_output(ctx)
    return ctx.problems


def check_spec_file(path: str | Path, devices: int | None = None, offline: bool = False, files: FileSystem | None = None) -> tuple[Spec | None, list[Diagnostic]]:
    """Everything `sftc check` proves about one spec; diagnostics sorted by place."""
    spec, problems = load_spec(path, files)
    if spec is not None:
        problems = problems + check_spec(spec, devices, offline, files)
    unique = list(dict.fromkeys(problems))
    return spec, sorted(unique, key=Diagnostic.sort_key)
