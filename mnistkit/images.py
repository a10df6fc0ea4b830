"""People's images read with Pillow: any format, upright, transparency composited, refused
when hostile (decompression bombs, strips), then prepared by `preprocess`.

Pillow and numpy only: predict imports this module and must start without jax.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mnistkit.datasets import DEFAULT_DATASET, IMAGE_SHAPE, IMAGE_STYLES, ImageStyle
from mnistkit.errors import MnistkitError, UndecodableImage
from mnistkit.inputs import input_path, what_file_is
from mnistkit.morphology import median, to_uint8
from mnistkit.preprocess import FoundDigit, already_prepared, find_digit, fit_digit
from mnistkit.terms import on_command_line, setting

# The decompression-bomb guard: images with more pixels are refused from their header,
# before any pixel is decoded. 40 megapixels (160 MB as RGBA) holds a 7000x5700 photo.
MAX_IMAGE_PIXELS = 40_000_000
# A digit is never a thin strip; 1x100000 pixels is a hostile file, not a digit.
MAX_ASPECT_RATIO = 50
# The major brands of HEIF files whose pictures are HEVC, which Pillow does not decode
# (AVIF, HEIF's AV1 kind, it reads).
HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1")
# Larger images are box-averaged down to at most this longer side before the ink is
# found: the digit ends at 20 pixels, but a pencil line on a digit a third of the page high
# must stay a few pixels wide to be found whole (at 128 px, people-style digits drawn with
# the finest pens were read 3 points worse; predict reads 12-18% fewer images a second).
WORK_SIDE_PX = 256
# A stroke's boxes that keep less of its contrast than this, typically, were thinner than a
# box. Boxes of 2 px leave a 2 px line that they cut in two half its contrast, which a 4's
# crossbar keeps while its other strokes keep all of theirs: at 0.6, a thin pen's 4 was read
# as a 1 where its crossbar fell on an odd row (taken for a faint ruled line and dropped).
THIN_STROKE_KEPT = 0.9
# A large JPEG is decoded at a reduced scale no smaller than this many times the working size.
THIN_STROKE_MIN_FACTOR = 3
FRAME_PX = IMAGE_SHAPE[0]
# A digit less than this many working pixels high and wide on a shrunk picture is found again
# in the picture's own pixels around it. A 6 shrunk to 14 px closes its loop; MNIST's test
# digits pasted on a scanned A4 page (1240x1754) were read 97.0% right at 15 px, 99.1% at
# 25 px and 99.6% at 36 px (99.7%, 99.5%, 99.6% found again). Not larger: the faint thin
# strokes of a photo keep more contrast shrunk (`_thin_strokes_kept`) than in its own pixels.
CLOSER_LOOK_BELOW_PX = 32
# That second reading reaches this fraction of the digit's longer side beyond it on every side.
CLOSER_LOOK_MARGIN = 0.5

Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS

_HIGH_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


class Grayscale(NamedTuple):
    """A picture as float32 gray in [0, 1], and whether it was shrunk to be so (its own
    pixels then show more than `pixels` does)."""

    pixels: np.ndarray
    shrunk: bool


def load_digit(
    path: str | os.PathLike[str],
    preprocess: bool = True,
    content: bytes | None = None,
    style: str = DEFAULT_DATASET,
    picture: Image.Image | None = None,
) -> np.ndarray:
    """The uint8 28x28 image (ink bright on black) that a model should see, prepared as the
    dataset named by `style` (a key of IMAGE_STYLES) prepared its images.

    With `preprocess=False` the file must already be a 28x28 MNIST-style image; it is
    only converted to grayscale, as any image is for a style `as_is`. When the image is in
    memory, `content` holds its bytes (an upload to `mnistkit serve`) or `picture` the image
    itself (a notebook's, left as it is), and `path` only names it in errors.
    Raises MnistkitError("path: reason") for any bad input, naming `path` as given (`./a.png`,
    not pathlib's `a.png`), as a row of predict's output does.
    """
    if content is None and picture is None:
        input_path(path, "an image file")  # refused when empty
    path = os.fspath(path)  # opened as given: pathlib read `a.png/` as the file `a.png`
    image_style = IMAGE_STYLES[style]
    as_is = not preprocess or image_style.as_is
    read = read_grayscale(
        path, not as_is, content, picture, white_backdrop=not as_is and image_style.white_backdrop
    )
    if as_is:
        if read.pixels.shape != (FRAME_PX, FRAME_PX):
            height, width = read.pixels.shape
            why = (
                "the model takes 28x28 images as they are, as its dataset's own (mnistkit does not "
                "know how that dataset made its images from pictures)"
                if image_style.as_is
                else f"{setting('preprocess', False)} needs 28x28 (leave it out to have the picture "
                "fitted into 28x28)"
            )
            raise MnistkitError(f"{path}: image is {width}x{height} pixels; {why}")
        from mnistkit.arrays import on_light_paper  # here: predicting photos needs none of arrays

        image = to_uint8(read.pixels)
        light = not image_style.as_is and on_light_paper(image[None])
        if light:
            raise MnistkitError(
                f"{path}: image is dark on light paper (its edge averages {light[1]:.0f} of 255), where "
                f"{setting('preprocess', False)} takes pictures light on black, as the model's dataset "
                "has them (leave it out to have the picture prepared)"
            )
        return image
    prepared = already_prepared(read.pixels, image_style)
    if prepared is not None:
        return prepared
    digit = _found_digit(path, read.pixels, content, picture, image_style)
    top, bottom, left, right = digit.box
    if read.shrunk and max(bottom - top, right - left) < CLOSER_LOOK_BELOW_PX:
        digit = _closer_look(path, read.pixels.shape, digit, content, picture, image_style)
    return fit_digit(digit.pixels, image_style)


def _found_digit(
    path: str, gray: np.ndarray, content: bytes | None, picture: Image.Image | None, style: ImageStyle
) -> FoundDigit:
    """`find_digit`, and where it finds none, a second reading that may."""
    try:
        return find_digit(gray, path, style)
    except MnistkitError as error:
        refusal = error
    if max(gray.shape) < FRAME_PX:
        # Smaller than MNIST's own frame, a digit's strokes may be one pixel wide, corner to
        # corner, which the ink's tests take for specks: read it again enlarged pixel for pixel
        # (only then: enlarged always, such digits were read worse).
        factor = -(-2 * FRAME_PX // max(gray.shape))
        return find_digit(np.kron(gray, np.ones((factor, factor), np.float32)), path, style)
    if not style.saturate_ink:
        raise refusal
    # A light pen thinner than the boxes that shrank a large picture keeps half its contrast
    # or less where they cut it, too little to stand out where its other strokes kept theirs
    # (a grey 2 px line on a 300 px canvas): read it again with every box its most ink-like
    # pixel. Not always: dust and ruled lines beside a thick digit would then be ink.
    try:
        inked = read_grayscale(
            path,
            content=content,
            picture=picture,
            every_box_ink_like=True,
            white_backdrop=style.white_backdrop,
        ).pixels
        if np.array_equal(inked, gray):  # not shrunk, or already shrunk that way
            raise refusal
        return find_digit(inked, path, style)
    except MnistkitError:
        raise refusal from None


def _closer_look(
    path: str,
    shape: tuple[int, ...],
    digit: FoundDigit,
    content: bytes | None,
    picture: Image.Image | None,
    style: ImageStyle,
) -> FoundDigit:
    """`digit`, found small on a shrunk picture, found again in the picture's own pixels
    around it, shrunk less or not at all; `digit` itself where that finds nothing."""
    top, bottom, left, right = digit.box
    height, width = shape
    margin = CLOSER_LOOK_MARGIN * max(bottom - top, right - left)
    region = (
        max(0.0, (top - margin) / height),
        min(1.0, (bottom + margin) / height),
        max(0.0, (left - margin) / width),
        min(1.0, (right + margin) / width),
    )
    try:
        closer = read_grayscale(
            path, content=content, picture=picture, region=region, white_backdrop=style.white_backdrop
        )
        return find_digit(closer.pixels, path, style)
    except MnistkitError:
        return digit


def read_grayscale(
    path: str,
    shrink: bool = True,
    content: bytes | None = None,
    picture: Image.Image | None = None,
    every_box_ink_like: bool = False,
    region: tuple[float, float, float, float] | None = None,
    white_backdrop: bool = False,
) -> Grayscale:
    """Decode any image Pillow reads into float32 gray in [0, 1], upright, alpha composited
    (on white with `white_backdrop`, else on what contrasts with the opaque pixels), and with
    `shrink`, box-averaged down to a longer side of at most WORK_SIDE_PX (each box its most
    ink-like pixel instead where the strokes are thinner than the boxes, or with
    `every_box_ink_like`, everywhere). The image is the file at `path`, or `content` when
    given, or `picture` (left as it is); with `region` (top, bottom, left, right as fractions
    of the upright image's height and width), only that part of it."""
    if picture is not None:
        problem = _size_problem(picture.width, picture.height)
        if problem:
            raise MnistkitError(f"{path}: {problem}")
        # Opened lazily, then closed: decoding it would fail with an empty message.
        if getattr(picture, "tile", None) and getattr(picture, "fp", None) is None:
            raise MnistkitError(
                f"{path}: the image's file was closed before its pixels were read; call .load() "
                "inside `with Image.open(...)`, or give the file's path"
            )
    image = _open_checked(path, content) if picture is None else picture
    try:
        if picture is not None:  # a copy, turned upright; a lazily opened one decodes here
            with _not_memory_mapped(picture):
                upright = ImageOps.exif_transpose(picture)
            return _grayscale(upright, path, shrink, every_box_ink_like, region, white_backdrop)
        with image, _not_memory_mapped(image):
            if shrink and image.format == "JPEG":
                _draft(image, region)
            image.load()
            ImageOps.exif_transpose(image, in_place=True)
            return _grayscale(image, path, shrink, every_box_ink_like, region, white_backdrop)
    except MnistkitError:
        raise
    except Exception as error:  # Pillow's decoders raise many untyped errors on bad data
        raise UndecodableImage(f"{path}: truncated or corrupted image ({error})") from None


@contextlib.contextmanager
def _not_memory_mapped(image: Image.Image) -> Iterator[None]:
    """Pixels decoded inside the block are read, never memory-mapped: Pillow (13.0) maps an
    uncompressed TIFF turned by its orientation tag (5 to 8) at the turned size, which
    scrambles them. It maps only what has a file name; a caller's picture gets its name back."""
    name = getattr(image, "filename", None)
    if name is None:
        yield
        return
    image.filename = ""
    try:
        yield
    finally:
        image.filename = name


def _draft(image: Image.Image, region: tuple[float, float, float, float] | None) -> None:
    """Decode a large JPEG at a reduced scale (a half, quarter or eighth) and, from colour,
    straight to gray, which is faster. But only down to THIN_STROKE_MIN_FACTOR times
    WORK_SIDE_PX: a stroke thinner than the scale fades as in a box's average, and boxes that
    large leave the check for thin strokes to find it (decoded down to 256 px, a 4 px line on
    a 2000 px canvas was read as a blank image). A `region`, read to see a small digit
    closer, is decoded no smaller than WORK_SIDE_PX across."""
    longer = max(image.size)
    side = WORK_SIDE_PX * THIN_STROKE_MIN_FACTOR
    if region is not None:
        # The region is the upright picture's; the shorter side bounds its sides from below.
        top, bottom, left, right = region
        region_px = max(bottom - top, right - left) * min(image.size)
        side = WORK_SIDE_PX * longer / max(region_px, 1.0)
    if longer > side:
        mode = "L" if image.mode == "RGB" else image.mode  # the luma Pillow's own "L" computes
        image.draft(mode, (int(image.width * side // longer), int(image.height * side // longer)))


def _grayscale(
    image: Image.Image,
    path: str,
    shrink: bool,
    every_box_ink_like: bool,
    region: tuple[float, float, float, float] | None,
    white_backdrop: bool,
) -> Grayscale:
    if region is not None:
        top, bottom, left, right = region
        width, height = image.size
        image = image.crop(
            (round(left * width), round(top * height), round(right * width), round(bottom * height))
        )
    gray_image = _to_gray_mode(image)
    shrunk_image = _shrink_to_work_size(gray_image, every_box_ink_like) if shrink else gray_image
    gray, alpha = _gray_and_alpha(shrunk_image)
    if alpha is not None:
        gray = _composite(gray, alpha, path, white_backdrop)
    return Grayscale(gray, shrunk_image.size != image.size)


def _folders_images(path: str) -> str:
    """How to give a folder's images in the caller's terms: a shell's glob or stdin, Python's list."""
    pattern = _images_pattern(path)
    if on_command_line():
        stdin = f"find {path} -name '{pattern}' | mnistkit predict CKPT -"
        return f"({path}/{pattern}) or their paths on stdin: {stdin}"
    return f"sorted(pathlib.Path({path!r}).glob('{pattern}'))"


def _images_pattern(folder: str) -> str:
    """The glob of the kind of image a folder holds most (a phone's *.JPG), else *.png. Only
    kinds Pillow reads count (it writes PDFs, and reads none)."""
    readable = {suffix for suffix, kind in Image.registered_extensions().items() if kind in Image.OPEN}
    try:
        suffixes = Counter(
            entry.suffix
            for entry in itertools.islice(Path(folder).iterdir(), 10_000)
            if entry.suffix.lower() in readable and entry.is_file()
        )
    except OSError:  # unreadable: the hint is only a hint
        suffixes = Counter()
    return f"*{suffixes.most_common(1)[0][0]}" if suffixes else "*.png"


def _open_checked(path: str, content: bytes | None = None) -> Image.Image:
    """Open lazily (header only) and refuse bombs and strips before any decoding."""
    try:
        if content is None and os.path.isdir(path):
            raise MnistkitError(
                f"{path}: is a directory, expected an image file; give its images {_folders_images(path)}"
            )
        if content is None and not os.path.isfile(path) and os.path.exists(path):  # its size says nothing
            raise MnistkitError(f"{path}: not a regular file (a device or a pipe), expected an image file")
        if len(content) == 0 if content is not None else _is_empty(path):
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
        raise UndecodableImage(f"{path}: {_unidentified(path, content)}") from None
    except OSError as error:
        raise UndecodableImage(f"{path}: cannot read: {error.strerror or error}") from None
    except Exception as error:  # a malformed header can break a format plugin in any way
        raise UndecodableImage(f"{path}: corrupted image header ({error})") from None
    problem = _size_problem(image.width, image.height)
    if problem:
        image.close()
        raise MnistkitError(f"{path}: {problem}")
    return image


def _unidentified(path: str, content: bytes | None) -> str:
    """Why Pillow could not open a file. An iPhone's photo is HEIC by default: an image all
    the same, so "not an image" would send its owner looking for the wrong mistake; and an
    .npz or a checkpoint given where an image belongs is named, as another command's input
    is."""
    if content is None:
        with contextlib.suppress(OSError), open(path, "rb") as handle:
            content = handle.read(16)
    start = content or b""
    if start[4:8] == b"ftyp" and start[8:12] in HEIF_BRANDS:
        return "a HEIC/HEIF photo, which Pillow does not read: save it as JPEG or PNG"
    kind = what_file_is(start[:16])
    if kind is not None and not kind.endswith(" image"):
        return f"{kind}, not an image"
    return "not an image (Pillow cannot identify the format)"


def _is_empty(path: str) -> bool:
    """Whether `path` holds no byte: a size of 0 is read to be sure, since /proc's files
    and some network file systems give 0 for files that hold something."""
    if os.stat(path).st_size:
        return False
    with open(path, "rb") as handle:
        return not handle.read(1)


def declared_pixels(content: bytes) -> int:
    """The pixels an image's header declares, read without decoding; 0 for an image that
    `load_digit` refuses before decoding (it says why)."""
    try:
        with _open_checked("image", content) as image:
            return image.width * image.height
    except MnistkitError:
        return 0


def _size_problem(width: int, height: int) -> str | None:
    if width < 1 or height < 1:
        return f"image is {width}x{height} pixels, nothing to read"
    if width * height > MAX_IMAGE_PIXELS:
        return (
            f"image is {width}x{height} pixels, more than the limit of {MAX_IMAGE_PIXELS:,} "
            "(decompression bomb guard)"
        )
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        shape = f"{width}x{height} pixels"
        return f"image is {shape}, too elongated for a digit or an object (over {MAX_ASPECT_RATIO}:1)"
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


def _shrink_to_work_size(image: Image.Image, every_box_ink_like: bool) -> Image.Image:
    """Box-average big images down; Pillow weights colour by alpha, so edges stay right.
    Strokes thinner than the boxes keep their contrast (`_thin_strokes_kept`)."""
    factor = -(-max(image.size) // WORK_SIDE_PX)
    if factor == 1:
        return image
    averaged = image.reduce(factor)
    if image.mode == "LA":
        return averaged
    return _thin_strokes_kept(image, averaged, factor, every_box_ink_like)


def _thin_strokes_kept(
    image: Image.Image, averaged: Image.Image, factor: int, every_box_ink_like: bool
) -> Image.Image:
    """`averaged`, unless it fades the digit's strokes: a box averages a stroke thinner than
    itself into the paper (a 4 px pen line on a 2000 px canvas keeps a quarter of its
    contrast, or two eighths side by side, and a faint line is no ink). The strongest marks
    of `averaged` are the digit's; where their boxes typically keep less than
    THIN_STROKE_KEPT of their ink's contrast, each box becomes its `factor`-th most ink-like
    pixel instead: the strokes keep their contrast, one working pixel wide at least (and
    preprocessing thickens them as it does a fine pen's), while a speck of dust covering
    fewer pixels stays paper. A thick digit beside ruled lines or dust keeps `averaged`.
    `every_box_ink_like` takes each box's pixel whatever the strokes: the second reading of a
    picture that the first found blank (see `load_digit`)."""
    mean = np.asarray(averaged, np.float32)
    paper = median(mean)
    dark_ink = paper - float(mean.min()) >= float(mean.max()) - paper  # the ink lies farther off
    contrast = np.abs(mean - np.float32(paper))
    if contrast.max() == 0:
        return averaged
    if every_box_ink_like:
        return _every_box_ink_like(image, mean.shape, factor, dark_ink, averaged.mode)
    strongest = contrast >= contrast.max() / 2
    rows, columns = np.nonzero(strongest)
    top, left, bottom, right = rows.min(), columns.min(), rows.max() + 1, columns.max() + 1
    region = image.crop(
        (left * factor, top * factor, min(right * factor, image.width), min(bottom * factor, image.height))
    )
    candidates = _boxes(np.asarray(region), (bottom - top, right - left), factor)[
        rows - top, :, columns - left, :
    ]
    full = np.abs(
        _ink_like(candidates.reshape(len(rows), -1), factor, dark_ink).astype(np.float32) - np.float32(paper)
    )
    kept = np.divide(contrast[strongest], full, out=np.full_like(full, np.inf), where=full > 0)
    if median(kept) >= THIN_STROKE_KEPT:
        return averaged
    return _every_box_ink_like(image, mean.shape, factor, dark_ink, averaged.mode)


def _every_box_ink_like(
    image: Image.Image, shape: tuple[int, ...], factor: int, dark_ink: bool, mode: str
) -> Image.Image:
    """The picture shrunk with each box the `factor`-th most ink-like pixel of the window
    twice its side centred on it. A line one pixel wide that clips a box's corner covers
    fewer than `factor` of the box's pixels (a 1 px pen on a 900 px canvas came out in
    pieces), but at least `factor` of the window's; a speck smaller than that stays paper.
    The window is four boxes of a grid shifted by half a box, each kept as its `factor`
    most ink-like pixels, among which the window's lie."""
    rows, columns = shape
    half = factor // 2
    values = np.asarray(image)
    padding = (
        (half, (rows + 1) * factor - half - values.shape[0]),
        (half, (columns + 1) * factor - half - values.shape[1]),
    )
    shifted = np.pad(values, padding, "edge").reshape(rows + 1, factor, columns + 1, factor)
    boxes = shifted.transpose(0, 2, 1, 3).reshape(-1, factor * factor)
    best = _most_ink_like(boxes, factor, dark_ink).reshape(rows + 1, columns + 1, factor)
    windows = np.concatenate((best[:-1, :-1], best[:-1, 1:], best[1:, :-1], best[1:, 1:]), axis=2)
    return Image.fromarray(_ink_like(windows.reshape(-1, 4 * factor), factor, dark_ink).reshape(shape), mode)


def _boxes(values: np.ndarray, shape: tuple[int, ...], factor: int) -> np.ndarray:
    """`values` as (rows, factor, columns, factor) boxes, laid out as `Image.reduce` lays out
    its own (the last ones padded with their edge)."""
    rows, columns = shape
    padding = ((0, rows * factor - values.shape[0]), (0, columns * factor - values.shape[1]))
    if padding != ((0, 0), (0, 0)):
        values = np.pad(values, padding, "edge")
    return values.reshape(rows, factor, columns, factor)


def _most_ink_like(pixels: np.ndarray, count: int, dark_ink: bool) -> np.ndarray:
    """Each row's `count` darkest pixels (lightest for light ink), in no order."""
    if dark_ink:
        return np.partition(pixels, count - 1, axis=1)[:, :count]
    return np.partition(pixels, pixels.shape[1] - count, axis=1)[:, pixels.shape[1] - count :]


def _ink_like(pixels: np.ndarray, rank: int, dark_ink: bool) -> np.ndarray:
    """Each row's `rank`-th darkest pixel (`rank`-th lightest for light ink): a line a pixel
    wide or more that crosses a box covers `rank` (its side) of its pixels, a speck fewer."""
    index = rank - 1 if dark_ink else pixels.shape[1] - rank
    return np.partition(pixels, index, axis=1)[:, index]


# The bit depths a 16-bit image's pixels are taken to hold, by the brightest of them.
DATA_BITS = (8, 10, 12, 14, 16)


def _gray_and_alpha(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """Float32 gray in [0, 1] and, for an "LA" image, alpha in [0, 1]."""
    values = np.asarray(image, dtype=np.float32)
    if image.mode == "LA":
        values = values / np.float32(255)
        return values[..., 0], values[..., 1]
    if image.mode == "L":
        return values / np.float32(255), None
    # "F" holds 16-bit, 32-bit or float pixels; the range they use tells their scale: a
    # 16-bit file holds a scanner's or a camera's 8, 10, 12 or 14 bits as often as 16.
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    peak = values.max(initial=0.0)
    top = 1.0 if peak <= 1.0 else next((2.0**bits - 1 for bits in DATA_BITS if peak <= 2**bits - 1), 65535.0)
    return np.clip(values / np.float32(top), 0.0, 1.0), None


def _composite(gray: np.ndarray, alpha: np.ndarray, path: str, white_backdrop: bool) -> np.ndarray:
    """Put a transparent picture on white with `white_backdrop`, else on a background that
    contrasts with what is opaque (a pen's strokes, dark or light)."""
    opacity = float(alpha.sum())
    if opacity < 1.0:
        raise MnistkitError(f"{path}: blank image (fully transparent, nothing drawn)")
    if alpha.min() >= 0.99:
        return gray
    opaque_mean = float((gray * alpha).sum()) / opacity
    background = np.float32(1.0 if white_backdrop or opaque_mean < 0.5 else 0.0)
    return alpha * gray + (np.float32(1.0) - alpha) * background


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of a uint8 grayscale image (for --save-preprocessed)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()
