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
* alpaca: a row's instruction (and input); a text is the instruction.
* tokens: a pre-tokenized row's ids before its last trained run (all of them without labels).
* text: the row's text, or the text, is the start of a document to continue.

A row goes through its source's transforms first (``rename``, ``where``), a conversation
through `shapes.conversation` (ShareGPT, tool calls) and the source's system message, as in
training.

`stop_ids` is the one rule for where an answer ends (evaluation, generate, chat, exports).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from runtime.data.tokenize import Mode, prefix_ids
from runtime.plan import row_shapes as shapes
from runtime.plan.data_errors import DataError
from runtime.plan.row_templates import (
    Part,
    Rendered,
    RowProblem,
    chat_messages,
    parse_template,
    render_chat,
    render_prompt_completion,
    special_ids,
)

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
    """Raise `PromptError` when a line of text cannot be a prompt of ``mode`` (a template of several
    columns, or pre-tokenized rows)."""
    if mode.kind == "tokens":
        raise PromptError("this source is pre-tokenized: give rows with input_ids (`sftc generate --file`)")
    if mode.kind != "prompt_completion":
        return
    fields = _fields(mode)
    if len(fields) != 1:
        names = ", ".join(".".join(f) for f in fields) or "none"
        raise PromptError(
            f"the prompt template takes the columns {names}, and a text fills exactly one "
            "placeholder; give JSON rows with `sftc generate --file`"
        )


def _problem(p: RowProblem) -> PromptError:
    where = [f"column {p.column!r}"] if p.column else []
    where += [f"turn {p.turn}"] if p.turn is not None else []
    return PromptError(f"{', '.join(where) + ': ' if where else ''}{p.reason}")


def _prefix(tokenizer: Any, text: str, special: bool) -> list[int]:
    return prefix_ids(tokenizer, list(tokenizer(text, add_special_tokens=special)["input_ids"]), text)


def _ids(tokenizer: Any, rendered: Rendered) -> list[int]:
    """The tokens before the last trained span, as training tokenizes them."""
    return _prefix(tokenizer, rendered.text[: rendered.spans[-1][0]], rendered.add_special_tokens)


def _chat(
    tokenizer: Any, conversation: list[dict[str, Any]], column: str, tools: list[dict[str, Any]] | None = None
) -> Prompt:
    if not conversation:
        raise PromptError(f"column {column!r}: the conversation has no turn before its answer")
    answer = {"role": "assistant", "content": _STAND_IN}
    try:
        rendered = render_chat(tokenizer, conversation + [answer], column, "last_assistant", tools)
    except RowProblem as p:
        raise _problem(p) from None
    return Prompt(_ids(tokenizer, rendered), conversation)


def _row(mode: Mode, value: Mapping[str, Any]) -> dict[str, Any]:
    """A row through its source's transforms, as training reads it."""
    try:
        row = mode.transform(dict(value))
    except RowProblem as p:
        raise _problem(p) from None
    if row is None:
        raise PromptError("the source's `where` leaves this row out: training never saw rows like it")
    return row


def _conversation(
    mode: Mode, value: str | Mapping[str, Any], history: Sequence[Mapping[str, Any]]
) -> tuple[list, list | None]:
    """(the turns before the answer, the row's tools)."""
    if isinstance(value, str):
        turns = [dict(m) for m in history] + [{"role": "user", "content": value}]
        return shapes.with_system(turns, mode.system), None
    row = _row(mode, value)
    if mode.column not in row:
        raise PromptError(
            f"a row of this source holds its conversation in the column {mode.column!r}; this row has {sorted(row)}"
        )
    try:
        turns = shapes.conversation(row[mode.column], mode.column, mode.roles, mode.keys)
        tools = shapes.tools_of(row.get(mode.tools), mode.tools) if mode.tools else None
    except RowProblem as p:
        raise _problem(p) from None
    if turns[-1]["role"] == "assistant":
        turns = turns[:-1]  # the reference answer
    return shapes.with_system(turns, mode.system), tools


def _text_row(field: tuple[str, ...], text: str) -> dict[str, Any]:
    row: dict[str, Any] = {}
    target = row
    for key in field[:-1]:
        target = target.setdefault(key, {})
    target[field[-1]] = text
    return row


def render_prompt(
    tokenizer: Any, mode: Mode, value: str | Mapping[str, Any], history: Sequence[Mapping[str, Any]] = ()
) -> Prompt:
    """The prompt of a row (a mapping of columns) or a text, as training renders it (module docstring).

    ``history`` (turns of earlier exchanges, as a previous `Prompt.conversation` plus the
    answer) precedes a text given to a chat template; rows carry their own conversation.
    """
    prompt = _render(tokenizer, mode, value, history)
    if not prompt.ids:
        raise PromptError("the prompt renders to no tokens, so there is nothing to continue from")
    return prompt


def _render(tokenizer: Any, mode: Mode, value: str | Mapping[str, Any], history: Sequence[Mapping[str, Any]]) -> Prompt:
    if isinstance(value, str):
        check_text(mode)
    if mode.kind == "messages":
        conversation, tools = _conversation(mode, value, history)
        return _chat(tokenizer, conversation, mode.column, tools)
    if mode.kind == "tokens":
        return _tokens(tokenizer, _row(mode, value))
    if mode.kind == "text":
        text = value if isinstance(value, str) else _row(mode, value).get(mode.column)
        if not isinstance(text, str):
            raise PromptError(f"column {mode.column!r}: expected a text, got {type(text).__name__}")
        return Prompt(_prefix(tokenizer, text, True))
    if mode.kind == "alpaca":
        row = {"instruction": value} if isinstance(value, str) else _row(mode, value)
        row = {**row, "output": _STAND_IN}
        try:
            if not mode.chat:
                return Prompt(_prefix(tokenizer, shapes.alpaca_prompt(row)[0], True))
            conversation = shapes.alpaca_messages(row, mode.system)[:-1]
        except RowProblem as p:
            raise _problem(p) from None
    else:
        prompt = parse_template(mode.prompt or "")
        row = _text_row(_fields(mode)[0], value) if isinstance(value, str) else _row(mode, value)
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


def _tokens(tokenizer: Any, row: Mapping[str, Any]) -> Prompt:
    """A pre-tokenized row's prompt: its ids before the last trained run (all without labels)."""
    try:
        if row.get("labels") is None and row.get("loss_mask") is None:
            return Prompt(shapes.token_ids(row, len(tokenizer)))
        ids, trained = shapes.token_row(row, len(tokenizer))
    except RowProblem as p:
        raise _problem(p) from None
    start = len(trained) - trained[::-1].index(1)  # the end of the last trained run
    while start > 0 and trained[start - 1]:
        start -= 1
    return Prompt(ids[:start])


# ---------------------------------------------------------------- stop tokens


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
    text = rendered.text[: rendered.spans[-1][1]]
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return int(ids[-1]) if ids and int(ids[-1]) in special_ids(tokenizer) else None


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


def adds_special_tokens(tokenizer: Any) -> tuple[bool, bool]:
    """(the tokenizer adds BOS, adds EOS) when it encodes a text with its special tokens: what a
    GGUF says llama.cpp must add (`tokenizer.ggml.add_bos_token`), what its Modelfile and a
    preference pair's prompt leave to the reader to add."""
    plain = list(tokenizer("a b", add_special_tokens=False)["input_ids"])
    full = list(tokenizer("a b")["input_ids"])
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    adds_bos = bos is not None and len(full) > len(plain) and full[0] == bos and full[1:][: len(plain)] == plain
    adds_eos = eos is not None and len(full) > len(plain) and full[-1] == eos and plain[-1:] != [eos]
    return adds_bos, adds_eos
