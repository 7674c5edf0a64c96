"""What a template means at inference: the prompt a trained model is given, and the tokens
that end its answer.

Evaluation cuts its prompts out of the training examples (`DataPipeline.eval_prompts`: every
token before the last trained span). `sftc generate` and `sftc chat` have rows without
answers, or a line of text, so they render here with the functions training renders with
(`templates.render_prompt_completion`, `chat_messages`, `render_chat`): the row becomes a
training example whose last trained span (the completion, the final assistant turn) is a
stand-in, and the text before that span is tokenized as training tokenizes it
(`tokenize.prefix_ids`). So a row gets the prompt ids evaluation gets for it, and no second
copy of a template's rules exists to drift.

What a value is, per template kind (`tokenize.Mode`):

* prompt/completion: a row fills the prompt's placeholders; a text fills its one placeholder.
  With ``chat = on`` the prompt is the user turn after the optional system message (or after
  ``history``), up to the chat template's generation prompt.
* messages: a row holds a conversation in the template's column; a final assistant turn is its
  reference and is dropped. A text is the next user turn after ``history``.
* text: the row's text, or the text, is the start of a document to continue.

`stop_ids` is the one rule for where an answer ends (evaluation, generate, chat, exports).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from .errors import DataError
from .templates import (Part, Rendered, RowProblem, chat_messages, parse_template, render_chat,
                        render_prompt_completion)
from .tokenize import Mode, prefix_ids

__all__ = ["Prompt", "PromptError", "check_text", "render_prompt", "stop_ids"]

# The answer a prompt is rendered in front of: only the text before it is kept.
_STAND_IN = "(answer)"


class PromptError(DataError):
    """A row or text that cannot be this source's prompt: the message says why and what to give."""


@dataclass(frozen=True)
class Prompt:
    """Token ids for the model, and for chat templates the turns they render (a chat's history)."""

    ids: list[int]
    conversation: list[dict[str, Any]] | None = None


def _fields(mode: Mode) -> list[tuple[str, ...]]:
    return list(dict.fromkeys(p for p in parse_template(mode.prompt or "") if isinstance(p, tuple)))


def check_text(mode: Mode) -> None:
    """Raise `PromptError` when a line of text cannot be a prompt of ``mode`` (a template of several columns)."""
    if mode.kind != "prompt_completion":
        return
    fields = _fields(mode)
    if len(fields) != 1:
        names = ", ".join(".".join(f) for f in fields) or "none"
        raise PromptError(f"the prompt template takes the columns {names}, and a text fills exactly one "
                          "placeholder; give JSON rows with `sftc generate --file`")


def _problem(p: RowProblem) -> PromptError:
    where = [f"column {p.column!r}"] if p.column else []
    where += [f"turn {p.turn}"] if p.turn is not None else []
    return PromptError(f"{', '.join(where) + ': ' if where else ''}{p.reason}")


def _prefix(tokenizer: Any, text: str, special: bool) -> list[int]:
    return prefix_ids(tokenizer, list(tokenizer(text, add_special_tokens=special)["input_ids"]), text)


def _ids(tokenizer: Any, rendered: Rendered) -> list[int]:
    """The tokens before the last trained span, as training tokenizes them."""
    return _prefix(tokenizer, rendered.text[:rendered.spans[-1][0]], rendered.add_special_tokens)


def _chat(tokenizer: Any, conversation: list[dict[str, Any]], column: str) -> Prompt:
    if not conversation:
        raise PromptError(f"column {column!r}: the conversation has no turn before its answer")
    answer = {"role": "assistant", "content": _STAND_IN}
    try:
        rendered = render_chat(tokenizer, conversation + [answer], column, "last_assistant")
    except RowProblem as p:
        raise _problem(p) from None
    return Prompt(_ids(tokenizer, rendered), conversation)


def _conversation(mode: Mode, value: str | Mapping[str, Any], history: Sequence[Mapping[str, Any]]) -> list:
    if isinstance(value, str):
        return [dict(m) for m in history] + [{"role": "user", "content": value}]
    if mode.column not in value:
        raise PromptError(f"a row of this source holds its conversation in the column {mode.column!r}; "
                          f"this row has {sorted(value)}")
    turns = value[mode.column]
    if not isinstance(turns, list):
        raise PromptError(f"column {mode.column!r}: expected a list of {{role, content}} messages, "
                          f"got {type(turns).__name__}")
    if turns and isinstance(turns[-1], Mapping) and turns[-1].get("role") == "assistant":
        turns = turns[:-1]  # the reference answer
    return list(turns)


def _text_row(field: tuple[str, ...], text: str) -> dict[str, Any]:
    row: dict[str, Any] = {}
    target = row
    for key in field[:-1]:
        target = target.setdefault(key, {})
    target[field[-1]] = text
    return row


def render_prompt(tokenizer: Any, mode: Mode, value: str | Mapping[str, Any],
                  history: Sequence[Mapping[str, Any]] = ()) -> Prompt:
    """The prompt of a row (a mapping of columns) or a text, as training renders it (module docstring).

    ``history`` (turns of earlier exchanges, as a previous `Prompt.conversation` plus the
    answer) precedes a text given to a chat template; rows carry their own conversation.
    """
    prompt = _render(tokenizer, mode, value, history)
    if not prompt.ids:
        raise PromptError("the prompt renders to no tokens, so there is nothing to continue from")
    return prompt


def _render(tokenizer: Any, mode: Mode, value: str | Mapping[str, Any],
            history: Sequence[Mapping[str, Any]]) -> Prompt:
    if isinstance(value, str):
        check_text(mode)
    if mode.kind == "messages":
        return _chat(tokenizer, _conversation(mode, value, history), mode.column)
    if mode.kind == "text":
        text = value if isinstance(value, str) else value.get(mode.column)
        if not isinstance(text, str):
            raise PromptError(f"column {mode.column!r}: expected a text, got {type(text).__name__}")
        return Prompt(_prefix(tokenizer, text, True))
    prompt = parse_template(mode.prompt or "")
    row = _text_row(_fields(mode)[0], value) if isinstance(value, str) else dict(value)
    stand_in: list[Part] = [_STAND_IN]
    try:
        if not mode.chat:
            return Prompt(_ids(tokenizer, render_prompt_completion(prompt, stand_in, row)))
        conversation = chat_messages(prompt, stand_in, row, mode.system)[:-1]
    except RowProblem as p:
        raise _problem(p) from None
    if history:
        conversation = [dict(m) for m in history] + conversation[-1:]
    return _chat(tokenizer, conversation, "prompt")


# ---------------------------------------------------------------- stop tokens


def _special_ids(tokenizer: Any) -> set[int]:
    special = {int(i) for i in getattr(tokenizer, "all_special_ids", []) or []}
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    special |= {int(i) for i, token in added.items() if getattr(token, "special", False)}
    special.discard(tokenizer.unk_token_id)
    return special


def end_of_turn(tokenizer: Any) -> int | None:
    """The special token that closes an assistant turn of the tokenizer's chat template, if any.

    Found by rendering a user/assistant exchange as training does (`render_chat`) and taking
    the last token of the assistant's trained span: what a chat answer learns to end with
    (ChatML's ``<|im_end|>``, Llama 3's ``<|eot_id|>``, the EOS for templates that write it).
    """
    if not getattr(tokenizer, "chat_template", None):
        return None
    exchange = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": _STAND_IN}]
    try:
        rendered = render_chat(tokenizer, exchange, "messages", "last_assistant")
    except RowProblem:  # a template that cannot render an exchange trains no chat source either
        return None
    text = rendered.text[:rendered.spans[-1][1]]
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return int(ids[-1]) if ids and int(ids[-1]) in _special_ids(tokenizer) else None


def stop_ids(tokenizer: Any) -> list[int]:
    """The tokens that end an answer: the EOS (which closes a trained completion) and the end-of-turn
    token of the chat template (which closes a trained assistant turn), sorted.

    The one stop rule of evaluation, `sftc generate`, `sftc chat` and an export's generation config.
    """
    stops = {int(tokenizer.eos_token_id)} if tokenizer.eos_token_id is not None else set()
    end = end_of_turn(tokenizer)
    if end is not None:
        stops.add(end)
    return sorted(stops)
