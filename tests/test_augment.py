"""The augmentations: what each does to an image, and that a key repeats it exactly."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from mnistkit.augment import SHIFT_PX, make_augment


def _asymmetric_images(count: int) -> np.ndarray:
    """Images whose mirror differs from every shift of them: a bar in the left half only."""
    rng = np.random.default_rng(0)
    images = np.zeros((count, 28, 28), np.uint8)
    images[:, 6:22, 6:10] = rng.integers(100, 256, (count, 16, 4), dtype=np.uint8)
    return images


def _shifts(image: np.ndarray) -> list[np.ndarray]:
    padded = np.pad(image, SHIFT_PX)
    return [
        padded[row : row + 28, column : column + 28]
        for row in range(2 * SHIFT_PX + 1)
        for column in range(2 * SHIFT_PX + 1)
    ]


def test_shift_mirror_gives_a_shift_of_the_image_or_of_its_mirror_about_half_each() -> None:
    images = _asymmetric_images(200)
    out = np.asarray(make_augment("shift-mirror")(images, jax.random.key(1)))
    assert out.dtype == np.uint8 and out.shape == images.shape
    mirrored = []
    for image, result in zip(images, out, strict=True):
        as_is = any(np.array_equal(result, shifted) for shifted in _shifts(image))
        as_mirror = any(np.array_equal(result, shifted) for shifted in _shifts(image[:, ::-1]))
        assert as_is != as_mirror
        mirrored.append(as_mirror)
    assert 70 <= sum(mirrored) <= 130


@pytest.mark.parametrize("kind", ["shift", "distort", "shift-mirror"])
def test_an_augmentation_repeats_exactly_for_a_key_and_differs_for_another(kind: str) -> None:
    images = _asymmetric_images(16)
    augment = make_augment(kind)
    first = np.asarray(augment(images, jax.random.key(3)))
    assert np.array_equal(first, np.asarray(augment(images, jax.random.key(3))))
    assert not np.array_equal(first, np.asarray(augment(images, jax.random.key(4))))
    assert make_augment("none") is None
