"""Line charts as PNG files, with numpy and zlib only (no plotting library needed).

`line_chart(path, series, title)` draws each (xs, ys) series in its own colour on
shared axes with tick labels, a title and a legend, and writes an RGB PNG. It is
what the run report embeds as the loss curve.
"""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

# A 5x7 bitmap font for chart text: seven rows of five pixels per character.
_FONT = {
    '0': ['.###.', '#...#', '#..##', '#.#.#', '##..#', '#...#', '.###.'],
    '1': ['..#..', '.##..', '..#..', '..#..', '..#..', '..#..', '.###.'],
    '2': ['.###.', '#...#', '....#', '...#.', '..#..', '.#...', '#####'],
    '3': ['#####', '...#.', '..#..', '...#.', '....#', '#...#', '.###.'],
    '4': ['...#.', '..##.', '.#.#.', '#..#.', '#####', '...#.', '...#.'],
    '5': ['#####', '#....', '####.', '....#', '....#', '#...#', '.###.'],
    '6': ['..##.', '.#...', '#....', '####.', '#...#', '#...#', '.###.'],
    '7': ['#####', '....#', '...#.', '..#..', '.#...', '.#...', '.#...'],
    '8': ['.###.', '#...#', '#...#', '.###.', '#...#', '#...#', '.###.'],
    '9': ['.###.', '#...#', '#...#', '.####', '....#', '...#.', '.##..'],
    '.': ['.....', '.....', '.....', '.....', '.....', '.##..', '.##..'],
    ',': ['.....', '.....', '.....', '.....', '.##..', '..#..', '.#...'],
    ':': ['.....', '.##..', '.##..', '.....', '.##..', '.##..', '.....'],
    '-': ['.....', '.....', '.....', '#####', '.....', '.....', '.....'],
    '+': ['.....', '..#..', '..#..', '#####', '..#..', '..#..', '.....'],
    '=': ['.....', '.....', '#####', '.....', '#####', '.....', '.....'],
    '/': ['....#', '....#', '...#.', '..#..', '.#...', '#....', '#....'],
    '(': ['...#.', '..#..', '.#...', '.#...', '.#...', '..#..', '...#.'],
    ')': ['.#...', '..#..', '...#.', '...#.', '...#.', '..#..', '.#...'],
    '%': ['##...', '##..#', '...#.', '..#..', '.#...', '#..##', '...##'],
    '_': ['.....', '.....', '.....', '.....', '.....', '.....', '#####'],
    'a': ['.....', '.....', '.###.', '....#', '.####', '#...#', '.####'],
    'b': ['#....', '#....', '####.', '#...#', '#...#', '#...#', '####.'],
    'c': ['.....', '.....', '.###.', '#....', '#....', '#...#', '.###.'],
    'd': ['....#', '....#', '.####', '#...#', '#...#', '#...#', '.####'],
    'e': ['.....', '.....', '.###.', '#...#', '#####', '#....', '.###.'],
    'f': ['..##.', '.#..#', '.#...', '###..', '.#...', '.#...', '.#...'],
    'g': ['.....', '.####', '#...#', '#...#', '.####', '....#', '.###.'],
    'h': ['#....', '#....', '#.##.', '##..#', '#...#', '#...#', '#...#'],
    'i': ['..#..', '.....', '.##..', '..#..', '..#..', '..#..', '.###.'],
    'j': ['...#.', '.....', '..##.', '...#.', '...#.', '#..#.', '.##..'],
    'k': ['#....', '#....', '#..#.', '#.#..', '##...', '#.#..', '#..#.'],
    'l': ['.##..', '..#..', '..#..', '..#..', '..#..', '..#..', '.###.'],
    'm': ['.....', '.....', '##.#.', '#.#.#', '#.#.#', '#...#', '#...#'],
    'n': ['.....', '.....', '#.##.', '##..#', '#...#', '#...#', '#...#'],
    'o': ['.....', '.....', '.###.', '#...#', '#...#', '#...#', '.###.'],
    'p': ['.....', '.....', '####.', '#...#', '####.', '#....', '#....'],
    'q': ['.....', '.....', '.####', '#...#', '.####', '....#', '....#'],
    'r': ['.....', '.....', '#.##.', '##..#', '#....', '#....', '#....'],
    's': ['.....', '.....', '.####', '#....', '.###.', '....#', '####.'],
    't': ['.#...', '.#...', '###..', '.#...', '.#...', '.#..#', '..##.'],
    'u': ['.....', '.....', '#...#', '#...#', '#...#', '#..##', '.##.#'],
    'v': ['.....', '.....', '#...#', '#...#', '#...#', '.#.#.', '..#..'],
    'w': ['.....', '.....', '#...#', '#...#', '#.#.#', '#.#.#', '.#.#.'],
    'x': ['.....', '.....', '#...#', '.#.#.', '..#..', '.#.#.', '#...#'],
    'y': ['.....', '.....', '#...#', '#...#', '.####', '....#', '.###.'],
    'z': ['.....', '.....', '#####', '...#.', '..#..', '.#...', '#####'],
}
_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189)]
_WIDTH, _HEIGHT, _LEFT, _RIGHT, _TOP, _BOTTOM = 720, 400, 70, 20, 36, 40


def _glyph(ch: str) -> np.ndarray:
    rows = _FONT.get(ch, _FONT.get(ch.lower(), ["....."] * 7))
    return np.array([[c == "#" for c in row] for row in rows], bool)


def _text(canvas: np.ndarray, x: int, y: int, text: str, colour=(40, 40, 40), scale: int = 1) -> None:
    for i, ch in enumerate(text):
        glyph = np.kron(_glyph(ch), np.ones((scale, scale), bool))
        gx = x + i * 6 * scale
        h, w = glyph.shape
        if gx < 0 or y < 0 or gx + w > canvas.shape[1] or y + h > canvas.shape[0]:
            continue
        canvas[y : y + h, gx : gx + w][glyph] = colour


def _line(canvas: np.ndarray, x0: float, y0: float, x1: float, y1: float, colour, thick: int = 1) -> None:
    steps = int(max(abs(x1 - x0), abs(y1 - y0))) + 1
    xs = np.linspace(x0, x1, steps).round().astype(int)
    ys = np.linspace(y0, y1, steps).round().astype(int)
    for dx in range(thick):
        for dy in range(thick):
            xx, yy = np.clip(xs + dx, 0, canvas.shape[1] - 1), np.clip(ys + dy, 0, canvas.shape[0] - 1)
            canvas[yy, xx] = colour


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    if high <= low:
        high = low + 1.0
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = min((m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw), default=raw)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def _label(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1e5 or abs(value) < 1e-3:
        return f"{value:.0e}".replace("e+0", "e").replace("e-0", "e-")
    return f"{value:.4g}"


def line_chart(path: str | Path, series: Sequence[tuple[str, Sequence[float], Sequence[float]]], title: str, x_label: str = "step") -> Path:
    """Write a PNG chart of `series` = [(name, xs, ys), ...]; returns the path."""
    canvas = np.full((_HEIGHT, _WIDTH, 3), 255, np.uint8)
    plotted = [(n, np.asarray(x, float), np.asarray(y, float)) for n, x, y in series if len(x)]
    finite = [y[np.isfinite(y)] for _, _, y in plotted]
    xs_all = np.concatenate([x for _, x, _ in plotted]) if plotted else np.array([0.0, 1.0])
    ys_all = np.concatenate(finite) if finite and any(len(f) for f in finite) else np.array([0.0, 1.0])
    x_lo, x_hi = float(xs_all.min()), float(max(xs_all.max(), xs_all.min() + 1))
    y_lo, y_hi = float(ys_all.min()), float(ys_all.max())
    pad = (y_hi - y_lo) * 0.05 or 0.5
    y_lo, y_hi = y_lo - pad, y_hi + pad
    width, height = _WIDTH - _LEFT - _RIGHT, _HEIGHT - _TOP - _BOTTOM

    def px(x):
        return _LEFT + (x - x_lo) / (x_hi - x_lo) * width

    def py(y):
        return _TOP + (1 - (y - y_lo) / (y_hi - y_lo)) * height

    for tick in _ticks(y_lo, y_hi):
        _line(canvas, _LEFT, py(tick), _LEFT + width, py(tick), (230, 230, 230))
        label = _label(tick)
        _text(canvas, _LEFT - 6 - 6 * len(label), int(py(tick)) - 3, label)
    for tick in _ticks(x_lo, x_hi, 6):
        _line(canvas, px(tick), _TOP + height, px(tick), _TOP + height + 4, (80, 80, 80))
        label = _label(tick)
        _text(canvas, int(px(tick)) - 3 * len(label), _TOP + height + 8, label)
    _line(canvas, _LEFT, _TOP, _LEFT, _TOP + height, (80, 80, 80))
    _line(canvas, _LEFT, _TOP + height, _LEFT + width, _TOP + height, (80, 80, 80))
    for index, (name, x, y) in enumerate(plotted):
        colour = _COLOURS[index % len(_COLOURS)]
        keep = np.isfinite(y)
        x, y = x[keep], y[keep]
        if len(x) == 1:
            _line(canvas, px(x[0]) - 2, py(y[0]), px(x[0]) + 2, py(y[0]), colour, 3)
        for a in range(len(x) - 1):
            _line(canvas, px(x[a]), py(y[a]), px(x[a + 1]), py(y[a + 1]), colour, 2)
        _line(canvas, _LEFT + width - 120, _TOP + 10 + 14 * index, _LEFT + width - 100, _TOP + 10 + 14 * index, colour, 3)
        _text(canvas, _LEFT + width - 94, _TOP + 7 + 14 * index, name)
    _text(canvas, _LEFT, 10, title, scale=2)
    _text(canvas, _LEFT + width // 2 - 3 * len(x_label), _HEIGHT - 14, x_label)
    return write_png(path, canvas)


def write_png(path: str | Path, rgb: np.ndarray) -> Path:
    """An RGB uint8 array [height, width, 3] as a PNG file."""
    height, width, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[row].tobytes() for row in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
    path = Path(path)
    path.write_bytes(png)
    return path
