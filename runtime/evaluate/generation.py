"""Generation eval: complete eval prompts with the model and keep each next to its reference.

The prompts are exactly what `DataPipeline.eval_prompts` gives: every token of an
eval example before its last trained span, rendered by the same template and
tokenizer as in training. The reference is that trained span (the completion or
the final assistant turn).

Which rows: per source (in the plan's source order), eval examples in row order;
the sources are interleaved round-robin and the first ``samples`` taken, so a
small ``samples`` still covers every source with eval rows (``samples=None``:
all eval rows).

Stopping and decoding: a row stops at its first stop token: the tokenizer's EOS,
and every special token that closes a reference (an end-of-turn such as
``<|im_end|>`` or ``<|eot_id|>``). The stop token is removed, and the rest is
decoded with ``skip_special_tokens=True``; references are decoded the same way.
``tokens`` counts the generated tokens without the stop token.

Batched greedy generation gives the same tokens as one prompt at a time (the
decoder masks padding); with sampling, each batch draws from
``fold_in(key(seed), batch_index)``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

__all__ = ["Sample", "generate_eval", "select_prompts", "stop_ids"]


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

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Sample":
        return cls(**d)


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


def stop_ids(tokenizer: Any, references: Iterable[Sequence[int]] = ()) -> list[int]:
    """The tokenizer's EOS plus every special token that ends a reference (end-of-turn tokens)."""
    special = set(int(i) for i in getattr(tokenizer, "all_special_ids", []) or [])
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    special |= {int(i) for i, token in added.items() if getattr(token, "special", False)}
    out = set()
    if tokenizer.eos_token_id is not None:
        out.add(int(tokenizer.eos_token_id))
    for ref in references:
        if len(ref) and int(ref[-1]) in special:
            out.add(int(ref[-1]))
    return sorted(out)


def _strip_stop(tokens: Sequence[int], stops: set[int]) -> tuple[list[int], bool]:
    tokens = [int(t) for t in tokens]
    if tokens and tokens[-1] in stops:
        return tokens[:-1], True
    return tokens, False


def generate_eval(model: Any, tokenizer: Any, pipeline: Any, generation: Any, samples: int | None,
                  seed: int | None = None, batch_size: int = 32,
                  eos_ids: Sequence[int] | None = None) -> list[Sample]:
    """Generate for ``samples`` eval rows (see the module docstring) and decode.

    ``generation`` is a `runtime.plan.GenerationPlan`; ``seed`` (default: its own)
    seeds sampling; ``eos_ids`` overrides the stop tokens (default `stop_ids`).
    Prompts are batched ``batch_size`` at a time, sorted by length so that rows
    of a batch need little padding; the result is in `select_prompts` order.
    """
    import jax

    from ..models.generate import Sampling, generate

    chosen = select_prompts(pipeline, samples)
    if not chosen:
        return []
    for ex, prompt, _ in chosen:
        if len(prompt) == 0:
            where = f"{ex.file}:{ex.line}" if ex.file else f"row {ex.line}"
            raise ValueError(f"data {ex.source} ({where}): the eval example has no prompt tokens (every token "
                             f"is trained), so there is nothing to generate from. help: give the source a "
                             f"prompt/completion or messages template, or gate it on token metrics only")
    stops = list(eos_ids) if eos_ids is not None else stop_ids(tokenizer, (ref for _, _, ref in chosen))
    stop_set = set(int(s) for s in stops)
    sampling = (Sampling() if generation.greedy else
                Sampling(temperature=float(generation.temperature), top_p=float(generation.top_p),
                         top_k=int(generation.top_k)))
    key = jax.random.key(int(generation.seed if seed is None else seed))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    pad = int(pad if pad is not None else 0)

    order = sorted(range(len(chosen)), key=lambda i: (len(chosen[i][1]), i))
    size = max(1, min(int(batch_size), len(chosen)))
    outputs: list[list[int] | None] = [None] * len(chosen)
    for b, start in enumerate(range(0, len(order), size)):
        idx = order[start:start + size]
        prompts = [chosen[i][1].tolist() for i in idx]
        # a short last batch is filled with copies so the batch shape (and compilation) is reused
        prompts += [prompts[-1]] * (size - len(prompts))
        new = generate(model, prompts, int(generation.max_new_tokens), eos_ids=stops, sampling=sampling,
                       rng=jax.random.fold_in(key, b), pad_id=pad)
        for i, tokens in zip(idx, new):
            outputs[i] = tokens

    result = []
    for (ex, prompt, ref), tokens in zip(chosen, outputs):
        gen, finished = _strip_stop(tokens, stop_set)
        ref_ids, _ = _strip_stop(ref.tolist(), stop_set)
        result.append(Sample(
            source=ex.source, file=ex.file, line=int(ex.line),
            prompt=tokenizer.decode(prompt.tolist(), skip_special_tokens=False),
            reference=tokenizer.decode(ref_ids, skip_special_tokens=True),
            generated=tokenizer.decode(gen, skip_special_tokens=True),
            tokens=len(gen), finished=finished))
    return result
