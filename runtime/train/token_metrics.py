"""Token metrics of the eval rows (loss, perplexity, token accuracy), shared by the training
loop's eval records and `sftc eval`: one forward pass per eval row, on the engine's mesh."""

from __future__ import annotations

import math

from runtime.train.engine import Engine


def token_metrics(engine: Engine, frozen, pipeline, params) -> dict[str | None, dict]:
    """Eval loss, perplexity and token accuracy over every eval row (key None) and, when
    several sources have eval rows, per source. Each eval row is run once: the overall
    figures are the per-source sums combined."""
    sources = [s.name for s in pipeline.plan.sources if s.eval is not None]
    sums = {}
    for source in sources if len(sources) > 1 else [None]:
        sums[source] = engine.token_sums(params, frozen, pipeline, source)
    if len(sources) > 1:
        sums[None] = tuple(sum(values) for values in zip(*sums.values()))
    return {source: _token_figures(*s) for source, s in sums.items() if s[1] > 0}


def _token_figures(loss_sum: float, tokens: float, right: float) -> dict:
    loss = loss_sum / tokens
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "token_accuracy": right / tokens, "tokens": tokens}
