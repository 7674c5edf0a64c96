"""`sftc generate RUN`: completions of a prompt or of rows, rendered and decoded as evaluation does."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from runtime.commands import ExitCode, load, say

if TYPE_CHECKING:
    import argparse

    from rich.console import Console

NAME = "generate"
HELP = "completions from a trained run"
TAKES_SPEC = False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN", help="a run directory: runs/<name>/<timestamp>")
    parser.add_argument("--prompt", default=None, help="the input text (fills the template's one placeholder)")
    parser.add_argument(
        "--file",
        default=None,
        help="a JSON-lines file of rows in the source's columns (a conversation's last assistant turn is dropped)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per completion")
    add_generation_arguments(parser)


def add_generation_arguments(parser: argparse.ArgumentParser) -> None:
    """The options `sftc generate` and `sftc chat` share: the source, the step, the sampling."""
    parser.add_argument("--source", default=None, help="use this source's template (default: the first)")
    parser.add_argument("--step", type=int, default=None, help="a checkpoint step (default: the latest)")
    parser.add_argument(
        "--max-new-tokens", type=int, default=None, help="(default: the spec's eval.generate, else 128)"
    )
    parser.add_argument(
        "--temperature", type=float, default=None, help="0 is greedy (default: the spec's eval.generate)"
    )
    parser.add_argument(
        "--top-p",
        type=float,
        default=None,
        help="nucleus sampling, in (0, 1]; applies when temperature > 0 (default: the spec's)",
    )
    parser.add_argument(
        "--top-k",
        type=int,
        default=None,
        help="sample among the k likeliest tokens, 0 = all; applies when temperature > 0 (default: the spec's)",
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="the sampling seed (default: the spec's eval.generate seed)"
    )


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


def main(args: argparse.Namespace, console: Console) -> int:
    """Completions of `--prompt` or of each `--file` row, rendered and decoded as evaluation does."""
    import json

    from runtime.data.prompts import PromptError, render_prompt
    from runtime.runs.trained_run import answers, source_mode

    if (args.prompt is None) == (args.file is None):
        console.print("[bold red]error[/]: give exactly one of --prompt TEXT or --file prompts.jsonl")
        return ExitCode.USAGE
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
        say(console, "error", str(error))
        return ExitCode.USAGE
    except OSError as error:
        say(console, "error", str(error))
        return ExitCode.FAIL
    for (_, value), (ids, finished) in zip(inputs, results):
        text = trained.tokenizer.decode(ids, skip_special_tokens=True)
        if args.json:
            print(json.dumps({"input": value, "completion": text, "tokens": len(ids), "finished": finished}))
        else:
            print(text)
    return ExitCode.OK
