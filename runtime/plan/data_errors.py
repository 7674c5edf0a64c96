"""Error types of the data pipeline. All derive from ``DataError``."""

from __future__ import annotations

import json
from typing import Any

from runtime.plan.sftc_error import SftcError


class DataError(SftcError):
    """Any problem with the training data that stops a run."""


class SourceError(DataError):
    """A source cannot be read: missing or empty file, unreachable hub, bad format."""


class HubUnavailableError(SourceError):
    """``hf_dataset`` needs the hub, the hub is not reachable (or offline mode is on) and nothing is cached."""


class RowProblem(Exception):
    """A row that cannot become an example: which column/turn and why (turned into a
    `BadRowError` or a skip count by the caller)."""

    def __init__(self, reason: str, column: str | None = None, turn: int | None = None, unstable: bool = False):
        super().__init__(reason)
        self.reason, self.column, self.turn, self.unstable = reason, column, turn, unstable


class TemplateError(DataError):
    """A template string is malformed (e.g. an unmatched ``{``)."""


class ChatTemplateError(DataError):
    """The tokenizer's chat template cannot render any row here: jinja2 is missing or too old,
    the tokenizer has no chat template, or the template does not compile.

    Kept apart from ``BadRowError`` on purpose: the fault is the environment's or the
    tokenizer's, so counting it as bad data (and with ``on_bad_row = skip`` silently
    emptying the source) would hide it.
    """


def shorten(value: Any, limit: int = 200) -> str:
    """A one-line, length-limited rendering of a row for error messages."""
    if isinstance(value, (bytes, bytearray)):
        text = repr(bytes(value))
    elif isinstance(value, str):
        text = value
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            text = repr(value)
    text = text.replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 1] + "…"


class BadRowError(DataError):
    """One input row cannot become a training example (``on_bad_row = error``).

    Attributes: ``source``, ``file`` (None for hub/disk datasets), ``row``
    (1-based: the line number for jsonl/csv/text files, ``unit == "line"``; else the
    record number inside ``file`` or the dataset, ``unit == "row"``), ``column``
    (None when not about one column), ``reason`` and ``row_text`` (shortened).
    """

    def __init__(
        self,
        source: str,
        file: str | None,
        row: int,
        column: str | None,
        reason: str,
        row_text: str,
        turn: int | None = None,
        unit: str = "row",
    ):
        self.source, self.file, self.row, self.column = source, file, row, column
        self.reason, self.row_text, self.turn, self.unit = reason, row_text, turn, unit
        where = f"{file}, {unit} {row}" if file else f"row {row}"
        col = f", column {column!r}" if column else ""
        trn = f", message {turn}" if turn is not None else ""
        super().__init__(
            f"bad row in source {source!r} ({where}{col}{trn}): {reason}\n"
            f"  row: {row_text}\n"
            f"  help: fix the row, or set `on_bad_row = skip` on data {source} to count and skip such rows"
        )

    def __reduce__(self):  # picklable, so it crosses `Dataset.map(num_proc=N)` worker boundaries
        return (
            type(self),
            (self.source, self.file, self.row, self.column, self.reason, self.row_text, self.turn, self.unit),
        )


class TemplateNotPrefixStableError(BadRowError):
    """The chat template renders an earlier turn differently once later turns follow.

    Trainable spans are found by rendering growing prefixes of a conversation; that
    only works when ``render(messages[:k])`` is a prefix of ``render(messages)``.
    Some reasoning-model templates drop the thinking block of earlier assistant
    turns, which breaks this. Use ``train_on = last_assistant`` (only the final
    turn, which is rendered as it is at inference), split multi-turn conversations
    into one example per assistant turn, or supply a prefix-stable chat template.
    """


class SequenceTooLongError(DataError):
    """An example is longer than ``seq_len`` and the source says ``overflow = error``."""
