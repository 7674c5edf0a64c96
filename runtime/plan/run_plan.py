"""The Plan: what `sftlang` compiles a spec into and the runtime executes.

Plain frozen dataclasses, JSON round-trippable, importing nothing heavy (the
compiler imports this module; it must never pull in JAX). The compiler decides
every number it can from the spec alone; the few that depend on the data (the
step count of an `epochs` run, warmup and decay given as shares) are decided by
`runtime.preflight.prepare` once the data is tokenized, and the plan saved in the run
directory has them all. Settings that come in variants (optimizer, schedule,
`init` architecture, tokenizer training) are the typed classes of
`runtime.plan.settings`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from runtime.plan.data_plan import DataPlan, SourceSpec, drop_unset_dedup
from runtime.plan.settings import (
    ARCHITECTURES,
    OPTIMIZERS,
    SCHEDULES,
    TOKENIZER_TRAINERS,
    LlamaInit,
    Optimizer,
    Schedule,
    SentencepieceTraining,
    variant,
)
from runtime.plan.sftc_error import SftcError

PLAN_VERSION = 2  # 2: typed optimizer, schedule, init and tokenizer-training settings

# How a LoRA run may store its frozen base (`model { quantize = ... }`), see runtime.models.quantize:
# int8 with one scale per output channel, or 4-bit NormalFloat with one scale per 64 inputs.
QUANTIZATIONS = ("int8", "nf4")


class PlanVersionError(SftcError, ValueError):
    """A plan.json written by another sftc: its layout is not this one's."""


@dataclass(frozen=True)
class TokenizerPlan:
    """`base` (the checkpoint's), `hf` (a directory), `sentencepiece` (a .model file),
    or `train` (trained on `source`'s training text as `training` says)."""

    kind: str
    path: str | None = None
    source: SourceSpec | None = None
    training: SentencepieceTraining | None = None
    revision: str | None = None  # `hf(...)`: a hub revision (branch, tag or commit)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TokenizerPlan:
        d = dict(d)
        source, training = d.pop("source", None), d.pop("training", None)
        return cls(
            **d,
            source=SourceSpec.from_dict(source) if source is not None else None,
            training=variant(TOKENIZER_TRAINERS, training, "tokenizer trainer") if training is not None else None,
        )


@dataclass(frozen=True)
class LoraPlan:
    rank: int
    alpha: float
    dropout: float
    targets: tuple[str, ...]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LoraPlan:
        return cls(**{**d, "targets": tuple(d["targets"])})


@dataclass(frozen=True)
class ModelPlan:
    """`hf`: `path` is a local directory or hub id; `init`: fresh weights of the
    architecture `init` describes (its `vocab` None means the tokenizer's size).
    `quantize`: how the frozen base of a LoRA run is stored (`QUANTIZATIONS`; None: in
    `dtype`)."""

    kind: str  # "hf" | "init"
    dtype: str
    tokenizer: TokenizerPlan
    path: str | None = None
    revision: str | None = None
    init: LlamaInit | None = None
    adapter: LoraPlan | None = None
    quantize: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelPlan:
        d = dict(d)
        adapter, init = d.pop("adapter", None), d.pop("init", None)
        return cls(
            **{**d, "tokenizer": TokenizerPlan.from_dict(d["tokenizer"])},
            init=variant(ARCHITECTURES, init, "architecture") if init is not None else None,
            adapter=LoraPlan.from_dict(adapter) if adapter is not None else None,
        )


@dataclass(frozen=True)
class TrainPlan:
    """The optimisation side. Batch size, sequence length, packing, seed and the
    epochs/steps request live in `Plan.data`; `steps` here is the decided number of
    optimizer steps (None until the planner has counted an `epochs` run)."""

    steps: int | None
    micro: int
    optimizer: Optimizer
    schedule: Schedule  # shares of the run turned into steps by the planner
    clip: float | None
    remat: str
    mesh: Mapping[str, int | str]  # data / fsdp / tensor; `auto` resolved against the devices at run time
    checkpoint_every: int | None  # steps; None: only the final checkpoint (or every_epochs)
    checkpoint_every_epochs: float | None
    keep: int
    log_every: int | None  # None: auto
    max_skipped_steps: int = 0  # non-finite steps a run may skip (update refused) before it stops

    def __post_init__(self) -> None:
        if self.schedule.min_lr > self.optimizer.lr:  # `sftc check` reports it in the spec (E057)
            raise ValueError(
                f"min_lr {self.schedule.min_lr:g} is above lr {self.optimizer.lr:g}: the schedule would raise the rate"
            )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainPlan:
        d = dict(d)
        optimizer, schedule = (
            variant(OPTIMIZERS, d["optimizer"], "optimizer"),
            variant(SCHEDULES, d["schedule"], "schedule"),
        )
        return cls(**{**d, "optimizer": optimizer, "schedule": schedule})


@dataclass(frozen=True)
class GenerationPlan:
    greedy: bool
    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0


@dataclass(frozen=True)
class BaselinePlan:
    """What the tuned model is compared with: `base` (the pretrained model, the same prompts)
    or `few_shot` (the base with `k` training pairs of the row's source before each prompt)."""

    kind: str  # base | few_shot
    k: int = 0
    seed: int = 0


@dataclass(frozen=True)
class BenchmarkPlan:
    """`benchmarks = lm_eval(tasks = [...], ...)`: lm-evaluation-harness tasks run on the tuned model
    and on the baseline's base, scored like any metric (`acc(task)`)."""

    tasks: tuple[str, ...]
    include: str | None = None  # absolute folder of the spec's own task YAML files (lm_eval's include_path)
    limit: int | None = None  # the first N documents of each task; None: all
    num_fewshot: int | None = None  # None: each task's own setting
    batch_size: int = 16


@dataclass(frozen=True)
class EvalPlan:
    every_steps: int | None
    every_epochs: float | None
    generate: GenerationPlan | None
    samples: int | None  # None: all eval rows
    baseline: BaselinePlan | None = None  # None: no comparison (`off`, or a model trained from scratch)
    benchmarks: BenchmarkPlan | None = None  # None: no standard benchmarks

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EvalPlan:
        generate, baseline, benchmarks = d.get("generate"), d.get("baseline"), d.get("benchmarks")
        return cls(
            **{
                **d,
                "generate": GenerationPlan(**generate) if generate is not None else None,
                "baseline": BaselinePlan(**baseline) if baseline is not None else None,
                "benchmarks": (
                    BenchmarkPlan(**{**benchmarks, "tasks": tuple(benchmarks["tasks"])})
                    if benchmarks is not None
                    else None
                ),
            }
        )


@dataclass(frozen=True)
class GatePlan:
    """`bleu(faq) >= 20`: metric `bleu`, source `faq`, op `>=`, threshold 20."""

    metric: str
    op: str
    threshold: float
    source: str | None = None
    pattern: str | None = None
    text: str = ""  # as written in the spec, for tables
    task: str | None = None  # `acc(arc_easy)`: a metric of the lm_eval task `arc_easy` (`eval.benchmarks`)
    gain: int = 0  # `gain(bleu(faq))`: +1 judges tuned - baseline, -1 baseline - tuned (lower is better); 0 the metric


@dataclass(frozen=True)
class TrackerPlan:
    """One entry of `track = [...]`: where the run's metrics go besides `metrics.jsonl`.
    The environment (`MLFLOW_TRACKING_URI`, credentials) is read by the runtime, never stored here."""

    kind: str  # tensorboard | mlflow | wandb | trackio
    uri: str | None = None  # mlflow: None means MLFLOW_TRACKING_URI, else a SQLite store beside the runs
    experiment: str | None = None  # mlflow: the spec's name unless the spec says
    project: str | None = None  # wandb, trackio: the spec's name unless the spec says
    entity: str | None = None  # wandb: None means the API key's default entity
    mode: str | None = None  # wandb: online | offline


@dataclass(frozen=True)
class OutputPlan:
    dir: str  # absolute; `{name}` already filled in
    export: str  # hf | peft | gguf | none
    shard_size: int  # bytes
    track: tuple[TrackerPlan, ...] = (TrackerPlan("tensorboard"),)  # a plan.json from before `track`: today's

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> OutputPlan:
        track = d.get("track")
        return cls(
            **{
                **d,
                "track": tuple(TrackerPlan(**t) for t in track) if track is not None else cls.track,
            }
        )


@dataclass(frozen=True)
class Plan:
    name: str
    spec_path: str
    spec_hash: str  # sha256 of the resolved spec's canonical text
    model: ModelPlan
    data: DataPlan
    train: TrainPlan
    eval: EvalPlan
    gates: tuple[GatePlan, ...]
    output: OutputPlan
    version: int = PLAN_VERSION
    # `leakage == 0`, `duplicates <= 1%`: gates on the data (`sftc audit`), judged before the first
    # step; not among `gates`, which judge the trained model. Absent from plan.json when none.
    data_gates: tuple[GatePlan, ...] = ()

    @property
    def accumulation(self) -> int:
        """Micro-batches per optimizer step."""
        return self.data.global_batch_size // self.train.micro

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["data"] = self.data.to_dict()
        if d["model"]["tokenizer"].get("source") is not None:
            drop_unset_dedup(d["model"]["tokenizer"]["source"])
        if not self.data_gates:
            del d["data_gates"]
        return d

    def to_json(self, **kw: Any) -> str:
        return json.dumps(self.to_dict(), **kw)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Plan:
        d = dict(d)
        version = d.get("version")
        if version != PLAN_VERSION:
            other = "an older" if isinstance(version, int) and version < PLAN_VERSION else "another"
            raise PlanVersionError(
                f"this plan was written by {other} sftc (plan version {version}; this sftc reads version "
                f"{PLAN_VERSION}); "
                "compile the spec again (`sftc run --fresh SPEC` for a new run), or use the sftc that wrote it"
            )
        return cls(
            **{
                **d,
                "model": ModelPlan.from_dict(d["model"]),
                "data": DataPlan.from_dict(d["data"]),
                "train": TrainPlan.from_dict(d["train"]),
                "eval": EvalPlan.from_dict(d["eval"]),
                "gates": tuple(GatePlan(**g) for g in d["gates"]),
                "data_gates": tuple(GatePlan(**g) for g in d.get("data_gates") or ()),
                "output": OutputPlan.from_dict(d["output"]),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Plan:
        return cls.from_dict(json.loads(text))
