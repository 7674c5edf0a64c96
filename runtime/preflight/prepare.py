"""Before the first step: the tokenizer, the tokenized data, the model's config,
and the numbers that depend on the data (steps of an `epochs` run, warmup and
decay given as shares). `sftc plan` shows what this decides; `sftc run` saves
the decided plan in the run directory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.models.config import ModelConfig
from runtime.plan.data_plan import SourceSpec, TemplateSpec
from runtime.plan.run_plan import Plan
from runtime.plan.sftc_error import SftcError
from runtime.platform.allocator import reuse_freed_memory
from runtime.platform.cache_dir import default_cache
from runtime.platform.process_share import Share

TOKENIZER_CACHE_VERSION = 2  # 2: the default chat template renders tools and tool calls


class PrepareError(SftcError):
    """Something the run needs before training cannot be had; the message says what to do."""


@dataclass
class Prepared:
    plan: Plan  # every number decided
    tokenizer: Any
    pipeline: Any  # runtime.data.pipeline.DataPipeline
    config: ModelConfig
    checkpoint: Path | None  # the base checkpoint directory of an `hf(...)` model
    data_audit: Any = None  # runtime.preflight.data_audit.DataAudit: the findings and the spec's data gates' values


# ---------------------------------------------------------------- tokenizer


def _texts(spec: SourceSpec, template: TemplateSpec, cache_dir: str | None) -> Iterator[str]:
    """Training text of a source, for tokenizer training: each train row rendered as the
    model will read it, through the shapes training uses (`runtime.plan.row_shapes`): prompt +
    completion, the turns of a conversation (tool calls as their JSON), the Alpaca prompt and
    output, or the text."""
    from runtime.data.pipeline import eval_rows_for
    from runtime.data.sources import load_source
    from runtime.data.tokenize import resolve_mode
    from runtime.plan.data_errors import RowProblem, SourceError
    from runtime.plan.row_templates import parse_template, training_text

    loaded = load_source(spec, cache_dir)
    mode = resolve_mode(template, loaded.dataset.column_names, spec)
    if mode.kind == "tokens":
        raise SourceError(
            f"data {spec.name} is pre-tokenized: a tokenizer cannot be trained on token ids; "
            'set `tokenizer = hf("dir")` to the tokenizer that made them'
        )
    held = set()
    if spec.eval is not None and spec.eval.fraction is not None:
        held = set(eval_rows_for(len(loaded), float(spec.eval.fraction), int(spec.eval.seed)).tolist())
    if mode.kind == "prompt_completion":
        parts = parse_template((mode.prompt or "") + (mode.completion or ""))
    else:
        parts = parse_template("{" + str(mode.column) + "}") if mode.kind == "text" else None
    conversation = mode.column if mode.kind == "messages" else None
    for index, raw in enumerate(loaded.dataset):
        if index in held:
            continue
        try:
            row = mode.transform(raw)
            if row is not None:
                yield training_text(
                    row,
                    parts,
                    conversation=conversation,
                    roles=mode.roles,
                    keys=mode.keys,
                    system=mode.system,
                    alpaca=mode.kind == "alpaca",
                )
        except RowProblem:
            continue  # bad rows are counted and reported by the data pipeline itself


def _tokenizer_template(plan: Plan) -> TemplateSpec:
    """How the tokenizer's training source renders: its data block's template, if it is one."""
    source = plan.model.tokenizer.source
    names = {s.name for s in plan.data.sources}
    return plan.data.template_for(source.name) if source.name in names else TemplateSpec()


def trained_tokenizer_dir(plan: Plan, cache_dir: Path) -> Path:
    """Where the plan's trained tokenizer is cached: named by (source content, template, options)."""
    from runtime.data.sources import source_fingerprint

    spec = plan.model.tokenizer
    key = json.dumps(
        [
            source_fingerprint(spec.source, str(cache_dir / "data")),
            dataclasses.asdict(_tokenizer_template(plan)),
            spec.training.arguments(),
            _eval_key(spec.source.eval),
            TOKENIZER_CACHE_VERSION,
        ],
        sort_keys=True,
    )
    return cache_dir / "tokenizers" / hashlib.sha256(key.encode()).hexdigest()[:20]


def _eval_key(evaluation) -> dict | None:
    """The tokenizer cache's part for an eval split, as before `dedup` existed when it is unset."""
    if evaluation is None:
        return None
    from runtime.plan.data_plan import drop_unset_dedup

    d = dataclasses.asdict(evaluation)
    if d.get("source") is not None:
        drop_unset_dedup(d["source"])
    return d


def load_tokenizer(plan: Plan, cache_dir: Path):
    """The plan's tokenizer. A trained one is cached by (source content, template,
    options), so `sftc plan` and every later run of the same spec reuse it."""
    from runtime.checkpoints import tokenizer_files as tok

    spec = plan.model.tokenizer
    if spec.kind == "base":
        if plan.model.kind != "hf":
            raise PrepareError("an `init` model has no tokenizer of its own; set `model.tokenizer`")
        from runtime.checkpoints.hf_checkpoint import resolve_checkpoint

        return tok.load_tokenizer(resolve_checkpoint(plan.model.path, plan.model.revision))
    if spec.kind == "hf":
        return tok.load_tokenizer(spec.path, revision=spec.revision)
    if spec.kind == "sentencepiece":
        return tok.from_sentencepiece(spec.path)
    target = trained_tokenizer_dir(plan, cache_dir)
    if (target / "tokenizer.json").exists():
        return tok.load_tokenizer(target)
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    training = spec.training
    trained = tok.train_sentencepiece(
        _texts(spec.source, _tokenizer_template(plan), str(cache_dir / "data")),
        training.vocab,
        partial,
        model_type=training.model_type,
        character_coverage=training.character_coverage,
        split_digits=training.split_digits,
        byte_fallback=training.byte_fallback,
    )
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    del trained  # reload from the cache directory, as every later run will
    return tok.load_tokenizer(target)


# ---------------------------------------------------------------- model config


def model_config(plan: Plan, tokenizer) -> tuple[ModelConfig, Path | None]:
    model = plan.model
    if model.kind == "init":
        init = model.init
        vocab = init.vocab or len(tokenizer)
        if vocab < len(tokenizer):
            raise PrepareError(
                f"`init {init.name}(vocab = {vocab})` is smaller than the tokenizer's {len(tokenizer)} tokens"
            )
        config = ModelConfig.llama(
            layers=init.layers,
            dim=init.dim,
            heads=init.heads,
            kv_heads=init.kv_heads,
            ffn=init.ffn,
            vocab=vocab,
            head_dim=init.head_dim,
            rope_theta=init.rope_theta,
            rms_norm_eps=init.norm_eps,
            tie_embeddings=init.tie_embeddings,
            max_position_embeddings=init.max_seq_len,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        return config, None
    from runtime.checkpoints.hf_checkpoint import read_config, resolve_checkpoint

    directory = resolve_checkpoint(model.path, model.revision)
    config = read_config(directory)
    if len(tokenizer) > config.vocab_size:
        raise PrepareError(
            f"the tokenizer has {len(tokenizer)} tokens but the model's vocabulary holds {config.vocab_size}"
        )
    return config, directory


# ---------------------------------------------------------------- numbers


def decide(plan: Plan, total_steps: int) -> Plan:
    """The plan with its step count and schedule lengths in steps."""
    if total_steps < 1:
        raise PrepareError("the data gives no training step: every example was dropped or the sources are empty")
    decided = plan.train.schedule.decided(total_steps)
    # `sftc check` proves these (E054) when the spec gives `steps`; here the data gave the count
    warmup, decay = decided.warmup_steps, decided.decay_steps or 0
    if warmup >= total_steps and total_steps > 1:
        raise PrepareError(f"warmup ({warmup} steps) is not shorter than training ({total_steps} steps)")
    if warmup + decay > total_steps:
        raise PrepareError(
            f"warmup ({warmup} steps) and decay ({decay} steps) add up to more than training ({total_steps} steps)"
        )
    train = dataclasses.replace(plan.train, steps=total_steps, schedule=decided)
    return dataclasses.replace(plan, train=train)


def log_interval(plan: Plan) -> int:
    """`log_every = auto`: every step up to 200 steps, then about 200 records per run."""
    if plan.train.log_every is not None:
        return plan.train.log_every
    return max(1, math.ceil(plan.train.steps / 200)) if plan.train.steps > 200 else 1


def data_pipeline(plan: Plan, tokenizer: Any, cache_dir: Path, share: Share = Share()) -> Any:
    """The plan's data pipeline, the one way every command builds it: with the sources' `dedup`
    applied (the audit is imported only when a source asks for it)."""
    from runtime.data.pipeline import CopyFinder, DataPipeline

    copies: CopyFinder | None = None
    if any(s.dedup is not None for s in plan.data.sources):
        from runtime.preflight.data_audit import copies_to_drop

        copies = copies_to_drop
    return DataPipeline(plan.data, tokenizer, str(cache_dir / "data"), share=share, find_copies=copies)


def prepare(plan: Plan, cache_dir: Path | None = None, share: Share = Share()) -> Prepared:
    """Tokenizer, model config, tokenized data and the decided plan (cached work is reused).
    In a job, ``share`` splits the work between its processes (`runtime.platform.process_share`)."""
    from runtime.preflight import plan_cache

    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache()
    inputs = plan_cache.inputs_key(plan, cache_dir) if share.index == 0 else None
    tokenizer = share.first("tokenizer", lambda: load_tokenizer(plan, cache_dir))
    config, checkpoint = planned_config(plan, tokenizer)
    pipeline = data_pipeline(plan, tokenizer, cache_dir, share)
    steps = plan.train.steps if plan.train.steps is not None else pipeline.total_steps
    decided = decide(plan, steps)
    from runtime.preflight.data_audit import audit_data

    data_audit = audit_data(pipeline, plan.data_gates)  # every run knows what is wrong with its data
    pipeline.stats.audit = data_audit.audit.counts
    if plan.data_gates:
        pipeline.stats.data_values = data_audit.values
    plan_cache.record(inputs, cache_dir, decided, pipeline.stats, tokenizer)
    reuse_freed_memory()  # after tokenizing (its threads would queue on one arena), before JAX computes
    return Prepared(decided, tokenizer, pipeline, config, checkpoint, data_audit)


def planned_config(plan: Plan, tokenizer) -> tuple[ModelConfig, Path | None]:
    """The model's config as the plan trains it (`model_config` with the plan's remat)."""
    config, checkpoint = model_config(plan, tokenizer)
    return config.replace(remat=plan.train.remat), checkpoint
