"""Data augmentation on the device, per batch inside the compiled training step.

- `shift`: each image moved by up to 2 pixels in each direction (whole pixels, uint8 kept);
- `distort`: what the best MNIST results use (Simard et al. 2003; Cireşan et al. 2010): a
  random rotation (±12°), scale (±12%) and shift (±2.5 px) about the centre, then an elastic
  distortion (a random displacement field smoothed by a Gaussian of 4 px, about 0.8 px on
  average), resampled bilinearly; then strokes thickened or thinned, as a marker's or a
  pencil's are. People's digits vary in stroke more than MNIST's: a model trained so reads
  the people-style images of scripts/people_style.py about a point better;
- `mirror`: half the images mirrored left to right: for clothes (Fashion-MNIST), which look
  the same either way round, unlike digits and letters;
- `erase`: half the images with a random rectangle blanked (Zhong et al. 2017, random erasing:
  2-40% of the image, sides in ratio 0.3-3.3), so that no one part of a garment decides.

Kinds combine with `+`, applied in the order given: `mirror+shift+erase`.

Each image's randomness comes from the batch key, so a run repeats exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from mnistkit.datasets import IMAGE_SHAPE

SHIFT_PX = 2
ERASE_PROBABILITY = 0.5
ERASE_AREA = (0.02, 0.4)
ERASE_ASPECT = (0.3, 3.3)
ROTATION_DEGREES = 12.0
SCALE_FRACTION = 0.12
DISTORT_SHIFT_PX = 2.5
ELASTIC_SIGMA_PX = 4.0
ELASTIC_ALPHA_PX = 16.0  # the displacement scale before smoothing: about 0.8 px (std) after it
ELASTIC_RANK = 8  # of the smoothing's 28 directions, those holding all but 1e-5 of its variance


def random_shift(images: jax.Array, key: jax.Array, max_px: int = SHIFT_PX) -> jax.Array:
    """Shift each uint8 image by up to `max_px` pixels in each direction, filling with black."""
    count, height, width = images.shape
    padded = jnp.pad(images, ((0, 0), (max_px, max_px), (max_px, max_px)))
    offsets = jax.random.randint(key, (count, 2), 0, 2 * max_px + 1)
    crop = jax.vmap(lambda image, offset: jax.lax.dynamic_slice(image, offset, (height, width)))
    return crop(padded, offsets)


def random_mirror(images: jax.Array, key: jax.Array) -> jax.Array:
    """Mirror each uint8 image left to right with probability 1/2."""
    mirrored = jax.random.bernoulli(key, 0.5, (images.shape[0], 1, 1))
    return jnp.where(mirrored, images[:, :, ::-1], images)


def random_erasing(images: jax.Array, key: jax.Array) -> jax.Array:
    """Blank a random rectangle in each image with probability ERASE_PROBABILITY."""
    count, height, width = images.shape
    erased_key, area_key, aspect_key, place_key = jax.random.split(key, 4)
    area = jax.random.uniform(area_key, (count,), minval=ERASE_AREA[0], maxval=ERASE_AREA[1]) * height * width
    log_aspect = jax.random.uniform(
        aspect_key, (count,), minval=math.log(ERASE_ASPECT[0]), maxval=math.log(ERASE_ASPECT[1])
    )
    sides = jnp.stack([jnp.sqrt(area * jnp.exp(log_aspect)), jnp.sqrt(area / jnp.exp(log_aspect))], axis=1)
    sides = jnp.clip(jnp.round(sides), 1, jnp.array([height, width])).astype(jnp.int32)
    corners = jnp.floor(
        jax.random.uniform(place_key, (count, 2)) * (jnp.array([height, width]) - sides + 1)
    ).astype(jnp.int32)
    rows, columns = jnp.arange(height)[None, :], jnp.arange(width)[None, :]
    inside_rows = (rows >= corners[:, :1]) & (rows < corners[:, :1] + sides[:, :1])
    inside_columns = (columns >= corners[:, 1:]) & (columns < corners[:, 1:] + sides[:, 1:])
    erased = jax.random.bernoulli(erased_key, ERASE_PROBABILITY, (count, 1, 1))
    blank = erased & inside_rows[:, :, None] & inside_columns[:, None, :]
    return jnp.where(blank, jnp.zeros_like(images), images)


def _gaussian_matrix(size: int, sigma: float) -> np.ndarray:
    """Row i: the Gaussian weights that smooth a signal at position i (zero beyond the edge)."""
    positions = np.arange(size)
    weights = np.exp(-((positions[:, None] - positions[None, :]) ** 2) / (2 * sigma**2))
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def _elastic_basis(size: int, sigma: float, rank: int) -> np.ndarray:
    """A (size, rank) matrix B with B Bᵀ equal to G Gᵀ, G the Gaussian smoothing, but for its
    smallest eigenvalues: noise M smoothed as G M Gᵀ has the covariance of B N Bᵀ with N of
    rank x rank, so the elastic field needs 8 x 8 random numbers per image, not 28 x 28 (the
    random numbers took more of a `cnn` step than its bilinear resampling)."""
    smoothing = _gaussian_matrix(size, sigma).astype(np.float64)
    eigenvalues, eigenvectors = np.linalg.eigh(smoothing @ smoothing.T)
    largest = np.argsort(eigenvalues)[::-1][:rank]
    basis = eigenvectors[:, largest] * np.sqrt(eigenvalues[largest])
    # An eigenvector's sign is LAPACK's choice: fix it by the largest entry. (An antisymmetric
    # direction's two ends tie up to rounding, so another build may still flip one: the same
    # distribution, other fields for a seed, as other builds' float rounding gives anyway.)
    basis *= np.sign(basis[np.abs(basis).argmax(axis=0), np.arange(rank)])
    return basis.astype(np.float32)


def random_distortion(images: jax.Array, key: jax.Array) -> jax.Array:
    """Rotate, scale, shift and elastically distort each image (N, 28, 28); float32 out."""
    count = images.shape[0]
    height, width = IMAGE_SHAPE
    angle_key, scale_key, shift_key, field_key = jax.random.split(key, 4)
    angles = jax.random.uniform(angle_key, (count,), minval=-1.0, maxval=1.0) * math.radians(ROTATION_DEGREES)
    scales = 1.0 + jax.random.uniform(scale_key, (count,), minval=-1.0, maxval=1.0) * SCALE_FRACTION
    shifts = jax.random.uniform(shift_key, (count, 2), minval=-1.0, maxval=1.0) * DISTORT_SHIFT_PX
    field = _elastic_field(field_key, count)
    rows, columns = jnp.meshgrid(
        jnp.arange(height, dtype=jnp.float32), jnp.arange(width, dtype=jnp.float32), indexing="ij"
    )
    centre_row, centre_column = (height - 1) / 2, (width - 1) / 2
    cos, sin = (jnp.cos(angles) / scales)[:, None, None], (jnp.sin(angles) / scales)[:, None, None]
    # Where each output pixel takes its value from: the inverse of the transform, plus the field.
    offset_row, offset_column = (
        rows - centre_row - shifts[:, 0, None, None],
        columns - centre_column - shifts[:, 1, None, None],
    )
    source_row = centre_row + cos * offset_row - sin * offset_column + field[:, 0]
    source_column = centre_column + sin * offset_row + cos * offset_column + field[:, 1]
    distorted = jax.vmap(_bilinear)(images.astype(jnp.float32), source_row, source_column)
    return _stroke_width(
        distorted, jax.random.uniform(jax.random.fold_in(key, 1), (count,), minval=-1.0, maxval=1.0)
    )


def _elastic_field(key: jax.Array, count: int) -> jax.Array:
    """Each image's displacements (count, 2, 28, 28) in pixels, rows' then columns': uniform
    noise smoothed by a Gaussian of ELASTIC_SIGMA_PX, drawn through `_elastic_basis`."""
    height, width = IMAGE_SHAPE
    row_basis = jnp.asarray(_elastic_basis(height, ELASTIC_SIGMA_PX, ELASTIC_RANK))
    column_basis = jnp.asarray(_elastic_basis(width, ELASTIC_SIGMA_PX, ELASTIC_RANK))
    noise = jax.random.uniform(key, (count, 2, ELASTIC_RANK, ELASTIC_RANK), minval=-1.0, maxval=1.0)
    return ELASTIC_ALPHA_PX * jnp.einsum("ij,ncjk,lk->ncil", row_basis, noise, column_basis)


def _stroke_width(images: jax.Array, amounts: jax.Array) -> jax.Array:
    """Thicken each image's strokes by a 3x3 grey dilation, or thin them by an erosion, as far
    as its amount in [-1, 1] says: a pen's stroke is thinner or broader than MNIST's."""
    thick = _over_3x3(images, jnp.maximum, -jnp.inf)
    thin = _over_3x3(images, jnp.minimum, jnp.inf)
    amount = amounts[:, None, None]
    changed = images + jnp.where(amount > 0, amount * (thick - images), -amount * (thin - images))
    # A thin pen's stroke is as dark as a thick one's: the brightest pixel stays the brightest.
    peak = jnp.max(changed, axis=(1, 2), keepdims=True)
    return changed * (jnp.max(images, axis=(1, 2), keepdims=True) / jnp.maximum(peak, 1.0))


def _over_3x3(images: jax.Array, combine: Callable, outside: float) -> jax.Array:
    """`combine` (max or min) of each pixel's 3x3 neighbourhood within the image, as rows of
    three then columns of three: XLA:CPU's reduce_window took 4x as long."""
    padded = jnp.pad(images, ((0, 0), (1, 1), (1, 1)), constant_values=outside)
    rows = combine(combine(padded[:, :-2], padded[:, 1:-1]), padded[:, 2:])
    return combine(combine(rows[:, :, :-2], rows[:, :, 1:-1]), rows[:, :, 2:])


def _bilinear(image: jax.Array, rows: jax.Array, columns: jax.Array) -> jax.Array:
    return jax.scipy.ndimage.map_coordinates(image, [rows, columns], order=1, mode="constant", cval=0.0)


AUGMENT_FUNCTIONS = {
    "shift": random_shift,
    "distort": random_distortion,
    "mirror": random_mirror,
    "erase": random_erasing,
}


def make_augment(kinds: str) -> Callable[[jax.Array, jax.Array], jax.Array] | None:
    """The augmentations named in `kinds` ("mirror+shift") as one function of (images, key),
    each with a key of its own; None for "none"."""
    if kinds == "none":
        return None
    steps = [AUGMENT_FUNCTIONS[kind] for kind in kinds.split("+")]

    def augment(images: jax.Array, key: jax.Array) -> jax.Array:
        for number, step in enumerate(steps):
            images = step(images, jax.random.fold_in(key, number) if len(steps) > 1 else key)
        return images

    return augment
