"""Standard benchmarks on sftc's own model: lm-evaluation-harness tasks scored by `SftcLM` give,
request by request, what lm_eval's own Hugging Face backend (`HFLM`) gives on the same weights;
the shipped tasks (specs/benchmarks) run from any working directory; a wrong task name is refused
before the model is asked anything."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("lm_eval")

from runtime.evaluate.benchmarks import (  # noqa: E402
    INSTALL,
    BenchmarkError,
    BenchmarkResult,
    LmEvalMissingError,
    UnknownTaskError,
    _read_results,
    evaluate_lm,
    run_benchmarks,
)
from runtime.plan.run_plan import BenchmarkPlan  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
SHIPPED = ROOT / "specs" / "benchmarks"
TASKS = ("sftc_general_mc", "sftc_arith_gen")
PLAN = BenchmarkPlan(tasks=TASKS, include=str(SHIPPED), limit=12, batch_size=64)  # one compile per request kind
TOLERANCE = 1e-4  # a log-likelihood, float32, against transformers on the same weights


def _tokenizer():
    """A byte-level BPE trained on the shipped tasks' text (any text encodes; no download), adding
    a BOS like Llama's tokenizers, so lm_eval's BOS rules are exercised."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    texts = ["Question: Answer: Q: A:\n"] * 10
    for path in sorted(SHIPPED.glob("*.jsonl")):
        texts += [" ".join(map(str, json.loads(line).values())) for line in path.read_text().splitlines()]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]),
        ]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(directory, sftc model, tokenizer): a random 2-layer Llama whose weights are drawn wide
    enough that its choices are far from ties, saved as transformers saves it."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from runtime.checkpoints.hf_checkpoint import load_pretrained

    torch.set_num_threads(1)  # tiny reference model: torch's thread pool would fight XLA's for the cores
    directory = tmp_path_factory.mktemp("tiny_llama")
    tokenizer = _tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    reference = LlamaForCausalLM(config).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in reference.named_parameters():
            p.copy_((1.0 if name.endswith("norm.weight") else 0.0) + 0.25 * torch.randn(p.shape, generator=gen))
    reference.save_pretrained(directory)
    tokenizer.save_pretrained(str(directory))
    model, _ = load_pretrained(directory, dtype="float32")
    return directory, model, AutoTokenizer.from_pretrained(directory)


@pytest.fixture(scope="module")
def both(tiny, tmp_path_factory):
    """The shipped tasks (12 documents each) scored by sftc and by HFLM, run from another directory."""
    from lm_eval.models.huggingface import HFLM

    directory, model, tokenizer = tiny
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path_factory.mktemp("elsewhere"))  # the tasks' data files are found from anywhere
        ours = run_benchmarks(model, tokenizer, PLAN, log_samples=True)
        hflm = HFLM(pretrained=str(directory), device="cpu", dtype="float32", batch_size=PLAN.batch_size)
        theirs = evaluate_lm(hflm, PLAN, log_samples=True)
    return ours, theirs


def _answers(sample: dict) -> list:
    return [resp[0] for resp in sample["resps"]]


def test_loglikelihoods_equal_hflms_request_by_request(both):
    ours, theirs = both
    task = "sftc_general_mc"
    assert ours.documents[task] == theirs.documents[task] == 12
    assert len(ours.samples[task]) == 12
    for mine, ref in zip(ours.samples[task], theirs.samples[task], strict=True):
        assert mine["arguments"] == ref["arguments"]  # the same (context, continuation) requests, in order
        assert len(mine["arguments"]) == 4  # four choices
        ll, ref_ll = np.array([a[0] for a in _answers(mine)]), np.array([a[0] for a in _answers(ref)])
        np.testing.assert_allclose(ll, ref_ll, rtol=0, atol=TOLERANCE)
        assert [a[1] for a in _answers(mine)] == [a[1] for a in _answers(ref)]  # is_greedy
        assert (mine["acc"], mine["acc_norm"]) == (ref["acc"], ref["acc_norm"])
    assert ours.scores[task] == theirs.scores[task]
    assert set(ours.scores[task]) == {"acc", "acc_norm"}
    assert ours.higher_is_better[task] == {"acc": True, "acc_norm": True}
    assert ours.stderr[task]["acc"] == pytest.approx(theirs.stderr[task]["acc"])


def test_generations_equal_hflms(both):
    ours, theirs = both
    task = "sftc_arith_gen"
    assert ours.documents[task] == 12
    for mine, ref in zip(ours.samples[task], theirs.samples[task], strict=True):
        assert mine["arguments"] == ref["arguments"]
        assert mine["arguments"][0][1] == {"until": ["\n"], "do_sample": False, "max_gen_toks": 8}
        assert mine["resps"] == ref["resps"]  # the decoded answer, cut at the first "\n"
        assert mine["exact_match"] == ref["exact_match"]
    assert ours.scores[task] == theirs.scores[task] and set(ours.scores[task]) == {"exact_match"}


def test_values_are_named_as_gates_write_them_and_survive_json(both):
    ours, _ = both
    values = ours.values()
    assert set(values) == {"acc(sftc_general_mc)", "acc_norm(sftc_general_mc)", "exact_match(sftc_arith_gen)"}
    assert values["acc(sftc_general_mc)"] == ours.scores["sftc_general_mc"]["acc"]
    again = BenchmarkResult.from_dict(json.loads(json.dumps(ours.to_dict(), allow_nan=False)))
    assert again == ours


def test_loglikelihood_rolling_equals_hflms_across_windows(tiny):
    """Texts scored whole (perplexity tasks), one of them several windows of ``max_length`` long."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from runtime.evaluate.lm_eval_model import SftcLM

    directory, model, tokenizer = tiny
    texts = [
        "What is 7 plus 5?",
        "Which planet do we live on? Earth. How many legs does a spider have? Eight, and they spin silk.",
        "Question: What do bees make?\nAnswer: honey",
    ]
    assert len(tokenizer(texts[1]).input_ids) > 3 * 16  # rolls over four windows
    requests = [
        Instance(request_type="loglikelihood_rolling", doc={}, arguments=(t,), idx=i) for i, t in enumerate(texts)
    ]
    ours = SftcLM(model, tokenizer, batch_size=4, max_length=16).loglikelihood_rolling(requests)
    hflm = HFLM(pretrained=str(directory), device="cpu", dtype="float32", batch_size=4, max_length=16)
    theirs = hflm.loglikelihood_rolling(requests, disable_tqdm=True)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=TOLERANCE)


def test_an_unknown_task_is_refused_before_the_model_is_asked(tiny, monkeypatch):
    """Named with the include folder and the close names. (lm_eval's ~15k built-in tasks take ~10 s to
    index: here only the include folder's are; `test_a_misspelt_built_in_task_is_named` has them all.)"""
    from runtime.evaluate import benchmarks

    _, _, tokenizer = tiny
    only_included = benchmarks._task_manager
    monkeypatch.setattr(benchmarks, "_task_manager", lambda include, defaults: only_included(include, False))
    plan = BenchmarkPlan(tasks=("sftc_general_mc", "sftc_general_mcq"), include=str(SHIPPED))
    with pytest.raises(UnknownTaskError) as caught:
        run_benchmarks(object(), tokenizer, plan)  # not a model: asking it anything would fail otherwise
    message = str(caught.value)
    assert message == (
        f"benchmarks: no lm_eval task 'sftc_general_mcq' in the include folder {SHIPPED} or lm_eval's "
        "built-in tasks; close names: sftc_general_mc"
    )
    assert isinstance(caught.value, ValueError) and caught.value.help


@pytest.mark.slow
def test_a_misspelt_built_in_task_is_named_with_its_close_names(tiny):
    _, _, tokenizer = tiny
    with pytest.raises(UnknownTaskError, match=r"no lm_eval task 'arc_eazy' in lm_eval's built-in tasks; "):
        run_benchmarks(object(), tokenizer, BenchmarkPlan(tasks=("arc_eazy",)))
    with pytest.raises(UnknownTaskError, match=r"close names: .*\barc_easy\b"):
        run_benchmarks(object(), tokenizer, BenchmarkPlan(tasks=("arc_eazy",)))


def test_a_hub_dataset_offline_is_named_with_what_to_do(tmp_path, monkeypatch):
    """A task whose dataset is on the hub, with HF_HUB_OFFLINE set and nothing cached: one clear error
    (not a traceback from datasets), before any model call."""
    (tmp_path / "hub_task.yaml").write_text(
        "task: sftc_hub_task\ndataset_path: sftc-tests/no-such-dataset\noutput_type: multiple_choice\n"
        "test_split: test\ndoc_to_text: q\ndoc_to_target: 0\ndoc_to_choice: ['a', 'b']\n"
    )
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BenchmarkError) as caught:
        evaluate_lm(None, BenchmarkPlan(tasks=("sftc_hub_task",), include=str(tmp_path)))
    message = str(caught.value)
    assert message.startswith(
        "benchmarks: the lm_eval task 'sftc_hub_task' needs its dataset from the Hugging Face hub, which is not "
        "in the datasets cache, and offline mode is on (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE)"
    )
    assert "unset HF_HUB_OFFLINE" in caught.value.help


def test_without_lm_eval_the_error_says_what_to_install(monkeypatch, tiny):
    _, model, tokenizer = tiny
    monkeypatch.setitem(__import__("sys").modules, "lm_eval", None)
    with pytest.raises(LmEvalMissingError) as caught:
        run_benchmarks(model, tokenizer, PLAN)
    assert caught.value.help == INSTALL == "pip install 'sftc[lm_eval]'"


def test_one_rule_for_metric_keys_filters_stderr_and_groups():
    """``metric,filter``: the value under ``none`` when there is one, else the first filter's; a group
    gives its own aggregate beside its subtasks'; NaN survives JSON as a string."""
    results = {
        "results": {
            "sub_a": {"alias": "a", "acc,none": 0.5, "acc_stderr,none": 0.1, "em,strict": 0.2, "em,flex": 0.3},
            "sub_b": {"alias": "b", "acc,none": 0.7, "acc_stderr,none": "N/A", "em,flex": 0.4, "em,none": 0.6},
            "ppl": {"word_perplexity,none": math.nan, "word_perplexity_stderr,none": "N/A"},
        },
        "groups": {"grp": {"alias": "grp", "acc,none": 0.6, "acc_stderr,none": 0.05}},
        "group_subtasks": {"grp": ["sub_a", "sub_b"]},
        "higher_is_better": {"sub_a": {"acc": True, "em": True}, "ppl": {"word_perplexity": False}},
        "n-samples": {"sub_a": {"original": 10, "effective": 4}, "sub_b": {"original": 6, "effective": 6}},
    }
    result = _read_results(results)
    assert result.scores["sub_a"] == {"acc": 0.5, "em": 0.2}  # no `none` filter: the first one
    assert result.scores["sub_b"] == {"acc": 0.7, "em": 0.6}  # `none` wins wherever it is
    assert result.scores["grp"] == {"acc": 0.6}
    assert result.stderr == {"sub_a": {"acc": 0.1}, "sub_b": {}, "ppl": {}, "grp": {"acc": 0.05}}
    assert result.documents == {"sub_a": 4, "sub_b": 6, "ppl": 0, "grp": 10}
    assert result.higher_is_better["ppl"] == {"word_perplexity": False}
    assert result.higher_is_better["sub_b"]["acc"] is True  # lm_eval's registry where the report has none
    text = json.dumps(result.to_dict(), allow_nan=False)
    assert '"word_perplexity": "nan"' in text
    assert math.isnan(BenchmarkResult.from_dict(json.loads(text)).values()["word_perplexity(ppl)"])


@pytest.mark.slow
def test_smollm2_scores_the_shipped_tasks_as_hflm_does(smollm2_gguf):
    """The real SmolLM2-135M-Instruct (Q4_1 GGUF), read by sftc and by transformers (``gguf_file=``):
    every request of the first 24 documents of both shipped tasks (all of them take about 3 minutes
    on 2 cores; CI's budget is tight, and these 24 cover both request kinds with real text)."""
    import torch
    from lm_eval.models.huggingface import HFLM

    from runtime.checkpoints.hf_checkpoint import load_pretrained, resolve_checkpoint
    from runtime.checkpoints.tokenizer_files import load_tokenizer

    torch.set_num_threads(2)
    plan = BenchmarkPlan(tasks=TASKS, include=str(SHIPPED), limit=24, batch_size=16)
    model, _ = load_pretrained(smollm2_gguf, dtype="float32")
    ours = run_benchmarks(model, load_tokenizer(resolve_checkpoint(smollm2_gguf)), plan, log_samples=True)
    del model
    hflm = HFLM(
        pretrained=str(smollm2_gguf.parent),
        gguf_file=smollm2_gguf.name,
        device="cpu",
        dtype="float32",
        batch_size=16,
    )
    theirs = evaluate_lm(hflm, plan, log_samples=True)
    print(f"SmolLM2-135M-Instruct: {ours.values()}")
    assert ours.documents == {"sftc_general_mc": 24, "sftc_arith_gen": 24}
    gap = 0.0
    for mine, ref in zip(ours.samples["sftc_general_mc"], theirs.samples["sftc_general_mc"], strict=True):
        ll, ref_ll = np.array([a[0] for a in _answers(mine)]), np.array([a[0] for a in _answers(ref)])
        gap = max(gap, float(np.abs(ll - ref_ll).max()))
        assert [a[1] for a in _answers(mine)] == [a[1] for a in _answers(ref)]
    print(f"max |log-likelihood diff| vs HFLM: {gap:.2e}")
    # 1.2e-4 measured: float32 rounding over 30 layers (logits differ by up to 2.4e-4, see
    # test_gguf_checkpoint.py), summed over a choice's tokens; not a wrong weight or token
    assert gap < 5e-4
    for mine, ref in zip(ours.samples["sftc_arith_gen"], theirs.samples["sftc_arith_gen"], strict=True):
        assert mine["resps"] == ref["resps"]
    assert ours.scores == theirs.scores
    assert ours.scores["sftc_general_mc"]["acc"] > 0.5  # easy questions: a pretrained model knows most
