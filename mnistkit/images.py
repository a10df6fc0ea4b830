"""People's images, read with Pillow and prepared the way a dataset prepared its own.

MNIST fitted each digit's ink into a 20x20 box (aspect ratio kept, anti-aliased) and
placed it in a 28x28 frame so that its centre of mass sits at pixel (14, 14). EMNIST
centred each character's box in the frame, nearly filling it; Fashion-MNIST scaled each
product photo's longer side to 28 px, centred it, and kept its shades. A photo or a canvas
drawing looks nothing like any of these, so `preprocess_digit` finds the ink first: it
composites transparency so that what is opaque is ink, turns a light background dark,
subtracts uneven background shading, crops to the ink and then does what the dataset did
(`datasets.IMAGE_STYLES`, chosen by the checkpoint).

Pillow and numpy only: predict imports this module and must start without jax.
"""

from __future__ import annotations

import io
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
# Ink must stand out from the background by this much (0-1 scale), or the image is blank.
MIN_INK_CONTRAST = 0.15
# Stroke pixels below this fraction of the typical ink level are background noise;
# those above this fraction are saturated like MNIST's stroke cores.
INK_LOW_FRACTION = 0.25
INK_HIGH_FRACTION = 0.75
BACKGROUND_BLOCK_PX = 32
BACKGROUND_PERCENTILE = 25

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
        mask = ink > 0
    else:
        ink, mask = _object_map(gray, source)
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        raise MnistkitError(f"{source}: blank image (only isolated specks, no stroke)")
    columns = np.flatnonzero(mask.any(axis=0))
    cropped = ink[rows[0] : rows[-1] + 1, columns[0] : columns[-1] + 1]
    return to_uint8(_fit_and_centre(cropped, style))


def _ink_map(gray: np.ndarray, source: str) -> np.ndarray:
    """Ink intensity in [0, 1] where the stroke is, exactly 0 on the background; the stroke's
    levels stretched so that its core is 1, as a pen stroke's in MNIST."""
    if _median(gray) > 0.5:
        gray = np.float32(1.0) - gray
    ink = gray - _background_map(gray)
    ink_mask = ink > _otsu_threshold(np.clip(ink, 0.0, 1.0))
    if not ink_mask.any():
        raise MnistkitError(f"{source}: blank image (no ink found)")
    stroke = ink[ink_mask]
    level = float(np.partition(stroke, stroke.size // 2)[stroke.size // 2])
    if level < MIN_INK_CONTRAST:
        raise MnistkitError(f"{source}: blank image (nothing stands out from the background)")
    low, high = INK_LOW_FRACTION * level, INK_HIGH_FRACTION * level
    ink = np.clip((ink - np.float32(low)) / np.float32(high - low), 0.0, 1.0)
    return _remove_isolated_pixels(ink)


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
    mask = shades > _otsu_threshold(shades) / 2
    return shades, _remove_isolated_pixels(mask.astype(np.float32)) > 0


def _median(gray: np.ndarray) -> float:
    histogram = np.bincount(to_uint8(gray).ravel(), minlength=256)
    return float(np.searchsorted(np.cumsum(histogram), gray.size / 2)) / 255.0


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


def _background_map(gray: np.ndarray) -> np.ndarray:
    """Smooth background level: a low percentile of each block, interpolated between blocks.

    Ink is bright and covers less than most of any block, so the block's lower quarter
    is background even where shading makes that background brighter than ink elsewhere.
    """
    height, width = gray.shape
    block = BACKGROUND_BLOCK_PX
    if max(height, width) <= block:
        # A rank, like the blocks below (np.percentile would cost a 40 ms import of numpy.lib).
        rank = gray.size * BACKGROUND_PERCENTILE // 100
        return np.full_like(gray, np.partition(gray.ravel(), rank)[rank])
    rows, columns = -(-height // block), -(-width // block)
    padded = np.empty((rows * block, columns * block), np.float32)
    padded[:height, :width] = gray
    padded[height:, :width] = gray[-1]
    padded[:, width:] = padded[:, width - 1 : width]
    # Every other pixel of each block estimates its percentile as well, at a quarter of the cost.
    half = block // 2
    sample = padded[::2, ::2]
    blocks = sample.reshape(rows, half, columns, half).transpose(0, 2, 1, 3).reshape(rows, columns, -1)
    rank = half * half * BACKGROUND_PERCENTILE // 100
    levels = np.partition(blocks, rank, axis=2)[..., rank]
    return np.asarray(Image.fromarray(levels).resize((width, height), Image.Resampling.BILINEAR))


def _remove_isolated_pixels(ink: np.ndarray) -> np.ndarray:
    """Drop single specks of noise, which would otherwise stretch the ink's bounding box."""
    mask = ink > 0
    framed = np.zeros((mask.shape[0] + 2, mask.shape[1] + 2), np.uint8)
    framed[1:-1, 1:-1] = mask
    neighbours = (
        framed[:-2, :-2] + framed[:-2, 1:-1] + framed[:-2, 2:] + framed[1:-1, :-2]
        + framed[1:-1, 2:] + framed[2:, :-2] + framed[2:, 1:-1] + framed[2:, 2:]
    )  # fmt: skip
    return np.where(mask & (neighbours == 0), np.float32(0.0), ink)


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
