"""The baseline a fine-tuned model must beat: the base model, scored on the same eval rows.

A fine-tune is worth its cost only when it beats the model it started from, prompted well.
`eval.baseline` decides the comparison:

- ``base``: the pretrained model before fine-tuning, given exactly the tuned model's eval
  prompts, decoded with the same settings and scored with the same metrics (token metrics
  included). For a LoRA run that is the trained graph with every adapter weight zero, which
  computes the base exactly and needs no second load; a full fine-tune reloads the base.
- ``few_shot(k, seed)``: the base with ``k`` training examples of the row's own source placed
  before each eval prompt (the "prompt engineering" alternative to fine-tuning): each example
  as training renders it, up to the end of its last trained span (so its stop token is shown),
  a leading BOS kept once. One seeded draw per source, the same for every row. Generation
  metrics only: its token metrics would be over other sequences.

The result is cached under the sftc cache directory (``baselines/``) by everything it depends
on: the inputs `runtime.plan.run_inputs` names for the baseline (the base checkpoint's files, dtype and
quantization, the tokenizer, every data and eval file, sftc's code and the libraries), the data
plan, the decoding settings, the sample count and the baseline itself. Iterations that change
only training settings do not pay for it again.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runtime.evaluate.answers import Sample, generate_eval
from runtime.platform.distributed import everywhere, is_primary

__all__ = ["Baseline", "baseline_key", "evaluate_baseline"]

_CACHE_VERSION = 2  # 2: keyed by runtime.plan.run_inputs; samples carry their turn
_TRAINING_ONLY = ("weights", "seed", "global_batch_size", "epochs", "steps")


@dataclass
class Baseline:
    """The baseline's samples (in the tuned samples' order) and token metrics (``base`` only)."""

    kind: str  # base | few_shot
    k: int
    samples: list[Sample]
    token_metrics: dict[str | None, dict] = field(default_factory=dict)
    cached: bool = False  # read from the cache, not computed by this run
    benchmarks: Any = None  # the base's `BenchmarkResult` (`eval.benchmarks`), or None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "k": self.k,
            "cached": self.cached,
            "token_metrics": {("null" if s is None else s): m for s, m in self.token_metrics.items()},
            "samples": [s.to_dict() for s in self.samples],
            "benchmarks": self.benchmarks.to_dict() if self.benchmarks is not None else None,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], cached: bool = False) -> Baseline:
        tokens = {(None if s == "null" else s): m for s, m in d.get("token_metrics", {}).items()}
        benchmarks = None
        if d.get("benchmarks") is not None:
            from runtime.evaluate.benchmarks import BenchmarkResult

            benchmarks = BenchmarkResult.from_dict(d["benchmarks"])
        samples = [Sample.from_dict(s) for s in d["samples"]]
        return cls(d["kind"], int(d.get("k", 0)), samples, tokens, cached, benchmarks)

    def benchmark_values(self) -> dict[str, float]:
        """The base's benchmark scores under their gate keys (`acc(arc_easy)`); {} without benchmarks."""
        return self.benchmarks.values() if self.benchmarks is not None else {}


def baseline_key(plan: Any, inputs: Any) -> str | None:
    """The cache key of `plan`'s baseline (see the module docstring for what it covers); None
    when an input cannot be known (nothing is then cached)."""
    import dataclasses

    identity = inputs.key("baseline")
    if identity is None:
        return None
    parts = {
        "version": _CACHE_VERSION,
        "inputs": identity,
        # what makes the eval rows and their prompts; not how much or in what order training reads
        "data": {k: v for k, v in plan.data.to_dict().items() if k not in _TRAINING_ONLY},
        "generate": dataclasses.asdict(plan.eval.generate) if plan.eval.generate is not None else None,
        "samples": plan.eval.samples,
        "baseline": dataclasses.asdict(plan.eval.baseline),
        "benchmarks": dataclasses.asdict(plan.eval.benchmarks) if plan.eval.benchmarks is not None else None,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _cache_path(key: str) -> Path:
    from runtime.platform.cache_dir import default_cache

    return default_cache() / "baselines" / f"{key}.json"


def _read_cached(key: str) -> Baseline | None:
    path = _cache_path(key)
    try:
        return Baseline.from_dict(json.loads(path.read_text()), cached=True)
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent or unreadable: computed again and rewritten


def _write_cached(key: str, baseline: Baseline) -> None:
    path = _cache_path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps(baseline.to_dict()))
    os.replace(partial, path)  # whole or absent, also when two runs finish at once


def base_model(engine: Any, params: Any, frozen: Any, checkpoint: Path):
    """The model before fine-tuning, on the engine's graph: adapters zeroed (LoRA), or the
    checkpoint's weights reloaded (full fine-tuning). Returns (model, trainable params, frozen):
    the two trees placed on the engine's mesh (for its eval step); the model, with several
    processes, on this process's own copy (each decodes its share of the answers alone)."""
    import jax
    from flax import nnx

    from runtime.platform.distributed import process_count

    if engine.settings.adapter is not None:
        params = jax.tree.map(np.zeros_like, jax.device_get(params))
    else:
        from runtime.train.engine import load_weights

        params, frozen = load_weights(engine.settings, engine.config, checkpoint)
    placed_params, placed_frozen = jax.device_put(params, engine.shardings.params), engine.place_frozen(frozen)
    if process_count() > 1:
        model = nnx.merge(engine.graphdef, params, jax.device_get(frozen))
    else:
        model = nnx.merge(engine.graphdef, placed_params, placed_frozen)
    return model, placed_params, placed_frozen


def few_shot_context(pipeline: Any, k: int, seed: int, bos: int | None):
    """``(example, prompt ids) -> prompt ids`` with ``k`` training examples of the row's source first."""
    shots: dict[str, list[int]] = {}

    def shots_of(source: str) -> list[int]:
        if source not in shots:
            train = pipeline.examples(source=source, split="train")
            chosen = np.random.default_rng([seed, 0x5F07]).permutation(len(train))[:k]
            tokens: list[int] = []
            for i in sorted(int(c) for c in chosen):
                ex = train[i]
                trained = np.asarray(ex.trained) > 0
                end = len(trained) - int(np.argmax(trained[::-1])) if trained.any() else len(trained)
                tokens += _without_bos([int(t) for t in ex.tokens[:end]], bos)
            shots[source] = tokens
        return shots[source]

    def context(example: Any, prompt: np.ndarray) -> np.ndarray:
        ids = [int(t) for t in prompt]
        lead = ids[:1] if bos is not None and ids[:1] == [bos] else []
        return np.asarray(lead + shots_of(example.source) + _without_bos(ids, bos), dtype=np.int64)

    return context


def _without_bos(ids: list[int], bos: int | None) -> list[int]:
    return ids[1:] if bos is not None and ids[:1] == [bos] else ids


def evaluate_baseline(
    prepared: Any, engine: Any, params: Any, frozen: Any, inputs: Any, console: Any = None
) -> Baseline | None:
    """The plan's baseline (None when it has none, or no eval rows), from the cache when it holds it.

    ``params``/``frozen`` are the run's (trained) parameters on ``engine``: a LoRA baseline
    zeroes the adapters of a copy, a full fine-tune's baseline reloads the base checkpoint.
    """
    from runtime.train.token_metrics import token_metrics

    plan, pipeline = prepared.plan, prepared.pipeline
    spec = plan.eval.baseline
    has_rows = any(s.eval is not None for s in plan.data.sources)
    if spec is None or prepared.checkpoint is None or not (has_rows or plan.eval.benchmarks is not None):
        return None
    key = baseline_key(plan, inputs)
    cached = _read_cached(key) if key is not None else None
    if everywhere(cached is not None):  # with several processes, all compute it unless all have it
        return cached
    model, params, frozen = base_model(engine, params, frozen, prepared.checkpoint)
    samples: list[Sample] = []
    if plan.eval.generate is not None and has_rows:
        context = None
        if spec.kind == "few_shot":
            bos = prepared.tokenizer.bos_token_id
            context = few_shot_context(pipeline, spec.k, spec.seed, None if bos is None else int(bos))
        samples = generate_eval(
            model,
            prepared.tokenizer,
            pipeline,
            plan.eval.generate,
            plan.eval.samples,
            seed=plan.eval.generate.seed,
            context=context,
            max_length=prepared.config.max_position_embeddings if context else None,
            spread=True,
        )
    tokens = token_metrics(engine, frozen, pipeline, params) if spec.kind == "base" and has_rows else {}
    from runtime.evaluate.final import benchmark_scores

    baseline = Baseline(
        spec.kind, spec.k, samples, tokens, benchmarks=benchmark_scores(prepared, model, console, "base")
    )
    if is_primary() and key is not None:
        _write_cached(key, baseline)
    return baseline
