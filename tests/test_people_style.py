"""scripts/people_style.py's own measurement: the gap row of a checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import people_style
from conftest import draw_large_digit
from PIL import Image

from mnistkit.checkpoint import load_checkpoint, save_checkpoint
from mnistkit.images import load_digit


def test_a_model_of_some_digits_is_measured_on_those_digits(tmp_path: Path, large_digit_model: Path) -> None:
    """A `3v8` model read MNIST 6.67% and people 20.00% (a gap of -13.33 points): its
    output's index was taken for the digit, and digits it does not know counted as wrong."""
    ten = load_checkpoint(large_digit_model)
    params = {
        name: value[..., [3, 8]] if value.shape[-1] == 10 else value for name, value in ten.params.items()
    }
    three_v_eight = tmp_path / "3v8.safetensors"
    metadata = {"architecture": {**ten.architecture, "num_classes": 2}, "classes": [3, 8]}
    save_checkpoint(three_v_eight, params, {**metadata, "normalization": ten.normalization})
    digits = [3, 8, 1, 5, 8, 3]  # styles take turns: scan, phone, desk, ruled, shadow, transparent
    paths = []
    for index, digit in enumerate(digits):
        paths.append(tmp_path / f"{index}-{digit}.png")
        Image.fromarray(255 - draw_large_digit(digit)).save(paths[-1])
    images = np.stack([load_digit(path) for path in paths])
    row = people_style.gap_row(three_v_eight, images, np.array(digits), paths)
    assert row[1:] == ["100.00%", "100.00%", "0.00 ± 0.00", "100.0%", "100.0%", "-", "-", "100.0%", "100.0%"]
