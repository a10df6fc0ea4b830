"""Pixel operations on numpy arrays that finding the ink in a picture needs: medians, levels
and quantiles from histograms, Otsu's threshold, connected regions, sliding minima and maxima
(grey-level opening, erosion, a round pen's dilation), stroke widths, without scipy or OpenCV.
"""

from __future__ import annotations

import math

import numpy as np


def cumulative_histogram(values: np.ndarray) -> np.ndarray:
    """How many values lie at or below each of 256 levels: quantiles without a sort."""
    return np.cumsum(np.bincount(to_uint8(values).ravel(), minlength=256))


def quantile(cumulative: np.ndarray, fraction: float) -> float:
    """The level in [0, 1] below which `fraction` of the values lie."""
    return float(np.searchsorted(cumulative, cumulative[-1] * fraction)) / 255.0


def median(values: np.ndarray) -> float:
    """The middle value (the upper one of an even count), found by partition, not a sort."""
    flat = values.ravel()
    return float(np.partition(flat, flat.size // 2)[flat.size // 2])


def to_uint8(values: np.ndarray) -> np.ndarray:
    """Gray in [0, 1] -> uint8 levels, rounded."""
    return (np.clip(values, 0.0, 1.0) * np.float32(255) + np.float32(0.5)).astype(np.uint8)


def otsu_threshold(values: np.ndarray) -> float:
    """The level in [0, 1] that best splits `values` into background and ink."""
    histogram = np.bincount(to_uint8(values).ravel(), minlength=256).astype(np.float64)
    weight = np.cumsum(histogram)
    weighted_sum = np.cumsum(histogram * np.arange(256))
    total, total_sum = weight[-1], weighted_sum[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (total_sum * weight - weighted_sum * total) ** 2 / (weight * (total - weight))
    between[~np.isfinite(between)] = -1.0
    return (int(np.argmax(between)) + 0.5) / 255.0


def fill_spans(mask: np.ndarray) -> np.ndarray:
    """`mask` with each row filled from its first to its last pixel."""
    return np.logical_or.accumulate(mask, axis=1) & np.logical_or.accumulate(mask[:, ::-1], axis=1)[:, ::-1]


def rectangularity(mask: np.ndarray) -> float:
    """The area of `mask` over that of the smallest rectangle holding it, turned by any whole
    degree: 1 for a rectangle at any angle, pi/4 for an ellipse. A rectangle's extent along a
    direction is its rows' ends' extent, so those ends are all that is turned."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return 0.0
    first = np.argmax(mask[rows], axis=1)
    last = mask.shape[1] - 1 - np.argmax(mask[rows, ::-1], axis=1)
    y = np.concatenate([rows, rows]).astype(np.float64)
    x = np.concatenate([first, last]).astype(np.float64)
    angles = np.deg2rad(np.arange(90.0))[:, None]
    along = x * np.cos(angles) + y * np.sin(angles)
    across = y * np.cos(angles) - x * np.sin(angles)
    areas = (np.ptp(along, axis=1) + 1) * (np.ptp(across, axis=1) + 1)
    return float(np.count_nonzero(mask) / areas.min())


def ring(image: np.ndarray) -> np.ndarray:
    """The outermost pixels, once each."""
    return np.concatenate([image[0], image[-1], image[1:-1, 0], image[1:-1, -1]])


def label_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected regions of `mask` (8-neighbours): labels 1..count, 0 outside the mask.

    Runs of pixels within rows are joined, by union-find, where runs of neighbouring rows
    touch: a few hundred runs in a work-sized image, where a flood fill would visit each pixel.
    """
    height, width = mask.shape
    framed = np.zeros((height, width + 2), np.int8)
    framed[:, 1:-1] = mask
    steps = np.diff(framed, axis=1)
    rows, starts = np.nonzero(steps == 1)
    ends = np.nonzero(steps == -1)[1]
    labels = np.zeros((height, width), np.int32)
    if rows.size == 0:
        return labels, 0
    # The runs of the next row that touch run i (diagonally included) are runs lo[i] to hi[i] - 1.
    stride = width + 2
    next_row = (rows + 1) * stride
    lo = np.searchsorted(rows * stride + ends, next_row + starts, "left")
    hi = np.searchsorted(rows * stride + starts, next_row + ends, "right")
    parent = list(range(rows.size))
    for run, first, last in zip(range(rows.size), lo.tolist(), hi.tolist(), strict=True):
        for other in range(first, last):
            root, other_root = _root(parent, run), _root(parent, other)
            parent[max(root, other_root)] = min(root, other_root)
    # Every run points to an earlier one or to itself, so one pass in order resolves all.
    for run in range(rows.size):
        parent[run] = parent[parent[run]]
    roots = np.array(parent)
    is_root = roots == np.arange(rows.size)
    run_labels = np.cumsum(is_root, dtype=np.int32)[roots]
    lengths = ends - starts
    first_pixels = rows * width + starts - np.cumsum(lengths) + lengths
    pixels = np.repeat(first_pixels, lengths) + np.arange(lengths.sum())
    labels.ravel()[pixels] = np.repeat(run_labels, lengths)
    return labels, int(np.count_nonzero(is_root))


def component_boxes(labels: np.ndarray, count: int) -> np.ndarray:
    """Each of `label_components`' regions' bounding box: row `label` holds top, bottom, left,
    right (bottom and right one past the last pixel); row 0 is unused."""
    rows, columns = np.nonzero(labels)
    order = np.argsort(labels[rows, columns], kind="stable")
    rows, columns = rows[order], columns[order]
    starts = np.searchsorted(labels[rows, columns], np.arange(1, count + 1))
    boxes = np.zeros((count + 1, 4), np.int64)
    if count:
        boxes[1:, 0] = np.minimum.reduceat(rows, starts)
        boxes[1:, 1] = np.maximum.reduceat(rows, starts) + 1
        boxes[1:, 2] = np.minimum.reduceat(columns, starts)
        boxes[1:, 3] = np.maximum.reduceat(columns, starts) + 1
    return boxes


def _root(parent: list[int], node: int) -> int:
    """Union-find's root of `node`, halving the path on the way."""
    while parent[node] != node:
        parent[node] = parent[parent[node]]
        node = parent[node]
    return node


def sliding_extreme(values: np.ndarray, size: int, pick: np.ufunc, axis: int) -> np.ndarray:
    """`pick` (np.minimum or np.maximum) over a centred window of `size` pixels along
    `axis`, the edges repeated, in about log2(size) whole-array steps."""
    if axis == 1:
        return sliding_extreme(values.T, size, pick, 0).T
    half, length = size // 2, values.shape[0]
    padded = np.empty((length + size - 1, *values.shape[1:]), values.dtype)
    padded[half : half + length] = values
    padded[:half] = values[:1]
    padded[half + length :] = values[-1:]
    # Each step doubles the span that padded[i] covers; the window is pieced together from
    # the spans of the bits of `size`.
    result, covered, span = None, 0, 1
    while True:
        if size & span:
            part = padded[covered : covered + length]
            result = part if result is None else pick(result, part)
            covered += span
            if covered == size:
                return result
        padded = pick(padded[:-span], padded[span:])
        span *= 2


def square_extreme(values: np.ndarray, size: int, pick: np.ufunc) -> np.ndarray:
    """`pick` over a centred size x size square: along rows, then along columns."""
    return sliding_extreme(sliding_extreme(values, size, pick, 1), size, pick, 0)


def erode(mask: np.ndarray, size: int) -> np.ndarray:
    """The pixels of `mask` whose centred size x size square lies wholly in it."""
    return square_extreme(mask, size, np.minimum)


def stroke_width_px(mask: np.ndarray) -> float:
    """Typical stroke width in `mask`: twice its area over its outline's length, the outline
    counted in row and column steps (which overstate a curved outline by about 4/pi; steps
    across the ends of rows, counted too, are few)."""
    flat = np.ascontiguousarray(mask).ravel()
    outline = np.count_nonzero(flat[1:] ^ flat[:-1]) + np.count_nonzero(
        flat[mask.shape[1] :] ^ flat[: -mask.shape[1]]
    )
    return 2.0 * (4.0 / np.pi) * np.count_nonzero(flat) / max(outline, 1)


def dilate_disc(values: np.ndarray, radius: int) -> np.ndarray:
    """Dilation of non-negative `values` by a disc of `radius` pixels (a round pen tip), the
    result framed `radius` pixels larger each way: for each row offset within the disc, a
    sliding maximum along the rows as wide as the disc is there, moved into place."""
    padded = np.pad(values, radius)
    result = padded.copy()
    height = padded.shape[0]
    for offset in range(1, radius + 1):
        half = math.isqrt(radius * radius - offset * offset)
        spread = sliding_extreme(padded, 2 * half + 1, np.maximum, 1)
        np.maximum(result[offset:], spread[: height - offset], out=result[offset:])
        np.maximum(result[: height - offset], spread[offset:], out=result[: height - offset])
    return np.maximum(result, sliding_extreme(padded, 2 * radius + 1, np.maximum, 1))


def narrow(values: np.ndarray, factor: int) -> np.ndarray:
    """Means of `factor` neighbouring columns (the last one repeated to fill a group):
    strided sums, cheaper for small images than a round trip through Pillow."""
    width = values.shape[1]
    if width % factor:
        values = np.concatenate([values, np.repeat(values[:, -1:], factor - width % factor, axis=1)], axis=1)
    total = values[:, 0::factor].copy()
    for offset in range(1, factor):
        total += values[:, offset::factor]
    return total * np.float32(1 / factor)
