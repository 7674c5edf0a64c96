"""A trained run, loaded for use: its plan, tokenizer and weights (any checkpoint),
prompts rendered exactly as in training, and token-by-token streaming decode.

`sftc eval`, `sftc generate`, `sftc chat` and `sftc export` start here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from .plan import Plan
from .prepare import PrepareError, Prepared, model_config
from .run import read_plan


@dataclass
class Trained:
    plan: Plan
    tokenizer: Any
    config: Any
    model: Any  # an nnx Transformer with the trained weights
    step: int
    prepared: Prepared  # without a data pipeline; `with_data()` adds it
    stepper: Any  # runtime.train.loop.Stepper: the model on its mesh, for evaluation
    params: Any  # the trained (float32) parameters

    def with_data(self) -> Prepared:
        """The prepared plan with its (cached) data pipeline, for evaluation."""
        if self.prepared.pipeline is None:
            from .data.pipeline import DataPipeline
            from .prepare import default_cache

            self.prepared.pipeline = DataPipeline(self.plan.data, self.tokenizer, str(default_cache() / "data"))
        return self.prepared


def load_trained(run_dir: str | Path, step: int | None = None) -> Trained:
    """The run's weights at `step` (default: its latest checkpoint)."""
    from flax import nnx

    from . import tokenizer as tok
    from .train.checkpoint import Checkpoints, abstract_like
    from .train.loop import Stepper

    run_dir = Path(run_dir)
    if not (run_dir / "plan.json").is_file():
        raise PrepareError(f"{run_dir} is not a run directory (no plan.json); give runs/<name>/<timestamp>")
    plan = read_plan(run_dir)
    tokenizer = tok.load_tokenizer(run_dir / "tokenizer")
    config, checkpoint = model_config(plan, tokenizer)
    prepared = Prepared(plan, tokenizer, None, config, checkpoint)
    stepper = Stepper(prepared)
    checkpoints = Checkpoints(run_dir / "checkpoints", keep=plan.train.keep)
    available = checkpoints.all_steps()
    if not available:
        checkpoints.close()
        raise PrepareError(f"{run_dir} has no checkpoint yet")
    if step is not None and step not in available:
        checkpoints.close()
        raise PrepareError(f"no checkpoint at step {step} in {run_dir} (checkpoints: {', '.join(map(str, available))})")
    state, _ = checkpoints.restore(abstract_like(stepper.abstract_state, stepper.shardings), step)
    checkpoints.close()
    model = nnx.merge(stepper.graphdef, state.params, stepper.frozen)
    return Trained(plan, tokenizer, config, model, int(state.step), prepared, stepper, state.params)


# ---------------------------------------------------------------- prompts


def template_for(plan: Plan, source: str | None = None):
    names = [s.name for s in plan.data.sources]
    if source is not None and source not in names:
        raise PrepareError(f"no source `{source}` in this run (sources: {', '.join(names)})")
    return plan.data.template_for(source or names[0])


def prompt_ids(plan: Plan, tokenizer, value: str | Mapping[str, Any], history: list[dict] | None = None, source: str | None = None) -> list[int]:
    """Token ids of a prompt rendered as in training.

    `value` is a row (a dict of columns) or a text: with a prompt/completion
    template whose prompt has one placeholder the text fills it; a `messages`
    template takes it as the next user turn (after `history`); a source with
    conventional columns takes it as the prompt itself.
    """
    from .data.templates import parse_template, render_parts

    template = template_for(plan, source)
    if template.messages is not None or (template.prompt is None and history is not None):
        messages = list(history or []) + [{"role": "user", "content": value if isinstance(value, str) else value.get("content", "")}]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    if template.prompt is None:
        text = value if isinstance(value, str) else value["prompt"]
        return tokenizer(text)["input_ids"]
    parts = parse_template(template.prompt)
    fields = [p for p in parts if isinstance(p, tuple)]
    if isinstance(value, str):
        if len({p for p in fields}) != 1:
            names = ", ".join(".".join(p) for p in fields) or "none"
            raise PrepareError(f"the prompt template takes the columns {names}; pass a JSON row with --file instead of --prompt")
        row: dict = {}
        target = row
        for key in fields[0][:-1]:
            target = target.setdefault(key, {})
        target[fields[0][-1]] = value
        value = row
    prompt = render_parts(parts, value)
    if template.chat:
        messages = ([{"role": "system", "content": template.system}] if template.system else []) + [{"role": "user", "content": prompt}]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer(prompt)["input_ids"]


# ---------------------------------------------------------------- streaming


def stream(model, ids: list[int], max_new_tokens: int, eos_ids: set[int], temperature: float = 0.0, seed: int = 0) -> Iterator[int]:
    """Yield generated token ids one at a time (KV cache; prefill once, then one token per call)."""
    from flax import nnx

    from .models import init_cache

    config = model.config
    length = len(ids) + max_new_tokens
    if length > config.max_position_embeddings:
        max_new_tokens = max(0, config.max_position_embeddings - len(ids))
        length = len(ids) + max_new_tokens
    graphdef, state = nnx.split(model)

    @jax.jit
    def run(state, tokens, positions, cache):
        return nnx.merge(graphdef, state).decode(tokens, positions, jnp.ones_like(tokens), cache)

    cache = init_cache(config, 1, length, dtype=model.dtype)
    tokens = jnp.asarray([ids], jnp.int32)
    logits, cache = run(state, tokens, jnp.arange(len(ids), dtype=jnp.int32)[None], cache)
    rng = np.random.default_rng(seed)
    for i in range(max_new_tokens):
        last = np.asarray(logits[0, -1], np.float64)
        if temperature > 0:
            p = np.exp((last - last.max()) / temperature)
            token = int(rng.choice(len(p), p=p / p.sum()))
        else:
            token = int(last.argmax())
        yield token
        if token in eos_ids:
            return
        position = jnp.asarray([[len(ids) + i]], jnp.int32)
        logits, cache = run(state, jnp.asarray([[token]], jnp.int32), position, cache)
