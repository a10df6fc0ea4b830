"""Image loading and MNIST-style preprocessing on digits the tests draw and save themselves."""

from __future__ import annotations

import dataclasses
import functools
import io
import os
import re
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import people_style
import pytest
from conftest import REAL_MNIST_DIR, draw_large_digit, requires_real_mnist
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw, ImageFilter, ImageOps

from mnistkit import preprocess
from mnistkit.checkpoint import load_checkpoint
from mnistkit.datasets import IMAGE_STYLES
from mnistkit.errors import MnistkitError
from mnistkit.idx import read_idx
from mnistkit.images import MAX_IMAGE_PIXELS, load_digit, read_grayscale
from mnistkit.morphology import (
    component_boxes,
    dilate_disc,
    label_components,
    rectangularity,
    stroke_width_px,
)
from mnistkit.preprocess import preprocess_digit


def centre_of_mass(image: np.ndarray) -> tuple[float, float]:
    weights = image.astype(np.float64)
    total = weights.sum()
    rows, columns = np.indices(image.shape)
    return float((rows * weights).sum() / total), float((columns * weights).sum() / total)


def ink_box(image: np.ndarray) -> tuple[int, int]:
    rows = np.flatnonzero(image.any(axis=1))
    columns = np.flatnonzero(image.any(axis=0))
    return int(rows[-1] - rows[0] + 1), int(columns[-1] - columns[0] + 1)


def assert_mnist_shaped(image: np.ndarray) -> None:
    assert image.shape == (28, 28) and image.dtype == np.uint8
    centre_y, centre_x = centre_of_mass(image)
    assert abs(centre_y - 14) <= 1 and abs(centre_x - 14) <= 1, (centre_y, centre_x)
    assert max(ink_box(image)) in (19, 20, 21), ink_box(image)
    assert image.max() == 255


def save(array: np.ndarray, path: Path, mode: str | None = None, **options) -> Path:
    image = Image.fromarray(array)
    if mode is not None:
        image = image.convert(mode)
    image.save(path, **options)
    return path


def shaded_paper(ink: np.ndarray) -> np.ndarray:
    """Dark ink on paper lit unevenly: bright on the left, grey on the right, with noise."""
    height, width = ink.shape
    paper = 250 - 90 * np.linspace(0, 1, width)[None, :] - 30 * np.linspace(0, 1, height)[:, None]
    noise = np.random.default_rng(0).normal(0, 4, ink.shape)
    page = paper + noise - (ink / 255.0) * (paper - 25)
    return np.clip(page, 0, 255).astype(np.uint8)


def transparent_canvas(ink: np.ndarray) -> np.ndarray:
    """Navy strokes on a transparent canvas whose hidden colour is random garbage."""
    garbage = np.random.default_rng(1).integers(0, 256, (*ink.shape, 3), dtype=np.uint8)
    rgba = np.dstack([garbage, np.zeros_like(ink)])
    rgba[ink > 0, :3] = (20, 30, 110)
    rgba[..., 3] = ink
    return rgba


def exif_rotated(ink: np.ndarray, path: Path) -> Path:
    """Pixels stored rotated by 90 degrees with EXIF orientation 6, as phones save them."""
    image = Image.fromarray(255 - ink).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    image.save(path, exif=exif, quality=95)
    return path


VARIANTS: dict[str, Callable[[int, Path], Path]] = {
    "clean": lambda d, p: save(draw_large_digit(d), p / "clean.png"),
    "moved": lambda d, p: save(draw_large_digit(d, canvas_px=(320, 200), offset_px=(100, -40)), p / "m.png"),
    "small": lambda d, p: save(
        draw_large_digit(d, glyph_px=24, stroke_px=1, canvas_px=(90, 70)), p / "s.png"
    ),
    "large": lambda d, p: save(
        draw_large_digit(d, glyph_px=260, stroke_px=10, canvas_px=(300, 300)), p / "l.png"
    ),
    "inverted-jpeg": lambda d, p: save(255 - draw_large_digit(d), p / "i.jpg", quality=85),
    "transparent": lambda d, p: save(transparent_canvas(draw_large_digit(d)), p / "t.png"),
    "shaded": lambda d, p: save(shaded_paper(draw_large_digit(d, canvas_px=(240, 180))), p / "sh.png"),
    "exif-rotated": lambda d, p: exif_rotated(draw_large_digit(d), p / "r.jpg"),
    "palette": lambda d, p: save(255 - draw_large_digit(d), p / "p.gif", mode="P"),
    "16-bit": lambda d, p: save((255 - draw_large_digit(d)).astype(np.uint16) * 257, p / "w.png"),
    # A scanner's 12 bits and a light digit on black in 10, in 16-bit files: read as blank before.
    "12-bit-in-16": lambda d, p: save((255 - draw_large_digit(d)).astype(np.uint16) * 16, p / "w12.png"),
    "10-bit-light-on-dark": lambda d, p: save(draw_large_digit(d).astype(np.uint16) * 4, p / "w10.png"),
    "gray-alpha": lambda d, p: save(
        np.dstack([np.zeros((160, 160), np.uint8), draw_large_digit(d)]), p / "a.png"
    ),
    "cmyk": lambda d, p: save(255 - draw_large_digit(d), p / "c.tif", mode="CMYK"),
}


@pytest.fixture(scope="module")
def model(large_digit_model: Path):
    return load_checkpoint(large_digit_model)


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_variant_comes_out_mnist_shaped_and_predicted_like_the_clean_digit(
    variant: str, model, tmp_path: Path
) -> None:
    clean, varied = [], []
    for digit in range(10):
        clean.append(load_digit(VARIANTS["clean"](digit, tmp_path)))
        varied.append(load_digit(VARIANTS[variant](digit, tmp_path)))
        assert_mnist_shaped(varied[-1])
    clean_digits = model.predict_probabilities(np.stack(clean)).argmax(axis=1)
    varied_digits = model.predict_probabilities(np.stack(varied)).argmax(axis=1)
    assert list(clean_digits) == list(range(10))
    assert list(varied_digits) == list(clean_digits)


def _on_a_page(digit: int) -> Image.Image:
    """A dark digit filling about the middle half of a white 400 px page."""
    return Image.fromarray(255 - draw_large_digit(digit, glyph_px=170, canvas_px=(400, 400), stroke_px=8))


FORM_MARKS: dict[str, Callable[[ImageDraw.ImageDraw], object]] = {
    "a box 30 px in": lambda draw: draw.rectangle([30, 30, 369, 369], outline=0, width=6),
    "a box 5 px in": lambda draw: draw.rectangle([5, 5, 394, 394], outline=0, width=6),
    # At 256 px its level sides are faint enough to be taken out as ruled lines: two upright
    # lines are left, one on either side of the digit.
    "a thin box": lambda draw: draw.rectangle([5, 5, 394, 394], outline=0, width=2),
    "an underline": lambda draw: draw.line([(60, 340), (340, 340)], fill=0, width=4),
    "a slanted underline": lambda draw: draw.line([(60, 350), (340, 330)], fill=0, width=4),
    "a box around an underlined digit": lambda draw: (
        draw.rectangle([20, 20, 379, 379], outline=0, width=3),
        draw.line([(60, 345), (340, 345)], fill=0, width=4),
    ),
}


@pytest.mark.parametrize("mark", FORM_MARKS)
def test_a_box_or_an_underline_apart_from_the_digit_is_dropped(mark: str, model, tmp_path: Path) -> None:
    """Drawn inside the picture rather than along its edge, a form's box or an underline was
    taken for part of the digit, which shrank into it: 15 of 20 boxed MNIST digits were read
    as another digit (mostly 0), and 5 of 5 underlined ones."""
    marked = []
    for digit in range(10):
        page = _on_a_page(digit)
        plain = load_digit(save(np.asarray(page), tmp_path / "plain.png"))
        FORM_MARKS[mark](ImageDraw.Draw(page))
        marked.append(load_digit(save(np.asarray(page), tmp_path / "marked.png")))
        assert np.abs(marked[-1].astype(int) - plain).mean() < 2, digit
    assert list(model.predict_probabilities(np.stack(marked)).argmax(axis=1)) == list(range(10))


def _strokes(
    *boxes: tuple[int, int, int, int], diagonal: tuple[int, int, int, int] | None = None
) -> np.ndarray:
    """Ink of upright rectangles (top, bottom, left, right) and a diagonal stroke 5 px wide
    from (row, column) to (row, column), on a 200 px square."""
    ink = np.zeros((200, 200), np.float32)
    for top, bottom, left, right in boxes:
        ink[top:bottom, left:right] = 1.0
    if diagonal is not None:
        (row0, column0, row1, column1) = diagonal
        for row in range(min(row0, row1), max(row0, row1)):
            column = round(column0 + (column1 - column0) * (row - row0) / (row1 - row0))
            ink[row, column - 2 : column + 3] = 1.0
    return ink


@pytest.mark.parametrize(
    "ink",
    [
        pytest.param(
            _strokes((20, 25, 25, 76), diagonal=(32, 72, 100, 38)), id="a 7's bar over a slanted stem"
        ),
        pytest.param(_strokes((20, 25, 25, 76), (32, 100, 68, 73)), id="a 7's bar just past an upright stem"),
        pytest.param(
            _strokes((70, 74, 20, 70), (5, 110, 76, 81), diagonal=(20, 50, 70, 20)),
            id="a 4's upright stroke written apart, past the rest at both ends",
        ),
    ],
)
def test_a_piece_of_a_digit_written_apart_from_the_rest_stays(ink: np.ndarray) -> None:
    """A 7's bar passes its upright stem by a pixel or two, and a 4's upright stroke the rest
    of the 4 at both ends: only a line well past the digit at both ends (a fifth of its size)
    and, unless it is under the digit, not close to it is a rule."""
    np.testing.assert_array_equal(preprocess._without_rules(ink), ink)


def test_lines_on_both_sides_of_a_1_are_dropped() -> None:
    """A 1 in a thin box whose level sides were taken out as ruled lines: every piece is a
    straight line, and each side line is told from the digit by the 1, not by the other."""
    one = _strokes((50, 150, 96, 104))
    ink = one + _strokes((5, 195, 5, 7), (5, 195, 193, 195))
    np.testing.assert_array_equal(preprocess._without_rules(ink), one)


def test_an_overline_far_past_the_digit_is_dropped() -> None:
    bar, stem = _strokes((20, 25, 5, 120)), _strokes(diagonal=(45, 72, 120, 38))
    np.testing.assert_array_equal(preprocess._without_rules(bar + stem), stem)


def test_a_letters_bar_apart_from_its_stem_stays_in_emnists_style() -> None:
    """A T's bar written apart from its stem passes the stem at both ends as an overline
    would: letters keep every piece (only digit styles drop rules)."""
    page = np.ones((200, 200), np.float32)
    page[40:48, 40:160] = 0.0  # the bar
    page[80:170, 96:104] = 0.0  # the stem, well apart from it
    emnist = preprocess.find_digit(page, "T", IMAGE_STYLES["emnist"])
    assert emnist.box[0] <= 40 and emnist.pixels[:5].any()
    assert preprocess.find_digit(page, "T", IMAGE_STYLES["mnist"]).box[0] >= 80  # an overline there


@pytest.mark.slow
@requires_real_mnist
def test_no_mnist_digit_loses_a_piece_of_its_own_for_a_rule() -> None:
    """MNIST's test digits have no boxes or rules, so any ink taken for one is a mistake: 92
    of them are in two or more pieces (a 5's bar, a broken stroke), and all keep all of them."""
    images = read_idx(REAL_MNIST_DIR / "t10k-images-idx3-ubyte.gz")
    pieces = 0
    for image in images:
        page = np.ones((200, 200), np.float32)
        page[30:170, 30:170] = np.asarray(
            Image.fromarray(255 - image).resize((140, 140), Image.Resampling.BICUBIC), np.float32
        ) * np.float32(1 / 255)
        ink = preprocess._ink_map(page, "digit")
        labels, count = label_components(ink > 0)
        mass = np.bincount(labels.ravel(), ink.ravel(), count + 1)[1:]
        pieces += np.count_nonzero(mass >= preprocess.SPECK_FRACTION * mass.sum()) > 1
        np.testing.assert_array_equal(preprocess._without_rules(ink), ink)
    assert pieces > 50  # the check above met digits in pieces


# Orientation tag -> how the pixels are stored, for a picture that is upright once turned by it.
STORED_FOR_ORIENTATION = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


@pytest.mark.parametrize("suffix", [".tif", ".png", ".jpg", ".webp"])
def test_every_orientation_tag_is_turned_upright(suffix: str, tmp_path: Path) -> None:
    """A scanner's uncompressed grey TIFF with orientation 5 to 8 came out scrambled (Pillow
    memory-mapped its pixels at the turned size) and was read as another digit, from a file
    and from a notebook's picture alike."""
    upright = Image.fromarray(255 - draw_large_digit(7, canvas_px=(180, 120), offset_px=(30, -10)))
    expected = load_digit(save(np.asarray(upright), tmp_path / "upright.png"))
    for orientation, stored in STORED_FOR_ORIENTATION.items():
        pixels = upright if stored is None else upright.transpose(stored)
        path = tmp_path / f"turned-{orientation}{suffix}"
        if suffix == ".tif":
            pixels.save(path, tiffinfo={0x0112: orientation})
        else:
            exif = Image.Exif()
            exif[0x0112] = orientation
            pixels.save(path, exif=exif, **({"quality": 95} if suffix == ".jpg" else {}))
        with Image.open(path) as picture:  # a notebook's picture, opened lazily
            read = {"file": load_digit(path), "picture": load_digit(path, picture=picture)}
            assert picture.filename == str(path)
        for how, image in read.items():
            difference = np.abs(image.astype(int) - expected).mean()
            assert difference < (3 if suffix in (".jpg", ".webp") else 0.5), (orientation, how, difference)


def test_preprocessing_is_close_to_the_clean_image_pixel_for_pixel(tmp_path: Path) -> None:
    clean = load_digit(VARIANTS["clean"](4, tmp_path)).astype(float)
    for variant in ("moved", "transparent", "shaded", "exif-rotated"):
        varied = load_digit(VARIANTS[variant](4, tmp_path)).astype(float)
        assert np.abs(varied - clean).mean() < 20, variant


PAGE_PX = (240, 200)
DESK_PX = (320, 260)


def photo(
    digit: int,
    desk: str | None = None,
    area: float = 0.7,
    angle_deg: float = 0.0,
    centre: tuple[float, float] = (0.5, 0.5),
    rules: str | None = None,
    squared: bool = False,
    shadow: tuple[float, float, float] | None = None,
    shading: float = 0.0,
    pen: str = "black",
    stroke_px: int = 4,
    glyph_px: int = 110,
) -> np.ndarray:
    """A phone photo (RGB) of `digit` drawn with `pen` (strokes `stroke_px` wider than the
    font's) on white paper, drawn with scripts/people_style.py: the sheet lying on a `desk`
    and covering `area` of the frame, ruled lines (`squared`: upright ones too), a hard
    `shadow` (darkening, angle, offset) across the picture, light falling off by `shading`."""
    rng = np.random.default_rng(digit)
    page = people_style.sheet(PAGE_PX, people_style.PAPERS["white"], rng)
    if rules is not None:
        people_style.rule_lines(page, 22, people_style.RULE_COLOURS[rules], 2, 9)
        if squared:
            people_style.rule_lines(page.transpose(1, 0, 2), 22, people_style.RULE_COLOURS[rules], 2, 9)
    coverage = draw_large_digit(digit, glyph_px, PAGE_PX, stroke_px=stroke_px) / 255
    people_style.put_ink(page, coverage, people_style.PENS[pen], (0, 0))
    if desk is not None:
        surface = people_style.desk_surface(DESK_PX, people_style.DESKS[desk], rng)
        page = people_style.on_desk(page, surface, area, angle_deg, centre)
    if shadow is not None:
        page = people_style.cast_shadow(page, *shadow, softness_px=1.5)
    if shading:
        page = people_style.shade(page, shading, 30)
    return people_style.to_uint8(page)


PHOTOS: dict[str, dict] = {
    "walnut desk, paper 50% of the frame": {"desk": "walnut", "area": 0.5},
    "black desk, paper 90%, rotated 4 degrees": {"desk": "black", "area": 0.9, "angle_deg": 4},
    "slate desk, paper 70% off-centre, rotated -6": {
        "desk": "slate",
        "area": 0.7,
        "angle_deg": -6,
        "centre": (0.46, 0.54),
    },
    "grained oak desk, light falling off": {"desk": "oak", "area": 0.6, "angle_deg": 2, "shading": 0.3},
    "walnut desk on two sides, the paper running out of the frame": {
        "desk": "walnut",
        "area": 0.9,
        "centre": (0.6, 0.6),
    },
    "slate desk on one side, blue pen": {
        "desk": "slate",
        "area": 0.85,
        "centre": (0.6, 0.45),
        "angle_deg": 3,
        "pen": "blue",
        "stroke_px": 1,
    },
    # Sheets under 30% of the frame, the size of a sticky note on a desk, were taken for a
    # light digit: the sheet itself, read as a 0.
    "walnut desk, a small sheet 12% of the frame": {"desk": "walnut", "area": 0.12, "centre": (0.4, 0.45)},
    "black desk, a small sheet 6% of the frame, rotated 5 degrees": {
        "desk": "black",
        "area": 0.06,
        "angle_deg": 5,
        "centre": (0.6, 0.4),
    },
    "hard shadow across the digit": {"shadow": (0.45, 25, 0.02)},
    "hard shadow on a desk": {"desk": "walnut", "area": 0.75, "shadow": (0.4, 110, -0.05)},
    "most of the page in shadow": {"shadow": (0.5, 20, -0.15)},
    "thin pencil, a hard shadow, light falling off": {
        "shadow": (0.55, 20, -0.2),
        "shading": 0.3,
        "pen": "pencil",
        "stroke_px": 0,
        "glyph_px": 80,
    },
    "blue ruled paper, thin pencil": {"rules": "blue", "pen": "pencil", "stroke_px": 0, "glyph_px": 60},
    "grey ruled paper on a desk, turned 3 degrees, pencil": {
        "rules": "grey",
        "pen": "pencil",
        "stroke_px": 0,
        "glyph_px": 60,
        "desk": "slate",
        "area": 0.8,
        "angle_deg": 3,
    },
    # Lines slanting more than three rows across the page stayed in as ink, and so did the
    # upright lines of squared paper: the digit was read inside a grid the size of the page.
    "blue ruled paper on a desk, turned 8 degrees, blue pen": {
        "rules": "blue",
        "pen": "blue",
        "stroke_px": 1,
        "desk": "slate",
        "area": 0.9,
        "angle_deg": 8,
    },
    "blue squared paper, black pen": {"rules": "blue", "squared": True, "stroke_px": 2},
    "grey squared paper on a desk, turned -6 degrees, blue pen": {
        "rules": "grey",
        "squared": True,
        "pen": "blue",
        "stroke_px": 2,
        "desk": "walnut",
        "area": 0.9,
        "angle_deg": -6,
    },
    "grey ruled paper on a desk, blue pen": {
        "rules": "grey",
        "pen": "blue",
        "stroke_px": 0,
        "glyph_px": 70,
        "desk": "walnut",
        "area": 0.8,
        "angle_deg": -2,
    },
}


@functools.cache
def clean_digit(digit: int, stroke_px: int = 4, pen: str = "black", glyph_px: int = 110) -> np.ndarray:
    """What preprocessing makes of the photo of `digit` on plain white paper, and nothing else."""
    page = people_style.sheet(PAGE_PX, people_style.PAPERS["white"], np.random.default_rng(digit))
    coverage = draw_large_digit(digit, glyph_px, PAGE_PX, stroke_px=stroke_px) / 255
    people_style.put_ink(page, coverage, people_style.PENS[pen], (0, 0))
    buffer = io.BytesIO()
    Image.fromarray(people_style.to_uint8(page)).save(buffer, format="JPEG", quality=90)
    return preprocess_digit(np.asarray(Image.open(buffer).convert("L"), np.float32) / 255, "clean")


def clean_version(name: str, digit: int) -> np.ndarray:
    """`clean_digit` drawn with the same pen, stroke and size as photo `name`."""
    drawing = {key: PHOTOS[name][key] for key in ("pen", "stroke_px", "glyph_px") if key in PHOTOS[name]}
    return clean_digit(digit, **drawing)


@pytest.fixture(scope="module")
def photographed(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, int], np.ndarray]:
    """`load_digit` of photo `name` of `digit`, saved as a JPEG; each made once per module."""
    folder = tmp_path_factory.mktemp("photos")

    @functools.cache
    def load(name: str, digit: int) -> np.ndarray:
        path = folder / f"{list(PHOTOS).index(name)}-{digit}.jpg"
        return load_digit(save(photo(digit, **PHOTOS[name]), path, quality=90))

    return load


def correlation(one: np.ndarray, other: np.ndarray) -> float:
    return float(np.corrcoef(one.ravel().astype(float), other.ravel().astype(float))[0, 1])


def similarity(image: np.ndarray, reference: np.ndarray) -> float:
    """Correlation with `reference`, the best over shifts of up to a pixel (a thin stroke
    one pixel over correlates poorly and still looks the same)."""
    return max(
        correlation(np.roll(image, (rows, columns), axis=(0, 1)), reference)
        for rows in (-1, 0, 1)
        for columns in (-1, 0, 1)
    )


@pytest.mark.parametrize("name", PHOTOS)
def test_photos_of_paper_come_out_like_the_digit_on_clean_paper(name: str, photographed) -> None:
    """No desk edge, shadow edge or ruled line in the 28x28 image: it matches the clean digit."""
    for digit in range(10):
        image = photographed(name, digit)
        assert_mnist_shaped(image)
        score = similarity(image, clean_version(name, digit))
        assert score > 0.75, f"digit {digit}: correlation {score:.2f}"


@pytest.mark.parametrize("digit", range(10))
def test_ink_in_a_shadow_comes_out_as_strong_as_in_the_light(digit: int, tmp_path: Path) -> None:
    """A hard shadow halving the light on the left half of the page: the same digit as in
    full light, level for level (the shadowed strokes came out grey when measured against
    the paper's level rather than its brightness)."""
    lit = load_digit(save(photo(digit), tmp_path / "lit.png")).astype(float)
    shadowed = load_digit(save(photo(digit, shadow=(0.5, 90, 0.0)), tmp_path / "shadow.png"))
    # Placed by its centre of mass, rounded: a pixel over is the same digit.
    difference = min(
        np.abs(np.roll(shadowed, (rows, columns), axis=(0, 1)) - lit).mean()
        for rows in (-1, 0, 1)
        for columns in (-1, 0, 1)
    )
    assert difference < 0.5


@pytest.mark.parametrize("digit", range(10))
def test_the_corner_of_a_shadow_beside_the_digit_is_not_ink(digit: int, tmp_path: Path) -> None:
    """A shadow cutting across a corner of the picture in a long, thin wedge, its point at
    the digit: a square as wide as a quarter of the picture cannot fit into the point and
    took it for ink."""
    path = save(photo(digit, shadow=(0.45, 165, 0.2)), tmp_path / "wedge.jpg", quality=90)
    assert similarity(load_digit(path), clean_digit(digit)) > 0.95


def faint_pencil_photo(
    digit: int, shadow: tuple[float, float, float] | None, offset_px: tuple[int, int]
) -> np.ndarray:
    """A light pencil's grainy `digit` (placed `offset_px` from the middle) on white paper
    under a hard `shadow`, slightly blurred as a phone takes it; gray in [0, 1]."""
    rng = np.random.default_rng(digit)
    page = people_style.sheet(PAGE_PX, people_style.PAPERS["white"], rng)
    coverage = draw_large_digit(digit, 70, PAGE_PX, offset_px, stroke_px=0) / 255
    people_style.put_ink(page, coverage, people_style.PENS["pencil"], (0, 0), rng, opacity=0.7)
    if shadow is not None:
        page = people_style.cast_shadow(page, *shadow, softness_px=1.5)
    image = Image.fromarray(people_style.to_uint8(page)).filter(ImageFilter.GaussianBlur(1.0))
    return np.asarray(image.convert("L"), np.float32) / 255


@pytest.mark.parametrize(
    ("place", "shadow", "offset_px"),
    [
        ("in the shadow, a lit strip along one side", (0.55, 60, -0.3), (0, 0)),
        ("in the lit corner", (0.55, 45, -0.2), (50, -50)),
    ],
)
@pytest.mark.parametrize("digit", range(10))
def test_faint_pencil_on_a_page_mostly_in_shadow_is_dark_ink(
    place: str, shadow: tuple[float, float, float], offset_px: tuple[int, int], digit: int
) -> None:
    """The page's typical level is the shadow's, and a light pencil there, or in the lit
    part, is no darker than it: the lit part was taken for light ink on a dark page, and the
    28x28 image was the shadow's edge (correlation 0.11 to 0.52 with the digit; now 0.74 to 1)."""
    lit = preprocess_digit(faint_pencil_photo(digit, None, offset_px), "lit.png")
    shadowed = preprocess_digit(faint_pencil_photo(digit, shadow, offset_px), "shadowed.png")
    assert similarity(shadowed, lit) > 0.65, place


@pytest.mark.parametrize("loop_px", [100, 140])
def test_a_filled_loop_stays_ink(loop_px: int) -> None:
    """An 8 whose lower loop is filled in, as MNIST writes some: a square a few strokes wide
    fits inside the blot and takes it for the page, leaving a 0 (the upper loop) wider than
    tall; the larger square keeps the 8 standing."""
    page = Image.new("L", (256, 256), 255)
    draw = ImageDraw.Draw(page)
    draw.ellipse((60, 30, 190, 120), outline=0, width=8)
    draw.ellipse((125 - loop_px / 2, 115, 125 + loop_px / 2, 230), fill=0)
    height, width = ink_box(preprocess_digit(np.asarray(page, np.float32) / 255, "eight.png") > 128)
    assert height > width


@pytest.mark.parametrize("desk", ["walnut", "oak"])
def test_a_grained_desk_along_one_side_adds_no_ink(desk: str) -> None:
    """The sheet runs out of the photo on three sides, so it is not found as a sheet on a
    desk: the desk's dark, grained strip is background however dark it is (measuring ink
    against the paper's brightness there once made its grain as strong as a pen's)."""
    for digit in range(10):
        rng = np.random.default_rng(digit)
        page = people_style.sheet(PAGE_PX, people_style.PAPERS["white"], rng)
        coverage = draw_large_digit(digit, 110, PAGE_PX, stroke_px=4) / 255
        people_style.put_ink(page, coverage, people_style.PENS["black"], (0, 0))
        strip = people_style.desk_surface((PAGE_PX[0] // 4, PAGE_PX[1]), people_style.DESKS[desk], rng)
        photo_rgb = people_style.to_uint8(np.concatenate([page, strip], axis=1))
        gray = np.asarray(Image.fromarray(photo_rgb).convert("L"), np.float32) / 255
        score = similarity(preprocess_digit(gray, "desk.png"), clean_digit(digit))
        assert score > 0.85, f"digit {digit}: correlation {score:.2f}"


def test_photos_of_paper_are_predicted_like_the_clean_digit(model, photographed) -> None:
    """Every digit the model reads right on clean paper it reads right in each photo (of
    the photos drawn like the digits it was trained on: black, strokes 2-7 px, large)."""
    names = [name for name in PHOTOS if not {"pen", "stroke_px", "glyph_px"} & set(PHOTOS[name])]
    photos = [photographed(name, digit) for name in names for digit in range(10)]
    cleans = [clean_version(name, digit) for name in names for digit in range(10)]
    digits = np.tile(np.arange(10), len(names))
    photo_right = model.predict_probabilities(np.stack(photos)).argmax(axis=1) == digits
    clean_right = model.predict_probabilities(np.stack(cleans)).argmax(axis=1) == digits
    assert clean_right.mean() > 0.9
    assert photo_right[clean_right].all(), [
        names[i // 10] for i in np.flatnonzero(clean_right & ~photo_right)
    ]


def page_photo(path: Path, seed: int, ruled: bool, desk: bool, digit: int | None = None) -> Path:
    """A phone photo of a page as scripts/people_style.py takes them (a JPEG), with `digit`
    written on it in blue or nothing."""
    rng = np.random.default_rng(seed)
    size = (int(rng.integers(300, 900)), int(rng.integers(300, 900)))
    page = people_style.sheet(size, people_style.PAPERS[str(rng.choice(list(people_style.PAPERS)))], rng)
    if ruled:
        spacing = round(size[1] * rng.uniform(0.09, 0.16))
        colour = people_style.RULE_COLOURS[str(rng.choice(list(people_style.RULE_COLOURS)))]
        people_style.rule_lines(page, spacing, colour, int(rng.integers(1, 3)), int(rng.integers(0, spacing)))
    if digit is not None:
        drawn = draw_large_digit(digit, min(size) // 2, size) / 255
        people_style.put_ink(page, drawn, people_style.PENS["blue"], (0, 0))
    if desk:
        photo_size = (round(size[0] * rng.uniform(1.1, 1.4)), round(size[1] * rng.uniform(1.1, 1.4)))
        surface = people_style.desk_surface(
            photo_size, people_style.DESKS[str(rng.choice(list(people_style.DESKS)))], rng
        )
        centre = (rng.uniform(0.42, 0.58), rng.uniform(0.42, 0.58))
        page = people_style.on_desk(page, surface, rng.uniform(0.5, 0.9), rng.uniform(-8, 8), centre)
    photo = people_style.shade(page, rng.uniform(0.05, 0.35), rng.uniform(0, 360))
    photo += rng.normal(0.0, rng.uniform(1.0, 4.0), photo.shape[:2]).astype(np.float32)[..., None]
    blur = ImageFilter.GaussianBlur(rng.uniform(0.0, 1.5))
    Image.fromarray(people_style.to_uint8(photo)).filter(blur).save(path, quality=int(rng.integers(35, 95)))
    return path


@pytest.mark.parametrize(
    "seed, ruled, desk, reason",
    [
        (12, True, False, "only ruled lines, no digit"),
        (4, True, False, "nothing stands out from the background"),  # nor as its lines, read again
        (18, True, False, "only ruled lines, no digit"),
    ],
)
def test_an_empty_ruled_page_is_blank_and_a_digit_on_it_is_read(
    seed: int, ruled: bool, desk: bool, reason: str, tmp_path: Path
) -> None:
    """Photos of empty ruled pages once came out as digits: with nothing darker on the page,
    the lines are the darkest ink, which no faint-line test takes out."""
    empty = page_photo(tmp_path / "empty.jpg", seed, ruled, desk)
    with pytest.raises(MnistkitError, match=rf"^{re.escape(str(empty))}: blank image \({reason}\)$"):
        load_digit(empty)
    assert_mnist_shaped(load_digit(page_photo(tmp_path / "written.jpg", seed, ruled, desk, digit=4)))


def test_a_digit_of_dots_is_read_not_taken_for_specks(tmp_path: Path) -> None:
    """A dot-matrix print's 7: each dot is a speck, but no line goes with them."""
    rows = ["11111", "00001", "00010", "00100", "01000", "01000", "01000"]
    picture = Image.new("L", (1000, 1000), 255)
    draw = ImageDraw.Draw(picture)
    for row, dots in enumerate(rows):
        for column, dot in enumerate(dots):
            if dot == "1":
                x, y = 380 + 60 * column, 290 + 60 * row
                draw.ellipse([x - 6, y - 6, x + 6, y + 6], fill=0)
    assert_mnist_shaped(load_digit(save(np.asarray(picture), tmp_path / "dots.png")))


def test_something_touching_the_border_is_not_ink_when_the_digit_is_elsewhere(tmp_path: Path) -> None:
    """A pen lying into the picture and a dark corner of the desk stay out of the digit."""
    page = 255 - draw_large_digit(5, glyph_px=110, canvas_px=PAGE_PX)
    page[150:160, :70] = 40
    page[:30, 215:] = 60
    score = correlation(load_digit(save(page, tmp_path / "5.png")), clean_digit(5))
    assert score > 0.95, f"correlation {score:.2f}"


def test_a_digit_cut_by_the_border_is_still_all_ink(tmp_path: Path) -> None:
    """A tight crop: the strokes touch the border and nothing else is there."""
    drawn = 255 - draw_large_digit(5, glyph_px=110, canvas_px=PAGE_PX, stroke_px=1)
    rows = np.flatnonzero(drawn.min(axis=1) < 128)
    columns = np.flatnonzero(drawn.min(axis=0) < 128)
    cropped = drawn[rows[0] + 2 : rows[-1] - 1, columns[0] + 2 : columns[-1] - 1]
    whole = preprocess_digit(drawn.astype(np.float32) / 255, "whole")
    score = correlation(load_digit(save(cropped, tmp_path / "5.png")), whole)
    assert score > 0.9, f"correlation {score:.2f}"


def flood_fill_regions(mask: np.ndarray) -> list[set[tuple[int, int]]]:
    """The 8-connected regions of `mask`, found pixel by pixel."""
    regions, seen = [], np.zeros_like(mask)
    for start in zip(*np.nonzero(mask), strict=True):
        if seen[start]:
            continue
        region, stack = set(), [start]
        seen[start] = True
        while stack:
            row, column = stack.pop()
            region.add((int(row), int(column)))
            for next_row in range(max(row - 1, 0), min(row + 2, mask.shape[0])):
                for next_column in range(max(column - 1, 0), min(column + 2, mask.shape[1])):
                    if mask[next_row, next_column] and not seen[next_row, next_column]:
                        seen[next_row, next_column] = True
                        stack.append((next_row, next_column))
        regions.append(region)
    return regions


@settings(max_examples=60, deadline=None)
@given(
    height=st.integers(1, 48),
    width=st.integers(1, 48),
    seed=st.integers(0, 2**32 - 1),
    density=st.floats(0.05, 0.8),
)
def test_connected_regions_are_those_a_flood_fill_finds(
    height: int, width: int, seed: int, density: float
) -> None:
    """The run-based labelling behind the clutter, paper and rule steps, and each region's box,
    against the obvious way."""
    mask = np.random.default_rng(seed).random((height, width)) < density
    labels, count = label_components(mask)
    regions = [
        {(int(r), int(c)) for r, c in zip(*np.nonzero(labels == k), strict=True)} for k in range(1, count + 1)
    ]
    assert not (labels[~mask]).any()
    assert sorted(map(sorted, regions)) == sorted(map(sorted, flood_fill_regions(mask)))
    boxes = component_boxes(labels, count)
    for label, region in enumerate(regions, 1):
        rows, columns = [r for r, _ in region], [c for _, c in region]
        assert boxes[label].tolist() == [min(rows), max(rows) + 1, min(columns), max(columns) + 1]


@settings(max_examples=50, deadline=None)
@given(
    height=st.integers(1, 30),
    width=st.integers(1, 30),
    radius=st.integers(1, 6),
    seed=st.integers(0, 2**32 - 1),
)
def test_a_round_pen_dilates_as_the_maximum_over_a_disc(
    height: int, width: int, radius: int, seed: int
) -> None:
    """The stroke-thickening dilation, against the maximum over every offset within the radius."""
    values = np.random.default_rng(seed).random((height, width)).astype(np.float32)
    values[values < 0.7] = 0
    framed = np.pad(values, radius)
    expected = framed.copy()
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dy * dy + dx * dx <= radius * radius:
                shifted = np.roll(framed, (dy, dx), axis=(0, 1))
                expected = np.maximum(expected, shifted)
    np.testing.assert_array_equal(dilate_disc(values, radius), expected)


def frame_stroke_px(image: np.ndarray) -> float:
    """Stroke width in a 28x28 frame, measured as MNIST's was for the style's `stroke_px`:
    enlarged 4 times, the area at half the peak twice over its outline."""
    enlarged = np.asarray(Image.fromarray(image).resize((112, 112), Image.Resampling.BILINEAR))
    return stroke_width_px(enlarged >= 128) / 4


FINE_PEN_DIGITS = {
    "zero": lambda draw, width: draw.ellipse((90, 40, 210, 260), outline=0, width=width),
    # Upright, its strokes all along the crop's edges.
    "one": lambda draw, width: draw.line((150, 40, 150, 260), fill=0, width=width),
}


@pytest.mark.parametrize("line_px", [2, 4])
@pytest.mark.parametrize("digit", FINE_PEN_DIGITS)
def test_a_fine_pen_comes_out_as_thick_as_mnist_strokes(digit: str, line_px: int) -> None:
    """A fine pen line, scaled alone into the 20 px box, would be a hairline no MNIST digit
    is: it is drawn thicker to MNIST's typical width, and the digit keeps its shape."""
    page = Image.new("L", (300, 300), 255)
    FINE_PEN_DIGITS[digit](ImageDraw.Draw(page), line_px)
    gray = np.asarray(page, np.float32) / 255
    mnist = IMAGE_STYLES["mnist"]
    hairline = preprocess_digit(gray, f"{digit}.png", dataclasses.replace(mnist, stroke_px=None))
    thickened = preprocess_digit(gray, f"{digit}.png", mnist)
    assert frame_stroke_px(hairline) < 1.6
    assert abs(frame_stroke_px(thickened) - mnist.stroke_px) < 0.4
    assert_mnist_shaped(thickened)
    if digit == "zero":
        assert thickened[14, 14] == 0  # its hole stays open


@pytest.mark.parametrize("width", [1, 3, 6])
def test_the_stroke_width_of_bars_and_rings_is_their_width(width: int) -> None:
    bar = np.zeros((80, 80), bool)
    bar[10:70, 30 : 30 + width] = True
    ring = np.hypot(*np.mgrid[-40:41, -40:41]) <= 30
    ring &= ~(np.hypot(*np.mgrid[-40:41, -40:41]) <= 30 - width)
    # The bar's ends add to its outline: 2 steps over 60 rows.
    assert stroke_width_px(bar) == pytest.approx(width * 4 / np.pi / (1 + width / 60), rel=0.01)
    assert stroke_width_px(ring) == pytest.approx(width, rel=0.15)


@pytest.mark.parametrize("stroke_fraction", [0.035, 0.06])
def test_the_people_style_fine_pen_draws_every_stroke_whole(stroke_fraction: float) -> None:
    """A 28x28 ring 1 px thin on one side and 4 px on the other, as MNIST strokes vary: the
    people-style set's fine pen thins it to the pen's width without cutting the thin side,
    as thinning alone (eroding the enlarged digit) does."""
    rows, columns = np.mgrid[0:28, 0:28]
    distance = np.hypot(rows - 14, columns - 14)
    thickness = np.where(columns < 14, 4.0, 1.0)
    digit = np.where(np.abs(distance - 8) <= thickness / 2, 255, 0).astype(np.uint8)
    height_px = 200
    coverage = people_style.pen_strokes(digit, height_px, stroke_px=stroke_fraction * height_px)
    inked = coverage > 0.5
    assert label_components(inked)[1] == 1
    assert label_components(~np.pad(inked, 1))[1] == 2  # a closed ring: its hole apart from the outside
    thin_side = inked[:, inked.shape[1] * 3 // 4 :]
    assert stroke_width_px(thin_side) == pytest.approx(stroke_fraction * height_px, rel=0.35)


def test_strokes_as_thick_as_mnist_are_left_as_they_are() -> None:
    drawn = draw_large_digit(3, glyph_px=120, canvas_px=(220, 220), stroke_px=6).astype(np.float32) / 255
    mnist = IMAGE_STYLES["mnist"]
    assert frame_stroke_px(preprocess_digit(drawn, "three.png")) > mnist.stroke_px
    np.testing.assert_array_equal(
        preprocess_digit(drawn, "three.png", mnist),
        preprocess_digit(drawn, "three.png", dataclasses.replace(mnist, stroke_px=None)),
    )


@settings(max_examples=25, deadline=None)
@given(
    digit=st.integers(0, 9),
    glyph_px=st.integers(20, 150),
    offset_x=st.integers(-60, 60),
    offset_y=st.integers(-40, 40),
    stroke_px=st.integers(1, 8),
    dark_on_light=st.booleans(),
)
def test_centre_of_mass_lands_in_the_centre(
    digit: int, glyph_px: int, offset_x: int, offset_y: int, stroke_px: int, dark_on_light: bool
) -> None:
    drawn = draw_large_digit(digit, glyph_px, (260, 220), (offset_x, offset_y), stroke_px)
    if dark_on_light:
        drawn = 255 - drawn
    assert_mnist_shaped(preprocess_digit(drawn.astype(np.float32) / 255, "drawn"))


def test_animated_gif_uses_its_first_frame(tmp_path: Path) -> None:
    frames = [Image.fromarray(draw_large_digit(d)) for d in (7, 1)]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    first = load_digit(tmp_path / "a.gif")
    assert np.array_equal(first, load_digit(save(draw_large_digit(7), tmp_path / "seven.png")))


def test_no_preprocess_keeps_a_28x28_image_as_it_is(tmp_path: Path) -> None:
    digit = np.zeros((28, 28), np.uint8)
    digit[6:22, 12:16] = 200
    assert np.array_equal(load_digit(save(digit, tmp_path / "d.png"), preprocess=False), digit)


@pytest.mark.parametrize("digit", [0, 2, 4, 7])
def test_a_digit_already_as_mnist_makes_them_is_read_as_it_is_either_way_round(
    digit: int, tmp_path: Path
) -> None:
    """As MNIST's own test digits, saved as PNGs or given as arrays, are: prepared again they
    would blur and may move by a pixel."""
    prepared = preprocess_digit(draw_large_digit(digit).astype(np.float32) / 255, "drawn")
    assert not np.array_equal(preprocess_digit(prepared.astype(np.float32) / 255, "again"), prepared)
    assert np.array_equal(load_digit(save(prepared, tmp_path / "light.png")), prepared)
    assert np.array_equal(load_digit(save(255 - prepared, tmp_path / "dark.png")), prepared)


def test_clothes_already_as_fashion_mnist_makes_them_are_read_as_they_are(tmp_path: Path) -> None:
    """Fashion-MNIST's own test images, exported as PNGs (make all's reports), were prepared
    again by predict, and a clothes model read 1.6 points fewer of them. A picture whose own
    backdrop fills the frame is not in that form and is still prepared."""
    shirt = np.zeros((28, 28), np.uint8)
    shirt[1:27, 7:21] = np.linspace(70, 250, 14).astype(np.uint8)  # shades
    shirt[2:12, 2:26] = np.maximum(shirt[2:12, 2:26], 160)  # sleeves
    shirt[[0, 27], 7:21] = 25  # faint hems: the photo's, all 28 rows high
    for name, picture in (("light.png", shirt), ("dark.png", 255 - shirt)):
        assert np.array_equal(load_digit(save(picture, tmp_path / name), style="fashion-mnist"), shirt)
    on_backdrop = np.where(shirt == 0, 40, shirt).astype(np.uint8)
    loaded = load_digit(save(on_backdrop, tmp_path / "backdrop.png"), style="fashion-mnist")
    assert not np.array_equal(loaded, on_backdrop) and loaded.min() == 0


def test_a_small_object_far_away_is_told_apart_from_an_empty_photo(tmp_path: Path) -> None:
    """A clothes model said a 95 px square on a 1000 px photo (0.9% of it) was blank, as if
    nothing were there: it asks for the object to cover 1% of the picture, and now says so."""
    photo = np.full((1000, 1000), 230, np.uint8)
    empty = save(photo, tmp_path / "empty.png")
    photo[400:495, 400:495] = 20
    far = save(photo, tmp_path / "far.png")
    with pytest.raises(MnistkitError, match=r"blank image \(nothing stands out from the background\)$"):
        load_digit(empty, style="fashion-mnist")
    with pytest.raises(MnistkitError, match=r"is under 1% of it; crop the picture to the object\)$"):
        load_digit(far, style="fashion-mnist")
    cropped = save(photo[300:600, 300:600], tmp_path / "cropped.png")
    assert load_digit(cropped, style="fashion-mnist").max() >= 200  # its shade, as Fashion-MNIST keeps it


@pytest.mark.parametrize("change", ["moved", "smaller", "faint"])
def test_a_28x_28_digit_not_as_mnist_makes_them_is_prepared(change: str, tmp_path: Path) -> None:
    prepared = preprocess_digit(draw_large_digit(3).astype(np.float32) / 255, "drawn")
    changed = {
        "moved": np.roll(prepared, 3, axis=1),
        "smaller": np.asarray(Image.fromarray(prepared).resize((20, 20)).crop((-4, -4, 24, 24))),
        "faint": prepared // 3,
    }[change]
    loaded = load_digit(save(changed, tmp_path / "changed.png"))
    assert not np.array_equal(loaded, changed)
    assert_mnist_shaped(loaded)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height but holds one tiny IDAT: what a bomb's header says."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def truncated_png(path: Path) -> Path:
    save(draw_large_digit(3), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


BAD_INPUTS: dict[str, tuple[Callable[[Path], Path], str]] = {
    "missing": (lambda p: p / "nope.png", "no such file"),
    "directory": (lambda p: (p / "folder").mkdir() or p / "folder", "is a directory"),
    "empty": (lambda p: ((p / "e.png").write_bytes(b"") and p / "e.png") or p / "e.png", "empty file"),
    "a pipe": (lambda p: os.mkfifo(p / "f.png") or p / "f.png", "not a regular file (a device or a pipe)"),
    "a device": (lambda p: Path("/dev/zero"), "not a regular file (a device or a pipe)"),
    # Its size says 0, yet it holds text: read, and not called empty.
    "/proc's file": (lambda p: Path("/proc/self/status"), "not an image (Pillow cannot identify"),
    "not an image": (lambda p: (p / "n.png").write_text("hello") and p / "n.png", "not an image"),
    # An iPhone's photo: an image Pillow cannot read, not "not an image".
    "a HEIC photo": (
        lambda p: (
            (p / "IMG_0001.HEIC").write_bytes(b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + bytes(200))
            and p / "IMG_0001.HEIC"
        ),
        "a HEIC/HEIF photo, which Pillow does not read: save it as JPEG or PNG",
    ),
    # The data file or the checkpoint given where an image belongs: named, as a swapped
    # argument is named, rather than "not an image" alone.
    "an .npz": (
        lambda p: np.savez(p / "mnist.npz", train_images=np.zeros((1, 28, 28), np.uint8)) or p / "mnist.npz",
        "a zip archive such as an .npz data file (from parse-to-npz), not an image",
    ),
    "a checkpoint": (
        lambda p: (p / "m.safetensors").write_bytes(b"\x02\0\0\0\0\0\0\0{}") and p / "m.safetensors",
        "a safetensors file (such as an mnistkit checkpoint), not an image",
    ),
    "truncated": (lambda p: truncated_png(p / "t.png"), "truncated or corrupted"),
    "bomb": (
        lambda p: (p / "b.png").write_bytes(png_header_only(100_000, 100_000)) and p / "b.png",
        "decompression bomb",
    ),
    "just over the limit": (
        lambda p: (p / "o.png").write_bytes(png_header_only(7000, 7000)) and p / "o.png",
        "decompression bomb",
    ),
    "1x100000": (lambda p: save(np.zeros((1, 100_000), np.uint8), p / "strip.png"), "too elongated"),
    "blank": (lambda p: save(np.full((80, 60), 240, np.uint8), p / "blank.png"), "blank image"),
    "noise only": (
        lambda p: save(np.random.default_rng(0).normal(200, 3, (90, 90)).astype(np.uint8), p / "n.png"),
        "blank image",
    ),
    # Large: read a second time with each box its most ink-like pixel, the grain is no ink either.
    "grainy paper, large": (
        lambda p: save(
            np.random.default_rng(0).normal(230, 8, (600, 600)).clip(0, 255).astype(np.uint8), p / "g.png"
        ),
        "blank image",
    ),
    "fully transparent": (lambda p: save(np.zeros((40, 40, 4), np.uint8), p / "tr.png"), "blank image"),
    "symlink loop": (lambda p: os.symlink(p / "loop.png", p / "loop.png") or p / "loop.png", "cannot read"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_each_bad_input_raises_one_line_naming_the_file(case: str, tmp_path: Path) -> None:
    make, reason = BAD_INPUTS[case]
    path = make(tmp_path)
    with pytest.raises(MnistkitError) as raised:
        load_digit(path)
    message = str(raised.value)
    assert message.startswith(f"{path}: ") and reason in message and "\n" not in message


def test_the_pixel_limit_is_the_documented_one() -> None:
    assert Image.MAX_IMAGE_PIXELS == MAX_IMAGE_PIXELS == 40_000_000


def test_no_preprocess_names_the_wrong_size(tmp_path: Path) -> None:
    for height, width in ((32, 30), (900, 1000)):
        path = save(np.zeros((height, width), np.uint8), tmp_path / "d.png")
        expected = rf"d.png: image is {width}x{height} pixels; preprocess=False needs 28x28"
        with pytest.raises(MnistkitError, match=expected):
            load_digit(path, preprocess=False)


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=300))
def test_any_bytes_load_or_raise_mnistkit_error(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "x.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + data if data[:1] == b"P" else data)
    try:
        image = load_digit(path)
    except MnistkitError as error:
        assert str(error).startswith(str(path))
    else:
        assert image.shape == (28, 28)


@settings(max_examples=60, deadline=None)
@given(
    height=st.integers(1, 40),
    width=st.integers(1, 40),
    channels=st.sampled_from([1, 2, 4]),
    seed=st.integers(0, 2**32 - 1),
    ink_fraction=st.floats(0, 1),
)
def test_any_pixels_give_a_digit_or_mnistkit_error(
    tmp_path_factory: pytest.TempPathFactory,
    height: int,
    width: int,
    channels: int,
    seed: int,
    ink_fraction: float,
) -> None:
    rng = np.random.default_rng(seed)
    pixels = np.where(rng.random((height, width, channels)) < ink_fraction, 255, rng.integers(0, 256))
    path = tmp_path_factory.mktemp("pixels") / "p.png"
    Image.fromarray(
        pixels.astype(np.uint8).squeeze(axis=2) if channels == 1 else pixels.astype(np.uint8)
    ).save(path)
    try:
        image = load_digit(path)
    except MnistkitError as error:
        assert str(error).startswith(f"{path}: ")
    else:
        assert image.shape == (28, 28) and image.dtype == np.uint8


def test_bold_light_digits_on_a_dark_canvas_are_never_taken_for_a_sheet(
    tmp_path: Path, synthetic_data
) -> None:
    """A bold digit can fill a third of a small dark image, as a sheet fills a photo of a
    desk; holding no ink of its own, it is read as the digit it is."""
    for index, image in enumerate(synthetic_data["test_images"]):
        path = tmp_path / f"{index}.png"
        Image.fromarray(image).save(path)
        assert load_digit(path).max() == 255, index


@pytest.mark.parametrize("angle", [0, 8, 30, 45, 71])
def test_rectangularity_is_one_for_a_rectangle_at_any_angle_and_pi_over_4_for_an_ellipse(angle: int) -> None:
    canvas = Image.new("L", (500, 500), 0)
    canvas.paste(Image.new("L", (300, 180), 255).rotate(angle, expand=True), (40, 40))
    assert rectangularity(np.asarray(canvas) > 127) > 0.98
    ellipse = Image.new("L", (500, 500), 0)
    ImageDraw.Draw(ellipse).ellipse([100, 150, 400, 330], fill=255)
    assert abs(rectangularity(np.asarray(ellipse.rotate(angle)) > 127) - np.pi / 4) < 0.01


def _bold_rings(size: int, stroke: int, rings: list[tuple[float, float, float, float]]) -> Image.Image:
    """Light rings (a 0, or an 8 as two) with strokes `stroke` px wide on a dark canvas, each
    ring's box given as fractions of the canvas."""
    picture = Image.new("L", (size, size), 0)
    for box in rings:
        ImageDraw.Draw(picture).ellipse([round(f * size) for f in box], outline=255, width=stroke)
    return picture


@pytest.mark.parametrize(
    ("size", "stroke", "rings"),
    [
        (200, 40, [(0.22, 0.08, 0.78, 0.92)]),
        (200, 50, [(0.22, 0.08, 0.78, 0.92)]),
        (28, 6, [(0.25, 0.1, 0.75, 0.9)]),
        (280, 36, [(0.3, 0.08, 0.7, 0.5), (0.25, 0.46, 0.75, 0.93)]),
    ],
    ids=["0-200px-40", "0-200px-50", "0-28px-6", "8-280px-36"],
)
def test_a_bold_light_digit_with_holes_reads_as_the_same_digit_dark_on_light(
    tmp_path: Path, size: int, stroke: int, rings: list
) -> None:
    """Filled in, a bold light ring is a large light region with a dark inside, as a sheet on
    a desk is, but its sides are round: it is read as the digit, not its holes as ink."""
    light = _bold_rings(size, stroke, rings)
    light.save(tmp_path / "light.png")
    ImageOps.invert(light).save(tmp_path / "dark.png")
    as_light, as_dark = (load_digit(tmp_path / name).astype(np.float64) for name in ("light.png", "dark.png"))
    assert np.corrcoef(as_light.ravel(), as_dark.ravel())[0, 1] > 0.95


# Digits with a level stroke about half the picture wide, in a 280 px picture.
FOUR_SEVEN_AND_TWO = [
    (4, [(150, 250), (150, 30), (70, 177), (200, 177)]),
    (7, [(60, 41), (210, 41), (120, 250)]),
    (2, [(70, 80), (140, 30), (200, 80), (70, 245), (210, 245)]),
]


def drawn_lines(path: Path, size: tuple[int, int], points: list, width: int, paper: int, ink: int) -> Path:
    image = Image.new("L", size, paper)
    ImageDraw.Draw(image).line(points, fill=ink, width=width)
    image.save(path)
    return path


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
@pytest.mark.parametrize(("paper", "ink"), [(250, 30), (5, 240)])
def test_a_fine_pen_on_a_large_canvas_keeps_every_stroke(
    tmp_path: Path, paper: int, ink: int, suffix: str
) -> None:
    """A 4 px line in a 1000 px picture straddles two of the boxes that shrink it to the
    working size: averaged, its bar faded to half its contrast and the 7 was read as a 1 (as
    a JPEG of light ink too, while boxes took their most ink-like pixel only where the
    strokes' boxes typically kept under 0.6 of their contrast rather than 0.9);
    a lone 4 px stroke in 2000 px kept an eighth and a quarter, and the 1 was blank (as a
    JPEG too, which was decoded at an eighth of its size)."""
    seven = [(340, 135), (660, 135), (460, 655)]
    small_seven = [(85, 34), (165, 34), (115, 164)]
    reference = load_digit(drawn_lines(tmp_path / "s7.png", (250, 188), small_seven, 1, paper, ink))
    large = load_digit(drawn_lines(tmp_path / f"7{suffix}", (1000, 750), seven, 4, paper, ink))
    assert similarity(large, reference) > 0.95
    one = load_digit(
        drawn_lines(tmp_path / f"1{suffix}", (2000, 1500), [(1000, 420), (1000, 1080)], 4, paper, ink)
    )
    assert (
        similarity(
            one,
            load_digit(drawn_lines(tmp_path / "s1.png", (250, 188), [(125, 52), (125, 135)], 1, paper, ink)),
        )
        > 0.75
    )


@pytest.mark.parametrize("canvas_px", [280, 600, 900])
@pytest.mark.parametrize("offset_px", [0, 1, 2])
@pytest.mark.parametrize(("digit", "points"), FOUR_SEVEN_AND_TWO)
def test_a_digits_thin_level_stroke_keeps_its_contrast(
    tmp_path: Path, canvas_px: int, offset_px: int, digit: int, points: list
) -> None:
    """A 4's crossbar, a 7's top, a 2's base drawn with a 2 px pen, half the picture wide:
    the boxes that shrink the picture cut such a stroke in two at half its contrast or less
    while the digit's other strokes kept theirs, so it was taken for a faint ruled line and
    dropped (the 4 read as 1, the 7 as 1, the 2 as 7)."""
    scale = canvas_px / 280
    shifted = [(x * scale, y * scale + offset_px) for x, y in points]
    drawn = load_digit(drawn_lines(tmp_path / "d.png", (canvas_px, canvas_px), shifted, 2, 255, 0))
    # The same digit in a picture small enough not to be shrunk, its pen as wide in proportion.
    small = [(x * 250 / 280, y * 250 / 280) for x, y in points]
    pen_px = max(1, round(2 * 250 / canvas_px))
    reference = load_digit(drawn_lines(tmp_path / "r.png", (250, 250), small, pen_px, 255, 0))
    assert similarity(drawn, reference) > 0.95, f"the {digit}"


FIVE = [(200, 35), (80, 35), (75, 130), (170, 130), (200, 190), (150, 250), (70, 235)]


@pytest.mark.parametrize(
    ("digit", "points", "canvas_px"),
    [(5, FIVE, 257), (5, FIVE, 329), (4, FOUR_SEVEN_AND_TWO[0][1], 275), (4, FOUR_SEVEN_AND_TWO[0][1], 374)],
)
def test_a_light_thin_pen_on_a_large_canvas_is_read_not_refused_as_blank(
    tmp_path: Path, digit: int, points: list, canvas_px: int
) -> None:
    """A grey 2 px pen (190 on white) on a canvas a little over 256 px: the boxes that shrink
    it cut most of its strokes in two, which then keep half of a quarter's contrast, under
    what ink must stand out by, and the digit was refused as a blank image."""
    scale = 0.8 * canvas_px / 280
    placed = [(x * scale + 0.1 * canvas_px - 14 * scale, y * scale + 0.1 * canvas_px) for x, y in points]
    drawn = load_digit(drawn_lines(tmp_path / "d.png", (canvas_px, canvas_px), placed, 2, 255, 190))
    small = [(x * 250 / canvas_px, y * 250 / canvas_px) for x, y in placed]
    reference = load_digit(drawn_lines(tmp_path / "r.png", (250, 250), small, 2, 255, 190))
    assert similarity(drawn, reference) > 0.9, f"the {digit}"


@pytest.mark.parametrize(
    ("page_px", "suffix"),
    [((1240, 1754), ".png"), ((2480, 3508), ".png"), ((1200, 1200), ".png"), ((4032, 3024), ".jpg")],
)
def test_a_small_digit_on_a_large_page_comes_out_as_on_a_small_canvas(
    page_px: tuple[int, int], suffix: str, tmp_path: Path
) -> None:
    """Shrunk whole to 256 px, a page's 100 px digit was some 14 px high: its loops closed up
    (a 6 on a 1200 px canvas came out as a blob and was read as an 8). It is found again in
    the page's own pixels (a phone's JPEG decoded large enough), and comes out as the same
    digit on a canvas of its own size."""
    for digit in range(10):
        page = 255 - draw_large_digit(digit, 100, page_px, offset_px=(page_px[0] // 5, -page_px[1] // 4))
        on_its_own = 255 - draw_large_digit(digit, 100, (200, 200))
        seen = load_digit(save(page, tmp_path / f"page-{digit}{suffix}", quality=90))
        expected = load_digit(save(on_its_own, tmp_path / f"own-{digit}.png"))
        in_memory = load_digit("page", picture=Image.fromarray(page))
        for image in (seen, in_memory):
            assert similarity(image, expected) > 0.97, (
                f"{digit} on {page_px}: {similarity(image, expected):.3f}"
            )


@pytest.mark.parametrize("side", [600, 900, 2000])
def test_a_one_pixel_line_shrinks_to_one_unbroken_stroke(tmp_path: Path, side: int) -> None:
    """A box keeps the most ink-like pixel of a window twice its side: a 1 px line that
    clipped a box's corner covered fewer pixels than the box's side, and came out in pieces
    (a 1 px pen's digits on 600-900 px canvases were misread). Every slope, one stroke."""
    for end in [
        (side - 1, side // 3),
        (side - 1, side - 1),
        (side // 3, side - 1),
        (side * 2 // 3, side - 1),
    ]:
        page = Image.new("L", (side, side), 250)
        ImageDraw.Draw(page).line([(0, 0), end], fill=20, width=1)
        gray = read_grayscale(save(np.asarray(page), tmp_path / "line.png"), every_box_ink_like=True).pixels
        assert max(gray.shape) <= 256
        _, count = label_components(gray < 0.5)
        assert count == 1, f"a line to {end} on {side} px came out in {count} pieces"
    speck = Image.new("L", (side, side), 250)
    factor = -(-side // 256)
    ImageDraw.Draw(speck).rectangle(
        [(300, 300), (300 + factor - 2, 300)], fill=20
    )  # fewer pixels than a side
    ImageDraw.Draw(speck).line([(0, 0), (side - 1, side // 3)], fill=20, width=1)
    gray = read_grayscale(save(np.asarray(speck), tmp_path / "speck.png"), every_box_ink_like=True).pixels
    assert label_components(gray < 0.5)[1] == 1, "a speck stays paper"


def test_marks_beside_a_thick_digit_or_dust_on_a_thin_one_change_nothing(tmp_path: Path) -> None:
    """Only the digit's strokes decide whether the boxes keep their most ink-like pixel: the
    thin ruled lines beside a thick 7, or its dust, once made every box do so (the lines at
    full strength, the dust a field of ink), and the 7 read as a 0. Dust on a thin 7 stays
    paper: a box keeps the pixel that as many pixels as its side are as dark as."""
    seven = [(800, 400), (1200, 400), (900, 1600)]
    for width in (30, 4):
        page = Image.new("L", (2000, 2000), 250)
        ImageDraw.Draw(page).line(seven, fill=20, width=width)
        clean = load_digit(save(np.asarray(page), tmp_path / f"clean{width}.png"))
        ruled, dark_ruled = page.copy(), page.copy()
        for y in range(100, 2000, 120):
            ImageDraw.Draw(ruled).line([(0, y), (2000, y)], fill=120, width=2)
            # Lines keeping between a third and a half of the ink's contrast once averaged:
            # taken for the digit's marks, they turned a thick 7 into a block.
            ImageDraw.Draw(dark_ruled).line([(0, y), (2000, y)], fill=60, width=4)
        ImageDraw.Draw(ruled).line(seven, fill=20, width=width)
        ImageDraw.Draw(dark_ruled).line(seven, fill=20, width=width)
        dusty = np.asarray(page).copy()
        dusty[np.random.default_rng(1).random(dusty.shape) < 0.002] = 0
        # Beside a thin 7, whose boxes do keep their most ink-like pixel, ruled lines come out
        # at full strength too, and are read as strokes: not handled yet.
        marked = [("ruled", np.asarray(ruled)), ("dark-ruled", np.asarray(dark_ruled))] if width > 4 else []
        for name, picture in [*marked, ("dusty", dusty)]:
            score = similarity(load_digit(save(picture, tmp_path / f"{name}{width}.png")), clean)
            assert score > 0.9, f"{name}, {width} px strokes: similarity {score:.2f}"
