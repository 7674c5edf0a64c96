"""`sftc chat RUN`: talk to a run, each answer streamed as it is decoded."""

from __future__ import annotations

import argparse

from rich.console import Console

from runtime.commands import EXIT_OK, EXIT_USAGE, load, runtime_error, runtime_errors
from runtime.commands.sftc_generate import generation_settings


def main(args: argparse.Namespace) -> int:
    """Talk to a run: each answer streamed as it is decoded; chat templates keep the conversation."""
    from runtime.data.prompts import PromptError, check_text, render_prompt, stop_ids
    from runtime.runs.trained_run import reply, source_mode

    console = Console(stderr=True, highlight=False)
    try:
        trained = load(args, console)
        mode = source_mode(trained.plan, args.run_dir, args.source)
        check_text(mode)
        settings = generation_settings(args, trained)
        stops = stop_ids(trained.tokenizer)
    except (PromptError, ValueError) as error:
        runtime_error(console, error)
        return EXIT_USAGE
    except runtime_errors() as error:
        return runtime_error(console, error)
    conversational = mode.kind == "messages" or mode.chat
    out = Console(highlight=False)
    out.print(
        f"[dim]{trained.plan.name} at step {trained.step}; {'a conversation' if conversational else 'each line is a new prompt'}; Ctrl-D to quit[/]"
    )
    history: list[dict] = []
    turn = 0
    while True:
        try:
            text = input("> ")
        except (EOFError, KeyboardInterrupt):
            out.print()
            return EXIT_OK
        if not text.strip():
            continue
        try:
            prompt = render_prompt(trained.tokenizer, mode, text, history)
        except PromptError as error:
            runtime_error(console, error)
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
