"""The data part of the Plan: plain, frozen, JSON-serialisable dataclasses.

The compiler (``sftlang``) lowers the ``data``, ``template`` and ``train`` blocks
of a ``.sft`` spec into exactly these objects; the runtime never sees ``.sft``
text. Every value is decided here (no defaults are resolved later), so a saved
``plan.json`` re-creates the same batches.

Lowering of the example in LANGUAGE.md::

    data tickets = jsonl("data/tickets.jsonl") {
        split eval = 5% seed 7
        overflow = drop
        on_bad_row = error
    }
    data faq = hf_dataset("org/faq", split = "train")
    template answer for tickets, faq {
        prompt     = "### Question:\\n{question}\\n### Answer:\\n"
        completion = "{answer}"
    }
    train { data = tickets * 0.7 + faq * 0.3   seq_len = 1024   packing = on
            batch = 32   epochs = 3   seed = 42 }

becomes::

    answer = TemplateSpec(prompt="### Question:\\n{question}\\n### Answer:\\n",
                          completion="{answer}")
    DataPlan(
        sources=(
            SourceSpec(name="tickets", kind="jsonl",
                       paths=("/abs/specs/data/tickets.jsonl",),
                       eval=EvalSplit(fraction=0.05, seed=7),
                       overflow="drop", on_bad_row="error"),
            SourceSpec(name="faq", kind="hf_dataset", hub="org/faq", split="train"),
        ),
        templates={"tickets": answer, "faq": answer},
        weights={"tickets": 0.7, "faq": 0.3},
        seq_len=1024, packing=True, seed=42, global_batch_size=32, epochs=3)

``DataPlan.to_dict()`` / ``DataPlan.from_dict()`` round-trip through JSON.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

SOURCE_KINDS = ("jsonl", "json", "csv", "parquet", "arrow", "text", "disk", "hf_dataset")
FORMATS = ("alpaca", "tokens")  # whole-row shapes a template names (others follow from its keys)
CONVERSATION_ROLES = ("system", "user", "assistant", "tool")
OVERFLOW_MODES = ("drop", "truncate", "error")
BAD_ROW_MODES = ("error", "skip")
TRAIN_ON = ("assistant", "last_assistant", "all")


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


@dataclass(frozen=True)
class EvalSplit:
    """Where a source's evaluation rows come from.

    Exactly one of:
      * ``fraction`` (0 < f < 1) with ``seed``: ``split eval = 5% seed 7`` ->
        ``EvalSplit(fraction=0.05, seed=7)``. The rows are chosen by a seeded
        permutation of the *raw* row indices of the source (before templating,
        bad-row skipping or overflow), so the split does not move when the
        tokenizer, template or seq_len change. ``round(f * rows)`` rows, at least
        one when the source has two or more rows.
      * ``source``: ``split eval = jsonl("data/tickets-eval.jsonl")`` ->
        ``EvalSplit(source=SourceSpec(...))``. The eval source uses the template
        of the source it belongs to; its own ``eval``/``name`` are ignored
        (its name is reported as ``"<owner>/eval"``).
    """

    fraction: float | None = None
    seed: int = 0
    source: SourceSpec | None = None

    def __post_init__(self) -> None:
        _check((self.fraction is None) != (self.source is None), "EvalSplit needs exactly one of fraction= or source=")
        if self.fraction is not None:
            _check(0.0 < float(self.fraction) < 1.0, f"EvalSplit.fraction must be in (0, 1), got {self.fraction}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EvalSplit:
        src = d.get("source")
        return cls(
            fraction=d.get("fraction"),
            seed=int(d.get("seed", 0)),
            source=SourceSpec.from_dict(src) if src is not None else None,
        )


DEDUP_KINDS = ("exact", "near")


@dataclass(frozen=True)
class Dedup:
    """``dedup = exact`` -> ``Dedup("exact")``; ``dedup = near(0.9)`` -> ``Dedup("near", 0.9)``:
    copies among a source's training examples are dropped before training, the first of each
    kept. Exact: the same rendered text, whitespace collapsed; near: also texts whose 5-character
    shingles have a Jaccard similarity of at least ``threshold`` (`runtime.audit.near_copies`)."""

    kind: str
    threshold: float | None = None

    def __post_init__(self) -> None:
        _check(self.kind in DEDUP_KINDS, f"dedup must be one of {DEDUP_KINDS}, got {self.kind!r}")
        if self.kind == "near":
            _check(
                self.threshold is not None and 0.0 < float(self.threshold) <= 1.0,
                f"dedup near(threshold): the threshold is in (0, 1], got {self.threshold}",
            )
        else:
            _check(self.threshold is None, "dedup exact takes no threshold")

    @property
    def text(self) -> str:
        """As the spec writes it: `exact`, `near(0.9)`."""
        return "exact" if self.kind == "exact" else f"near({float(self.threshold or 0):g})"


@dataclass(frozen=True)
class SourceSpec:
    """One ``data NAME = kind(...) { ... }`` block.

    Fields:
      name:       the source's identifier in the spec (used in stats, weights, errors).
      kind:       ``jsonl | json | csv | parquet | arrow | text | disk | hf_dataset``
                  (``arrow``: Arrow IPC stream files, as ``datasets`` writes them).
                  ``jsonl``/``json`` both go through datasets' ``json`` builder
                  (JSON lines, or one JSON document with ``field=``); ``text`` gives
                  one row per line in a column ``text``; ``disk`` is a directory
                  written by ``Dataset.save_to_disk``; ``hf_dataset`` a hub dataset.
      paths:      absolute file paths, glob patterns allowed (``/d/part-*.jsonl``);
                  matched files are read in sorted order. For ``disk``: the directory.
                  Empty for ``hf_dataset``.
      hub:        ``"org/name"`` for ``hf_dataset``, else None.
      split:      the split to read (``hf_dataset``, ``disk`` when it holds a
                  DatasetDict); None means ``"train"``.
      field:      ``json`` only: the key of the list of records inside one document.
      subset:     ``hf_dataset`` configuration name (``load_dataset(path, name=subset)``).
      revision:   ``hf_dataset`` git revision.
      eval:       see ``EvalSplit``; None means no eval rows.
      overflow:   what happens to an example longer than ``seq_len``:
                  ``drop`` (counted), ``truncate`` (keep the start; counted; an example
                  whose trainable tokens are all cut away is dropped and counted
                  separately), ``error`` (``SequenceTooLongError``).
      on_bad_row: ``error`` (``BadRowError`` naming file, row, column and the row) or
                  ``skip`` (counted per reason in the stats).
      rename:     ``rename = (question = prompt)`` -> ``(("question", "prompt"),)``: columns
                  renamed before templating (a row without the column is a bad row).
      system:     a system message put first in every conversation of this source that has
                  none (``messages``, Alpaca and ``chat = on`` rows).
      where:      ``where = (lang = "en", tier = ["a", "b"])`` -> ``(("lang", ("en",)),
                  ("tier", ("a", "b")))``: only rows whose column (a dotted path) equals one of
                  the values are used; the others are counted as filtered, never as bad.
    """

    name: str
    kind: str
    paths: tuple[str, ...] = ()
    hub: str | None = None
    split: str | None = None
    field: str | None = None
    subset: str | None = None
    revision: str | None = None
    eval: EvalSplit | None = None
    overflow: str = "drop"
    on_bad_row: str = "error"
    rename: tuple[tuple[str, str], ...] = ()
    system: str | None = None
    where: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    delimiter: str | None = None  # csv only: the field separator (None: ",")
    dedup: Dedup | None = None  # copies among the training examples dropped (None: kept); never eval rows

    def __post_init__(self) -> None:
        object.__setattr__(self, "paths", tuple(self.paths))
        object.__setattr__(self, "rename", tuple((str(a), str(b)) for a, b in self.rename))
        object.__setattr__(self, "where", tuple((str(c), tuple(v)) for c, v in self.where))
        olds, news = [a for a, _ in self.rename], [b for _, b in self.rename]
        _check(len(set(news)) == len(news), f"source {self.name!r}: two columns renamed to the same name")
        _check(len(set(olds)) == len(olds), f"source {self.name!r}: a column renamed twice")
        _check(bool(self.name), "SourceSpec.name must be non-empty")
        _check(
            self.kind in SOURCE_KINDS, f"source {self.name!r}: kind must be one of {SOURCE_KINDS}, got {self.kind!r}"
        )
        _check(
            self.overflow in OVERFLOW_MODES,
            f"source {self.name!r}: overflow must be one of {OVERFLOW_MODES}, got {self.overflow!r}",
        )
        _check(
            self.on_bad_row in BAD_ROW_MODES,
            f"source {self.name!r}: on_bad_row must be one of {BAD_ROW_MODES}, got {self.on_bad_row!r}",
        )
        if self.kind == "hf_dataset":
            _check(bool(self.hub), f"source {self.name!r}: hf_dataset needs hub='org/name'")
        else:
            _check(len(self.paths) > 0, f"source {self.name!r}: kind {self.kind} needs paths")
        if self.field is not None:
            _check(self.kind in ("json", "jsonl"), f"source {self.name!r}: field= is only for json")
        if self.delimiter is not None:
            _check(
                self.kind == "csv" and len(self.delimiter) == 1,
                f"source {self.name!r}: delimiter= is one character, and only for csv",
            )

    def eval_part(self) -> SourceSpec | None:
        """The source of this source's eval rows when they come from another file
        (``split eval = jsonl(...)``): read as this source's rows are (overflow, bad rows,
        renames, filter, system message), named ``"<name>/eval"``."""
        if self.eval is None or self.eval.source is None:
            return None
        return dataclasses.replace(
            self.eval.source,
            name=f"{self.name}/eval",
            eval=None,
            overflow=self.overflow,
            on_bad_row=self.on_bad_row,
            rename=self.rename,
            system=self.system,
            where=self.where,
        )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SourceSpec:
        d = dict(d)
        ev = d.pop("eval", None)
        dedup = d.pop("dedup", None)  # absent in plans written before `dedup`: off
        d["dedup"] = Dedup(**dedup) if dedup is not None else None
        d["paths"] = tuple(d.get("paths") or ())
        d["rename"] = tuple(tuple(pair) for pair in d.get("rename") or ())
        d["where"] = tuple((c, tuple(v)) for c, v in d.get("where") or ())
        return cls(**d, eval=EvalSplit.from_dict(ev) if ev is not None else None)


@dataclass(frozen=True)
class TemplateSpec:
    """How a row becomes a prompt/completion pair or a conversation.

    One of three shapes:
      * prompt/completion: ``prompt`` and ``completion`` format strings.
        ``{column}`` inserts a column, ``{a.b}`` a nested field, ``{{``/``}}`` are
        literal braces. Every inserted value must be a string (a missing column, a
        null or a number is a bad row). The prompt is never trained; the completion
        and the EOS token appended after it are. ``prompt`` may be ``""``.
        With ``chat`` the pair goes through the tokenizer's chat template instead,
        as a user turn (after an optional ``system`` message) and the assistant's
        answer: what an instruct model expects. The assistant turn, with the
        template's end-of-turn token, is trained.
      * messages: ``messages`` names a column holding ``[{role, content}, ...]``,
        rendered with the tokenizer's chat template. ``train_on`` is
        ``assistant`` (every assistant turn), ``last_assistant`` (only the final
        one) or ``all`` (every token of the conversation).
        Messages may be OpenAI-style (``role``/``content``, ``tool_calls``, ``tool``
        results) or ShareGPT-style (``from``/``value``, roles ``human``/``gpt``/...);
        ``roles`` maps further role names (``(("bot", "assistant"),)``), ``keys`` the
        message keys (``(("role", "speaker"), ("content", "text"))``), and ``tools``
        names a column of function schemas given to the chat template (default: the
        column ``tools`` when the source has one). See ``runtime.plan.row_shapes``.
      * ``format = "alpaca"``: columns ``instruction``, optional ``input``, ``output``,
        rendered as the Alpaca prompt (or, with ``chat``, as a user and an assistant turn).
      * ``format = "tokens"``: pre-tokenized rows, ``input_ids`` with ``labels`` (-100 is
        not trained) or ``loss_mask``.
      * nothing set (``TemplateSpec()`` or no template for the source): use the
        source's conventional columns: ``messages`` or ``conversations`` (as above,
        ``train_on``), else ``input_ids`` (tokens), else ``instruction`` + ``output``
        (Alpaca), else ``prompt`` + ``completion``, else ``text`` (every token trained).
    """

    prompt: str | None = None
    completion: str | None = None
    messages: str | None = None
    train_on: str = "assistant"
    chat: bool = False
    system: str | None = None
    format: str | None = None
    roles: tuple[tuple[str, str], ...] = ()
    keys: tuple[tuple[str, str], ...] = ()
    tools: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "roles", tuple((str(a), str(b)) for a, b in self.roles))
        object.__setattr__(self, "keys", tuple((str(a), str(b)) for a, b in self.keys))
        _check(self.format is None or self.format in FORMATS, f"format must be one of {FORMATS}, got {self.format!r}")
        _check(
            self.format is None or (self.prompt is None and self.messages is None),
            f"format = {self.format} takes no prompt/completion or messages",
        )
        for name, role in self.roles:
            _check(role in CONVERSATION_ROLES, f"roles: {name!r} must map to one of {CONVERSATION_ROLES}, not {role!r}")
        for key, _ in self.keys:
            _check(key in ("role", "content"), f"keys: only `role` and `content` can be renamed, not {key!r}")
        _check(
            not (self.roles or self.keys or self.tools) or (self.prompt is None and self.format is None),
            "roles, keys and tools describe a conversation column, not prompt/completion or a format",
        )
        _check(
            (self.prompt is None) == (self.completion is None),
            "TemplateSpec needs both prompt and completion, or neither",
        )
        _check(
            not (self.messages is not None and self.prompt is not None),
            "TemplateSpec takes prompt/completion or messages, not both",
        )
        _check(self.train_on in TRAIN_ON, f"train_on must be one of {TRAIN_ON}, got {self.train_on!r}")
        _check(
            not self.chat or self.prompt is not None or self.format == "alpaca",
            "TemplateSpec.chat wraps prompt/completion (or Alpaca rows); set both",
        )
        _check(self.system is None or self.chat, "TemplateSpec.system needs chat=True")

    @property
    def mode(self) -> str:
        """``"prompt_completion"``, ``"messages"``, ``"alpaca"``, ``"tokens"`` or ``"conventional"``."""
        if self.prompt is not None:
            return "prompt_completion"
        if self.messages is not None:
            return "messages"
        if self.format is not None:
            return self.format
        return "conventional"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TemplateSpec:
        d = dict(d)
        for key in ("roles", "keys"):
            d[key] = tuple(tuple(pair) for pair in d.get(key) or ())
        return cls(**d)


@dataclass(frozen=True)
class DataPlan:
    """Everything the data pipeline needs; lowered from the spec.

    Fields:
      sources:           the ``data`` blocks, in spec order.
      templates:         source name -> TemplateSpec; a source without an entry uses
                         its conventional columns (``TemplateSpec()``).
      weights:           ``train.data = a * 0.7 + b * 0.3`` -> ``{"a": 0.7, "b": 0.3}``;
                         None (``train.data = a + b`` or a single name) means plain
                         concatenation: every train row once per epoch. With weights,
                         an epoch has as many examples as all sources together, and
                         source i contributes ``round(w_i / sum(w) * total)`` of them
                         (whole passes over it plus a seeded sample for the rest).
                         Sources missing from ``weights`` are not trained on.
      seq_len:           input positions per row (an example of L tokens uses L-1).
      packing:           pack several examples per row (best-fit decreasing).
      seed:              shuffling/sampling seed (per epoch streams derive from it).
      global_batch_size: rows per optimizer step, across all devices.
      epochs / steps:    exactly one is set; ``steps`` keeps cycling epochs.
    """

    sources: tuple[SourceSpec, ...]
    templates: Mapping[str, TemplateSpec] = field(default_factory=dict)
    weights: Mapping[str, float] | None = None
    seq_len: int = 1024
    packing: bool = True
    seed: int = 0
    global_batch_size: int = 8
    epochs: float | None = 1
    steps: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "sources", tuple(self.sources))
        names = [s.name for s in self.sources]
        _check(len(names) > 0, "DataPlan needs at least one source")
        _check(len(set(names)) == len(names), f"duplicate source names in {names}")
        for t in self.templates:
            _check(t in names, f"template for unknown source {t!r} (sources: {names})")
        if self.weights is not None:
            _check(len(self.weights) > 0, "weights must be None or non-empty")
            for k, w in self.weights.items():
                _check(k in names, f"weight for unknown source {k!r} (sources: {names})")
                _check(float(w) > 0, f"weight of {k!r} must be positive, got {w}")
        _check(int(self.seq_len) >= 2, f"seq_len must be >= 2, got {self.seq_len}")
        _check(int(self.global_batch_size) >= 1, "global_batch_size must be >= 1")
        _check((self.epochs is None) != (self.steps is None), "set exactly one of epochs or steps")
        if self.epochs is not None:
            _check(float(self.epochs) > 0, "epochs must be positive")
        if self.steps is not None:
            _check(int(self.steps) > 0, "steps must be positive")

    def template_for(self, source: str) -> TemplateSpec:
        return self.templates.get(source, TemplateSpec())

    def source(self, name: str) -> SourceSpec:
        for s in self.sources:
            if s.name == name:
                return s
        raise KeyError(f"no source named {name!r}; sources: {[s.name for s in self.sources]}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for source in d["sources"]:
            drop_unset_dedup(source)
        d["templates"] = {k: dataclasses.asdict(v) for k, v in self.templates.items()}
        d["weights"] = dict(self.weights) if self.weights is not None else None
        return d

    def to_json(self, **kw: Any) -> str:
        return json.dumps(self.to_dict(), **kw)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DataPlan:
        d = dict(d)
        return cls(
            sources=tuple(SourceSpec.from_dict(s) for s in d.pop("sources")),
            templates={k: TemplateSpec.from_dict(v) for k, v in (d.pop("templates", None) or {}).items()},
            weights=dict(d.pop("weights")) if d.get("weights") is not None else d.pop("weights", None),
            **d,
        )

    @classmethod
    def from_json(cls, s: str) -> DataPlan:
        return cls.from_dict(json.loads(s))


def system_message(template: TemplateSpec, source: SourceSpec | None) -> str | None:
    """The system message a source's conversations get when they have none of their own: its
    template's `system`, else the source's. Training renders with it; an export states it."""
    return template.system or (source.system if source is not None else None)


def drop_unset_dedup(source: dict[str, Any]) -> None:
    """A source without `dedup` is written as before the setting existed (plan.json unchanged)."""
    if source.get("dedup", 0) is None:
        del source["dedup"]
    evaluation = source.get("eval")
    if evaluation is not None and evaluation.get("source") is not None:
        drop_unset_dedup(evaluation["source"])
