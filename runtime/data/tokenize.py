"""Batched, cached tokenization of one source into token ids and per-token "trained" flags.

For each raw row the output holds ``input_ids`` (the whole example, BOS/EOS
included) and ``trained`` (same length, 1 where the token is a training
*target*, i.e. where the loss is taken when predicting it). Label shift does not
happen here; it happens once, in ``batches.shift_example``.

How token spans are found: the rendered text and, for every trained character
span ``[s, e)``, the prefixes ``text[:s]`` and ``text[:e]`` are tokenized (all
in one batched call). The span's first token is where the tokens of
``text[:s]`` stop being a prefix of the full tokenization (so a prompt
tokenizes exactly as it will at inference; when a token merges across the
boundary the span starts at the divergence, as TRL does, and the row is counted
in ``boundary_merges``). For prompt/completion and text, EOS is appended
(trained) unless the tokenizer already put it there.

Caching: a source is tokenized in shards of ``SHARD_ROWS`` rows; for each,
``Dataset.map(batched=True)`` writes an Arrow file named by a key over the
source's content fingerprint, the template, the tokenizer's fingerprint and this
module's version, and the shard's place. A second run with the same key reads the
files instead of tokenizing (``TokenizedSource.cache_hit``); an interrupted one
keeps the shards it finished; the processes of a job split the shards
(`runtime.platform.process_share`). ``seq_len``, splits and overflow are applied afterwards,
so changing them never re-tokenizes.

Workers: ``num_proc`` asks `Dataset.map` for forked workers, which a process that has imported
JAX never uses (`worker_processes`): a child forked from JAX's threads can deadlock. It then
tokenizes in the process itself, which bench/tokenize_workers.py measured faster than a pool of
spawned workers on 2 cores (the fast tokenizer encodes each batch on every core anyway).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import socket
import sys
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from runtime.data.sources import LoadedSource, RejectedRow
from runtime.plan import row_shapes as shapes
from runtime.plan.data_errors import (
    BadRowError,
    ChatTemplateError,
    DataError,
    SourceError,
    TemplateNotPrefixStableError,
    shorten,
)
from runtime.plan.data_plan import SourceSpec, TemplateSpec, system_message
from runtime.plan.row_templates import (
    Rendered,
    RowProblem,
    chat_messages,
    parse_template,
    render_chat,
    render_conversation,
    render_prompt_completion,
    render_text,
    require_chat_template,
    special_ids,
)
from runtime.platform.process_share import Share

if TYPE_CHECKING:
    import datasets

PIPELINE_VERSION = "sftc-data-6"  # 5: shapes (ShareGPT, Alpaca, tools, tokens), per-turn examples; 6: their turn
SHARD_ROWS = 100_000  # rows per tokenization cache shard: the unit of resumed and of shared work
TOKENIZE_BATCHES = 0  # number of batches actually tokenized in this process (cache misses); tests read it


@functools.cache
def _features():
    """The tokenized cache's columns (datasets is imported here: a recalled `sftc plan` never needs it)."""
    import datasets

    return datasets.Features(
        {
            "input_ids": datasets.List(datasets.Value("int32")),
            "trained": datasets.List(datasets.Value("int8")),
            "row": datasets.Value("int64"),
            "bad": datasets.Value("string"),  # "" for a good row, else the reason
            "bad_column": datasets.Value("string"),
            "bad_turn": datasets.Value("int32"),
            "merges": datasets.Value("int32"),
            "per_turn": datasets.Value(
                "int8"
            ),  # 1: one of the per-turn examples of a conversation (render_conversation)
            "turn": datasets.Value("int32"),  # a per-turn example's assistant message index (its identity); else -1
            "tool_tokens": datasets.Value("int32"),  # trained tokens in assistant turns that call tools
            "unclosed": datasets.Value("int32"),  # trained turns that do not end on an end-of-turn token
        }
    )


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A stable hash of everything that changes how a tokenizer turns text into ids."""
    h = hashlib.sha256()
    h.update(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        h.update(backend.to_str().encode())
    else:  # slow tokenizers: fall back to datasets' pickling hasher
        from datasets.fingerprint import Hasher

        h.update(Hasher.hash(tokenizer).encode())
    extra = {
        "chat_template": getattr(tokenizer, "chat_template", None),
        "special": {k: str(v) for k, v in sorted((getattr(tokenizer, "special_tokens_map", {}) or {}).items())},
        "bos": getattr(tokenizer, "bos_token_id", None),
        "eos": getattr(tokenizer, "eos_token_id", None),
        "add_bos": getattr(tokenizer, "add_bos_token", None),
        "add_eos": getattr(tokenizer, "add_eos_token", None),
    }
    h.update(json.dumps(extra, sort_keys=True, default=str).encode())
    return h.hexdigest()


@dataclass(frozen=True)
class Mode:
    """A resolved template and its source's transforms: ``kind`` is prompt_completion |
    messages | alpaca | tokens | text (see `runtime.plan.row_shapes` for the shapes)."""

    kind: str
    prompt: str | None = None
    completion: str | None = None
    column: str | None = None
    train_on: str = "assistant"
    chat: bool = False  # prompt/completion or Alpaca through the chat template (a user and an assistant turn)
    system: str | None = None  # the template's system message, else the source's
    roles: tuple[tuple[str, str], ...] = ()  # conversation role names -> system | user | assistant | tool
    keys: tuple[tuple[str, str], ...] = ()  # message keys: ("role", "from"), ("content", "value")
    tools: str | None = None  # the column of function schemas given to the chat template
    rename: tuple[tuple[str, str], ...] = ()  # the source's column renames (old, new)
    where: tuple[tuple[str, tuple[Any, ...]], ...] = ()  # the source's row filter

    def transform(self, row: dict[str, Any]) -> dict[str, Any] | None:
        """The row as the template reads it (renamed), or None when the source's `where` leaves it out."""
        return shapes.transform_row(row, self.rename, self.where)


def resolve_mode(template: TemplateSpec, columns: list[str], source: SourceSpec | str) -> Mode:
    """Turn a TemplateSpec (possibly empty: conventional columns) and the source's transforms
    into a concrete Mode. ``columns`` are the source's raw columns (renamed here). A source's
    `system` on rows no chat template renders is refused (`shapes.system_refused`), never dropped."""
    mode = _resolve_mode(template, columns, source)
    if isinstance(source, SourceSpec) and source.system is not None:
        refused = shapes.system_refused(mode.kind, mode.chat)
        if refused:
            raise SourceError(f"data {source.name}: `system` does not apply: {refused[0]}; {refused[1]}")
    return mode


def _resolve_mode(template: TemplateSpec, columns: list[str], source: SourceSpec | str) -> Mode:
    spec = source if isinstance(source, SourceSpec) else None
    name = spec.name if spec is not None else str(source)
    rename = spec.rename if spec is not None else ()
    where = spec.where if spec is not None else ()
    renamed = dict(rename)
    missing = [old for old in renamed if columns and old not in columns]
    if missing:
        raise SourceError(
            f"data {name}: `rename` names the column {missing[0]!r}, which the source does not have; "
            f"its columns are {columns}"
        )
    clobbered = [new for old, new in rename if new in columns and new not in renamed]
    if clobbered:
        raise SourceError(
            f"data {name}: `rename` gives a column the name {clobbered[0]!r}, which the source "
            "already has; rename that one too, or choose another name"
        )
    columns = [renamed.get(c, c) for c in columns]
    system = system_message(template, spec)
    common = dict(rename=rename, where=where)

    def conversation(column: str) -> Mode:
        tools = template.tools or ("tools" if "tools" in columns else None)
        return Mode(
            "messages",
            column=column,
            train_on=template.train_on,
            system=system,
            roles=template.roles,
            keys=template.keys,
            tools=tools,
            **common,
        )

    if template.mode == "prompt_completion":
        parse_template(template.prompt or "")  # raise TemplateError early
        parse_template(template.completion or "")
        return Mode(
            "prompt_completion",
            prompt=template.prompt,
            completion=template.completion,
            chat=template.chat,
            system=system if template.chat else None,
            **common,
        )
    if template.mode == "messages":
        return conversation(template.messages)
    if template.mode == "alpaca" or (
        template.mode == "conventional"
        and "instruction" in columns
        and "output" in columns
        and not _conversation_column(columns)
        and "input_ids" not in columns
    ):
        return Mode("alpaca", chat=template.chat, system=system if template.chat else None, **common)
    if template.mode == "tokens":
        return Mode("tokens", **common)
    found = _conversation_column(columns)
    if found:
        return conversation(found)
    if "input_ids" in columns:
        return Mode("tokens", **common)
    if "prompt" in columns and "completion" in columns:
        return Mode("prompt_completion", prompt="{prompt}", completion="{completion}", **common)
    if "text" in columns:
        return Mode("text", column="text", **common)
    raise SourceError(
        f"data {name}: no template and no conventional columns (messages or conversations, input_ids, "
        f"instruction + output, prompt + completion, or text); columns are {columns}. Add a template for {name}."
    )


def _conversation_column(columns: list[str]) -> str | None:
    return next((c for c in shapes.CONVERSATION_COLUMNS if c in columns), None)


@dataclass
class TokenizedSource:
    """A source after templating and tokenization: flat arrays, one example per good row.

    ``tokens[offsets[i]:offsets[i+1]]`` are the ids of example i; ``trained`` the
    same slice of 0/1 flags; ``rows[i]`` its raw row index in the LoadedSource.
    """

    name: str
    mode: Mode
    tokens: np.ndarray  # int32, flat
    trained: np.ndarray  # int8, flat
    offsets: np.ndarray  # int64, n+1
    rows: np.ndarray  # int64, n
    raw_rows: int
    bad_rows: list[RejectedRow]
    boundary_merges: int
    cache_hit: bool
    cache_files: list[str]  # the Arrow shards, in row order (empty when caching is off)
    fingerprint: str
    key: str
    filtered: int = 0  # rows the source's `where` left out
    per_turn_rows: int = 0  # conversations rendered one example per trained turn (render_conversation)
    per_turn_examples: int = 0  # the examples they became
    tool_tokens: np.ndarray | None = None  # per example: trained tokens in assistant turns that call tools
    turns: np.ndarray | None = None  # per example: a per-turn example's assistant message index, else -1
    unclosed_turns: int = 0  # trained turns that do not end on an end-of-turn token

    def __len__(self) -> int:
        return len(self.rows)

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def example(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return self.tokens[a:b], self.trained[a:b]

    def bad_reasons(self) -> Counter:
        return Counter(r.reason.split(":")[0] for r in self.bad_rows)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class _Tokenize:
    """The batched map function (a class so datasets never needs to hash it: the key is explicit).

    A row becomes one output row: an example, a bad row (``bad`` says why) or a filtered one
    (``bad == shapes.FILTERED``); a conversation rendered per turn becomes one per turn.
    """

    def __init__(self, loaded: LoadedSource, mode: Mode, tokenizer: Any, first_row: int = 0):
        self.loaded, self.mode, self.tok = loaded, mode, tokenizer
        self.first_row = first_row  # the shard's first row: map's indices count from it
        self.on_bad_row = loaded.spec.on_bad_row
        self.eos = tokenizer.eos_token_id
        self.chat = mode.kind == "messages" or mode.chat
        self.closers = special_ids(tokenizer) if self.chat else set()
        if mode.kind == "prompt_completion":
            self.p_parts = parse_template(mode.prompt or "")
            self.c_parts = parse_template(mode.completion or "")

    def render(self, row: dict[str, Any]) -> list[Rendered]:
        m = self.mode
        if m.kind == "prompt_completion" and m.chat:
            return [
                render_chat(
                    self.tok, chat_messages(self.p_parts, self.c_parts, row, m.system), "prompt", "last_assistant"
                )
            ]
        if m.kind == "prompt_completion":
            return [render_prompt_completion(self.p_parts, self.c_parts, row)]
        if m.kind == "alpaca" and m.chat:
            return [render_chat(self.tok, shapes.alpaca_messages(row, m.system), "instruction", "last_assistant")]
        if m.kind == "alpaca":
            prompt, completion = shapes.alpaca_prompt(row)
            return [Rendered(prompt + completion, ((len(prompt), len(prompt + completion)),), True, True, (None,))]
        if m.kind == "text":
            return [render_text(m.column, row)]
        if m.column not in row:
            raise RowProblem(f"missing column {m.column!r}", column=m.column)
        said = shapes.conversation(row[m.column], m.column, m.roles, m.keys)
        messages = shapes.with_system(said, m.system)
        tools = shapes.tools_of(row.get(m.tools), m.tools) if m.tools else None
        rendered = render_conversation(self.tok, messages, m.column, m.train_on, tools)
        lead = len(messages) - len(said)  # a system message the source adds: turns count the row's own messages
        return (
            [dataclasses.replace(r, turns=tuple(None if t is None else t - lead for t in r.turns)) for r in rendered]
            if lead
            else rendered
        )

    def error(self, index: int, row: dict[str, Any], p: RowProblem) -> BadRowError:
        file, number = self.loaded.locate(index)
        cls = TemplateNotPrefixStableError if p.unstable else BadRowError
        reason = p.reason
        if p.unstable:
            reason += (
                " -- use train_on = last_assistant, or a chat template whose generation prompt opens "
                "the assistant turn exactly as the turn is rendered"
            )
        err = cls(
            self.loaded.spec.name, file, number, p.column, reason, shorten(row), turn=p.turn, unit=self.loaded.unit
        )
        return err

    def _ids(self, texts: list[str], special: bool) -> list[list[int]]:
        if not texts:
            return []
        ids = self.tok(texts, add_special_tokens=special, return_attention_mask=False, return_token_type_ids=False)[
            "input_ids"
        ]
        return [list(x) for x in ids]

    def __call__(self, batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        global TOKENIZE_BATCHES
        TOKENIZE_BATCHES += 1
        indices = [self.first_row + i for i in indices]
        cols = list(batch)
        out: dict[str, list] = {k: [] for k in _features()}
        # Each row: a list of rendered examples, pre-tokenized (ids, trained), or a problem.
        results: list[tuple[str, Any]] = []
        for j in range(len(indices)):
            raw = {k: batch[k][j] for k in cols}
            try:
                row = self.mode.transform(raw)
                if row is None:
                    results.append(("filtered", None))
                elif self.mode.kind == "tokens":
                    results.append(("tokens", shapes.token_row(row, len(self.tok))))
                else:
                    results.append(("rendered", self.render(row)))
            except RowProblem as p:
                if p.unstable or self.on_bad_row == "error":
                    raise self.error(indices[j], raw, p) from None
                results.append(("bad", p))
            except ChatTemplateError as e:  # no row renders: stop, whatever on_bad_row says
                raise ChatTemplateError(f"data {self.loaded.spec.name}: {e}") from None
        # One batched tokenizer call for the full texts and every span boundary prefix.
        texts: list[str] = []
        plans: list[list[tuple[int, list[tuple[int, int]]]]] = []
        special = self.mode.kind != "messages" and not self.mode.chat
        for kind, value in results:
            plan = []
            for r in value if kind == "rendered" else ():
                full_at = len(texts)
                texts.append(r.text)
                bounds = []
                for s, e in r.spans:
                    si = len(texts)
                    texts.append(r.text[:s])
                    if e >= len(r.text):  # the span runs to the end: no prefix needed
                        bounds.append((si, -1))
                    else:
                        bounds.append((si, len(texts)))
                        texts.append(r.text[:e])
                plan.append((full_at, bounds))
            plans.append(plan)
        ids = self._ids(texts, special)
        for j, ((kind, value), plan) in enumerate(zip(results, plans)):
            if kind == "filtered":
                self._empty(out, indices[j], shapes.FILTERED)
            elif kind == "bad":
                self._empty(out, indices[j], value.reason, value.column, value.turn)
            elif kind == "tokens":
                self._example(out, indices[j], *value, merges=0)
            else:
                for r, (full_at, bounds) in zip(value, plan):
                    self._rendered(out, indices[j], r, ids, full_at, bounds, batch, cols, j)
        return out

    def _rendered(self, out, index, r: Rendered, ids, full_at, bounds, batch, cols, j) -> None:
        full = ids[full_at]
        trained = [0] * len(full)
        merges = tool_tokens = unclosed = 0
        for k, ((si, ei), (s, e)) in enumerate(zip(bounds, r.spans)):
            pre_s = self._strip_end_eos(ids[si], r.text[:s])
            ts = _common_prefix(pre_s, full)
            if ts < len(pre_s):
                merges += 1
            if ei < 0:
                te = len(full)
            else:
                pre_e = self._strip_end_eos(ids[ei], r.text[:e])
                te = _common_prefix(pre_e, full)
                if te < len(pre_e):
                    merges += 1
            trained[ts:te] = [1] * max(0, te - ts)
            if self.chat and r.turns[k] is not None and te > ts and full[te - 1] not in self.closers:
                unclosed += 1  # this turn's answer does not end on the template's end-of-turn token
            if r.calls and r.calls[k]:
                tool_tokens += max(0, te - ts)
        if r.append_eos and (not full or full[-1] != self.eos):
            full = full + [self.eos]
            trained.append(1)
        trained[0] = 0  # the first token is never a target: nothing predicts it
        if not any(trained):
            prob = RowProblem("no trainable tokens after tokenization", column=None)
            if self.on_bad_row == "error":
                raise self.error(index, {k: batch[k][j] for k in cols}, prob)
            self._empty(out, index, prob.reason)
            return
        self._example(
            out,
            index,
            full,
            trained,
            merges,
            per_turn=r.per_turn,
            tool_tokens=tool_tokens,
            unclosed=unclosed,
            turn=r.turns[-1] if r.per_turn and r.turns else None,
        )

    @staticmethod
    def _empty(out, index: int, reason: str, column: str | None = None, turn: int | None = None) -> None:
        out["row"].append(index)
        out["input_ids"].append([])
        out["trained"].append([])
        out["bad"].append(reason)
        out["bad_column"].append(column or "")
        out["bad_turn"].append(-1 if turn is None else turn)
        out["merges"].append(0)
        out["per_turn"].append(0)
        out["turn"].append(-1)
        out["tool_tokens"].append(0)
        out["unclosed"].append(0)

    @staticmethod
    def _example(
        out,
        index: int,
        ids: list[int],
        trained: list[int],
        merges: int,
        per_turn: bool = False,
        tool_tokens: int = 0,
        unclosed: int = 0,
        turn: int | None = None,
    ) -> None:
        out["row"].append(index)
        out["input_ids"].append(ids)
        out["trained"].append(trained)
        out["bad"].append("")
        out["bad_column"].append("")
        out["bad_turn"].append(-1)
        out["merges"].append(merges)
        out["per_turn"].append(int(per_turn))
        out["turn"].append(-1 if turn is None else int(turn))
        out["tool_tokens"].append(tool_tokens)
        out["unclosed"].append(unclosed)

    def _strip_end_eos(self, ids: list[int], text: str) -> list[int]:
        return prefix_ids(self.tok, ids, text)


def prefix_ids(tokenizer: Any, ids: list[int], text: str) -> list[int]:
    """The ids of ``text`` as the start of a longer example: without an EOS the text does not contain.

    Post-processors that append EOS to every encoding ("$A </s>") would make every
    prefix diverge at its end (and a prompt end in EOS).
    """
    eos, eos_text = tokenizer.eos_token_id, tokenizer.eos_token
    if ids and ids[-1] == eos and not (eos_text and text.endswith(eos_text)):
        return ids[:-1]
    return ids


def flat_columns(table: pa.Table, prefix: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tokens int32, trained int8, offsets int64 of every row, n + 1) of a tokenized table.

    With a cache ``prefix`` the three arrays are written once (``PREFIX.tokens.npy``, ...),
    one record batch at a time, and memory-mapped: the corpus stays on disk and memory holds
    only the pages in use, so data larger than memory prepares and trains. Without one (caching
    disabled) they are built in memory.
    """
    if prefix is None:
        ids, trained = table.column("input_ids").combine_chunks(), table.column("trained").combine_chunks()
        offsets = ids.offsets.to_numpy().astype(np.int64)
        return (
            ids.flatten().to_numpy().astype(np.int32),
            trained.flatten().to_numpy().astype(np.int8),
            offsets - offsets[0],
        )
    paths = {name: f"{prefix}.{name}.npy" for name in ("tokens", "trained", "offsets")}
    if not all(os.path.exists(p) for p in paths.values()):
        _write_flat(table, paths)
    return tuple(np.load(paths[name], mmap_mode="r") for name in ("tokens", "trained", "offsets"))


def _write_flat(table: pa.Table, paths: dict[str, str]) -> None:
    """Stream the table's token columns into three .npy files (whole or absent: written under
    temporary names, then renamed, offsets last, so a killed process leaves nothing half-written)."""
    ids_chunks, trained_chunks = table.column("input_ids").chunks, table.column("trained").chunks
    total = sum(len(chunk.flatten()) for chunk in ids_chunks)
    rows = sum(len(chunk) for chunk in ids_chunks)
    mine = f"{socket.gethostname()}.{os.getpid()}"  # processes of a job may share the cache's disk
    tmp = {name: f"{path}.{mine}.tmp" for name, path in paths.items()}
    with (
        open(tmp["tokens"], "wb") as tokens,
        open(tmp["trained"], "wb") as trained,
        open(tmp["offsets"], "wb") as offsets,
    ):
        for f, dtype, n in ((tokens, np.int32, total), (trained, np.int8, total), (offsets, np.int64, rows + 1)):
            np.lib.format.write_array_header_2_0(
                f, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": (n,)}
            )
        at = 0
        offsets.write(np.zeros(1, np.int64).tobytes())
        for ids, flags in zip(ids_chunks, trained_chunks):
            values = np.ascontiguousarray(ids.flatten().to_numpy(), dtype=np.int32)
            tokens.write(values.tobytes())
            trained.write(np.ascontiguousarray(flags.flatten().to_numpy(), dtype=np.int8).tobytes())
            ends = at + np.cumsum(np.diff(ids.offsets.to_numpy()), dtype=np.int64)
            offsets.write(ends.tobytes())
            at += len(values)
    for name in ("tokens", "trained", "offsets"):
        os.replace(tmp[name], paths[name])


def worker_processes(num_proc: int | None) -> int | None:
    """``num_proc`` for `Dataset.map`, or None (no workers) once JAX is in this process: datasets'
    workers are forked, and a fork after JAX has started its threads can deadlock the child."""
    if num_proc is None or num_proc <= 1 or "jax" in sys.modules:
        return None
    return num_proc


def tokenize_source(
    loaded: LoadedSource,
    template: TemplateSpec,
    tokenizer: Any,
    cache_dir: str | None = None,
    batch_size: int = 1000,
    num_proc: int | None = None,
    share: Share = Share(),
) -> TokenizedSource:
    """Template and tokenize every row of ``loaded`` (cached by shard; see the module docstring)."""
    import datasets

    spec = loaded.spec
    if tokenizer.eos_token_id is None:
        raise DataError("the tokenizer has no EOS token: completions could not be closed; set eos_token")
    mode = resolve_mode(template, loaded.dataset.column_names, spec)
    if mode.kind == "messages":
        require_chat_template(tokenizer, f"data {spec.name}: the conversation column {mode.column!r}")
    if mode.chat:
        require_chat_template(tokenizer, f"data {spec.name}: `chat = on`")
    key_obj = {
        "version": PIPELINE_VERSION,
        "source": loaded.fingerprint,
        "kind": spec.kind,
        "field": spec.field,
        "split": spec.split,
        "subset": spec.subset,
        "mode": dataclasses.asdict(mode),
        "tokenizer": tokenizer_fingerprint(tokenizer),
    }
    key = hashlib.sha256(json.dumps(key_obj, sort_keys=True).encode()).hexdigest()[:40]
    root = os.path.join(os.path.expanduser(str(cache_dir or datasets.config.HF_DATASETS_CACHE)), "sftc-tokenized")
    os.makedirs(root, exist_ok=True)
    use_cache = datasets.is_caching_enabled()
    datasets.disable_progress_bars()
    n_rows = len(loaded.dataset)
    bounds = [(a, min(a + SHARD_ROWS, n_rows)) for a in range(0, n_rows, SHARD_ROWS)]
    files = [os.path.join(root, f"{key}-{k + 1:05d}of{len(bounds):05d}.arrow") for k in range(len(bounds))]
    hit = use_cache and all(os.path.exists(f) for f in files)

    def shard(k: int) -> datasets.Dataset:
        a, b = bounds[k]
        part = loaded.dataset if len(bounds) == 1 else loaded.dataset.select(range(a, b))
        return part.map(
            _Tokenize(loaded, mode, tokenizer, first_row=a),
            batched=True,
            batch_size=batch_size,
            with_indices=True,
            remove_columns=loaded.dataset.column_names,
            features=_features(),
            cache_file_name=files[k] if use_cache else None,
            new_fingerprint=f"{key}-{k}",
            load_from_cache_file=use_cache,
            num_proc=worker_processes(num_proc),
            desc=f"tokenizing {spec.name}",
        )

    if use_cache and share.count > 1:  # each process its shards; then every shard is on disk (or read below)
        for k in share.mine(len(bounds)):
            shard(k)
        share.barrier(f"sftc: tokenized {spec.name}")
    parts = [shard(k) for k in range(len(bounds))]
    ds = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
    table: pa.Table = ds.with_format("arrow")[:]
    bad = np.asarray(table.column("bad").to_numpy(zero_copy_only=False), dtype=object)
    rows = table.column("row").to_numpy().astype(np.int64)
    filtered_mask = bad == shapes.FILTERED
    bad_mask = (bad != "") & ~filtered_mask
    bad_rows = list(loaded.rejected)
    if bad_mask.any():
        bad_cols = table.column("bad_column").to_pylist()
        bad_turns = table.column("bad_turn").to_pylist()
        for i in np.nonzero(bad_mask)[0]:
            file, number = loaded.locate(int(rows[i]))
            if spec.on_bad_row == "error":  # found in a cache written by a skip run
                raw = loaded.dataset[int(rows[i])]
                t = bad_turns[i]
                raise BadRowError(
                    spec.name,
                    file,
                    number,
                    bad_cols[i] or None,
                    str(bad[i]),
                    shorten(raw),
                    turn=None if t < 0 else t,
                    unit=loaded.unit,
                )
            bad_rows.append(RejectedRow(file, number, bad_cols[i] or None, str(bad[i]), ""))
    good = bad == ""
    prefix = os.path.join(root, key) if use_cache else None
    tokens_all, trained_all, offsets_all = share.first(
        f"token arrays of {spec.name}", lambda: flat_columns(table, prefix)
    )
    lengths = np.diff(offsets_all)[good]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    # bad rows have zero length, so the flat arrays need no compaction
    if int(offsets[-1]) != len(tokens_all):
        raise AssertionError("bad rows must have no tokens")
    merges = int(table.column("merges").to_numpy().sum())
    filtered = int(filtered_mask.sum())
    if good.sum() == 0:
        if filtered == len(loaded):
            raise DataError(f"data {spec.name}: `where` leaves out all {filtered} rows; check its columns and values")
        reasons = Counter(r.reason for r in bad_rows).most_common(3)
        raise DataError(
            f"data {spec.name}: none of its {len(loaded)} rows became an example; most common problems: {reasons}"
        )
    per_turn = table.column("per_turn").to_numpy().astype(bool)
    return TokenizedSource(
        name=spec.name,
        mode=mode,
        tokens=tokens_all,
        trained=trained_all,
        offsets=offsets,
        rows=rows[good],
        raw_rows=len(loaded) + len(loaded.rejected),
        bad_rows=bad_rows,
        boundary_merges=merges,
        cache_hit=hit,
        cache_files=files if use_cache else [],
        fingerprint=loaded.fingerprint,
        key=key,
        filtered=filtered,
        per_turn_rows=len(np.unique(rows[per_turn])),
        per_turn_examples=int(per_turn.sum()),
        tool_tokens=table.column("tool_tokens").to_numpy().astype(np.int64)[good],
        turns=table.column("turn").to_numpy().astype(np.int64)[good],
        unclosed_turns=int(table.column("unclosed").to_numpy().sum()),
    )
