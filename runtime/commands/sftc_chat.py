"""`sftc chat RUN`: talk to a run, each answer streamed as it is decoded."""

from __future__ import annotations

from typing import TYPE_CHECKING

from runtime.commands import ExitCode, load, say
from runtime.commands.sftc_generate import add_generation_arguments, generation_settings

if TYPE_CHECKING:
    import argparse

    from rich.console import Console

NAME = "chat"
HELP = "talk to a trained run, streaming tokens"
TAKES_SPEC = False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN", help="a run directory: runs/<name>/<timestamp>")
    add_generation_arguments(parser)


def main(args: argparse.Namespace, console: Console) -> int:
    """Talk to a run: each answer streamed as it is decoded; chat templates keep the conversation."""
    from rich.console import Console

    from runtime.data.prompts import PromptError, check_text, render_prompt, stop_ids
    from runtime.runs.trained_run import reply, source_mode

    try:
        trained = load(args, console)
        mode = source_mode(trained.plan, args.run_dir, args.source)
        check_text(mode)
        settings = generation_settings(args, trained)
        stops = stop_ids(trained.tokenizer)
    except (PromptError, ValueError) as error:
        say(console, "error", str(error))
        return ExitCode.USAGE
    conversational = mode.kind == "messages" or mode.chat
    out = Console(highlight=False)
    what = "a conversation" if conversational else "each line is a new prompt"
    out.print(f"[dim]{trained.plan.name} at step {trained.step}; {what}; Ctrl-D to quit[/]")
    history: list[dict] = []
    turn = 0
    while True:
        try:
            text = input("> ")
        except (EOFError, KeyboardInterrupt):
            out.print()
            return ExitCode.OK
        if not text.strip():
            continue
        try:
            prompt = render_prompt(trained.tokenizer, mode, text, history)
        except PromptError as error:
            say(console, "error", str(error))
            continue
        produced: list[int] = []
        shown = ""
        try:
            for token in reply(trained, prompt, settings, turn, stops):
                produced.append(token)
                decoded = trained.tokenizer.decode(produced, skip_special_tokens=True)
                out.print(decoded[len(shown) :], end="", soft_wrap=True, markup=False)
                shown = decoded
        except KeyboardInterrupt:
            pass
        out.print()
        turn += 1
        if conversational:
            history = prompt.conversation + [{"role": "assistant", "content": shown}]
