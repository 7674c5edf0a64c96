"""The dependency-free PNG chart is a valid PNG whose pixels show the curve."""

import struct
import zlib

import numpy as np

from runtime.plot import line_chart, write_png


def _decode(data: bytes) -> np.ndarray:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    at, idat, size = 8, b"", None
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind, body = data[at + 4 : at + 8], data[at + 8 : at + 8 + length]
        (crc,) = struct.unpack(">I", data[at + 8 + length : at + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        at += 12 + length
    width, height = size
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(height, width * 3 + 1)
    assert (raw[:, 0] == 0).all()
    return raw[:, 1:].reshape(height, width, 3)


def test_write_png_round_trips(tmp_path):
    image = np.random.default_rng(0).integers(0, 255, (7, 5, 3), dtype=np.uint8)
    assert (_decode(write_png(tmp_path / "x.png", image).read_bytes()) == image).all()


def test_line_chart_draws_each_series_in_its_colour(tmp_path):
    x = np.arange(50)
    path = line_chart(tmp_path / "loss.png", [("train", x, 3 - x / 25), ("eval", x[::10], 2.5 - x[::10] / 25)], "loss")
    pixels = _decode(path.read_bytes())
    assert pixels.shape == (400, 720, 3)
    blue = (pixels == (31, 119, 180)).all(-1)
    orange = (pixels == (255, 127, 14)).all(-1)
    assert blue.sum() > 500 and orange.sum() > 300
    rows, cols = np.nonzero(blue[:, :600])
    left, right = rows[cols < 150].mean(), rows[(cols > 450) & (cols < 600)].mean()
    assert left < right  # a falling curve: high on the left (small row index)
