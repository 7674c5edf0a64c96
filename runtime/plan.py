"""The Plan: what `sftlang` compiles a spec into and the runtime executes.

Plain frozen dataclasses, JSON round-trippable, importing nothing heavy (the
compiler imports this module; it must never pull in JAX). The compiler decides
every number it can from the spec alone; the few that depend on the data (the
step count of an `epochs` run, warmup and decay given as shares) are decided by
`runtime.planner` once the data is tokenized, and the plan saved in the run
directory has them all.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from .data.plan import DataPlan, SourceSpec

PLAN_VERSION = 1


@dataclass(frozen=True)
class TokenizerPlan:
    """`base` (the checkpoint's), `hf` (a directory), `sentencepiece` (a .model file),
    or `train` (sentencepiece trained on `source`'s training text with `options`)."""

    kind: str
    path: str | None = None
    source: SourceSpec | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TokenizerPlan":
        d = dict(d)
        source = d.pop("source", None)
        return cls(**d, source=SourceSpec.from_dict(source) if source is not None else None)


@dataclass(frozen=True)
class LoraPlan:
    rank: int
    alpha: float
    dropout: float
    targets: tuple[str, ...]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "LoraPlan":
        return cls(**{**d, "targets": tuple(d["targets"])})


@dataclass(frozen=True)
class ModelPlan:
    """`hf`: `path` is a local directory or hub id; `init`: `architecture` + `init`
    (ModelConfig keyword arguments; `vocab` None means the tokenizer's size)."""

    kind: str  # "hf" | "init"
    dtype: str
    tokenizer: TokenizerPlan
    path: str | None = None
    revision: str | None = None
    architecture: str | None = None
    init: Mapping[str, Any] = field(default_factory=dict)
    adapter: LoraPlan | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModelPlan":
        d = dict(d)
        adapter = d.pop("adapter", None)
        return cls(
            **{**d, "tokenizer": TokenizerPlan.from_dict(d["tokenizer"])},
            adapter=LoraPlan.from_dict(adapter) if adapter is not None else None,
        )


@dataclass(frozen=True)
class OptimizerPlan:
    name: str  # adamw | adafactor | lion | sgd
    lr: float
    options: Mapping[str, Any] = field(default_factory=dict)  # b1, b2, eps, weight_decay, ...


@dataclass(frozen=True)
class SchedulePlan:
    """Shares (`warmup_share`, `decay_share`) are turned into steps by the planner;
    `min_lr` is absolute."""

    name: str  # constant | linear | cosine | wsd
    min_lr: float
    warmup_steps: int | None = None
    warmup_share: float | None = None
    decay_steps: int | None = None
    decay_share: float | None = None


@dataclass(frozen=True)
class TrainPlan:
    """The optimisation side. Batch size, sequence length, packing, seed and the
    epochs/steps request live in `Plan.data`; `steps` here is the decided number of
    optimizer steps (None until the planner has counted an `epochs` run)."""

    steps: int | None
    micro: int
    optimizer: OptimizerPlan
    schedule: SchedulePlan
    clip: float | None
    remat: str
    mesh: Mapping[str, int | str]  # data / fsdp / tensor; `auto` resolved against the devices at run time
    checkpoint_every: int | None  # steps; None: only the final checkpoint (or every_epochs)
    checkpoint_every_epochs: float | None
    keep: int
    log_every: int | None  # None: auto

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainPlan":
        d = dict(d)
        return cls(**{**d, "optimizer": OptimizerPlan(**d["optimizer"]), "schedule": SchedulePlan(**d["schedule"])})


@dataclass(frozen=True)
class GenerationPlan:
    greedy: bool
    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0


@dataclass(frozen=True)
class EvalPlan:
    every_steps: int | None
    every_epochs: float | None
    generate: GenerationPlan | None
    samples: int | None  # None: all eval rows

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "EvalPlan":
        generate = d.get("generate")
        return cls(**{**d, "generate": GenerationPlan(**generate) if generate is not None else None})


@dataclass(frozen=True)
class GatePlan:
    """`bleu(faq) >= 20`: metric `bleu`, source `faq`, op `>=`, threshold 20."""

    metric: str
    op: str
    threshold: float
    source: str | None = None
    pattern: str | None = None
    text: str = ""  # as written in the spec, for tables


@dataclass(frozen=True)
class OutputPlan:
    dir: str  # absolute; `{name}` already filled in
    export: str  # hf | peft | none
    shard_size: int  # bytes


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

    @property
    def accumulation(self) -> int:
        """Micro-batches per optimizer step."""
        return self.data.global_batch_size // self.train.micro

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["data"] = self.data.to_dict()
        return d

    def to_json(self, **kw: Any) -> str:
        return json.dumps(self.to_dict(), **kw)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Plan":
        d = dict(d)
        if d.get("version") != PLAN_VERSION:
            raise ValueError(f"plan version {d.get('version')} is not {PLAN_VERSION}; recompile the spec")
        return cls(
            **{
                **d,
                "model": ModelPlan.from_dict(d["model"]),
                "data": DataPlan.from_dict(d["data"]),
                "train": TrainPlan.from_dict(d["train"]),
                "eval": EvalPlan.from_dict(d["eval"]),
                "gates": tuple(GatePlan(**g) for g in d["gates"]),
                "output": OutputPlan(**d["output"]),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> "Plan":
        return cls.from_dict(json.loads(text))
