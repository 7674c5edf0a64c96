"""Review judgements as preference pairs: `sftc review RUN --export-pairs FILE`.

One JSON line per eval row on which the reviewers preferred one answer to another, in the shape
TRL's `DPOTrainer` reads as a standard (not conversational) preference dataset:

* ``prompt``: the prompt exactly as the model saw it (the template and chat template applied,
  special tokens as text) less the special tokens the tokenizer puts first by itself (a BOS), so
  that TRL, which tokenizes a standard prompt with the tokenizer's own special tokens, gets the
  run's own prompt tokens (`trainer_prompt`);
* ``chosen`` and ``rejected``: the two answers as the report holds them (decoded without special
  tokens, the stop token left out: a trainer appends its own end token);
* ``review``: ``run``, ``row`` (the sample's identity), ``why`` and the judgements behind it.

Which answer wins, from current judgements only (those about the answer shown and the data it
was made about, the rule the review gates count by):

* a **correction** beats the tuned answer it corrects (``why: "correction"``): the row's
  correction is the one `sftc review --export` writes (`chosen_corrections`: the latest among
  its reviewers). A correction equal to the answer (whitespace aside) says nothing: counted.
* otherwise, when reviewers scored **both** the tuned and the base answer, the one with the
  higher mean score over the reviewers who scored both wins (``why: "scores"``), the rule of
  ``review_wins``; a tie gives no pair, counted.

Every other row is counted as undecided. Nothing is left out silently.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean
from typing import Any

from runtime.review.corrections import chosen_corrections
from runtime.review.rows import ReviewError, Row, load_rows
from runtime.review.store import ReviewStore
from runtime.review.summary import valid_current

__all__ = ["PairsResult", "export_pairs", "preference", "trainer_prompt"]

COUNTERS = {  # why a row gave a pair or none -> the count of `PairsResult` it adds to
    "correction": "by_correction",
    "scores": "by_scores",
    "tie": "ties",
    "unchanged": "unchanged",
    "undecided": "undecided",
}


@dataclass
class PairsResult:
    path: Path
    by_correction: int = 0  # pairs: a correction over the tuned answer
    by_scores: int = 0  # pairs: the higher-scored of the tuned and base answers
    ties: int = 0  # rows whose two answers scored the same
    unchanged: int = 0  # corrections equal to the answer they correct
    undecided: int = 0  # rows without a correction or both answers scored
    warnings: list[str] = field(default_factory=list)

    @property
    def written(self) -> int:
        return self.by_correction + self.by_scores


def _same(a: str, b: str) -> bool:
    return " ".join(a.split()) == " ".join(b.split())


def preference(row: Row, correction: Any, answers: dict[str, dict[str, Any]]) -> tuple[dict | None, str]:
    """(the pair of ``row``, or None, and why): ``correction`` is the row's chosen correction
    judgement or None; ``answers`` its current judgements, answer -> reviewer -> judgement."""
    if correction is not None:
        if _same(correction.correction, row.tuned):
            return None, "unchanged"
        review = {"why": "correction", "reviewer": correction.reviewer, "score": correction.score}
        return {"chosen": correction.correction, "rejected": row.tuned, "review": review}, "correction"
    tuned, base = answers.get("tuned", {}), answers.get("base", {})
    both = sorted(r for r, j in tuned.items() if j.score is not None and r in base and base[r].score is not None)
    if row.base is None or not both:
        return None, "undecided"
    tuned_score, base_score = fmean(tuned[r].score for r in both), fmean(base[r].score for r in both)
    if tuned_score == base_score:
        return None, "tie"
    chosen, rejected = (row.tuned, row.base) if tuned_score > base_score else (row.base, row.tuned)
    review = {
        "why": "scores",
        "reviewers": both,
        "tuned_score": tuned_score,
        "base_score": base_score,
        "chosen": "tuned" if tuned_score > base_score else "base",
    }
    return {"chosen": chosen, "rejected": rejected, "review": review}, "scores"


def trainer_prompt(tokenizer: Any, prompt: str) -> str:
    """``prompt`` without the BOS text the tokenizer adds itself (`adds_special_tokens`), which a
    trainer's tokenization adds back: tokenized with it, the result is the run's prompt tokens
    again, not two BOS."""
    from runtime.data.prompts import adds_special_tokens

    bos = tokenizer.bos_token
    if bos and adds_special_tokens(tokenizer)[0] and prompt.startswith(bos):
        return prompt[len(bos) :]
    return prompt


def export_pairs(run_dir: str | Path, out: str | Path) -> PairsResult:
    """Write the preference pairs of ``run_dir`` to ``out`` (JSON lines, written whole or not at all)."""
    run_dir, out = Path(run_dir), Path(out)
    rows = load_rows(run_dir)
    store = ReviewStore(run_dir, create=False)
    judgements = store.history() if store.exists else []
    chosen, warnings = chosen_corrections(rows, judgements)
    corrections = {row.id: j for row, j in chosen}
    current = valid_current(judgements, rows.samples, rows.base_samples, rows.fingerprints)
    result = PairsResult(path=out, warnings=warnings)
    if not (run_dir / "tokenizer").is_dir():
        raise ReviewError(f"{run_dir / 'tokenizer'}: not found; the run's tokenizer decides how a prompt is tokenized")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(run_dir / "tokenizer"))  # the run's, saved beside its report
    lines = []
    for row in rows.rows:
        pair, why = preference(row, corrections.get(row.id), current.get(row.id, {}))
        counter = COUNTERS[why]
        setattr(result, counter, getattr(result, counter) + 1)
        if pair is None:
            continue
        pair["review"] = {"run": str(run_dir), "row": row.id, **pair["review"]}
        lines.append(json.dumps({"prompt": trainer_prompt(tokenizer, row.prompt), **pair}, ensure_ascii=False) + "\n")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    tmp.write_text("".join(lines), encoding="utf-8")
    os.replace(tmp, out)
    return result
