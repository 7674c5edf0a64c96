"""sftc data pipeline: sources, templates, exact loss masks, packing, batches, preview.

numpy only: nothing here imports JAX. Importing ``runtime.data`` (or
``runtime.plan.data_plan``, which the compiler does) is light: the heavy parts
(datasets, transformers, rich) load on first use of a name below.

Public API::

    from runtime.data import DataPlan, SourceSpec, TemplateSpec, EvalSplit   # the plan
    from runtime.data import build_pipeline                                   # plan + tokenizer -> DataPipeline
    pipe = build_pipeline(plan, tokenizer)
    pipe.batch(step)            # dict of [global_batch, seq_len] arrays, see runtime.data.batches
    pipe.batch_indices(step)    # example ids per row, computable for any step without replay
    pipe.total_steps, pipe.stats (DataStats), pipe.eval_batches(), pipe.eval_prompts(source)
    from runtime.data.preview import preview                                  # `sftc preview`
"""

from __future__ import annotations

import importlib
from typing import Any

from runtime.plan.data_errors import (
    BadRowError,
    DataError,
    HubUnavailableError,
    SequenceTooLongError,
    SourceError,
    TemplateError,
    TemplateNotPrefixStableError,
)
from runtime.plan.data_plan import DataPlan, EvalSplit, SourceSpec, TemplateSpec

_LAZY = {
    "build_pipeline": "pipeline",
    "DataPipeline": "pipeline",
    "Example": "pipeline",
    "eval_rows_for": "pipeline",
    "BATCH_KEYS": "batches",
    "shift_example": "batches",
    "assemble": "batches",
    "DataStats": "stats",
    "SourceStats": "stats",
    "load_source": "sources",
    "source_fingerprint": "sources",
    "LoadedSource": "sources",
    "tokenize_source": "tokenize",
    "tokenizer_fingerprint": "tokenize",
    "TokenizedSource": "tokenize",
    "parse_template": "templates",
    "placeholders": "templates",
    "pack_bfd": "packing",
    "preview_records": "preview",
}

__all__ = [
    "DataPlan",
    "EvalSplit",
    "SourceSpec",
    "TemplateSpec",
    "DataError",
    "SourceError",
    "HubUnavailableError",
    "BadRowError",
    "TemplateNotPrefixStableError",
    "TemplateError",
    "SequenceTooLongError",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
