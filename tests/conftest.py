"""Shared fixtures: exact synthetic IDX files, digit images drawn with a real font, and
the real MNIST mirror when it is present beside the checkout."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

REPO_ROOT = Path(__file__).resolve().parent.parent
REAL_MNIST_DIR = Path(os.environ.get("MNISTKIT_REAL_MNIST", REPO_ROOT.parent / "shared" / "mnist"))
REAL_MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

requires_real_mnist = pytest.mark.skipif(
    not all((REAL_MNIST_DIR / name).is_file() for name in REAL_MNIST_FILES),
    reason=f"real MNIST mirror not found at {REAL_MNIST_DIR} (set MNISTKIT_REAL_MNIST)",
)


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """The IDX encoding of a uint8 array: magic, big-endian dimensions, raw data."""
    array = np.asarray(array, dtype=np.uint8)
    if magic is None:
        magic = 0x800 + array.ndim
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.tobytes()


def write_idx(path: Path, array: np.ndarray, compress: bool = True, magic: int | None = None) -> Path:
    data = idx_bytes(array, magic)
    path.write_bytes(gzip.compress(data, mtime=0) if compress else data)
    return path


_FONT_CACHE: dict[int, ImageFont.FreeTypeFont] = {}


def _font(size: int) -> ImageFont.FreeTypeFont:
    if size not in _FONT_CACHE:
        _FONT_CACHE[size] = ImageFont.load_default(size=size)
    return _FONT_CACHE[size]


def draw_digit(digit: int, rng: np.random.Generator, canvas: int = 28, jitter: bool = True) -> np.ndarray:
    """A digit glyph drawn MNIST-style: bright ink on black, about 20 px tall, centred."""
    size = int(rng.integers(20, 26)) if jitter else 23
    stroke = int(rng.integers(1, 3)) if jitter else 1
    image = Image.new("L", (canvas, canvas), 0)
    draw = ImageDraw.Draw(image)
    font = _font(size)
    left, top, right, bottom = draw.textbbox((0, 0), str(digit), font=font, stroke_width=stroke)
    dx = int(rng.integers(-2, 3)) if jitter else 0
    dy = int(rng.integers(-2, 3)) if jitter else 0
    x = (canvas - (right - left)) // 2 - left + dx
    y = (canvas - (bottom - top)) // 2 - top + dy
    draw.text((x, y), str(digit), fill=255, font=font, stroke_width=stroke, stroke_fill=255)
    return np.asarray(image, dtype=np.uint8)


def synthetic_arrays(n_train: int = 600, n_test: int = 200, seed: int = 0) -> dict[str, np.ndarray]:
    """A small learnable MNIST look-alike with the real `.npz` keys and dtypes."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in (("train", n_train), ("test", n_test)):
        labels = (np.arange(count) % 10).astype(np.uint8)
        rng.shuffle(labels)
        arrays[f"{split}_images"] = np.stack([draw_digit(int(d), rng) for d in labels])
        arrays[f"{split}_labels"] = labels
    return arrays


@pytest.fixture(scope="session")
def synthetic_data() -> dict[str, np.ndarray]:
    return synthetic_arrays()


@pytest.fixture
def synthetic_npz(tmp_path: Path, synthetic_data: dict[str, np.ndarray]) -> Path:
    path = tmp_path / "mnist.npz"
    np.savez(path, **synthetic_data)
    return path


@pytest.fixture
def synthetic_raw_dir(tmp_path: Path, synthetic_data: dict[str, np.ndarray]) -> Path:
    """The four canonical IDX .gz files holding the synthetic dataset."""
    raw = tmp_path / "raw"
    raw.mkdir()
    write_idx(raw / "train-images-idx3-ubyte.gz", synthetic_data["train_images"])
    write_idx(raw / "train-labels-idx1-ubyte.gz", synthetic_data["train_labels"])
    write_idx(raw / "t10k-images-idx3-ubyte.gz", synthetic_data["test_images"])
    write_idx(raw / "t10k-labels-idx1-ubyte.gz", synthetic_data["test_labels"])
    return raw
