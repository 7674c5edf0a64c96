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
  earlier ``<think>`` blocks) are not; `render_conversation` then makes one example
  per trained turn, the conversation through that turn as the template renders it
  then, so each turn trains exactly what the model sees at inference (counted and
  reported). A generation prompt that is not a prefix of the turn it opens cannot be
  trained either way: that is ``TemplateNotPrefixStableError`` naming the row and
  the message, never a silently wrong mask.

Problems with one row raise ``RowProblem`` (turned into ``BadRowError`` or a
skip count by the caller). A chat template that cannot render anything (jinja2
missing, no template, a template that does not compile) raises
``ChatTemplateError`` instead: that is never one row's fault.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from runtime.plan import row_shapes as shapes
from runtime.plan.data_errors import ChatTemplateError, RowProblem, TemplateError

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_NAME = re.compile(r"^[^.\s{}]+(\.[^.\s{}]+)*$")


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
        buf.append(template[pos : m.start()])
        tok = m.group(0)
        if tok == "{{":
            buf.append("{")
        elif tok == "}}":
            buf.append("}")
        elif m.group(1) is not None:
            name = m.group(1).strip()
            if not _NAME.match(name):
                raise TemplateError(
                    f"bad placeholder {tok!r} at character {m.start()} of {template!r}; "
                    "use {column} or {a.b}, and {{ }} for literal braces"
                )
            if "".join(buf):
                parts.append("".join(buf))
            buf = []
            parts.append(tuple(name.split(".")))
        else:
            raise TemplateError(
                f"unmatched {tok!r} at character {m.start()} of {template!r}; write {tok}{tok} for a literal brace"
            )
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
            raise RowProblem(
                f"{'.'.join(path[:i])!r} is {type(value).__name__}, not an object with field {key!r}", column=col
            )
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


def training_text(
    row: dict[str, Any],
    parts: Sequence[Part] | None = None,
    *,
    conversation: str | None = None,
    roles=(),
    keys=(),
    system: str | None = None,
    alpaca: bool = False,
) -> str:
    """A row's text as a tokenizer is trained on it (what the model reads): the turns of the
    ``conversation`` column (tool calls as their JSON), the Alpaca prompt and output, or the
    template ``parts`` filled in. One rule for `sftc run`'s tokenizer training and `sftc check`'s
    vocabulary estimate."""
    if conversation is not None:
        turns = shapes.with_system(shapes.conversation(row.get(conversation), conversation, roles, keys), system)
        calls = [json.dumps(call["function"]) for turn in turns for call in turn.get("tool_calls", ())]
        return "\n".join([turn["content"] for turn in turns] + calls)
    if alpaca:
        return "".join(shapes.alpaca_prompt(row))
    return render_parts(parts or [], row)


@dataclass(frozen=True)
class Rendered:
    """One example as text: ``spans`` are ``[start, end)`` character ranges that are trained.

    ``add_special_tokens``: tokenize with the tokenizer's BOS/post-processor
    (prompt/completion and text) or without (chat templates write their own).
    ``append_eos``: close the text with the tokenizer's EOS (trained).
    ``turns``: message index of each span (chat), for error messages.
    ``calls``: whether each span's turn calls tools (chat), for the stats.
    ``per_turn``: one of the examples a conversation became because its template re-renders
    earlier turns once later ones follow (`render_conversation`).
    """

    text: str
    spans: tuple[tuple[int, int], ...]
    add_special_tokens: bool
    append_eos: bool
    turns: tuple[int | None, ...] = ()
    calls: tuple[bool, ...] = ()
    per_turn: bool = False


def render_prompt_completion(
    prompt_parts: Sequence[Part], completion_parts: Sequence[Part], row: dict[str, Any]
) -> Rendered:
    prompt = render_parts(prompt_parts, row)
    completion = render_parts(completion_parts, row)
    if not completion.strip():
        col = next((".".join(p) for p in completion_parts if isinstance(p, tuple)), None)
        raise RowProblem("empty completion", column=col)
    text = prompt + completion
    return Rendered(text, ((len(prompt), len(text)),), True, True, (None,))


def chat_messages(
    prompt_parts: Sequence[Part], completion_parts: Sequence[Part], row: dict[str, Any], system: str | None
) -> list[dict[str, str]]:
    """A prompt/completion row as a conversation: [system], user = prompt, assistant = completion."""
    completion = render_parts(completion_parts, row)
    if not completion.strip():
        col = next((".".join(p) for p in completion_parts if isinstance(p, tuple)), None)
        raise RowProblem("empty completion", column=col)
    messages = [{"role": "system", "content": system}] if system else []
    return messages + [
        {"role": "user", "content": render_parts(prompt_parts, row)},
        {"role": "assistant", "content": completion},
    ]


def render_text(column: str, row: dict[str, Any]) -> Rendered:
    text = _lookup(row, (column,))
    if not text.strip():
        raise RowProblem("empty text", column=column)
    return Rendered(text, ((0, len(text)),), True, True, (None,))


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


JINJA_HELP = (
    "transformers renders chat templates with jinja2 (>= 3.1.6), which sftc depends on: reinstall sftc "
    "(in a checkout: `pip install -e .`) or run `pip install 'jinja2>=3.1.6'` in this environment"
)


def require_chat_template(tokenizer: Any, needs: str) -> None:
    """Fail before the first row when no row could be rendered, so no row is blamed for it.

    ``needs`` opens the message: what is rendered (``"data chats: `chat = on`"``).
    """
    if not getattr(tokenizer, "chat_template", None):
        raise ChatTemplateError(
            f"{needs} is rendered with the tokenizer's chat template, but this tokenizer has "
            "no chat template; use a tokenizer that ships one, or a plain prompt/completion "
            "template"
        )
    try:
        import jinja2  # noqa: F401 - transformers needs it only once a template is rendered
    except ImportError as e:
        raise ChatTemplateError(
            f"{needs} is rendered with jinja2, which cannot be imported ({e})\n  help: {JINJA_HELP}"
        ) from None


def _chat_failure(tokenizer: Any, error: Exception, column: str, turn: int) -> Exception:
    """Sort an exception from ``apply_chat_template``: the environment's or the template's
    (``ChatTemplateError``: fatal, whatever ``on_bad_row`` says) or this row's (``RowProblem``)."""
    if isinstance(error, ImportError):
        return ChatTemplateError(f"the chat template cannot be rendered: {error}\n  help: {JINJA_HELP}")
    if not getattr(tokenizer, "chat_template", None):
        return ChatTemplateError(f"the tokenizer has no chat template ({type(error).__name__}: {error})")
    jinja2 = sys.modules.get("jinja2")  # loaded whenever jinja raised the error
    if jinja2 is not None and isinstance(error, jinja2.TemplateSyntaxError):
        return ChatTemplateError(
            f"the tokenizer's chat template does not compile: {error} (template line "
            f"{error.lineno}); fix `chat_template` in the tokenizer's files"
        )
    # jinja's raise_exception (bad role order), a message the template cannot format, ...
    return RowProblem(f"chat template failed: {type(error).__name__}: {error}", column=column, turn=turn)


def special_ids(tokenizer: Any) -> set[int]:
    """Ids of the tokenizer's special and added special tokens (not ``<unk>``): what closes a turn."""
    special = {int(i) for i in getattr(tokenizer, "all_special_ids", []) or []}
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    special |= {int(i) for i, token in added.items() if getattr(token, "special", False)}
    special.discard(tokenizer.unk_token_id)
    return special


def _renderer(tokenizer: Any, column: str, tools: list[dict] | None):
    def render(ms: list[dict[str, Any]], gen: bool) -> str:
        try:
            return tokenizer.apply_chat_template(ms, tools=tools, tokenize=False, add_generation_prompt=gen)
        except (OSError, MemoryError):  # the machine's problem, not the row's nor the template's
            raise
        except Exception as e:  # noqa: BLE001 - sorted into the environment's fault or this row's
            raise _chat_failure(tokenizer, e, column, len(ms) - 1) from e

    return render


def _turn_span(render, msgs: list[dict[str, Any]], i: int, column: str, specials) -> tuple[str, int, int]:
    """(the conversation rendered through turn ``i``, where the turn's trained span starts, ends)."""
    before = render(msgs[:i], True)
    through = render(msgs[: i + 1], False)
    if not through.startswith(before):
        raise RowProblem(
            "chat template is not prefix-stable: rendering with add_generation_prompt=True is not a "
            f"prefix of the rendered turn (prompt ends {before[-40:]!r}, turn starts "
            f"{through[len(before) - 40 : len(before) + 20]!r})",
            column=column,
            turn=i,
            unstable=True,
        )
    end = len(through)
    stripped = through.rstrip()
    if len(stripped) < end and len(stripped) > len(before) and stripped.endswith(specials):
        end = len(stripped)
    return through, len(before), end


def render_chat(tokenizer: Any, messages: Any, column: str, train_on: str, tools: list[dict] | None = None) -> Rendered:
    """Render a conversation and locate its trained spans by growing prefixes; a template that
    re-renders earlier turns once later ones follow is a `RowProblem` (``unstable``)."""
    (rendered,) = _render_conversation(tokenizer, messages, column, train_on, tools, per_turn=False)
    return rendered


def render_conversation(
    tokenizer: Any, messages: Any, column: str, train_on: str, tools: list[dict] | None = None
) -> list[Rendered]:
    """The examples of a conversation: one, with every trained turn's span, when the template is
    prefix-stable; else one per trained turn, each the conversation through that turn rendered
    as the template renders it then (reasoning templates drop earlier turns' ``<think>``), so
    every turn trains exactly what the model sees at inference."""
    return _render_conversation(tokenizer, messages, column, train_on, tools, per_turn=True)


def _render_conversation(
    tokenizer: Any, messages: Any, column: str, train_on: str, tools: list[dict] | None, per_turn: bool
) -> list[Rendered]:
    msgs = shapes.conversation(messages, column)
    render = _renderer(tokenizer, column, tools)
    full = render(msgs, False)
    if train_on == "all":
        return [Rendered(full, ((0, len(full)),), False, False, (None,))]
    specials = _special_strings(tokenizer)
    turns = shapes.trained_turns(msgs, column, train_on)
    spans, calls = [], []
    for i in turns:
        through, start, end = _turn_span(render, msgs, i, column, specials)
        if not full.startswith(through):
            if per_turn:
                return [_one_turn(render, msgs, j, column, specials) for j in turns]
            k = next((j for j, (a, b) in enumerate(zip(through, full)) if a != b), min(len(through), len(full)))
            raise RowProblem(
                "chat template is not prefix-stable: this turn renders differently once later turns "
                f"follow (alone: {through[max(0, k - 20) : k + 40]!r}; in the conversation: "
                f"{full[max(0, k - 20) : k + 40]!r})",
                column=column,
                turn=i,
                unstable=True,
            )
        spans.append((start, end))
        calls.append(bool(msgs[i].get("tool_calls")))
    return [Rendered(full, tuple(spans), False, False, tuple(turns), tuple(calls))]


def _one_turn(render, msgs: list[dict[str, Any]], i: int, column: str, specials) -> Rendered:
    through, start, end = _turn_span(render, msgs, i, column, specials)
    return Rendered(through, ((start, end),), False, False, (i,), (bool(msgs[i].get("tool_calls")),), per_turn=True)
