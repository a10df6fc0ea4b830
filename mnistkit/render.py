"""Digit grids (samples, a model's mistakes), the digits exported one by one, and how every
picture is saved (`save_picture`: PNG or JPEG by the file's extension, PNG on stdout).
Captions name the classes ("label 7", "pred Ankle boot").

The other pictures are in `plots.py`. numpy and Pillow only, never jax.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from mnistkit.arrays import check_split, class_labels, class_names, dataset_name
from mnistkit.atomic import STDOUT, atomic_write, make_output_folder, taken_back_on_failure
from mnistkit.charts import (
    INK,
    LABEL_PX,
    MUTED,
    TITLE_PX,
    WRONG,
    Canvas,
    text_width,
)
from mnistkit.checkpoint import Checkpoint
from mnistkit.config import listed_setting, scalar_setting
from mnistkit.datasets import DIGIT_NAMES, named_by_digits
from mnistkit.errors import MnistkitError
from mnistkit.evaluation import check_same_classes, distinct_percent, percent_as_given
from mnistkit.terms import setting

SELECTIONS = ("first", "random", "mistakes", "confident-mistakes")
CAPTION_PX = 13
PICTURE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}
JPEG_MAX_SIDE_PX = 65_500  # libjpeg's limit: Pillow fails past it with "broken data stream"


def picture_format(path: str | os.PathLike[str]) -> str:
    """The format a picture path asks for by its extension; `-` (stdout) and a name without
    one get PNG, another image format's extension is refused."""
    suffix = "" if str(path) == STDOUT else Path(path).suffix.lower()
    if suffix and suffix not in PICTURE_FORMATS:
        raise MnistkitError(f"{path}: pictures are written as .png or .jpg, not {suffix}")
    return PICTURE_FORMATS.get(suffix, "PNG")


def save_picture(image: Image.Image, path: str | os.PathLike[str]) -> None:
    """Write `image` atomically as PNG or JPEG by the path's extension. Pillow adds no
    timestamp, so equal pixels give equal bytes."""
    picture_format_name = picture_format(path)
    if picture_format_name == "JPEG" and max(image.size) > JPEG_MAX_SIDE_PX:
        raise MnistkitError(
            f"{path}: a JPEG is at most {JPEG_MAX_SIDE_PX} pixels a side, and this picture is "
            f"{image.size[0]}x{image.size[1]}; write it as .png"
        )
    with atomic_write(path, "wb") as handle:
        if picture_format_name == "JPEG":
            image.convert("RGB").save(handle, format="JPEG", quality=95)
        else:
            image.save(handle, format="PNG", optimize=True)


# Digit grids ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Predictions:
    """The model's answer for each image: the label in the dataset (MNIST: the digit; not the
    model's output index) and its probability."""

    digits: np.ndarray
    confidence: np.ndarray


def predict_digits(checkpoint: Checkpoint, images: np.ndarray) -> Predictions:
    probabilities = checkpoint.predict_probabilities(images)
    best = probabilities.argmax(axis=1)
    return Predictions(
        digits=np.asarray(checkpoint.classes)[best],
        confidence=probabilities[np.arange(len(best)), best],
    )


def model_digits_mask(
    checkpoint: Checkpoint, labels: np.ndarray, model_name: str, data_name: str
) -> np.ndarray:
    """Which images show a digit the model knows; none at all means model and data do not match."""
    known = np.isin(labels, checkpoint.classes)
    if not known.any():
        classes = ",".join(checkpoint.class_names)
        raise MnistkitError(f"{model_name}: the model's classes {classes} do not occur in {data_name}")
    return known


def select_samples(
    labels: np.ndarray,
    count: int,
    select: str = "first",
    eligible: np.ndarray | None = None,
    predictions: Predictions | None = None,
    seed: int = 0,
    min_confidence: float = 0.9,
) -> np.ndarray:
    """Indices of the digits to show.

    first: in data order; random: a seeded sample, shown in data order; mistakes: every
    misclassified digit, the most confidently wrong first; confident-mistakes: only those
    wrong with at least `min_confidence`.
    """
    if select not in SELECTIONS:
        raise MnistkitError(f"{setting('select')}: {select!r} is not one of {', '.join(SELECTIONS)}")
    candidates = np.flatnonzero(np.ones(len(labels), bool) if eligible is None else eligible)
    if select == "first":
        return candidates[:count]
    if select == "random":
        rng = np.random.default_rng(seed)
        return np.sort(rng.choice(candidates, size=min(count, len(candidates)), replace=False))
    if predictions is None:
        raise MnistkitError(
            f"{setting('select', select)} needs a model: give a checkpoint as {setting('model')}"
        )
    wrong = candidates[predictions.digits[candidates] != labels[candidates]]
    if select == "confident-mistakes":
        wrong = wrong[predictions.confidence[wrong] >= min_confidence]
    order = np.argsort(-predictions.confidence[wrong], kind="stable")
    return wrong[order][:count]


@dataclass(frozen=True)
class DigitGrid:
    """The grid picture, for each digit shown the box (left, top, right, bottom) of its pixels,
    and the lines written above them."""

    image: Image.Image
    digit_boxes: list[tuple[int, int, int, int]]
    title: str
    subtitle: str


def digit_grid(
    images: np.ndarray,
    captions: Sequence[Sequence[str]],
    wrong: Sequence[bool],
    title: str,
    subtitle: str = "",
    scale: int = 3,
    columns: int = 8,
) -> DigitGrid:
    """Digits as they are (bright ink on black), `scale` screen pixels per MNIST pixel, each
    captioned below its square; wrong ones framed and captioned in red."""
    pad, margin, line_px = 8, 16, CAPTION_PX + 4
    digit_px = images.shape[1] * scale
    columns = max(1, min(columns, len(images)))
    rows = math.ceil(len(images) / columns)
    lines = max((len(caption) for caption in captions), default=0)
    widest = max((text_width(line, CAPTION_PX) for caption in captions for line in caption), default=0)
    cell_w = max(digit_px, widest) + 2 * pad
    cell_h = digit_px + 6 + lines * line_px + pad
    header_px = 34 + (TITLE_PX if subtitle else 0) + 14
    width = max(columns * cell_w, text_width(title, TITLE_PX), text_width(subtitle, LABEL_PX)) + 2 * margin
    remedy = f"draw fewer or smaller digits ({setting('count')}, {setting('scale')})"
    canvas = Canvas(width, header_px + rows * cell_h + margin, remedy=remedy)
    canvas.text((width / 2, 14), title, TITLE_PX, align="mt")
    canvas.text((width / 2, 14 + TITLE_PX + 10), subtitle, LABEL_PX, fill=MUTED, align="mt")
    grid_left = (width - columns * cell_w) // 2
    boxes = []
    for index, (image, caption, is_wrong) in enumerate(zip(images, captions, wrong, strict=True)):
        row, column = divmod(index, columns)
        left = grid_left + column * cell_w + (cell_w - digit_px) // 2
        top = header_px + row * cell_h
        box = (left, top, left + digit_px, top + digit_px)
        canvas.paste_array(image, box)
        if is_wrong:
            for thickness in (1, 2, 3):
                frame = (
                    left - thickness,
                    top - thickness,
                    left + digit_px + thickness,
                    top + digit_px + thickness,
                )
                canvas.rectangle(frame, outline=WRONG)
        for line_index, line in enumerate(caption):
            y = top + digit_px + 6 + line_index * line_px
            canvas.text(
                (left + digit_px / 2, y), line, CAPTION_PX, fill=WRONG if is_wrong else INK, align="mt"
            )
        boxes.append(box)
    return DigitGrid(canvas.finish(), boxes, title, subtitle)


def sample_captions(
    labels: np.ndarray,
    indices: np.ndarray,
    predictions: Predictions | None,
    names: Sequence[str] = DIGIT_NAMES,
) -> tuple[list[list[str]], list[bool]]:
    """Each image's true class and the model's, by name (`names`, by label)."""
    if predictions is None:
        return [[f"label {names[labels[i]]}"] for i in indices], [False] * len(indices)
    # Rounded as predict and eval round: 0.99996 reads 100.0% here as it reads 1.0000 there.
    captions = [
        [
            f"label {names[labels[i]]}",
            f"pred {names[predictions.digits[i]]} · {predictions.confidence[i]:.1%}",
        ]
        for i in indices
    ]
    return captions, [bool(predictions.digits[i] != labels[i]) for i in indices]


def samples_title(
    select: str,
    shown: int,
    split: str,
    total: int,
    digits: Sequence[str] | None,
    mistakes: int | None,
    min_confidence: float,
    noun: str = "digits",
) -> str:
    """`digits`: the names of the classes shown when not all are; `noun`: what the images are."""
    which = f"{split} {noun}" if not digits else f"{split} {noun} ({', '.join(digits)})"
    if select == "first":
        return f"The first {shown} of {total} {which}"
    if select == "random":
        return f"{shown} random {which} of {total}"
    sure = f" made with at least {percent_as_given(min_confidence)} confidence"
    if shown == 0:
        return f"No mistakes{sure if select == 'confident-mistakes' else ''} on {total} {which}"
    if select == "mistakes" and shown == mistakes:
        return f"All {shown} mistakes on {total} {which}, most confident first"
    if select == "mistakes":
        return f"The {shown} most confident of {mistakes} mistakes on {total} {which}"
    return f"{shown} mistakes{sure}, on {total} {which}"


def _file_word(name: str) -> str:
    """A class name as part of a file name: 'T-shirt/top' -> 'T-shirt-top', 'Ankle boot' -> 'Ankle-boot'."""
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name)


def export_digits(
    images: np.ndarray,
    labels: np.ndarray,
    indices: np.ndarray,
    directory: Path,
    names: Sequence[str] = DIGIT_NAMES,
    written: list[Path] | None = None,
    folders: list[Path] | None = None,
) -> list[Path]:
    """Each image as its own 28x28 grayscale PNG, ready for predict: `{index:05d}-label{digit}.png`,
    or `{index:05d}-label{label}-{name}.png` for classes named otherwise than by their label;
    all of them, or none if one fails. Each file goes into `written` as it is written, and the
    folders made for them into `folders`: a caller's taken_back_on_failure lists, that stand
    or fall with more files (this call's own without them)."""
    written = [] if written is None else written
    folders = [] if folders is None else folders
    paths = [
        directory
        / (
            f"{index:05d}-label{labels[index]}.png"
            if names[labels[index]] == str(labels[index])
            else f"{index:05d}-label{labels[index]}-{_file_word(names[labels[index]])}.png"
        )
        for index in indices
    ]
    with taken_back_on_failure(written, folders):
        folders += make_output_folder(directory)
        for index, path in zip(indices, paths, strict=True):
            # A new file is listed before its write (a Ctrl-C right after it would leave it);
            # one already there, after (a write that fails keeps it as it was).
            new = not path.exists()
            if new:
                written.append(path)
            save_picture(Image.fromarray(images[index]), path)
            if not new:
                written.append(path)
    return paths


@dataclass(frozen=True)
class SampleOptions:
    """What `render-samples` (and `draw_samples`) shows and how: its settings, checked once."""

    split: str = "test"
    select: str = "first"
    count: int = 64
    classes: tuple[str, ...] | None = None  # names or numbers, as training's classes
    scale: int = 3
    columns: int = 8
    seed: int = 0
    min_confidence: float = 0.9

    def __post_init__(self) -> None:
        check_split(self.split)
        if self.classes is not None:  # (3, 8) or "3,8" from Python, as train's classes=
            object.__setattr__(self, "classes", listed_setting("classes", self.classes) or None)
        for name in ("count", "scale", "columns", "seed", "min_confidence"):  # count="16", np.int64(16)
            kind = float if name == "min_confidence" else int
            object.__setattr__(self, name, scalar_setting(name, getattr(self, name), kind))
        for name, value in (("count", self.count), ("scale", self.scale), ("columns", self.columns)):
            if value < 1:
                raise MnistkitError(f"{setting(name)} must be at least 1, got {value}")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise MnistkitError(
                f"{setting('min_confidence')} must lie between 0 and 1, got {self.min_confidence}"
            )


def samples_picture(
    arrays: dict[str, np.ndarray],
    options: SampleOptions,
    checkpoint: Checkpoint | None = None,
    data_name: str = "the data",
    model_name: str = "the model",
) -> tuple[DigitGrid, np.ndarray]:
    """The digit grid `render-samples` draws, and the indices of the digits in it."""
    images, labels = arrays[f"{options.split}_images"], arrays[f"{options.split}_labels"]
    if len(labels) == 0:  # as eval refuses it; a picture of none looked like a model with no mistakes
        raise MnistkitError(f"{data_name}: no {options.split} images to show")
    names = class_names(arrays)
    eligible = np.ones(len(labels), bool)
    if options.classes:
        eligible &= np.isin(labels, class_labels(options.classes, names, dataset_name(arrays)))
        if not eligible.any():
            wanted = ",".join(options.classes)
            raise MnistkitError(f"{data_name}: no {options.split} images of {wanted} to show")
    predictions = None
    if checkpoint is not None:
        check_same_classes(checkpoint, arrays, data_name)
        eligible &= model_digits_mask(checkpoint, labels, model_name, data_name)
        if not eligible.any():  # only --classes can leave none of the model's own
            raise MnistkitError(
                f"{model_name}: {setting('classes')} {','.join(options.classes or ())} names none of "
                f"the model's classes ({', '.join(checkpoint.class_names)})"
            )
        predictions = predict_digits(checkpoint, images)
    indices = select_samples(
        labels, options.count, options.select, eligible, predictions, options.seed, options.min_confidence
    )
    mistakes = None
    if predictions is not None:
        mistakes = int(np.count_nonzero(eligible & (predictions.digits != labels)))
    shown_labels = [int(d) for d in np.unique(labels[eligible])]
    subset = [names[label] for label in shown_labels] if len(shown_labels) < len(np.unique(labels)) else None
    title = samples_title(
        options.select,
        len(indices),
        options.split,
        int(eligible.sum()),
        subset,
        mistakes,
        options.min_confidence,
        "digits" if named_by_digits(range(len(names)), names) else "images",
    )
    if predictions is None:
        subtitle = f"{data_name} · caption: the true label"
    else:
        subtitle = f"{model_name} · caption: true label, prediction · confidence; wrong in red"
    if len(indices) == 0:
        subtitle = model_name
    if len(indices) == 0 and mistakes:  # a threshold past the model's reach (label smoothing caps it)
        wrong = eligible & (predictions.digits != labels)
        surest = distinct_percent(float(predictions.confidence[wrong].max()), options.min_confidence)
        subtitle = f"{model_name} · the most confident of its {mistakes} mistakes: {surest}"
    captions, wrong = sample_captions(labels, indices, predictions, names)
    grid = digit_grid(images[indices], captions, wrong, title, subtitle, options.scale, options.columns)
    return grid, indices
