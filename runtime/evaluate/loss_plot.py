"""The run report's loss chart as a PNG, drawn with matplotlib.

`line_chart(path, series, title)` draws each (name, xs, ys) series (train loss,
eval loss, eval loss per source) as a line in its own colour, with labelled axes,
a grid, a legend and a title, and writes a PNG of `SIZE` pixels. Sparse series
(eval every few hundred steps) get a marker at each point. A loss that falls over
more than two decades is drawn on a log scale, so the end of training is not a
flat line at zero.

matplotlib is imported on first use (`sftc check` never pays for it) and drives
its Agg renderer directly: no display, no global pyplot state.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

SIZE = (900, 500)  # width, height in pixels
DPI = 100
MARKED = 30  # a series of at most this many points shows each one
LOG_RANGE = 100.0  # max / min above this: a log scale

Series = tuple[str, Sequence[float], Sequence[float]]


def chart(series: Sequence[Series], title: str, x_label: str = "step", y_label: str = "loss"):
    """The matplotlib Figure of `line_chart` (tests read its lines back)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(SIZE[0] / DPI, SIZE[1] / DPI), dpi=DPI, layout="tight")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    values = [float(y) for _, _, ys in series for y in ys]
    for index, (name, xs, ys) in enumerate(series):
        axes.plot(
            xs,
            ys,
            label=name,
            color=f"C{index}",
            linewidth=1.6,
            marker="o" if len(xs) <= MARKED else None,
            markersize=3.5,
        )
    if values and min(values) > 0 and max(values) / min(values) > LOG_RANGE:
        axes.set_yscale("log")
        y_label += " (log scale)"
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
    axes.set_xlabel(x_label)
    axes.set_ylabel(y_label)
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    if series:
        axes.legend()
    return figure


def line_chart(
    path: str | Path, series: Sequence[Series], title: str, x_label: str = "step", y_label: str = "loss"
) -> Path:
    """Write the chart of ``series`` to ``path`` (PNG); returns the path."""
    path = Path(path)
    chart(series, title, x_label, y_label).savefig(path, format="png", dpi=DPI)
    return path
