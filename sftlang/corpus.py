"""The characters of a local source's training text, so `sftc check` can prove that
`train sentencepiece(vocab = N) on SOURCE` is large enough before a run starts.

The text is what the run trains the tokenizer on (runtime/preflight/prepare.py `_texts`): each
row, after the source's `rename` and `where`, rendered by its template's prompt and
completion, the turns of a conversation joined by newlines (after the source's system
message, tool calls as their JSON), the Alpaca prompt and output, the `prompt` and
`completion` columns, or the `text` column. Only the head of a big file is read (`columns.sample_rows`), so the count
never exceeds what the run will see, with one exception handled here: rows held out
for eval by a fraction (`split eval = 5%`) are not known without the whole file, so
a character then counts only when at least two rows have it.
"""

from __future__ import annotations

from runtime.plan.vocab_range import CharacterCount

from . import ast
from .columns import ColumnsError, sample_rows
from .files import FileSystem, present_file
from .resolve import DataSource, Template


def _renderer(source: DataSource, template: Template | None, columns: set[str]):
    """row -> training text (None for a row the run skips), chosen as the run chooses
    (runtime.data.tokenize `resolve_mode` after the source's `rename`, then `where`); None
    when no text is trained on (pre-tokenized rows, or no shape fits)."""
    from runtime.plan import row_shapes as shapes
    from runtime.plan.row_templates import RowProblem, parse_template, training_text

    from .check import pairs, shape_of, where_pairs
    from .columns import Columns

    rename, where = pairs(source.settings.get("rename")), where_pairs(source.settings.get("where"))
    moved = dict(rename)
    shape = shape_of(template, Columns(frozenset(moved.get(c, c) for c in columns), frozenset()))
    if shape is None or shape.kind == "tokens":
        return None
    settings = template.settings if template is not None else {}
    given = settings.get("system") or source.settings.get("system")
    system = given.value.value if given is not None and isinstance(given.value, ast.Str) else None
    parts = None
    if shape.kind == "prompt_completion" and "prompt" in settings:
        prompt, completion = settings["prompt"], settings.get("completion")
        if completion is None or not (isinstance(prompt.value, ast.Str) and isinstance(completion.value, ast.Str)):
            return None
        parts = parse_template(prompt.value.value) + parse_template(completion.value.value)
    elif shape.kind == "prompt_completion":
        parts = parse_template("{prompt}{completion}")
    elif shape.kind == "text":
        parts = parse_template("{text}")

    conversation = shape.column if shape.kind == "conversation" else None

    def render(row: dict) -> str | None:
        try:
            kept = shapes.transform_row(row, rename, where)
            if kept is None:
                return None
            return training_text(
                kept,
                parts,
                conversation=conversation,
                roles=shape.roles,
                keys=shape.keys,
                system=system,
                alpaca=shape.kind == "alpaca",
            )
        except RowProblem:
            return None

    return render


def training_characters(source: DataSource, template: Template | None, files: FileSystem) -> CharacterCount | None:
    """The characters of the source's training text as the tokenizer trainer counts them;
    None when the file cannot be sampled (hub, parquet, disk, missing or unreadable)."""
    path_arg = source.source.kwarg("path")
    path = (
        present_file(files, source.base_dir, path_arg.value.value)
        if path_arg is not None and isinstance(path_arg.value, ast.Str)
        else None
    )
    if path is None:
        return None
    options = {
        a.name.name: a.value.value
        for a in source.source.args
        if isinstance(a.name, ast.Name) and isinstance(a.value, ast.Str)
    }
    try:
        on_bad_row = source.settings.get("on_bad_row")
        skip = on_bad_row is not None and getattr(on_bad_row.value, "name", None) == "skip"
        rows = sample_rows(source.source.head.name, path, files, options, skip_bad_rows=skip)
    except (ColumnsError, OSError, UnicodeDecodeError):
        return None  # reported by the column check
    if not rows:
        return None
    from runtime.plan.data_errors import TemplateError

    try:
        render = _renderer(source, template, {key for row in rows for key in row})
    except TemplateError:
        return None  # reported by the template check
    if render is None:
        return None
    count = CharacterCount()
    for row in rows:
        text = render(row)
        if text:
            count.add(text)
    return count


def held_out_by_fraction(source: DataSource) -> bool:
    split = source.settings.get("split")
    return split is not None and not isinstance(split.value, ast.Call)
