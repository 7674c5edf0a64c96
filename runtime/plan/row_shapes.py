"""The row shapes other tools made popular, brought to the two sftc renders: a conversation
(OpenAI-style messages) or a prompt and a completion. One place for every shape rule, used
by the data pipeline and by `sftc check`'s sample of each source.

* **Source transforms** (`transform_row`): ``rename`` columns, keep only the rows ``where`` a
  column has one of the given values (the others are *filtered*, counted apart from bad rows).
* **Conversations** (`conversation`): OpenAI messages (``role``/``content``, assistant
  ``tool_calls`` whose ``content`` may be null, ``tool`` results) and ShareGPT ones
  (``from``/``value``; ``human``, ``gpt``, ``system``, ``tool``, ``observation``, and
  ``function_call`` turns, which become assistant tool calls). ``roles`` maps more role
  names, ``keys`` renames the message keys. The result is what chat templates take:
  ``tool_calls`` as ``[{"type": "function", "function": {"name", "arguments": {...}}}]`` with
  the arguments parsed from JSON text, and ``content`` ``""`` beside a call.
* **Tools** (`tools_of`): the function schemas of a row (a list, or its JSON text), passed
  to the chat template as ``tools``.
* **Alpaca** (`alpaca_prompt`, `alpaca_messages`): ``instruction``, optional ``input``,
  ``output``; an empty input renders the prompt without its input section.
* **Pre-tokenized** (`token_row`): ``input_ids`` with ``labels`` (aligned with the ids as in
  transformers; -100 is not trained) or ``loss_mask``, checked against the vocabulary.

Every problem is a `RowProblem` naming the column, the message (``turn``) and the key.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from runtime.plan.data_errors import RowProblem

DEFAULT_ROLES = {
    "system": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
    "human": "user",
    "gpt": "assistant",
    "observation": "tool",
    "function_call": "assistant",
}
CONVERSATION_COLUMNS = ("messages", "conversations")  # conventional conversation columns, in order

ALPACA_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
ALPACA_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes "
    "the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
)

FILTERED = "filtered"  # the reason a row left out by `where` carries (not a bad row)


# ---------------------------------------------------------------- source transforms


def lookup(row: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted ``path`` of ``row`` (KeyError when a part is missing)."""
    value: Any = row
    for key in path.split("."):
        if not isinstance(value, Mapping) or key not in value:
            raise KeyError(path)
        value = value[key]
    return value


def transform_row(
    row: dict[str, Any], rename: Sequence[tuple[str, str]], where: Sequence[tuple[str, Sequence[Any]]]
) -> dict[str, Any] | None:
    """The row with its columns renamed, or None when ``where`` leaves it out."""
    if rename:
        row = dict(row)
        moved, olds = {}, {old for old, _ in rename}
        for old, new in rename:
            if row.get(old) is None:  # datasets fills a column some rows lack with null
                raise RowProblem(f"missing or null column {old!r} (renamed to {new!r})", column=old)
            if row.get(new) is not None and new not in olds:
                raise RowProblem(f"renaming {old!r} to {new!r} would replace the row's own {new!r} column", column=new)
            moved[new] = row.pop(old)
        row.update(moved)
    for path, values in where:
        try:
            value = lookup(row, path)
        except KeyError:
            raise RowProblem(
                f"missing column {path!r} (the source keeps rows `where` it has one of {list(values)})", column=path
            ) from None
        if not any(_same(value, v) for v in values):
            return None
    return row


def _same(value: Any, wanted: Any) -> bool:
    if isinstance(wanted, bool) or isinstance(value, bool):
        return value is wanted
    return value == wanted


# ---------------------------------------------------------------- conversations


def conversation(
    value: Any, column: str, roles: Sequence[tuple[str, str]] = (), keys: Sequence[tuple[str, str]] = ()
) -> list[dict[str, Any]]:
    """A conversation value as OpenAI-style messages (see the module docstring)."""
    if value is None:
        raise RowProblem("value is null", column=column)
    if isinstance(value, str):  # a conversation stored as JSON text (CSV, some Parquet exports)
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise RowProblem(
                f"a conversation stored as text must be JSON ({e.msg} at column {e.colno})", column=column
            ) from None
    if not isinstance(value, list):
        raise RowProblem(f"expected a list of messages, got {type(value).__name__}", column=column)
    if not value:
        raise RowProblem("empty conversation", column=column)
    role_names = {**DEFAULT_ROLES, **dict(roles)}
    out: list[dict[str, Any]] = []
    pending_calls = 0  # tool calls of the last assistant turn not answered yet
    for i, message in enumerate(value):
        if not isinstance(message, Mapping):
            raise RowProblem(f"message is {type(message).__name__}, not an object", column=column, turn=i)
        role_key, content_key = message_keys(message, keys)
        said = message.get(role_key)
        if not isinstance(said, str) or not said:
            raise RowProblem(f"message has no role (key {role_key!r}, got {said!r})", column=column, turn=i)
        role = role_names.get(said)
        if role is None:
            known = ", ".join(sorted(role_names))
            raise RowProblem(
                f"unknown role {said!r} (known: {known}); map it in the template: "
                f"roles = ({said} = user | assistant | system | tool)",
                column=column,
                turn=i,
            )
        content = message.get(content_key)
        normal = {k: v for k, v in message.items() if k not in (role_key, content_key) and v is not None}
        normal["role"] = role
        if said == "function_call":  # ShareGPT's call: the value is the call's JSON
            normal["tool_calls"] = [_call(_json_value(content, column, i, "value"), column, i, 0)]
            content = ""
        if "tool_calls" in normal:
            if role != "assistant":
                raise RowProblem(
                    f"a {role} message has tool_calls; only assistant messages call tools", column=column, turn=i
                )
            calls = normal["tool_calls"]
            if not isinstance(calls, list) or not calls:
                raise RowProblem("tool_calls must be a non-empty list", column=column, turn=i)
            normal["tool_calls"] = [_call(c, column, i, j) for j, c in enumerate(calls)]
            content = "" if content is None else content
        if content is None:
            raise RowProblem(f"message content is null (key {content_key!r})", column=column, turn=i)
        if not isinstance(content, str):
            raise RowProblem(
                f"message content is {type(content).__name__}, not a string (key {content_key!r})",
                column=column,
                turn=i,
            )
        normal["content"] = content
        if role == "tool":
            if pending_calls == 0:
                raise RowProblem(
                    "a tool message without a preceding tool call (an assistant message with tool_calls)",
                    column=column,
                    turn=i,
                )
            pending_calls -= 1
        elif role == "assistant":
            pending_calls = len(normal.get("tool_calls", ()))
        else:
            pending_calls = 0
        out.append(normal)
    return out


def message_keys(message: Mapping[str, Any], keys: Sequence[tuple[str, str]] = ()) -> tuple[str, str]:
    """(role key, content key) of one message: the template's ``keys``, else OpenAI's
    ``role``/``content``, else ShareGPT's ``from``/``value`` (the rule reading and the review
    export share)."""
    names = dict(keys)
    role_key = names.get("role") or ("role" if "role" in message or "from" not in message else "from")
    content_key = names.get("content") or ("content" if "content" in message or "value" not in message else "value")
    return role_key, content_key


def _json_value(text: Any, column: str, turn: int, key: str) -> Any:
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise RowProblem(
            f"{key} is not valid JSON ({e.msg} at column {e.colno}): {text[:60]!r}", column=column, turn=turn
        ) from None


def _call(call: Any, column: str, turn: int, index: int) -> dict[str, Any]:
    """One tool call in the form chat templates read, with its arguments parsed."""
    where = f"tool_calls[{index}]"
    if not isinstance(call, Mapping):
        raise RowProblem(f"{where} is {type(call).__name__}, not an object", column=column, turn=turn)
    function = call.get("function", call)
    if not isinstance(function, Mapping) or not isinstance(function.get("name"), str) or not function["name"]:
        raise RowProblem(f"{where} has no function name", column=column, turn=turn)
    arguments = _json_value(function.get("arguments", {}), column, turn, f"{where}.arguments")
    if not isinstance(arguments, Mapping):
        raise RowProblem(
            f"{where}.arguments must be a JSON object, got {type(arguments).__name__}", column=column, turn=turn
        )
    out = {"type": "function", "function": {"name": function["name"], "arguments": dict(arguments)}}
    if call.get("id") is not None:
        out["id"] = call["id"]
    return out


def tools_of(value: Any, column: str) -> list[dict[str, Any]] | None:
    """A row's function schemas for the chat template (None or empty: no tools)."""
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise RowProblem(f"tools is not valid JSON ({e.msg} at column {e.colno})", column=column) from None
    if not isinstance(value, list) or not all(isinstance(t, Mapping) for t in value):
        raise RowProblem("tools must be a list of function schemas (objects)", column=column)
    return [dict(t) for t in value]


def system_refused(kind: str, chat: bool) -> tuple[str, str] | None:
    """Why a source's `system` cannot apply to rows of ``kind`` (a `tokenize.Mode`'s, or `sftc
    check`'s shape), and what to do; None where it applies (a conversation, or rows with `chat = on`).
    A system message is a turn of a conversation: sftc never invents a plain-text form of it."""
    if kind in ("prompt_completion", "alpaca") and not chat:
        what = "prompt/completion" if kind == "prompt_completion" else "Alpaca"
        return (
            f"its {what} rows are rendered as plain text, without the chat template, so no turn would "
            "carry the system message",
            "set `chat = on` on its template (the prompt becomes a user turn after the system message, "
            "rendered with the tokenizer's chat template), or remove `system`",
        )
    if kind == "text":
        return (
            "its `text` rows are trained as written, with no turns to put a system message before",
            "remove `system`, or write the system text into the rows",
        )
    if kind == "tokens":
        return "its rows are token ids already (pre-tokenized)", "remove `system`"
    return None


def with_system(messages: list[dict[str, Any]], system: str | None) -> list[dict[str, Any]]:
    """``messages`` with ``system`` first, unless the conversation has its own system message."""
    if system is None or any(m["role"] == "system" for m in messages):
        return messages
    return [{"role": "system", "content": system}] + messages


def trained_turns(messages: list[dict[str, Any]], column: str, train_on: str) -> list[int]:
    """The indices of the assistant turns ``train_on`` trains (``assistant`` or ``last_assistant``),
    refusing conversations that give them nothing well defined to learn."""
    assistant = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if not assistant:
        raise RowProblem("conversation has no assistant turn", column=column)
    if train_on == "last_assistant" and messages[-1]["role"] != "assistant":
        raise RowProblem(
            f"the conversation ends on a {messages[-1]['role']} turn, after its last assistant turn "
            "(train_on = last_assistant trains the final answer)",
            column=column,
            turn=len(messages) - 1,
        )
    turns = assistant[-1:] if train_on == "last_assistant" else assistant
    for i in turns:
        if not messages[i]["content"].strip() and not messages[i].get("tool_calls"):
            raise RowProblem("empty assistant message", column=column, turn=i)
        if i == 0:
            raise RowProblem("the conversation starts with an assistant turn: it has no prompt", column=column, turn=i)
    return turns


# ---------------------------------------------------------------- Alpaca


def _alpaca_fields(row: Mapping[str, Any]) -> tuple[str, str, str]:
    fields = []
    for name in ("instruction", "input", "output"):
        value = row.get(name)
        if value is None and name == "input":
            value = ""
        if value is None:
            raise RowProblem(f"missing column {name!r}" if name not in row else "value is null", column=name)
        if not isinstance(value, str):
            raise RowProblem(f"value is {type(value).__name__}, not a string", column=name)
        fields.append(value)
    instruction, given, output = fields
    if not instruction.strip():
        raise RowProblem("empty instruction", column="instruction")
    if not output.strip():
        raise RowProblem("empty completion", column="output")
    return instruction, given, output


def alpaca_prompt(row: Mapping[str, Any]) -> tuple[str, str]:
    """(prompt, completion) of an Alpaca row: the Alpaca prompt, without the input section when
    the input is empty."""
    instruction, given, output = _alpaca_fields(row)
    if given.strip():
        return ALPACA_WITH_INPUT.format(instruction=instruction, input=given), output
    return ALPACA_NO_INPUT.format(instruction=instruction), output


def alpaca_messages(row: Mapping[str, Any], system: str | None) -> list[dict[str, str]]:
    """An Alpaca row as a conversation: the instruction (and input, after a blank line) as the
    user turn, the output as the assistant's."""
    instruction, given, output = _alpaca_fields(row)
    user = instruction + ("\n\n" + given if given.strip() else "")
    messages = [{"role": "system", "content": system}] if system else []
    return messages + [{"role": "user", "content": user}, {"role": "assistant", "content": output}]


# ---------------------------------------------------------------- pre-tokenized


def token_ids(row: Mapping[str, Any], vocab_size: int) -> list[int]:
    """A pre-tokenized row's ``input_ids``, each checked to be a token id of the vocabulary."""
    ids = row.get("input_ids")
    if not isinstance(ids, (list, tuple)) or not ids:
        raise RowProblem("input_ids must be a non-empty list of token ids", column="input_ids")
    for j, t in enumerate(ids):
        if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < vocab_size:
            raise RowProblem(
                f"input_ids[{j}] = {t!r} is not a token id of this tokenizer (0..{vocab_size - 1})", column="input_ids"
            )
    return [int(t) for t in ids]


def token_row(row: Mapping[str, Any], vocab_size: int) -> tuple[list[int], list[int]]:
    """(ids, trained flags) of a pre-tokenized row; ``trained[0]`` is 0 (nothing predicts it)."""
    ids = token_ids(row, vocab_size)
    if row.get("labels") is not None:
        labels = row["labels"]
        if not isinstance(labels, (list, tuple)) or len(labels) != len(ids):
            raise RowProblem(f"labels must be a list as long as input_ids ({len(ids)})", column="labels")
        for j, (label, t) in enumerate(zip(labels, ids)):
            if label != -100 and label != t:
                raise RowProblem(
                    f"labels[{j}] = {label!r} is neither -100 nor input_ids[{j}] = {t}: labels are "
                    "aligned with input_ids (sftc shifts them); give a loss_mask otherwise",
                    column="labels",
                )
        trained = [0 if label == -100 else 1 for label in labels]
    elif row.get("loss_mask") is not None:
        mask = row["loss_mask"]
        if not isinstance(mask, (list, tuple)) or len(mask) != len(ids) or any(m not in (0, 1) for m in mask):
            raise RowProblem(f"loss_mask must be a list of 0/1 as long as input_ids ({len(ids)})", column="loss_mask")
        trained = [int(m) for m in mask]
    else:
        raise RowProblem("a pre-tokenized row needs labels (-100: not trained) or a loss_mask", column="labels")
    trained = [int(t) for t in trained]
    trained[0] = 0
    if not any(trained):
        raise RowProblem("no trainable tokens (every label is -100)", column="labels")
    return ids, trained
