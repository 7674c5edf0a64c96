"""Trust an export by re-scoring it: reload what `export_model` wrote to disk (not the model in
memory), decode a sample of the eval rows with the run's prompts and decoding, and compare with
the run's own answers and metrics. A silently wrong export (a mis-named or altered tensor, a
dtype slip, a lost adapter) then rejects the run instead of reaching a server.

What must agree (see docs/evaluation.md, "The export check"):

* float32 runs: every sampled row's greedy answer is identical (so every gate's metric is equal
  exactly), and the logits of the first prompts agree within `FLOAT32_LOGITS`.
* 16-bit runs (bfloat16, float16): the exported weights are rounded, so near-ties may flip a
  token; each gate's generation metric agrees within `SIXTEEN_BIT` of its scale (0.05 for
  rates in [0, 1], 5 points for BLEU/chrF, 10% of the run's value for token counts), and the
  logits within `SIXTEEN_BIT_LOGITS` of the largest logit.
* quantized-base runs (`quantize = int8 | nf4`): the export holds the adapters over the
  original, unquantized base, which is not the model the run evaluated. The export must be
  exactly that (the rules above, against the adapters over the original base: a wrong export is
  still caught), its logits must stay within `QUANTIZED_LOGITS` of the largest logit of the
  run's (the gap quantization implies, measured on SmolLM2-135M: docs/running.md), and each
  gate's metric must agree with the run's within `SIXTEEN_BIT` of its scale, so that the
  verdict of the accept block carries over to what is exported.

Token metrics (loss, perplexity, token accuracy) are not re-scored (that is a full eval pass);
the logits comparison covers what they measure.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runtime.evaluate import metrics as M
from runtime.evaluate.gates import compute_metrics, gate_key

__all__ = ["ExportCheck", "check_export", "reload_export", "ROWS"]

ROWS = 32  # eval rows re-scored at most
LOGIT_PROMPTS = 4  # prompts whose logits are compared
FLOAT32_LOGITS = 1e-3  # absolute
SIXTEEN_BIT = 0.05  # of the metric's scale
SIXTEEN_BIT_LOGITS = 0.05  # of the largest logit magnitude
# of the largest logit magnitude: the gap between a quantized base and the original, measured on
# SmolLM2-135M-Instruct over English, code and chat text (int8 5-8 %, nf4 43 %) with headroom
QUANTIZED_LOGITS = {"int8": 0.15, "nf4": 0.6}


@dataclass
class ExportCheck:
    """The verdict on an export: ``passed``, and the figures it rests on."""

    passed: bool
    exact: bool  # float32: answers must be identical
    rows: int  # eval rows re-scored
    rows_differing: int  # of those, rows whose answer differs from the run's
    metrics: dict[str, dict] = field(default_factory=dict)  # gate -> {run, export, tolerance, passed}
    logits: dict[str, float] = field(default_factory=dict)  # max_abs_diff, tolerance
    message: str = ""
    quantization: dict[str, Any] = field(default_factory=dict)  # kind, max_abs_diff, tolerance (quantized bases)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def reload_export(prepared, directory: Path, kind: str):
    """The model as a server would get it: the exported files (for `peft`, the base + the adapter),
    built with the run's structure and compute dtype."""
    import jax.numpy as jnp
    from flax import nnx

    from runtime.checkpoints.hf_checkpoint import load_peft, load_pretrained
    from runtime.models.transformer import build
    from runtime.train.engine import compute_dtype

    plan = prepared.plan
    if kind == "hf":
        loaded, _ = load_pretrained(directory, dtype="float32")
    elif kind == "peft":
        loaded, _ = load_pretrained(plan.model.path, dtype="float32", revision=plan.model.revision)
    else:
        raise ValueError(f"unknown export format {kind!r}")
    compute = compute_dtype(plan.model.dtype)
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: build(prepared.config, 0, dtype=compute, param_dtype=jnp.float32)))
    model = nnx.merge(graphdef, nnx.split(loaded)[1])
    if kind == "peft":
        model, _ = load_peft(model, directory)
    return model


def _scale(metric: str, run_value: float) -> float:
    if metric in ("bleu", "chrf"):
        return 100.0
    if metric in ("mean_tokens", "max_tokens"):
        return max(abs(run_value), 1.0)
    return 1.0


def _logits_gap(model, exported, prompts: list[list[int]]) -> tuple[float, float]:
    """(max |Δ logit|, max |logit| of the run's model) over the prompts."""
    gap = peak = 0.0
    for ids in prompts:
        ours = np.asarray(model(np.array([ids])), np.float32)
        theirs = np.asarray(exported(np.array([ids])), np.float32)
        gap = max(gap, float(np.max(np.abs(ours - theirs))))
        peak = max(peak, float(np.max(np.abs(ours))))
    return gap, peak


def check_export(prepared, model, samples: list, directory: Path, kind: str, rows: int = ROWS) -> ExportCheck:
    """Re-score the export at ``directory`` against ``model`` (the run's) and its eval ``samples``."""
    from runtime.evaluate.answers import generate_eval, select_prompts
    from runtime.evaluate.final import original_base

    plan = prepared.plan
    exact = plan.model.dtype == "float32"
    quantize = plan.model.quantize
    exported = reload_export(prepared, directory, kind)
    # what the export must reproduce: the run's model, or for a quantized base the run's adapters
    # over the original base (the gap to the run's own model is checked below)
    reference = original_base(prepared, model)
    n = rows if plan.eval.samples is None else min(rows, plan.eval.samples)
    chosen = select_prompts(prepared.pipeline, n)
    prompts = [prompt.tolist() for _, prompt, _ in chosen if len(prompt)] or [
        [int(prepared.tokenizer.bos_token_id or 0)]
    ]
    gap, peak = _logits_gap(reference, exported, prompts[:LOGIT_PROMPTS])
    logits_tolerance = FLOAT32_LOGITS if exact else SIXTEEN_BIT_LOGITS * peak + FLOAT32_LOGITS
    problems = (
        [] if gap <= logits_tolerance else [f"logits differ by up to {gap:.4g} (tolerance {logits_tolerance:.4g})"]
    )
    quantization: dict[str, Any] = {}
    if quantize is not None:
        quantized_gap, quantized_peak = _logits_gap(model, exported, prompts[:LOGIT_PROMPTS])
        tolerance = QUANTIZED_LOGITS[quantize] * quantized_peak
        quantization = {
            "kind": quantize,
            "max_abs_diff": quantized_gap,
            "tolerance": tolerance,
            "share": quantized_gap / max(quantized_peak, 1e-9),
        }
        if quantized_gap > tolerance:
            problems.append(
                f"the {quantize} run's logits and the export's (over the original base) differ by up "
                f"to {quantized_gap:.4g}, more than quantization implies (tolerance {tolerance:.4g})"
            )

    figures: dict[str, dict] = {}
    differing = 0
    generation = plan.eval.generate
    if generation is not None and samples:
        seed = generation.seed
        theirs = generate_eval(exported, prepared.tokenizer, prepared.pipeline, generation, n, seed=seed)
        ours = (
            samples[: len(theirs)]
            if generation.greedy
            else generate_eval(model, prepared.tokenizer, prepared.pipeline, generation, n, seed=seed)
        )
        expected = (
            ours
            if reference is model
            else generate_eval(reference, prepared.tokenizer, prepared.pipeline, generation, n, seed=seed)
        )
        differing = sum(a.generated != b.generated for a, b in zip(expected, theirs))
        if exact and differing:
            problems.append(f"{differing} of {len(theirs)} re-scored rows get a different answer")
        if quantization:
            quantization["rows_differing_from_run"] = sum(a.generated != b.generated for a, b in zip(ours, theirs))
        eval_sources = [s.name for s in plan.data.sources if s.eval is not None]
        run_values = compute_metrics(ours, {}, gates=plan.gates, eval_sources=eval_sources)
        export_values = compute_metrics(theirs, {}, gates=plan.gates, eval_sources=eval_sources)
        for gate in plan.gates:
            if gate.metric not in M.GENERATION_METRICS and gate.metric != "regex":
                continue
            key = gate_key(gate)
            a, b = run_values.get(key), export_values.get(key)
            if a is None or b is None:
                continue
            tolerance = 0.0 if exact and quantize is None else SIXTEEN_BIT * _scale(gate.metric, a)
            agrees = abs(a - b) <= tolerance or (a != a and b != b)  # both NaN agree
            figures[key] = {"run": a, "export": b, "tolerance": tolerance, "passed": bool(agrees)}
            if not agrees:
                problems.append(f"{key} is {b:.4g} from the export, {a:.4g} in the run (tolerance {tolerance:g})")
    passed = not problems
    where = f"{directory} ({kind})"
    message = (
        f"export check passed: {where} reloaded from disk agrees with the run on {len(chosen)} eval rows"
        if passed
        else f"export check failed: {where} reloaded from disk does not reproduce the run: " + "; ".join(problems)
    )
    return ExportCheck(
        passed,
        exact,
        len(chosen),
        differing,
        figures,
        {"max_abs_diff": gap, "tolerance": logits_tolerance},
        message,
        quantization,
    )
