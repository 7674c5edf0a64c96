"""The plan's settings that come in variants: one frozen dataclass per optimizer,
learning-rate schedule, `init` architecture and trained tokenizer.

Each class is the one home of its call's argument names, defaults and ranges:
`sftlang.schema` derives the language's signatures from these fields (a field the
spec writes differently, a schedule's Length or min_lr, says how in its Rule's `form`),
`sftlang.lower` builds them, and the runtime maps each to optax, a ModelConfig
or sentencepiece in one table. Construction checks every field, so an edited
plan.json cannot carry `b2 = 1.5` into a run. In JSON, `name` tags the variant.

Imports nothing heavy: the compiler imports this module.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import MISSING, Field, dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class Rule:
    """What one setting accepts: a number in [low, high] (`open_*` excludes that end,
    `integer` refuses fractions), one of `choices`, or on/off (`flag`). `doc` and
    `default_from` (the setting whose value it takes when absent) are for the language.

    `form` is how the language writes a value that the plan holds in another shape:
    LENGTH, a Length the spec writes as `N steps`, a share of the run (`3%`) or `0`;
    SHARE_OF_LR, an absolute rate the spec may also write as a share of the optimizer's
    lr (`10%`), which the compiler multiplies out. None: the spec writes the value itself."""

    low: float = -math.inf
    high: float = math.inf
    open_low: bool = False
    open_high: bool = False
    integer: bool = False
    choices: tuple[str, ...] = ()
    flag: bool = False
    doc: str = ""
    default_from: str | None = None
    form: str | None = None

    def problem(self, value: Any) -> str | None:
        """Why `value` is refused, or None."""
        if self.form == LENGTH:
            return None if isinstance(value, Length) else "must be a Length (steps or a share)"
        if self.flag:
            return None if isinstance(value, bool) else "must be on or off"
        if self.choices:
            return None if value in self.choices else f"must be one of {', '.join(self.choices)}"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "must be a number"
        if self.integer and not isinstance(value, int):
            return "must be an integer"
        low = value < self.low or (self.open_low and value == self.low)
        high = value > self.high or (self.open_high and value == self.high)
        if low or high:
            left, right = "(" if self.open_low else "[", ")" if self.open_high else "]"
            return f"must be in {left}{self.low:g}, {self.high:g}{right}"
        return None


LENGTH = "length"
SHARE_OF_LR = "share_of_lr"


def setting(default: Any = MISSING, **rule: Any) -> Any:
    """A dataclass field with its Rule; no default: the argument is required."""
    return field(default=default, metadata={"rule": Rule(**rule)})


DEFAULT_LR = 2e-5
"""Every optimizer's default learning rate: a fine-tuning rate (the language's default
`optimizer = adamw(lr = ...)` writes it from here)."""


POSITIVE = {"low": 0, "open_low": True}
NON_NEGATIVE = {"low": 0}
BETA = {"low": 0, "high": 1, "open_high": True}
COUNT = {"low": 1, "integer": True}


class Settings:
    """Base of every variant: `name` (an init=False field) tags it; construction checks
    each field against its Rule and stores an integer given for a real number as a float,
    so `weight_decay = 0` and `0.0` make equal plans."""

    # what @dataclass gives every variant, declared so that the base's methods type-check
    # as a dataclass's (`dataclasses.fields`, `replace`)
    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]
    name: str

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            rule = f.metadata.get("rule")
            value = getattr(self, f.name)
            if rule is None or (value is None and f.default is None):
                continue
            problem = rule.problem(value)
            if problem is not None:
                raise ValueError(f"{self.name}({f.name} = {value!r}): {f.name} {problem}")
            if not (rule.integer or rule.flag or rule.choices) and isinstance(value, int):
                object.__setattr__(self, f.name, float(value))

    def arguments(self) -> dict[str, Any]:
        """The settings as the call's keyword arguments (everything but `name`)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}


def variant(table: Mapping[str, type], d: Mapping[str, Any], what: str) -> Any:
    """A variant back from its JSON form (`name` tag plus its fields)."""
    d = dict(d)
    name = d.pop("name", None)
    if name not in table:
        raise ValueError(f"unknown {what} {name!r} (known: {', '.join(table)})")
    return table[name](**{k: Length(**v) if isinstance(v, Mapping) else v for k, v in d.items()})


# ---------------------------------------------------------------- optimizers


class Optimizer(Settings):
    """Base of the optimizers; each variant has `lr` and `weight_decay`."""

    lr: float
    weight_decay: float


@dataclass(frozen=True, kw_only=True)
class AdamW(Optimizer):
    name: str = field(default="adamw", init=False)
    lr: float = setting(DEFAULT_LR, **POSITIVE)
    b1: float = setting(0.9, **BETA)
    b2: float = setting(0.999, **BETA)
    eps: float = setting(1e-8, **POSITIVE)
    weight_decay: float = setting(0.0, **NON_NEGATIVE)


@dataclass(frozen=True, kw_only=True)
class Adafactor(Optimizer):
    name: str = field(default="adafactor", init=False)
    lr: float = setting(DEFAULT_LR, **POSITIVE)
    decay_rate: float = setting(0.8, low=0, high=1)
    eps: float = setting(1e-30, **POSITIVE)
    clip_threshold: float = setting(1.0, **POSITIVE)
    weight_decay: float = setting(0.0, **NON_NEGATIVE)


@dataclass(frozen=True, kw_only=True)
class Lion(Optimizer):
    name: str = field(default="lion", init=False)
    lr: float = setting(DEFAULT_LR, **POSITIVE)
    b1: float = setting(0.9, **BETA)
    b2: float = setting(0.99, **BETA)
    weight_decay: float = setting(0.0, **NON_NEGATIVE)


@dataclass(frozen=True, kw_only=True)
class Sgd(Optimizer):
    name: str = field(default="sgd", init=False)
    lr: float = setting(DEFAULT_LR, **POSITIVE)
    momentum: float = setting(0.0, **BETA)
    nesterov: bool = setting(False, flag=True)
    weight_decay: float = setting(0.0, **NON_NEGATIVE)


OPTIMIZERS: dict[str, type[Optimizer]] = {c.name: c for c in (AdamW, Adafactor, Lion, Sgd)}


# ---------------------------------------------------------------- schedules


@dataclass(frozen=True)
class Length:
    """A stretch of the run: `steps`, or a `share` of all steps that the planner turns
    into steps once the data is counted (`Schedule.decided`)."""

    steps: int | None = None
    share: float | None = None

    def __post_init__(self) -> None:
        if (self.steps is None) == (self.share is None):
            raise ValueError(f"a length is steps or a share, not {self}")
        if self.steps is not None and (not isinstance(self.steps, int) or self.steps < 0):
            raise ValueError(f"a length in steps is a whole number >= 0, not {self.steps!r}")
        if self.share is not None and not 0 <= self.share < 1:
            raise ValueError(f"a length's share is in [0, 1), not {self.share!r}")

    def in_steps(self, total: int) -> int:
        if self.steps is not None:
            return self.steps
        assert self.share is not None  # __post_init__: steps or a share
        return int(round(self.share * total))


NO_WARMUP = Length(steps=0)


def length_setting(default: Length, doc: str = "") -> Any:
    """A Length field of a schedule: the spec writes `N steps`, a share `3%` or `0`."""
    return field(default=default, metadata={"rule": Rule(form=LENGTH, doc=doc)})


def min_lr_setting() -> Any:
    """A schedule's floor: an absolute rate >= 0 in the plan, a share of lr or a rate in
    the spec. The default is the integer 0 so that the language shows it as `0`; the
    instance holds 0.0 (Settings stores real numbers as floats)."""
    return setting(0, **NON_NEGATIVE, form=SHARE_OF_LR)


class Schedule(Settings):
    """Base of the schedules. `min_lr` is absolute (a share of lr is multiplied out by
    the compiler); `constant` has none and reads 0.0, which its rate never uses.
    `warmup_steps` / `decay_steps` are the decided lengths (None while a share)."""

    warmup: Length
    min_lr: float = 0.0

    @property
    def warmup_steps(self) -> int | None:
        return self.warmup.steps

    @property
    def decay_steps(self) -> int | None:
        return None

    def _lengths(self) -> dict[str, Length]:
        """The fields that are stretches of the run."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if "rule" in f.metadata and f.metadata["rule"].form == LENGTH
        }

    @property
    def is_decided(self) -> bool:
        """Every length is in steps."""
        return all(length.steps is not None for length in self._lengths().values())

    def decided(self, total: int) -> Schedule:
        """This schedule with every share turned into steps of a `total`-step run."""
        return dataclasses.replace(self, **{k: Length(steps=v.in_steps(total)) for k, v in self._lengths().items()})


@dataclass(frozen=True, kw_only=True)
class Constant(Schedule):
    name: str = field(default="constant", init=False)
    warmup: Length = length_setting(NO_WARMUP)


@dataclass(frozen=True, kw_only=True)
class Linear(Schedule):
    name: str = field(default="linear", init=False)
    warmup: Length = length_setting(NO_WARMUP)
    min_lr: float = min_lr_setting()


@dataclass(frozen=True, kw_only=True)
class Cosine(Schedule):
    name: str = field(default="cosine", init=False)
    warmup: Length = length_setting(NO_WARMUP)
    min_lr: float = min_lr_setting()


@dataclass(frozen=True, kw_only=True)
class Wsd(Schedule):
    """Warmup, stable at lr, then a final `decay` down to min_lr."""

    name: str = field(default="wsd", init=False)
    warmup: Length = length_setting(NO_WARMUP)
    decay: Length = length_setting(Length(share=0.1), doc="length of the final decay")
    min_lr: float = min_lr_setting()

    @property
    def decay_steps(self) -> int | None:
        return self.decay.steps


SCHEDULES: dict[str, type[Schedule]] = {c.name: c for c in (Constant, Linear, Cosine, Wsd)}


# ---------------------------------------------------------------- model init


@dataclass(frozen=True, kw_only=True)
class LlamaInit(Settings):
    """`init llama(...)`: a Llama-architecture decoder with fresh weights. `runtime.preflight.prepare`
    turns it into a ModelConfig (`norm_eps` is rms_norm_eps, `max_seq_len` is
    max_position_embeddings there)."""

    name: str = field(default="llama", init=False)
    layers: int = setting(**COUNT, doc="decoder layers")
    dim: int = setting(**COUNT, doc="hidden size")
    heads: int = setting(**COUNT, doc="attention heads")
    kv_heads: int | None = setting(None, **COUNT, default_from="heads", doc="key/value heads (grouped-query)")
    ffn: int = setting(**COUNT, doc="feed-forward (intermediate) size")
    vocab: int | None = setting(None, **COUNT, doc="vocabulary size; default: the tokenizer's")
    head_dim: int | None = setting(None, **COUNT, doc="per-head size; default dim / heads")
    rope_theta: float = setting(10000.0, **POSITIVE, doc="rotary embedding base")
    norm_eps: float = setting(1e-5, **POSITIVE, doc="RMSNorm epsilon")
    tie_embeddings: bool = setting(False, flag=True, doc="share input and output embeddings")
    max_seq_len: int = setting(4096, **COUNT, doc="longest sequence the positions support")


ARCHITECTURES: dict[str, type[LlamaInit]] = {LlamaInit.name: LlamaInit}


# ---------------------------------------------------------------- tokenizer training


@dataclass(frozen=True, kw_only=True)
class SentencepieceTraining(Settings):
    """`train sentencepiece(...) on SOURCE`."""

    name: str = field(default="sentencepiece", init=False)
    vocab: int = setting(low=64, high=1_000_000, integer=True)
    model_type: str = setting("unigram", choices=("unigram", "bpe"))
    split_digits: bool = setting(True, flag=True, doc="every digit its own token")
    byte_fallback: bool = setting(True, flag=True)
    character_coverage: float = setting(1.0, low=0.9, high=1.0)


TOKENIZER_TRAINERS: dict[str, type[SentencepieceTraining]] = {SentencepieceTraining.name: SentencepieceTraining}
