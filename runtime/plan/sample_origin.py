"""Which eval sample is this: the one identity of an example, its row plus its turn.

A row is ``(source, file, line)``: the source it was read from, the file, and the line (or the
row number of a dataset without lines). A conversation whose chat template re-renders earlier
turns once later ones follow becomes one example per assistant turn (`runtime.plan.row_templates.
render_conversation`), so several samples share one row; ``turn``, the message index of the
assistant turn whose answer the sample is, tells them apart. ``turn`` is None for a row that
is a single example, so those keep the identity they always had.

Evaluation, the baseline, the report, `sftc diff RUN RUN`, the review store and the review
export all key samples by `sample_key` (or its text form `sample_id`): a rule written once
cannot disagree with itself. Standard library only: the compiler's run diff imports it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["SampleKey", "sample_id", "sample_key", "where"]

SampleKey = tuple[str, str | None, int, int | None]  # (source, file, line, turn)


def sample_key(sample: Mapping[str, Any] | Any) -> SampleKey:
    """The identity of a sample (a `Sample`, an `Example` or a report's sample dict)."""
    get: Callable[..., Any] = sample.get if isinstance(sample, Mapping) else (lambda k, d=None: getattr(sample, k, d))
    turn = get("turn")
    return str(get("source")), get("file"), int(get("line")), None if turn is None else int(turn)


def sample_id(source: str, file: str | None, line: int, turn: int | None = None) -> str:
    """The readable id of a sample: ``faq:eval.jsonl:12``, ``faq::3`` for a row without a file,
    ``math:chats.jsonl:7#3`` for the answer at message 3 of a conversation trained per turn."""
    base = f"{source}:{os.path.basename(file) if file else ''}:{int(line)}"
    return base if turn is None else f"{base}#{int(turn)}"


def where(file: str | None, line: int, turn: int | None = None) -> str:
    """Where a sample is, for messages: ``eval.jsonl:12``, ``row 3``, ``chats.jsonl:7, message 3``."""
    place = f"{file}:{line}" if file else f"row {line}"
    return place if turn is None else f"{place}, message {turn}"
