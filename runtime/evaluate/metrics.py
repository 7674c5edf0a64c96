"""Generation metrics: pure functions of predicted and reference strings.

Each function takes the generations and their references (same length, same
order) and returns one number. They are thin, documented wrappers around the
libraries that define the metrics, so their values equal those libraries' own:

===============  ===============================================================  =======
metric           definition                                                       range
===============  ===============================================================  =======
exact_match      share of predictions equal to their reference after `normalize`  0-1
rouge_1/2/l      mean F1 of rouge-score's ``RougeScorer(["rouge1", "rouge2",      0-1
                 "rougeL"])`` (default tokenizer: lowercase, non-alphanumerics
                 split; no stemming)
bleu             ``sacrebleu.corpus_bleu(preds, [refs]).score`` (13a, exp         0-100
                 smoothing: the ``sacrebleu`` CLI's defaults)
chrf             ``sacrebleu.corpus_chrf(preds, [refs]).score`` (chrF2,           0-100
                 character 6-grams: the CLI's ``-m chrf`` defaults)
json_valid       share of predictions that ``json.loads`` after ``strip()``        0-1
json_match       share whose parsed JSON equals the parsed reference (`json_equal`) 0-1
regex            share with ``re.search(pattern, prediction.strip())``            0-1
mean_tokens      mean of the generated token counts                               >= 0
max_tokens       largest generated token count                                    >= 0
===============  ===============================================================  =======

`loss`, `perplexity` and `token_accuracy` are token-level and come from the
training loop's eval pass; they are not computed here.

`sample_scores` gives the same metrics one generation at a time (sentence BLEU
and chrF for the corpus metrics), which the report uses to show the worst
generations first.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any

__all__ = [
    "GENERATION_METRICS",
    "normalize",
    "exact_match",
    "rouge_1",
    "rouge_2",
    "rouge_l",
    "bleu",
    "chrf",
    "json_valid",
    "json_match",
    "json_equal",
    "parse_json",
    "regex",
    "mean_tokens",
    "max_tokens",
    "compute",
    "sample_scores",
]

# generation metrics in report order; `regex` is computed only where a gate names a pattern
GENERATION_METRICS = (
    "exact_match",
    "rouge_1",
    "rouge_2",
    "rouge_l",
    "bleu",
    "chrf",
    "json_valid",
    "json_match",
    "mean_tokens",
    "max_tokens",
)

_WS = re.compile(r"\s+")


def _check(preds: Sequence[str], refs: Sequence[str] | None = None) -> None:
    if len(preds) == 0:
        raise ValueError("no predictions to score")
    if refs is not None and len(refs) != len(preds):
        raise ValueError(f"{len(preds)} predictions but {len(refs)} references")


def normalize(text: str) -> str:
    """`exact_match`'s normalisation: strip leading/trailing whitespace and replace every
    run of whitespace (spaces, tabs, newlines) by one space. Case and punctuation are kept.

    >>> normalize("  Paris,\\n  France ")
    'Paris, France'
    """
    return _WS.sub(" ", text).strip()


def exact_match(preds: Sequence[str], refs: Sequence[str]) -> float:
    """Share of predictions whose `normalize`d text equals the `normalize`d reference."""
    _check(preds, refs)
    return sum(normalize(p) == normalize(r) for p, r in zip(preds, refs)) / len(preds)


_SCORER = None


def _rouge_scores(preds: Sequence[str], refs: Sequence[str], key: str) -> list[float]:
    global _SCORER
    if _SCORER is None:
        from rouge_score import rouge_scorer

        _SCORER = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"])
    # rouge-score's argument order is score(target, prediction)
    return [float(_SCORER.score(r, p)[key].fmeasure) for p, r in zip(preds, refs)]


def _rouge(preds: Sequence[str], refs: Sequence[str], key: str) -> float:
    _check(preds, refs)
    scores = _rouge_scores(preds, refs, key)
    return sum(scores) / len(scores)


def rouge_1(preds: Sequence[str], refs: Sequence[str]) -> float:
    """Mean ROUGE-1 F1 (rouge-score, default tokenizer, no stemming)."""
    return _rouge(preds, refs, "rouge1")


def rouge_2(preds: Sequence[str], refs: Sequence[str]) -> float:
    """Mean ROUGE-2 F1 (rouge-score, default tokenizer, no stemming)."""
    return _rouge(preds, refs, "rouge2")


def rouge_l(preds: Sequence[str], refs: Sequence[str]) -> float:
    """Mean ROUGE-L F1 (rouge-score ``rougeL``: longest common subsequence, no stemming)."""
    return _rouge(preds, refs, "rougeL")


def bleu(preds: Sequence[str], refs: Sequence[str]) -> float:
    """Corpus BLEU, 0-100: ``sacrebleu.corpus_bleu(preds, [refs]).score`` with sacrebleu's defaults."""
    import sacrebleu

    _check(preds, refs)
    return float(sacrebleu.corpus_bleu(list(preds), [list(refs)]).score)


def chrf(preds: Sequence[str], refs: Sequence[str]) -> float:
    """Corpus chrF, 0-100: ``sacrebleu.corpus_chrf(preds, [refs]).score`` with sacrebleu's defaults."""
    import sacrebleu

    _check(preds, refs)
    return float(sacrebleu.corpus_chrf(list(preds), [list(refs)]).score)


class _NotJSON(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise _NotJSON(f"{name} is not JSON")


_MISSING = object()


def parse_json(text: str) -> Any:
    """``json.loads(text.strip())``, or a private sentinel when it fails.

    ``NaN``, ``Infinity`` and ``-Infinity`` (accepted by Python's json module but not
    by the JSON standard) count as invalid.
    """
    try:
        return json.loads(text.strip(), parse_constant=_reject_constant)
    except ValueError:  # JSONDecodeError and _NotJSON are both ValueErrors
        return _MISSING


def json_equal(a: Any, b: Any) -> bool:
    """Equality of parsed JSON values: objects ignore key order, arrays keep order,
    numbers compare by value (``1 == 1.0``), but ``true`` is not ``1`` and ``"1"`` is not ``1``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b))
    if a is None or b is None:
        return a is None and b is None
    return type(a) is type(b) and a == b


def json_valid(preds: Sequence[str]) -> float:
    """Share of predictions that parse as JSON (any JSON value) after ``strip()``."""
    _check(preds)
    return sum(parse_json(p) is not _MISSING for p in preds) / len(preds)


def _json_match_one(p: str, r: str) -> bool:
    ref = parse_json(r)
    if ref is _MISSING:  # a reference that isn't JSON never matches
        return False
    pred = parse_json(p)
    return pred is not _MISSING and json_equal(pred, ref)


def json_match(preds: Sequence[str], refs: Sequence[str]) -> float:
    """Share of predictions whose parsed JSON equals the parsed reference (`json_equal`);
    an unparsable prediction or reference counts as a mismatch."""
    _check(preds, refs)
    return sum(_json_match_one(p, r) for p, r in zip(preds, refs)) / len(preds)


def _compile(pattern: str) -> re.Pattern:
    try:
        return re.compile(pattern)
    except re.error as e:
        raise ValueError(f"regex({json.dumps(pattern)}): invalid pattern: {e}") from None


def regex(preds: Sequence[str], pattern: str) -> float:
    """Share of predictions where ``re.search(pattern, prediction.strip())`` finds a match."""
    _check(preds)
    compiled = _compile(pattern)
    return sum(compiled.search(p.strip()) is not None for p in preds) / len(preds)


def mean_tokens(token_counts: Sequence[int]) -> float:
    """Mean number of generated tokens (the stop token not counted)."""
    _check(token_counts)
    return float(sum(token_counts)) / len(token_counts)


def max_tokens(token_counts: Sequence[int]) -> float:
    """Largest number of generated tokens (the stop token not counted)."""
    _check(token_counts)
    return float(max(token_counts))


def compute(
    metric: str, preds: Sequence[str], refs: Sequence[str], token_counts: Sequence[int], pattern: str | None = None
) -> float:
    """One generation metric by name (``regex`` needs ``pattern``)."""
    if metric == "regex":
        if pattern is None:
            raise ValueError("regex needs a pattern")
        return regex(preds, pattern)
    if metric in ("mean_tokens", "max_tokens"):
        return {"mean_tokens": mean_tokens, "max_tokens": max_tokens}[metric](token_counts)
    if metric == "json_valid":
        return json_valid(preds)
    fns = {
        "exact_match": exact_match,
        "rouge_1": rouge_1,
        "rouge_2": rouge_2,
        "rouge_l": rouge_l,
        "bleu": bleu,
        "chrf": chrf,
        "json_match": json_match,
    }
    if metric not in fns:
        raise KeyError(f"{metric!r} is not a generation metric")
    return fns[metric](preds, refs)


def sample_scores(
    metric: str, preds: Sequence[str], refs: Sequence[str], token_counts: Sequence[int], pattern: str | None = None
) -> list[float]:
    """The metric for each generation on its own (sentence BLEU / chrF for the corpus
    metrics; the token count for mean/max_tokens): used to rank generations."""
    import sacrebleu

    if metric == "exact_match":
        return [float(normalize(p) == normalize(r)) for p, r in zip(preds, refs)]
    if metric in ("rouge_1", "rouge_2", "rouge_l"):
        return _rouge_scores(preds, refs, {"rouge_1": "rouge1", "rouge_2": "rouge2", "rouge_l": "rougeL"}[metric])
    if metric == "bleu":
        return [float(sacrebleu.sentence_bleu(p, [r]).score) for p, r in zip(preds, refs)]
    if metric == "chrf":
        return [float(sacrebleu.sentence_chrf(p, [r]).score) for p, r in zip(preds, refs)]
    if metric == "json_valid":
        return [float(parse_json(p) is not _MISSING) for p in preds]
    if metric == "json_match":
        return [float(_json_match_one(p, r)) for p, r in zip(preds, refs)]
    if metric == "regex":
        compiled = _compile(pattern or "")
        return [float(compiled.search(p.strip()) is not None) for p in preds]
    if metric in ("mean_tokens", "max_tokens"):
        return [float(n) for n in token_counts]
    raise KeyError(f"{metric!r} is not a generation metric")


def finite(value: float | None) -> bool:
    return value is not None and isinstance(value, (int, float)) and math.isfinite(value)
