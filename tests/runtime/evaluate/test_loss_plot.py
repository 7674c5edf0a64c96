"""The loss chart a user opens: a PNG of the stated size that shows both curves, with
labelled axes, a legend and a title."""

import numpy as np
from matplotlib.image import imread

from runtime.evaluate.loss_plot import SIZE, chart, line_chart

BLUE, ORANGE = np.array([31, 119, 180]), np.array([255, 127, 14])  # matplotlib's C0, C1


def _series():
    x = np.arange(1, 51)
    return [("train loss", x, 3 - x / 25), ("eval loss", x[::10], 2.5 - x[::10] / 25)]


def _near(pixels: np.ndarray, colour: np.ndarray) -> np.ndarray:
    return np.abs(pixels.astype(int) - colour).max(-1) <= 12


def test_chart_has_both_curves_labelled():
    figure = chart(_series(), "loss by step")
    (axes,) = figure.axes
    lines = axes.get_lines()
    assert [line.get_label() for line in lines] == ["train loss", "eval loss"]
    assert lines[0].get_xdata().tolist() == list(range(1, 51))
    assert np.allclose(lines[1].get_ydata(), 2.5 - np.arange(1, 51, 10) / 25)
    assert (axes.get_xlabel(), axes.get_ylabel(), axes.get_title()) == ("step", "loss", "loss by step")
    assert [t.get_text() for t in axes.get_legend().get_texts()] == ["train loss", "eval loss"]
    assert axes.get_yscale() == "linear"


def test_a_loss_falling_over_decades_is_drawn_on_a_log_scale():
    x = np.arange(1, 801)
    axes = chart([("train loss", x, 5 * np.exp(-x / 80))], "loss").axes[0]
    assert axes.get_yscale() == "log" and axes.get_ylabel() == "loss (log scale)"


def test_png_shows_both_curves(tmp_path):
    path = line_chart(tmp_path / "loss.png", _series(), "loss by step")
    pixels = (imread(path)[..., :3] * 255).round()
    assert pixels.shape == (SIZE[1], SIZE[0], 3)
    blue, orange = _near(pixels, BLUE), _near(pixels, ORANGE)
    # whole curves across the plot, not only the legend's short samples
    assert len(np.unique(np.nonzero(blue)[1])) > SIZE[0] // 2
    assert len(np.unique(np.nonzero(orange)[1])) > SIZE[0] // 2
    # the train curve falls: its pixels sit higher (smaller row) on the left than on the right
    rows, cols = np.nonzero(blue[:, : SIZE[0] * 3 // 4])
    assert rows[cols < SIZE[0] // 4].mean() < rows[cols > SIZE[0] // 2].mean()
