"""Rows that are probably wrong on their own: an empty answer, an answer that repeats the prompt,
a length far from the rest of the source or cut at seq_len, text that looks like personal data,
an answer in another language than most of the source. Linear in the rows; what is kept per row is
a row number, a log length and a language guess (normalized texts are computed again where needed)."""

from __future__ import annotations

import math
import os
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from runtime.audit.audited_example import AuditedExample

MIN_ROWS = 20  # length and language are judged against a source only when it has this many rows
FENCE = 3.0  # Tukey's "far out" fence, on log token counts
MIN_LANGUAGE_WORDS = 8
LANGUAGE_MAJORITY = 0.8

WHAT = ("empty_answer", "answer_is_prompt", "too_long", "too_short", "truncated", "personal_data", "language")


@dataclass(frozen=True)
class Suspect:
    """``row`` indexes the examples; ``what`` is one of `WHAT`; ``detail`` says what was seen."""

    row: int
    what: str
    detail: str


def _norm(text: str) -> str:
    return " ".join(text.split())


def find_suspects(examples: Sequence[AuditedExample], min_rows: int = MIN_ROWS) -> list[Suspect]:
    """Every suspect row of every source, in the order of the examples."""
    by_source: dict[str, list[int]] = defaultdict(list)
    for i, e in enumerate(examples):
        by_source[e.source].append(i)
    found: list[Suspect] = []
    for rows in by_source.values():
        found += _answers(examples, rows)
        found += _lengths(examples, rows, min_rows)
        found += _personal_data(examples, rows)
        found += _languages(examples, rows, min_rows)
    empty = {s.row for s in found if s.what == "empty_answer"}
    found = [s for s in found if not (s.what == "too_short" and s.row in empty)]  # said once is enough
    found.sort(key=lambda s: (s.row, WHAT.index(s.what)))
    return found


def _answers(examples: Sequence[AuditedExample], rows: list[int]) -> list[Suspect]:
    """Empty answers, and answers that repeat the prompt: the whole rendered prompt, or all of
    what varies in it across the source (the template's fixed prefix and suffix taken off)."""
    prefix, suffix = common_affixes(_norm(examples[i].prompt) for i in rows)
    out = []
    for i in rows:
        answer = _norm(examples[i].completion)
        if not answer:
            out.append(Suspect(i, "empty_answer", "the answer is empty or only whitespace"))
            continue
        prompt = _norm(examples[i].prompt)
        middle = prompt[len(prefix) : len(prompt) - len(suffix)] if len(prefix) + len(suffix) < len(prompt) else ""
        middle = middle.strip()
        if answer == prompt or (middle and answer in prompt and len(answer) >= len(middle)):
            out.append(Suspect(i, "answer_is_prompt", "the answer repeats the prompt"))
    return out


def common_affixes(texts: Iterable[str]) -> tuple[str, str]:
    """The longest prefix and suffix all texts share (the template around the prompts), or none
    when there are fewer than two different texts. One pass, holding only the two affixes."""
    first: str | None = None
    prefix = suffix = ""
    different = False
    for text in texts:
        if first is None:
            first = prefix = suffix = text
            continue
        different = different or text != first
        if not text.startswith(prefix):
            prefix = os.path.commonprefix([prefix, text])
        if not text.endswith(suffix):
            suffix = os.path.commonprefix([suffix[::-1], text[::-1]])[::-1]
    return (prefix, suffix) if different else ("", "")


def _quantile(values: Sequence[float] | np.ndarray, q: float) -> float:
    position = (len(values) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (position - low)


def _lengths(examples: Sequence[AuditedExample], rows: list[int], min_rows: int) -> list[Suspect]:
    """Truncated rows (longer than seq_len), and token counts outside Tukey's far-out fences
    (3 × IQR) on the log scale of the source's counts, and at least twice (a quarter of) its median."""
    out = [
        Suspect(i, "truncated", f"{examples[i].full_tokens} tokens, cut to {examples[i].tokens} at seq_len")
        for i in rows
        if examples[i].full_tokens > examples[i].tokens
    ]
    if len(rows) < min_rows:
        return out
    logs = np.sort(np.fromiter((math.log1p(examples[i].full_tokens) for i in rows), dtype=np.float64, count=len(rows)))
    q1, median, q3 = (float(_quantile(logs, q)) for q in (0.25, 0.5, 0.75))
    low, high = q1 - FENCE * (q3 - q1), q3 + FENCE * (q3 - q1)
    typical = math.expm1(median)
    for i in rows:
        n = examples[i].full_tokens
        if math.log1p(n) > high and n >= 2 * typical:
            out.append(Suspect(i, "too_long", f"{n} tokens; the source's median is {typical:.0f}"))
        elif math.log1p(n) < low and n <= typical / 4:
            out.append(Suspect(i, "too_short", f"{n} tokens; the source's median is {typical:.0f}"))
    return out


# personal data ---------------------------------------------------------------------------------

EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})\b")
# documentation domains (RFC 2606 / 6761) are placeholders, not someone's address
PLACEHOLDER_DOMAIN = re.compile(r"(^|\.)(example\.(com|net|org)|example|test|invalid|localhost)$", re.I)
PHONE = re.compile(
    r"(?<![\w.+/-])(?:"
    r"\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?)(?:[ .-]?\d{2,4}){2,4}"  # +44 20 7946 0958, +1-555-123-4567
    r"|\(\d{3}\) ?\d{3}[ .-]\d{4}"  # (555) 123-4567
    r"|\d{3}([.-])\d{3}\1\d{4}"  # 555-123-4567, 555.123.4567
    r")(?![\w-]|\.\d)"
)
CARD = re.compile(
    r"(?<![\w-])(?:"
    r"(?:\d{4}[ -]){3}\d{1,7}"  # 4111 1111 1111 1111
    r"|\d{4}[ -]\d{6}[ -]\d{5}"  # 3782 822463 10005
    r"|\d{13,19}"
    r")(?![\w-])"
)
CARD_WORDS = re.compile(
    r"\b(card|credit|debit|visa|mastercard|amex|american express|cc|kreditkarte|carte|tarjeta)\b", re.I
)


def luhn(digits: str) -> bool:
    total = 0
    for k, ch in enumerate(reversed(digits)):
        d = int(ch)
        if k % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card_issuer(digits: str) -> bool:
    """Visa, Mastercard, American Express, Discover, JCB, Diners: the prefixes and lengths issued."""
    n = len(digits)
    return bool(
        (digits[0] == "4" and n in (13, 16, 19))
        or (n == 16 and (51 <= int(digits[:2]) <= 55 or 2221 <= int(digits[:4]) <= 2720))
        or (n == 15 and digits[:2] in ("34", "37"))
        or (n in (16, 19) and (digits.startswith(("6011", "65")) or 644 <= int(digits[:3]) <= 649))
        or (n in (16, 19) and 3528 <= int(digits[:4]) <= 3589)
        or (n == 14 and digits[:2] in ("36", "38"))
    )


def personal_data(text: str) -> list[str]:
    """What in the text looks like personal data: "e-mail address", "phone number", "card number".
    Cards: an issued prefix and length and a valid Luhn check, and either written in groups or
    named as a card nearby (so that a long order id does not count)."""
    kinds = []
    if any(not PLACEHOLDER_DOMAIN.search(m.group(1)) for m in EMAIL.finditer(text)):
        kinds.append("e-mail address")
    for m in PHONE.finditer(text):
        digits = re.sub(r"\D", "", m.group(0))
        if 9 <= len(digits) <= 15:
            kinds.append("phone number")
            break
    for m in CARD.finditer(text):
        digits = re.sub(r"\D", "", m.group(0))
        if not (13 <= len(digits) <= 19 and _card_issuer(digits) and luhn(digits)) or len(set(digits)) < 2:
            continue
        grouped = not m.group(0).isdigit()
        if grouped or CARD_WORDS.search(text[max(0, m.start() - 40) : m.start()]):
            kinds.append("card number")
            break
    return kinds


def _personal_data(examples: Sequence[AuditedExample], rows: list[int]) -> list[Suspect]:
    out = []
    for i in rows:
        kinds = personal_data(examples[i].text)
        if kinds:
            out.append(Suspect(i, "personal_data", "looks like personal data: " + ", ".join(kinds)))
    return out


# language --------------------------------------------------------------------------------------

STOPWORDS = {
    "en": "the and of to is in that it for you was with on are as have be at this not but they what can your will "
    "from there which would their if has an we my all do does how when".split(),
    "de": "der die das und ist nicht ich sie es ein eine zu den mit von auf für sich dem des auch wie wird "
    "bei oder werden hat sind wir noch nach kann ihr über dass".split(),
    "fr": "le la les et est un une des du que qui dans pour pas sur ce il elle au avec nous vous sont "
    "mais ou par plus cette leur aux être été ses ne".split(),
    "es": "el la los las y es un una que de en por con para no se del al lo como más pero sus le "
    "ya muy está son ser también hay cuando esta porque".split(),
    "it": "il lo la gli le e è un una che di in per non con del della si sono ma come anche più "
    "questo alla nel delle essere ha stato dei ci quando".split(),
    "pt": "o a os as e é um uma que de em para não com do da dos das se por mais mas como ao "
    "são foi você também está muito isso ela seu pelo".split(),
    "nl": "de het een en is van in dat op te niet zijn met voor die er ook als aan maar wat bij "
    "naar dan nog heeft worden hij zij wordt kan deze".split(),
}
STOPWORD_SETS = {lang: frozenset(words) for lang, words in STOPWORDS.items()}
SCRIPTS = (  # (first, last code point, script); the Latin letters are the default
    (0x0370, 0x03FF, "Greek"),
    (0x0400, 0x052F, "Cyrillic"),
    (0x0590, 0x05FF, "Hebrew"),
    (0x0600, 0x06FF, "Arabic"),
    (0x0900, 0x097F, "Devanagari"),
    (0x0E00, 0x0E7F, "Thai"),
    (0x3040, 0x30FF, "Japanese kana"),
    (0x4E00, 0x9FFF, "Han"),
    (0xAC00, 0xD7AF, "Hangul"),
)
WORD = re.compile(r"[^\W\d_]+")


def _script(ch: str) -> str:
    code = ord(ch)
    if code < 0x0250:
        return "Latin"
    for first, last, name in SCRIPTS:
        if first <= code <= last:
            return name
    return "other"


def language(text: str) -> str | None:
    """A light guess: the script of most letters ("Cyrillic", "Han", …), and for Latin letters
    one of en, de, fr, es, it, pt, nl by stopwords, or None when the text is too short or unclear."""
    letters = [ch for ch in text if ch.isalpha()]
    if len(letters) < 20:
        return None
    scripts = Counter(_script(ch) for ch in letters)
    script, count = scripts.most_common(1)[0]
    if count < 0.6 * len(letters):
        return None
    if script == "Japanese kana" or (script == "Han" and scripts["Japanese kana"] > 0.1 * len(letters)):
        return "Japanese"
    if script != "Latin":
        return script if script != "other" else None
    words = [w.lower() for w in WORD.findall(text)]
    if len(words) < MIN_LANGUAGE_WORDS:
        return None
    scores = sorted(((sum(w in s for w in words), lang) for lang, s in STOPWORD_SETS.items()), reverse=True)
    (best, lang), (second, _) = scores[0], scores[1]
    if best >= 3 and best >= 0.15 * len(words) and best >= 1.5 * second:
        return lang
    return None


LANGUAGE_NAMES = {"en": "English", "de": "German", "fr": "French", "es": "Spanish", "it": "Italian"}
LANGUAGE_NAMES |= {"pt": "Portuguese", "nl": "Dutch"}


def _languages(examples: Sequence[AuditedExample], rows: list[int], min_rows: int) -> list[Suspect]:
    """Answers in another language than a clear majority (80 %) of the source's judged answers."""
    if len(rows) < min_rows:
        return []
    guesses = [language(examples[i].completion) for i in rows]  # aligned with rows
    judged = Counter(g for g in guesses if g)
    if sum(judged.values()) < min_rows:
        return []
    majority, count = judged.most_common(1)[0]
    if count < LANGUAGE_MAJORITY * sum(judged.values()):
        return []
    name = LANGUAGE_NAMES.get(majority, majority)
    return [
        Suspect(i, "language", f"the answer looks {LANGUAGE_NAMES.get(g, g)}; most of the source is {name}")
        for i, g in zip(rows, guesses)
        if g and g != majority
    ]
