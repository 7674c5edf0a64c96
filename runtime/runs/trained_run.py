"""A trained run, loaded for use: its plan, tokenizer and weights (any checkpoint), and
answers to prompts decoded as evaluation decodes them.

`sftc eval`, `sftc generate`, `sftc chat` and `sftc export` start here. Prompts are
rendered by `runtime.data.prompts` (the training templates), stop at its `stop_ids`, and
are decoded by `runtime.models.decode` (`answers` batched like evaluation, `reply`
streamed token by token for `sftc chat`): one rule each, whoever asks.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax

from runtime.data.prompts import Prompt, stop_ids
from runtime.data.tokenize import Mode, resolve_mode
from runtime.evaluate.answers import answer_ids, pad_id, sampling_for
from runtime.models.decode import Sampling, stream
from runtime.plan.run_plan import Plan
from runtime.preflight.prepare import Prepared, PrepareError, model_config
from runtime.runs.run_directory import read_plan


@dataclass
class Trained:
    plan: Plan
    tokenizer: Any
    config: Any
    model: Any  # an nnx Transformer with the trained weights
    step: int
    prepared: Prepared  # without a data pipeline; `with_data()` adds it
    engine: Any  # runtime.train.engine.Engine: the model's steps on its mesh, for evaluation
    params: Any  # the trained (float32) parameters
    frozen: Any  # the frozen (base) parameters, placed on the engine's mesh
    notes: tuple[str, ...] = ()  # e.g. a newer checkpoint that did not restore

    def with_data(self) -> Prepared:
        """The prepared plan with its (cached) data pipeline, for evaluation."""
        if self.prepared.pipeline is None:
            from runtime.preflight.prepare import data_pipeline, default_cache

            self.prepared.pipeline = data_pipeline(self.plan, self.tokenizer, default_cache())
        return self.prepared


def load_trained(run_dir: str | Path, step: int | None = None) -> Trained:
    """The run's weights at `step` (default: its latest checkpoint)."""
    from flax import nnx

    from runtime.checkpoints import tokenizer_files as tok
    from runtime.checkpoints.orbax_checkpoints import Checkpoints, RestoreError
    from runtime.train.engine import Engine, StepSettings, frozen_weights

    run_dir = Path(run_dir)
    if not (run_dir / "plan.json").is_file():
        raise PrepareError(f"{run_dir} is not a run directory (no plan.json); give runs/<name>/<timestamp>")
    plan = read_plan(run_dir)
    tokenizer = tok.load_tokenizer(run_dir / "tokenizer")
    config, checkpoint = model_config(plan, tokenizer)
    prepared = Prepared(plan, tokenizer, None, config, checkpoint)
    engine = Engine(StepSettings.of(plan), config)
    frozen = engine.place_frozen(frozen_weights(engine.settings, config, checkpoint))
    checkpoints = Checkpoints(run_dir / "checkpoints", keep=plan.train.keep)
    available = checkpoints.all_steps()
    if not available:
        checkpoints.close()
        raise PrepareError(f"{run_dir} has no checkpoint yet")
    if step is not None and step not in available:
        checkpoints.close()
        raise PrepareError(f"no checkpoint at step {step} in {run_dir} (checkpoints: {', '.join(map(str, available))})")
    notes: tuple[str, ...] = ()
    try:
        if step is not None:
            state, _ = checkpoints.restore(engine.restore_target(), step)
        else:
            restored = checkpoints.restore_newest_good(engine.restore_target(), move_aside=False)
            if restored.state is None:
                reasons = "; ".join(f"{s}: {r}" for s, r in restored.skipped)
                raise PrepareError(f"no checkpoint of {run_dir} restores ({reasons})")
            state = restored.state
            notes = tuple(f"checkpoint {s} does not restore ({r}); using {restored.step}" for s, r in restored.skipped)
    except (PrepareError, RestoreError):  # RestoreError: not damage; its message says what failed
        raise
    except Exception as error:  # noqa: BLE001 - orbax raises many types for a bad checkpoint
        raise PrepareError(
            f"checkpoint {step} of {run_dir} does not restore: {type(error).__name__}: {error}"
        ) from None
    finally:
        checkpoints.close()
    model = nnx.merge(engine.graphdef, state.params, frozen)
    return Trained(plan, tokenizer, config, model, int(state.step), prepared, engine, state.params, frozen, notes)


# ---------------------------------------------------------------- prompts and answers

# The columns that make training read a source without a template as each kind (`resolve_mode`),
# for a run whose manifest predates the recorded columns.
_CONVENTIONAL = {"messages": ["messages"], "prompt_completion": ["prompt", "completion"], "text": ["text"]}


def source_mode(plan: Plan, run_dir: str | Path, source: str | None = None) -> Mode:
    """How ``source`` (default: the plan's first) renders a row: its template resolved as training
    resolved it (`resolve_mode`), over the source's columns that the run's manifest recorded."""
    names = [s.name for s in plan.data.sources]
    if source is not None and source not in names:
        raise PrepareError(f"no source `{source}` in this run (sources: {', '.join(names)})")
    name = source or names[0]
    template = plan.data.template_for(name)
    spec = plan.data.source(name)
    manifest = Path(run_dir) / "manifest.json"
    try:
        stats = json.loads(manifest.read_text())["data"]["stats"]["sources"][name]
    except (OSError, ValueError, KeyError) as error:
        if template.mode != "conventional":
            return resolve_mode(template, [], spec)
        raise PrepareError(
            f"{manifest} does not say which columns source `{name}` was trained on ({type(error).__name__}: {error})"
        ) from None
    if stats.get("columns"):
        return resolve_mode(template, stats["columns"], spec)
    if template.mode != "conventional":  # a run from before the manifest kept the columns
        return resolve_mode(template, [], spec)
    return resolve_mode(template, _CONVENTIONAL[stats["mode"]], spec)


@dataclass(frozen=True)
class Decoding:
    """How `sftc generate` and `sftc chat` decode: the spec's `eval.generate`, each setting overridable."""

    max_new_tokens: int
    sampling: Sampling
    seed: int


def decoding(
    plan: Plan,
    max_new_tokens: int | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    top_k: int | None = None,
    seed: int | None = None,
) -> Decoding:
    """The run's generation settings with overrides (None keeps the spec's; no `eval.generate`: greedy, 128 tokens)."""
    generation = plan.eval.generate
    if max_new_tokens is None:
        max_new_tokens = generation.max_new_tokens if generation is not None else 128
    if seed is None:
        seed = generation.seed if generation is not None else 0
    return Decoding(int(max_new_tokens), sampling_for(generation, temperature, top_p, top_k), int(seed))


def answers(trained: Trained, prompts: Sequence[Prompt], settings: Decoding) -> list[tuple[list[int], bool]]:
    """Each prompt's answer ids (stop token removed) and whether it stopped: evaluation's decoding."""
    return answer_ids(
        trained.model,
        trained.tokenizer,
        [p.ids for p in prompts],
        settings.max_new_tokens,
        settings.sampling,
        settings.seed,
    )


def reply(
    trained: Trained, prompt: Prompt, settings: Decoding, turn: int = 0, stops: Sequence[int] | None = None
) -> Iterator[int]:
    """Stream one answer's ids, the stop token not yielded: the tokens `answers` gives for ``prompt`` alone
    (turn ``t`` draws from ``fold_in(key(seed), t)``, so turn 0 is batch 0 of ``sftc generate``)."""
    stops = stop_ids(trained.tokenizer) if stops is None else stops
    key = jax.random.fold_in(jax.random.key(settings.seed), turn)
    for token in stream(
        trained.model,
        prompt.ids,
        settings.max_new_tokens,
        stops,
        settings.sampling,
        key,
        pad_id=pad_id(trained.tokenizer),
    ):
        if token in stops:
            return
        yield token
