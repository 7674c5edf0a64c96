"""Packing, splits, mixtures, step-indexed order, overflow counts, tokenization cache."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import runtime.data.tokenize as tokenize_mod
from runtime.data.packing import pack_bfd
from runtime.data.pipeline import build_pipeline, eval_rows_for
from runtime.plan.data_errors import DataError, SequenceTooLongError
from runtime.plan.data_plan import DataPlan, EvalSplit, SourceSpec, TemplateSpec
from tests.runtime.data_helpers import WORDS, wordlevel_tokenizer, write_jsonl

PC = TemplateSpec(prompt="question : {q} answer :", completion=" {a}")


def random_rows(n, seed, max_q=12, max_a=6):
    rnd = random.Random(seed)
    words = WORDS[:60]
    return [
        {
            "q": " ".join(rnd.choice(words) for _ in range(rnd.randint(1, max_q))),
            "a": " ".join(rnd.choice(words) for _ in range(rnd.randint(1, max_a))),
            "id": i,
        }
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def tok():
    return wordlevel_tokenizer()


def make(tmp_path, tok, sources, **plan_kw):
    specs, templates = [], {}
    for name, rows, kw in sources:
        path = write_jsonl(str(tmp_path / f"{name}.jsonl"), rows)
        specs.append(SourceSpec(name=name, kind="jsonl", paths=(path,), **kw))
        templates[name] = PC
    base = dict(seq_len=32, packing=True, seed=1, global_batch_size=4, epochs=1)
    base.update(plan_kw)
    return build_pipeline(
        DataPlan(sources=tuple(specs), templates=templates, **base), tok, cache_dir=str(tmp_path / "c")
    )


# ------------------------------------------------------------------ bin packing


def brute_bfd(sizes, cap):
    bins, rem = [], []
    for i in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        best = -1
        for j, r in enumerate(rem):
            if r >= sizes[i] and (best < 0 or r < rem[best]):
                best = j
        if best < 0:
            bins.append([i])
            rem.append(cap - sizes[i])
        else:
            bins[best].append(i)
            rem[best] -= sizes[i]
    return bins


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 40).flatmap(lambda cap: st.tuples(st.just(cap), st.lists(st.integers(1, cap), max_size=60))))
def test_pack_bfd_equals_textbook_best_fit_decreasing(case):
    cap, sizes = case
    bins = pack_bfd(np.array(sizes, dtype=np.int64), cap)
    assert bins == brute_bfd(sizes, cap)
    assert sorted(i for b in bins for i in b) == list(range(len(sizes)))  # every item exactly once
    assert all(sum(sizes[i] for i in b) <= cap for b in bins)


# ------------------------------------------------------------------ batches


def test_every_token_lands_exactly_once_with_right_segments(tmp_path, tok):
    p = make(tmp_path, tok, [("a", random_rows(120, 0), {})], global_batch_size=3)
    seen = Counter()
    rows_total = 0
    for step in range(p.total_steps):
        b = p.batch(step)
        for r, gids in enumerate(p.batch_indices(step)):
            rows_total += len(gids) > 0
            at = 0
            for seg, g in enumerate(gids, start=1):
                seen[int(g)] += 1
                tokens, trained = p.example_arrays(int(g))
                n = len(tokens) - 1
                assert b["input_ids"][r, at : at + n].tolist() == tokens[:-1].tolist()
                assert b["targets"][r, at : at + n].tolist() == tokens[1:].tolist()
                assert b["loss_mask"][r, at : at + n].tolist() == trained[1:].tolist()
                assert b["positions"][r, at : at + n].tolist() == list(range(n))
                assert (b["segment_ids"][r, at : at + n] == seg).all()
                at += n
            assert (b["segment_ids"][r, at:] == 0).all() and (b["loss_mask"][r, at:] == 0).all()
            assert (b["input_ids"][r, at:] == tok.pad_token_id).all()
    assert seen == Counter(range(len(p.ex_table)))  # one epoch: each example exactly once
    assert rows_total == p.stats.rows_per_epoch
    positions = int((p.ex_keep - 1).sum())
    assert p.stats.efficiency == pytest.approx(positions / (p.stats.rows_per_epoch * 32))
    assert p.stats.efficiency > 0.9
    # masked tokens in batches == trained tokens reported
    total_mask = sum(float(p.batch(s)["loss_mask"].sum()) for s in range(p.total_steps))
    assert total_mask == p.stats.sources["a"].train_trained_tokens


def test_without_packing_one_example_per_padded_row(tmp_path, tok):
    p = make(tmp_path, tok, [("a", random_rows(10, 1), {})], packing=False, global_batch_size=4)
    assert p.total_steps == 3
    last = p.batch_indices(2)
    assert [len(r) for r in last] == [1, 1, 0, 0]  # 10 rows: the last batch is completed with empty rows
    b = p.batch(2)
    assert (b["segment_ids"][2:] == 0).all() and b["loss_mask"][2:].sum() == 0
    assert set(np.unique(b["segment_ids"][:2])) <= {0, 1}
    assert p.stats.efficiency == pytest.approx(float((p.ex_keep - 1).sum()) / (10 * 32))


# ------------------------------------------------------------------ order


def test_step_n_equals_replayed_order_and_is_seeded(tmp_path, tok):
    srcs = [("a", random_rows(50, 2), {}), ("b", random_rows(13, 3), {})]
    kw = dict(weights={"a": 0.5, "b": 0.5}, steps=40, epochs=None, global_batch_size=3)
    replay = make(tmp_path, tok, srcs, **kw)
    replayed = [replay.batch(s) for s in range(40)]
    fresh = make(tmp_path, tok, srcs, **kw)  # a "resumed" process
    for s in (39, 17, 0, 25):
        b = fresh.batch(s)
        for k in b:
            np.testing.assert_array_equal(b[k], replayed[s][k])
    other_seed = make(tmp_path, tok, srcs, **{**kw, "seed": 2})
    assert any(not np.array_equal(other_seed.batch(s)["input_ids"], replayed[s]["input_ids"]) for s in range(5))
    # epochs reshuffle
    assert replay.epoch_of_step(39) >= 1
    e0, e1 = replay.epoch_examples(0), replay.epoch_examples(1)
    assert sorted(e0.tolist()) != e0.tolist() and e0.tolist() != e1.tolist()


def test_mixture_weights_set_per_epoch_counts(tmp_path, tok):
    p = make(
        tmp_path,
        tok,
        [("a", random_rows(40, 4), {}), ("b", random_rows(10, 5), {})],
        weights={"a": 1.0, "b": 3.0},
        seq_len=64,
    )
    a_n = p.stats.sources["a"].train_examples
    b_n = p.stats.sources["b"].train_examples
    total = a_n + b_n
    for e in range(3):
        c = Counter(p.ex_owner[p.epoch_examples(e)].tolist())
        assert c[0] == round(0.25 * total) and c[1] == round(0.75 * total)
    # b is upsampled: whole passes plus a seeded remainder; every b example appears at least twice
    c = Counter(p.epoch_examples(0).tolist())
    b_ids = np.nonzero(p.ex_owner == 1)[0]
    assert min(c[int(i)] for i in b_ids) >= (round(0.75 * total) // b_n)
    assert p.stats.sources["b"].epoch_examples == round(0.75 * total)


def test_plain_concatenation_without_weights(tmp_path, tok):
    p = make(tmp_path, tok, [("a", random_rows(7, 6), {}), ("b", random_rows(5, 7), {})])
    assert sorted(p.epoch_examples(0).tolist()) == list(range(12))


def test_fractional_epochs(tmp_path, tok):
    p = make(tmp_path, tok, [("a", random_rows(40, 8), {})], packing=False, epochs=1.5, global_batch_size=4)
    assert p.total_rows == 60 and p.total_steps == 15


# ------------------------------------------------------------------ splits


def test_eval_split_is_deterministic_and_disjoint(tmp_path, tok):
    rows = random_rows(200, 9)
    p = make(tmp_path, tok, [("a", rows, dict(eval=EvalSplit(fraction=0.05, seed=7)))], seq_len=64)
    ev = [e.row for e in p.examples(split="eval")]
    tr = [e.row for e in p.examples(split="train")]
    assert len(ev) == 10 and not set(ev) & set(tr) and len(ev) + len(tr) == 200
    assert ev == eval_rows_for(200, 0.05, 7).tolist()
    again = make(tmp_path, tok, [("a", rows, dict(eval=EvalSplit(fraction=0.05, seed=7)))], seq_len=128, packing=False)
    assert [e.row for e in again.examples(split="eval")] == ev  # independent of seq_len / packing
    other = make(tmp_path, tok, [("a", rows, dict(eval=EvalSplit(fraction=0.05, seed=8)))], seq_len=64)
    assert [e.row for e in other.examples(split="eval")] != ev
    # eval rows never appear in training batches
    train_gids = {int(g) for s in range(p.total_steps) for r in p.batch_indices(s) for g in r}
    assert not train_gids & {int(g) for r in p.eval_rows() for g in r}
    batches = list(p.eval_batches(batch_size=4))
    assert sum(float(b["loss_mask"].sum()) for b in batches) == sum(
        float(e.trained[1:].sum()) for e in p.examples(split="eval")
    )
    prompts = p.eval_prompts("a")
    ex, prompt, ref = prompts[0]
    assert tok.decode(prompt.tolist()).startswith("<s> question") and ref[-1] == tok.eos_token_id


def test_eval_from_a_separate_source(tmp_path, tok):
    ev_path = write_jsonl(str(tmp_path / "ev.jsonl"), random_rows(6, 10))
    ev = EvalSplit(source=SourceSpec(name="ignored", kind="jsonl", paths=(ev_path,)))
    p = make(tmp_path, tok, [("a", random_rows(20, 11), dict(eval=ev))], seq_len=64)
    st = p.stats.sources["a"]
    assert (st.train_examples, st.eval_examples, st.rows) == (20, 6, 26)
    assert {e.file for e in p.examples(split="eval")} == {ev_path}


# ------------------------------------------------------------------ overflow


def overflow_rows():
    # row lengths in tokens: <s> question : q... answer : a... </s>
    short = {"q": "hello", "a": "hi"}  # 8 tokens -> 7 positions
    long_prompt = {"q": " ".join(["one"] * 20), "a": "hi"}  # 27 tokens: the answer is past position 10
    long_answer = {"q": "hello", "a": " ".join(["two"] * 20)}  # 27 tokens, the answer starts at token 6
    return [short, long_prompt, long_answer, short]


def test_overflow_drop_counts(tmp_path, tok):
    p = make(tmp_path, tok, [("a", overflow_rows(), dict(overflow="drop"))], seq_len=10)
    st = p.stats.sources["a"]
    assert (st.dropped_overflow, st.truncated, st.dropped_no_trainable, st.train_examples) == (2, 0, 0, 2)
    assert st.max_tokens == 27


def test_overflow_truncate_keeps_start_and_never_silently_empties(tmp_path, tok):
    p = make(tmp_path, tok, [("a", overflow_rows(), dict(overflow="truncate"))], seq_len=10)
    st = p.stats.sources["a"]
    assert (st.dropped_overflow, st.truncated, st.dropped_no_trainable, st.train_examples) == (0, 1, 1, 3)
    ex = [e for e in p.examples() if e.truncated]
    assert len(ex) == 1 and len(ex[0].tokens) == 11 and ex[0].full_length == 27 and ex[0].row == 2
    assert ex[0].trained.tolist() == [0] * 6 + [1] * 5  # no EOS: it was cut
    assert st.rows == st.train_examples + st.dropped_no_trainable + st.dropped_overflow + st.bad_rows


def test_overflow_error_names_the_row(tmp_path, tok):
    with pytest.raises(
        SequenceTooLongError,
        match=r"a\.jsonl, line 2\): example has 26 positions > seq_len 10 "
        r"\(2 such examples",
    ):
        make(tmp_path, tok, [("a", overflow_rows(), dict(overflow="error"))], seq_len=10)


def test_every_row_too_long_says_how_long_and_what_to_change(tmp_path, tok):
    """400 rows of 76-96 positions against seq_len 64: the error accounts for every row,
    gives the lengths against seq_len and names both settings that fix it."""
    rows = [{"q": " ".join(["one"] * (70 + i % 21)), "a": "hi"} for i in range(400)]  # n + 6 positions
    with pytest.raises(DataError) as error:
        make(tmp_path, tok, [("long", rows, {})], seq_len=64)
    assert str(error.value) == (
        "no train examples in any source\n"
        "  data long: 400 rows, 400 longer than seq_len 64 and dropped (overflow = drop)\n"
        "    tokens per example: min 76, median 86, p95 95, max 96; seq_len is 64\n"
        "  = help: raise `seq_len` in `train` to at least 96 (95 keeps 95 % of the rows), "
        "or set `overflow = truncate` in `data long`"
    )


def test_no_train_examples_names_each_sources_cause(tmp_path, tok):
    long_prompts = [{"q": " ".join(["one"] * 20), "a": "hi"}] * 3  # the answer lies past seq_len 10
    long_or_bad = [{"q": "hello"}] * 2 + [{"q": "hello", "a": " ".join(["two"] * 12)}] * 3
    with pytest.raises(DataError) as error:
        make(
            tmp_path,
            tok,
            [("cut", long_prompts, dict(overflow="truncate")), ("mixed", long_or_bad, dict(on_bad_row="skip"))],
            seq_len=10,
        )
    lines = str(error.value).split("\n")
    assert lines[:6] == [
        "no train examples in any source",
        "  data cut: 3 rows, 3 dropped because truncating to seq_len 10 would cut every trained token",
        "    tokens per example: min 26, median 26, p95 26, max 26; seq_len is 10",
        "  data mixed: 5 rows, 3 longer than seq_len 10 and dropped (overflow = drop), 2 bad rows skipped "
        "(value is null or missing: 2)",
        "    tokens per example: min 18, median 18, p95 18, max 18; seq_len is 10",
        "  = help: raise `seq_len` in `train` to at least 26, or set `overflow = truncate` in `data mixed`",
    ]
    assert lines[6].startswith("  = help: fix the bad rows or the template of `mixed` (first: ")
    assert len(lines) == 7


# ------------------------------------------------------------------ cache


def test_second_run_hits_the_tokenization_cache(tmp_path, tok):
    rows = random_rows(30, 12)
    p1 = make(tmp_path, tok, [("a", rows, {})])
    assert not p1.stats.sources["a"].cache_hit
    before = tokenize_mod.TOKENIZE_BATCHES
    p2 = make(tmp_path, tok, [("a", rows, {})], seq_len=48, packing=False)  # length settings: same cache
    assert p2.stats.sources["a"].cache_hit and tokenize_mod.TOKENIZE_BATCHES == before
    assert p2._tables[0].tokens.tolist() == p1._tables[0].tokens.tolist()
    # a different template, tokenizer or content misses
    other_tok = wordlevel_tokenizer(extra_words=["new"])
    p3 = build_pipeline(p1.plan, other_tok, cache_dir=str(tmp_path / "c"))
    assert not p3.stats.sources["a"].cache_hit and tokenize_mod.TOKENIZE_BATCHES > before
    write_jsonl(str(tmp_path / "a.jsonl"), rows[:-1])
    p4 = build_pipeline(p1.plan, tok, cache_dir=str(tmp_path / "c"))
    assert not p4.stats.sources["a"].cache_hit and len(p4.ex_table) == 29


def test_an_epochs_rows_table_permutes_like_a_list_of_rows():
    """`Rows` keeps an epoch's rows in one table (8 bytes an example); reordering it gives
    exactly the rows a list of arrays would."""
    from runtime.data.pipeline import Rows

    rng = np.random.default_rng(0)
    lists = [rng.integers(0, 1000, rng.integers(1, 6)).astype(np.int64) for _ in range(50)]
    table = Rows(np.concatenate(lists), np.concatenate([[0], np.cumsum([len(r) for r in lists])]).astype(np.int64))
    perm = rng.permutation(len(lists))
    moved = table.permuted(perm)
    assert len(moved) == len(lists)
    for j, p in enumerate(perm):
        np.testing.assert_array_equal(moved[j], lists[p])
    np.testing.assert_array_equal(moved[-1], lists[perm[-1]])
    assert [len(r) for r in moved] == [len(lists[p]) for p in perm]
    with pytest.raises(IndexError):
        moved[len(lists)]
