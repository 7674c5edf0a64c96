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

* GGUF exports (`gguf`, for llama.cpp and Ollama): the file is read back with sftc's own GGUF
  import (`runtime.checkpoints.gguf_checkpoint`, the reader that loads GGUF bases) and its logits
  must stay within `GGUF_LOGITS` of the largest logit (the rounding ``f16`` or ``q8_0`` implies),
  its generation metrics within `SIXTEEN_BIT` of their scale; the chat template it carries must
  be the run's (and render the eval prompts as training did), its tokenizer must turn each eval
  prompt's text into training's ids, and its EOS and end-of-turn ids must be the run's stop ids
  (`runtime.data.prompts.stop_ids`), or llama.cpp would not stop where the run did.
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
# of the largest logit magnitude: what rounding the GGUF's matrices implies. f16 keeps 11 bits
# (relative error 2^-11 per weight), q8_0 8 bits per block of 32 (about 2^-8); measured gaps are
# in docs/export.md; a wrong tensor or permutation moves them by about the logits themselves
GGUF_LOGITS = {"f16": 0.02, "q8_0": 0.1}


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
    gguf: dict[str, Any] = field(default_factory=dict)  # file, quant, template, tokenizer and stop agreement

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def reload_export(prepared, directory: Path, kind: str, quant: str = "f16"):
    """The model as a server would get it: the exported files (for `peft`, the base + the adapter;
    for `gguf`, the file read by sftc's GGUF import), built with the run's structure and compute dtype."""
    import jax.numpy as jnp
    from flax import nnx

    from runtime.checkpoints.hf_checkpoint import load_peft, load_pretrained
    from runtime.models.transformer import build
    from runtime.train.engine import compute_dtype

    plan = prepared.plan
    if kind == "hf":
        loaded, _ = load_pretrained(directory, dtype="float32")
    elif kind == "gguf":
        from runtime.evaluate.final import gguf_file

        loaded, _ = load_pretrained(gguf_file(directory, quant), dtype="float32")
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


def gguf_agreement(prepared, path: Path, prompts: list[list[int]]) -> tuple[dict[str, Any], list[str]]:
    """(figures, problems) of the GGUF file at ``path`` against the run: its chat template renders
    the eval prompts as training did, its tokenizer gives training's ids, its EOS and end-of-turn
    ids are the run's stop ids."""
    from runtime.checkpoints.gguf_checkpoint import build_tokenizer
    from runtime.data.prompts import stop_ids
    from runtime.plan.gguf_header import read_header

    ours = prepared.tokenizer
    header = read_header(
        path,
        arrays=("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type", "tokenizer.ggml.scores"),
    )
    theirs = build_tokenizer(header)
    problems: list[str] = []
    texts = [ours.decode(ids, skip_special_tokens=False) for ids in prompts]
    differing_ids = sum(list(theirs(t, add_special_tokens=False)["input_ids"]) != ids for t, ids in zip(texts, prompts))
    if differing_ids:
        problems.append(
            f"the GGUF's tokenizer gives other ids than training's for {differing_ids} of {len(prompts)} eval prompts"
        )
    template = header.metadata.get("tokenizer.chat_template")
    run_template = getattr(ours, "chat_template", None)
    differing_renders = 0
    if template != run_template:
        problems.append("the GGUF's chat template is not the run's")
    elif template:
        for text in texts:
            turn = [{"role": "user", "content": text}]
            a = ours.apply_chat_template(turn, tokenize=False, add_generation_prompt=True)
            b = theirs.apply_chat_template(turn, tokenize=False, add_generation_prompt=True)
            differing_renders += a != b
        if differing_renders:
            problems.append(f"the GGUF's chat template renders {differing_renders} eval prompts unlike training")
    stops = stop_ids(ours)
    ends = sorted(
        {int(v) for k in ("eos", "eot") if (v := header.metadata.get(f"tokenizer.ggml.{k}_token_id")) is not None}
    )
    if ends != stops:
        problems.append(f"the GGUF ends answers on ids {ends} (EOS, end of turn), the run on {stops}")
    figures = {
        "file": str(path),
        "chat_template": "none" if not template else ("the run's" if template == run_template else "different"),
        "prompts_rendered_differently": differing_renders,
        "prompts_tokenized_differently": differing_ids,
        "stop_ids": ends,
        "run_stop_ids": stops,
    }
    return figures, problems


def check_export(
    prepared, model, samples: list, directory: Path, kind: str, rows: int = ROWS, quant: str = "f16"
) -> ExportCheck:
    """Re-score the export at ``directory`` against ``model`` (the run's) and its eval ``samples``
    (none: the logits and, for `gguf`, the template, tokenizer and stop ids are checked)."""
    from runtime.evaluate.answers import generate_eval, select_prompts
    from runtime.evaluate.final import original_base

    plan = prepared.plan
    gguf = kind == "gguf"
    exact = plan.model.dtype == "float32" and not gguf
    quantize = plan.model.quantize
    exported = reload_export(prepared, directory, kind, quant)
    # what the export must reproduce: the run's model, or for a quantized base the run's adapters
    # over the original base (the gap to the run's own model is checked below)
    reference = original_base(prepared, model)
    n = rows if plan.eval.samples is None else min(rows, plan.eval.samples)
    chosen = select_prompts(prepared.pipeline, n)
    prompts = [prompt.tolist() for _, prompt, _ in chosen if len(prompt)] or [
        [int(prepared.tokenizer.bos_token_id or 0)]
    ]
    gap, peak = _logits_gap(reference, exported, prompts[:LOGIT_PROMPTS])
    share = GGUF_LOGITS[quant] if gguf else SIXTEEN_BIT_LOGITS
    logits_tolerance = FLOAT32_LOGITS if exact else share * peak + FLOAT32_LOGITS
    problems = (
        [] if gap <= logits_tolerance else [f"logits differ by up to {gap:.4g} (tolerance {logits_tolerance:.4g})"]
    )
    gguf_figures: dict[str, Any] = {}
    if gguf:
        from runtime.evaluate.final import gguf_file

        gguf_figures, gguf_problems = gguf_agreement(prepared, gguf_file(directory, quant), prompts)
        gguf_figures = {
            "quant": quant,
            "logit_prompts": len(prompts[:LOGIT_PROMPTS]),
            "share": gap / max(peak, 1e-9),
            "tolerance_share": share,
            **gguf_figures,
        }
        problems += gguf_problems
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
    where = f"{directory} ({kind}{' ' + quant if gguf else ''})"
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
        gguf_figures,
    )
