"""One example as the audit reads it: the text training renders for it, split into the part
the model reads (prompt) and the part it learns to write (completion), with where it came from."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class AuditedExample:
    """``id`` is the sample's one identity (`runtime.plan.sample_origin.sample_id`: source,
    file, line and turn); ``where`` is ``file:line`` (plus ``#turn``) for messages.

    Slotted: an audit holds one per row (a million at once), and a per-instance ``__dict__``
    would cost about 100 bytes more per row than the fields' slots."""

    id: str
    source: str
    split: str  # "train" | "eval"
    where: str
    prompt: str  # the rendered text that is not trained (the conversation so far, the template's prompt)
    completion: str  # the rendered text that is trained
    tokens: int  # the example's length in tokens, as the model sees it
    full_tokens: int  # before truncation to seq_len

    @property
    def text(self) -> str:
        return self.prompt + self.completion
