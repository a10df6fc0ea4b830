"""The pipeline's pictures, made from the files it writes: digit grids (samples and mistakes),
the confusion heat map, training curves, the 2-D embedding with decision regions, and the
weight templates of a linear model.

Each picture is a function returning a Pillow image; `save_png` writes it atomically and
byte-for-byte the same for the same inputs. numpy and Pillow only, never jax.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mnistkit.atomic import atomic_write, make_output_folder
from mnistkit.charts import (
    BLUE_WHITE_RED,
    BLUES,
    DIGIT_COLOURS,
    INK,
    LABEL_PX,
    MUTED,
    TICK_PX,
    TITLE_PX,
    WHITE,
    WRONG,
    Canvas,
    Series,
    blend,
    colour_bar,
    colour_ramp,
    line_charts,
    scatter_chart,
    text_width,
)
from mnistkit.checkpoint import Checkpoint
from mnistkit.errors import MnistkitError
from mnistkit.evaluate import evaluate_arrays
from mnistkit.inference import _activation, dense_stack, normalize

SELECTIONS = ("first", "random", "mistakes", "confident-mistakes")
CAPTION_PX = 13
HISTORY_METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss", "test_accuracy")
SPLIT_COLOURS = {"train": DIGIT_COLOURS[0], "val": DIGIT_COLOURS[1], "test": DIGIT_COLOURS[2]}
SPLIT_NAMES = {"train": "train", "val": "validation", "test": "test"}


def save_png(image: Image.Image, path: str | os.PathLike[str]) -> None:
    """Write `image` as PNG atomically; Pillow adds no timestamp, so equal pixels give equal bytes."""
    with atomic_write(path, "wb") as handle:
        image.save(handle, format="PNG", optimize=True)


# Digit grids ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Predictions:
    """The model's answer for each image: the digit (not the class index) and its probability."""

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
        classes = ",".join(map(str, checkpoint.classes))
        raise MnistkitError(f"{model_name}: the model's digits {classes} do not occur in {data_name}")
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
        raise MnistkitError(f"--select: {select!r} is not one of {', '.join(SELECTIONS)}")
    candidates = np.flatnonzero(np.ones(len(labels), bool) if eligible is None else eligible)
    if select == "first":
        return candidates[:count]
    if select == "random":
        rng = np.random.default_rng(seed)
        return np.sort(rng.choice(candidates, size=min(count, len(candidates)), replace=False))
    if predictions is None:
        raise MnistkitError(f"--select {select} needs a model (--model CKPT)")
    wrong = candidates[predictions.digits[candidates] != labels[candidates]]
    if select == "confident-mistakes":
        wrong = wrong[predictions.confidence[wrong] >= min_confidence]
    order = np.argsort(-predictions.confidence[wrong], kind="stable")
    return wrong[order][:count]


@dataclass(frozen=True)
class DigitGrid:
    """The grid picture and, for each digit shown, the box (left, top, right, bottom) of its pixels."""

    image: Image.Image
    digit_boxes: list[tuple[int, int, int, int]]


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
    canvas = Canvas(width, header_px + rows * cell_h + margin)
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
    return DigitGrid(canvas.finish(), boxes)


def floor_percent(probability: float) -> str:
    """One decimal, rounded down, so a 0.9996 confidence reads 99.9% and only certainty reads 100%."""
    return f"{math.floor(float(probability) * 1000 + 1e-9) / 10:.1f}%"


def sample_captions(
    labels: np.ndarray, indices: np.ndarray, predictions: Predictions | None
) -> tuple[list[list[str]], list[bool]]:
    if predictions is None:
        return [[f"label {labels[i]}"] for i in indices], [False] * len(indices)
    captions = [
        [f"label {labels[i]}", f"pred {predictions.digits[i]} · {floor_percent(predictions.confidence[i])}"]
        for i in indices
    ]
    return captions, [bool(predictions.digits[i] != labels[i]) for i in indices]


def samples_title(
    select: str,
    shown: int,
    split: str,
    total: int,
    digits: Sequence[int] | None,
    mistakes: int | None,
    min_confidence: float,
) -> str:
    which = f"{split} digits" if not digits else f"{split} digits {', '.join(map(str, digits))}"
    if select == "first":
        return f"The first {shown} of {total} {which}"
    if select == "random":
        return f"{shown} random {which} of {total}"
    if shown == 0:
        sure = (
            f" made with at least {min_confidence:.0%} confidence" if select == "confident-mistakes" else ""
        )
        return f"No mistakes{sure} on {total} {which}"
    if select == "mistakes" and shown == mistakes:
        return f"All {shown} mistakes on {total} {which}, most confident first"
    if select == "mistakes":
        return f"The {shown} most confident of {mistakes} mistakes on {total} {which}"
    return f"{shown} mistakes made with at least {min_confidence:.0%} confidence, on {total} {which}"


def export_digits(images: np.ndarray, labels: np.ndarray, indices: np.ndarray, directory: Path) -> list[Path]:
    """Each digit as its own 28x28 grayscale PNG, `{index:05d}-label{digit}.png`, ready for predict."""
    make_output_folder(directory)
    paths = [directory / f"{index:05d}-label{labels[index]}.png" for index in indices]
    for index, path in zip(indices, paths, strict=True):
        save_png(Image.fromarray(images[index]), path)
    return paths


@dataclass(frozen=True)
class SampleOptions:
    """What `render-samples` shows and how: its options, checked once."""

    split: str = "test"
    select: str = "first"
    count: int = 64
    digits: tuple[int, ...] | None = None
    scale: int = 3
    columns: int = 8
    seed: int = 0
    min_confidence: float = 0.9

    def __post_init__(self) -> None:
        if self.digits is not None and any(d not in range(10) for d in self.digits):
            raise MnistkitError(f"--digits: expected digits 0-9, got {','.join(map(str, self.digits))}")
        for name, value in (("count", self.count), ("scale", self.scale), ("columns", self.columns)):
            if value < 1:
                raise MnistkitError(f"--{name} must be at least 1, got {value}")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise MnistkitError(f"--min-confidence must lie between 0 and 1, got {self.min_confidence}")


def samples_picture(
    arrays: dict[str, np.ndarray],
    options: SampleOptions,
    checkpoint: Checkpoint | None = None,
    data_name: str = "the data",
    model_name: str = "the model",
) -> tuple[DigitGrid, np.ndarray]:
    """The digit grid `render-samples` draws, and the indices of the digits in it."""
    images, labels = arrays[f"{options.split}_images"], arrays[f"{options.split}_labels"]
    eligible = np.ones(len(labels), bool)
    if options.digits:
        eligible &= np.isin(labels, options.digits)
        if not eligible.any():
            wanted = ",".join(map(str, options.digits))
            raise MnistkitError(f"{data_name}: no {options.split} digits {wanted} to show")
    predictions = None
    if checkpoint is not None:
        eligible &= model_digits_mask(checkpoint, labels, model_name, data_name)
        if not eligible.any():
            raise MnistkitError(f"{model_name}: the model knows none of the digits asked for")
        predictions = predict_digits(checkpoint, images)
    indices = select_samples(
        labels, options.count, options.select, eligible, predictions, options.seed, options.min_confidence
    )
    mistakes = None
    if predictions is not None:
        mistakes = int(np.count_nonzero(eligible & (predictions.digits != labels)))
    shown_digits = [int(d) for d in np.unique(labels[eligible])]
    subset = shown_digits if len(shown_digits) < len(np.unique(labels)) else None
    title = samples_title(
        options.select,
        len(indices),
        options.split,
        int(eligible.sum()),
        subset,
        mistakes,
        options.min_confidence,
    )
    if predictions is None:
        subtitle = f"{data_name} · caption: the true label"
    else:
        subtitle = f"{model_name} · caption: true label, prediction · confidence; wrong in red"
    if len(indices) == 0:
        subtitle = model_name
    captions, wrong = sample_captions(labels, indices, predictions)
    grid = digit_grid(images[indices], captions, wrong, title, subtitle, options.scale, options.columns)
    return grid, indices


# Confusion matrix ----------------------------------------------------------------------


@dataclass(frozen=True)
class Confusion:
    """Counts with rows = true class and columns = predicted class, in `classes` order."""

    classes: list[int]
    matrix: np.ndarray
    split: str = ""

    @property
    def accuracy(self) -> float:
        total = self.matrix.sum()
        return float(np.trace(self.matrix) / total) if total else 0.0


def confusion_from_model(
    checkpoint: Checkpoint,
    images: np.ndarray,
    labels: np.ndarray,
    split: str,
    model_name: str,
    data_name: str,
) -> Confusion:
    """The confusion matrix eval computes, over the images showing one of the model's digits."""
    model_digits_mask(checkpoint, labels, model_name, data_name)
    evaluation = evaluate_arrays(checkpoint, images, labels)
    return Confusion(evaluation.classes, evaluation.confusion_matrix, split)


def parse_confusion(text: str, source: str) -> Confusion:
    """The `classes` and `confusion_matrix` of eval's JSON, checked."""
    try:
        metrics = json.loads(text)
    except ValueError as error:
        raise MnistkitError(f"{source}: not a metrics JSON file ({error})") from None
    if not isinstance(metrics, dict) or "confusion_matrix" not in metrics or "classes" not in metrics:
        raise MnistkitError(
            f"{source}: no 'classes' and 'confusion_matrix' (expected the JSON of eval --json)"
        )
    classes, rows = metrics["classes"], metrics["confusion_matrix"]
    if not (
        isinstance(classes, list)
        and classes
        and all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 9 for c in classes)
        and len(set(classes)) == len(classes)
    ):
        raise MnistkitError(f"{source}: 'classes' must be a list of distinct digits 0-9, got {classes!r}")
    size = len(classes)
    if not (
        isinstance(rows, list)
        and len(rows) == size
        and all(isinstance(row, list) and len(row) == size for row in rows)
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for row in rows for v in row)
    ):
        raise MnistkitError(
            f"{source}: 'confusion_matrix' must be {size} rows of {size} non-negative integers, one per class"
        )
    split = metrics.get("split") if isinstance(metrics.get("split"), str) else ""
    return Confusion(list(classes), np.array(rows, dtype=np.int64).reshape(size, size), split)


HEAT_MAP_ORIGIN = (96, 104)


def heat_map_cell_px(size: int) -> int:
    """54 px cells for ten classes; fewer classes get larger cells, so the map stays legible."""
    return max(54, 270 // size)


def confusion_cell_box(size: int, row: int, column: int) -> tuple[int, int, int, int]:
    """Where the heat map of `size` classes draws the cell of true `row` and predicted `column`."""
    left, top = HEAT_MAP_ORIGIN
    cell_px = heat_map_cell_px(size)
    x, y = left + column * cell_px, top + row * cell_px
    return x, y, x + cell_px, y + cell_px


def confusion_image(confusion: Confusion, source_name: str = "") -> Image.Image:
    """A heat map of the counts, written in the cells; colour follows log(1 + count) so that
    the few mistakes show beside the large diagonal."""
    matrix, classes = confusion.matrix, confusion.classes
    size = len(classes)
    cell_px = heat_map_cell_px(size)
    left, top = HEAT_MAP_ORIGIN
    plot_px = cell_px * size
    canvas = Canvas(left + plot_px + 130, top + plot_px + 74)
    peak = max(int(matrix.max()), 1)
    shade = np.log1p(matrix) / np.log1p(peak)
    colours = colour_ramp(shade, BLUES)
    for row in range(size):
        for column in range(size):
            x, y, right, bottom = confusion_cell_box(size, row, column)
            canvas.rectangle((x, y, right, bottom), fill=tuple(int(c) for c in colours[row, column]))
            count = int(matrix[row, column])
            fill = WHITE if shade[row, column] > 0.55 else (INK if count else (175, 175, 175))
            canvas.text((x + cell_px / 2, y + cell_px / 2), str(count), TICK_PX, fill=fill)
    canvas.rectangle((left, top, left + plot_px + 1, top + plot_px + 1), outline=INK)
    for index, digit in enumerate(classes):
        centre = index * cell_px + cell_px / 2
        canvas.text((left + centre, top + plot_px + 8), str(digit), LABEL_PX, align="mt")
        canvas.text((left - 10, top + centre), str(digit), LABEL_PX, align="rm")
    canvas.text((left + plot_px / 2, top + plot_px + 34), "predicted digit", LABEL_PX, align="mt")
    canvas.text((left - 40, top + plot_px / 2), "true digit", LABEL_PX, align="rm", vertical=True)
    split = f"{confusion.split} split, " if confusion.split else ""
    canvas.text((canvas.size[0] / 2, 16), "Confusion matrix", TITLE_PX, align="mt")
    summary = f"{split}{int(matrix.sum())} digits, accuracy {confusion.accuracy:.2%}"
    canvas.text((canvas.size[0] / 2, 48), summary, LABEL_PX, fill=MUTED, align="mt")
    if source_name:
        canvas.text((canvas.size[0] / 2, 70), source_name, TICK_PX, fill=MUTED, align="mt")
    ticks = [(0.0, "0")]
    ticks += [(math.log1p(v) / math.log1p(peak), str(v)) for v in (1, 10, 100, 1000, 10000) if v <= peak]
    bar_left = left + plot_px + 24
    colour_bar(canvas, (bar_left, top, bar_left + 16, top + plot_px), BLUES, ticks, "count (log scale)")
    return canvas.finish()


# Training curves -----------------------------------------------------------------------


def parse_history(text: str, source: str) -> list[dict[str, Any]]:
    """The per-epoch records of a history JSONL file, checked line by line."""
    records: list[dict[str, Any]] = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{source} line {line_number}"
        try:
            record = json.loads(line)
        except ValueError:
            raise MnistkitError(f"{where}: not JSON (expected one JSON object per epoch)") from None
        if not isinstance(record, dict):
            raise MnistkitError(f"{where}: not a JSON object (expected one per epoch)")
        epoch = record.get("epoch")
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 1:
            raise MnistkitError(f"{where}: 'epoch' must be a whole number from 1, got {epoch!r}")
        if records and epoch <= records[-1]["epoch"]:
            raise MnistkitError(
                f"{where}: epoch {epoch} follows epoch {records[-1]['epoch']} (two runs in one file?)"
            )
        for key in HISTORY_METRICS:
            value = record.get(key)
            if value is not None and (
                not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value)
            ):
                raise MnistkitError(f"{where}: {key} must be a number or null, got {value!r}")
        records.append({"epoch": epoch, **{key: record.get(key) for key in HISTORY_METRICS}})
    if not records:
        raise MnistkitError(f"{source}: empty history, no epochs to plot")
    if all(record[key] is None for record in records for key in HISTORY_METRICS):
        raise MnistkitError(f"{source}: no loss or accuracy values to plot")
    return records


def curves_image(history: Sequence[dict[str, Any]], source_name: str = "") -> Image.Image:
    """Loss and accuracy per epoch, one line per split that was measured."""
    epochs = [record["epoch"] for record in history]
    panels = []
    for metric, panel_title, y_title, factor in (
        ("loss", "Loss", "cross-entropy loss", 1.0),
        ("accuracy", "Accuracy", "accuracy (%)", 100.0),
    ):
        series = []
        for split, colour in SPLIT_COLOURS.items():
            values = [record[f"{split}_{metric}"] for record in history]
            if any(v is not None for v in values):
                scaled = [None if v is None else v * factor for v in values]
                series.append(Series(SPLIT_NAMES[split], epochs, scaled, colour))
        if series:
            panels.append((panel_title, "epoch", y_title, series))
    noun = "epoch" if len(history) == 1 else "epochs"
    title = f"Training curves · {len(history)} {noun}" + (f" · {source_name}" if source_name else "")
    return line_charts(panels, title)


# Embedding -----------------------------------------------------------------------------


def bottleneck_layer(checkpoint: Checkpoint, model_name: str) -> int:
    """The index of the model's last hidden layer with two units."""
    architecture = checkpoint.architecture
    hidden = list(architecture.get("hidden", [])) if architecture["model"] == "mlp" else []
    two_unit = [index for index, width in enumerate(hidden) if width == 2]
    if not two_unit:
        widths = ",".join(map(str, hidden)) or "none"
        raise MnistkitError(
            f"{model_name}: no 2-unit hidden layer to plot ({architecture['model']}, "
            f"hidden layers: {widths}); train one with --hidden 100,100,2"
        )
    return two_unit[-1]


def bottleneck_values(checkpoint: Checkpoint, layer: int, images: np.ndarray) -> np.ndarray:
    """Hidden layer `layer` before its activation: with ReLU its outputs pile up on the axes,
    while its inputs spread out, like the linear 2-unit layer of the 3-vs-8 tutorial."""
    inputs = normalize(images, checkpoint.normalization)
    _, hidden = dense_stack(checkpoint.params, checkpoint.architecture, inputs, return_hidden=True)
    previous = hidden[layer - 1] if layer > 0 else inputs.reshape(len(inputs), -1)
    kernel, bias = checkpoint.params[f"dense_{layer}.kernel"], checkpoint.params[f"dense_{layer}.bias"]
    return np.asarray(previous @ kernel + bias, dtype=np.float64)


def head_logits(checkpoint: Checkpoint, layer: int, values: np.ndarray) -> np.ndarray:
    """The model's logits from hidden layer `layer`'s pre-activation values: its activation,
    then the layers after it, run as a dense stack renumbered to start there."""
    architecture = checkpoint.architecture
    first = layer + 1
    head = {**architecture, "hidden": list(architecture["hidden"])[first:]}
    params = {
        f"dense_{index - first}.{kind}": checkpoint.params[f"dense_{index}.{kind}"]
        for index in range(first, len(architecture["hidden"]) + 1)
        for kind in ("kernel", "bias")
    }
    activation = _activation(architecture.get("activation", "relu"))
    return dense_stack(params, head, activation(values.astype(np.float32)))


def embedding_image(
    checkpoint: Checkpoint,
    images: np.ndarray,
    labels: np.ndarray,
    count: int = 2000,
    seed: int = 0,
    split: str = "test",
    model_name: str = "the model",
    data_name: str = "the data",
) -> Image.Image:
    """Digits scattered by the model's 2-unit layer, coloured by their true class, over the
    class the model would predict at each point of that plane."""
    layer = bottleneck_layer(checkpoint, model_name)
    known = np.flatnonzero(model_digits_mask(checkpoint, labels, model_name, data_name))
    chosen = np.random.default_rng(seed).permutation(known)[:count]
    points = bottleneck_values(checkpoint, layer, images[chosen])
    classes = list(checkpoint.classes)
    region_colours = np.array([blend(DIGIT_COLOURS[d], WHITE, 0.72) for d in classes], dtype=np.uint8)

    def regions(grid: np.ndarray) -> np.ndarray:
        return region_colours[head_logits(checkpoint, layer, grid).argmax(axis=1)]

    legend = [(str(digit), DIGIT_COLOURS[digit]) for digit in classes]
    activation_name = {"relu": "ReLU"}.get(checkpoint.architecture.get("activation", "relu"), "tanh")
    title = f"{len(chosen)} {split} digits in the 2-unit layer, over the model's decision regions"
    return scatter_chart(
        points,
        [DIGIT_COLOURS[d] for d in labels[chosen]],
        legend,
        title,
        f"unit 1 of hidden layer {layer + 1}, before {activation_name}",
        f"unit 2 of hidden layer {layer + 1}, before {activation_name}",
        background=regions,
    )


# Weights -------------------------------------------------------------------------------


def weights_image(checkpoint: Checkpoint, model_name: str = "the model", scale: int = 4) -> Image.Image:
    """The logreg kernel's column for each class as a 28x28 picture, red positive, blue negative,
    on one symmetric colour scale so the templates compare; the largest 1% of weights saturate,
    or a few extreme pixels would wash out the rest."""
    if checkpoint.architecture["model"] != "logreg":
        raise MnistkitError(
            f"{model_name}: weight templates need a logreg model, this one is "
            f"{checkpoint.architecture['model']} (train one with --model logreg)"
        )
    kernel = checkpoint.params["dense_0.kernel"]
    classes = list(checkpoint.classes)
    limit = float(np.percentile(np.abs(kernel), 99)) or 1.0
    templates = colour_ramp((kernel.T.reshape(-1, 28, 28) / limit + 1.0) / 2.0, BLUE_WHITE_RED)
    tile_px, gap_px, margin = 28 * scale, 14, 24
    width = max(len(classes) * (tile_px + gap_px) - gap_px + 2 * margin, 560)
    top = 96
    canvas = Canvas(width, top + tile_px + 96)
    title = "What the linear model learned: one weight template per digit"
    canvas.text((width / 2, 16), title, TITLE_PX, align="mt")
    canvas.text(
        (width / 2, 48),
        "red: ink there raises the digit's score · blue: ink there lowers it",
        LABEL_PX,
        fill=MUTED,
        align="mt",
    )
    row_left = (width - (len(classes) * (tile_px + gap_px) - gap_px)) / 2
    for index, digit in enumerate(classes):
        x = row_left + index * (tile_px + gap_px)
        canvas.text((x + tile_px / 2, top - 6), str(digit), LABEL_PX + 3, align="mb")
        canvas.paste_array(templates[index], (x, top, x + tile_px, top + tile_px))
        canvas.rectangle((x - 1, top - 1, x + tile_px + 1, top + tile_px + 1), outline=MUTED)
    bar_w = min(320, width - 2 * margin)
    bar_left, bar_top = (width - bar_w) / 2, top + tile_px + 22
    ticks = [(0.0, f"{-limit:.3g}"), (0.5, "0"), (1.0, f"{limit:.3g}")]
    colour_bar(
        canvas,
        (bar_left, bar_top, bar_left + bar_w, bar_top + 12),
        BLUE_WHITE_RED,
        ticks,
        "weight (the largest 1% saturate)",
    )
    return canvas.finish()
