"""Real MNIST test digits drawn the way people's images look (scripts/people_style.py: pen
colours, stroke widths, rotations, paper, shadows, ruled lines, desks, JPEG), predicted
through the whole predict path (files, parallel decoding, preprocessing, numpy inference).

Slow: trains `make all`'s default model on the real training set with mnistkit.training first.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import REAL_MNIST_DIR, requires_real_mnist
from people_style import STYLES, choose_digits, people_style_accuracy, write_people_style
from PIL import Image

from mnistkit.checkpoint import Checkpoint, load_checkpoint

pytestmark = [pytest.mark.slow, requires_real_mnist]

COUNT = 3000
SEED = 0
# `make all`'s model (the fast preset, --seed 0 --val-size 5000) reads 99.53% of these 3000
# digits as MNIST gives them and 98.93% as people's images on an AMD EPYC with AVX-512, a gap
# of 0.60 points, printed by `python scripts/people_style.py models/model.safetensors --mnist
# ../shared/mnist`; on an AMD EPYC without it, where XLA compiles for other vector
# instructions and the model trains to other weights, 99.60% and 98.87%, 0.73 (0.80 before a
# faint pencil on a page mostly in shadow was taken for dark ink). It was 3.63 before predict
# thickened strokes thinner than MNIST's and worked on pictures at 256 px, 2.13 before the
# set's fine pens stopped breaking strokes apart, and 0.70 before predict measured ink against
# the paper's brightness and found it under a square a few strokes wide (shadows). The bound
# sits above what either processor gives, well below what any of those regressions gave.
MAX_GAP_POINTS = 1.0
MAX_UNREADABLE = 5


@pytest.fixture(scope="module")
def real_data() -> dict[str, np.ndarray]:
    from mnistkit.idx import read_mnist_dir

    return read_mnist_dir(REAL_MNIST_DIR)


@pytest.fixture(scope="module")
def default_model(real_data: dict[str, np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> Checkpoint:
    """The checkpoint `make all` trains, trained the same way (same settings, same bytes)."""
    from mnistkit.config import config_from_options
    from mnistkit.training import train

    path = tmp_path_factory.mktemp("default-model") / "model.safetensors"
    config = config_from_options("fast", {"seed": 0, "val_size": 5000})
    train(real_data, config, path, log=lambda message: None)
    return load_checkpoint(path)


def test_the_people_style_set_is_the_same_for_a_seed(
    real_data: dict[str, np.ndarray], tmp_path: Path
) -> None:
    images, labels = real_data["test_images"], real_data["test_labels"]
    first, first_labels = write_people_style(images, labels, tmp_path / "a", SEED, 12)
    again, again_labels = write_people_style(images, labels, tmp_path / "b", SEED, 12)
    other, _ = write_people_style(images, labels, tmp_path / "c", SEED + 1, 12)
    assert [path.read_bytes() for path in first] == [path.read_bytes() for path in again]
    assert np.array_equal(first_labels, again_labels)
    assert [path.read_bytes() for path in first] != [path.read_bytes() for path in other]
    assert {path.stem.split("-", 1)[1] for path in first} == set(STYLES)


def test_people_style_digits_come_within_the_measured_gap_of_mnist_accuracy(
    real_data: dict[str, np.ndarray], default_model: Checkpoint, tmp_path: Path
) -> None:
    images, labels = real_data["test_images"], real_data["test_labels"]
    paths, people_labels = write_people_style(images, labels, tmp_path, SEED, COUNT)
    people, unreadable = people_style_accuracy(default_model, paths, people_labels)
    chosen = choose_digits(len(images), SEED, COUNT)
    plain = default_model.predict_probabilities(images[chosen]).argmax(axis=1) == labels[chosen]
    gap_points = 100 * (plain.mean() - people.mean())
    by_style = {style: f"{100 * people[i :: len(STYLES)].mean():.1f}%" for i, style in enumerate(STYLES)}
    print(f"MNIST {plain.mean():.2%}  people-style {people.mean():.2%}  gap {gap_points:.2f}  {by_style}")
    assert unreadable <= MAX_UNREADABLE
    assert plain.mean() > 0.99
    assert gap_points <= MAX_GAP_POINTS


def test_digits_smaller_than_mnists_frame_are_read_not_called_blank(
    real_data: dict[str, np.ndarray], default_model: Checkpoint, tmp_path: Path
) -> None:
    """MNIST digits at half size (14x14, a thumbnail's): their one-pixel strokes, corner to
    corner, were taken for specks and 81 of the first 3,000 called blank. 90.2% of those
    3,000 are read right now (the default model, on the AMD EPYC without AVX-512)."""
    count = 1000
    paths = []
    for index, image in enumerate(real_data["test_images"][:count]):
        paths.append(tmp_path / f"{index}.png")
        Image.fromarray(image).resize((14, 14), Image.Resampling.BILINEAR).save(paths[-1])
    correct, unreadable = people_style_accuracy(default_model, paths, real_data["test_labels"][:count])
    assert unreadable == 0
    assert correct.mean() > 0.85
