"""``sftc preview``: examples as the model sees them, with the loss mask visible.

``preview(pipeline, n=3, source=None, tokens=False, json=False, rows=False)``:

* terminal (rich): prompt tokens dim, trained tokens highlighted (bold green on
  a dark background), ``--tokens`` underlines every other token so token
  boundaries show, a truncated example ends with a red ``✂`` and says how many
  tokens were cut, ``rows=True`` shows packed training rows of step 0 with a
  ``║2║`` marker where segment 2 starts. A header per example gives source,
  split, file:line and token counts.
* not a terminal: the same in plain text, trained text inside ``«…»``, token
  boundaries as ``|``.
* ``json=True``: one JSON object per line (and returned as a list of dicts)
  with ``input_ids``, ``trained`` (0/1 aligned with ``input_ids``: 1 where the
  token is a training target), ``tokens`` (the string of each token), ``text``,
  ``source``, ``split``, ``file``, ``line``, ``row``, ``n_tokens``,
  ``n_trained``, ``truncated`` and ``full_length``.
"""

from __future__ import annotations

import json as _json
import sys
from typing import IO, Any

import numpy as np
from rich.console import Console
from rich.text import Text

from runtime.data.pipeline import DataPipeline, Example

PROMPT_STYLE = "dim"
TRAINED_STYLE = "bold green on grey11"
MARK_STYLE = "bold red"


def token_pieces(tokenizer: Any, ids: list[int]) -> list[str]:
    """The text each token contributes, so that ``"".join(pieces) == decode(ids)`` where possible.

    Decodes growing prefixes (exact for byte-level and sentencepiece tokenizers whose
    single-token decode drops spaces or splits multi-byte characters).
    """
    pieces, emitted = [], ""
    for i in range(len(ids)):
        cur = tokenizer.decode(ids[: i + 1], skip_special_tokens=False)
        if cur.endswith("\ufffd") and i < len(ids) - 1:
            pieces.append("")  # part of a multi-byte character: shown with the token that completes it
        elif cur.startswith(emitted):
            pieces.append(cur[len(emitted) :])
            emitted = cur
        else:
            piece = tokenizer.decode(ids[i : i + 1], skip_special_tokens=False)
            pieces.append(piece)
            emitted += piece
    return pieces


def example_record(tokenizer: Any, ex: Example) -> dict[str, Any]:
    ids = [int(t) for t in ex.tokens]
    return {
        "source": ex.source,
        "split": ex.split,
        "file": ex.file,
        "line": ex.line,
        "row": ex.row,
        "input_ids": ids,
        "trained": [int(t) for t in ex.trained],
        "tokens": tokenizer.convert_ids_to_tokens(ids),
        "text": tokenizer.decode(ids, skip_special_tokens=False),
        "n_tokens": len(ids),
        "n_trained": int(np.sum(ex.trained)),
        "truncated": ex.truncated,
        "full_length": ex.full_length,
    }


def preview_records(
    pipeline: DataPipeline, n: int = 3, source: str | None = None, split: str | None = None
) -> list[dict[str, Any]]:
    return [example_record(pipeline.tokenizer, ex) for ex in pipeline.examples(source=source, split=split, n=n)]


def _header(ex: Example) -> str:
    where = f"{ex.file}:{ex.line}" if ex.file else f"row {ex.line}"
    cut = f", truncated from {ex.full_length}" if ex.truncated else ""
    return f"── {ex.source} [{ex.split}] {where} ── {len(ex.tokens)} tokens{cut}, {int(np.sum(ex.trained))} trained"


def example_text(
    tokenizer: Any,
    tokens: np.ndarray,
    trained: np.ndarray,
    show_tokens: bool,
    plain: bool,
    segments: np.ndarray | None = None,
) -> Text | str:
    """One example (or packed row) as rich Text, or as plain text with «trained» spans."""
    ids = [int(t) for t in tokens]
    pieces = token_pieces(tokenizer, ids)
    if plain:
        out, inside = [], False
        for i, piece in enumerate(pieces):
            if segments is not None and i > 0 and segments[i] != segments[i - 1]:
                if inside:
                    out.append("»")
                    inside = False
                out.append(f"║{int(segments[i])}║")
            t = bool(trained[i])
            if t and not inside:
                out.append("«")
            if not t and inside:
                out.append("»")
            inside = t
            out.append(piece + ("|" if show_tokens and i < len(pieces) - 1 else ""))
        if inside:
            out.append("»")
        return "".join(out)
    text = Text()
    for i, piece in enumerate(pieces):
        if segments is not None and i > 0 and segments[i] != segments[i - 1]:
            text.append(f"║{int(segments[i])}║", style=MARK_STYLE)
        style = TRAINED_STYLE if trained[i] else PROMPT_STYLE
        if show_tokens and i % 2:
            style += " underline"  # every other token underlined: boundaries show in any color mode
        text.append(piece, style=style)
    return text


def preview(
    pipeline: DataPipeline,
    n: int = 3,
    source: str | None = None,
    tokens: bool = False,
    json: bool = False,
    rows: bool = False,
    split: str | None = None,
    file: IO[str] | None = None,
    console: Console | None = None,
) -> list[dict[str, Any]]:
    """Print ``n`` examples (or, with ``rows``, ``n`` packed rows of step 0); return their records."""
    out = file or sys.stdout
    if json:
        recs = preview_records(pipeline, n=n, source=source, split=split)
        for r in recs:
            out.write(_json.dumps(r, ensure_ascii=False) + "\n")
        return recs
    console = console or Console(file=out, highlight=False, soft_wrap=True)
    plain = not console.is_terminal
    tok = pipeline.tokenizer
    if rows:
        return _preview_rows(pipeline, n, tokens, console, plain)
    exs = pipeline.examples(source=source, split=split, n=n)
    for ex in exs:
        body = example_text(tok, ex.tokens, ex.trained, tokens, plain)
        if plain:
            console.print(_header(ex), markup=False, highlight=False)
            console.print(
                body + (f" ✂ [{ex.full_length - len(ex.tokens)} tokens cut]" if ex.truncated else ""),
                markup=False,
                highlight=False,
            )
        else:
            console.print(Text(_header(ex), style="bold"))
            if ex.truncated:
                body.append(f" ✂ {ex.full_length - len(ex.tokens)} tokens cut", style=MARK_STYLE)
            console.print(body)
        console.print("")
    if not exs:
        console.print("(no examples)", markup=False)
    st = pipeline.stats
    console.print(st.summary(), markup=False, highlight=False)
    return [example_record(tok, ex) for ex in exs]


def _preview_rows(
    pipeline: DataPipeline, n: int, show_tokens: bool, console: Console, plain: bool
) -> list[dict[str, Any]]:
    recs = []
    b = pipeline.batch(0)
    for r in range(min(n, b["input_ids"].shape[0])):
        seg = b["segment_ids"][r]
        used = int(np.sum(seg > 0))
        # show inputs plus each segment's last target, so every trained token is visible
        ids, trained, segs = [], [], []
        for s in sorted(set(seg[:used].tolist())):
            idx = np.nonzero(seg == s)[0]
            ids += b["input_ids"][r, idx].tolist() + [int(b["targets"][r, idx[-1]])]
            trained += [0] + b["loss_mask"][r, idx].astype(int).tolist()
            segs += [s] * (len(idx) + 1)
        header = (
            f"── row {r} of step 0 ── {int(seg.max(initial=0))} segments, {used}/{pipeline.seq_len} "
            f"positions used, {int(b['loss_mask'][r].sum())} trained"
        )
        body = example_text(
            pipeline.tokenizer, np.asarray(ids), np.asarray(trained), show_tokens, plain, segments=np.asarray(segs)
        )
        console.print(header if plain else Text(header, style="bold"), markup=False, highlight=False)
        console.print(body, markup=False, highlight=False)
        console.print("")
        recs.append({k: b[k][r].tolist() for k in b})
    return recs
