"""Evaluation, `sftc generate` and `sftc chat` give a row the same prompt, stop at the same tokens
and decode with the same decoder: the same token ids, for prompt/completion, `chat = on`, a
`messages` template and a conventional `messages` column, under two chat template styles."""

from __future__ import annotations

import dataclasses
import json
import random

import numpy as np
import pytest

from runtime.checkpoints.tokenizer_files import DEFAULT_CHAT_TEMPLATE
from runtime.data.prompts import PromptError, render_prompt, stop_ids
from runtime.evaluate.answers import generate_eval, select_prompts
from runtime.models import Sampling
from runtime.plan.run_plan import GenerationPlan
from runtime.runs.trained_run import answers, decoding, load_trained, reply, source_mode
from sftlang.cli import main
from tests.fixtures import copy_fixtures
from tests.runtime.data_helpers import CHATML, LLAMA3, WORDS, bpe_tokenizer, wordlevel_tokenizer

SPEC = """\
sft "agree"
use "tiny-model.sft"  # tests/fixtures/specs/tiny-model.sft, copied beside this spec
data pc = jsonl("pc.jsonl") {
    split eval = 25% seed 1
}
data chat = jsonl("chat.jsonl") {
    split eval = 25% seed 1
}
data conv = jsonl("conv.jsonl") {
    split eval = 25% seed 1
}
data plain = jsonl("plain.jsonl") {
    split eval = 25% seed 1
}
template qa for pc {
    prompt     = "question : {q} answer :"
    completion = " {a}"
}
template instruct for chat {
    prompt     = "{q}"
    completion = "{a}"
    chat       = on
    system     = "you are a bot"
}
template dialog for conv {
    messages = dialog
}
train {
    steps = 12
    batch = 8
    micro = 4
    seq_len = 64
    optimizer = adamw(lr = 1e-2)
    checkpoint = every 12 steps keep 1
}
eval {
    generate = greedy(max_new_tokens = 6)
    samples  = all
}
output {
    dir    = "runs/{name}"
    export = none
}
"""

SOURCES = ("pc", "chat", "conv", "plain")
# Llama 3 trains a second run (the fixture is per style): kept to the slow suite, as in test_export_trust
STYLES = ("chatml", pytest.param("llama3", marks=pytest.mark.slow))
ANSWER_WORDS = ("zero", "one", "two")
GREEDY = GenerationPlan(greedy=True, max_new_tokens=6)


def _phrase(rnd: random.Random, most: int) -> str:
    return " ".join(rnd.choice(WORDS[14:70]) for _ in range(rnd.randint(1, most)))


def _answer(rnd: random.Random) -> str:
    """Counting, two or three words: what a tiny model learns in a few steps, with where to stop."""
    return " ".join(ANSWER_WORDS[: rnd.choice((2, 3, 3))])


def _turns(rnd: random.Random) -> list[dict]:
    turns = []
    for _ in range(rnd.choice((1, 2))):  # one or two exchanges
        turns += [{"role": "user", "content": _phrase(rnd, 5)}, {"role": "assistant", "content": _answer(rnd)}]
    return turns


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``runs(style)``: a tiny trained run with one source of each kind, under the chat template
    ``style``; its directory, loaded weights and data pipeline. Built once per style."""

    built: dict = {}
    with pytest.MonkeyPatch.context() as mp:  # cwd and SFTC_CACHE restored even when a build fails

        def get(style: str):
            if style not in built:
                root = tmp_path_factory.mktemp(style)
                mp.chdir(root)
                mp.setenv("SFTC_CACHE", str(root / "cache"))
                wordlevel_tokenizer({"chatml": CHATML, "llama3": LLAMA3}[style]).save_pretrained(str(root / "tok"))
                rnd = random.Random(0)
                _write(root / "pc.jsonl", [{"q": _phrase(rnd, 6), "a": _answer(rnd)} for _ in range(16)])
                _write(root / "chat.jsonl", [{"q": _phrase(rnd, 6), "a": _answer(rnd)} for _ in range(16)])
                _write(root / "conv.jsonl", [{"dialog": _turns(rnd)} for _ in range(16)])
                _write(root / "plain.jsonl", [{"messages": _turns(rnd)} for _ in range(16)])
                copy_fixtures(root, "tiny-model.sft")
                (root / "agree.sft").write_text(SPEC)
                assert main(["run", "agree.sft"]) == 0
                (run_dir,) = sorted((root / "runs" / "agree").iterdir())
                trained = load_trained(run_dir)
                built[style] = (root, run_dir, trained, trained.with_data().pipeline)
            mp.chdir(built[style][0])
            mp.setenv("SFTC_CACHE", str(built[style][0] / "cache"))
            return built[style]

        yield get


def _eval_rows(root, pipeline, source):
    """(example, prompt ids, raw row) of the source's eval rows, in evaluation's order."""
    lines = (root / f"{source}.jsonl").read_text().splitlines()
    chosen = [c for c in select_prompts(pipeline, None) if c[0].source == source]
    return [(ex, prompt.tolist(), json.loads(lines[ex.line - 1])) for ex, prompt, _ in chosen]


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("source", SOURCES)
def test_a_row_renders_to_its_eval_prompt(runs, style, source):
    root, run_dir, trained, pipeline = runs(style)
    tok, mode = trained.tokenizer, source_mode(trained.plan, run_dir, source)
    rows = _eval_rows(root, pipeline, source)
    assert len(rows) == 4
    for ex, prompt, row in rows:
        assert render_prompt(tok, mode, row).ids == prompt, (source, ex.line)
        # the same prompt from a line of text, as `--prompt` and `chat` give it
        if source in ("pc", "chat"):
            assert render_prompt(tok, mode, row["q"]).ids == prompt
        else:
            *history, question, _ = row["dialog" if source == "conv" else "messages"]
            assert render_prompt(tok, mode, question["content"], history).ids == prompt
    if source in ("conv", "plain"):  # one- and two-exchange conversations both
        assert {len(row["dialog" if source == "conv" else "messages"]) for _, _, row in rows} == {2, 4}
    if source == "chat":  # the system message and the generation prompt are there, as trained
        text = tok.decode(rows[0][1])
        assert "you are a bot" in text and text.endswith(("<|im_start|> assistant", "<|end_header_id|>"))


@pytest.mark.parametrize("style", STYLES)
def test_evaluation_generate_and_chat_give_the_same_tokens(runs, style, capsys):
    root, run_dir, trained, pipeline = runs(style)
    tok = trained.tokenizer
    samples = generate_eval(trained.model, tok, pipeline, GREEDY, None)
    settings = decoding(trained.plan)
    assert settings.sampling == Sampling() and settings.max_new_tokens == 6
    for source in SOURCES:
        rows = _eval_rows(root, pipeline, source)
        expected = [s for s in samples if s.source == source]
        # `sftc generate --file`: the rows as they are in the data file, reference answers included
        path = root / f"{source}-rows.jsonl"
        _write(path, [row for _, _, row in rows])
        assert main(["generate", str(run_dir), "--file", str(path), "--source", source, "--json"]) == 0
        printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [(p["completion"], p["tokens"], p["finished"]) for p in printed] == [
            (s.generated, s.tokens, s.finished) for s in expected
        ]
        # the command's code path, and chat's stream, token by token
        prompts = [render_prompt(tok, source_mode(trained.plan, run_dir, source), row) for _, _, row in rows]
        batched = answers(trained, prompts, settings)
        assert [tok.decode(ids, skip_special_tokens=True) for ids, _ in batched] == [s.generated for s in expected]
        streamed = [list(reply(trained, p, settings)) for p in prompts]
        assert streamed == [ids for ids, _ in batched]
    assert any(s.finished for s in samples), "some answers end on a stop token"


@pytest.mark.parametrize("style", STYLES)
def test_chat_command_streams_the_answer_evaluation_gives(runs, style, monkeypatch, capsys):
    root, run_dir, trained, pipeline = runs(style)
    samples = generate_eval(trained.model, trained.tokenizer, pipeline, GREEDY, None)
    (ex, _, row), sample = next(
        (r, s)
        for r, s in zip(_eval_rows(root, pipeline, "plain"), [s for s in samples if s.source == "plain"])
        if len(r[2]["messages"]) == 2
    )
    lines = iter([row["messages"][0]["content"], "hello"])

    def fake_input(prompt=""):
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    monkeypatch.setattr("builtins.input", fake_input)
    assert main(["chat", str(run_dir), "--source", "plain"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "a conversation" in out[0]
    assert out[1] == sample.generated


def test_stop_tokens_are_derived_from_the_chat_template():
    for template, end in ((CHATML, "<|im_end|>"), (LLAMA3, "<|eot_id|>")):
        for tok in (wordlevel_tokenizer(template), bpe_tokenizer(template)):
            assert stop_ids(tok) == sorted({tok.eos_token_id, tok.convert_tokens_to_ids(end)})
    # templates that close a turn with the EOS, and no template: the EOS alone
    assert stop_ids(wordlevel_tokenizer(DEFAULT_CHAT_TEMPLATE)) == [wordlevel_tokenizer().eos_token_id]
    assert stop_ids(wordlevel_tokenizer()) == [wordlevel_tokenizer().eos_token_id]


def test_generation_settings_come_from_the_spec_and_the_command_line(runs):
    _, _, trained, _ = runs("chatml")
    spec = GenerationPlan(greedy=False, max_new_tokens=9, temperature=0.7, top_p=0.9, top_k=5, seed=3)
    plan = dataclasses.replace(trained.plan, eval=dataclasses.replace(trained.plan.eval, generate=spec))
    assert decoding(plan).sampling == Sampling(temperature=0.7, top_p=0.9, top_k=5)
    assert (decoding(plan).max_new_tokens, decoding(plan).seed) == (9, 3)
    assert decoding(plan, top_k=1, top_p=0.5).sampling == Sampling(temperature=0.7, top_p=0.5, top_k=1)
    assert decoding(plan, temperature=0).sampling.greedy
    with pytest.raises(ValueError):
        decoding(plan, top_p=0)


def _mass_above(trained, prompt_ids, tokens, temperature):
    """For each new token, the probability of the tokens likelier than it (at ``temperature``)."""
    every = np.asarray(trained.model(np.array([prompt_ids + tokens]))[0], np.float64) / temperature
    out = []
    for i, token in enumerate(tokens):
        logits = every[len(prompt_ids) + i - 1]  # the logits that chose token i
        probs = np.exp(logits - logits.max())
        out.append(float(probs[logits > logits[token]].sum() / probs.sum()))
    return out


@pytest.mark.slow
def test_chat_sampling_honours_top_k_and_top_p(runs):
    root, run_dir, trained, pipeline = runs("chatml")
    mode = source_mode(trained.plan, run_dir, "pc")
    prompt = render_prompt(trained.tokenizer, mode, "what is two plus three")
    base = decoding(trained.plan, max_new_tokens=8)
    greedy = list(reply(trained, prompt, base, stops=[]))
    hot = lambda **kw: dataclasses.replace(base, sampling=Sampling(temperature=3.0, **kw))  # noqa: E731
    assert list(reply(trained, prompt, hot(top_k=1), stops=[])) == greedy
    assert list(reply(trained, prompt, hot(top_p=1e-6), stops=[])) == greedy
    free = [list(reply(trained, prompt, hot(), turn=t, stops=[])) for t in range(4)]
    assert any(tokens != greedy for tokens in free), "at temperature 3 the draws leave the greedy path"
    for t in range(4):  # each token drawn from the smallest set holding half the probability
        tokens = list(reply(trained, prompt, hot(top_p=0.5), turn=t, stops=[]))
        assert all(above < 0.5 for above in _mass_above(trained, prompt.ids, tokens, 3.0))
    # chat's first turn is `sftc generate`'s draw for the same prompt and seed
    [(ids, _)] = answers(trained, [prompt], hot(top_p=0.9))
    assert list(reply(trained, prompt, hot(top_p=0.9), stops=stop_ids(trained.tokenizer))) == ids


def test_rows_that_cannot_be_prompts_say_why(runs, capsys):
    root, run_dir, trained, _ = runs("chatml")
    tok = trained.tokenizer
    with pytest.raises(PromptError, match="holds its conversation in the column 'dialog'"):
        render_prompt(tok, source_mode(trained.plan, run_dir, "conv"), {"messages": []})
    with pytest.raises(PromptError, match="turn 0: message has no role"):
        render_prompt(tok, source_mode(trained.plan, run_dir, "plain"), {"messages": [{"content": "hi"}]})
    bad = root / "bad.jsonl"
    bad.write_text('{"q": "two"}\n{"a": "three"}\n')
    assert main(["generate", str(run_dir), "--file", str(bad), "--source", "pc"]) == 1
    assert f"{bad}:2: column 'q': missing column 'q'" in capsys.readouterr().err


@pytest.mark.slow
def test_a_second_generate_process_compiles_nothing(runs, tmp_path):
    """`sftc generate` in fresh processes: the first writes its executables to the compilation cache
    under the sftc cache directory, the second reads every one back (no new entry) and answers the same."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    _, run_dir, _, _ = runs("chatml")
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    env["SFTC_CACHE"] = str(tmp_path / "cache")
    command = [str(Path(sys.executable).parent / "sftc"), "generate", str(run_dir), "--prompt", "one two", "--json"]
    entries = lambda: sorted(p.name for p in (tmp_path / "cache" / "xla").glob("*-cache"))  # noqa: E731
    first = subprocess.run(command, capture_output=True, text=True, env=env)
    assert first.returncode == 0, first.stderr
    written = entries()
    assert any(name.startswith("jit__generate_jit-") for name in written)
    second = subprocess.run(command, capture_output=True, text=True, env=env)
    assert second.returncode == 0, second.stderr
    assert entries() == written
    assert json.loads(second.stdout) == json.loads(first.stdout)
