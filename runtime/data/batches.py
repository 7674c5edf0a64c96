"""The batch format the train step consumes, and the one place where labels are shifted.

A batch is a dict of numpy arrays, all ``[rows, seq_len]``:

==============  =======  ==========================================================
``input_ids``   int32    tokens fed to the model
``targets``     int32    the next token at each position (``input_ids`` shifted left)
``loss_mask``   float32  1.0 where the loss is taken on ``targets``, else 0.0
``positions``   int32    position of the token inside its own example (restarts at 0)
``segment_ids`` int32    1, 2, ... per example packed in the row; 0 = padding
==============  =======  ==========================================================

Attention is causal *and* within one segment: query i may attend key j iff
``j <= i`` and ``segment_ids[i] == segment_ids[j] != 0``. The loss is
``sum(ce(logits, targets) * loss_mask) / sum(loss_mask)``.

Worked example (word tokenizer, ``prompt = "Q: {q} A:"``, ``completion = " {a}"``,
row ``{"q": "two plus three ?", "a": "five"}``, ``seq_len = 12``, no packing)::

    example tokens  <s> Q : two plus three ? A : five </s>      (11 tokens)
    trained (tokens) 0  0 0  0   0    0    0 0 0  1    1         (completion + EOS)

    shift_example:  inputs  = tokens[:-1], targets = tokens[1:], mask = trained[1:]

    position     0    1  2  3    4     5   6  7  8   9     10  11
    input_ids   <s>   Q  :  two  plus three ?  A  :  five  pad pad
    targets      Q    :  two plus three ?  A  :  five </s>  pad pad
    loss_mask    0    0  0  0    0     0   0  0  1   1     0   0
    positions    0    1  2  3    4     5   6  7  8   9     0   0
    segment_ids  1    1  1  1    1     1   1  1  1   1     0   0

so the model is trained to emit ``five`` after ``A :`` and ``</s>`` after
``five``; nothing of the prompt is trained. With packing a second example
would follow at position 10 with ``segment_ids`` 2 and ``positions`` 0, 1, ...
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BATCH_KEYS = ("input_ids", "targets", "loss_mask", "positions", "segment_ids")


def shift_example(tokens: np.ndarray, trained: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(inputs, targets, mask) of one example: the only place labels are shifted.

    ``trained[t] == 1`` means token ``t`` is a training target, so the loss is on
    predicting it from position ``t - 1``.
    """
    tokens = np.asarray(tokens)
    trained = np.asarray(trained)
    return tokens[:-1], tokens[1:], trained[1:].astype(np.float32)


def empty_batch(rows: int, seq_len: int, pad_id: int) -> dict[str, np.ndarray]:
    return {
        "input_ids": np.full((rows, seq_len), pad_id, np.int32),
        "targets": np.full((rows, seq_len), pad_id, np.int32),
        "loss_mask": np.zeros((rows, seq_len), np.float32),
        "positions": np.zeros((rows, seq_len), np.int32),
        "segment_ids": np.zeros((rows, seq_len), np.int32),
    }


def assemble(
    rows: Sequence[Sequence[tuple[np.ndarray, np.ndarray]]], seq_len: int, pad_id: int
) -> dict[str, np.ndarray]:
    """Build a batch from rows, each a list of (tokens, trained) examples placed one after another."""
    out = empty_batch(len(rows), seq_len, pad_id)
    for r, examples in enumerate(rows):
        at = 0
        for seg, (tokens, trained) in enumerate(examples, start=1):
            x, y, m = shift_example(tokens, trained)
            n = len(x)
            if at + n > seq_len:
                raise ValueError(f"row {r}: examples need {at + n} positions > seq_len {seq_len}")
            out["input_ids"][r, at : at + n] = x
            out["targets"][r, at : at + n] = y
            out["loss_mask"][r, at : at + n] = m
            out["positions"][r, at : at + n] = np.arange(n, dtype=np.int32)
            out["segment_ids"][r, at : at + n] = seg
            at += n
    return out
