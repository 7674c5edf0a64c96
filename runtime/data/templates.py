"""Turning a raw row into text plus the character spans that are trained.

Two shapes (see ``TemplateSpec``):

* prompt/completion format strings: ``{column}`` inserts a column, ``{a.b}`` a
  nested field, ``{{`` and ``}}`` are literal braces. Inserted values are used
  verbatim (never re-parsed as templates). The trained span is the completion.
* a ``messages`` column rendered with the tokenizer's chat template. The span of
  assistant turn *i* is found by rendering growing prefixes:
  ``before = render(messages[:i], add_generation_prompt=True)`` and
  ``through = render(messages[:i+1])``; the span is ``through[len(before):]``,
  minus whitespace that follows the closing special token (ChatML's ``"\\n"``
  after ``<|im_end|>`` is never generated, so it is not trained). No
  ``{% generation %}`` tags are needed.

  This needs the template to be *prefix-stable*: ``before`` must be a prefix of
  ``through`` and ``through`` a prefix of the whole conversation. Templates that
  re-render earlier turns once later ones follow (reasoning models that drop
  earlier ``<think>`` blocks) are not; that is reported as
  ``TemplateNotPrefixStableError`` naming the row and the message index, never
  silently mis-masked. What to do then: ``train_on = last_assistant`` (only the
  final turn, which is rendered exactly as at inference), split conversations
  into one example per assistant turn, or pass a prefix-stable template.

Problems with one row raise ``RowProblem`` (turned into ``BadRowError`` or a
skip count by the caller). A chat template that cannot render anything (jinja2
missing, no template, a template that does not compile) raises
``ChatTemplateError`` instead: that is never one row's fault.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from typing import Any, Sequence

from .errors import ChatTemplateError, TemplateError

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_NAME = re.compile(r"^[^.\s{}]+(\.[^.\s{}]+)*$")


class RowProblem(Exception):
    """A row that cannot become an example: which column/turn and why."""

    def __init__(self, reason: str, column: str | None = None, turn: int | None = None,
                 unstable: bool = False):
        super().__init__(reason)
        self.reason, self.column, self.turn, self.unstable = reason, column, turn, unstable


Part = str | tuple[str, ...]  # literal text, or a field path ("a", "b") for {a.b}


def parse_template(template: str) -> list[Part]:
    """Split a format string into literal text and field paths.

    >>> parse_template("Q: {q}\\n{meta.lang} {{x}}")
    ['Q: ', ('q',), '\\n', ('meta', 'lang'), ' {x}']
    """
    parts: list[Part] = []
    buf: list[str] = []
    pos = 0
    for m in _TOKEN.finditer(template):
        buf.append(template[pos:m.start()])
        tok = m.group(0)
        if tok == "{{":
            buf.append("{")
        elif tok == "}}":
            buf.append("}")
        elif m.group(1) is not None:
            name = m.group(1).strip()
            if not _NAME.match(name):
                raise TemplateError(f"bad placeholder {tok!r} at character {m.start()} of {template!r}; "
                                    "use {column} or {a.b}, and {{ }} for literal braces")
            if "".join(buf):
                parts.append("".join(buf))
            buf = []
            parts.append(tuple(name.split(".")))
        else:
            raise TemplateError(f"unmatched {tok!r} at character {m.start()} of {template!r}; "
                                f"write {tok}{tok} for a literal brace")
        pos = m.end()
    buf.append(template[pos:])
    if "".join(buf):
        parts.append("".join(buf))
    return parts


def placeholders(template: str) -> list[str]:
    """The ``{a.b}`` placeholders of a template, as dotted names, in order (for ``sftc check``)."""
    return [".".join(p) for p in parse_template(template) if isinstance(p, tuple)]


def _lookup(row: dict[str, Any], path: tuple[str, ...]) -> str:
    col = ".".join(path)
    value: Any = row
    for i, key in enumerate(path):
        if not isinstance(value, dict):
            raise RowProblem(f"{'.'.join(path[:i])!r} is {type(value).__name__}, not an object "
                             f"with field {key!r}", column=col)
        if key not in value:
            where = "column" if i == 0 else "field"
            raise RowProblem(f"missing {where} {key!r}", column=col)
        value = value[key]
    if value is None:  # datasets fills a key missing from some rows of a file with null
        raise RowProblem("value is null or missing", column=col)
    if not isinstance(value, str):
        raise RowProblem(f"value is {type(value).__name__} ({str(value)[:40]}), not a string", column=col)
    return value


def render_parts(parts: Sequence[Part], row: dict[str, Any]) -> str:
    return "".join(p if isinstance(p, str) else _lookup(row, p) for p in parts)


@dataclass(frozen=True)
class Rendered:
    """One example as text: ``spans`` are ``[start, end)`` character ranges that are trained.

    ``add_special_tokens``: tokenize with the tokenizer's BOS/post-processor
    (prompt/completion and text) or without (chat templates write their own).
    ``append_eos``: close the text with the tokenizer's EOS (trained).
    ``turns``: message index of each span (chat), for error messages.
    """

    text: str
    spans: tuple[tuple[int, int], ...]
    add_special_tokens: bool
    append_eos: bool
    turns: tuple[int | None, ...] = ()


def render_prompt_completion(prompt_parts: Sequence[Part], completion_parts: Sequence[Part],
                             row: dict[str, Any]) -> Rendered:
    prompt = render_parts(prompt_parts, row)
    completion = render_parts(completion_parts, row)
    if not completion.strip():
        col = next((".".join(p) for p in completion_parts if isinstance(p, tuple)), None)
        raise RowProblem("empty completion", column=col)
    text = prompt + completion
    return Rendered(text, ((len(prompt), len(text)),), True, True, (None,))


def chat_messages(prompt_parts: Sequence[Part], completion_parts: Sequence[Part], row: dict[str, Any],
                  system: str | None) -> list[dict[str, str]]:
    """A prompt/completion row as a conversation: [system], user = prompt, assistant = completion."""
    completion = render_parts(completion_parts, row)
    if not completion.strip():
        col = next((".".join(p) for p in completion_parts if isinstance(p, tuple)), None)
        raise RowProblem("empty completion", column=col)
    messages = [{"role": "system", "content": system}] if system else []
    return messages + [{"role": "user", "content": render_parts(prompt_parts, row)},
                       {"role": "assistant", "content": completion}]


def render_text(column: str, row: dict[str, Any]) -> Rendered:
    text = _lookup(row, (column,))
    if not text.strip():
        raise RowProblem("empty text", column=column)
    return Rendered(text, ((0, len(text)),), True, True, (None,))


def _check_messages(messages: Any, column: str) -> list[dict[str, str]]:
    if messages is None:
        raise RowProblem("value is null", column=column)
    if not isinstance(messages, list):
        raise RowProblem(f"expected a list of {{role, content}} messages, got {type(messages).__name__}",
                         column=column)
    if not messages:
        raise RowProblem("empty conversation", column=column)
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise RowProblem(f"message is {type(m).__name__}, not an object", column=column, turn=i)
        role, content = m.get("role"), m.get("content")
        if not isinstance(role, str) or not role:
            raise RowProblem(f"message has no role (got {role!r})", column=column, turn=i)
        if content is None:
            raise RowProblem("message content is null", column=column, turn=i)
        if not isinstance(content, str):
            raise RowProblem(f"message content is {type(content).__name__}, not a string", column=column, turn=i)
        # Keep extra keys (tool calls, names): templates may use them; drop None values like transformers does.
        out.append({k: v for k, v in m.items() if v is not None})
    return out


def _special_strings(tokenizer: Any) -> tuple[str, ...]:
    cached = getattr(tokenizer, "_sftc_special_strings", None)
    if cached is not None:
        return cached
    strings = set(getattr(tokenizer, "all_special_tokens", []) or [])
    for tok in (getattr(tokenizer, "added_tokens_decoder", {}) or {}).values():
        strings.add(str(getattr(tok, "content", tok)))
    strings.discard("")
    result = tuple(sorted(strings, key=len, reverse=True))
    try:
        tokenizer._sftc_special_strings = result
    except AttributeError:
        pass
    return result


JINJA_HELP = ("transformers renders chat templates with jinja2 (>= 3.1.6), which sftc depends on: reinstall sftc "
              "(in a checkout: `pip install -e .`) or run `pip install 'jinja2>=3.1.6'` in this environment")


def require_chat_template(tokenizer: Any, needs: str) -> None:
    """Fail before the first row when no row could be rendered, so no row is blamed for it.

    ``needs`` opens the message: what is rendered (``"data chats: `chat = on`"``).
    """
    if not getattr(tokenizer, "chat_template", None):
        raise ChatTemplateError(f"{needs} is rendered with the tokenizer's chat template, but this tokenizer has "
                                "no chat template; use a tokenizer that ships one, or a plain prompt/completion "
                                "template")
    try:
        import jinja2  # noqa: F401 - transformers needs it only once a template is rendered
    except ImportError as e:
        raise ChatTemplateError(f"{needs} is rendered with jinja2, which cannot be imported ({e})\n"
                                f"  help: {JINJA_HELP}") from None


def _chat_failure(tokenizer: Any, error: Exception, column: str, turn: int) -> Exception:
    """Sort an exception from ``apply_chat_template``: the environment's or the template's
    (``ChatTemplateError``: fatal, whatever ``on_bad_row`` says) or this row's (``RowProblem``)."""
    if isinstance(error, ImportError):
        return ChatTemplateError(f"the chat template cannot be rendered: {error}\n  help: {JINJA_HELP}")
    if not getattr(tokenizer, "chat_template", None):
        return ChatTemplateError(f"the tokenizer has no chat template ({type(error).__name__}: {error})")
    jinja2 = sys.modules.get("jinja2")  # loaded whenever jinja raised the error
    if jinja2 is not None and isinstance(error, jinja2.TemplateSyntaxError):
        return ChatTemplateError(f"the tokenizer's chat template does not compile: {error} (template line "
                                 f"{error.lineno}); fix `chat_template` in the tokenizer's files")
    # jinja's raise_exception (bad role order), a message the template cannot format, ...
    return RowProblem(f"chat template failed: {type(error).__name__}: {error}", column=column, turn=turn)


def render_chat(tokenizer: Any, messages: Any, column: str, train_on: str) -> Rendered:
    """Render a conversation and locate its trained spans by growing prefixes."""
    msgs = _check_messages(messages, column)
    assistant = [i for i, m in enumerate(msgs) if m["role"] == "assistant"]
    if not assistant:
        raise RowProblem("conversation has no assistant turn", column=column)

    def render(ms: list[dict[str, str]], gen: bool) -> str:
        try:
            return tokenizer.apply_chat_template(ms, tokenize=False, add_generation_prompt=gen)
        except (OSError, MemoryError):  # the machine's problem, not the row's nor the template's
            raise
        except Exception as e:  # noqa: BLE001 - sorted into the environment's fault or this row's
            raise _chat_failure(tokenizer, e, column, len(ms) - 1) from e

    full = render(msgs, False)
    if train_on == "all":
        return Rendered(full, ((0, len(full)),), False, False, (None,))
    turns = assistant[-1:] if train_on == "last_assistant" else assistant
    specials = _special_strings(tokenizer)
    spans, turn_ids = [], []
    for i in turns:
        content = msgs[i]["content"]
        if not content.strip():
            raise RowProblem("empty assistant message", column=column, turn=i)
        if i == 0:
            raise RowProblem("the conversation starts with an assistant turn: it has no prompt",
                             column=column, turn=i)
        before = render(msgs[:i], True)
        through = render(msgs[: i + 1], False)
        if not through.startswith(before):
            raise RowProblem(
                "chat template is not prefix-stable: rendering with add_generation_prompt=True is not a "
                f"prefix of the rendered turn (prompt ends {before[-40:]!r}, turn starts "
                f"{through[len(before) - 40: len(before) + 20]!r})", column=column, turn=i, unstable=True)
        if not full.startswith(through):
            k = next((j for j, (a, b) in enumerate(zip(through, full)) if a != b), min(len(through), len(full)))
            raise RowProblem(
                "chat template is not prefix-stable: this turn renders differently once later turns "
                f"follow (alone: {through[max(0, k - 20): k + 40]!r}; in the conversation: "
                f"{full[max(0, k - 20): k + 40]!r})", column=column, turn=i, unstable=True)
        end = len(through)
        stripped = through.rstrip()
        if len(stripped) < end and len(stripped) > len(before) and stripped.endswith(specials):
            end = len(stripped)
        spans.append((len(before), end))
        turn_ids.append(i)
    return Rendered(full, tuple(spans), False, False, tuple(turn_ids))
