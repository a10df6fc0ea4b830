"""Pictures of a model and its training: the confusion heat map, training curves, the 2-D
embedding with decision regions, and the weight templates of a linear model.

Each is a function returning a Pillow image (save it with `render.save_picture`), made from
the files the pipeline writes. numpy and Pillow only, never jax.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from mnistkit.architectures import VIEW_FLAGS
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
from mnistkit.datasets import IMAGE_SHAPE, named_by_digits
from mnistkit.errors import MnistkitError
from mnistkit.evaluation import Confusion, evaluate_arrays
from mnistkit.inference import activation_function, dense_stack, normalize
from mnistkit.render import model_digits_mask
from mnistkit.terms import setting

WEIGHTS_PER_ROW = 13
GOLDEN_ANGLE_TURNS = 0.381966  # (3 - sqrt 5) / 2 of a turn
SPLIT_COLOURS = {"train": DIGIT_COLOURS[0], "val": DIGIT_COLOURS[1], "test": DIGIT_COLOURS[2]}
SPLIT_NAMES = {"train": "train", "val": "validation", "test": "test"}


# Confusion matrix ----------------------------------------------------------------------


def confusion_from_model(
    checkpoint: Checkpoint,
    images: np.ndarray,
    labels: np.ndarray,
    split: str,
    model_name: str,
    data_name: str,
) -> Confusion:
    """The confusion matrix eval computes, over the images showing one of the model's classes."""
    model_digits_mask(checkpoint, labels, model_name, data_name)
    evaluation = evaluate_arrays(checkpoint, images, labels)
    return Confusion(evaluation.classes, evaluation.confusion_matrix, split, evaluation.class_names)


HEAT_MAP_ORIGIN = (96, 104)
MANY_CLASSES = 20


def heat_map_cell_px(size: int) -> int:
    """54 px cells for ten classes; fewer classes get larger cells, so the map stays legible,
    and many (EMNIST's 47 or 62) smaller ones, so it stays on a screen."""
    return max(54, 270 // size) if size <= MANY_CLASSES else 36


def heat_map_origin(names: Sequence[str]) -> tuple[int, int]:
    """The heat map's top left corner: room on the left for the widest class name."""
    left, top = HEAT_MAP_ORIGIN
    return max(left, 66 + max(text_width(name, LABEL_PX) for name in names)), top


def confusion_cell_box(
    size: int, row: int, column: int, origin: tuple[int, int] = HEAT_MAP_ORIGIN
) -> tuple[int, int, int, int]:
    """Where the heat map of `size` classes (`origin`: that of their names) draws the cell of
    true `row` and predicted `column`."""
    left, top = origin
    cell_px = heat_map_cell_px(size)
    x, y = left + column * cell_px, top + row * cell_px
    return x, y, x + cell_px, y + cell_px


def confusion_image(confusion: Confusion, source_name: str = "") -> Image.Image:
    """A heat map of the counts, written in the cells; colour follows log(1 + count) so that
    the few mistakes show beside the large diagonal. Classes are named on both axes; names
    wider than a cell stand upright under the columns."""
    matrix, names = confusion.matrix, confusion.names
    size = len(names)
    cell_px = heat_map_cell_px(size)
    count_px = TICK_PX if size <= MANY_CLASSES else TICK_PX - 3
    left, top = heat_map_origin(names)
    plot_px = cell_px * size
    widest_px = max(text_width(name, LABEL_PX) for name in names)
    upright = widest_px > cell_px - 6
    names_px = widest_px + 4 if upright else LABEL_PX
    canvas = Canvas(left + plot_px + 130, top + plot_px + names_px + 59)
    peak = max(int(matrix.max()), 1)
    shade = np.log1p(matrix) / np.log1p(peak)
    colours = colour_ramp(shade, BLUES)
    for row in range(size):
        for column in range(size):
            x, y, right, bottom = confusion_cell_box(size, row, column, (left, top))
            canvas.rectangle((x, y, right, bottom), fill=tuple(int(c) for c in colours[row, column]))
            count = int(matrix[row, column])
            fill = WHITE if shade[row, column] > 0.55 else (INK if count else (175, 175, 175))
            canvas.text((x + cell_px / 2, y + cell_px / 2), str(count), count_px, fill=fill)
    canvas.rectangle((left, top, left + plot_px + 1, top + plot_px + 1), outline=INK)
    for index, name in enumerate(names):
        centre = index * cell_px + cell_px / 2
        canvas.text((left + centre, top + plot_px + 8), name, LABEL_PX, align="mt", vertical=upright)
        canvas.text((left - 10, top + centre), name, LABEL_PX, align="rm")
    kind = "digit" if named_by_digits(confusion.classes, names) else "class"
    canvas.text(
        (left + plot_px / 2, top + plot_px + names_px + 19), f"predicted {kind}", LABEL_PX, align="mt"
    )
    title_x = left - 40 - max(0, widest_px - 10)
    canvas.text((title_x, top + plot_px / 2), f"true {kind}", LABEL_PX, align="rm", vertical=True)
    split = f"{confusion.split} split, " if confusion.split else ""
    canvas.text((canvas.size[0] / 2, 16), "Confusion matrix", TITLE_PX, align="mt")
    noun = "digits" if kind == "digit" else "images"
    summary = f"{split}{int(matrix.sum())} {noun}, accuracy {confusion.accuracy:.2%}"
    canvas.text((canvas.size[0] / 2, 48), summary, LABEL_PX, fill=MUTED, align="mt")
    if source_name:
        canvas.text((canvas.size[0] / 2, 70), source_name, TICK_PX, fill=MUTED, align="mt")
    bar_left = left + plot_px + 24
    bar = (bar_left, top, bar_left + 16, top + plot_px)
    colour_bar(canvas, bar, BLUES, count_ticks(peak), "count (log scale)")
    return canvas.finish()


def count_ticks(peak: int) -> list[tuple[float, str]]:
    """The log-scale colour bar's ticks: 0, the powers of ten up to the largest count, and that
    count at the top, unless a power of ten already stands next to it (a matrix of 20 images
    showed only 0 and 1)."""
    ticks = [(0.0, "0")]
    ticks += [(math.log1p(v) / math.log1p(peak), str(v)) for v in (1, 10, 100, 1000, 10000) if v <= peak]
    if ticks[-1][0] < 0.9:
        ticks.append((1.0, str(peak)))
    return ticks


# Training curves -----------------------------------------------------------------------


# An axis's ticks and pixels are computed in floats, which overflow past about 1.8e308.
CHARTABLE_MAGNITUDE = 1e300


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
                low, high = min(v for v in values if v is not None), max(v for v in values if v is not None)
                if not max(-low, high) * factor <= CHARTABLE_MAGNITUDE:
                    raise MnistkitError(
                        f"{source_name or 'history'}: {split}_{metric} runs from {low:g} to {high:g}, "
                        f"beyond the ±{CHARTABLE_MAGNITUDE:g} a chart can hold"
                    )
                series.append(Series(SPLIT_NAMES[split], epochs, scaled, colour))
        if series:
            panels.append((panel_title, "epoch", y_title, series))
    noun = "epoch" if len(history) == 1 else "epochs"
    title = f"Training curves · {len(history)} {noun}" + (f" · {source_name}" if source_name else "")
    return line_charts(panels, title)


# Embedding -----------------------------------------------------------------------------


def class_colour(label: int) -> tuple[int, int, int]:
    """The colour of a class by its label: each digit's own, the same in every picture; from
    label 10 on (EMNIST's letters) hues a golden angle apart, so that no two of a scatter's
    classes share a colour as they did when the ten came round again."""
    if label < len(DIGIT_COLOURS):
        return DIGIT_COLOURS[label]
    hue = (label * GOLDEN_ANGLE_TURNS) % 1.0
    value = (0.62, 0.78, 0.94)[label % 3]  # neighbouring hues apart in brightness too
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.75, value)
    return round(255 * red), round(255 * green), round(255 * blue)


def _one_model(architecture: dict, model_name: str, member: str, picture: str) -> None:
    """Refuse an ensemble of the `member` models a picture of one model's `picture` needs."""
    if architecture["model"] == "ensemble" and architecture["member"]["model"] == member:
        raise MnistkitError(
            f"{model_name}: an ensemble of {architecture['members']} {member} models (trained with "
            f"{setting('ensemble')} or {setting('seeds')}); this picture draws one model's {picture}: "
            f"train it without {setting('ensemble')}"
        )


def bottleneck_layer(checkpoint: Checkpoint, model_name: str) -> int:
    """The index of the model's last hidden layer with two units."""
    architecture = checkpoint.architecture
    if 2 in architecture.get("member", {}).get("hidden", []):  # else: no member has one either
        _one_model(architecture, model_name, "mlp", "2-unit layer")
    hidden = list(architecture.get("hidden", [])) if architecture["model"] == "mlp" else []
    two_unit = [index for index, width in enumerate(hidden) if width == 2]
    if not two_unit:
        layers = f"hidden layers: {','.join(map(str, hidden))}" if hidden else "no 2-unit layer"
        raise MnistkitError(
            f"{model_name}: no 2-unit hidden layer to plot ({architecture['model']}, {layers}); "
            f"train one with {setting('preset', 'embedding')}"
        )
    views = [flag for flag in VIEW_FLAGS if architecture.get(flag)]
    if views:
        options = " and ".join(setting(flag) for flag in views)
        raise MnistkitError(
            f"{model_name}: predicts from several views of each image, which one map of the "
            f"2-unit layer cannot show; train it without {options}"
        )
    return two_unit[-1]


def _linear(architecture: dict[str, Any], layer: int) -> bool:
    """Whether hidden layer `layer` has no activation (the embedding preset's bottleneck)."""
    return bool(architecture.get("linear_last_hidden")) and layer == len(architecture["hidden"]) - 1


def bottleneck_values(checkpoint: Checkpoint, layer: int, images: np.ndarray) -> np.ndarray:
    """Hidden layer `layer` before its activation: with ReLU its outputs pile up on the axes,
    while its inputs spread out, like the linear 2-unit layer of the 3-vs-8 tutorial."""
    inputs = normalize(images, checkpoint.normalization)
    _, hidden = dense_stack(checkpoint.params, checkpoint.architecture, inputs, return_hidden=True)
    previous = hidden[layer - 1] if layer > 0 else inputs.reshape(len(inputs), -1)
    kernel, bias = checkpoint.params[f"dense_{layer}.kernel"], checkpoint.params[f"dense_{layer}.bias"]
    return np.asarray(previous @ kernel + bias, dtype=np.float64)


def head_logits(checkpoint: Checkpoint, layer: int, values: np.ndarray) -> np.ndarray:
    """The model's logits from hidden layer `layer`'s pre-activation values: its activation
    (none for a linear layer), then the layers after it, as a dense stack renumbered to start there."""
    architecture = checkpoint.architecture
    first = layer + 1
    head = {**architecture, "hidden": list(architecture["hidden"])[first:]}
    params = {
        f"dense_{index - first}.{kind}": checkpoint.params[f"dense_{index}.{kind}"]
        for index in range(first, len(architecture["hidden"]) + 1)
        for kind in ("kernel", "bias")
    }
    values = values.astype(np.float32)
    return dense_stack(
        params, head, values if _linear(architecture, layer) else activation_function(architecture)(values)
    )


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
    if count < 1:  # numpy would take -5 from the end, and 0 would fail deep inside
        raise MnistkitError(f"{setting('count')} must be at least 1, got {count}")
    layer = bottleneck_layer(checkpoint, model_name)
    known = np.flatnonzero(model_digits_mask(checkpoint, labels, model_name, data_name))
    chosen = np.random.default_rng(seed).permutation(known)[:count]
    points = bottleneck_values(checkpoint, layer, images[chosen])
    classes = list(checkpoint.classes)
    region_colours = np.array([blend(class_colour(d), WHITE, 0.72) for d in classes], dtype=np.uint8)

    def regions(grid: np.ndarray) -> np.ndarray:
        return region_colours[head_logits(checkpoint, layer, grid).argmax(axis=1)]

    legend = [
        (name, class_colour(label)) for label, name in zip(classes, checkpoint.class_names, strict=True)
    ]
    activation = checkpoint.architecture.get("activation", "relu")
    activation_name = {"relu": "ReLU"}.get(activation, activation)
    which = "(linear)" if _linear(checkpoint.architecture, layer) else f"before {activation_name}"
    digits = checkpoint.digit_classes
    noun = ("digit" if digits else "image") + ("" if len(chosen) == 1 else "s")
    title = f"{len(chosen)} {split} {noun} in the 2-unit layer, over the model's decision regions"
    return scatter_chart(
        points,
        [class_colour(d) for d in labels[chosen]],
        legend,
        title,
        f"unit 1 of hidden layer {layer + 1} {which}",
        f"unit 2 of hidden layer {layer + 1} {which}",
        background=regions,
        legend_title="digit" if digits else "class",
    )


# Weights -------------------------------------------------------------------------------


def weights_image(checkpoint: Checkpoint, model_name: str = "the model", scale: int = 4) -> Image.Image:
    """The logreg kernel's column for each class as a 28x28 picture, red positive, blue negative,
    on one symmetric colour scale so the templates compare; the largest 1% of weights saturate,
    or a few extreme pixels would wash out the rest."""
    architecture = checkpoint.architecture
    _one_model(architecture, model_name, "logreg", "weight templates")
    if architecture["model"] != "logreg":
        raise MnistkitError(
            f"{model_name}: weight templates need a logreg model, this one is "
            f"{architecture['model']} (train one with {setting('model', 'logreg')})"
        )
    kernel = checkpoint.params["dense_0.kernel"]
    classes = list(checkpoint.classes)
    limit = float(np.percentile(np.abs(kernel), 99)) or 1.0
    templates = colour_ramp((kernel.T.reshape(-1, *IMAGE_SHAPE) / limit + 1.0) / 2.0, BLUE_WHITE_RED)
    tile_px, gap_px, margin = 28 * scale, 14, 24
    # Rows of at most WEIGHTS_PER_ROW, as even as can be: EMNIST's 47 classes in one row
    # made a picture 5,956 px wide.
    rows = math.ceil(len(classes) / WEIGHTS_PER_ROW)
    per_row = math.ceil(len(classes) / rows)
    row_px = tile_px + LABEL_PX + 3 + 18
    width = max(per_row * (tile_px + gap_px) - gap_px + 2 * margin, 560)
    top = 96
    height = top + rows * row_px - (LABEL_PX + 3 + 18) + 96
    canvas = Canvas(width, height, remedy=f"draw smaller templates ({setting('scale')})")
    kind = "digit" if checkpoint.digit_classes else "class"
    title = f"What the linear model learned: one weight template per {kind}"
    canvas.text((width / 2, 16), title, TITLE_PX, align="mt")
    canvas.text(
        (width / 2, 48),
        f"red: ink there raises the {kind}'s score · blue: ink there lowers it",
        LABEL_PX,
        fill=MUTED,
        align="mt",
    )
    for index, name in enumerate(checkpoint.class_names):
        row, column = divmod(index, per_row)
        in_row = min(per_row, len(classes) - row * per_row)
        x = (width - (in_row * (tile_px + gap_px) - gap_px)) / 2 + column * (tile_px + gap_px)
        y = top + row * row_px
        canvas.text((x + tile_px / 2, y - 6), name, LABEL_PX + 3, align="mb")
        canvas.paste_array(templates[index], (x, y, x + tile_px, y + tile_px))
        canvas.rectangle((x - 1, y - 1, x + tile_px + 1, y + tile_px + 1), outline=MUTED)
    bar_w = min(320, width - 2 * margin)
    bar_left, bar_top = (width - bar_w) / 2, height - 96 + 22
    ticks = [(0.0, f"{-limit:.3g}"), (0.5, "0"), (1.0, f"{limit:.3g}")]
    colour_bar(
        canvas,
        (bar_left, bar_top, bar_left + bar_w, bar_top + 12),
        BLUE_WHITE_RED,
        ticks,
        "weight (the largest 1% saturate)",
    )
    return canvas.finish()
