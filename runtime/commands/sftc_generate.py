"""`sftc generate RUN`: completions of a prompt or of rows, rendered and decoded as evaluation does."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from runtime.commands import EXIT_OK, EXIT_USAGE, load, runtime_error, runtime_errors


def generation_settings(args, trained):
    """The spec's `eval.generate` with the command line's overrides (ValueError: an impossible setting)."""
    from runtime.runs.trained_run import decoding

    return decoding(trained.plan, args.max_new_tokens, args.temperature, args.top_p, args.top_k, args.seed)


def _read_rows(path: str) -> list[tuple[int, object]]:
    """(line number, JSON value) of each non-blank line; ValueError names the line that is not JSON."""
    import json

    rows = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                rows.append((number, json.loads(line)))
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not JSON ({error.msg})") from None
            if not isinstance(rows[-1][1], (dict, str)):
                raise ValueError(
                    f"{path}:{number}: a row is a JSON object of columns (or a string), "
                    f"not {type(rows[-1][1]).__name__}"
                )
    return rows


def main(args: argparse.Namespace) -> int:
    """Completions of `--prompt` or of each `--file` row, rendered and decoded as evaluation does."""
    import json

    from runtime.data.prompts import PromptError, render_prompt
    from runtime.runs.trained_run import answers, source_mode

    console = Console(stderr=True, highlight=False)
    if (args.prompt is None) == (args.file is None):
        console.print("[bold red]error[/]: give exactly one of --prompt TEXT or --file prompts.jsonl")
        return EXIT_USAGE
    try:
        inputs = [(None, args.prompt)] if args.prompt is not None else _read_rows(args.file)
        trained = load(args, console)
        mode = source_mode(trained.plan, args.run_dir, args.source)
        settings = generation_settings(args, trained)
        prompts = []
        for number, value in inputs:
            try:
                prompts.append(render_prompt(trained.tokenizer, mode, value))
            except PromptError as error:
                raise PromptError(f"{args.file}:{number}: {error}" if number is not None else str(error)) from None
        with console.status(f"generating {len(prompts)} completion{'s' * (len(prompts) != 1)}"):
            results = answers(trained, prompts, settings)
    except ValueError as error:  # a file that is not JSON rows, an impossible sampling setting
        runtime_error(console, error)
        return EXIT_USAGE
    except OSError as error:
        return runtime_error(console, error)
    except runtime_errors() as error:
        return runtime_error(console, error)
    for (_, value), (ids, finished) in zip(inputs, results):
        text = trained.tokenizer.decode(ids, skip_special_tokens=True)
        if args.json:
            print(json.dumps({"input": value, "completion": text, "tokens": len(ids), "finished": finished}))
        else:
            print(text)
    return EXIT_OK
