"""Image loading and MNIST-style preprocessing on digits the tests draw and save themselves."""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import draw_large_digit
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from mnistkit.checkpoint import load_checkpoint
from mnistkit.errors import MnistkitError
from mnistkit.images import MAX_IMAGE_PIXELS, load_digit, preprocess_digit


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


def test_preprocessing_is_close_to_the_clean_image_pixel_for_pixel(tmp_path: Path) -> None:
    clean = load_digit(VARIANTS["clean"](4, tmp_path)).astype(float)
    for variant in ("moved", "transparent", "shaded", "exif-rotated"):
        varied = load_digit(VARIANTS[variant](4, tmp_path)).astype(float)
        assert np.abs(varied - clean).mean() < 20, variant


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
    "not an image": (lambda p: (p / "n.png").write_text("hello") and p / "n.png", "not an image"),
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
        expected = rf"d.png: image is {width}x{height} pixels; --no-preprocess needs 28x28"
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
