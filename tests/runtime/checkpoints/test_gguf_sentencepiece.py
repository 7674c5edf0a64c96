"""The GGUF export of a run whose tokenizer sftc trained itself, as specs/quickstart.sft does
(`train sentencepiece(..., model_type = bpe)`, with sftc's default chat template): the `llama`
(SentencePiece) vocabulary path of `runtime.checkpoints.gguf_export`, read back by others than sftc.

A tiny chat run (`sftc run`, 30 steps) is exported with `sftc export --format gguf` as f16 and q8_0
(each export's own check passes: exit 0). Then:

- transformers' GGUF loader (`AutoTokenizer.from_pretrained(dir, gguf_file=...)`) gives the run's
  ids, BOS included, on ASCII, digits, JSON, accents and characters the vocabulary lacks (byte
  fallback: an emoji, CJK). It does not on text that starts with a space or follows a special token
  inside a text: its `llama` builder prepends the SentencePiece space once per text (Metaspace
  `first`), where the run's tokenizer, like SentencePiece and llama.cpp, prepends it to every piece
  of text between special tokens (`</s>\\n` -> `</s> ▁ \\n`). Nothing in a GGUF says which a
  reader should do, so those texts are printed here, not compared;
- llama.cpp (llama-cpp-python) gives the run's ids on all those texts and on each rendered eval
  prompt (`special=True`, no BOS: chat prompts are tokenized without one), detokenizes them back,
  renders the chat template from the file's metadata as training does, answers every eval prompt
  greedily as sftc's evaluation does (f16 and q8_0), token for token from the prompt's ids and in
  text through `create_chat_completion`, and stops on `</s>`; its logits are sftc's within the
  rounding of f16 / q8_0. (llama-cpp-python's chat adds no BOS to a Jinja template's text, as
  training did not; the GGUF says `add_bos_token = true`, as the run's tokenizer adds one to a text.)

And the unigram model `train sentencepiece` trains by default is refused with a message naming
`model_type = bpe`: llama.cpp tokenizes every `llama` vocabulary as SentencePiece BPE (merges by
score), which gave other ids than the run's for 204 of 206 texts (measured with llama.cpp).

Slow (a run and two exports with their checks: 41 s on 2 cores shared with a CI run). The
llama.cpp part is skipped when llama-cpp-python is not installed, except in CI (`CI` set: `.ci/run`
installs it), where that fails."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from sftlang.cli import main

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]
QUANTS = ("f16", "q8_0")
MAX_NEW = 16  # the answers below end on </s> after about 5 tokens
EOS = 2  # </s>: the trained tokenizer's EOS, the stop of sftc's default chat template
# texts every reader must tokenize as the run does: ASCII, digits, JSON, accents, and characters
# the vocabulary lacks (the emoji, the CJK): byte pieces
TEXTS = [
    "Hi, where is my order? It was supposed to arrive last week.",
    "Order 12345 arrived 2024-05-01, it cost $3.50 (x2)!",
    '{"intent":"refund","order_id":"48213","product":null,"urgency":"high"}',
    "café naïve déjà vu, Zoë",
    "thanks 🙂 漢字",
]
# ... and texts where transformers' GGUF loader differs from the run (and llama.cpp does not)
SPACED = ["  two leading spaces,\n\n\ta tab and   a run of spaces", "<|user|>\nhi</s>\n<|assistant|>\n"]

SPEC = """sft "sp"
model {
    base      = init llama(layers = 2, dim = 64, heads = 4, ffn = 128, max_seq_len = 256)
    tokenizer = train sentencepiece(vocab = 400, model_type = bpe, split_digits = on) on support
    dtype     = float32
}
data support = jsonl("train.jsonl") {
    split eval = jsonl("eval.jsonl")
}
template extract for support {
    prompt     = "{message}"
    completion = "{answer}"
    chat       = on
}
train {
    data      = support
    steps     = 30
    batch     = 8
    seq_len   = 192
    optimizer = adamw(lr = 3e-3)
}
eval {
    generate = greedy(max_new_tokens = MAX_NEW)
    samples  = 2
}
output {
    dir    = "runs/{name}"
    export = none
}
"""


def _llama_cpp_or_skip():
    try:
        import llama_cpp
    except ImportError:
        why = "llama-cpp-python is not installed (pip install llama-cpp-python==0.3.36: it compiles llama.cpp)"
        if os.environ.get("CI"):
            pytest.fail(f"CI needs llama.cpp for the GGUF test: {why}")
        pytest.skip(why)
    return llama_cpp


def _support_rows(name: str, n: int) -> list[str]:
    return (ROOT / "specs" / "data" / name).read_text().splitlines(keepends=True)[:n]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The run (trained sentencepiece BPE, default chat template), its f16 and q8_0 GGUF exports,
    its eval prompts as training tokenized them, the conversations they render, sftc's greedy answers."""
    from runtime.evaluate.answers import answer_ids, sampling_for, select_prompts
    from runtime.evaluate.final import gguf_file
    from runtime.runs.trained_run import load_trained

    root = tmp_path_factory.mktemp("sentencepiece")
    (root / "train.jsonl").write_text("".join(_support_rows("support-train.jsonl", 300)))
    eval_rows = _support_rows("support-eval.jsonl", 2)
    (root / "eval.jsonl").write_text("".join(eval_rows))
    (root / "sp.sft").write_text(SPEC.replace("MAX_NEW", str(MAX_NEW)))
    with pytest.MonkeyPatch.context() as mp:  # cwd and SFTC_CACHE restored even when a step fails
        mp.chdir(root)
        mp.setenv("SFTC_CACHE", str(root / "cache"))
        assert main(["run", "sp.sft"]) == 0
        (run_dir,) = sorted((root / "runs" / "sp").iterdir())
        files = {}
        for quant in QUANTS:
            out = root / f"out-{quant}"
            # exit 0: sftc's own check (its GGUF reader: logits, template, eval prompts' ids, stops) passed
            assert main(["export", str(run_dir), "--format", "gguf", "--quant", quant, str(out)]) == 0
            files[quant] = gguf_file(out, quant)
        trained = load_trained(run_dir)
        chosen = select_prompts(trained.with_data().pipeline, None)
    prompts = [prompt.tolist() for _, prompt, _ in chosen]
    answers = answer_ids(
        trained.model, trained.tokenizer, prompts, MAX_NEW, sampling_for(trained.plan.eval.generate), 0
    )
    conversations = [
        [{"role": "user", "content": json.loads(eval_rows[int(ex.line) - 1])["message"]}] for ex, _, _ in chosen
    ]
    return SimpleNamespace(
        tokenizer=trained.tokenizer,
        model=trained.model,
        files=files,
        prompts=prompts,
        answers=answers,
        conversations=conversations,
    )


@pytest.fixture(scope="module")
def llamas(run):
    """quant -> llama.cpp's model of the file sftc's export wrote."""
    llama_cpp = _llama_cpp_or_skip()
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    # one thread, prompts included: llama.cpp's OpenMP threads spin while they wait (see test_gguf_llama_cpp.py)
    return {
        quant: llama_cpp.Llama(
            model_path=str(path), n_ctx=256, n_threads=1, n_threads_batch=1, seed=0, logits_all=True, verbose=False
        )
        for quant, path in run.files.items()
    }


def test_the_run_trains_the_tokenizer_the_quickstart_does(run):
    tokenizer = run.tokenizer
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.eos_token_id) == ("<s>", "</s>", EOS)
    from runtime.data.prompts import stop_ids

    assert stop_ids(tokenizer) == [EOS]
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    assert state["model"]["type"] == "BPE" and state["model"]["byte_fallback"]
    # the emoji and the CJK characters are not in the vocabulary: byte pieces
    pieces = tokenizer.convert_ids_to_tokens(tokenizer(TEXTS[-1])["input_ids"])
    assert "<0xF0>" in pieces and "<0xE6>" in pieces, pieces
    for ids, (answer, finished) in zip(run.prompts, run.answers):
        assert ids[0] != tokenizer.bos_token_id, "chat prompts are tokenized without BOS"
        assert finished and 0 < len(answer) < MAX_NEW, "sftc's answer ends on </s> within MAX_NEW tokens"


def test_transformers_gguf_tokenizer_gives_the_runs_ids(run):
    from transformers import AutoTokenizer

    tokenizer = run.tokenizer
    path = run.files["f16"]
    theirs = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    assert theirs.chat_template == tokenizer.chat_template
    assert (theirs.bos_token, theirs.eos_token, theirs.unk_token) == ("<s>", "</s>", "<unk>")
    for text in TEXTS:
        ids = tokenizer(text)["input_ids"]
        assert ids[0] == tokenizer.bos_token_id  # the run's tokenizer adds BOS to a text, as the GGUF says
        assert theirs(text)["input_ids"] == ids, text
        assert theirs.decode(ids, skip_special_tokens=True) == text
    for text in SPACED:  # see the module docstring: not compared
        ours, other = tokenizer(text)["input_ids"], theirs(text)["input_ids"]
        print(f"transformers' GGUF tokenizer on {text!r}: {'the same ids' if ours == other else 'other ids'}")
        if ours != other:
            print(f"  run:          {tokenizer.convert_ids_to_tokens(ours)}")
            print(f"  transformers: {tokenizer.convert_ids_to_tokens(other)}")


def test_llama_cpp_tokenizes_and_renders_as_training_does(run, llamas):
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    tokenizer = run.tokenizer
    llm = llamas["f16"]
    assert llm.chat_format == "chat_template.default"  # the file's own Jinja template
    metadata = llm.metadata
    assert metadata["tokenizer.ggml.model"] == "llama" and metadata["tokenizer.ggml.add_bos_token"] == "true"
    assert llm.token_bos() == tokenizer.bos_token_id and llm.token_eos() == EOS
    for text in TEXTS + SPACED:
        ids = tokenizer(text)["input_ids"]
        special = "</s>" in text
        assert llm.tokenize(text.encode(), add_bos=True, special=special) == ids, text
        assert llm.detokenize(ids, special=special).decode() == tokenizer.decode(ids, skip_special_tokens=not special)
        if not special:
            assert llm.detokenize(ids).decode() == text
    template = metadata["tokenizer.chat_template"]
    assert template == tokenizer.chat_template
    render = Jinja2ChatFormatter(
        template=template, bos_token="<s>", eos_token="</s>"
    )  # what create_chat_completion uses
    for ids, messages in zip(run.prompts, run.conversations):
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert text.startswith("<|user|>\n") and text.endswith("</s>\n<|assistant|>\n")
        assert tokenizer(text, add_special_tokens=False)["input_ids"] == ids  # how training tokenized it
        assert render(messages=messages).prompt == text
        assert llm.tokenize(text.encode(), add_bos=False, special=True) == ids


def _greedy(llm, prompt: list[int]) -> tuple[list[int], bool]:
    """llama.cpp's greedy tokens after ``prompt`` up to </s> (not included), and whether it stopped there."""
    out: list[int] = []
    for token in llm.generate(prompt, temp=0.0, repeat_penalty=1.0, reset=True):  # temp 0: llama.cpp's greedy sampler
        if token == EOS:
            return out, True
        if len(out) == MAX_NEW:
            return out, False
        out.append(int(token))
    return out, False


@pytest.mark.parametrize("quant", QUANTS)
def test_llama_cpp_answers_like_sftc_and_stops_on_eos(quant, run, llamas):
    tokenizer = run.tokenizer
    llm = llamas[quant]
    for ids, (ours, _), messages in zip(run.prompts, run.answers, run.conversations):
        theirs, stopped = _greedy(llm, ids)
        completion = llm.create_completion(prompt=ids, max_tokens=MAX_NEW, temperature=0.0, seed=0)["choices"][0]
        assert llm.input_ids[: len(ids)].tolist() == ids  # no BOS added to a prompt given as ids
        chat = llm.create_chat_completion(messages, max_tokens=MAX_NEW, temperature=0.0, seed=0)["choices"][0]
        # the file's template, rendered and tokenized by llama-cpp-python: training's prompt, no BOS
        assert llm.input_ids[: len(ids)].tolist() == ids
        text = tokenizer.decode(ours, skip_special_tokens=True)
        print(f"{quant}: sftc {text!r} | llama.cpp {completion['text']!r}, chat {chat['message']['content']!r}")
        assert theirs == ours and stopped
        for answer, finish in (
            (completion["text"], completion["finish_reason"]),
            (chat["message"]["content"], chat["finish_reason"]),
        ):
            assert answer == text and finish == "stop"


@pytest.mark.parametrize("quant", QUANTS)
def test_llama_cpp_logits_are_sftcs_within_the_rounding(quant, run, llamas):
    from runtime.evaluate.export_check import GGUF_LOGITS

    llm = llamas[quant]
    for ids in run.prompts[:2]:
        ours = np.asarray(run.model(np.array([ids])), np.float32)[0]
        llm.reset()
        llm.eval(ids)
        theirs = np.asarray(llm.scores[: len(ids)], np.float32)
        share = float(np.abs(ours - theirs).max() / np.abs(ours).max())
        print(f"{quant}: llama.cpp vs sftc, max |Δ logit| {share:.3%} of the largest over {len(ids)} positions")
        assert share < {"f16": 0.01, "q8_0": GGUF_LOGITS["q8_0"]}[quant]
        assert int(theirs[-1].argmax()) == int(ours[-1].argmax())


def test_a_unigram_sentencepiece_tokenizer_is_refused(tmp_path):
    from runtime.checkpoints.gguf_export import GgufExportError, gguf_vocab
    from runtime.checkpoints.tokenizer_files import train_sentencepiece

    rows = [json.loads(line) for line in _support_rows("support-train.jsonl", 300)]
    tokenizer = train_sentencepiece([r["message"] for r in rows], 400, tmp_path / "tok")  # unigram: the default
    with pytest.raises(GgufExportError, match=r"unigram.*model_type = bpe"):
        gguf_vocab(tokenizer, len(tokenizer))
