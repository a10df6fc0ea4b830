"""The augmentations: what each does to an image, and that a key repeats it exactly."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnistkit.augment import (
    AUGMENT_FUNCTIONS,
    ELASTIC_ALPHA_PX,
    ELASTIC_RANK,
    ELASTIC_SIGMA_PX,
    ERASE_AREA,
    SHIFT_PX,
    _elastic_basis,
    _elastic_field,
    _gaussian_matrix,
    _stroke_width,
    make_augment,
)
from mnistkit.config import AUGMENT_KINDS, TrainConfig
from mnistkit.errors import MnistkitError


def _asymmetric_images(count: int) -> np.ndarray:
    """Images unlike their mirror, their ink clear of the border: a bar in the left half."""
    rng = np.random.default_rng(0)
    images = np.zeros((count, 28, 28), np.uint8)
    images[:, 6:22, 6:10] = rng.integers(100, 256, (count, 16, 4), dtype=np.uint8)
    return images


def test_mirror_mirrors_about_half_the_images_left_to_right_and_keeps_the_others() -> None:
    images = _asymmetric_images(200)
    out = np.asarray(make_augment("mirror")(images, jax.random.key(1)))
    assert out.dtype == np.uint8 and out.shape == images.shape
    mirrored = [np.array_equal(result, image[:, ::-1]) for image, result in zip(images, out, strict=True)]
    kept = [np.array_equal(result, image) for image, result in zip(images, out, strict=True)]
    assert all(m != k for m, k in zip(mirrored, kept, strict=True))
    assert 70 <= sum(mirrored) <= 130


def test_shift_moves_each_image_by_at_most_two_pixels_and_keeps_its_ink() -> None:
    images = _asymmetric_images(50)
    out = np.asarray(make_augment("shift")(images, jax.random.key(2)))
    for image, result in zip(images, out, strict=True):
        padded = np.pad(image, SHIFT_PX)
        assert any(
            np.array_equal(result, padded[row : row + 28, column : column + 28])
            for row in range(2 * SHIFT_PX + 1)
            for column in range(2 * SHIFT_PX + 1)
        )
    assert (out.astype(int).sum(axis=(1, 2)) == images.astype(int).sum(axis=(1, 2))).all()


def test_erase_blanks_one_rectangle_of_2_to_40_percent_in_about_half_the_images() -> None:
    images = np.full((200, 28, 28), 200, np.uint8)
    out = np.asarray(make_augment("erase")(images, jax.random.key(5)))
    assert out.dtype == np.uint8 and set(np.unique(out)) <= {0, 200}
    erased = 0
    for result in out:
        rows, columns = np.nonzero(result == 0)
        if rows.size == 0:
            continue
        erased += 1
        box = (rows.max() - rows.min() + 1) * (columns.max() - columns.min() + 1)
        assert box == rows.size  # one filled rectangle
        assert ERASE_AREA[0] * 784 * 0.5 <= rows.size <= ERASE_AREA[1] * 784 * 1.5
    assert 70 <= erased <= 130


def test_the_elastic_field_has_the_covariance_of_smoothed_noise() -> None:
    """The field comes from 8x8 random numbers through a basis instead of 28x28 smoothed by a
    Gaussian: along each axis the two have the same covariance, to 1e-4 of its largest entry."""
    smoothing = _gaussian_matrix(28, ELASTIC_SIGMA_PX).astype(np.float64)
    wanted = smoothing @ smoothing.T
    basis = _elastic_basis(28, ELASTIC_SIGMA_PX, ELASTIC_RANK).astype(np.float64)
    assert np.abs(basis @ basis.T - wanted).max() < 1e-4 * wanted.max()
    fewer = _elastic_basis(28, ELASTIC_SIGMA_PX, ELASTIC_RANK - 3).astype(np.float64)
    assert np.abs(fewer @ fewer.T - wanted).max() > 1e-3 * wanted.max()


def test_the_elastic_field_is_smoothed_noise_of_its_strength() -> None:
    """Along a column through the middle, the drawn displacements' covariance is what noise
    uniform in [-1, 1] smoothed by the Gaussian on both sides has: (alpha^2 / 3) G Gᵀ times the
    middle entry of G Gᵀ; about 0.8 px apart on average."""
    field = np.asarray(_elastic_field(jax.random.key(2), 4000), np.float64)
    assert 0.6 < field.std() < 1.0 and abs(field.mean()) < 0.05
    smoothing = _gaussian_matrix(28, ELASTIC_SIGMA_PX).astype(np.float64)
    along_rows = smoothing @ smoothing.T
    wanted = ELASTIC_ALPHA_PX**2 / 3 * along_rows * along_rows[14, 14]
    for direction in (0, 1):
        column = field[:, direction, :, 14]
        measured = column.T @ column / len(column)
        assert np.abs(measured - wanted).max() < 0.05 * wanted.max()


@pytest.mark.parametrize("amount", [1.0, -1.0, 0.0])
def test_strokes_at_full_width_change_are_a_grey_dilation_or_erosion(amount: float) -> None:
    """Thickened all the way, each pixel is its 3x3 neighbourhood's brightest; thinned, its
    darkest, brightened back to the image's peak; unchanged at 0."""
    images = np.random.default_rng(1).uniform(0, 255, (4, 28, 28)).astype(np.float32)
    images[1] = 0.0
    windows = np.lib.stride_tricks.sliding_window_view(
        np.pad(images, ((0, 0), (1, 1), (1, 1)), constant_values=np.nan), (3, 3), axis=(1, 2)
    )
    reference = {1.0: np.nanmax, -1.0: np.nanmin, 0.0: lambda w, axis: images}[amount](windows, axis=(-2, -1))
    reference = (
        reference
        * images.max(axis=(1, 2), keepdims=True)
        / np.maximum(reference.max(axis=(1, 2), keepdims=True), 1.0)
    )
    changed = np.asarray(_stroke_width(jnp.asarray(images), jnp.full(4, amount)))
    np.testing.assert_allclose(changed, reference, rtol=1e-5, atol=1e-3)


def _ink_centres(images: np.ndarray) -> np.ndarray:
    rows, columns = np.mgrid[:28, :28]
    mass = images.sum(axis=(1, 2))
    centres = [(images * rows).sum(axis=(1, 2)), (images * columns).sum(axis=(1, 2))]
    return np.stack(centres, 1) / mass[:, None]


def test_a_distortion_moves_a_digit_a_little_and_keeps_its_ink() -> None:
    images = _asymmetric_images(400)
    distorted = np.asarray(AUGMENT_FUNCTIONS["distort"](images, jax.random.key(5)))
    assert distorted.dtype == np.float32 and distorted.min() >= 0 and distorted.max() <= 255
    moved = np.linalg.norm(_ink_centres(distorted) - _ink_centres(images.astype(np.float32)), axis=1)
    assert 0.5 < np.median(moved) < 3.0 and moved.max() < 6.0
    kept = distorted.sum(axis=(1, 2)) / images.sum(axis=(1, 2))
    assert 0.6 < np.median(kept) < 1.6
    assert len({distorted[i].tobytes() for i in range(len(distorted))}) == len(distorted)


def test_combined_kinds_apply_each_in_turn() -> None:
    images = _asymmetric_images(200)
    out = np.asarray(make_augment("mirror+erase")(images, jax.random.key(6)))
    ink_on_the_right = (out[:, :, 14:] > 0).any(axis=(1, 2))
    assert 70 <= ink_on_the_right.sum() <= 130  # mirrored
    assert ((out > 0).sum(axis=(1, 2)) < (images > 0).sum(axis=(1, 2))).sum() > 40  # and erased


def test_the_kinds_config_accepts_are_the_ones_augment_knows() -> None:
    assert set(AUGMENT_KINDS) == set(AUGMENT_FUNCTIONS)
    assert TrainConfig(augment="mirror+shift+erase").augment == "mirror+shift+erase"
    for wrong in ("mirror+mirror", "mirror+", "tilt", "none+shift"):
        with pytest.raises(MnistkitError, match=r"^augment: "):
            TrainConfig(augment=wrong)


@pytest.mark.parametrize("kind", ["shift", "distort", "mirror", "erase", "mirror+shift+erase"])
def test_an_augmentation_repeats_exactly_for_a_key_and_differs_for_another(kind: str) -> None:
    images = _asymmetric_images(16)
    augment = make_augment(kind)
    first = np.asarray(augment(images, jax.random.key(3)))
    assert np.array_equal(first, np.asarray(augment(images, jax.random.key(3))))
    assert not np.array_equal(first, np.asarray(augment(images, jax.random.key(4))))
    assert make_augment("none") is None
