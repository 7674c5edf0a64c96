"""From a DataPlan to batches: splits, overflow, mixtures, epochs, packing and step-indexed order.

``DataPipeline(plan, tokenizer)`` loads and tokenizes every source (cached),
applies the eval split and the overflow policy, and then answers, for any step
N, which examples form its batch (``batch_indices(N)``) and the batch itself
(``batch(N)``, see ``runtime.data.batches`` for the format) -- without
replaying steps 0..N-1, so resuming is exact and cheap.

Order of the training stream (a pure function of the plan's seed):

1. Epoch ``e`` draws a multiset of train examples. Without weights: every train
   example once. With weights ``w``: ``total = sum of the weighted sources'
   train examples``; source ``s`` contributes ``round(w_s / sum(w) * total)``
   examples: whole passes over it, plus a sample (seeded by ``(seed, e, s)``)
   for the remainder. The multiset is shuffled with ``(seed, e)``.
2. Packing on: best-fit decreasing into rows of ``seq_len`` positions (ties in
   the shuffled order), then the rows are shuffled with ``(seed, e)``. Off: one
   example per row, padded.
3. Epochs are concatenated into one stream of rows; step N takes rows
   ``[N*B, (N+1)*B)``. With ``epochs = E`` the stream ends after E epochs
   (a fractional last epoch takes the first rows of that epoch) and the last
   batch is completed with empty rows (``loss_mask`` 0). With ``steps = S`` the
   stream continues through as many epochs as S steps need.

Finding step N needs the row counts of the epochs before it (each one packing
pass, milliseconds for small data, ~0.3 s per 100k examples), never a replay of
training.
"""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime.data.batches import BATCH_KEYS, assemble, empty_batch
from runtime.data.packing import pack_bfd, pack_table, packing_efficiency
from runtime.data.sources import LoadedSource, load_source
from runtime.data.stats import DataStats, SourceStats, no_train_examples
from runtime.data.tokenize import TokenizedSource, tokenize_source
from runtime.plan.data_errors import DataError, SequenceTooLongError, shorten
from runtime.plan.data_plan import DataPlan, SourceSpec, TemplateSpec
from runtime.platform.process_share import Share

_TAG_SHUFFLE, _TAG_ROWS, _TAG_SOURCE = 0, 1, 100


@dataclass(frozen=True)
class Example:
    """One example as the model sees it (after truncation)."""

    source: str
    split: str  # "train" | "eval"
    row: int  # raw row index in the source's dataset
    file: str | None
    line: int  # 1-based line/row in ``file`` (or in the dataset)
    tokens: np.ndarray
    trained: np.ndarray  # 1 where the token is a training target
    full_length: int  # tokens before truncation (== len(tokens) unless truncated)
    turn: int | None = None  # one of a conversation's per-turn examples: its assistant message index

    @property
    def truncated(self) -> bool:
        return self.full_length > len(self.tokens)


def eval_rows_for(n_rows: int, fraction: float, seed: int) -> np.ndarray:
    """Raw row indices held out for eval: a seeded permutation's first ``round(f*n)`` (>= 1 if n >= 2)."""
    k = int(round(fraction * n_rows))
    if k == 0 and n_rows >= 2:
        k = 1
    k = min(k, n_rows - 1) if n_rows >= 2 else 0
    perm = np.random.default_rng(seed).permutation(n_rows)
    return np.sort(perm[:k])


@dataclass(frozen=True)
class Rows:
    """An epoch's rows as one table, 8 bytes an example (not an array object each): row ``i``
    holds the example ids ``examples[starts[i]:starts[i + 1]]``."""

    examples: np.ndarray  # int64, every row's example ids one after another
    starts: np.ndarray  # int64, rows + 1

    def __len__(self) -> int:
        return len(self.starts) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"row {i} of {n}")
        i %= n
        return self.examples[self.starts[i] : self.starts[i + 1]]

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self[i] for i in range(len(self)))

    def permuted(self, perm: np.ndarray) -> Rows:
        """The rows in the order ``perm`` (row ``j`` is row ``perm[j]`` of this table)."""
        lengths = np.diff(self.starts)[perm]
        starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        gather = np.repeat(self.starts[perm] - starts[:-1], lengths) + np.arange(int(starts[-1]), dtype=np.int64)
        return Rows(self.examples[gather], starts)


def trained_between(trained: np.ndarray, starts: np.ndarray, ends: np.ndarray, chunk: int = 65536) -> int:
    """How many of ``trained[starts[i]:ends[i]]`` are 1, over all i; ``chunk`` examples at a time,
    so the memory it takes does not grow with the corpus (``trained`` may be memory-mapped)."""
    total = 0
    for i in range(0, len(starts), chunk):
        a, b = starts[i : i + chunk], ends[i : i + chunk]
        lo = int(a.min())
        sums = np.concatenate([[0], np.cumsum(trained[lo : int(b.max())], dtype=np.int64)])
        total += int((sums[b - lo] - sums[a - lo]).sum())
    return total


# (pipeline, source, its train example ids) -> the ids of the copies to drop (`dedup`)
CopyFinder = Callable[["DataPipeline", SourceSpec, np.ndarray], np.ndarray]


class DataPipeline:
    """Tokenized, split and length-checked examples of a DataPlan, and the batches they form.

    ``find_copies`` applies the sources' ``dedup``: it names the copies among a source's train
    examples (`runtime.preflight.data_audit` gives it, from `runtime.audit`); they are dropped
    and counted (``SourceStats.deduplicated``). Without it, copies stay: a pipeline built only
    to evaluate (eval rows are never deduplicated)."""

    def __init__(
        self,
        plan: DataPlan,
        tokenizer: Any,
        cache_dir: str | None = None,
        num_proc: int | None = None,
        share: Share = Share(),
        find_copies: CopyFinder | None = None,
    ):
        self.plan = plan
        self.tokenizer = tokenizer
        self.seq_len = int(plan.seq_len)
        self.batch_size = int(plan.global_batch_size)
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else tokenizer.eos_token_id)
        self._tables: list[TokenizedSource] = []
        self._loaded: list[LoadedSource] = []
        self._owner: list[str] = []  # source name (the data block) of each table
        gid_src, gid_local, gid_keep, gid_split, gid_full = [], [], [], [], []
        self._train_positions: dict[str, list[np.ndarray]] = {}  # for an error that says why none is left
        self.stats = DataStats(seq_len=self.seq_len, packing=bool(plan.packing), global_batch_size=self.batch_size)
        for spec in plan.sources:
            template = plan.template_for(spec.name)
            st = None
            parts: list[tuple[SourceSpec, str | None]] = [(spec, None)]
            if (eval_part := spec.eval_part()) is not None:
                parts.append((eval_part, "eval"))
            for part_spec, forced_split in parts:
                loaded = share.first(
                    f"read {part_spec.name}", lambda part_spec=part_spec: load_source(part_spec, cache_dir)
                )
                ts = tokenize_source(loaded, template, tokenizer, cache_dir, num_proc=num_proc, share=share)
                t = len(self._tables)
                self._tables.append(ts)
                self._loaded.append(loaded)
                self._owner.append(spec.name)
                if st is None:
                    st = SourceStats(
                        name=spec.name,
                        fingerprint=ts.fingerprint,
                        mode=ts.mode.kind,
                        resolved=dataclasses.asdict(ts.mode),
                        columns=list(loaded.dataset.column_names),
                    )
                    self.stats.sources[spec.name] = st
                else:
                    st.fingerprint += "+" + ts.fingerprint
                st.cache_hit = ts.cache_hit if forced_split is None else (st.cache_hit and ts.cache_hit)
                st.rows += ts.raw_rows
                st.bad_rows += len(ts.bad_rows)
                for r in ts.bad_rows:
                    key = r.reason.split(" (")[0].split(":")[0]
                    st.bad_reasons[key] = st.bad_reasons.get(key, 0) + 1
                    if len(st.bad_examples) < 5:
                        col = f" [{r.column}]" if r.column else ""
                        st.bad_examples.append(f"{r.file or part_spec.name}:{r.row}{col}: {r.reason}")
                st.boundary_merges += ts.boundary_merges
                st.filtered += ts.filtered
                st.per_turn_rows += ts.per_turn_rows
                st.per_turn_examples += ts.per_turn_examples
                st.unclosed_turns += ts.unclosed_turns
                lengths = ts.lengths()
                st.max_tokens = max(st.max_tokens, int(lengths.max()) if len(lengths) else 0)
                if forced_split == "eval":
                    is_eval = np.ones(len(ts), bool)
                elif spec.eval is not None and spec.eval.fraction is not None:
                    held = eval_rows_for(len(loaded), float(spec.eval.fraction), int(spec.eval.seed))
                    is_eval = np.isin(ts.rows, held)
                else:
                    is_eval = np.zeros(len(ts), bool)
                self._train_positions.setdefault(spec.name, []).append(lengths[~is_eval] - 1)
                keep = self._apply_overflow(ts, loaded, part_spec, lengths, st)
                ok = keep > 0
                idx = np.nonzero(ok)[0]
                gid_src.append(np.full(len(idx), t, np.int32))
                gid_local.append(idx.astype(np.int64))
                gid_keep.append(keep[idx])
                gid_split.append(is_eval[idx].astype(np.int8))
                gid_full.append(lengths[idx])
                for split_val, name in ((0, "train"), (1, "eval")):
                    sel = idx[is_eval[idx] == split_val]
                    n_tok = int((keep[sel] - 1).sum())
                    if name == "train":
                        st.train_examples += len(sel)
                        st.tool_call_tokens += int(ts.tool_tokens[sel].sum()) if ts.tool_tokens is not None else 0
                        st.train_tokens += n_tok
                        starts = ts.offsets[sel]
                        st.train_trained_tokens += trained_between(ts.trained, starts + 1, starts + keep[sel])
                    else:
                        st.eval_examples += len(sel)
                        st.eval_tokens += n_tok

        def cat(xs, dt):
            return np.concatenate(xs).astype(dt) if xs else np.zeros(0, dt)

        self.ex_table = cat(gid_src, np.int32)
        self.ex_local = cat(gid_local, np.int64)
        self.ex_keep = cat(gid_keep, np.int64)  # tokens kept (positions used = keep - 1)
        self.ex_split = cat(gid_split, np.int8)
        self.ex_full = cat(gid_full, np.int64)
        names = [s.name for s in plan.sources]
        owner_of_table = np.asarray([names.index(o) for o in self._owner], np.int32)
        self.ex_owner = owner_of_table[self.ex_table] if len(self.ex_table) else np.zeros(0, np.int32)
        if find_copies is not None:
            self._deduplicate(find_copies)
        self._train_by_source = {
            s.name: np.nonzero((self.ex_owner == k) & (self.ex_split == 0))[0] for k, s in enumerate(plan.sources)
        }
        self._epoch_cache: OrderedDict[int, Rows] = OrderedDict()
        self._rows_per_epoch: list[int] = []
        self._check_weights()
        del self._train_positions
        self._finish_stats()

    # ------------------------------------------------------------ construction helpers

    def _apply_overflow(
        self, ts: TokenizedSource, loaded: LoadedSource, spec: SourceSpec, lengths: np.ndarray, st: SourceStats
    ) -> np.ndarray:
        """Tokens kept per example (0 = dropped), counting drops and truncations."""
        limit = self.seq_len + 1  # seq_len positions need seq_len + 1 tokens
        keep = lengths.copy()
        over = np.nonzero(lengths > limit)[0]
        if len(over) == 0:
            return keep
        if spec.overflow == "error":
            i = int(over[0])
            file, line = loaded.locate(int(ts.rows[i]))
            where = f"{file}, {loaded.unit} {line}" if file else f"row {line}"
            raise SequenceTooLongError(
                f"data {spec.name} ({where}): example has {int(lengths[i]) - 1} positions > seq_len "
                f"{self.seq_len} ({len(over)} such examples in this source). "
                f"help: raise seq_len, or set overflow = drop | truncate"
            )
        if spec.overflow == "drop":
            keep[over] = 0
            st.dropped_overflow += len(over)
            return keep
        for i in over:  # truncate: keep the start
            a = int(ts.offsets[i])
            if ts.trained[a + 1 : a + limit].any():
                keep[i] = limit
                st.truncated += 1
            else:
                keep[i] = 0
                st.dropped_no_trainable += 1
        return keep

    def _deduplicate(self, find_copies: CopyFinder) -> None:
        """Drop the copies among each `dedup` source's train examples (the first of each stays),
        counting them and taking their tokens out of the source's counts."""
        drop = np.zeros(len(self.ex_table), bool)
        for k, spec in enumerate(self.plan.sources):
            if spec.dedup is None:
                continue
            st = self.stats.sources[spec.name]
            st.dedup = spec.dedup.text
            train = np.nonzero((self.ex_owner == k) & (self.ex_split == 0))[0]
            copies = np.unique(np.asarray(find_copies(self, spec, train), np.int64))
            if len(copies) == 0:
                continue
            if not np.isin(copies, train).all():
                raise ValueError(f"data {spec.name}: dedup named an example that is not one of its train examples")
            drop[copies] = True
            st.deduplicated += len(copies)
            st.train_examples -= len(copies)
            st.train_tokens -= int((self.ex_keep[copies] - 1).sum())
            for gid in copies:
                ts = self._tables[int(self.ex_table[gid])]
                local, keep = int(self.ex_local[gid]), int(self.ex_keep[gid])
                start = int(ts.offsets[local])
                st.train_trained_tokens -= int(ts.trained[start + 1 : start + keep].sum())
                if ts.tool_tokens is not None:
                    st.tool_call_tokens -= int(ts.tool_tokens[local])
        if drop.any():
            kept = ~drop
            self.ex_table, self.ex_local, self.ex_keep = self.ex_table[kept], self.ex_local[kept], self.ex_keep[kept]
            self.ex_split, self.ex_full, self.ex_owner = self.ex_split[kept], self.ex_full[kept], self.ex_owner[kept]

    def _check_weights(self) -> None:
        w = self.plan.weights
        names = list(w) if w is not None else [s.name for s in self.plan.sources]
        for name in names:
            if len(self._train_by_source[name]) == 0 and (w is not None):
                raise DataError(self._why_empty(f"data {name} has weight {w[name]} but no train examples", [name]))
        if sum(len(self._train_by_source[n]) for n in names) == 0:
            raise DataError(self._why_empty("no train examples in any source", names))

    def _why_empty(self, headline: str, names: list[str]) -> str:
        overflow = {s.name: s.overflow for s in self.plan.sources}
        return no_train_examples(
            headline,
            [
                (
                    self.stats.sources[n],
                    np.concatenate(self._train_positions.get(n) or [np.zeros(0, np.int64)]),
                    overflow[n],
                )
                for n in names
            ],
            self.seq_len,
        )

    def _finish_stats(self) -> None:
        rows0 = self.epoch_rows(0)
        st = self.stats
        st.rows_per_epoch = len(rows0)
        st.steps_per_epoch = len(rows0) / self.batch_size
        st.total_steps = self.total_steps
        positions = int((self.ex_keep[rows0.examples] - 1).sum())
        st.efficiency = packing_efficiency(np.asarray([positions]), len(rows0), self.seq_len)
        counts = np.bincount(self.ex_owner[rows0.examples], minlength=len(self.plan.sources))
        for k, s in enumerate(self.plan.sources):
            st.sources[s.name].epoch_examples = int(counts[k])
        st.eval_rows = len(self.eval_rows())

    # ------------------------------------------------------------ examples

    def example_arrays(self, gid: int) -> tuple[np.ndarray, np.ndarray]:
        """(tokens, trained) of global example ``gid``, truncated as the model sees it."""
        ts = self._tables[int(self.ex_table[gid])]
        a = int(ts.offsets[int(self.ex_local[gid])])
        k = int(self.ex_keep[gid])
        return ts.tokens[a : a + k], ts.trained[a : a + k]

    def example(self, gid: int) -> Example:
        t = int(self.ex_table[gid])
        ts, loaded = self._tables[t], self._loaded[t]
        local = int(self.ex_local[gid])
        row = int(ts.rows[local])
        file, line = loaded.locate(row)
        tokens, trained = self.example_arrays(gid)
        turn = int(ts.turns[local]) if ts.turns is not None and ts.turns[local] >= 0 else None
        return Example(
            source=self._owner[t],
            split="eval" if self.ex_split[gid] else "train",
            row=row,
            file=file,
            line=line,
            tokens=tokens,
            trained=trained,
            full_length=int(self.ex_full[gid]),
            turn=turn,
        )

    def examples(self, source: str | None = None, split: str | None = None, n: int | None = None) -> list[Example]:
        """Kept examples in source order, then raw row order (for preview and inspection)."""
        sel = np.arange(len(self.ex_table))
        if source is not None:
            k = [s.name for s in self.plan.sources].index(source) if source in self.stats.sources else -1
            if k < 0:
                raise KeyError(f"no source named {source!r}; sources: {list(self.stats.sources)}")
            sel = sel[self.ex_owner[sel] == k]
        if split is not None:
            sel = sel[self.ex_split[sel] == (1 if split == "eval" else 0)]
        if n is not None:
            sel = sel[:n]
        return [self.example(int(g)) for g in sel]

    def raw_row(self, gid: int) -> dict[str, Any]:
        t = int(self.ex_table[gid])
        return self._loaded[t].dataset[int(self._tables[t].rows[int(self.ex_local[gid])])]

    # ------------------------------------------------------------ epochs and steps

    def _rng(self, *tags: int) -> np.random.Generator:
        return np.random.default_rng([int(self.plan.seed) & 0xFFFFFFFF, *tags])

    def epoch_examples(self, epoch: int) -> np.ndarray:
        """The shuffled multiset of train example ids of ``epoch`` (mixture weights applied)."""
        w = self.plan.weights
        if w is None:
            pool = np.concatenate([self._train_by_source[s.name] for s in self.plan.sources])
        else:
            names = [s.name for s in self.plan.sources if s.name in w]
            total = sum(len(self._train_by_source[n]) for n in names)
            wsum = sum(float(w[n]) for n in names)
            chunks = []
            for n in names:
                ids = self._train_by_source[n]
                want = int(round(float(w[n]) / wsum * total))
                full, rem = divmod(want, len(ids))
                k = [s.name for s in self.plan.sources].index(n)
                chunks.append(np.tile(ids, full))
                if rem:
                    chunks.append(self._rng(epoch, _TAG_SOURCE + k).permutation(ids)[:rem])
            pool = np.concatenate(chunks) if chunks else np.zeros(0, np.int64)
        return self._rng(epoch, _TAG_SHUFFLE).permutation(pool)

    def epoch_rows(self, epoch: int) -> Rows:
        """Rows of ``epoch`` in training order; each row is an array of example ids."""
        if epoch in self._epoch_cache:
            self._epoch_cache.move_to_end(epoch)
            return self._epoch_cache[epoch]
        order = self.epoch_examples(epoch)
        if self.plan.packing:
            items, starts = pack_table(self.ex_keep[order] - 1, self.seq_len)
            rows = Rows(order[items], starts).permuted(self._rng(epoch, _TAG_ROWS).permutation(len(starts) - 1))
        else:
            rows = Rows(order, np.arange(len(order) + 1, dtype=np.int64))
        self._epoch_cache[epoch] = rows
        while len(self._epoch_cache) > 4:
            self._epoch_cache.popitem(last=False)
        return rows

    def rows_in_epoch(self, epoch: int) -> int:
        while len(self._rows_per_epoch) <= epoch:
            self._rows_per_epoch.append(len(self.epoch_rows(len(self._rows_per_epoch))))
        return self._rows_per_epoch[epoch]

    @property
    def total_rows(self) -> int | None:
        """Rows in the whole training stream (None with ``steps``: it is as long as needed)."""
        if self.plan.epochs is None:
            return None
        e = float(self.plan.epochs)
        full = int(math.floor(e))
        rows = sum(self.rows_in_epoch(i) for i in range(full))
        if e > full:
            rows += int(round((e - full) * self.rows_in_epoch(full)))
        return rows

    @property
    def total_steps(self) -> int:
        if self.plan.steps is not None:
            return int(self.plan.steps)
        return int(math.ceil(self.total_rows / self.batch_size))

    def _locate_row(self, g: int) -> tuple[int, int]:
        e, start = 0, 0
        while start + self.rows_in_epoch(e) <= g:
            start += self.rows_in_epoch(e)
            e += 1
        return e, g - start

    def batch_indices(self, step: int) -> list[np.ndarray]:
        """Example ids of each of the ``global_batch_size`` rows of ``step`` (empty = padding row)."""
        if step < 0:
            raise ValueError("step must be >= 0")
        end = self.total_rows
        out = []
        for j in range(self.batch_size):
            g = step * self.batch_size + j
            if end is not None and g >= end:
                out.append(np.zeros(0, np.int64))
                continue
            e, r = self._locate_row(g)
            out.append(self.epoch_rows(e)[r])
        return out

    def epoch_of_step(self, step: int) -> int:
        return self._locate_row(step * self.batch_size)[0]

    def batch(self, step: int, rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The batch of ``step``: all its rows, or only ``rows`` of them (a process's share)."""
        idx = self.batch_indices(step)
        if rows is not None:
            idx = [idx[int(r)] for r in rows]
        return assemble([[self.example_arrays(int(g)) for g in r] for r in idx], self.seq_len, self.pad_id)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for step in range(self.total_steps):
            yield self.batch(step)

    # ------------------------------------------------------------ eval

    def eval_rows(self, source: str | None = None) -> list[np.ndarray]:
        """Eval rows (all sources, or one), fixed order; packed like training when packing is on."""
        sel = np.nonzero(self.ex_split == 1)[0]
        if source is not None:
            k = [s.name for s in self.plan.sources].index(source)
            sel = sel[self.ex_owner[sel] == k]
        if not self.plan.packing:
            return [sel[i : i + 1] for i in range(len(sel))]
        bins = pack_bfd(self.ex_keep[sel] - 1, self.seq_len) if len(sel) else []
        return [sel[np.asarray(b, np.int64)] for b in bins]

    def eval_batches(
        self, batch_size: int | None = None, source: str | None = None, rows: np.ndarray | None = None
    ) -> Iterator[dict[str, np.ndarray]]:
        """Eval batches of ``batch_size`` rows (default: global batch), the last completed with
        empty rows; with ``rows``, only those rows of each batch (a process's share)."""
        bs = int(batch_size or self.batch_size)
        eval_rows = self.eval_rows(source)
        for i in range(0, len(eval_rows), bs):
            chunk = eval_rows[i : i + bs]
            chunk = chunk + [np.zeros(0, np.int64)] * (bs - len(chunk))
            if rows is not None:
                chunk = [chunk[int(r)] for r in rows]
            yield assemble([[self.example_arrays(int(g)) for g in r] for r in chunk], self.seq_len, self.pad_id)

    def eval_prompts(self, source: str | None = None) -> list[tuple[Example, np.ndarray, np.ndarray]]:
        """(example, prompt ids, reference completion ids) of eval examples, for generation metrics.

        The reference is the *last* run of trained tokens (the completion, or the final
        assistant turn, with its closing EOS / end-of-turn token); the prompt is every
        token before it, exactly what the model is given at inference.
        """
        out = []
        for ex in self.examples(source=source, split="eval"):
            t = np.asarray(ex.trained) > 0
            end = len(t) - int(np.argmax(t[::-1]))
            start = end
            while start > 0 and t[start - 1]:
                start -= 1
            out.append((ex, ex.tokens[:start], ex.tokens[start:end]))
        return out


def build_pipeline(
    plan: DataPlan, tokenizer: Any, cache_dir: str | None = None, num_proc: int | None = None
) -> DataPipeline:
    """Load, template, tokenize (cached) and index every source of ``plan``."""
    return DataPipeline(plan, tokenizer, cache_dir=cache_dir, num_proc=num_proc)


__all__ = [
    "DataPipeline",
    "Example",
    "build_pipeline",
    "eval_rows_for",
    "BATCH_KEYS",
    "empty_batch",
    "TemplateSpec",
    "shorten",
]
