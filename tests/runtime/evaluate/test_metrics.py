"""Metric values on fixed strings: equal to the libraries' own reference calls and CLI, and to
hand-computed values."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sacrebleu
from rouge_score import rouge_scorer

from runtime.evaluate import metrics as M

PREDS = [
    "the cat sat on the mat",
    "Hello there, general Kenobi!",
    "a quick brown fox jumps",
    "ok",
    "JSON is not a sentence",
]
REFS = ["the cat sat on a mat", "hello there general", "the quick brown fox jumped over", "okay", "JSON is a format"]


def test_bleu_and_chrf_equal_sacrebleu_calls():
    assert M.bleu(PREDS, REFS) == sacrebleu.corpus_bleu(PREDS, [REFS]).score
    assert M.chrf(PREDS, REFS) == sacrebleu.corpus_chrf(PREDS, [REFS]).score
    assert M.bleu(["x y z w"], ["x y z w"]) == pytest.approx(100.0)


def test_bleu_hand_computed():
    # n-gram precisions 5/6, 3/5, 2/4, 1/3; equal lengths so no brevity penalty
    expected = 100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25
    assert M.bleu(["the cat sat on the mat"], ["the cat sat on a mat"]) == pytest.approx(expected, abs=1e-9)


def test_bleu_and_chrf_equal_the_sacrebleu_command_line(tmp_path):
    hyp, ref = tmp_path / "hyp.txt", tmp_path / "ref.txt"
    hyp.write_text("\n".join(PREDS) + "\n")
    ref.write_text("\n".join(REFS) + "\n")
    exe = shutil.which("sacrebleu", path=str(Path(sys.executable).parent)) or shutil.which("sacrebleu")
    cmd = [exe] if exe else [sys.executable, "-m", "sacrebleu"]
    done = subprocess.run(
        cmd + [str(ref), "-i", str(hyp), "-m", "bleu", "chrf", "-w", "6", "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    bleu_cli, chrf_cli = (entry["score"] for entry in json.loads(done.stdout))
    assert M.bleu(PREDS, REFS) == pytest.approx(bleu_cli, abs=1e-6)
    assert M.chrf(PREDS, REFS) == pytest.approx(chrf_cli, abs=1e-6)


def test_rouge_equals_rouge_score_mean_f1():
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"])
    scores = [scorer.score(r, p) for p, r in zip(PREDS, REFS)]
    for fn, key in ((M.rouge_1, "rouge1"), (M.rouge_2, "rouge2"), (M.rouge_l, "rougeL")):
        assert fn(PREDS, REFS) == pytest.approx(sum(s[key].fmeasure for s in scores) / len(scores), abs=1e-12)


def test_rouge_hand_computed():
    # unigram overlap 2: P = 2/3, R = 2/4, F1 = 4/7; bigram overlap 1: P = 1/2, R = 1/3, F1 = 2/5
    assert M.rouge_1(["the cat sat"], ["the cat was here"]) == pytest.approx(4 / 7)
    assert M.rouge_2(["the cat sat"], ["the cat was here"]) == pytest.approx(2 / 5)
    # LCS "the cat here" = 3 of 4 / 3 of 4; rouge-score lowercases and drops punctuation
    assert M.rouge_l(["The cat, here!"], ["the cat was here"]) == pytest.approx(2 * (3 / 3) * (3 / 4) / (3 / 3 + 3 / 4))


def test_exact_match_normalisation():
    assert M.normalize("  Paris,\n\t France  ") == "Paris, France"
    preds = ["Paris", " Paris\n", "paris", "Paris France", "Paris  \n France", ""]
    refs = ["Paris", "Paris", "Paris", "Paris  France", "Paris France", "  "]
    # equal after strip + whitespace collapsing; case and punctuation count
    assert M.exact_match(preds, refs) == pytest.approx(5 / 6)
    assert M.sample_scores("exact_match", preds, refs, [0] * 6) == [1, 1, 0, 1, 1, 1]


def test_json_valid_and_json_match():
    preds = [
        '{"a": 1, "b": [1, 2]}',
        '  {"b": [1, 2], "a": 1.0}\n',
        '{"a": 1',
        "NaN",
        "true",
        '"1"',
        "[2, 1]",
        '{"a": 1}',
    ]
    refs = ['{"b": [1, 2], "a": 1}', '{"a": 1, "b": [1, 2]}', '{"a": 1}', "NaN", "1", "1", "[1, 2]", "not json"]
    # valid: all but the truncated object and NaN (not JSON, although Python's json accepts it)
    assert M.json_valid(preds) == pytest.approx(6 / 8)
    # match: key order ignored, 1 == 1.0; true != 1, "1" != 1, arrays keep order; a non-JSON reference never matches
    assert M.sample_scores("json_match", preds, refs, [0] * 8) == [1, 1, 0, 0, 0, 0, 0, 0]
    assert M.json_match(preds, refs) == pytest.approx(2 / 8)
    assert M.json_equal({"a": [1, {"b": None}]}, {"a": [1.0, {"b": None}]})
    assert not M.json_equal({"a": None}, {"a": 0}) and not M.json_equal([False], [0])


def test_regex_and_token_counts():
    preds = ['{"intent": "refund"}', '  {"x": 1}', "no braces here", "}{"]
    assert M.regex(preds, r"^\{") == pytest.approx(2 / 4)  # searched on the stripped text
    assert M.regex(preds, "refund|braces") == pytest.approx(2 / 4)
    with pytest.raises(ValueError, match="invalid pattern"):
        M.regex(preds, "(")
    assert M.mean_tokens([3, 4, 11]) == 6.0 and M.max_tokens([3, 4, 11]) == 11.0


def test_compute_by_name_and_errors():
    counts = [len(p.split()) for p in PREDS]
    assert M.compute("bleu", PREDS, REFS, counts) == M.bleu(PREDS, REFS)
    assert M.compute("regex", PREDS, REFS, counts, pattern="^the") == 0.2
    assert M.compute("max_tokens", PREDS, REFS, counts) == 6.0
    with pytest.raises(ValueError, match="no predictions"):
        M.exact_match([], [])
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        M.bleu(["a", "b"], ["a"])
    with pytest.raises(KeyError):
        M.compute("loss", PREDS, REFS, counts)


def test_sample_scores_rank_like_the_metric():
    counts = [len(p.split()) for p in PREDS]
    bleu = M.sample_scores("bleu", PREDS, REFS, counts)
    assert bleu == [sacrebleu.sentence_bleu(p, [r]).score for p, r in zip(PREDS, REFS)]
    assert M.sample_scores("rouge_l", PREDS, REFS, counts)[0] == pytest.approx(M.rouge_l(PREDS[:1], REFS[:1]))
    assert M.sample_scores("mean_tokens", PREDS, REFS, counts) == [float(c) for c in counts]
    assert all(0 <= s <= 100 and not math.isnan(s) for s in M.sample_scores("chrf", PREDS, REFS, counts))
