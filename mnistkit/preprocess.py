"""A person's picture of a digit -> the 28x28 image a model expects, prepared the way the
model's dataset prepared its own.

MNIST fitted each digit's ink into a 20x20 box (aspect ratio kept, anti-aliased) and placed
it in a 28x28 frame so that its centre of mass sits at pixel (14, 14). A photo or a canvas
drawing looks nothing like that, so `preprocess_digit` finds the ink first: it finds the sheet
in a photo of paper lying on a desk, turns a light page dark, measures the ink against the
page's brightness under it (uneven shading and hard shadows alike), takes out faint ruled
lines, drops what touches the border when the digit is elsewhere and an underline or a box
drawn apart from it, crops to the ink and then
does what MNIST did. Other datasets made their images otherwise (`datasets.IMAGE_STYLES`,
chosen by the checkpoint): EMNIST centred each character's box, nearly filling the frame;
Fashion-MNIST scaled each product photo's longer side to 28 px, centred it and kept its
shades, which `_object_map` finds against the backdrop.

numpy and Pillow only.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import numpy as np
from PIL import Image

from mnistkit.datasets import DEFAULT_DATASET, IMAGE_SHAPE, IMAGE_STYLES, ImageStyle
from mnistkit.errors import MnistkitError
from mnistkit.morphology import (
    component_boxes,
    cumulative_histogram,
    dilate_disc,
    erode,
    fill_spans,
    label_components,
    median,
    narrow,
    otsu_threshold,
    quantile,
    rectangularity,
    ring,
    sliding_extreme,
    square_extreme,
    stroke_width_px,
    to_uint8,
)

FRAME_PX = IMAGE_SHAPE[0]
MNIST_STYLE = IMAGE_STYLES[DEFAULT_DATASET]
# MNIST's centres of mass lie at (14.0, 14.0) in pixel-index coordinates, not at 13.5.
CENTRE_PX = 14.0
# Ink must stand out from the background by this much (0-1 scale; for dark ink, this
# fraction of the paper's brightness, taken as at least MIN_PAPER_BRIGHTNESS), or the image
# is blank.
MIN_INK_CONTRAST = 0.15
BACKDROP_FITS = 8  # refits of the backdrop's surface at most, each without the object's pixels
BACKDROP_TOLERANCE = 0.02  # of a border pixel off the backdrop's surface, that it is backdrop all the same
# Dark ink is measured against its paper's brightness, taken as at least this, within this
# many pixels of where it stands out (a stroke's antialiased edge).
MIN_PAPER_BRIGHTNESS = 0.25
STROKE_EDGE_PX = 2
# Stroke pixels below this fraction of the typical ink level are background noise;
# those above this fraction are saturated like MNIST's stroke cores.
INK_LOW_FRACTION = 0.25
INK_HIGH_FRACTION = 0.75
# A 28x28 picture in the form of a dataset that keeps shades (Fashion-MNIST's photos) has
# its object on exact black: at least this share of its border's pixels are 0 (18.5% or
# more in each of Fashion-MNIST's 10,000 test images). A photo's own backdrop is not.
BLACK_BORDER_FRACTION = 0.1
# The page's brightness is first found under a square this fraction of the picture's longer
# side (wider than pen strokes), then under one this many times the strokes' width, unless
# that one leaves out more than this fraction of the ink as bright as the strokes.
BACKGROUND_SQUARE_FRACTION = 1 / 4
STROKES_PER_SQUARE = 3
HOLLOWED_FRACTION = 0.05
# Ruled lines are at least this fraction of the picture's width long and fainter than this
# fraction of the darkest ink. They are looked for in the picture narrowed this many times,
# and only when some row holds that much faint ink above this fraction of the darkest.
RULED_LINE_FRACTION = 1 / 3
RULED_LINE_MAX_INK = 0.5
LINE_NARROWING = 4
RULED_LINE_MIN_INK = 0.1
# Ink that is all lines across a third of the picture or more, each at most this much of the
# picture's longer side thick and rising at most this much per unit of length (a page turned
# up to about 11 degrees), is an empty ruled page, not a digit.
RULED_LINE_MAX_THICKNESS = 0.03
RULED_LINE_MAX_SLOPE = 0.2
# Squared paper: upright faint lines are taken out too where both ways there are at least
# this many lines, in a picture at least this many pixels on its shorter side (a box drawn
# round a digit has two, and a small drawing's faint stroke edges are no grid).
GRID_MIN_LINES = 3
GRID_MIN_SIDE_PX = 64
# The slant of ruled lines is looked for among about this many of the faint pixels first.
SLANT_SAMPLE_PIXELS = 1500
# A photo of a sheet of paper on a desk: the desk is at most this bright relative to the
# paper and takes at least this fraction of the picture's outermost pixels; the sheet is
# what is lighter than this fraction of the way from the desk's level to the paper's, takes
# at least this fraction of the picture, and is light over at least this fraction of it;
# ink within this many pixels of its edge (paper and desk blended) is not on the sheet.
DESK_MAX_BRIGHTNESS = 0.7
DESK_MIN_BORDER = 0.75
DESK_TO_PAPER_THRESHOLD = 0.25
PAPER_MIN_BLANK = 0.85


class SheetRule(NamedTuple):
    """What a light region must be to be taken for a sheet on a desk: at least `min_area` of
    the picture, filling at least `min_rectangularity` of the smallest rectangle around it at
    any angle (a sheet has straight sides)."""

    min_area: float
    min_rectangularity: float


# A bold light digit on a dark canvas, filled in, fills at most about 0.72 of its rectangle,
# an ellipse (a bold 0) 0.785.
LARGE_SHEET = SheetRule(0.3, 0.8)
# A smaller sheet (a sticky note, a slip of paper, a sheet photographed from afar) is one
# where it is straighter still: a bold light 1 on a dark canvas is as light and fills 0.83
# to 0.86 of its rectangle, sheets on desks 0.95 or more.
SMALL_SHEET = SheetRule(0.05, 0.9)
PAPER_EDGE_PX = 2
# Marks darker or lighter than the page that cover less than this fraction of it are noise
# when the ink's colour is decided.
POLARITY_MIN_MARKS = 0.002
# Light marks along at least this fraction of the picture's border are a lit part of a page
# in shadow, not a light digit's strokes: dark ink is then also looked for against the page
# around it.
LIT_BORDER_FRACTION = 0.1
# Ink past a gap at either end of the digit holding less than this fraction of all ink is a speck.
SPECK_FRACTION = 0.05
# A piece of ink spanning less than this fraction of the picture's longer side is a speck.
SPECK_MAX_SPAN = 0.02
# Ink touching the border is dropped when the ink elsewhere is a digit: it spans at least this
# fraction of the picture's height or width, or weighs at least this fraction of that ink.
DIGIT_MIN_SPAN = 0.25
CLUTTER_MIN_DIGIT_MASS = 0.2
# Pieces of ink are told apart by all of it, and then by their strokes' cores alone, ink of at
# least this level: the soft edges of a box a few pixels from the digit join the two.
RULE_CORE_INK = 0.5
# A piece apart from the digit is a rule (an underline, a line to write on) when it is at most
# this thick for its length, lies wholly on one side of the digit, reaches past it at both ends
# by this fraction of the digit's size, is this many times thinner than the digit is across
# it, and lies at least this fraction of the digit's extent across it away, unless it is under
# the digit. Lines alongside it at least this fraction as long are no part of the digit.
RULE_MAX_THICKNESS = 0.1
RULE_MIN_OVERHANG = 0.2
RULE_DIGIT_THICKNESSES = 4
RULE_MIN_GAP = 0.15
RULE_ALONGSIDE = 0.8
# Rows and columns holding no more inked pixels than this are gaps between pieces of ink (a
# speck between a digit and its line).
RULE_SPECK_PX = 2
# A piece is a frame (a form's box) when the digit lies inside it, this fraction of its pixels
# or more lie along its box's sides, within this fraction of its shorter side (a box
# photographed a few degrees askew), and each side is inked along this fraction of its length
# or more.
FRAME_MIN_ALONG_SIDES = 0.98
FRAME_SIDE_BAND = 0.08
FRAME_MIN_SIDE_INKED = 0.9


class FoundDigit(NamedTuple):
    """The digit cut out of a picture (its ink for a digit style, its shades for a product
    photo's) and where it lay there: rows top to bottom, columns left to right."""

    pixels: np.ndarray
    box: tuple[int, int, int, int]


def preprocess_digit(gray: np.ndarray, source: str, style: ImageStyle = MNIST_STYLE) -> np.ndarray:
    """Float gray [0, 1] of any size -> uint8 28x28, ink bright, as `style` says (MNIST's by default).
    (Thickening thin strokes costs more the larger the picture: `images` hands it at most 256 px.)

    Raises MnistkitError("source: blank image ...") when no ink stands out.
    """
    return fit_digit(find_digit(gray, source, style).pixels, style)


def find_digit(gray: np.ndarray, source: str, style: ImageStyle = MNIST_STYLE) -> FoundDigit:
    """The digit in float gray [0, 1], cut out; raises MnistkitError("source: blank image ...")
    when no ink stands out."""
    if style.saturate_ink:
        ink = _ink_map(gray, source)
        if style.drops_rules:
            ink = _without_rules(ink)
        if not ink.any():
            raise MnistkitError(f"{source}: blank image (only isolated specks, no stroke)")
        if _only_ruled_lines(ink > 0):
            raise MnistkitError(f"{source}: blank image (only ruled lines, no digit)")
        top, bottom = _extent(ink.sum(axis=1))
        left, right = _extent(ink.sum(axis=0))
        return FoundDigit(ink[top:bottom, left:right], (top, bottom, left, right))
    shades, mask = _object_map(gray, source)
    rows, columns = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(columns[0]), int(columns[-1]) + 1
    return FoundDigit(shades[top:bottom, left:right], (top, bottom, left, right))


def fit_digit(pixels: np.ndarray, style: ImageStyle = MNIST_STYLE) -> np.ndarray:
    """A digit cut out by `find_digit` -> uint8 28x28, its strokes as broad as the style's."""
    if style.saturate_ink and style.stroke_px is not None:
        pixels = _thickened(pixels, style.stroke_px / style.side_px)
    return to_uint8(_fit_and_centre(pixels, style))


def already_prepared(gray: np.ndarray, style: ImageStyle = MNIST_STYLE) -> np.ndarray | None:
    """A 28x28 image made as `style` makes its images (one of MNIST's own digits or
    Fashion-MNIST's clothes, saved as a PNG or passed as an array), light on black or
    inverted, as uint8 ink bright; None for any other picture. Prepared again, such an image
    is blurred and may move by a pixel: MNIST's test digits read 98.89% so with `make all`'s
    model, 99.37% as they are."""
    if gray.shape != IMAGE_SHAPE:
        return None
    levels = to_uint8(gray)
    for image in (levels, 255 - levels):
        if _in_form(image, style):
            return image
    return None


def _in_form(image: np.ndarray, style: ImageStyle) -> bool:
    """Bright ink on exact black, its longer side the style's (or a pixel less, as
    anti-aliasing leaves it), placed as the style places it to within a pixel."""
    rows, columns = np.flatnonzero(image.any(axis=1)), np.flatnonzero(image.any(axis=0))
    if not rows.size or image.max() < INK_HIGH_FRACTION * 255:
        return False
    border = np.concatenate([image[0], image[-1], image[1:-1, 0], image[1:-1, -1]])
    if np.mean(border == 0) < BLACK_BORDER_FRACTION:  # the frame-filling box of a backdrop
        return False
    side = max(rows[-1] - rows[0] + 1, columns[-1] - columns[0] + 1)
    if not style.side_px - 1 <= side <= style.side_px:
        return False
    if style.by_centre_of_mass:
        mass = image.astype(np.float64)
        places = np.arange(FRAME_PX)
        centre = (mass.sum(axis=1) @ places / mass.sum(), mass.sum(axis=0) @ places / mass.sum())
    else:
        centre = ((rows[0] + rows[-1] + 1) / 2, (columns[0] + columns[-1] + 1) / 2)
    return max(abs(centre[0] - CENTRE_PX), abs(centre[1] - CENTRE_PX)) <= 1


def _thickened(ink: np.ndarray, stroke_fraction: float) -> np.ndarray:
    """The cropped ink redrawn with a rounder, broader pen when its strokes are thinner than
    `stroke_fraction` of its longer side: a pencil line or a fine pen scaled into MNIST's
    20 px box is a faint hairline, and no digit a model learned from MNIST looks like that.

    A pen `radius` pixels broader widens the strokes by twice that and the box alike, so
    the radius that brings the strokes to the fraction solves
    width + 2 radius = stroke_fraction (longer side + 2 radius).
    """
    cores = ink > 0.5
    if not cores.any():
        return ink
    # Framed, so that a stroke along the crop's edge (an upright 1) has its outline counted.
    width_px = stroke_width_px(np.pad(cores, 1))
    radius = round((stroke_fraction * max(ink.shape) - width_px) / (2 * (1 - stroke_fraction)))
    return dilate_disc(ink, radius) if radius > 0 else ink


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


def _ink_map(gray: np.ndarray, source: str, look_for_paper: bool = True) -> np.ndarray:
    """Ink intensity in [0, 1] where the stroke is, exactly 0 on the background.

    What looks like a sheet on a desk but holds no ink was a bold light digit on a dark
    canvas: it is read again as one.
    """
    bright, on_paper, inverted = _ink_bright(gray, look_for_paper)
    try:
        return _ink_on(bright, on_paper, inverted, gray, source)
    except MnistkitError:
        if on_paper is None:
            raise
        return _ink_map(gray, source, look_for_paper=False)


def _ink_on(
    bright: np.ndarray, on_paper: np.ndarray | None, inverted: bool, gray: np.ndarray, source: str
) -> np.ndarray:
    """The ink of a picture turned so that the ink is bright (see `_ink_map`)."""
    square_px = BACKGROUND_SQUARE_FRACTION * max(gray.shape)
    ink, ink_mask = _ink_and_mask(bright, square_px, on_paper)
    # That square tells the strokes' width; the ink is found again under a square a few
    # strokes wide. Strokes so thick that the first square cannot pass under their
    # junctions (a marker, a tight crop) would lose their middles to the background, and a
    # shadow's corner narrower than the first square would be taken for ink.
    if ink_mask.any():
        stroke_square_px = STROKES_PER_SQUARE * stroke_width_px(ink_mask)
        found = _ink_and_mask(bright, stroke_square_px, on_paper, against_paper=inverted)
        if _hollowed(bright, ink_mask, found[1]):
            found = _ink_and_mask(bright, max(square_px, stroke_square_px), on_paper, against_paper=inverted)
        ink, ink_mask = found
    if not ink_mask.any():
        raise MnistkitError(f"{source}: blank image (no ink found)")
    stroke = ink[ink_mask]
    level = median(stroke)
    if level < MIN_INK_CONTRAST:
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
    light = median(border) > 0.5
    backdrop = _backdrop_surface(gray, light)
    if light:  # a light backdrop, whose light falls on the object too
        shades = np.clip(
            np.float32(1.0) - gray / np.maximum(backdrop, np.float32(MIN_INK_CONTRAST)), 0.0, 1.0
        )
    else:
        shades = np.clip(gray - backdrop, 0.0, 1.0)
    ranked = np.partition(shades.ravel(), (shades.size * 99 // 100, shades.size * 999 // 1000))
    if float(ranked[shades.size * 99 // 100]) < MIN_INK_CONTRAST:
        if float(ranked[shades.size * 999 // 1000]) >= MIN_INK_CONTRAST:  # a small object, far away
            raise MnistkitError(
                f"{source}: blank image (what stands out from the background is under 1% of it; "
                "crop the picture to the object)"
            )
        raise MnistkitError(f"{source}: blank image (nothing stands out from the background)")
    mask = _remove_isolated_pixels((shades > otsu_threshold(shades) / 2).astype(np.float32)) > 0
    if not mask.any():
        raise MnistkitError(f"{source}: blank image (only isolated specks, no object)")
    return shades, mask


def _backdrop_surface(gray: np.ndarray, light: bool) -> np.ndarray:
    """The backdrop's level under every pixel: a quadratic surface through the border's
    pixels. A phone's photo is lit unevenly (a light falling off across it, darker corners):
    taken as one level, the backdrop's darker part was kept as part of the object (Fashion
    test images on white with the light falling to 0.7 across them read 66% against 90%).
    An object lies on one side of its backdrop (darker than a `light` one), so the surface is
    fitted again without the border's pixels on that side of it, until none is left: an
    object that reaches the border would bend it otherwise, and lose its part there. With
    less than a quarter of the border left, the backdrop is one level, the border's median."""
    rows, columns = np.indices(gray.shape)
    edge = np.zeros(gray.shape, bool)
    edge[[0, -1], :] = edge[:, [0, -1]] = True
    y, x = rows / max(gray.shape[0] - 1, 1), columns / max(gray.shape[1] - 1, 1)
    terms = np.stack([np.ones_like(x), x, y, x * x, y * y, x * y], axis=-1)
    known, levels = terms[edge], gray[edge].astype(np.float64)
    toward_object = -1.0 if light else 1.0
    ring = np.concatenate([gray[0], gray[1:, -1], gray[-1, -2::-1], gray[-2:0:-1, 0]])  # in order
    noise = 1.05 * float(np.median(np.abs(np.diff(ring)))) if ring.size > 1 else 0.0  # any fit aside
    tolerance = max(3 * noise, BACKDROP_TOLERANCE)
    one_level = np.full(gray.shape, np.float32(median(gray[edge])), np.float32)
    # First without the pixels on the object's side of the border's median: a fit through
    # them all bent past the backdrop, and each fit without its far side bent further.
    kept = toward_object * (levels - float(np.median(levels))) <= tolerance
    for _ in range(BACKDROP_FITS):
        if kept.sum() < len(levels) // 4:
            return one_level
        weights = np.linalg.lstsq(known[kept], levels[kept], rcond=None)[0]
        still = toward_object * (levels - known @ weights) <= tolerance  # not on the object's side
        if np.array_equal(still, kept):
            return np.clip(terms @ weights, 0.0, 1.0).astype(np.float32)
        kept = still
    return one_level  # a surface that never settled


def _ink_bright(gray: np.ndarray, look_for_paper: bool) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """The picture turned so that the ink is bright; in a photo of a sheet on a desk, where
    the sheet lies (less its edge), else None; and whether the picture was inverted."""
    # Every other pixel each way tells the picture's levels as well, at a quarter of the cost.
    cumulative = cumulative_histogram(gray[::2, ::2])
    paper = _find_paper(gray, cumulative) if look_for_paper else None
    if paper is None:
        dark_ink = _ink_is_dark(gray, quantile(cumulative, 0.5))
        return (np.float32(1.0) - gray if dark_ink else gray), None, dark_ink
    # The desk takes the paper's colour, so that nothing beyond the sheet's edge is ink.
    paper_level = np.float32(quantile(cumulative_histogram(gray[paper]), 0.5))
    on_paper = erode(paper, 2 * PAPER_EDGE_PX + 1)
    return np.float32(1.0) - np.where(paper, gray, paper_level), on_paper, True


def _ink_and_mask(
    bright: np.ndarray, square_px: float, on_paper: np.ndarray | None, against_paper: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Ink above the background found under a square of `square_px`, ruled lines taken
    out, and where it stands out (Otsu's threshold, from every other pixel each way).

    With `against_paper` (dark ink), the ink is measured against the paper's brightness
    under it, where it is ink (see `_without_desk_grain`): light falls on ink and paper
    alike, so a stroke in shadow or dim light differs from its paper by less, in proportion,
    and would otherwise come out fainter than the same pen's stroke in the light.
    """
    background = _background_map(bright, square_px)
    ink = bright - background
    paper = None
    if against_paper:
        paper = np.maximum(np.float32(1.0) - background, np.float32(MIN_PAPER_BRIGHTNESS))
        ink = ink / paper
    ink = ink - _faint_ruled_lines(ink)
    if on_paper is not None:
        ink = np.where(on_paper, ink, np.float32(0.0))
    mask = ink > otsu_threshold(ink[::2, ::2])
    if paper is not None:
        ink, mask = _without_desk_grain(ink, mask, paper)
    return ink, mask


def _without_desk_grain(
    relative: np.ndarray, mask: np.ndarray, paper: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Ink measured against the paper's brightness, less what only that measure finds.

    A dark desk beside the sheet is no paper in shadow: its grain, divided by its darkness,
    stands out. Ink is what also stands out from the background as it is, or continues it
    (a stroke running into a shadow); beyond the strokes' edges nothing is divided.
    """
    absolute = relative * paper
    stands_out = absolute > otsu_threshold(absolute[::2, ::2])
    if (mask & ~stands_out).any():
        labels, count = label_components(mask)
        continued = np.zeros(count + 1, bool)
        continued[labels[mask & stands_out]] = True
        mask = continued[labels]
    edges = square_extreme(mask, 2 * STROKE_EDGE_PX + 1, np.maximum)
    return np.where(edges, relative, absolute), mask


def _hollowed(bright: np.ndarray, first_mask: np.ndarray, mask: np.ndarray) -> bool:
    """Whether the square a few strokes wide took ink for the page: what the first square
    found as ink, as bright as the strokes (a filled loop, a blot wider than the square),
    and the second left out."""
    if not mask.any():
        return True
    strokes = bright[mask]
    level = median(strokes)
    lost = first_mask & ~mask & (bright >= level)
    return np.count_nonzero(lost) > HOLLOWED_FRACTION * strokes.size


def _ink_is_dark(gray: np.ndarray, typical_level: float) -> bool:
    """Whether the ink is darker than the page.

    A light picture has dark ink. In a dark one the ink may still be dark: a dim photo, or
    a page mostly in shadow. Of the marks darker and lighter than the picture's typical
    level, the ink is then the thinner (a lit part of the page is wide, strokes are thin).
    A pencil on the shadowed part, or in a lit patch, is no darker than that typical level:
    where the light marks line the border (a lit part of the page), dark marks are those
    darker than the page around them.
    """
    if typical_level > 0.5:
        return True
    dark = gray < np.float32(typical_level - MIN_INK_CONTRAST)
    light = gray > np.float32(typical_level + MIN_INK_CONTRAST)
    least = POLARITY_MIN_MARKS * gray.size
    dark_count, light_count = np.count_nonzero(dark), np.count_nonzero(light)
    lit_border = ring(light)
    if dark_count < least and np.count_nonzero(lit_border) > LIT_BORDER_FRACTION * lit_border.size:
        dark = _darker_than_the_page_around(gray)
        dark_count = np.count_nonzero(dark)
    if dark_count < least or light_count < least:
        return dark_count > light_count
    return stroke_width_px(dark) < stroke_width_px(light)


def _darker_than_the_page_around(gray: np.ndarray) -> np.ndarray:
    """Marks darker than the page's level around them (under a square a quarter of the
    picture wide) by MIN_INK_CONTRAST of that level's brightness, as dark ink is measured."""
    square_px = BACKGROUND_SQUARE_FRACTION * max(gray.shape)
    page = np.float32(1.0) - _background_map(np.float32(1.0) - gray, square_px)
    return page - gray > np.float32(MIN_INK_CONTRAST) * np.maximum(page, np.float32(MIN_PAPER_BRIGHTNESS))


def _find_paper(gray: np.ndarray, cumulative: np.ndarray) -> np.ndarray | None:
    """Where the sheet lies in a photo of a sheet of paper on a darker desk, or None when
    the picture is not one: a large sheet, else a small one."""
    paper = _sheet_of(gray, cumulative, LARGE_SHEET)
    return paper if paper is not None else _sheet_of(gray, cumulative, SMALL_SHEET)


def _sheet_of(gray: np.ndarray, cumulative: np.ndarray, rule: SheetRule) -> np.ndarray | None:
    """Where a sheet as `rule` says lies, or None.

    The desk is much darker than the paper and surrounds it (it takes most of the
    picture's outermost pixels). The sheet is the largest light region, filled along its
    rows and columns (the ink on it becomes part of it); it is large, light over most of
    that area and fills most of a rectangle around it: blank paper with straight sides,
    which a bright digit on a dark canvas, its holes filled in, is not.
    """
    outer = ring(gray)
    desk_level = median(outer)
    paper_level = quantile(cumulative, 1.0 - rule.min_area / 2)
    if desk_level > DESK_MAX_BRIGHTNESS * paper_level or paper_level - desk_level < MIN_INK_CONTRAST:
        return None
    light = gray > np.float32(desk_level + DESK_TO_PAPER_THRESHOLD * (paper_level - desk_level))
    labels, count = label_components(light)
    if count == 0:
        return None
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    sheet = labels == int(np.argmax(sizes))
    paper = fill_spans(sheet) & fill_spans(sheet.T).T
    area = np.count_nonzero(paper)
    if (
        np.count_nonzero(ring(paper)) > (1 - DESK_MIN_BORDER) * outer.size
        or area < rule.min_area * paper.size
        or np.count_nonzero(sheet) < PAPER_MIN_BLANK * area
        or rectangularity(paper) < rule.min_rectangularity
    ):
        return None
    return paper


def _background_map(bright: np.ndarray, square_px: float) -> np.ndarray:
    """The page's level under the ink (ink bright): a grey-level opening, the highest level
    at each pixel that a square wider than the pen strokes fits under.

    It follows the edges of shadows and of a desk exactly, where averaging blocks would
    smear them into bands of false ink, and it passes under every stroke narrower than the
    square. Computed on 8-bit levels, which are as good for this and cheaper to move.
    """
    size = max(3, round(square_px)) | 1
    levels = to_uint8(bright)
    opened = square_extreme(square_extreme(levels, size, np.minimum), size, np.maximum)
    return opened * np.float32(1 / 255)


def _faint_ruled_lines(ink: np.ndarray) -> np.ndarray:
    """Ruled lines: faint lines across a third of the picture or more, level or at the
    slant of a page turned up to about 11 degrees, and the upright lines of squared paper."""
    level, level_count = _faint_lines_along_rows(ink)
    if level_count < GRID_MIN_LINES or min(ink.shape) < GRID_MIN_SIDE_PX:
        return level
    upright, upright_count = _faint_lines_along_rows(ink.T)
    return np.maximum(level, upright.T) if upright_count >= GRID_MIN_LINES else level


def _faint_lines_along_rows(ink: np.ndarray) -> tuple[np.ndarray, int]:
    """Faint lines that run along the rows, at the slant that lines them up best, and how
    many there are.

    Each column is moved down so that the lines lie level (a page turned 5 degrees
    slants its lines by 17 rows across a picture 192 px wide, where merging three rows alone
    kept them apart, and the lines stayed in as ink). Then a horizontal opening of the ink
    keeps what is at least that long (neighbouring rows merged); what it keeps is a ruled
    line, not a digit's stroke, where it is fainter than half the darkest ink. Lines stay
    lines when the picture is narrowed four times, so the slant and the opening are found on
    that; the opening runs only where some row, lined up, holds enough faint ink for a line
    (most pictures have none).
    """
    width = ink.shape[1]
    narrowed = narrow(ink, LINE_NARROWING)
    length = max(3, round(narrowed.shape[1] * RULED_LINE_FRACTION)) | 1
    darkest = ink.max()

    def faint(values: np.ndarray) -> np.ndarray:
        return (values > RULED_LINE_MIN_INK * darkest) & (values < RULED_LINE_MAX_INK * darkest)

    faint_before = faint(narrowed)
    if np.count_nonzero(faint_before) < length:
        return np.zeros_like(ink), 0
    shifts = _slant_shifts(faint_before)
    thickened = sliding_extreme(_shifted_columns(narrowed, shifts), 3, np.maximum, 0)
    if np.count_nonzero(faint(thickened), axis=1).max() < length:
        return np.zeros_like(ink), 0
    lines = sliding_extreme(sliding_extreme(thickened, length, np.minimum, 1), length, np.maximum, 1)
    lines = np.where(lines < RULED_LINE_MAX_INK * darkest, np.maximum(lines, 0.0), np.float32(0.0))
    on_a_line = (lines > RULED_LINE_MIN_INK * darkest).any(axis=1)
    count = int(on_a_line[0]) + int(np.count_nonzero(on_a_line[1:] & ~on_a_line[:-1]))
    lines = np.repeat(_unshifted_columns(lines, shifts, ink.shape[0]), LINE_NARROWING, axis=1)[:, :width]
    return lines, count


def _slant_shifts(faint: np.ndarray) -> np.ndarray:
    """How many rows down to move each column of `faint` (all by zero or more) so that lines
    running along the rows lie level: the slant, up to RULED_LINE_MAX_SLOPE per pixel of the
    picture's own width, under which the faint pixels pile up on the fewest rows (the sum of
    squares of their counts per row, a projection profile); the smallest slant of the best.
    Every slant is tried on a sample of the pixels, and the few beside the best on all."""
    rows, columns = np.nonzero(faint)
    steepest = int(RULED_LINE_MAX_SLOPE * LINE_NARROWING * faint.shape[1])  # rows risen across
    sample = np.random.default_rng(0).permutation(len(rows))[:SLANT_SAMPLE_PIXELS]  # spread over all
    rises = np.arange(-steepest, steepest + 1)
    rise, _ = _best_slant(rows[sample], columns[sample], rises, faint.shape)
    nearby = np.arange(max(rise - 2, -steepest), min(rise + 2, steepest) + 1)
    return _best_slant(rows, columns, nearby, faint.shape)[1]


def _best_slant(
    rows: np.ndarray, columns: np.ndarray, rises: np.ndarray, shape: tuple[int, int]
) -> tuple[int, np.ndarray]:
    """Of `rises` (rows risen across the picture), the one whose column shifts pile the pixels
    at (`rows`, `columns`) up on the fewest rows, the smallest of equals; and those shifts.
    All in one pass: a loop over the rises cost more than the rest of finding the digit."""
    height, width = shape
    shifts = np.round(np.arange(width)[None, :] * (rises[:, None] / max(width - 1, 1))).astype(np.int64)
    shifts -= shifts.min(axis=1, keepdims=True)
    span = height + int(shifts.max())
    bins = np.arange(len(rises))[:, None] * span + rows[None, :] + shifts[:, columns]
    counts = np.bincount(bins.ravel(), minlength=len(rises) * span).reshape(len(rises), span)
    scores = np.einsum("ij,ij->i", counts, counts)
    best = np.flatnonzero(scores == scores.max())
    chosen = best[np.argmin(np.abs(rises[best]))]
    return int(rises[chosen]), shifts[chosen]


def _shifted_columns(values: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Each column moved down by its shift, in a taller array that keeps every pixel."""
    moved = np.zeros((values.shape[0] + int(shifts.max()), values.shape[1]), values.dtype)
    rows = np.arange(values.shape[0])[:, None] + shifts[None, :]
    moved[rows, np.arange(values.shape[1])[None, :]] = values
    return moved


def _unshifted_columns(moved: np.ndarray, shifts: np.ndarray, height: int) -> np.ndarray:
    """`_shifted_columns` undone: the `height` rows of each column where they came from."""
    rows = np.arange(height)[:, None] + shifts[None, :]
    return moved[rows, np.arange(moved.shape[1])[None, :]]


def _only_ruled_lines(mask: np.ndarray) -> bool:
    """Whether the ink is an empty page's lines: thin, nearly level lines across a third of
    the picture or more, which no faint-line test takes out when nothing is darker, and
    specks (JPEG noise, a line's broken ends). A digit written on the lines joins them, or
    is a piece of its own; a digit of dots alone (a dot-matrix print) has no line."""
    height, width = mask.shape
    # Ink taller, in some column, than a speck spans or a ruled line is thick is a stroke:
    # most digits are told so here, with no labelling.
    tall_px = round(max(SPECK_MAX_SPAN, RULED_LINE_MAX_THICKNESS) * max(height, width)) + 1
    if height > tall_px:
        inked = np.cumsum(mask, axis=0, dtype=np.int32)
        if np.any(inked[tall_px:] - inked[:-tall_px] == tall_px):
            return False
    labels, count = label_components(mask)
    rows, columns = np.nonzero(mask)
    pieces = labels[rows, columns]
    extent = {}
    for name, values, reduce in (
        ("top", rows, np.minimum),
        ("bottom", rows, np.maximum),
        ("left", columns, np.minimum),
        ("right", columns, np.maximum),
    ):
        extent[name] = np.full(count + 1, height + width if reduce is np.minimum else -1)
        reduce.at(extent[name], pieces, values)
    length = (extent["right"] - extent["left"] + 1)[1:]
    rise = (extent["bottom"] - extent["top"] + 1)[1:]
    thickness = np.bincount(pieces, minlength=count + 1)[1:] / length
    speck = np.maximum(length, rise) < SPECK_MAX_SPAN * max(height, width)
    line = (
        (length >= RULED_LINE_FRACTION * width)
        & (rise <= RULED_LINE_MAX_SLOPE * length + 1)
        & (thickness <= RULED_LINE_MAX_THICKNESS * max(height, width))
    )
    return bool(line.any() and np.all(speck | line))


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
    if on_paper is None and not ring(mask).any():
        return ink
    edge = np.zeros(mask.shape, bool)
    edge[0], edge[-1], edge[:, 0], edge[:, -1] = True, True, True, True
    if on_paper is not None:
        edge |= ~erode(on_paper, 3)
    touching = mask & edge
    if not touching.any():
        return ink
    labels, count = label_components(mask)
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


def _without_rules(ink: np.ndarray) -> np.ndarray:
    """Drop underlines and boxes drawn apart from the digit (a form's field, a line to write
    on): a straight line wholly on one side of the digit that reaches past it at both ends,
    or a rectangle around it. A digit seldom has either, and would otherwise be shrunk into
    them and read as another (mostly as 0, in a box). One that touches the digit is part of
    its ink and stays. Pieces are told apart by all their ink, then by their strokes' cores
    alone (soft edges join a box a few pixels from the digit to it)."""
    for cores in (False, True):
        pieces = ink >= RULE_CORE_INK if cores else ink > 0
        if not _apart_or_framed(pieces):  # most pictures: no need to tell the pieces apart
            continue
        labels, count = label_components(pieces)
        dropped = _rules_and_frames(labels, count, ink)
        if dropped.any():
            gone = dropped[labels]  # and the soft edges along them
            edges = square_extreme(gone, 2 * STROKE_EDGE_PX + 1, np.maximum) & ~(pieces & ~gone)
            ink = np.where(edges, np.float32(0.0), ink)
    return ink


def _rules_and_frames(labels: np.ndarray, count: int, ink: np.ndarray) -> np.ndarray:
    """Which of `labels`' pieces are rules or frames, by label. The digit is the ink that is
    no straight line (the upright sides left of a thin box whose level sides were taken for
    ruled lines stand on both sides of it), or, where all of it is, the other lines but those
    alongside the one in question and nearly as long (a 1 between two ruled lines). Specks
    say nothing of where the digit is."""
    dropped = np.zeros(count + 1, bool)
    if count < 2:
        return dropped
    boxes = component_boxes(labels, count)
    mass = np.bincount(labels.ravel(), ink.ravel(), count + 1)
    mass[0] = 0.0  # the soft edges around cores
    kept = mass >= SPECK_FRACTION * mass.sum()
    kept[0] = False
    heights, widths = boxes[:, 1] - boxes[:, 0], boxes[:, 3] - boxes[:, 2]
    lengths, level = np.maximum(heights, widths), widths >= heights
    straight = np.minimum(heights, widths) <= RULE_MAX_THICKNESS * lengths
    while np.count_nonzero(kept) > 1:  # a box around an underlined digit: the box, then the line
        for label in np.flatnonzero(kept):
            others = kept.copy()
            others[label] = False
            if (others & ~straight).any():
                digit = others & ~straight
            else:
                alongside = straight & (level == level[label]) & (lengths >= RULE_ALONGSIDE * lengths[label])
                digit = others & ~alongside
            if not digit.any():
                continue
            rest = np.array(
                [boxes[digit, 0].min(), boxes[digit, 1].max(), boxes[digit, 2].min(), boxes[digit, 3].max()]
            )
            if _is_rule(boxes[label], rest) or _is_frame(labels, label, boxes[label], rest):
                kept[label], dropped[label] = False, True
                break
        else:
            break
    return dropped


def _is_rule(box: np.ndarray, rest: np.ndarray) -> bool:
    """Whether a piece of ink boxed by `box` is a level or upright line beside the digit
    (boxed by `rest`), past it at both ends and, unless it is under it, not close to it (a
    4's upright stroke written apart from the rest stops short of it); boxes are top, bottom,
    left, right."""
    size = max(rest[1] - rest[0], rest[3] - rest[2])
    for along, across in (((2, 3), (0, 1)), ((0, 1), (2, 3))):  # a level line, an upright one
        length = box[along[1]] - box[along[0]]
        thickness = box[across[1]] - box[across[0]]
        digit_across = rest[across[1]] - rest[across[0]]
        if box[across[0]] >= rest[across[1]]:  # under or right of the digit
            gap = box[across[0]] - rest[across[1]]
            underline = across == (0, 1)
        elif box[across[1]] <= rest[across[0]]:  # over or left of it
            gap, underline = rest[across[0]] - box[across[1]], False
        else:
            continue
        if (
            thickness <= RULE_MAX_THICKNESS * length
            and box[along[0]] <= rest[along[0]] - RULE_MIN_OVERHANG * size
            and box[along[1]] >= rest[along[1]] + RULE_MIN_OVERHANG * size
            and digit_across >= RULE_DIGIT_THICKNESSES * thickness
            and (underline or gap >= RULE_MIN_GAP * digit_across)
        ):
            return True
    return False


def _is_frame(labels: np.ndarray, label: int, box: np.ndarray, rest: np.ndarray) -> bool:
    """Whether the piece `label`, boxed by `box`, is a rectangle drawn around the digit,
    boxed by `rest`."""
    top, bottom, left, right = box.tolist()
    if not (top < rest[0] and rest[1] < bottom and left < rest[2] and rest[3] < right):
        return False
    frame = labels[top:bottom, left:right] == label
    band = _side_band(frame)
    inner = frame[band:-band, band:-band]
    if inner.size == 0 or np.count_nonzero(inner) > (1 - FRAME_MIN_ALONG_SIDES) * np.count_nonzero(frame):
        return False
    return _sides_inked(frame, band)


def _apart_or_framed(mask: np.ndarray) -> bool:
    """Whether some ink may be a rule or a frame: a row or column with no more than a speck
    of ink lies between pieces of it, or the sides of its box are inked as a frame's are."""
    rows = np.flatnonzero(np.count_nonzero(mask, axis=1) > RULE_SPECK_PX)
    columns = np.flatnonzero(np.count_nonzero(mask, axis=0) > RULE_SPECK_PX)
    if rows.size == 0 or columns.size == 0:
        return False
    if rows[-1] - rows[0] + 1 > rows.size or columns[-1] - columns[0] + 1 > columns.size:
        return True
    inked = mask[rows[0] : rows[-1] + 1, columns[0] : columns[-1] + 1]
    return _sides_inked(inked, _side_band(inked))


def _side_band(frame: np.ndarray) -> int:
    """How far in from its box's sides a frame's lines may lie: FRAME_SIDE_BAND of its shorter side."""
    return max(1, round(FRAME_SIDE_BAND * min(frame.shape)))


def _sides_inked(frame: np.ndarray, band: int) -> bool:
    """Whether ink runs along each side of `frame`'s box, within `band` of it, over at least
    FRAME_MIN_SIDE_INKED of the side's length."""
    sides = (frame[:band].any(axis=0), frame[-band:].any(axis=0))
    sides += (frame[:, :band].any(axis=1), frame[:, -band:].any(axis=1))
    return all(side.mean() >= FRAME_MIN_SIDE_INKED for side in sides)


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
