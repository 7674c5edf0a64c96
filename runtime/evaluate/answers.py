"""Generation eval: complete eval prompts with the model and keep each next to its reference.

The prompts are exactly what `DataPipeline.eval_prompts` gives: every token of an
eval example before its last trained span, rendered by the same template and
tokenizer as in training. The reference is that trained span (the completion or
the final assistant turn).

Which rows: per source (in the plan's source order), eval examples in row order;
the sources are interleaved round-robin and the first ``samples`` taken, so a
small ``samples`` still covers every source with eval rows (``samples=None``:
all eval rows).

Stopping and decoding: a row stops at its first stop token (`runtime.data.prompts.stop_ids`:
the EOS and the chat template's end-of-turn token, the rule `sftc generate` and `sftc chat`
follow too). The stop token is removed, and the rest is decoded with
``skip_special_tokens=True``; references are decoded the same way. ``tokens`` counts the
generated tokens without the stop token.

Decoding is `answer_ids`, shared with `sftc generate`: `runtime.models.decode.generate_many`
in length-sorted batches (batched greedy equals one prompt at a time, the decoder masks
padding; with sampling, each batch draws from ``fold_in(key(seed), batch_index)``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime.data.prompts import stop_ids

__all__ = [
    "Sample",
    "answer_ids",
    "cut_at_stop",
    "generate_eval",
    "pad_id",
    "sampling_for",
    "select_prompts",
    "stop_ids",
]


@dataclass(frozen=True)
class Sample:
    """One eval generation next to its reference."""

    source: str
    file: str | None
    line: int  # 1-based line/row in ``file`` (or in the dataset)
    prompt: str  # the prompt as the model saw it (special tokens kept)
    reference: str  # decoded reference, stop token removed, special tokens skipped
    generated: str  # decoded generation, stop token removed, special tokens skipped
    tokens: int  # generated tokens, the stop token not counted
    finished: bool = True  # False: cut at max_new_tokens before a stop token
    turn: int | None = (
        None  # a conversation trained per turn: the answer's message index (`runtime.plan.sample_origin`)
    )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Sample:
        return cls(**d)  # a report written before samples had a turn has none: None

    @property
    def key(self) -> tuple:
        """Which eval sample this is (`runtime.plan.sample_origin.sample_key`): the same for the tuned
        model's answer and the baseline's."""
        from runtime.plan.sample_origin import sample_key

        return sample_key(self)


def select_prompts(pipeline: Any, samples: int | None) -> list[tuple[Any, np.ndarray, np.ndarray]]:
    """Eval prompts spread over sources: round-robin over the plan's sources, each in row order."""
    per_source = [pipeline.eval_prompts(s.name) for s in pipeline.plan.sources]
    chosen: list = []
    depth = 0
    while any(depth < len(p) for p in per_source):
        for prompts in per_source:
            if depth < len(prompts):
                chosen.append(prompts[depth])
        depth += 1
        if samples is not None and len(chosen) >= samples:
            break
    return chosen if samples is None else chosen[:samples]


def sampling_for(
    generation: Any, temperature: float | None = None, top_p: float | None = None, top_k: int | None = None
) -> Any:
    """The `Sampling` of a `runtime.plan.run_plan.GenerationPlan` (None: greedy), each setting overridable."""
    from runtime.models.decode import Sampling

    if temperature is None:
        temperature = 0.0 if generation is None or generation.greedy else float(generation.temperature)
    if top_p is None:
        top_p = 1.0 if generation is None else float(generation.top_p)
    if top_k is None:
        top_k = 0 if generation is None else int(generation.top_k)
    return Sampling(temperature=float(temperature), top_p=float(top_p), top_k=int(top_k))


def cut_at_stop(tokens: Sequence[int], stops: Iterable[int]) -> tuple[list[int], bool]:
    """``tokens`` without a final stop token, and whether there was one."""
    tokens = [int(t) for t in tokens]
    if tokens and tokens[-1] in set(stops):
        return tokens[:-1], True
    return tokens, False


def pad_id(tokenizer: Any) -> int:
    """The id prompts are padded with (masked out: any id would do, one is chosen for all)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return int(pad if pad is not None else 0)


def answer_ids(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    sampling: Any,
    seed: int,
    batch_size: int = 32,
    eos_ids: Sequence[int] | None = None,
    spread: bool = False,
) -> list[tuple[list[int], bool]]:
    """Each prompt's answer: its new token ids without the stop token, and whether a stop token ended it.

    ``eos_ids`` overrides the stop tokens (default `stop_ids`). ``spread``: every process of a
    job calls this with the same prompts; each decodes its share of the batches and all get every
    answer (the same answers one process would give).
    """
    import jax

    from runtime.models.decode import generate_many
    from runtime.platform import distributed

    stops = list(eos_ids) if eos_ids is not None else stop_ids(tokenizer)
    share = distributed.share() if spread else (0, 1)
    new = generate_many(
        model,
        prompts,
        int(max_new_tokens),
        eos_ids=stops,
        sampling=sampling,
        rng=jax.random.key(int(seed)),
        pad_id=pad_id(tokenizer),
        batch_size=batch_size,
        share=share,
    )
    if share[1] > 1:
        new = distributed.merge_rows(new, int(max_new_tokens))
    return [cut_at_stop(tokens, stops) for tokens in new]


def generate_eval(
    model: Any,
    tokenizer: Any,
    pipeline: Any,
    generation: Any,
    samples: int | None,
    seed: int | None = None,
    batch_size: int = 32,
    eos_ids: Sequence[int] | None = None,
    context: Callable[[Any, np.ndarray], np.ndarray] | None = None,
    max_length: int | None = None,
    spread: bool = False,
) -> list[Sample]:
    """Generate for ``samples`` eval rows (see the module docstring) and decode.

    ``generation`` is a `runtime.plan.run_plan.GenerationPlan`; ``seed`` (default: its own)
    seeds sampling; ``eos_ids`` overrides the stop tokens (default `stop_ids`);
    ``context(example, prompt)`` rewrites each prompt (a few-shot baseline puts examples
    first); ``max_length`` (the model's positions) refuses a prompt that leaves no room for
    ``max_new_tokens``. Prompts are batched ``batch_size`` at a time, sorted by length so
    that rows of a batch need little padding; the result is in `select_prompts` order.
    ``spread``: every process of a job calls this, and each decodes a share (`answer_ids`).
    """
    from runtime.plan.data_errors import DataError
    from runtime.plan.sample_origin import where

    chosen = select_prompts(pipeline, samples)
    if not chosen:
        return []
    for ex, prompt, _ in chosen:
        if len(prompt) == 0:
            raise DataError(
                f"data {ex.source} ({where(ex.file, ex.line, ex.turn)}): the eval example has no prompt tokens "
                f"(every token "
                f"is trained), so there is nothing to generate from. help: give the source a "
                f"prompt/completion or messages template, or gate it on token metrics only"
            )
    if context is not None:
        chosen = [(ex, context(ex, prompt), ref) for ex, prompt, ref in chosen]
    if max_length is not None:
        for ex, prompt, _ in chosen:
            if len(prompt) + generation.max_new_tokens > max_length:
                raise DataError(
                    f"data {ex.source} ({where(ex.file, ex.line, ex.turn)}): the prompt is {len(prompt)} tokens; with "
                    f"max_new_tokens {generation.max_new_tokens} it exceeds the model's {max_length} "
                    f"positions. help: lower `k` of the few-shot baseline or `max_new_tokens`"
                )
    stops = list(eos_ids) if eos_ids is not None else stop_ids(tokenizer)
    answers = answer_ids(
        model,
        tokenizer,
        [prompt.tolist() for _, prompt, _ in chosen],
        generation.max_new_tokens,
        sampling_for(generation),
        generation.seed if seed is None else seed,
        batch_size,
        stops,
        spread=spread,
    )
    result = []
    for (ex, prompt, ref), (gen, finished) in zip(chosen, answers):
        ref_ids, _ = cut_at_stop(ref.tolist(), stops)
        result.append(
            Sample(
                source=ex.source,
                file=ex.file,
                line=int(ex.line),
                prompt=tokenizer.decode(prompt.tolist(), skip_special_tokens=False),
                reference=tokenizer.decode(ref_ids, skip_special_tokens=True),
                generated=tokenizer.decode(gen, skip_special_tokens=True),
                tokens=len(gen),
                finished=finished,
                turn=ex.turn,
            )
        )
    return result
