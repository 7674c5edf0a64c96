"""The audit finds planted problems with precision and recall ≥ 0.95 per kind, nothing on clean
data, and names the rows of every finding."""

from __future__ import annotations

import json

import pytest

from runtime.audit.audit_report import KINDS, Audit, AuditSettings, audit
from runtime.audit.audited_example import AuditedExample
from runtime.audit.coverage import coverage
from runtime.audit.near_copies import find_copies, lsh_bands
from runtime.audit.suspect_rows import language, luhn, personal_data
from tests.runtime.audit.planted import Maker, clean, planted


def precision_recall(found: set, truth: set) -> tuple[float, float]:
    hits = len(found & truth)
    return (hits / len(found) if found else 1.0), (hits / len(truth) if truth else 1.0)


@pytest.fixture(scope="module")
def planted_audit():
    p = planted()
    return p, audit(p.examples, AuditSettings(coverage=False))


@pytest.mark.parametrize("kind", ["duplicate", "near_duplicate", "leak", "conflict"])
def test_planted_copies_are_found_with_precision_and_recall(planted_audit, kind):
    p, result = planted_audit
    found = {frozenset(f.ids) for f in result.of(kind)}
    precision, recall = precision_recall(found, p.truth[kind])
    assert precision >= 0.95 and recall >= 0.95, (kind, precision, recall, sorted(map(sorted, found - p.truth[kind])))


@pytest.mark.parametrize(
    "what", ["empty_answer", "answer_is_prompt", "too_long", "truncated", "personal_data", "language"]
)
def test_planted_suspect_rows_are_found_with_precision_and_recall(planted_audit, what):
    p, result = planted_audit
    found = {(f.ids[0], f.what) for f in result.of("suspect", what)}
    truth = {s for s in p.suspects if s[1] == what}
    precision, recall = precision_recall(found, truth)
    assert precision >= 0.95 and recall >= 0.95, (what, precision, recall, sorted(found ^ truth))


def test_nothing_else_is_flagged_and_every_finding_names_its_rows(planted_audit):
    _, result = planted_audit
    assert not result.of("suspect", "too_short")
    for f in result.findings:
        assert f.ids and len(f.ids) == len(f.wheres) and all(f.wheres)
        assert f.kind in KINDS and f.message and f.help
        assert len(f.ids) >= (2 if f.kind != "suspect" else 1)


def test_a_leak_names_the_eval_row_first_and_the_first_copy_stays(planted_audit):
    p, result = planted_audit
    split = {e.id: e.split for e in p.examples}
    for f in result.of("leak"):
        assert split[f.ids[0]] == "eval" and {split[i] for i in f.ids[1:]} == {"train"}
    order = {e.id: k for k, e in enumerate(p.examples)}
    for f in result.of("duplicate") + result.of("near_duplicate"):
        assert [order[i] for i in f.ids] == sorted(order[i] for i in f.ids)


def test_clean_data_has_no_findings():
    m = Maker(seed=7)
    result = audit(clean(m, 900, 100), AuditSettings(coverage=False))
    assert result.findings == [], [(f.kind, f.what, f.ids, f.message) for f in result.findings[:5]]
    assert result.counts["all"]["examples"] == 900 + 300 + 100


def test_counts_per_source_and_the_json_is_stable(planted_audit):
    p, result = planted_audit
    assert result.counts["qa_more"]["duplicate"] == 10 and result.counts["qa_more"]["examples"] == 10
    assert result.counts["all"]["leak"] == len(result.of("leak"))
    again = audit(p.examples, AuditSettings(coverage=False))
    assert json.dumps(again.to_dict(), sort_keys=True) == json.dumps(result.to_dict(), sort_keys=True)
    assert isinstance(result, Audit)


def test_near_copies_are_confirmed_above_the_threshold():
    """A pair below the threshold is never reported, whatever the LSH proposes; the bands find a
    pair at the threshold with probability ≥ 0.99."""
    m = Maker(seed=3)
    a = m.row("s", m.question(12), m.answer(40))
    far = m.row("s", m.edit(m.edit(a.prompt.split("\n")[1], 4), 4), m.edit(a.completion, 8))
    near = m.row("s", a.prompt.split("\n")[1], m.edit(a.completion))
    copies = find_copies([a, far, near], threshold=0.9)
    assert [g.rows for g in copies.near_duplicates] == [(0, 2)] and copies.near_duplicates[0].similarity >= 0.9
    b, r = lsh_bands(0.9, 64)
    assert 1 - (1 - 0.9**r) ** b >= 0.99


def test_per_turn_rows_conflict_only_when_the_whole_history_matches():
    m = Maker(seed=4)
    history = m.answer(80)

    def turn(conv: int, turn: int, prompt: str, answer: str) -> AuditedExample:
        return AuditedExample(
            f"chat:c.jsonl:{conv}#{turn}", "chat", "train", f"c.jsonl:{conv}#{turn}", prompt, answer, 99, 99
        )

    rows = [
        turn(1, 3, history + " user: how are you?", m.answer()),
        turn(2, 3, history + " user: how old are you?", m.answer()),  # nearly the same history: no conflict
        turn(3, 3, history + " user: how are you?", m.answer()),  # the same history, another answer
    ]
    conflicts = find_copies(rows).conflicts
    assert [c.rows for c in conflicts] == [(0, 2)] and conflicts[0].exact


def test_personal_data_patterns():
    assert personal_data("mail jane.doe@company.co.uk now") == ["e-mail address"]
    assert personal_data("see admin@example.com or a@b.test") == []
    for phone in ("+1 (650) 253-0000", "call 212.555.0187", "(415) 555-0132"):
        assert personal_data(phone) == ["phone number"], phone
    for card in ("4111 1111 1111 1111", "card: 4012888888881881", "378282246310005 on my visa"):
        assert "card number" in personal_data(card) or "card number" in personal_data("credit card " + card), card
    assert luhn("4111111111111111") and not luhn("4111111111111112")
    for harmless in (
        "order 4539578763621486 shipped",  # a Luhn-valid 16-digit order id, not named as a card
        "4111 1111 1111 1112",  # fails Luhn
        "ORD-2024-000123 on 2024-03-15",
        "dates 12/05/2024 and 2024.03.15, version 1.2.3, id 123456789",
        "ticket 20240315-001, 10:30-11:45",
    ):
        assert personal_data(harmless) == [], harmless


def test_language_guess():
    m = Maker(seed=5)
    assert language(m.words(40)) == "en" and language(m.words(40, ["der", "die", "und", "ist", "nicht"])) == "de"
    assert language("Привет, как дела? Это пример текста на русском языке.") == "Cyrillic"
    assert language("too short to judge") is None


def test_coverage_groups_topics_deterministically():
    m = Maker(seed=6)
    pools = [m.vocab[k * 100 : k * 100 + 40] for k in range(3)]
    rows = []
    for pool in pools:
        for _ in range(40):
            q = " ".join(m.rng.choice(pool) for _ in range(12))
            rows.append(m.row("qa", q, m.answer()))
    first, second = coverage(rows, k=3), coverage(rows, k=3)
    assert first == second and first.k == 3 and "k-means" in first.method
    assert sorted(t.size for t in first.topics) == [40, 40, 40]
    for t in first.topics:
        assert len(t.terms) == 5 and len(t.example_ids) == 3
        pool = next(p for p in pools if t.terms[0] in p)
        assert all(term in pool for term in t.terms)
    assert coverage(rows).k == 8  # about sqrt(120 / 2)
    assert coverage(rows[:2]).topics == []


def test_every_example_is_given_its_topic_and_an_eval_prompt_the_nearest():
    m = Maker(seed=7)
    pools = [m.vocab[k * 100 : k * 100 + 40] for k in range(3)]
    rows, held_out = [], []
    for p, pool in enumerate(pools):
        for n in range(44):
            q = " ".join(m.rng.choice(pool) for _ in range(12))
            rows.append(m.row("qa", q, m.answer(), split="eval" if n >= 40 else "train"))
            if n >= 40:
                held_out.append((rows[-1].id, p))
    result = coverage(rows, k=3)
    assert set(result.topic_of) == {e.id for e in rows}
    for e in rows:
        if e.split == "train":  # a training prompt's topic is the group that counts it
            terms = result.topics[result.topic_of[e.id]].terms
            assert all(term in next(p for p in pools if terms[0] in p) for term in terms)
    for example_id, p in held_out:  # an eval prompt of a pool falls in that pool's topic
        assert result.topics[result.topic_of[example_id]].terms[0] in pools[p]
    assert sum(t.size for t in result.topics) == 120  # eval prompts are assigned, not counted


@pytest.mark.slow
def test_a_hundred_thousand_rows():
    p = planted(seed=11, n=100_000, per_kind=40)
    result = audit(p.examples, AuditSettings())
    for kind in ("duplicate", "near_duplicate", "leak", "conflict"):
        found = {frozenset(f.ids) for f in result.of(kind)}
        precision, recall = precision_recall(found, p.truth[kind])
        assert precision >= 0.95 and recall >= 0.95, (kind, precision, recall)
    assert result.coverage is not None and 2 <= len(result.coverage.topics) <= 20


def test_every_kind_of_finding_has_its_words():
    from runtime.data.stats import FINDING_NAMES, findings_text

    assert tuple(FINDING_NAMES) == KINDS
    assert findings_text({"duplicate": 2, "leak": 1, "examples": 9}) == "2 duplicates, 1 eval leak"
    assert findings_text({"examples": 9, "suspect": 0}) == "no findings"


def test_an_eval_prompt_trained_with_another_answer_is_a_leak():
    m = Maker(seed=8)
    rows = clean(m, 60, 10)
    question = rows[-1].prompt.removeprefix("### Question:\n").removesuffix("\n### Answer:\n")
    taught = m.row("fixes", question, "a corrected answer of a reviewer, nothing like the eval reference")
    result = audit([*rows, taught], AuditSettings(coverage=False))
    (leak,) = result.of("leak")
    assert (leak.what, leak.ids) == ("prompt", (rows[-1].id, taught.id)) and "another answer" in leak.message
    assert result.counts["fixes"]["leak"] == 1 and not result.of("conflict")
    copy = m.row("fixes", question, rows[-1].completion)  # the same text: an exact leak, said once
    (leak,) = audit([*rows, copy], AuditSettings(coverage=False)).of("leak")
    assert leak.what == "exact"


def test_prompts_alike_in_their_words_make_fewer_topics_without_a_warning():
    import warnings

    m = Maker(seed=9)
    prompts = (
        ["apple banana"] * 10 + ["cherry grape"] * 10 + ["melon lemon"] * 10 + ["apple banana the", "the apple banana"]
    )
    rows = [m.row("qa", q, m.answer()) for q in prompts]  # 5 distinct prompts, 3 distinct in their words
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = coverage(rows, k=7)
    assert result.k == 5 and sorted(t.size for t in result.topics) == [10, 10, 12]
