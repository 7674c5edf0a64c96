"""What happened to the data: per-source counts that ``sftc plan`` and run manifests report."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class SourceStats:
    """Counts for one source. Every row is accounted for:

    ``rows - bad_rows - filtered + (per_turn_examples - per_turn_rows)
    == train_examples + eval_examples + dropped_overflow + dropped_no_trainable + deduplicated``
    (a conversation rendered per turn is several examples; ``truncated`` examples are kept,
    so they are inside the example counts).
    """

    name: str
    fingerprint: str
    mode: str  # prompt_completion | messages | alpaca | tokens | text
    resolved: dict[str, Any] = field(default_factory=dict)  # the whole Mode training resolved
    columns: list[str] = field(default_factory=list)  # the source's raw columns: what resolving the template read
    rows: int = 0
    bad_rows: int = 0
    bad_reasons: dict[str, int] = field(default_factory=dict)
    bad_examples: list[str] = field(default_factory=list)  # first few "file:row: reason"
    train_examples: int = 0
    eval_examples: int = 0
    dropped_overflow: int = 0
    truncated: int = 0
    dropped_no_trainable: int = 0  # truncation would have cut every trained token
    train_tokens: int = 0  # input positions of kept train examples (after truncation)
    train_trained_tokens: int = 0
    eval_tokens: int = 0
    max_tokens: int = 0  # longest example before overflow handling
    boundary_merges: int = 0  # rows where a token spans the prompt/completion boundary
    cache_hit: bool = False
    epoch_examples: int = 0  # examples drawn from this source per epoch (after weights)
    filtered: int = 0  # rows left out by the source's `where`
    per_turn_rows: int = 0  # conversations whose template re-renders earlier turns: one example per turn
    per_turn_examples: int = 0
    tool_call_tokens: int = 0  # trained tokens of train examples in assistant turns that call tools (before truncation)
    unclosed_turns: int = 0  # trained turns that do not end on an end-of-turn token
    dedup: str | None = None  # the source's `dedup` (`exact`, `near(0.9)`); None: copies kept
    deduplicated: int = 0  # train examples dropped as copies of an earlier one (`dedup`)

    def trained_from(self) -> str:
        """Which parts of the examples train, in words."""
        if self.mode == "messages":
            if self.resolved.get("train_on") == "all":
                return "every token of the conversations"
            which = (
                "the last assistant turn" if self.resolved.get("train_on") == "last_assistant" else "assistant turns"
            )
            if self.tool_call_tokens:
                return f"{which} ({self.tool_call_tokens:,} tokens in tool calls; tool results are context)"
            return which
        return {
            "prompt_completion": "completions and their end token",
            "alpaca": "Alpaca outputs and their end token",
            "tokens": "the rows' labels",
            "text": "every token of the text",
        }.get(self.mode, self.mode)


@dataclass
class DataStats:
    seq_len: int
    packing: bool
    global_batch_size: int
    sources: dict[str, SourceStats] = field(default_factory=dict)
    rows_per_epoch: int = 0  # sequences (packed rows) in epoch 0
    steps_per_epoch: float = 0.0  # rows_per_epoch / global_batch_size
    total_steps: int = 0
    efficiency: float = 0.0  # non-padding share of train positions in epoch 0
    eval_rows: int = 0
    # the values of the spec's data gates (`leakage`, `duplicates(faq)`, ...) by gate text, from
    # the audit before the first step; None when the spec has no data gate
    data_values: dict[str, float] | None = None
    # the audit's counts per source (and "all"): examples, train, eval and each kind of finding
    # (`runtime.audit.audit_report.Audit.counts`); None where the data was not audited
    audit: dict[str, dict[str, int]] | None = None

    @property
    def tokens_per_step(self) -> int:
        return self.seq_len * self.global_batch_size

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["tokens_per_step"] = self.tokens_per_step
        for source in d["sources"].values():  # without `dedup`, written as before the setting existed
            if source["dedup"] is None:
                del source["dedup"], source["deduplicated"]
        if self.data_values is None:
            del d["data_values"]
        if self.audit is None:
            del d["audit"]
        return d

    def summary(self) -> str:
        """A few human lines, in the style of ``sftc plan``."""
        parts = [f"{s.name} {s.train_examples:,} train / {s.eval_examples:,} eval" for s in self.sources.values()]
        dropped = sum(s.dropped_overflow + s.dropped_no_trainable for s in self.sources.values())
        trunc = sum(s.truncated for s in self.sources.values())
        bad = sum(s.bad_rows for s in self.sources.values())
        filtered = sum(s.filtered for s in self.sources.values())
        deduplicated = sum(s.deduplicated for s in self.sources.values())
        dedup = any(s.dedup is not None for s in self.sources.values())
        lines = [
            "data     " + "   ".join(parts),
            f"         {'packing' if self.packing else 'padding'} {self.efficiency * 100:.1f} % full   "
            f"dropped {dropped:,} (overflow)   truncated {trunc:,}   bad rows {bad:,}"
            + (f"   filtered {filtered:,} (where)" if filtered else "")
            + (f"   deduplicated {deduplicated:,} (dedup)" if dedup else ""),
            *self.source_lines(),
            *self.audit_lines(),
            f"steps    {self.total_steps:,} ({self.steps_per_epoch:.1f} per epoch)   "
            f"{self.global_batch_size} seq x {self.seq_len} tok = {self.tokens_per_step:,} tok/step",
        ]
        return "\n".join(lines)

    def source_lines(self) -> list[str]:
        """Per source: how many tokens train and where they come from, and what to look at."""
        lines = []
        for s in self.sources.values():
            lines.append(f"         {s.name}: {s.train_trained_tokens:,} trained tokens, from {s.trained_from()}")
            if s.dedup is not None:
                lines.append(
                    f"         {s.name}: {s.deduplicated:,} train example{'s' * (s.deduplicated != 1)} dropped as "
                    f"copies of an earlier one (dedup = {s.dedup}); eval rows are never dropped"
                )
            if s.per_turn_rows:
                lines.append(
                    f"         {s.name}: {s.per_turn_rows:,} conversations became {s.per_turn_examples:,} "
                    "examples, one per assistant turn: the chat template renders earlier turns "
                    "differently once later ones follow (as reasoning templates drop <think>)"
                )
            if s.unclosed_turns:
                lines.append(
                    f"         warning: {s.unclosed_turns:,} trained turns of {s.name} do not end on an "
                    "end-of-turn token, so the model may not learn to stop there"
                )
        return lines

    def audit_lines(self) -> list[str]:
        """The audit's findings per source in a few words; the sources without any on one line."""
        if self.audit is None:
            return []
        named = [s for s in self.sources if s in self.audit]
        found = [f"{name}: {findings_text(self.audit[name])}" for name in named if _any_finding(self.audit[name])]
        clean = [name for name in named if not _any_finding(self.audit[name])]
        if clean:
            found.append("no findings in " + ("any source" if len(clean) == len(named) else ", ".join(clean)))
        if len(clean) < len(named):
            found.append("`sftc audit SPEC` names every row and what to do")
        return [("audit    " if k == 0 else "         ") + line for k, line in enumerate(found)]


FINDING_NAMES = {  # each kind of `runtime.audit.audit_report.KINDS`: (one, many)
    "duplicate": ("duplicate", "duplicates"),
    "near_duplicate": ("near duplicate", "near duplicates"),
    "leak": ("eval leak", "eval leaks"),
    "conflict": ("conflict", "conflicts"),
    "suspect": ("suspect row", "suspect rows"),
}


def _any_finding(counts: dict[str, int]) -> bool:
    return any(counts.get(kind) for kind in FINDING_NAMES)


def findings_text(counts: dict[str, int]) -> str:
    """An audit's counts in words: `2 duplicates, 1 eval leak` (or `no findings`), the one way
    `sftc plan`, `sftc audit` and the report say them."""
    found = [f"{counts[k]:,} {FINDING_NAMES[k][counts[k] != 1]}" for k in FINDING_NAMES if counts.get(k)]
    return ", ".join(found) if found else "no findings"


def no_train_examples(headline: str, sources: list[tuple[SourceStats, np.ndarray, str]], seq_len: int) -> str:
    """The error when sources give nothing to train on: each one's rows accounted for
    (overflow, truncation, bad rows, eval), its lengths against ``seq_len``, what to change.

    ``sources`` holds (stats, positions, overflow setting); positions are the train-split
    examples' lengths as ``seq_len`` counts them (tokens - 1), before overflow handling.
    """
    lines, helps = [headline], []
    longest, p95s, truncatable = 0, [], []
    for source, positions, overflow in sources:
        fates = []
        if source.dropped_overflow:
            fates.append(
                f"{source.dropped_overflow:,} longer than seq_len {seq_len} and dropped (overflow = {overflow})"
            )
        if source.dropped_no_trainable:
            fates.append(
                f"{source.dropped_no_trainable:,} dropped because truncating to seq_len {seq_len} "
                "would cut every trained token"
            )
        if source.bad_rows:
            reasons = ", ".join(f"{reason}: {n:,}" for reason, n in source.bad_reasons.items())
            fates.append(f"{source.bad_rows:,} bad rows skipped ({reasons})")
        if source.eval_examples:
            fates.append(f"{source.eval_examples:,} held out for eval")
        lines.append(f"  data {source.name}: {source.rows:,} rows" + "".join(", " + f for f in fates))
        if source.rows == 0:
            helps.append(f"`data {source.name}` has no rows: check its file (or split)")
        if len(positions):
            low, mid, p95, high = (int(v) for v in np.percentile(positions, [0, 50, 95, 100], method="higher"))
            lines.append(
                f"    tokens per example: min {low:,}, median {mid:,}, p95 {p95:,}, max {high:,}; "
                f"seq_len is {seq_len:,}"
            )
            if high > seq_len:
                longest, p95s = max(longest, high), p95s + [p95]
                if overflow != "truncate":
                    truncatable.append(f"`data {source.name}`")
        if source.bad_rows:
            first = f" (first: {source.bad_examples[0]})" if source.bad_examples else ""
            helps.append(f"fix the bad rows or the template of `{source.name}`{first}")
    if longest:
        fix = f"raise `seq_len` in `train` to at least {longest:,}"
        if seq_len < max(p95s) < longest:
            fix += f" ({max(p95s):,} keeps 95 % of the rows)"
        if truncatable:
            fix += f", or set `overflow = truncate` in {' and '.join(truncatable)}"
        helps.insert(0, fix)
    return "\n".join(lines + [f"  = help: {h}" for h in helps])
