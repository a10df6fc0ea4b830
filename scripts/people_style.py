"""People-style digit images made from MNIST test digits, and how far a checkpoint's accuracy
on them falls below its accuracy on the same digits as MNIST gives them.

Each digit is enlarged into a pen drawing (crisp strokes, rotated within about 12 degrees,
thinned to a pencil line along the strokes' centre line or thickened to a marker), inked in
black, blue, red or pencil grey on white or cream paper with grain and shading, 30-70% of the
page's height and off-centre, and saved the way people's images arrive, one style each:

  scan         a flatbed scan or screenshot of the page (PNG)
  phone        a phone photo of the page: light falling off, blur, noise, JPEG
  desk         a photo of the sheet lying (rotated) on a darker, textured desk, JPEG
  ruled        a photo of ruled notebook paper (light blue or grey lines), JPEG
  shadow       a photo with a hard shadow across the page, JPEG
  transparent  strokes on a transparent canvas (PNG), as drawing apps export them

The images are made with Pillow and numpy alone, never with mnistkit's preprocessing, so the
measurement is not circular. The drawing functions take their settings as arguments and are
also used by the tests to build exact photos.

    python scripts/people_style.py models/model.safetensors --mnist data/raw --count 3000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter
from script_arguments import positive_int

from mnistkit.checkpoint import Checkpoint, load_checkpoint
from mnistkit.errors import MnistkitError
from mnistkit.idx import read_mnist_dir
from mnistkit.predict import Prediction, predict_paths
from mnistkit.terms import command_line_terms

STYLES = ("scan", "phone", "desk", "ruled", "shadow", "transparent")
PENS = {"black": (25, 25, 35), "blue": (25, 45, 150), "red": (185, 30, 40), "pencil": (105, 105, 110)}
PAPERS = {"white": (246, 246, 243), "cream": (244, 236, 212)}
DESKS = {"walnut": (92, 62, 40), "oak": (140, 100, 62), "slate": (62, 64, 70), "black": (30, 29, 31)}
RULE_COLOURS = {"blue": (150, 185, 230), "grey": (185, 185, 190)}
# Stroke widths as a fraction of the digit's height: a fine pencil to a broad marker.
STROKE_FRACTIONS = (0.035, 0.2)
DIGIT_HEIGHT_FRACTIONS = (0.3, 0.7)
MAX_ROTATION_DEG = 12.0
# Pen strokes have edges about this wide (pixels) before any blur.
EDGE_PX = 1.5


def pen_strokes(
    digit: np.ndarray, height_px: int, angle_deg: float = 0.0, stroke_px: float | None = None
) -> np.ndarray:
    """Ink coverage in [0, 1] of an MNIST digit drawn with a pen, `height_px` tall, rotated
    by `angle_deg` and with strokes about `stroke_px` wide (MNIST's own width when None)."""
    rows = np.flatnonzero(digit.max(axis=1) > 40)
    scale = height_px / max(1, rows[-1] - rows[0] + 1)
    margin = 6
    padded = np.pad(digit, margin)
    size = round(padded.shape[0] * scale)
    enlarged = np.asarray(Image.fromarray(padded).resize((size, size), Image.Resampling.BICUBIC), np.float32)
    # The enlarged digit's edges are ramps about `scale` pixels wide: steepen them into a pen's edge.
    gain = scale / (255.0 * EDGE_PX)
    coverage = np.clip((enlarged - 127.5) * gain + 0.5, 0.0, 1.0)
    if stroke_px is not None:
        radius = round((stroke_px - stroke_width(coverage)) / 2)
        coverage = _grow(coverage, radius)
        if radius < 0:
            # Eroding takes away the parts of a stroke narrower than the cut, where a finer pen
            # still draws a line: the centre line drawn with the pen keeps every stroke whole.
            coverage = np.maximum(coverage, _pen_along(_centre_line(enlarged > 127.5), stroke_px))
    image = Image.fromarray(coverage).rotate(angle_deg, Image.Resampling.BICUBIC, expand=True)
    coverage = np.clip(np.asarray(image), 0.0, 1.0)
    rows, columns = np.flatnonzero(coverage.max(axis=1) > 0.05), np.flatnonzero(coverage.max(axis=0) > 0.05)
    return coverage[rows[0] : rows[-1] + 1, columns[0] : columns[-1] + 1]


def stroke_width(coverage: np.ndarray) -> float:
    """Mean stroke width in pixels: twice the inked area over the outline's length."""
    inked = coverage > 0.5
    outline = np.count_nonzero(inked[1:] != inked[:-1]) + np.count_nonzero(inked[:, 1:] != inked[:, :-1])
    # Counting row and column crossings overstates a curved outline's length by 4/pi.
    return 2.0 * np.count_nonzero(inked) / max(1.0, outline * np.pi / 4)


def _grow(coverage: np.ndarray, radius: int) -> np.ndarray:
    """Dilate (radius > 0) or erode (radius < 0) by alternating 3x3 squares and crosses,
    an octagon close to a round pen tip."""
    pick = np.maximum if radius > 0 else np.minimum
    result = coverage
    for step in range(abs(radius)):
        padded = np.pad(result, 1, mode="edge")
        cross = pick(pick(padded[:-2, 1:-1], padded[2:, 1:-1]), pick(padded[1:-1, :-2], padded[1:-1, 2:]))
        result = pick(result, cross)
        if step % 2 == 0:
            corners = pick(pick(padded[:-2, :-2], padded[:-2, 2:]), pick(padded[2:, :-2], padded[2:, 2:]))
            result = pick(result, corners)
    return result


def _centre_line(mask: np.ndarray) -> np.ndarray:
    """The one-pixel centre line of `mask`'s strokes, its branches and holes kept: Zhang and
    Suen's thinning (1984), which peels boundary pixels whose removal splits nothing."""
    skeleton = np.pad(mask, 1).astype(np.uint8)
    while True:
        changed = False
        for first_pass in (True, False):
            p = skeleton
            # The eight neighbours clockwise from north: P2 ... P9 in the paper's names.
            north, south = p[:-2, 1:-1], p[2:, 1:-1]
            east, west = p[1:-1, 2:], p[1:-1, :-2]
            ring = [north, p[:-2, 2:], east, p[2:, 2:], south, p[2:, :-2], west, p[:-2, :-2]]
            neighbours = sum(n.astype(np.int32) for n in ring)
            crossings = sum((a == 0) & (b == 1) for a, b in zip(ring, ring[1:] + ring[:1], strict=True))
            if first_pass:
                spare = (north * east * south == 0) & (east * south * west == 0)
            else:
                spare = (north * east * west == 0) & (north * south * west == 0)
            peel = (p[1:-1, 1:-1] == 1) & (neighbours >= 2) & (neighbours <= 6) & (crossings == 1) & spare
            if peel.any():
                skeleton[1:-1, 1:-1][peel] = 0
                changed = True
        if not changed:
            return skeleton[1:-1, 1:-1].astype(bool)


def _pen_along(line: np.ndarray, stroke_px: float) -> np.ndarray:
    """Coverage of a round pen `stroke_px` wide drawn along `line`, its edge antialiased."""
    radius = stroke_px / 2
    reach = int(np.ceil(radius + 0.5))
    padded = np.pad(line.astype(np.float32), reach)
    coverage = np.zeros(line.shape, np.float32)
    height, width = line.shape
    for dy in range(-reach, reach + 1):
        for dx in range(-reach, reach + 1):
            weight = np.float32(np.clip(radius + 0.5 - np.hypot(dy, dx), 0.0, 1.0))
            if weight > 0:
                shifted = padded[reach + dy : reach + dy + height, reach + dx : reach + dx + width]
                np.maximum(coverage, shifted * weight, out=coverage)
    return coverage


def sheet(
    size_px: tuple[int, int], paper_rgb: Sequence[int], rng: np.random.Generator, grain: float = 3.0
) -> np.ndarray:
    """Paper as float RGB (height, width, 3) in 0-255: its colour, a slow blotchy unevenness
    and fine grain."""
    width, height = size_px
    blotches = rng.normal(0.0, 1.0, (6, 6)).astype(np.float32)
    blotches = np.asarray(Image.fromarray(blotches).resize((width, height), Image.Resampling.BICUBIC))
    noise = rng.normal(0.0, grain, (height, width)).astype(np.float32)
    return np.asarray(paper_rgb, np.float32) + (1.5 * blotches + noise)[..., None]


def put_ink(
    page: np.ndarray,
    coverage: np.ndarray,
    pen_rgb: Sequence[int],
    corner: tuple[int, int],
    rng: np.random.Generator | None = None,
    opacity: float = 1.0,
) -> np.ndarray:
    """Ink laid on the page with its top-left at `corner` (x, y); with `rng`, the ink takes
    a pencil's grain (uneven coverage)."""
    amount = coverage * np.float32(opacity)
    if rng is not None:
        amount = amount * rng.uniform(0.55, 1.0, amount.shape).astype(np.float32)
    x, y = corner
    height, width = amount.shape
    region = page[y : y + height, x : x + width]
    region += (np.asarray(pen_rgb, np.float32) - region) * amount[..., None]
    return page


def rule_lines(
    page: np.ndarray, spacing_px: int, rgb: Sequence[int], width_px: int = 2, first_px: int = 0
) -> np.ndarray:
    """Ruled notebook lines across the page, `spacing_px` apart."""
    for top in range(first_px, page.shape[0], spacing_px):
        region = page[top : top + width_px]
        region += (np.asarray(rgb, np.float32) - region) * np.float32(0.8)
    return page


def shade(image: np.ndarray, darkening: float, angle_deg: float) -> np.ndarray:
    """Light falling off across the picture: full brightness on one side, `darkening`
    (a fraction) less on the opposite side, along direction `angle_deg`."""
    height, width = image.shape[:2]
    rows, columns = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = np.deg2rad(angle_deg)
    along = columns * np.cos(angle) + rows * np.sin(angle)
    along = (along - along.min()) / max(1e-6, along.max() - along.min())
    return image * (1.0 - darkening * along)[..., None]


def cast_shadow(
    image: np.ndarray, darkening: float, angle_deg: float, offset: float, softness_px: float
) -> np.ndarray:
    """A hard-edged shadow over one side of a straight line through the picture; the line
    runs at `angle_deg` and passes `offset` (a fraction of the diagonal) from the centre."""
    height, width = image.shape[:2]
    rows, columns = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = np.deg2rad(angle_deg)
    across = (columns - width / 2) * -np.sin(angle) + (rows - height / 2) * np.cos(angle)
    across -= offset * np.hypot(width, height)
    inside = np.clip(0.5 + across / max(1.0, 2 * softness_px), 0.0, 1.0)
    return image * (1.0 - darkening * inside)[..., None]


def desk_surface(size_px: tuple[int, int], desk_rgb: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """A desk top as float RGB: its colour with wood-like streaks and grain."""
    width, height = size_px
    streaks = rng.normal(0.0, 1.0, (max(2, height // 6), 4)).astype(np.float32)
    streaks = np.asarray(Image.fromarray(streaks).resize((width, height), Image.Resampling.BICUBIC))
    noise = rng.normal(0.0, 5.0, (height, width)).astype(np.float32)
    return np.asarray(desk_rgb, np.float32) + (12.0 * streaks + noise)[..., None]


def on_desk(
    page: np.ndarray, desk: np.ndarray, area_fraction: float, angle_deg: float, centre: tuple[float, float]
) -> np.ndarray:
    """A photo of the page lying on the desk: the page scaled to cover `area_fraction` of the
    photo, rotated by `angle_deg`, its centre at `centre` (fractions of width and height)."""
    height, width = desk.shape[:2]
    page_height, page_width = page.shape[:2]
    scale = np.sqrt(area_fraction * width * height / (page_width * page_height))
    size = (max(1, round(page_width * scale)), max(1, round(page_height * scale)))
    picture = Image.fromarray(to_uint8(page)).resize(size, Image.Resampling.LANCZOS)
    mask = Image.new("L", size, 255)
    picture = picture.rotate(angle_deg, Image.Resampling.BICUBIC, expand=True)
    mask = mask.rotate(angle_deg, Image.Resampling.BICUBIC, expand=True)
    photo = Image.fromarray(to_uint8(desk))
    corner = (round(centre[0] * width - picture.width / 2), round(centre[1] * height - picture.height / 2))
    photo.paste(picture, corner, mask)
    return np.asarray(photo, np.float32)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Float RGB in 0-255 -> uint8, rounded and clipped."""
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def render(digit: np.ndarray, style: str, rng: np.random.Generator) -> Image.Image:
    """One MNIST digit (28x28 uint8) as a person's image in `style`."""
    page_height = int(rng.integers(160, 360))
    page_width = int(page_height * rng.uniform(0.75, 1.4))
    digit_height = round(page_height * rng.uniform(*DIGIT_HEIGHT_FRACTIONS))
    pen = str(rng.choice(list(PENS)))
    stroke_px = digit_height * rng.uniform(*STROKE_FRACTIONS)
    if pen == "pencil":
        stroke_px = min(stroke_px, digit_height * 0.08)
    coverage = pen_strokes(digit, digit_height, rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG), stroke_px)
    # Off-centre anywhere on the page, but clear of its edges as people leave a digit.
    margin_x, margin_y = page_width // 20 + 2, page_height // 20 + 2
    page_width = max(page_width, coverage.shape[1] + 2 * margin_x + 1)
    page_height = max(page_height, coverage.shape[0] + 2 * margin_y + 1)
    corner = (
        int(rng.integers(margin_x, page_width - coverage.shape[1] - margin_x + 1)),
        int(rng.integers(margin_y, page_height - coverage.shape[0] - margin_y + 1)),
    )
    if style == "transparent":
        rgba = np.zeros((page_height, page_width, 4), np.uint8)
        rgba[..., :3] = PENS[pen]
        x, y = corner
        rgba[y : y + coverage.shape[0], x : x + coverage.shape[1], 3] = to_uint8(coverage * 255)
        return Image.fromarray(rgba)
    page = sheet((page_width, page_height), PAPERS[str(rng.choice(list(PAPERS)))], rng)
    if style == "ruled":
        spacing = round(page_height * rng.uniform(0.09, 0.16))
        colour = RULE_COLOURS[str(rng.choice(list(RULE_COLOURS)))]
        rule_lines(page, spacing, colour, int(rng.integers(1, 3)), int(rng.integers(0, spacing)))
    pencil_grain = rng if pen == "pencil" else None
    put_ink(
        page, coverage, PENS[pen], corner, pencil_grain, rng.uniform(0.8, 1.0) if pen == "pencil" else 1.0
    )
    if style == "scan":
        return Image.fromarray(to_uint8(shade(page, rng.uniform(0.0, 0.08), rng.uniform(0, 360))))
    if style == "desk":
        photo_size = (round(page_width * rng.uniform(1.1, 1.4)), round(page_height * rng.uniform(1.1, 1.4)))
        desk = desk_surface(photo_size, DESKS[str(rng.choice(list(DESKS)))], rng)
        area = rng.uniform(0.5, 0.9)
        page = on_desk(
            page, desk, area, rng.uniform(-8, 8), (rng.uniform(0.42, 0.58), rng.uniform(0.42, 0.58))
        )
    if style == "shadow":
        page = cast_shadow(
            page, rng.uniform(0.25, 0.5), rng.uniform(0, 180), rng.uniform(-0.25, 0.25), rng.uniform(0.5, 4)
        )
    photo = shade(page, rng.uniform(0.05, 0.35), rng.uniform(0, 360))
    photo += rng.normal(0.0, rng.uniform(1.0, 4.0), photo.shape[:2]).astype(np.float32)[..., None]
    image = Image.fromarray(to_uint8(photo)).filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 1.5)))
    return image


def save_style(image: Image.Image, style: str, path_stem: Path, rng: np.random.Generator) -> Path:
    """PNG for scans and transparent canvases, JPEG at a random quality for photos."""
    if style in ("scan", "transparent"):
        path = path_stem.with_suffix(".png")
        image.save(path, compress_level=1)
    else:
        path = path_stem.with_suffix(".jpg")
        image.save(path, quality=int(rng.integers(35, 96)))
    return path


def write_people_style(
    images: np.ndarray, labels: np.ndarray, folder: Path, seed: int, count: int
) -> tuple[list[Path], np.ndarray]:
    """Write `count` people-style images of digits drawn from `images` into `folder`; return
    their paths and labels. The same seed gives the same files, and a larger count adds
    images after the same first ones; styles take turns, so each has a sixth of them."""
    chosen = choose_digits(len(images), seed, count)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, source in enumerate(chosen):
        style = STYLES[index % len(STYLES)]
        rng = np.random.default_rng([seed, index])
        image = render(images[source], style, rng)
        paths.append(save_style(image, style, folder / f"{index:05d}-{style}", rng))
    return paths, labels[chosen]


def choose_digits(available: int, seed: int, count: int) -> np.ndarray:
    """Which test digits (indices) the set holds: a seeded permutation's first `count`."""
    if not 0 < count <= available:
        raise ValueError(f"count must be between 1 and {available}, got {count}")
    return np.random.default_rng(seed).permutation(available)[:count]


def people_style_accuracy(
    checkpoint: Checkpoint, paths: Sequence[Path], labels: np.ndarray
) -> tuple[np.ndarray, int]:
    """Which images `checkpoint` gets right through mnistkit's predict path (reading,
    preprocessing, inference), and how many it could not read (counted as wrong)."""
    correct = np.zeros(len(paths), bool)
    unreadable = 0
    for index, result in enumerate(predict_paths(checkpoint, map(str, paths))):
        if isinstance(result, Prediction):
            correct[index] = result.label == labels[index]
        else:
            unreadable += 1
            print(f"unreadable: {result.error}", file=sys.stderr)
    return correct, unreadable


def paired_gap_points(plain: np.ndarray, people: np.ndarray) -> tuple[float, float]:
    """The gap in points between two right/wrong arrays over the same digits, and its 95%
    interval's half-width. The digits both read alike add nothing but the count: the
    interval comes from those only one of them reads (a paired difference of proportions)."""
    if plain.shape != people.shape:
        raise ValueError(f"{plain.shape} readings against {people.shape}: not the same digits")
    difference = plain.astype(np.float64) - people.astype(np.float64)
    spread = np.sqrt(np.var(difference) / difference.size)
    return 100 * float(np.mean(difference)), 100 * 1.96 * float(spread)


def gap_row(
    checkpoint_path: Path, images: np.ndarray, labels: np.ndarray, paths: Sequence[Path]
) -> list[str]:
    """One table row: how many digits it reads, its accuracy on them as MNIST gives them and as
    people's images (the paths, made from the same digits), the gap in points with its 95%
    interval, and the accuracy in each style. A model of some digits (`3v8`) reads those."""
    checkpoint = load_checkpoint(checkpoint_path)
    known = np.isin(labels, checkpoint.classes)
    if not known.any():
        raise MnistkitError(f"{checkpoint_path}: none of the digits drawn is one of its classes")
    classes = np.asarray(checkpoint.classes)
    plain = classes[checkpoint.predict_probabilities(images[known]).argmax(axis=1)] == labels[known]
    people, unreadable = people_style_accuracy(checkpoint, np.asarray(paths)[known], labels[known])
    if unreadable:
        print(f"{checkpoint_path}: {unreadable} images unreadable (counted as wrong)", file=sys.stderr)
    styles = np.resize(np.asarray(STYLES), len(paths))[known]  # the styles take turns
    by_style = [f"{people[styles == style].mean():.1%}" if style in styles else "-" for style in STYLES]
    gap_points, half_width = paired_gap_points(plain, people)
    return [
        str(checkpoint_path),
        str(plain.size),
        f"{plain.mean():.2%}",
        f"{people.mean():.2%}",
        f"{gap_points:.2f} ± {half_width:.2f}",
        *by_style,
    ]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Accuracy on MNIST test digits as MNIST gives them and as people's images.",
        epilog="example: python scripts/people_style.py models/*.safetensors --mnist data/raw --count 3000",
    )
    parser.add_argument("checkpoints", nargs="+", type=Path, metavar="CKPT")
    parser.add_argument("--mnist", type=Path, required=True, help="folder of the four MNIST .gz files")
    parser.add_argument(
        "--count", type=positive_int, default=3000, help="test digits to render (default 3000)"
    )
    parser.add_argument("--seed", type=int, default=0, help="which digits, and how they look (default 0)")
    parser.add_argument("--keep", type=Path, help="write the images into this folder and keep them")
    options = parser.parse_args(argv)

    try:
        with command_line_terms():  # a shell's hints: `mnistkit fetch`, not mnistkit.download()
            arrays = read_mnist_dir(options.mnist)
            for path in options.checkpoints:  # each is checked before minutes of drawing
                load_checkpoint(path)
    except MnistkitError as error:
        raise SystemExit(f"Error: {error}") from None
    if options.count > len(arrays["test_images"]):
        parser.error(f"--count: at most {len(arrays['test_images'])} test digits")
    chosen = choose_digits(len(arrays["test_images"]), options.seed, options.count)
    images, labels = arrays["test_images"][chosen], arrays["test_labels"][chosen]
    with tempfile.TemporaryDirectory() as temporary:
        folder = options.keep or Path(temporary)
        print(f"rendering {options.count} people-style images into {folder} ...", file=sys.stderr)
        paths, _ = write_people_style(
            arrays["test_images"], arrays["test_labels"], folder, options.seed, options.count
        )
        try:
            rows = [gap_row(path, images, labels, paths) for path in options.checkpoints]
        except MnistkitError as error:
            raise SystemExit(f"Error: {error}") from None
    header = ["checkpoint", "digits", "MNIST", "people", "gap", *STYLES]
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    print(f"MNIST test digits (seed {options.seed}) as people's images; gap in points, ± its 95% interval")
    for row in [header, *rows]:
        cells = [row[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        print("  ".join(cells))


if __name__ == "__main__":
    main()
