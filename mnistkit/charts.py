"""Proper charts from Pillow alone: axes with nice ticks, titles, legends, lines, dots, colour bars.

No matplotlib: Pillow is already needed for images, and its built-in scalable font makes
every picture byte-identical on every machine. Charts with lines and dots are drawn at
twice their size and downsampled, which smooths them; pixel pictures (digits, heat maps)
are drawn at their size so each pixel stays exact. Nothing here knows about MNIST.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mnistkit.errors import PictureTooLarge

RGB = tuple[int, int, int]
# A picture larger than this (600 MB as RGB) is refused before it is made; the whole test set
# at the default scale is 120 million.
MAX_PICTURE_PIXELS = 200_000_000
WHITE: RGB = (255, 255, 255)
INK: RGB = (33, 33, 33)
MUTED: RGB = (105, 105, 105)
GRID: RGB = (226, 226, 226)
WRONG: RGB = (204, 32, 39)

# One colour per digit, the same in every picture (matplotlib's tab10).
DIGIT_COLOURS: tuple[RGB, ...] = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
)
# Sequential white -> dark blue (ColorBrewer Blues) and diverging blue -> white -> red (RdBu).
BLUES: tuple[RGB, ...] = (
    (247, 251, 255),
    (222, 235, 247),
    (198, 219, 239),
    (158, 202, 225),
    (107, 174, 214),
    (66, 146, 198),
    (33, 113, 181),
    (8, 81, 156),
    (8, 48, 107),
)
BLUE_WHITE_RED: tuple[RGB, ...] = (
    (33, 102, 172),
    (67, 147, 195),
    (146, 197, 222),
    (209, 229, 240),
    (247, 247, 247),
    (253, 219, 199),
    (244, 165, 130),
    (214, 96, 77),
    (178, 24, 43),
)

TITLE_PX = 20
LABEL_PX = 15
TICK_PX = 13
SCIENTIFIC_FROM = 1e5  # tick labels from this magnitude on: 2.5e9


@functools.cache
def font(size_px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's built-in Aileron at `size_px`; its small bitmap font where FreeType is missing."""
    try:
        return ImageFont.load_default(size=size_px)
    except (ImportError, OSError):
        return ImageFont.load_default()


def text_width(text: str, size_px: int) -> int:
    left, _, right, _ = font(size_px).getbbox(text)
    return math.ceil(right - left)


def colour_ramp(values: np.ndarray, anchors: Sequence[RGB]) -> np.ndarray:
    """Values in [0, 1] -> uint8 RGB, interpolating linearly between evenly spaced anchors."""
    values = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
    stops = np.linspace(0.0, 1.0, len(anchors))
    channels = [np.interp(values, stops, [anchor[c] for anchor in anchors]) for c in range(3)]
    return np.rint(np.stack(channels, axis=-1)).astype(np.uint8)


def blend(colour: RGB, other: RGB, amount: float) -> RGB:
    """`colour` moved `amount` of the way towards `other`."""
    return tuple(round(a + (b - a) * amount) for a, b in zip(colour, other, strict=True))


class Canvas:
    """A white RGB image addressed in final pixels, drawn `supersample` times larger.
    `remedy` says which settings make a picture too large smaller, for the refusal."""

    def __init__(self, width_px: int, height_px: int, supersample: int = 1, remedy: str = "") -> None:
        if width_px * height_px * supersample**2 > MAX_PICTURE_PIXELS:
            raise PictureTooLarge(
                f"the picture would be {int(width_px)}x{int(height_px)} pixels, over "
                f"{MAX_PICTURE_PIXELS // 1_000_000} megapixels" + (f"; {remedy}" if remedy else "")
            )
        self.size = (int(width_px), int(height_px))
        self.supersample = supersample
        self.image = Image.new("RGB", (self.size[0] * supersample, self.size[1] * supersample), WHITE)
        self.draw = ImageDraw.Draw(self.image)

    def _px(self, value: float) -> int:
        return round(value * self.supersample)

    def text(
        self,
        xy: tuple[float, float],
        text: str,
        size_px: int,
        fill: RGB = INK,
        align: str = "mm",
        vertical: bool = False,
    ) -> None:
        """Draw `text` placed by `align`: horizontal l/m/r then vertical t/m/b, like Pillow anchors.

        Placement comes from the text's own bounding box, so the bitmap fallback font, which
        has no anchors, lands in the same place.
        """
        if not text:
            return
        face = font(size_px * self.supersample)
        left, top, right, bottom = face.getbbox(text)
        width, height = right - left, bottom - top
        stamp = Image.new("L", (int(width) + 2, int(height) + 2), 0)
        ImageDraw.Draw(stamp).text((1 - left, 1 - top), text, font=face, fill=255)
        if vertical:
            stamp = stamp.rotate(90, expand=True)
        x, y = self._px(xy[0]), self._px(xy[1])
        x -= {"l": 0, "m": stamp.width // 2, "r": stamp.width}[align[0]]
        y -= {"t": 0, "m": stamp.height // 2, "b": stamp.height}[align[1]]
        self.image.paste(Image.new("RGB", stamp.size, fill), (x, y), stamp)

    def line(self, points: Sequence[tuple[float, float]], fill: RGB, width_px: float = 1) -> None:
        scaled = [(self._px(x), self._px(y)) for x, y in points]
        self.draw.line(scaled, fill=fill, width=max(1, self._px(width_px)), joint="curve")

    def rectangle(
        self, box: tuple[float, float, float, float], fill: RGB | None = None, outline: RGB | None = None
    ) -> None:
        left, top, right, bottom = (self._px(v) for v in box)
        self.draw.rectangle((left, top, right - 1, bottom - 1), fill=fill, outline=outline)

    def dot(self, xy: tuple[float, float], radius_px: float, fill: RGB, outline: RGB | None = None) -> None:
        x, y, r = self._px(xy[0]), self._px(xy[1]), radius_px * self.supersample
        self.draw.ellipse((x - r, y - r, x + r, y + r), fill=fill, outline=outline, width=self.supersample)

    def paste_array(self, pixels: np.ndarray, box: tuple[float, float, float, float]) -> None:
        """Stretch an RGB or gray uint8 array over `box` with nearest-neighbour sampling."""
        left, top, right, bottom = (self._px(v) for v in box)
        picture = Image.fromarray(pixels).convert("RGB")
        self.image.paste(picture.resize((right - left, bottom - top), Image.Resampling.NEAREST), (left, top))

    def finish(self) -> Image.Image:
        if self.supersample == 1:
            return self.image
        return self.image.resize(self.size, Image.Resampling.LANCZOS)


def nice_ticks(low: float, high: float, max_ticks: int = 6, integer: bool = False) -> list[float]:
    """Round ticks (1, 2, 2.5 or 5 times a power of ten) from at or below `low` to at or above `high`.
    A range narrower than floats can divide into ticks (2.302585092994046 to
    2.3025850929940463, the loss of a model that learns nothing) is drawn as one value."""
    size = max(abs(low), abs(high))
    if not high - low > size * 1e-9 + 1e-200:
        pad = 1.0 if integer or size < 1e-200 else size * 0.05
        low, high = low - pad, high + pad
    raw_step = (high - low) / max(max_ticks - 1, 1)
    magnitude = 10.0 ** math.floor(math.log10(raw_step))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw_step * (1 - 1e-9))
    if integer:
        step = max(1.0, float(round(step)))
    first = math.floor(low / step + 1e-9) * step
    count = math.ceil((high - first) / step - 1e-9) + 1
    decimals = max(10, 10 - math.floor(math.log10(step)))  # float noise off, a tiny step kept
    return [round(first + i * step, decimals) + 0.0 for i in range(count)]


def tick_labels(ticks: Sequence[float]) -> list[str]:
    """The fewest decimals that tell every tick apart; from 100,000 on, as 2.5e9, which keeps
    a diverged run's loss inside the margin that its axis title shares."""
    largest = max((abs(value) for value in ticks), default=0.0)
    if largest >= SCIENTIFIC_FROM:
        for decimals in range(7):
            labels = [_scientific(value, decimals) for value in ticks]
            if all(
                abs(float(label) - value) <= 1e-9 * largest
                for label, value in zip(labels, ticks, strict=True)
            ):
                return labels
    for decimals in range(7):
        labels = [f"{value:.{decimals}f}" for value in ticks]
        if all(abs(float(label) - value) < 1e-9 for label, value in zip(labels, ticks, strict=True)):
            return [label.replace("-0", "0") if float(label) == 0 else label for label in labels]
    return [f"{value:g}" for value in ticks]


def _scientific(value: float, decimals: int) -> str:
    """2.5e9 for 2.5e+09 (and 0 for 0)."""
    if value == 0:
        return "0"
    mantissa, exponent = f"{value:.{decimals}e}".split("e")
    return f"{mantissa}e{int(exponent)}"


@dataclass(frozen=True)
class Axes:
    """A plot box on a canvas (final pixels), the data ranges it shows and the ticks inside them."""

    box: tuple[float, float, float, float]
    x_range: tuple[float, float]
    y_range: tuple[float, float]
    x_ticks: Sequence[float]
    y_ticks: Sequence[float]

    @classmethod
    def spanning_ticks(
        cls, box: tuple[float, float, float, float], x_ticks: Sequence[float], y_ticks: Sequence[float]
    ) -> Axes:
        """Axes whose ranges end at the first and last tick, as line charts have them."""
        return cls(box, (x_ticks[0], x_ticks[-1]), (y_ticks[0], y_ticks[-1]), x_ticks, y_ticks)

    @classmethod
    def around(cls, box: tuple[float, float, float, float], points: np.ndarray) -> Axes:
        """Axes just around (N, 2) points, with the round ticks that fall inside, as in scatter plots."""
        ranges = [_padded_span(points[:, column]) for column in (0, 1)]
        ticks = [[t for t in nice_ticks(low, high) if low <= t <= high] for low, high in ranges]
        return cls(box, ranges[0], ranges[1], ticks[0], ticks[1])

    def to_px(self, x: float, y: float) -> tuple[float, float]:
        left, top, right, bottom = self.box
        (x0, x1), (y0, y1) = self.x_range, self.y_range
        return left + (x - x0) / (x1 - x0) * (right - left), bottom - (y - y0) / (y1 - y0) * (bottom - top)


def draw_axes(canvas: Canvas, axes: Axes, title: str, x_title: str, y_title: str, grid: bool = True) -> None:
    """Frame, grid lines, ticks with labels, axis titles and the panel title."""
    left, top, right, bottom = axes.box
    for value, label in zip(axes.x_ticks, tick_labels(axes.x_ticks), strict=True):
        x, _ = axes.to_px(value, axes.y_range[0])
        if grid:
            canvas.line([(x, top), (x, bottom)], GRID)
        canvas.line([(x, bottom), (x, bottom + 5)], INK)
        canvas.text((x, bottom + 8), label, TICK_PX, align="mt")
    label_width = 0
    for value, label in zip(axes.y_ticks, tick_labels(axes.y_ticks), strict=True):
        _, y = axes.to_px(axes.x_range[0], value)
        if grid:
            canvas.line([(left, y), (right, y)], GRID)
        canvas.line([(left - 5, y), (left, y)], INK)
        canvas.text((left - 8, y), label, TICK_PX, align="rm")
        label_width = max(label_width, text_width(label, TICK_PX))
    canvas.rectangle((left, top, right + 1, bottom + 1), outline=INK)
    canvas.text(((left + right) / 2, bottom + 14 + TICK_PX), x_title, LABEL_PX, align="mt")
    canvas.text((left - 16 - label_width, (top + bottom) / 2), y_title, LABEL_PX, align="rm", vertical=True)
    canvas.text(((left + right) / 2, top - 8), title, LABEL_PX + 1, align="mb")


@dataclass(frozen=True)
class Series:
    """One line: y is None where a value was not measured, which leaves a gap."""

    label: str
    x: Sequence[float]
    y: Sequence[float | None]
    colour: RGB


def draw_series(canvas: Canvas, axes: Axes, series: Series, markers: bool) -> None:
    runs: list[list[tuple[float, float]]] = [[]]
    for x, y in zip(series.x, series.y, strict=True):
        if y is None:
            runs.append([])
        else:
            runs[-1].append(axes.to_px(x, y))
    for run in runs:
        if len(run) > 1:
            canvas.line(run, series.colour, width_px=2)
        if markers or len(run) == 1:
            for point in run:
                canvas.dot(point, 3, series.colour)


def data_ticks(values: Sequence[float | None], integer: bool = False) -> list[float]:
    present = [v for v in values if v is not None]
    return nice_ticks(min(present), max(present), integer=integer)


def legend_row(canvas: Canvas, centre: tuple[float, float], entries: Sequence[tuple[str, RGB]]) -> None:
    """A horizontal legend: a short line in each colour, then its label."""
    sample_px, gap_px, spacing_px = 26, 6, 24
    widths = [sample_px + gap_px + text_width(label, LABEL_PX) for label, _ in entries]
    x = centre[0] - (sum(widths) + spacing_px * (len(entries) - 1)) / 2
    for (label, colour), width in zip(entries, widths, strict=True):
        canvas.line([(x, centre[1]), (x + sample_px, centre[1])], colour, width_px=3)
        canvas.text((x + sample_px + gap_px, centre[1]), label, LABEL_PX, align="lm")
        x += width + spacing_px


LEGEND_ROW_PX = LABEL_PX + 10


def legend_columns(entries: Sequence[tuple[str, RGB]], height_px: float) -> tuple[int, int]:
    """How many columns a vertical legend of `entries` takes within `height_px` (its title's
    row included), and how wide each is: EMNIST's 47 classes do not fit in one."""
    rows = max(1, int((height_px - (LABEL_PX + 12)) // LEGEND_ROW_PX))
    width = 18 + max((text_width(label, LABEL_PX) for label, _ in entries), default=0) + 16
    return math.ceil(len(entries) / rows), width


def legend_column(
    canvas: Canvas,
    top_left: tuple[float, float],
    entries: Sequence[tuple[str, RGB]],
    title: str,
    height_px: float,
) -> None:
    """A vertical legend of coloured dots under its title, for scatter plots; in more columns
    side by side where one would run past `height_px`."""
    x, top = top_left
    canvas.text((x, top), title, LABEL_PX, align="lt")
    columns, width = legend_columns(entries, height_px)
    per_column = math.ceil(len(entries) / columns) if entries else 0
    for index, (label, colour) in enumerate(entries):
        column, row = divmod(index, per_column)
        left, y = x + column * width, top + LABEL_PX + 12 + row * LEGEND_ROW_PX
        canvas.dot((left + 6, y + LABEL_PX / 2), 5, colour, outline=INK)
        canvas.text((left + 18, y + LABEL_PX / 2), label, LABEL_PX, align="lm")


def line_charts(
    panels: Sequence[tuple[str, str, str, Sequence[Series]]], title: str, integer_x: bool = True
) -> Image.Image:
    """Panels side by side, each (title, x title, y title, series), under one title and one legend.

    The legend sits above the panels, so it never hides a line.
    """
    panel_w, panel_h = 500, 380
    margin_left, margin_right, margin_top, margin_bottom = 82, 24, 40, 60
    header_px = 76
    canvas = Canvas(panel_w * len(panels), header_px + panel_h, supersample=2)
    canvas.text((canvas.size[0] / 2, 14), title, TITLE_PX, align="mt")
    legend: dict[str, RGB] = {}
    for index, (panel_title, x_title, y_title, series_list) in enumerate(panels):
        x_values = [x for series in series_list for x in series.x]
        y_values = [y for series in series_list for y in series.y]
        origin = panel_w * index
        box = (
            origin + margin_left,
            header_px + margin_top,
            origin + panel_w - margin_right,
            header_px + panel_h - margin_bottom,
        )
        axes = Axes.spanning_ticks(box, data_ticks(x_values, integer=integer_x), data_ticks(y_values))
        draw_axes(canvas, axes, panel_title, x_title, y_title)
        markers = len(set(x_values)) <= 30
        for series in series_list:
            draw_series(canvas, axes, series, markers)
            legend.setdefault(series.label, series.colour)
    legend_row(canvas, (canvas.size[0] / 2, 14 + TITLE_PX + 22), list(legend.items()))
    return canvas.finish()


def scatter_chart(
    points: np.ndarray,
    point_colours: Sequence[RGB],
    legend: Sequence[tuple[str, RGB]],
    title: str,
    x_title: str,
    y_title: str,
    background: Callable[[np.ndarray], np.ndarray] | None = None,
    legend_title: str = "digit",
) -> Image.Image:
    """Dots at `points` (N, 2) in data units, in order, so later dots lie on top.

    `background` maps (M, 2) data coordinates to (M, 3) uint8 colours; it is sampled at
    every drawn pixel of the plot box, so region borders come out smooth.
    """
    box = (92, 70, 680, 610)
    legend_height = 680 - 20 - box[1]
    columns, column_px = legend_columns(legend, legend_height)
    canvas = Canvas(max(860, box[2] + 28 + columns * column_px + 12), 680, supersample=2)
    axes = Axes.around(box, points)
    if background is not None:
        left, top, right, bottom = box
        (x0, x1), (y0, y1) = axes.x_range, axes.y_range
        columns, rows = (
            round((end - start) * canvas.supersample) for start, end in ((left, right), (top, bottom))
        )
        xs = x0 + (np.arange(columns) + 0.5) / columns * (x1 - x0)
        ys = y1 - (np.arange(rows) + 0.5) / rows * (y1 - y0)
        grid = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
        canvas.paste_array(background(grid).reshape(rows, columns, 3), box)
    draw_axes(canvas, axes, "", x_title, y_title, grid=background is None)
    for (x, y), colour in zip(points, point_colours, strict=True):
        canvas.dot(axes.to_px(float(x), float(y)), 2.6, colour, outline=blend(colour, INK, 0.5))
    canvas.rectangle((box[0], box[1], box[2] + 1, box[3] + 1), outline=INK)
    canvas.text((canvas.size[0] / 2, 16), title, TITLE_PX, align="mt")
    legend_column(canvas, (box[2] + 28, box[1]), legend, title=legend_title, height_px=legend_height)
    return canvas.finish()


def _padded_span(values: np.ndarray) -> tuple[float, float]:
    """The values' range, 3% wider each way; around a single value (one point), a unit wide."""
    low, high = float(np.min(values)), float(np.max(values))
    pad = (high - low) * 0.03 if high > low else max(abs(low) * 0.05, 0.5)
    return low - pad, high + pad


def colour_bar(
    canvas: Canvas,
    box: tuple[float, float, float, float],
    anchors: Sequence[RGB],
    ticks: Sequence[tuple[float, str]],
    title: str,
) -> None:
    """A gradient along the box's long side; ticks are (position 0..1, label), title beside it."""
    left, top, right, bottom = box
    vertical = bottom - top > right - left
    length = round(bottom - top if vertical else right - left)
    gradient = colour_ramp(np.linspace(0.0, 1.0, length), anchors)
    pixels = gradient[::-1, None, :] if vertical else gradient[None, :, :]
    canvas.paste_array(pixels, box)
    canvas.rectangle((left, top, right + 1, bottom + 1), outline=INK)
    for position, label in ticks:
        if vertical:
            y = bottom - position * (bottom - top)
            canvas.line([(right, y), (right + 5, y)], INK)
            canvas.text((right + 8, y), label, TICK_PX, align="lm")
        else:
            x = left + position * (right - left)
            canvas.line([(x, bottom), (x, bottom + 5)], INK)
            canvas.text((x, bottom + 8), label, TICK_PX, align="mt")
    if vertical:
        label_width = max((text_width(label, TICK_PX) for _, label in ticks), default=0)
        title_x = right + 16 + label_width
        canvas.text((title_x, (top + bottom) / 2), title, LABEL_PX, align="lm", vertical=True)
    else:
        canvas.text(((left + right) / 2, bottom + 14 + TICK_PX), title, LABEL_PX, align="mt")
