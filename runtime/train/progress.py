"""Progress of a run as the user watches it: a live rich bar on a terminal (step,
loss, lr, tokens/s, elapsed, ETA), plain lines every few seconds otherwise (CI logs)."""

from __future__ import annotations

import time


class RichProgress:
    def __init__(self, console):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss [cyan]{task.fields[loss]:.4f}[/]"),
            TextColumn("lr {task.fields[lr]:.2e}"),
            TextColumn("{task.fields[rate]:,.0f} tok/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
        )
        self._task = None

    def __enter__(self):
        self._progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self._progress.__exit__(*exc)

    def start(self, total: int, completed: int) -> None:
        self._task = self._progress.add_task(
            "train", total=total, completed=completed, loss=float("nan"), lr=0.0, rate=0.0
        )

    def update(self, completed: int, **fields) -> None:
        self._progress.update(self._task, completed=completed, **fields)


class PlainProgress:
    """One line per `every` seconds (and the last step), for logs that are not terminals."""

    def __init__(self, console, every: float = 10.0):
        self.console, self.every = console, every
        self.total = self.started = self.first = None
        self.last_print = 0.0
        self.fields: dict = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def start(self, total: int, completed: int) -> None:
        self.total, self.first, self.started = total, completed, time.perf_counter()

    def update(self, completed: int, **fields) -> None:
        self.fields.update(fields)
        now = time.perf_counter()
        if completed < self.total and now - self.last_print < self.every:
            return
        self.last_print = now
        done = completed - self.first
        elapsed = now - self.started
        eta = elapsed / done * (self.total - completed) if done else float("nan")
        f = self.fields
        line = f"step {completed}/{self.total}"
        if "loss" in f:
            line += f"  loss {f['loss']:.4f}  lr {f['lr']:.2e}  {f['rate']:,.0f} tok/s"
        self.console.print(f"{line}  elapsed {elapsed:.0f}s  ETA {eta:.0f}s", highlight=False)


def progress_for(console):
    return RichProgress(console) if console.is_terminal else PlainProgress(console)
