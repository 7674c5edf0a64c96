"""Preference pairs from review judgements: which answer wins, what is counted, and a prompt that
TRL tokenizes back into the run's own prompt tokens with a tokenizer that adds a BOS."""

from __future__ import annotations

import json

import pytest

from runtime.review.preference_pairs import export_pairs, trainer_prompt
from runtime.review.rows import ReviewError
from runtime.review.store import Judgement, ReviewStore, answer_sha
from tests.runtime.data_helpers import wordlevel_tokenizer


def _run(tmp_path, tok, prompts: list[str]):
    """A run directory with one sample per prompt: tuned answer `two`, base answer `four`."""
    run_dir = tmp_path / "run"
    tok.save_pretrained(str(run_dir / "tokenizer"))
    samples = [
        {
            "source": "sums",
            "file": "/d/sums.jsonl",
            "line": i + 1,
            "turn": None,
            "prompt": p,
            "reference": "four",
            "generated": "two",
            "tokens": 1,
        }
        for i, p in enumerate(prompts)
    ]
    base = [dict(s, generated="four") for s in samples]
    report = {"samples": samples, "metrics": {}, "baseline": {"kind": "base", "k": 0, "samples": base, "metrics": {}}}
    (run_dir / "report.json").write_text(json.dumps(report))
    (run_dir / "manifest.json").write_text(json.dumps({"data": {"fingerprints": {"sums": "f1"}}}))
    return run_dir


def _judge(run_dir, row: str, answer: str, text: str, score=None, correction=None, reviewer="ada"):
    ReviewStore(run_dir).add(Judgement(row, answer, reviewer, score, False, correction, None, "f1", answer_sha(text)))


def test_each_rule_gives_its_pair_or_its_count_and_trl_reads_the_prompt_as_the_model_did(tmp_path):
    from trl.data_utils import _tokenize

    tok = wordlevel_tokenizer()
    seen = tok("what is two plus two ?")["input_ids"]  # the prompt tokens the model saw: a BOS first
    assert seen[0] == tok.bos_token_id
    prompt = tok.decode(seen, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    run_dir = _run(tmp_path, tok, [prompt] * 6)
    _judge(run_dir, "sums:sums.jsonl:1", "tuned", "two", 2, correction="four")  # a correction
    _judge(run_dir, "sums:sums.jsonl:2", "tuned", "two", 5)  # tuned over base
    _judge(run_dir, "sums:sums.jsonl:2", "base", "four", 1)
    _judge(run_dir, "sums:sums.jsonl:3", "tuned", "two", 3)  # a tie
    _judge(run_dir, "sums:sums.jsonl:3", "base", "four", 3)
    _judge(run_dir, "sums:sums.jsonl:4", "tuned", "two", 2, correction=" two ")  # equal to the answer
    _judge(run_dir, "sums:sums.jsonl:5", "tuned", "two", 4)  # only one answer scored
    _judge(run_dir, "sums:sums.jsonl:6", "tuned", "two", 1)  # two reviewers: base wins on the mean
    _judge(run_dir, "sums:sums.jsonl:6", "base", "four", 4)
    _judge(run_dir, "sums:sums.jsonl:6", "tuned", "two", 5, reviewer="bo")
    _judge(run_dir, "sums:sums.jsonl:6", "base", "four", 3, reviewer="bo")
    result = export_pairs(run_dir, tmp_path / "pairs.jsonl")
    assert (result.by_correction, result.by_scores, result.ties, result.unchanged, result.undecided) == (1, 2, 1, 1, 1)
    pairs = {p["review"]["row"]: p for p in map(json.loads, (tmp_path / "pairs.jsonl").read_text().splitlines())}
    assert set(pairs) == {"sums:sums.jsonl:1", "sums:sums.jsonl:2", "sums:sums.jsonl:6"}
    assert (pairs["sums:sums.jsonl:1"]["chosen"], pairs["sums:sums.jsonl:1"]["rejected"]) == ("four", "two")
    assert pairs["sums:sums.jsonl:1"]["review"]["why"] == "correction"
    assert (pairs["sums:sums.jsonl:2"]["chosen"], pairs["sums:sums.jsonl:2"]["review"]["chosen"]) == ("two", "tuned")
    six = pairs["sums:sums.jsonl:6"]["review"]
    assert (six["chosen"], six["tuned_score"], six["base_score"], six["reviewers"]) == ("base", 3.0, 3.5, ["ada", "bo"])
    for pair in pairs.values():  # TRL tokenizes a standard prompt with special tokens: one BOS, as in the run
        assert _tokenize(tok, pair["prompt"])["input_ids"] == seen
    assert trainer_prompt(tok, prompt) != prompt and trainer_prompt(tok, "no bos") == "no bos"


def test_a_run_without_its_tokenizer_is_refused(tmp_path):
    run_dir = _run(tmp_path, wordlevel_tokenizer(), ["p"])
    import shutil

    shutil.rmtree(run_dir / "tokenizer")
    with pytest.raises(ReviewError, match="tokenizer: not found"):
        export_pairs(run_dir, tmp_path / "pairs.jsonl")


def test_the_command_says_what_it_wrote_and_what_it_counted(tmp_path, capsys):
    from sftlang.cli import main

    run_dir = _run(tmp_path, wordlevel_tokenizer(), ["p", "q"])
    _judge(run_dir, "sums:sums.jsonl:1", "tuned", "two", 2, correction="four")
    assert main(["review", str(run_dir), "--export-pairs", str(tmp_path / "pairs.jsonl")]) == 0
    out = " ".join(capsys.readouterr().err.split())  # the console's lines, wrapped or not
    assert "wrote 1 preference pair to" in out and "1 a correction over the tuned answer" in out
    assert "1 row with neither a correction nor both answers scored" in out
    assert main(["review", str(run_dir), "--export", "a", "--export-pairs", "b"]) == 2
