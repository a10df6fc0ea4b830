"""Real MNIST test digits re-rendered the way people's images look, predicted through the
whole predict path (files, parallel decoding, preprocessing, numpy inference).

Slow: trains an MLP on the real training set with mnistkit.train first.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import REAL_MNIST_DIR, requires_real_mnist
from PIL import Image

from mnistkit.checkpoint import load_checkpoint
from mnistkit.image_files import load_digits

pytestmark = [pytest.mark.slow, requires_real_mnist]

SAMPLE_SIZE = 3000
STYLES = ("dark-on-light", "off-centre", "scaled", "jpeg", "transparent")


@pytest.fixture(scope="module")
def real_data() -> dict[str, np.ndarray]:
    from mnistkit.idx import read_mnist_dir

    return read_mnist_dir(REAL_MNIST_DIR)


@pytest.fixture(scope="module")
def real_model(real_data: dict[str, np.ndarray], tmp_path_factory: pytest.TempPathFactory):
    from mnistkit.config import TrainConfig
    from mnistkit.training import train

    path = tmp_path_factory.mktemp("real-model") / "mlp.safetensors"
    config = TrainConfig(model="mlp", hidden=(256,), epochs=5, lr=1e-3, schedule="cosine", seed=0)
    train(real_data, config, path, log=lambda message: None)
    return load_checkpoint(path)


def render_as_person(
    digit: np.ndarray, style: str, rng: np.random.Generator, folder: Path, index: int
) -> Path:
    """One MNIST digit as a person's image: enlarged, placed off-centre on a bigger page,
    dark on light, or as a JPEG, or as strokes on a transparent canvas."""
    scale = int(rng.integers(5, 12)) if style == "scaled" else 8
    ink = Image.fromarray(digit).resize((28 * scale, 28 * scale), Image.Resampling.BICUBIC)
    page_px = (28 * scale + int(rng.integers(40, 200)), 28 * scale + int(rng.integers(40, 200)))
    if style == "off-centre":
        corner = (
            int(rng.integers(0, page_px[0] - 28 * scale)),
            int(rng.integers(0, page_px[1] - 28 * scale)),
        )
    else:
        corner = ((page_px[0] - 28 * scale) // 2, (page_px[1] - 28 * scale) // 2)
    page = Image.new("L", page_px, 0)
    page.paste(ink, corner)
    if style == "transparent":
        alpha = np.asarray(page)
        rgba = np.zeros((*alpha.shape, 4), np.uint8)
        rgba[..., 2] = 90
        rgba[..., 3] = alpha
        path = folder / f"{index:05d}.png"
        Image.fromarray(rgba).save(path)
        return path
    paper = Image.fromarray(255 - np.asarray(page))
    if style == "jpeg":
        path = folder / f"{index:05d}.jpg"
        paper.save(path, quality=int(rng.integers(60, 90)))
        return path
    path = folder / f"{index:05d}.png"
    paper.save(path)
    return path


def test_people_style_digits_come_within_1_5_points_of_mnist_accuracy(
    real_data: dict[str, np.ndarray], real_model, tmp_path: Path
) -> None:
    rng = np.random.default_rng(0)
    chosen = rng.choice(len(real_data["test_images"]), SAMPLE_SIZE, replace=False)
    images, labels = real_data["test_images"][chosen], real_data["test_labels"][chosen]
    paths = [
        render_as_person(image, STYLES[index % len(STYLES)], rng, tmp_path, index)
        for index, image in enumerate(images)
    ]
    loaded = [item for chunk in load_digits(map(str, paths)) for item in chunk]
    assert all(item.error is None for item in loaded), [item.error for item in loaded if item.error][:5]
    preprocessed = np.stack([item.image for item in loaded])

    mnist_accuracy = float((real_model.predict_probabilities(images).argmax(1) == labels).mean())
    people_predictions = real_model.predict_probabilities(preprocessed).argmax(1)
    people_accuracy = float((people_predictions == labels).mean())
    by_style = {
        style: float((people_predictions == labels)[index :: len(STYLES)].mean())
        for index, style in enumerate(STYLES)
    }
    print(f"MNIST {mnist_accuracy:.4f}  people-style {people_accuracy:.4f}  by style {by_style}")
    assert mnist_accuracy > 0.96
    assert people_accuracy >= mnist_accuracy - 0.015
