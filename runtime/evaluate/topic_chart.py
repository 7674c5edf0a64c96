"""The chart of topic size against score: does the model fail where the data is thin?

One point per topic the eval reaches: its training rows (x, a log scale when they span more
than a decade) against the tuned model's score (y), the base model's score on the same rows as a
hollow grey point joined to it, so the gain is the segment. The weakest topic is red. Drawn with
matplotlib's Agg renderer directly, as the loss chart is (`runtime.evaluate.loss_plot`).
"""

from __future__ import annotations

from pathlib import Path

from runtime.evaluate.loss_plot import DPI, SIZE
from runtime.evaluate.topic_scores import TopicTable

LOG_SPAN = 10.0  # largest / smallest topic above this: a log scale
LABEL_TERMS = 2  # terms of a topic's label written beside its point


def chart(table: TopicTable):
    """The matplotlib Figure (tests read its points back)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(SIZE[0] / DPI, SIZE[1] / DPI), dpi=DPI, layout="tight")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    scored = table.scored
    weakest = table.weakest
    for topic in scored:
        x = topic.train_rows
        if topic.base is not None:
            axes.plot([x, x], [topic.base, topic.tuned], color="0.6", linewidth=1, zorder=1)
            axes.scatter([x], [topic.base], facecolors="none", edgecolors="0.5", s=36, zorder=2)
        axes.scatter([x], [topic.tuned], color="C3" if topic is weakest else "C0", s=48, zorder=3)
        axes.annotate(
            ", ".join(topic.label.split(", ")[:LABEL_TERMS]),
            (x, topic.tuned),
            textcoords="offset points",
            xytext=(6, 4),
            fontsize=8,
        )
    sizes = [t.train_rows for t in scored]
    if sizes and min(sizes) > 0 and max(sizes) / min(sizes) > LOG_SPAN:
        axes.set_xscale("log")
    axes.set_xlabel("training rows in the topic")
    axes.set_ylabel(table.metric + (" (hollow: base model)" if any(t.base is not None for t in scored) else ""))
    axes.set_title(f"{table.metric} per topic against its training rows")
    axes.grid(True, alpha=0.3)
    return figure


def write_topic_chart(path: str | Path, table: TopicTable) -> Path | None:
    """Write the chart to ``path`` (PNG) when at least one topic has a score; returns the path."""
    if not table.scored:
        return None
    path = Path(path)
    chart(table).savefig(path, format="png", dpi=DPI)
    return path
