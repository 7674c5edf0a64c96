"""The Ollama ``Modelfile`` beside a GGUF export: ``ollama create NAME -f Modelfile`` serves the
model with the prompt format and stop tokens the run trained and evaluated with.

Ollama does not run Jinja chat templates: its ``TEMPLATE`` is a Go template over ``.Messages``.
So the run's template is matched against the styles sftc knows (ChatML, Llama 3, Mistral
``[INST]``) by rendering probe conversations with both and comparing the text; a match writes
that style's Go template (and, when the run's template inserts a default system message, that
message as ``SYSTEM``). A template that matches none is not guessed at: the Modelfile says so and
carries the Jinja text as comments, and the GGUF keeps it (``tokenizer.chat_template``).

``SYSTEM`` is the system message the run trained with when every source has the same one (the
spec's `system`, `runtime.plan.data_plan.system_message`): the model learned its task under it.
``PARAMETER stop`` is written for every token of `runtime.data.prompts.stop_ids`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ChatStyle", "STYLES", "chat_style", "modelfile_text", "write_modelfile"]

Messages = Sequence[dict[str, str]]
_SYSTEM_MARK = "\x00system\x00"


@dataclass(frozen=True)
class ChatStyle:
    """A prompt format both Jinja (the run's template) and Go (Ollama's) can express."""

    name: str
    render: Callable[[Messages, str], str]  # (messages, eos text) -> text with the generation prompt
    go_template: str
    system: bool = True  # whether the format has system turns


def _chatml(messages: Messages, eos: str) -> str:
    turns = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return turns + "<|im_start|>assistant\n"


def _llama3(messages: Messages, eos: str) -> str:
    turns = "".join(f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n{m['content']}<|eot_id|>" for m in messages)
    return turns + "<|start_header_id|>assistant<|end_header_id|>\n\n"


def _mistral(messages: Messages, eos: str) -> str:
    return "".join(
        f"[INST] {m['content']} [/INST]" if m["role"] == "user" else f"{m['content']}{eos}" for m in messages
    )


STYLES = (
    ChatStyle(
        "ChatML",
        _chatml,
        "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n",
    ),
    ChatStyle(
        "Llama 3",
        _llama3,
        "{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>{{ end }}"
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
    ),
    ChatStyle(
        "Mistral",
        _mistral,
        '{{- range .Messages }}{{ if eq .Role "user" }}[INST] {{ .Content }} [/INST]'
        '{{ else if eq .Role "assistant" }}{{ .Content }}{{ eos }}{{ end }}{{ end }}',
        system=False,
    ),
)

_PROBE = [
    {"role": "user", "content": "What is two plus three?"},
    {"role": "assistant", "content": "Five."},
    {"role": "user", "content": "And four plus four?"},
]


def _jinja(tokenizer: Any, messages: Messages, strip_bos: bool) -> str | None:
    """The run's rendering of ``messages`` with the generation prompt (with ``strip_bos``, a leading
    BOS text taken off); None when the template refuses them."""
    try:
        text = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    except Exception:  # noqa: BLE001 - a template's raise_exception (e.g. no system role) is its answer
        return None
    bos = tokenizer.bos_token
    return text[len(bos) :] if strip_bos and bos and text.startswith(bos) else text


def _default_system(style: ChatStyle, rendered: str | None, eos: str) -> str | None | bool:
    """The system message the run's template inserts when a conversation has none (``rendered``:
    its rendering of the probe): None when it inserts none, False when the rendering fits the style
    in no way."""
    if rendered == style.render(_PROBE, eos):
        return None
    if not style.system or rendered is None:
        return False
    before, _, after = style.render([{"role": "system", "content": _SYSTEM_MARK}] + _PROBE, eos).partition(_SYSTEM_MARK)
    if not (rendered.startswith(before) and rendered.endswith(after)):
        return False
    system = rendered[len(before) : len(rendered) - len(after)]
    if style.render([{"role": "system", "content": system}] + _PROBE, eos) == rendered:
        return system
    return False


def chat_style(tokenizer: Any) -> tuple[ChatStyle | None, str | None, str]:
    """(the style the run's chat template renders, its default system message, the text the Go
    template must start with), or (None, None, ""). The template's rendering is matched as it is
    (SmolLM2's BOS is ``<|im_start|>``, the start of every ChatML turn), then with a leading BOS
    text off (Llama 3's ``{{ bos_token }}``): that BOS is the Go template's first text unless the
    tokenizer adds it itself, as llama.cpp then does (`adds_special_tokens`, the GGUF's flag)."""
    from runtime.data.prompts import adds_special_tokens

    template = getattr(tokenizer, "chat_template", None)
    if not template:
        return None, None, ""
    eos = tokenizer.eos_token or ""
    with_system = [{"role": "system", "content": "You answer briefly."}] + _PROBE
    for strip_bos in (False, True):
        for style in STYLES:
            if style.system and _jinja(tokenizer, with_system, strip_bos) != style.render(with_system, eos):
                continue
            default = _default_system(style, _jinja(tokenizer, _PROBE, strip_bos), eos)
            if default is False:
                continue
            lead = tokenizer.bos_token if strip_bos and not adds_special_tokens(tokenizer)[0] else ""
            return style, default if isinstance(default, str) else None, lead
    return None, None, ""


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def modelfile_text(gguf_name: str, tokenizer: Any, stops: Sequence[int], trained_system: str | None = None) -> str:
    """The Modelfile for the GGUF file ``gguf_name`` (a path relative to the Modelfile).
    ``trained_system``: the system message the run trained every conversation with (the spec's
    `system`); it is the ``SYSTEM`` then, in place of the template's default."""
    lines = [
        "# Written by `sftc export --format gguf`: `ollama create NAME -f Modelfile` in this directory.",
        f"FROM ./{gguf_name}",
        "",
    ]
    style, system, lead = chat_style(tokenizer)
    eos = tokenizer.eos_token or ""
    if style is not None:
        template = lead + style.go_template.replace("{{ eos }}", eos)
        lines += [f"# the run's chat template is {style.name} style; this is the same prompt format in Go form"]
        lines += [f'TEMPLATE """{template}"""']
        if trained_system is not None and style.system:
            lines += ["# the system message the run trained with (the spec's `system`)"]
            lines += [f'SYSTEM """{trained_system}"""']
        elif system:
            lines += [f'SYSTEM """{system}"""']
    elif getattr(tokenizer, "chat_template", None):
        lines += [
            "# NOTE: the run's chat template is not ChatML, Llama 3 or Mistral style, so sftc wrote no TEMPLATE:",
            "# Ollama's Go templates cannot run it as is. Write a TEMPLATE that renders like this Jinja text",
            "# (the GGUF carries it too, as tokenizer.chat_template):",
        ]
        lines += [f"#   {line}" for line in tokenizer.chat_template.splitlines()]
    else:
        lines += [
            "# the run trained without a chat template: prompts are raw text, rendered as training did",
            'TEMPLATE """{{ .Prompt }}"""',
        ]
    lines.append("")
    for token in tokenizer.convert_ids_to_tokens([int(s) for s in stops]):
        lines.append(f"PARAMETER stop {_quoted(token)}")
    return "\n".join(lines) + "\n"


def write_modelfile(
    directory: str | Path, gguf_name: str, tokenizer: Any, stops: Sequence[int], trained_system: str | None = None
) -> Path:
    """Write ``directory/Modelfile`` for the GGUF file ``gguf_name`` in that directory."""
    path = Path(directory) / "Modelfile"
    path.write_text(modelfile_text(gguf_name, tokenizer, stops, trained_system))
    return path
