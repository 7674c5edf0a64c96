"""Every kept example of a prepared pipeline as the audit reads it: the text training renders.

The pipeline has already applied everything that decides what the model sees: the source's
`rename`, `where` and `system`, the template (prompt/completion, Alpaca, a chat template),
per-turn rows of a template that is not prefix-stable, the eval split and the overflow policy
(a dropped example is not read; a truncated one is read as it was cut). What is left here is
to decode its tokens: the tokens that are not trained are the prompt (the template's prompt,
or the whole conversation around the trained turns), the trained ones the completion. Special
tokens are kept (``<|im_start|>``, the EOS a completion ends with): the text is the model's.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from runtime.audit.audited_example import AuditedExample
from runtime.plan.sample_origin import sample_id, where

__all__ = ["audited", "read_examples", "shown_path"]

BATCH = 4096  # examples decoded per `batch_decode` call


def shown_path(file: str | None) -> str | None:
    """A data file as messages show it: relative to the working directory when it lies below it."""
    if not file:
        return file
    try:
        relative = os.path.relpath(file)
    except ValueError:  # another drive
        return file
    return file if relative.startswith("..") else relative


def read_examples(pipeline: Any) -> list[AuditedExample]:
    """Every kept example of every source, train then eval as the pipeline orders them (source
    by source, in row order), decoded with the pipeline's tokenizer in batches."""
    return audited(pipeline.tokenizer, pipeline.examples())


def audited(tokenizer: Any, examples: Sequence[Any]) -> list[AuditedExample]:
    """These pipeline examples (`runtime.data.pipeline.Example`) as the audit reads them."""
    out: list[AuditedExample] = []
    for start in range(0, len(examples), BATCH):
        chunk = examples[start : start + BATCH]
        prompts, completions = [], []
        for ex in chunk:
            tokens = np.asarray(ex.tokens)
            trained = np.asarray(ex.trained) > 0
            prompts.append(tokens[~trained].tolist())
            completions.append(tokens[trained].tolist())
        prompt_texts = _decode(tokenizer, prompts)
        completion_texts = _decode(tokenizer, completions)
        for ex, prompt, completion in zip(chunk, prompt_texts, completion_texts, strict=True):
            out.append(
                AuditedExample(
                    id=sample_id(ex.source, ex.file, ex.line, ex.turn),
                    source=ex.source,
                    split=ex.split,
                    where=where(shown_path(ex.file), ex.line, ex.turn),
                    prompt=prompt,
                    completion=completion,
                    tokens=len(ex.tokens),
                    full_tokens=int(ex.full_length),
                )
            )
    return out


def _decode(tokenizer: Any, batch: list[list[int]]) -> list[str]:
    """The text of each token list, special tokens and spacing as they are (no clean-up)."""
    return list(tokenizer.batch_decode(batch, skip_special_tokens=False, clean_up_tokenization_spaces=False))
