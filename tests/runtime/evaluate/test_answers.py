"""Eval generation: prompts exactly as in training, rows spread over sources, stop tokens
stripped, and batched generation equal to one prompt at a time."""

from __future__ import annotations

import random

import numpy as np
import pytest

from runtime.data.pipeline import build_pipeline
from runtime.evaluate import Sample, generate_eval, select_prompts, stop_ids
from runtime.models import ModelConfig, build, generate
from runtime.plan.data_plan import DataPlan, EvalSplit, SourceSpec, TemplateSpec
from runtime.plan.run_plan import GenerationPlan
from tests.runtime.data_helpers import CHATML, WORDS, wordlevel_tokenizer, write_jsonl

PC = TemplateSpec(prompt="question : {q} answer :", completion=" {a}")
GREEDY = GenerationPlan(greedy=True, max_new_tokens=6)


def rows(n, seed):
    rnd = random.Random(seed)
    words = WORDS[14:70]
    return [
        {
            "q": " ".join(rnd.choice(words) for _ in range(rnd.randint(1, 9))),
            "a": " ".join(rnd.choice(words) for _ in range(rnd.randint(1, 4))),
        }
        for _ in range(n)
    ]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("evalgen")
    tok = wordlevel_tokenizer()
    specs = (
        SourceSpec(
            name="a",
            kind="jsonl",
            paths=(write_jsonl(str(tmp / "a.jsonl"), rows(40, 1)),),
            eval=EvalSplit(fraction=0.2, seed=3),
        ),
        SourceSpec(
            name="b",
            kind="jsonl",
            paths=(write_jsonl(str(tmp / "b.jsonl"), rows(10, 2)),),
            eval=EvalSplit(fraction=0.2, seed=3),
        ),
    )
    plan = DataPlan(sources=specs, templates={"a": PC, "b": PC}, seq_len=48, global_batch_size=4, epochs=1)
    pipeline = build_pipeline(plan, tok, cache_dir=str(tmp / "c"))
    # weights drawn wide (std 0.3) so greedy choices are far from ties
    config = ModelConfig.llama(layers=2, dim=64, heads=4, kv_heads=2, ffn=128, vocab=len(tok), initializer_range=0.3)
    model = build(config, rngs=0)
    return tok, pipeline, model


def test_rows_are_spread_over_sources_in_row_order(setup):
    tok, pipeline, _ = setup
    a, b = pipeline.eval_prompts("a"), pipeline.eval_prompts("b")
    assert (len(a), len(b)) == (8, 2)
    chosen = select_prompts(pipeline, 5)
    assert [(ex.source, ex.row) for ex, _, _ in chosen] == [
        ("a", a[0][0].row),
        ("b", b[0][0].row),
        ("a", a[1][0].row),
        ("b", b[1][0].row),
        ("a", a[2][0].row),
    ]
    every = select_prompts(pipeline, None)
    assert len(every) == 10 and [ex.source for ex, _, _ in every][4:] == ["a"] * 6
    assert len(select_prompts(pipeline, 100)) == 10


def test_batched_equals_one_by_one_and_prompts_are_the_training_prompts(setup):
    tok, pipeline, model = setup
    # 7 rows in batches of 3: the last batch is short (filled with copies, which must not leak)
    batched = generate_eval(model, tok, pipeline, GREEDY, samples=7, seed=0, batch_size=3)
    single = generate_eval(model, tok, pipeline, GREEDY, samples=7, seed=0, batch_size=1)
    assert batched == single
    assert len(batched) == 7 and all(isinstance(s, Sample) for s in batched)
    for s, (ex, prompt, ref) in zip(batched, select_prompts(pipeline, 7)):
        assert (s.source, s.file, s.line) == (ex.source, ex.file, ex.line)
        assert s.prompt == tok.decode(prompt.tolist())
        assert s.prompt.startswith("<s> question :") and s.prompt.endswith("answer :")
        assert ref[-1] == tok.eos_token_id and s.reference == tok.decode(ref[:-1].tolist())
        raw = generate(model, [prompt.tolist()], 6, eos_ids=[tok.eos_token_id])[0]
        assert s.generated == tok.decode(raw, skip_special_tokens=True)


def test_generation_stops_at_the_stop_token_and_strips_it(setup):
    tok, pipeline, model = setup
    free = generate_eval(model, tok, pipeline, GREEDY, samples=10, batch_size=4, eos_ids=[])
    assert all(s.tokens == 6 and not s.finished for s in free)
    raw = [generate(model, [p.tolist()], 6)[0] for _, p, _ in select_prompts(pipeline, 10)]
    # stop on the most frequent generated token: rows that produce it end there, without it
    counts = np.bincount(np.concatenate(raw))
    stop = int(counts.argmax())
    stopped = generate_eval(model, tok, pipeline, GREEDY, samples=10, batch_size=4, eos_ids=[stop])
    assert any(s.finished for s in stopped) and not all(s.finished for s in stopped)
    for tokens, f, s in zip(raw, free, stopped):
        if stop in tokens:
            cut = tokens.index(stop)
            assert s.finished and s.tokens == cut
            assert s.generated == tok.decode(tokens[:cut], skip_special_tokens=True)
        else:
            assert not s.finished and s == f


def test_stop_ids_are_what_references_end_with(setup, tmp_path):
    tok = wordlevel_tokenizer(CHATML)
    conv = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "ok bye"}]
    path = write_jsonl(str(tmp_path / "m.jsonl"), [{"messages": conv}] * 2)
    plan = DataPlan(
        sources=(SourceSpec(name="m", kind="jsonl", paths=(path,), eval=EvalSplit(fraction=0.5, seed=0)),),
        seq_len=64,
        global_batch_size=1,
    )
    [(_, _, chat_ref)] = build_pipeline(plan, tok, cache_dir=str(tmp_path / "c")).eval_prompts()
    assert stop_ids(tok) == sorted({tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")})
    assert chat_ref[-1] in stop_ids(tok)
    plain, pipeline = setup[0], setup[1]
    assert stop_ids(plain) == [plain.eos_token_id]
    assert all(ref[-1] in stop_ids(plain) for _, _, ref in pipeline.eval_prompts())


def test_chat_reference_drops_the_end_of_turn(setup, tmp_path):
    model = setup[2]  # same vocabulary: the chat template adds no tokens
    tok = wordlevel_tokenizer(CHATML)
    conv = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "ok bye"}]
    path = write_jsonl(str(tmp_path / "m.jsonl"), [{"messages": conv}] * 2)
    plan = DataPlan(
        sources=(SourceSpec(name="m", kind="jsonl", paths=(path,), eval=EvalSplit(fraction=0.5, seed=0)),),
        seq_len=64,
        global_batch_size=1,
    )
    pipeline = build_pipeline(plan, tok, cache_dir=str(tmp_path / "c"))
    [s] = generate_eval(model, tok, pipeline, GREEDY, samples=None)
    assert s.reference == "ok bye"
    assert s.prompt.endswith("<|im_start|> assistant")


def test_sampling_is_seeded(setup):
    tok, pipeline, model = setup
    hot = GenerationPlan(greedy=False, max_new_tokens=6, temperature=1.5, top_p=0.95, seed=0)
    a = generate_eval(model, tok, pipeline, hot, samples=4, batch_size=4)
    assert a == generate_eval(model, tok, pipeline, hot, samples=4, batch_size=4, seed=0)
    assert a != generate_eval(model, tok, pipeline, hot, samples=4, batch_size=4, seed=1)


def test_generations_to_gates_and_report(setup, tmp_path):
    from runtime.evaluate import accepted, compute_metrics, judge, write_report
    from runtime.plan.run_plan import GatePlan

    tok, pipeline, model = setup
    samples = generate_eval(model, tok, pipeline, GREEDY, samples=None, batch_size=4)
    gates = (
        GatePlan("rouge_l", ">=", 0.0, source="b", text="rouge_l(b)"),
        GatePlan("exact_match", ">=", 1.01, text="exact_match"),  # impossible
        GatePlan("max_tokens", "<=", 6, text="max_tokens"),
    )
    values = compute_metrics(samples, {None: {"loss": 5.0}, "a": {"loss": 5.1}, "b": {"loss": 4.9}}, gates=gates)
    verdicts = judge(gates, values)
    assert [v.passed for v in verdicts] == [True, False, True] and not accepted(verdicts)
    md, js = write_report(tmp_path, verdicts=verdicts, values=values, samples=samples, facts={"name": "tiny"})
    text = md.read_text()
    assert "rejected: 1 of 3 gates failed: exact_match >= 1.01" in text
    assert "Worst first by `exact_match` (failing gate), 10 of 10 samples." in text
