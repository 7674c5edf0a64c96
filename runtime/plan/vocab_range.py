"""The smallest vocabulary a trained SentencePiece tokenizer can have, stated once for
`train_sentencepiece`'s error and for `sftc check` (light: no sentencepiece, no JAX).

The trainer refuses a vocabulary smaller than its fixed pieces: the 256 byte pieces
(with byte fallback), the 4 special pieces (``<unk> <s> </s> <pad>``) and one piece
per character it must cover. It counts characters after its own normalisation: a
space is ``▁``, every text starts with a ``▁``, NUL is skipped, and a text longer
than ``max_sentence_length`` bytes is skipped whole.

>>> count = CharacterCount()
>>> count.add("ab ba")
>>> count.required()  # a, b, ▁
3
>>> smallest_vocab(3, byte_fallback=True)
263
"""

from __future__ import annotations

from collections import Counter

BYTE_PIECES = 256
SPECIAL_PIECES = 4  # <unk> <s> </s> <pad>
SPACE = "\u2581"


class CharacterCount:
    """How often each character occurs in training texts, as the trainer counts them."""

    def __init__(self, max_sentence_length: int = 16384):
        self.counts: Counter[str] = Counter()
        self.texts: Counter[str] = Counter()  # how many texts have each character
        self.max_bytes = max_sentence_length

    def add(self, text: str) -> None:
        if not text or (len(text) * 4 > self.max_bytes and len(text.encode("utf-8")) > self.max_bytes):
            return
        self.counts.update(text)
        self.counts[SPACE] += 1  # the dummy prefix
        self.texts.update(set(text) | {SPACE})

    def required(self, coverage: float = 1.0, min_texts: int = 1) -> int:
        """Characters the vocabulary must hold: the most frequent ones up to ``coverage``,
        counting only characters that at least ``min_texts`` texts have."""
        counts = Counter(self.counts)
        counts[SPACE] += counts.pop(" ", 0)
        counts.pop("\0", None)
        counts = Counter({c: n for c, n in counts.items() if n and (c == SPACE or self.texts[c] >= min_texts)})
        total = sum(counts.values())
        covered = needed = 0
        for frequency in sorted(counts.values(), reverse=True):
            if covered >= coverage * total:
                break
            covered += frequency
            needed += 1
        return needed


def smallest_vocab(characters: int, byte_fallback: bool) -> int:
    return characters + SPECIAL_PIECES + (BYTE_PIECES if byte_fallback else 0)


def fixed_pieces(byte_fallback: bool) -> str:
    """The pieces every vocabulary holds, in words: `256 byte pieces + 4 special pieces`."""
    return (f"{BYTE_PIECES} byte pieces + " if byte_fallback else "") + f"{SPECIAL_PIECES} special pieces"


def explain(characters: int, byte_fallback: bool) -> str:
    """The sum behind `smallest_vocab`: `256 byte pieces + 4 special pieces + 22 distinct characters = 282`."""
    total = smallest_vocab(characters, byte_fallback)
    return f"{fixed_pieces(byte_fallback)} + {characters} distinct characters = {total}"
