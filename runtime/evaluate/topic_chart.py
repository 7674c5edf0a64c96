"""The chart of topic size against score: does the model fail where the data is thin?

One point per topic the eval reaches: its training rows (x, a log scale when they span more than
a decade) against the tuned model's score (y, the metric that tells the topics apart:
`TopicTable.metric`), the base model's score on the same rows as a hollow grey point joined to
it, so the gain is the segment. The weakest topic is red; the topics below the best score, the
thinnest and the largest are labelled with their first terms. Drawn with matplotlib's Agg
renderer directly, as the loss chart is (`runtime.evaluate.loss_plot`).
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
    scored, metric, weakest = table.scored, table.metric, table.weakest
    best = max((t.tuned[metric] for t in scored), default=0.0)
    largest = max(scored, key=lambda t: t.train_rows, default=None)
    # labelled: the topics below the best score, the weakest, the thinnest and the largest (the
    # rest sit at the top, where labels would cover each other)
    named = [t for t in scored if t.tuned[metric] < best or t is weakest or t is table.thinnest or t is largest]
    for topic in scored:
        x, y = topic.train_rows, topic.tuned[metric]
        if metric in topic.base:
            axes.plot([x, x], [topic.base[metric], y], color="0.6", linewidth=1, zorder=1)
            axes.scatter([x], [topic.base[metric]], facecolors="none", edgecolors="0.5", s=36, zorder=2)
        axes.scatter([x], [y], color="C3" if topic is weakest else "C0", s=48, zorder=3)
        if topic not in named:
            continue
        axes.annotate(
            ", ".join(topic.label.split(", ")[:LABEL_TERMS]),
            (x, y),
            textcoords="offset points",
            xytext=(6, 4),
            fontsize=8,
        )
    sizes = [t.train_rows for t in scored]
    if sizes and min(sizes) > 0 and max(sizes) / min(sizes) > LOG_SPAN:
        from matplotlib.ticker import FuncFormatter

        axes.set_xscale("log")
        plain = FuncFormatter(lambda v, _: f"{v:g}" if f"{v:g}"[0] in "1235" else "")  # 50 100 200 300 500, not 6x10^1
        axes.xaxis.set_major_formatter(plain)
        axes.xaxis.set_minor_formatter(plain)
    axes.set_xlabel("training rows in the topic")
    axes.set_ylabel(metric + (" (hollow: base model)" if any(metric in t.base for t in scored) else ""))
    axes.set_title(f"{metric} per topic against its training rows")
    axes.grid(True, alpha=0.3)
    return figure


def write_topic_chart(path: str | Path, table: TopicTable) -> Path | None:
    """Write the chart to ``path`` (PNG) when at least one topic has a score; returns the path."""
    if not table.scored:
        return None
    path = Path(path)
    chart(table).savefig(path, format="png", dpi=DPI)
    return path
