"""A checked, resolved Spec -> the Plan the runtime executes.

Every value comes out of the syntax tree here, once: the runtime never sees an
AST. Paths become absolute (relative to the file that wrote them), shares of the
learning rate become absolute rates, units become step counts. What depends on
the data (steps of an `epochs` run, warmup given as a share) is left for
`runtime.preflight.prepare`, which fills it in before a run starts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import TypeVar

from runtime.plan.data_plan import DataPlan, Dedup, EvalSplit, SourceSpec, TemplateSpec
from runtime.plan.hub_policy import local_path_reason
from runtime.plan.run_plan import (
    BaselinePlan,
    BenchmarkPlan,
    EvalPlan,
    GatePlan,
    GenerationPlan,
    LoraPlan,
    ModelPlan,
    OutputPlan,
    Plan,
    TokenizerPlan,
    TrackerPlan,
    TrainPlan,
)
from runtime.plan.settings import (
    ARCHITECTURES,
    LENGTH,
    OPTIMIZERS,
    SCHEDULES,
    SHARE_OF_LR,
    TOKENIZER_TRAINERS,
    Length,
    Schedule,
)

from . import ast, schema
from .check import arg, baseline_kind, benchmark_tasks, pairs, where_pairs
from .emit import emit_spec
from .resolve import DataSource, Spec
from .types import BOOLEANS, BYTE_UNITS, unit_of
from .validate import metric_parts, metric_text, unwrap_gain

_Node = TypeVar("_Node")


def _as(node: ast.Value | None, kind: type[_Node]) -> _Node:
    """`node` as the kind of value checking made it (lowering assumes a checked spec)."""
    if isinstance(node, kind):
        return node
    raise TypeError(f"not {kind.__name__}: {node!r}")


def _number(node: ast.Value | None) -> int | float:
    """The number of a Number, or of a Percent (as a fraction)."""
    if isinstance(node, (ast.Number, ast.Percent)):
        return node.value
    raise TypeError(f"not a number: {node!r}")


def _int(node: ast.Value | None) -> int:
    """The number of a Number that checking requires whole (`Num(integer = True)`)."""
    if isinstance(node, ast.Number) and isinstance(node.value, int):
        return node.value
    raise TypeError(f"not an integer: {node!r}")


def _key(arg: ast.Arg) -> str:
    """The parameter a named argument of a call or a record names."""
    if isinstance(arg.name, ast.Name):
        return arg.name.name
    raise TypeError(f"not a named argument: {arg!r}")


def _unit(name: ast.Name) -> str:
    """A checked unit's canonical name (`types.unit_of`)."""
    unit = unit_of(name)
    if unit is None:
        raise TypeError(f"not a unit: {name!r}")
    return unit


def _py(node):
    """A plain Python value of a simple node."""
    if node is None:
        return None
    if isinstance(node, (ast.Number, ast.Str)):
        return node.value
    if isinstance(node, ast.Percent):
        return node.value
    if isinstance(node, ast.Name):
        return BOOLEANS.get(node.name, node.name)
    if isinstance(node, ast.List):
        return tuple(_py(item) for item in node.items)
    raise TypeError(f"not a simple value: {node!r}")


def _kwargs(call: ast.Call) -> dict:
    return {_key(a): _py(a.value) for a in call.args if a.name is not None}


def _local_or_hub(text: str, base_dir: Path, revision: str | None = None) -> str:
    """An absolute path for a local path (even a missing one, so the run's error names what was
    looked for), `text` itself for a hub id (runtime.plan.hub_policy.local_path_reason decides which)."""
    candidate = base_dir / Path(text).expanduser()  # an absolute path stays itself
    if candidate.exists():
        return str(candidate.resolve())
    return text if local_path_reason(text, base_dir, revision) is None else os.path.abspath(candidate)


# ---------------------------------------------------------------- data


def _source_spec(name: str, call: ast.Call, base_dir: Path, settings: dict) -> SourceSpec:
    kind = call.head.name
    options = _kwargs(call)
    overflow = _py(settings["overflow"].value) if "overflow" in settings else "drop"
    on_bad_row = _py(settings["on_bad_row"].value) if "on_bad_row" in settings else "error"
    rename, where = pairs(settings.get("rename")), where_pairs(settings.get("where"))
    system = settings.get("system")
    system_text = _as(system.value, ast.Str).value if system is not None else None
    dedup = _dedup(settings.get("dedup"))
    evaluation = None
    split = settings.get("split")
    if split is not None:
        value = split.value
        if isinstance(value, ast.Call):
            # the eval file is read like its owner: same overflow, bad rows, renames, filter, system message
            inherited = {
                k: v for k, v in settings.items() if k in ("overflow", "on_bad_row", "rename", "where", "system")
            }
            evaluation = EvalSplit(source=_source_spec(f"{name}/eval", value, base_dir, inherited))
        elif isinstance(value, ast.Seeded):
            evaluation = EvalSplit(fraction=_number(value.value), seed=_int(value.seed))
        else:
            evaluation = EvalSplit(fraction=_number(value), seed=0)
    if kind == "hf_dataset":
        return SourceSpec(
            name=name,
            kind=kind,
            hub=options["name"],
            split=options.get("split"),
            subset=options.get("subset"),
            revision=options.get("revision"),
            eval=evaluation,
            overflow=overflow,
            on_bad_row=on_bad_row,
            rename=rename,
            where=where,
            system=system_text,
            dedup=dedup,
        )
    path = Path(options["path"]).expanduser()
    path = path if path.is_absolute() else base_dir / path
    delimiter = options.get("delimiter")
    return SourceSpec(
        name=name,
        kind=kind,
        paths=(os.path.normpath(path),),
        field=options.get("field"),
        delimiter=delimiter if kind == "csv" and delimiter not in (None, ",") else None,
        eval=evaluation,
        overflow=overflow,
        on_bad_row=on_bad_row,
        rename=rename,
        where=where,
        system=system_text,
        dedup=dedup,
    )


def _dedup(setting) -> Dedup | None:
    """`dedup = exact` or `dedup = near(0.9)` (the resolver named the threshold and filled its default)."""
    if setting is None:
        return None
    value = setting.value
    if isinstance(value, ast.Call):
        return Dedup("near", float(_kwargs(value).get("threshold", 0.9)))
    return Dedup(_as(value, ast.Name).name)


def _template_spec(settings: dict) -> TemplateSpec:
    if "messages" in settings:
        tools = settings.get("tools")
        return TemplateSpec(
            messages=_as(settings["messages"].value, ast.Name).name,
            train_on=_py(settings["train_on"].value),
            roles=pairs(settings.get("roles")),
            keys=pairs(settings.get("keys")),
            tools=_as(tools.value, ast.Name).name if tools is not None else None,
        )
    system = settings.get("system")
    chat = _py(settings["chat"].value) if "chat" in settings else False
    system_text = _as(system.value, ast.Str).value if system is not None else None
    if "format" in settings:
        shape = _as(settings["format"].value, ast.Name).name
        return TemplateSpec(format=shape, chat=chat, system=system_text)
    return TemplateSpec(
        prompt=_as(settings["prompt"].value, ast.Str).value,
        completion=_as(settings["completion"].value, ast.Str).value,
        chat=chat,
        system=system_text,
    )


def _mixture(value: ast.Value) -> tuple[list[str], dict[str, float] | None]:
    terms = value.terms if isinstance(value, ast.Sum) else (value,)
    names: list[str] = []
    weights: dict[str, float] = {}
    for term in terms:
        if isinstance(term, ast.Weighted):
            name = _as(term.value, ast.Name).name
            names.append(name)
            weights[name] = float(_number(term.weight))
        else:
            names.append(_as(term, ast.Name).name)
    return names, (weights or None)


def _data_plan(spec: Spec) -> DataPlan:
    mixture = spec.value("train", "data")
    names, weights = _mixture(mixture) if mixture is not None else (list(spec.data), None)
    sources = tuple(_source(spec.data[n]) for n in names)
    templates = {}
    for template in spec.templates.values():
        for source in template.sources:
            if source.name in names:
                templates[source.name] = _template_spec(template.settings)
    steps = spec.value("train", "steps")
    epochs = spec.value("train", "epochs")
    return DataPlan(
        sources=sources,
        templates=templates,
        weights=weights,
        seq_len=_py(spec.value("train", "seq_len")),
        packing=_py(spec.value("train", "packing")),
        seed=_py(spec.value("train", "seed")),
        global_batch_size=_py(spec.value("train", "batch")),
        epochs=None if steps is not None else (_py(epochs) if epochs is not None else 1),
        steps=_py(steps),
    )


def _source(source: DataSource) -> SourceSpec:
    return _source_spec(source.name, source.source, source.base_dir, source.settings)


# ---------------------------------------------------------------- model


def _model_plan(spec: Spec) -> ModelPlan:
    base = spec.value("model", "base")
    tokenizer = spec.value("model", "tokenizer")
    adapter = spec.value("model", "adapter")
    base_dir = spec.dir_of("model", "base")
    if isinstance(tokenizer, ast.TrainOn):
        source = spec.data[tokenizer.source.name]
        training = TOKENIZER_TRAINERS[tokenizer.call.head.name](**_kwargs(tokenizer.call))
        tokenizer_plan = TokenizerPlan("train", source=_source(source), training=training)
    elif isinstance(tokenizer, ast.Call):
        revision = _kwargs(tokenizer).get("revision") if tokenizer.head.name == "hf" else None
        path = _local_or_hub(_py(arg(tokenizer, "path")), spec.dir_of("model", "tokenizer"), revision)
        tokenizer_plan = TokenizerPlan(tokenizer.head.name, path=path, revision=revision)
    else:
        tokenizer_plan = TokenizerPlan("base")
    lora = None
    if isinstance(adapter, ast.Call):
        options = _kwargs(adapter)
        lora = LoraPlan(options["rank"], float(options["alpha"]), float(options["dropout"]), tuple(options["targets"]))
    dtype = _py(spec.value("model", "dtype"))
    quantize = _py(spec.value("model", "quantize"))
    quantize = None if quantize == "none" else quantize  # the plan's None: stored in `dtype`
    if isinstance(base, ast.Init):
        init = ARCHITECTURES[base.call.head.name](**_kwargs(base.call))
        return ModelPlan("init", dtype, tokenizer_plan, init=init, adapter=lora, quantize=quantize)
    options = _kwargs(_as(base, ast.Call))
    path = _local_or_hub(options["path"], base_dir, options.get("revision"))
    return ModelPlan(
        "hf", dtype, tokenizer_plan, path=path, revision=options.get("revision"), adapter=lora, quantize=quantize
    )


# ---------------------------------------------------------------- train / eval


def _length(node: ast.Value) -> Length:
    """`20 steps`, `3%` or `0`."""
    if isinstance(node, ast.Percent):
        return Length(share=node.value)
    if isinstance(node, ast.Quantity):
        return Length(steps=int(node.amount.value))
    return Length(steps=int(_number(node)))


def _schedule(call: ast.Call, lr: float) -> Schedule:
    """Each argument as its field's Rule `form` says: a Length (`warmup`, `decay`), or a rate
    (`min_lr`), which a share multiplies out by lr."""
    settings = SCHEDULES[call.head.name]
    forms = {f.name: f.metadata["rule"].form for f in dataclasses.fields(settings) if f.init}
    arguments: dict[str, Length | float] = {}
    for a in call.args:
        name, value = _key(a), a.value
        if forms[name] == LENGTH:
            arguments[name] = _length(value)
        elif forms[name] == SHARE_OF_LR and isinstance(value, ast.Percent):
            arguments[name] = value.value * lr
        else:
            arguments[name] = float(_number(value))
    return settings(**arguments)


def _train_plan(spec: Spec) -> TrainPlan:
    get = lambda key: spec.value("train", key)  # noqa: E731
    optimizer = _as(get("optimizer"), ast.Call)
    optimizer_settings = OPTIMIZERS[optimizer.head.name](**_kwargs(optimizer))
    checkpoint = get("checkpoint")
    every_steps = every_epochs = None
    keep = 3
    if isinstance(checkpoint, ast.Every):
        keep = _int(checkpoint.keep) if checkpoint.keep is not None else 3
        if unit_of(checkpoint.unit) == "steps":
            every_steps = int(checkpoint.amount.value)
        else:
            every_epochs = float(checkpoint.amount.value)
    mesh = get("mesh")
    log_every = get("log_every")
    clip = get("clip")
    return TrainPlan(
        steps=_py(get("steps")),
        micro=_py(get("micro")),
        optimizer=optimizer_settings,
        schedule=_schedule(_as(get("schedule"), ast.Call), optimizer_settings.lr),
        clip=None if isinstance(clip, ast.Name) else float(_number(clip)),
        remat=_as(get("remat"), ast.Name).name,
        mesh={_key(a): _py(a.value) for a in _as(mesh, ast.Tuple).args},
        checkpoint_every=every_steps,
        checkpoint_every_epochs=every_epochs,
        keep=keep,
        log_every=None if isinstance(log_every, ast.Name) else int(_as(log_every, ast.Quantity).amount.value),
        max_skipped_steps=int(_py(get("max_skipped_steps"))),
    )


def _eval_plan(spec: Spec) -> EvalPlan:
    every = spec.value("eval", "every")
    every_steps = every_epochs = None
    if isinstance(every, ast.Quantity):
        if unit_of(every.unit) == "steps":
            every_steps = int(every.amount.value)
        else:
            every_epochs = float(every.amount.value)
    generate = spec.value("eval", "generate")
    generation = None
    if isinstance(generate, ast.Call):
        options = _kwargs(generate)
        generation = GenerationPlan(greedy=generate.head.name == "greedy", **options)
    samples = spec.value("eval", "samples")
    return EvalPlan(
        every_steps,
        every_epochs,
        generation,
        None if isinstance(samples, ast.Name) else _int(samples),
        _baseline(spec),
        _benchmarks(spec),
    )


def _benchmarks(spec: Spec) -> BenchmarkPlan | None:
    """`lm_eval(tasks = [...], include = "dir", ...)`, its folder made absolute (relative to the spec)."""
    value = spec.value("eval", "benchmarks")
    if not isinstance(value, ast.Call):
        return None
    options = _kwargs(value)
    include = options.pop("include", None)
    if include is not None:
        include = str((spec.dir_of("eval", "benchmarks") / Path(include).expanduser()).resolve())
    options.pop("tasks", None)
    return BenchmarkPlan(tasks=tuple(benchmark_tasks(spec)), include=include, **options)


def _baseline(spec: Spec) -> BaselinePlan | None:
    kind = baseline_kind(spec)
    if kind == "off" or isinstance(spec.value("model", "base"), ast.Init):
        return None
    value = spec.value("eval", "baseline")
    return BaselinePlan(kind, **(_kwargs(value) if isinstance(value, ast.Call) else {}))


def _gates(spec: Spec, data: bool = False) -> tuple[GatePlan, ...]:
    """The gates on the trained model, or (``data``) those on the data (`leakage == 0`)."""
    out = []
    tasks = set(benchmark_tasks(spec))
    for gate in spec.gates:
        name, source, pattern = metric_parts(gate.metric)
        if schema.METRICS[name].data != data:
            continue
        on_task = source is not None and source.name in tasks
        out.append(
            GatePlan(
                metric=name,
                op=gate.op,
                threshold=float(_number(gate.value)),
                source=source.name if source is not None and not on_task else None,
                task=source.name if source is not None and on_task else None,
                pattern=pattern.value if pattern is not None else None,
                text=metric_text(gate.metric),
                gain=(1 if schema.METRICS[name].better == "higher" else -1) if unwrap_gain(gate.metric)[1] else 0,
            )
        )
    return tuple(out)


def _output_plan(spec: Spec) -> OutputPlan:
    directory = _as(spec.value("output", "dir"), ast.Str).value.replace("{name}", spec.name)
    size = _as(spec.value("output", "shard_size"), ast.Quantity)
    return OutputPlan(
        dir=str(Path(directory).expanduser().resolve()),
        export=_py(spec.value("output", "export")),
        shard_size=int(size.amount.value * BYTE_UNITS[_unit(size.unit)]),
        track=tuple(_tracker(item, spec.name) for item in _as(spec.value("output", "track"), ast.List).items),
    )


def _tracker(item: ast.Value, name: str) -> TrackerPlan:
    """`tensorboard`, `mlflow(uri = ..., experiment = ...)`, `wandb(project = ..., entity = ...,
    mode = ...)` or `trackio(project = ...)`, each with or without its arguments; an MLflow experiment
    and a W&B or Trackio project default to the spec's name, MLflow's uri to the environment's."""
    if isinstance(item, ast.Call):
        kind, options = item.head.name, _kwargs(item)
    else:
        kind, options = _as(item, ast.Name).name, {}
    if kind == "mlflow":
        options.setdefault("experiment", name)
    if kind in ("wandb", "trackio"):
        options.setdefault("project", name)
    if kind == "wandb":
        options.setdefault("mode", "online")
    return TrackerPlan(kind, **options)


def lower(spec: Spec) -> Plan:
    """The Plan of a spec that `check_spec` accepted (it assumes a valid spec)."""
    text = emit_spec(spec)
    return Plan(
        name=spec.name,
        spec_path=str(spec.path),
        spec_hash=hashlib.sha256(text.encode()).hexdigest(),
        model=_model_plan(spec),
        data=_data_plan(spec),
        train=_train_plan(spec),
        eval=_eval_plan(spec),
        gates=_gates(spec),
        output=_output_plan(spec),
        data_gates=_gates(spec, data=True),
    )
