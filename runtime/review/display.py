"""How the review page shows untrusted text so that an expert judges exactly what the model
saw: HTML-escaped, with invisible characters made visible and the tokenizer's special tokens
marked.

Invisible here means a character that changes or hides text without showing itself:
control characters (NUL and the rest of C0/C1, but tab, newline and carriage return),
format characters (Unicode category Cf: the direction overrides and isolates U+202A..U+202E,
U+2066..U+2069, the marks U+200E/U+200F, the zero-width U+200B..U+200D, U+2060, U+FEFF, the
soft hyphen, tag characters), lone UTF-16 surrogates, and the Hangul fillers that render
as blank. Each is shown as a marked placeholder ``⟨U+202E⟩`` whose title names it; the
character itself is not put on the page, so a direction override cannot reorder what
follows it.

Special tokens are read from the run's saved tokenizer (``RUN/tokenizer/``: the added
tokens marked special in ``tokenizer.json``, and the named and additional special tokens
of ``tokenizer_config.json`` / ``special_tokens_map.json``) as plain JSON, so the page
starts without importing transformers.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path

from markupsafe import Markup, escape

__all__ = ["describe", "first_invisible", "odd_character", "special_tokens", "visible"]

_KEPT_CONTROLS = frozenset("\t\n\r")
_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0")  # Hangul fillers: letters that render as nothing
_NAMED = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token")
_LISTED = ("additional_special_tokens", "extra_special_tokens")


def _invisible(char: str) -> bool:
    if char in _KEPT_CONTROLS:
        return False
    return unicodedata.category(char) in ("Cc", "Cf", "Cs") or char in _BLANK_LETTERS


# every invisible character of the Basic Multilingual Plane and the tag characters (U+E0000..U+E007F)
_INVISIBLE_CLASS = "".join(re.escape(chr(c)) for c in [*range(0x10000), *range(0xE0000, 0xE0080)] if _invisible(chr(c)))
_INVISIBLE = re.compile(f"[{_INVISIBLE_CLASS}]")


def describe(char: str) -> str:
    """``U+202E RIGHT-TO-LEFT OVERRIDE``; control characters and lone surrogates, which
    Unicode leaves unnamed, by what they are (``U+0000 NULL``)."""
    category = unicodedata.category(char)
    name = unicodedata.name(char, "") or (
        "NULL"
        if char == "\0"
        else "CONTROL CHARACTER"
        if category == "Cc"
        else "LONE SURROGATE (half of a character, e.g. of an emoji)"
        if category == "Cs"
        else ""
    )
    return f"U+{ord(char):04X} {name}" if name else f"U+{ord(char):04X}"


def first_invisible(text: str) -> tuple[int, str] | None:
    """(index, character) of the first invisible character of ``text``, or None."""
    found = _INVISIBLE.search(text)
    return None if found is None else (found.start(), found.group())


def odd_character(text: str) -> str | None:
    """``U+200B ZERO WIDTH SPACE at character 4``: the first character of ``text`` that is
    invisible or not printable (Python's `str.isprintable`; a plain space is), or None."""
    odd = first_invisible(text) or next(((i, c) for i, c in enumerate(text) if not c.isprintable()), None)
    return None if odd is None else f"{describe(odd[1])} at character {odd[0] + 1}"


@functools.lru_cache(maxsize=16)
def _pattern(tokens: tuple[str, ...]) -> re.Pattern[str]:
    """The tokens (longest first, so ``<|im_start|>`` wins over a shorter token it holds) or
    an invisible character."""
    ordered = sorted({t for t in tokens if t and not t.isspace()}, key=len, reverse=True)
    return re.compile("|".join([*(re.escape(t) for t in ordered), _INVISIBLE.pattern]))


def visible(text: str | None, tokens: Iterable[str] = ()) -> Markup:
    """``text`` as HTML: escaped; each invisible character a ``<span class="invisible">``
    placeholder ``⟨U+XXXX⟩`` titled with its name; each of ``tokens`` (special tokens) in a
    ``<span class="special-token">``."""
    if not text:
        return Markup("")
    out, at = [], 0
    for found in _pattern(tuple(tokens)).finditer(text):
        out.append(escape(text[at : found.start()]))
        piece = found.group()
        if len(piece) == 1 and _INVISIBLE.fullmatch(piece):
            out.append(
                Markup(
                    '<span class="invisible" title="{}: an invisible character in the text">⟨U+{:04X}⟩</span>'
                ).format(describe(piece), ord(piece))
            )
        else:
            out.append(
                Markup('<span class="special-token" title="special token of the tokenizer">{}</span>').format(piece)
            )
        at = found.end()
    out.append(escape(text[at:]))
    return Markup("").join(out)


def _strings(value) -> list[str]:
    """The token strings of a tokenizer-config value: a string, ``{"content": ...}``, or a
    list or mapping of those."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        if isinstance(value.get("content"), str):
            return [value["content"]]
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def special_tokens(tokenizer_dir: Path) -> tuple[str, ...]:
    """The special tokens of the tokenizer saved in ``tokenizer_dir`` (empty when there is
    none; a file that cannot be read is logged to the logger "sftc" and skipped)."""
    found: list[str] = []
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        path = tokenizer_dir / name
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as error:
            logging.getLogger("sftc").warning("review: %s not read, its special tokens are not marked: %s", path, error)
            continue
        if not isinstance(data, dict):
            continue
        for token in data.get("added_tokens", []) if isinstance(data.get("added_tokens"), list) else []:
            if isinstance(token, dict) and token.get("special") and isinstance(token.get("content"), str):
                found.append(token["content"])
        decoder = data.get("added_tokens_decoder")
        for token in decoder.values() if isinstance(decoder, dict) else []:
            if isinstance(token, dict) and token.get("special") and isinstance(token.get("content"), str):
                found.append(token["content"])
        for key in (*_NAMED, *_LISTED):
            found.extend(_strings(data.get(key)))
    return tuple(dict.fromkeys(t for t in found if t and not t.isspace()))
