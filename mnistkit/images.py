"""People's images, read with Pillow and prepared the way a dataset prepared its own.

MNIST fitted each digit's ink into a 20x20 box (aspect ratio kept, anti-aliased) and
placed it in a 28x28 frame so that its centre of mass sits at pixel (14, 14). A photo
or a canvas drawing looks nothing like that, so `preprocess_digit` finds the ink first: it
composites transparency so that what is opaque is ink, finds the sheet in a photo of paper
lying on a desk, turns a light page dark, subtracts the page's brightness (uneven shading and
hard shadows alike) and faint ruled lines, drops what touches the border when the digit is
elsewhere, crops to the ink and then does what MNIST did. Other datasets made their images
otherwise (`datasets.IMAGE_STYLES`, chosen by the checkpoint): EMNIST centred each
character's box, nearly filling the frame; Fashion-MNIST scaled each product photo's longer
side to 28 px, centred it and kept its shades, which `_object_map` finds against the backdrop.

Pillow and numpy only: predict imports this module and must start without jax.
"""

from __future__ import annotations

import io
import itertools
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mnistkit.datasets import DEFAULT_DATASET, IMAGE_SHAPE, IMAGE_STYLES, ImageStyle
from mnistkit.errors import MnistkitError

# The decompression-bomb guard: images with more pixels are refused from their header,
# before any pixel is decoded. 40 megapixels (160 MB as RGBA) holds a 7000x5700 photo.
MAX_IMAGE_PIXELS = 40_000_000
# A digit is never a thin strip; 1x100000 pixels is a hostile file, not a digit.
MAX_ASPECT_RATIO = 50
# Larger images are box-averaged down to at most this longer side before the ink is
# found: the digit ends at 20 pixels, and more pixels would only cost time and memory.
WORK_SIDE_PX = 128
FRAME_PX = IMAGE_SHAPE[0]
MNIST_STYLE = IMAGE_STYLES[DEFAULT_DATASET]
# MNIST's centres of mass lie at (14.0, 14.0) in pixel-index coordinates, not at 13.5.
CENTRE_PX = 14.0
# Ink must stand out from the background by this much (0-1 scale; for dark ink, this
# fraction of the paper's brightness), or the image is blank.
MIN_INK_CONTRAST = 0.15
# Stroke pixels below this fraction of the typical ink level are background noise;
# those above this fraction are saturated like MNIST's stroke cores.
INK_LOW_FRACTION = 0.25
INK_HIGH_FRACTION = 0.75
# The page's brightness is found under a square this fraction of the picture's longer side
# (wider than pen strokes, narrower than shadows), or this many times the strokes' width.
BACKGROUND_SQUARE_FRACTION = 1 / 4
STROKES_PER_SQUARE = 3
# Ruled lines are at least this fraction of the picture's width long and fainter than this
# fraction of the darkest ink. They are looked for in the picture narrowed this many times,
# and only when some row holds that much faint ink above this fraction of the darkest.
RULED_LINE_FRACTION = 1 / 3
RULED_LINE_MAX_INK = 0.5
LINE_NARROWING = 4
RULED_LINE_MIN_INK = 0.1
# A photo of a sheet of paper on a desk: the desk is at most this bright relative to the
# paper and takes at least this fraction of the picture's outermost pixels; the sheet is
# what is lighter than this fraction of the way from the desk's level to the paper's, takes
# at least this fraction of the picture, and is light over at least this fraction of it;
# ink within this many pixels of its edge (paper and desk blended) is not on the sheet.
DESK_MAX_BRIGHTNESS = 0.7
DESK_MIN_BORDER = 0.75
DESK_TO_PAPER_THRESHOLD = 0.25
PAPER_MIN_AREA = 0.3
PAPER_MIN_BLANK = 0.85
PAPER_EDGE_PX = 2
# Marks darker or lighter than the page that cover less than this fraction of it are noise
# when the ink's colour is decided.
POLARITY_MIN_MARKS = 0.002
# Ink past a gap at either end of the digit holding less than this fraction of all ink is a speck.
SPECK_FRACTION = 0.05
# Ink touching the border is dropped when the ink elsewhere is a digit: it spans at least this
# fraction of the picture's height or width, or weighs at least this fraction of that ink.
DIGIT_MIN_SPAN = 0.25
CLUTTER_MIN_DIGIT_MASS = 0.2

Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS

_HIGH_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def load_digit(
    path: str | os.PathLike[str],
    preprocess: bool = True,
    content: bytes | None = None,
    style: str = DEFAULT_DATASET,
) -> np.ndarray:
    """The uint8 28x28 image (ink bright on black) that a model should see, prepared as the
    dataset named by `style` (a key of IMAGE_STYLES) prepared its images.

    With `preprocess=False` the file must already be a 28x28 MNIST-style image; it is
    only converted to grayscale. `content` holds the image's bytes when it is in memory
    (an upload to `mnistkit serve`); `path` then only names it in errors.
    Raises MnistkitError("path: reason") for any bad input.
    """
    path = Path(path)
    gray = read_grayscale(path, shrink=preprocess, content=content)
    if not preprocess:
        if gray.shape != (FRAME_PX, FRAME_PX):
            height, width = gray.shape
            raise MnistkitError(
                f"{path}: image is {width}x{height} pixels; --no-preprocess needs 28x28 "
                "(leave it out to fit the digit into 28x28)"
            )
        return to_uint8(gray)
    return preprocess_digit(gray, str(path), IMAGE_STYLES[style])


def read_grayscale(path: Path, shrink: bool = True, content: bytes | None = None) -> np.ndarray:
    """Decode any image Pillow reads into float32 gray in [0, 1], upright, alpha composited,
    and with `shrink`, box-averaged down to a longer side of at most WORK_SIDE_PX.
    The image is the file at `path`, or `content` when given."""
    image = _open_checked(path, content)
    try:
        with image:
            if shrink and image.format == "JPEG":
                image.draft(image.mode, (WORK_SIDE_PX, WORK_SIDE_PX))
            image.load()
            ImageOps.exif_transpose(image, in_place=True)
            gray_image = _to_gray_mode(image)
            gray, alpha = _gray_and_alpha(_shrink_to_work_size(gray_image) if shrink else gray_image)
    except MnistkitError:
        raise
    except Exception as error:  # Pillow's decoders raise many untyped errors on bad data
        raise MnistkitError(f"{path}: truncated or corrupted image ({error})") from None
    if alpha is not None:
        gray = _composite(gray, alpha, path)
    return gray


def _open_checked(path: Path, content: bytes | None = None) -> Image.Image:
    """Open lazily (header only) and refuse bombs and strips before any decoding."""
    try:
        if content is None and path.is_dir():
            raise MnistkitError(
                f"{path}: is a directory, expected an image file; give its images ({path}/*.png) "
                f"or their paths on stdin: find {path} -name '*.png' | mnistkit predict CKPT -"
            )
        if (path.stat().st_size if content is None else len(content)) == 0:
            raise MnistkitError(f"{path}: empty file")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path if content is None else io.BytesIO(content))
    except MnistkitError:
        raise
    except FileNotFoundError:
        raise MnistkitError(f"{path}: no such file") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise MnistkitError(
            f"{path}: image has more than {MAX_IMAGE_PIXELS:,} pixels, refused (decompression bomb guard)"
        ) from None
    except UnidentifiedImageError:
        raise MnistkitError(f"{path}: not an image (Pillow cannot identify the format)") from None
    except OSError as error:
        raise MnistkitError(f"{path}: cannot read: {error.strerror or error}") from None
    except Exception as error:  # a malformed header can break a format plugin in any way
        raise MnistkitError(f"{path}: corrupted image header ({error})") from None
    problem = _size_problem(image.width, image.height)
    if problem:
        image.close()
        raise MnistkitError(f"{path}: {problem}")
    return image


def _size_problem(width: int, height: int) -> str | None:
    if width < 1 or height < 1:
        return f"image is {width}x{height} pixels, nothing to read"
    if width * height > MAX_IMAGE_PIXELS:
        return (
            f"image is {width}x{height} pixels, more than the limit of {MAX_IMAGE_PIXELS:,} "
            "(decompression bomb guard)"
        )
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        return f"image is {width}x{height} pixels, too elongated for a digit (over {MAX_ASPECT_RATIO}:1)"
    return None


def _to_gray_mode(image: Image.Image) -> Image.Image:
    """Any mode -> "F" (high bit depths, values kept), "LA" (with transparency) or "L"."""
    if image.mode in _HIGH_BIT_MODES:
        return image.convert("F")
    if image.has_transparency_data:
        return image.convert("RGBA").convert("LA")
    try:
        return image.convert("L")
    except ValueError:
        return image.convert("RGB").convert("L")


def _shrink_to_work_size(image: Image.Image) -> Image.Image:
    """Box-average big images down; Pillow weights colour by alpha, so edges stay right."""
    factor = -(-max(image.size) // WORK_SIDE_PX)
    return image.reduce(factor) if factor > 1 else image


def _gray_and_alpha(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """Float32 gray in [0, 1] and, for an "LA" image, alpha in [0, 1]."""
    values = np.asarray(image, dtype=np.float32)
    if image.mode == "LA":
        values = values / np.float32(255)
        return values[..., 0], values[..., 1]
    if image.mode == "L":
        return values / np.float32(255), None
    # "F" holds 16-bit, 32-bit or float pixels; the range they use tells their scale
    # (a 16-bit file whose values stay below 256 holds 8-bit data).
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    peak = values.max(initial=0.0)
    top = 1.0 if peak <= 1.0 else 255.0 if peak <= 255.0 else 65535.0
    return np.clip(values / np.float32(top), 0.0, 1.0), None


def _composite(gray: np.ndarray, alpha: np.ndarray, path: Path) -> np.ndarray:
    """Put a transparent drawing on a background that contrasts with what is opaque."""
    opacity = float(alpha.sum())
    if opacity < 1.0:
        raise MnistkitError(f"{path}: blank image (fully transparent, no ink found)")
    if alpha.min() >= 0.99:
        return gray
    opaque_mean = float((gray * alpha).sum()) / opacity
    background = np.float32(1.0 if opaque_mean < 0.5 else 0.0)
    return alpha * gray + (np.float32(1.0) - alpha) * background


def preprocess_digit(gray: np.ndarray, source: str, style: ImageStyle = MNIST_STYLE) -> np.ndarray:
    """Float gray [0, 1] of any size -> uint8 28x28, ink bright, as `style` says (MNIST's by default).

    Raises MnistkitError("source: blank image ...") when no ink stands out.
    """
    if style.saturate_ink:
        ink = _ink_map(gray, source)
        if not ink.any():
            raise MnistkitError(f"{source}: blank image (only isolated specks, no stroke)")
        top, bottom = _extent(ink.sum(axis=1))
        left, right = _extent(ink.sum(axis=0))
    else:
        ink, mask = _object_map(gray, source)
        rows, columns = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        top, bottom, left, right = rows[0], rows[-1] + 1, columns[0], columns[-1] + 1
    return to_uint8(_fit_and_centre(ink[top:bottom, left:right], style))


def _extent(profile: np.ndarray) -> tuple[int, int]:
    """Where the digit lies along one axis, from the ink's profile on it: from the first to
    the last inked position, less specks beyond a gap at either end (runs of the profile
    that hold under SPECK_FRACTION of the ink), which would otherwise stretch the box."""
    inked = profile > 0
    positions = np.flatnonzero(inked)
    if positions[-1] - positions[0] + 1 == positions.size:
        return int(positions[0]), int(positions[-1]) + 1
    changes = np.flatnonzero(inked[1:] != inked[:-1]) + 1
    bounds = np.concatenate([[0], changes, [profile.size]])
    runs = [(start, end) for start, end in itertools.pairwise(bounds.tolist()) if inked[start]]
    total = profile.sum()
    mass = [profile[start:end].sum() for start, end in runs]
    first, last = 0, len(runs) - 1
    while first < last and mass[first] < SPECK_FRACTION * total:
        first += 1
    while last > first and mass[last] < SPECK_FRACTION * total:
        last -= 1
    return int(runs[first][0]), int(runs[last][1])


def _ink_map(gray: np.ndarray, source: str) -> np.ndarray:
    """Ink intensity in [0, 1] where the stroke is, exactly 0 on the background."""
    bright, on_paper, inverted = _ink_bright(gray)
    square_px = BACKGROUND_SQUARE_FRACTION * max(gray.shape)
    ink, ink_mask, background = _ink_and_mask(bright, square_px, on_paper)
    # Strokes so thick that the square cannot pass under their junctions (a marker, a tight
    # crop) would lose their middles to the background: look again under a larger square.
    stroke_px = _stroke_width_px(ink_mask)
    if STROKES_PER_SQUARE * stroke_px > square_px:
        ink, ink_mask, background = _ink_and_mask(bright, STROKES_PER_SQUARE * stroke_px, on_paper)
    if not ink_mask.any():
        raise MnistkitError(f"{source}: blank image (no ink found)")
    stroke = ink[ink_mask]
    level = float(np.partition(stroke, stroke.size // 2)[stroke.size // 2])
    # Dark ink stands out against the paper around it: a page in shadow or in dim light is
    # darker, and so is the difference.
    page = 1.0 - float(background[ink_mask].mean()) if inverted else 1.0
    if level < MIN_INK_CONTRAST * page:
        raise MnistkitError(f"{source}: blank image (nothing stands out from the background)")
    low, high = INK_LOW_FRACTION * level, INK_HIGH_FRACTION * level
    ink = np.clip((ink - np.float32(low)) / np.float32(high - low), 0.0, 1.0)
    return _without_clutter(_remove_isolated_pixels(ink), on_paper)


def _object_map(gray: np.ndarray, source: str) -> tuple[np.ndarray, np.ndarray]:
    """A photographed object's shades, bright on black, and where the object is.

    The backdrop is what lines the border (a product shot's plain background): it is
    inverted when light and subtracted, and the object's shades stay as they are, as
    Fashion-MNIST keeps a product's, faint and dark parts included.
    """
    border = np.concatenate([gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]])
    backdrop = float(np.partition(border, border.size // 2)[border.size // 2])
    if backdrop > 0.5:
        gray, backdrop = np.float32(1.0) - gray, 1.0 - backdrop
    shades = np.clip(gray - np.float32(backdrop), 0.0, 1.0)
    rank = shades.size * 99 // 100
    if float(np.partition(shades.ravel(), rank)[rank]) < MIN_INK_CONTRAST:
        raise MnistkitError(f"{source}: blank image (nothing stands out from the background)")
    mask = _remove_isolated_pixels((shades > _otsu_threshold(shades) / 2).astype(np.float32)) > 0
    if not mask.any():
        raise MnistkitError(f"{source}: blank image (only isolated specks, no object)")
    return shades, mask


def _ink_bright(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """The picture turned so that the ink is bright; in a photo of a sheet on a desk, where
    the sheet lies (less its edge), else None; and whether the picture was inverted."""
    # Every other pixel each way tells the picture's levels as well, at a quarter of the cost.
    cumulative = _cumulative_histogram(gray[::2, ::2])
    paper = _find_paper(gray, cumulative)
    if paper is None:
        dark_ink = _ink_is_dark(gray, _quantile(cumulative, 0.5))
        return (np.float32(1.0) - gray if dark_ink else gray), None, dark_ink
    # The desk takes the paper's colour, so that nothing beyond the sheet's edge is ink.
    paper_level = np.float32(_quantile(_cumulative_histogram(gray[paper]), 0.5))
    on_paper = _erode(paper, 2 * PAPER_EDGE_PX + 1)
    return np.float32(1.0) - np.where(paper, gray, paper_level), on_paper, True


def _ink_and_mask(
    bright: np.ndarray, square_px: float, on_paper: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ink above the background found under a square of `square_px`, ruled lines taken
    out; where it stands out (Otsu's threshold, from every other pixel each way); and the
    background."""
    background = _background_map(bright, square_px)
    ink = bright - background
    ink = ink - _faint_ruled_lines(ink)
    if on_paper is not None:
        ink = np.where(on_paper, ink, np.float32(0.0))
    return ink, ink > _otsu_threshold(ink[::2, ::2]), background


def _ink_is_dark(gray: np.ndarray, median: float) -> bool:
    """Whether the ink is darker than the page.

    A light picture has dark ink. In a dark one the ink may still be dark: a dim photo, or
    a page mostly in shadow. Of the marks darker and lighter than the picture's typical
    level, the ink is then the thinner (a lit part of the page is wide, strokes are thin).
    """
    if median > 0.5:
        return True
    dark = gray < np.float32(median - MIN_INK_CONTRAST)
    light = gray > np.float32(median + MIN_INK_CONTRAST)
    least = POLARITY_MIN_MARKS * gray.size
    dark_count, light_count = np.count_nonzero(dark), np.count_nonzero(light)
    if dark_count < least or light_count < least:
        return dark_count > light_count
    return _stroke_width_px(dark) < _stroke_width_px(light)


def _stroke_width_px(mask: np.ndarray) -> float:
    """Typical stroke width in `mask`: twice its area over its outline's length, the outline
    counted in row and column steps (which overstate a curved outline by about 4/pi; steps
    across the ends of rows, counted too, are few)."""
    flat = np.ascontiguousarray(mask).ravel()
    outline = np.count_nonzero(flat[1:] ^ flat[:-1]) + np.count_nonzero(
        flat[mask.shape[1] :] ^ flat[: -mask.shape[1]]
    )
    return 2.0 * (4.0 / np.pi) * np.count_nonzero(flat) / max(outline, 1)


def _cumulative_histogram(values: np.ndarray) -> np.ndarray:
    """How many values lie at or below each of 256 levels: quantiles without a sort."""
    return np.cumsum(np.bincount(to_uint8(values).ravel(), minlength=256))


def _quantile(cumulative: np.ndarray, fraction: float) -> float:
    """The level in [0, 1] below which `fraction` of the values lie."""
    return float(np.searchsorted(cumulative, cumulative[-1] * fraction)) / 255.0


def to_uint8(values: np.ndarray) -> np.ndarray:
    """Gray in [0, 1] -> uint8 levels, rounded."""
    return (np.clip(values, 0.0, 1.0) * np.float32(255) + np.float32(0.5)).astype(np.uint8)


def _otsu_threshold(values: np.ndarray) -> float:
    """The level in [0, 1] that best splits `values` into background and ink."""
    histogram = np.bincount(to_uint8(values).ravel(), minlength=256).astype(np.float64)
    weight = np.cumsum(histogram)
    weighted_sum = np.cumsum(histogram * np.arange(256))
    total, total_sum = weight[-1], weighted_sum[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (total_sum * weight - weighted_sum * total) ** 2 / (weight * (total - weight))
    between[~np.isfinite(between)] = -1.0
    return (int(np.argmax(between)) + 0.5) / 255.0


def _find_paper(gray: np.ndarray, cumulative: np.ndarray) -> np.ndarray | None:
    """Where the sheet lies in a photo of a sheet of paper on a darker desk, or None when
    the picture is not one.

    The desk is much darker than the paper and surrounds it (it takes most of the
    picture's outermost pixels). The sheet is the largest light region, filled along its
    rows and columns (the ink on it becomes part of it); it is large, and light over most of
    that area: blank paper with straight sides, which a bright digit on a dark canvas is not.
    """
    ring = _ring(gray)
    desk_level = float(np.partition(ring, ring.size // 2)[ring.size // 2])
    paper_level = _quantile(cumulative, 1.0 - PAPER_MIN_AREA / 2)
    if desk_level > DESK_MAX_BRIGHTNESS * paper_level or paper_level - desk_level < MIN_INK_CONTRAST:
        return None
    light = gray > np.float32(desk_level + DESK_TO_PAPER_THRESHOLD * (paper_level - desk_level))
    labels, count = _label_components(light)
    if count == 0:
        return None
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    sheet = labels == int(np.argmax(sizes))
    paper = _fill_spans(sheet) & _fill_spans(sheet.T).T
    area = np.count_nonzero(paper)
    if (
        np.count_nonzero(_ring(paper)) > (1 - DESK_MIN_BORDER) * ring.size
        or area < PAPER_MIN_AREA * paper.size
        or np.count_nonzero(sheet) < PAPER_MIN_BLANK * area
    ):
        return None
    return paper


def _fill_spans(mask: np.ndarray) -> np.ndarray:
    """`mask` with each row filled from its first to its last pixel."""
    return np.logical_or.accumulate(mask, axis=1) & np.logical_or.accumulate(mask[:, ::-1], axis=1)[:, ::-1]


def _ring(image: np.ndarray) -> np.ndarray:
    """The outermost pixels, once each."""
    return np.concatenate([image[0], image[-1], image[1:-1, 0], image[1:-1, -1]])


def _label_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
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


def _root(parent: list[int], node: int) -> int:
    """Union-find's root of `node`, halving the path on the way."""
    while parent[node] != node:
        parent[node] = parent[parent[node]]
        node = parent[node]
    return node


def _sliding_extreme(values: np.ndarray, size: int, pick: np.ufunc, axis: int) -> np.ndarray:
    """`pick` (np.minimum or np.maximum) over a centred window of `size` pixels along
    `axis`, the edges repeated, in about log2(size) whole-array steps."""
    if axis == 1:
        return _sliding_extreme(values.T, size, pick, 0).T
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


def _square_extreme(values: np.ndarray, size: int, pick: np.ufunc) -> np.ndarray:
    """`pick` over a centred size x size square: along rows, then along columns."""
    return _sliding_extreme(_sliding_extreme(values, size, pick, 1), size, pick, 0)


def _erode(mask: np.ndarray, size: int) -> np.ndarray:
    """The pixels of `mask` whose centred size x size square lies wholly in it."""
    return _square_extreme(mask, size, np.minimum)


def _background_map(bright: np.ndarray, square_px: float) -> np.ndarray:
    """The page's level under the ink (ink bright): a grey-level opening, the highest level
    at each pixel that a square wider than any pen stroke fits under.

    It follows the edges of shadows and of a desk exactly, where averaging blocks would
    smear them into bands of false ink, and it passes under every stroke narrower than the
    square. Computed on 8-bit levels, which are as good for this and cheaper to move.
    """
    size = max(3, round(square_px)) | 1
    levels = to_uint8(bright)
    opened = _square_extreme(_square_extreme(levels, size, np.minimum), size, np.maximum)
    return opened * np.float32(1 / 255)


def _faint_ruled_lines(ink: np.ndarray) -> np.ndarray:
    """Ruled lines: faint horizontal lines across a third of the picture or more.

    A horizontal opening of the ink keeps what is at least that long (neighbouring rows
    merged, for a page turned a few degrees); what it keeps is a ruled line, not a digit's
    stroke, where it is fainter than half the darkest ink. Lines stay lines when the picture
    is narrowed four times, so the opening runs on that, and only where some row holds
    enough faint ink for a line (most pictures have none).
    """
    width = ink.shape[1]
    narrow = _narrow(ink, LINE_NARROWING)
    length = max(3, round(narrow.shape[1] * RULED_LINE_FRACTION)) | 1
    thickened = _sliding_extreme(narrow, 3, np.maximum, 0)
    darkest = ink.max()
    faint = (thickened > RULED_LINE_MIN_INK * darkest) & (thickened < RULED_LINE_MAX_INK * darkest)
    if np.count_nonzero(faint, axis=1).max() < length:
        return np.zeros_like(ink)
    lines = _sliding_extreme(_sliding_extreme(thickened, length, np.minimum, 1), length, np.maximum, 1)
    lines = np.repeat(lines, LINE_NARROWING, axis=1)[:, :width]
    return np.where(lines < RULED_LINE_MAX_INK * darkest, np.maximum(lines, 0.0), np.float32(0.0))


def _narrow(values: np.ndarray, factor: int) -> np.ndarray:
    """Means of `factor` neighbouring columns (the last one repeated to fill a group):
    strided sums, cheaper for small images than a round trip through Pillow."""
    width = values.shape[1]
    if width % factor:
        values = np.concatenate([values, np.repeat(values[:, -1:], factor - width % factor, axis=1)], axis=1)
    total = values[:, 0::factor].copy()
    for offset in range(1, factor):
        total += values[:, offset::factor]
    return total * np.float32(1 / factor)


def _remove_isolated_pixels(ink: np.ndarray) -> np.ndarray:
    """Drop single specks of noise, which would otherwise stretch the ink's bounding box."""
    mask = ink > 0
    framed = np.zeros((mask.shape[0] + 2, mask.shape[1] + 2), np.uint8)
    framed[1:-1, 1:-1] = mask
    # Inked pixels in each 3x3 square, as sums along rows and then along columns.
    across = framed[:, :-2] + framed[:, 1:-1] + framed[:, 2:]
    square = across[:-2] + across[1:-1] + across[2:]
    return np.where(mask & (square == 1), np.float32(0.0), ink)


def _without_clutter(ink: np.ndarray, on_paper: np.ndarray | None) -> np.ndarray:
    """Drop ink that touches the picture's border or the sheet's edge when a digit is
    elsewhere: the edge of a desk or of a shadow, a pen or a finger reaching in.

    A digit cut by the border stays when nothing else is there, or when what is elsewhere
    is too small to be a digit: it spans under DIGIT_MIN_SPAN of the picture both ways and
    weighs under CLUTTER_MIN_DIGIT_MASS of the ink at the border.
    """
    mask = ink > 0
    if on_paper is None and not _ring(mask).any():
        return ink
    edge = np.zeros(mask.shape, bool)
    edge[0], edge[-1], edge[:, 0], edge[:, -1] = True, True, True, True
    if on_paper is not None:
        edge |= ~_erode(on_paper, 3)
    touching = mask & edge
    if not touching.any():
        return ink
    labels, count = _label_components(mask)
    clutter = np.zeros(count + 1, bool)
    clutter[labels[touching]] = True
    mass = np.bincount(labels.ravel(), ink.ravel(), count + 1)
    digit = ~clutter[labels] & mask
    if not digit.any():
        return ink
    rows, columns = np.flatnonzero(digit.any(axis=1)), np.flatnonzero(digit.any(axis=0))
    span = max((rows[-1] - rows[0] + 1) / mask.shape[0], (columns[-1] - columns[0] + 1) / mask.shape[1])
    if span < DIGIT_MIN_SPAN and mass[~clutter].sum() < CLUTTER_MIN_DIGIT_MASS * mass[clutter].sum():
        return ink
    return np.where(clutter[labels], np.float32(0.0), ink)


def _fit_and_centre(ink: np.ndarray, style: ImageStyle) -> np.ndarray:
    """Scale the longer side to the style's size (anti-aliased; a pen stroke's brightest pixel
    made 1) and place the centre of mass at (14, 14), or the box in the middle."""
    height, width = ink.shape
    scale = style.side_px / max(height, width)
    new_height, new_width = max(1, round(height * scale)), max(1, round(width * scale))
    digit = np.asarray(
        Image.fromarray(np.ascontiguousarray(ink)).resize((new_width, new_height), Image.Resampling.BILINEAR)
    )
    digit = np.clip(digit, 0.0, 1.0)
    peak = digit.max()
    if style.saturate_ink and peak > 0:
        digit = digit / peak
    if style.by_centre_of_mass:
        mass = digit.sum()
        centre_y = float((digit.sum(axis=1) * np.arange(new_height)).sum() / mass)
        centre_x = float((digit.sum(axis=0) * np.arange(new_width)).sum() / mass)
        top = min(max(round(CENTRE_PX - centre_y), 0), FRAME_PX - new_height)
        left = min(max(round(CENTRE_PX - centre_x), 0), FRAME_PX - new_width)
    else:
        top, left = (FRAME_PX - new_height) // 2, (FRAME_PX - new_width) // 2
    frame = np.zeros((FRAME_PX, FRAME_PX), np.float32)
    frame[top : top + new_height, left : left + new_width] = digit
    return frame


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of a uint8 grayscale image (for --save-preprocessed)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()
