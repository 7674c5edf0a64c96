"""Generated audit data: a clean set of rows (pseudo-English, random content words, order ids and
dates that must not look like personal data) and planted problems, each with its truth."""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field

from runtime.audit.audited_example import AuditedExample

TEMPLATE = "### Question:\n{q}\n### Answer:\n"
SYSTEM = (
    "You are the support assistant of a small shop. Answer politely and briefly, in the customer's language, "
    "and never promise a refund before the order has been checked by a person from the team.\n"
)
EN = "the and of to is in that it for with on are as have be at this not but".split()
DE = "der die das und ist nicht ich sie es ein eine zu den mit von auf für sich dem auch wie".split()


def _vocabulary(rng: random.Random, n: int = 6000) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    return sorted({"".join(rng.choice(letters) for _ in range(rng.randint(4, 10))) for _ in range(n)})


@dataclass
class Planted:
    examples: list[AuditedExample] = field(default_factory=list)
    truth: dict[str, set] = field(default_factory=lambda: defaultdict(set))  # kind -> frozensets of ids
    suspects: set = field(default_factory=set)  # (id, what)


class Maker:
    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)
        self.vocab = _vocabulary(self.rng)
        self.line: dict[str, int] = defaultdict(int)

    def words(self, n: int, stop: list[str] = EN) -> str:
        return " ".join(
            self.rng.choice(stop) if self.rng.random() < 0.35 else self.rng.choice(self.vocab) for _ in range(n)
        )

    def question(self, n: int | None = None) -> str:
        return self.words(n or self.rng.randint(10, 16)).capitalize() + "?"

    def answer(self, n: int | None = None) -> str:
        text = self.words(n or self.rng.randint(40, 60)).capitalize() + "."
        roll = self.rng.random()
        if roll < 0.1:
            day = f"2024-0{self.rng.randint(1, 9)}-1{self.rng.randint(0, 9)}"
            text += f" Your order {self.rng.randint(10**7, 10**9)} was placed on {day}."
        elif roll < 0.15:
            text += f" Reference ORD-2024-{self.rng.randint(0, 999999):06d}, invoice 4539578763621486, 12/05/2024."
        return text

    def row(self, source: str, prompt_body: str, completion: str, split: str = "train", system: str = "", **kw):
        self.line[source] += 1
        line = self.line[source]
        prompt = system + TEMPLATE.format(q=prompt_body)
        n = kw.pop("full", None) or round(1.3 * len((prompt + completion).split()))
        tokens = kw.pop("tokens", n)
        return AuditedExample(
            f"{source}:{source}.jsonl:{line}", source, split, f"{source}.jsonl:{line}", prompt, completion, tokens, n
        )

    def edit(self, text: str, edits: int = 1) -> str:
        """Replace ``edits`` words of the text by other words."""
        words = text.split(" ")
        for i in self.rng.sample(range(1, len(words) - 1), edits):
            words[i] = self.rng.choice(self.vocab)
        return " ".join(words)


def clean(maker: Maker, n: int = 600, eval_n: int = 60) -> list[AuditedExample]:
    """Two clean sources (one with a long shared system prompt) and clean eval rows."""
    out = [maker.row("qa", maker.question(), maker.answer()) for _ in range(n)]
    out += [maker.row("support", maker.question(), maker.answer(), system=SYSTEM) for _ in range(n // 3)]
    out += [maker.row("qa", maker.question(), maker.answer(), split="eval") for _ in range(eval_n)]
    return out


def planted(seed: int = 0, n: int = 600, per_kind: int = 20) -> Planted:
    m = Maker(seed)
    p = Planted(clean(m, n))
    base = [e for e in p.examples if e.source == "qa" and e.split == "train"]
    m.rng.shuffle(base)
    take = iter(base)
    add = p.examples.append

    def body(e: AuditedExample) -> str:
        return e.prompt.split("### Question:\n", 1)[1].rsplit("\n### Answer:\n", 1)[0]

    for k in range(per_kind):  # exact copies, within a source and across sources, whitespace changed
        e = next(take)
        source = "qa" if k % 2 else "qa_more"
        copy = m.row(source, body(e).replace(" ", "  ", 1), e.completion + "\n")
        add(copy)
        p.truth["duplicate"].add(frozenset({e.id, copy.id}))
    for _ in range(per_kind):  # near copies: one word of the question edited
        e = next(take)
        copy = m.row("qa", m.edit(body(e)), e.completion)
        add(copy)
        p.truth["near_duplicate"].add(frozenset({e.id, copy.id}))
    for k in range(per_kind):  # eval rows leaked from training, exact and near
        e = next(take)
        answer = e.completion if k % 2 else m.edit(e.completion)
        leaked = m.row("qa", body(e), answer, split="eval")
        add(leaked)
        p.truth["leak"].add(frozenset({leaked.id, e.id}))
    for k in range(per_kind):  # conflicts: the same prompt (or one word of a long one edited), another answer
        if k % 2:
            e = next(take)
            other = m.row("qa", body(e), m.answer())
        else:
            e = m.row("qa", m.question(45), m.answer())
            add(e)
            other = m.row("qa", m.edit(body(e)), m.answer())
        add(other)
        p.truth["conflict"].add(frozenset({e.id, other.id}))

    def suspect(what: str, row: AuditedExample) -> None:
        add(row)
        p.suspects.add((row.id, what))

    for k in range(per_kind // 2):
        suspect("empty_answer", m.row("qa", m.question(), " \n " if k % 2 else ""))
        q = m.question()
        suspect("answer_is_prompt", m.row("qa", q, q))
        suspect("too_long", m.row("qa", m.question(), m.words(900)))
        r = m.row("qa", m.question(), m.answer())
        suspect("truncated", m.row("qa", m.question(), m.answer(), tokens=r.full_tokens, full=r.full_tokens + 40))
        name = m.rng.choice(m.vocab)
        suspect("personal_data", m.row("qa", m.question(), m.answer() + f" Write to {name}.{k}@gmail.com today."))
        phone = ["+44 20 7946 0958", "(415) 555-0132", "212-555-0187", "+1 650 253 0000", "+49 30 901820"][k % 5]
        suspect("personal_data", m.row("qa", m.question(), m.answer() + f" Call us at {phone} please."))
        card = ["4111 1111 1111 1111", "5555-5555-5555-4444", "3782 822463 10005", "6011111111111117"][k % 4]
        suspect("personal_data", m.row("qa", m.question(), m.answer() + f" Paid with card {card} yesterday."))
        suspect("language", m.row("qa", m.question(), m.words(40, DE).capitalize() + "."))
    return p
