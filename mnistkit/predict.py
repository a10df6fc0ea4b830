"""Paths in, predictions out: image paths -> 28x28 digits (`image_files`) -> model batches -> rows.

numpy and Pillow only: predict must start fast, so nothing here imports jax.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from mnistkit.atomic import fitting_name, make_output_folder, write_bytes_atomic
from mnistkit.checkpoint import Checkpoint
from mnistkit.errors import MnistkitError
from mnistkit.image_files import LoadedDigit, load_digits
from mnistkit.images import encode_png
from mnistkit.inputs import json_path
from mnistkit.stdin_inputs import STDIN_NAME, PipedImage, StdinWaits
from mnistkit.terms import setting

FORMATS = ("tsv", "csv", "jsonl")


@dataclass
class Prediction:
    """The likeliest class of an image: its label (MNIST: the digit) and name ("7", "Ankle boot"),
    its probability, and the `top` (label, name, probability) in order."""

    path: str
    label: int
    name: str
    confidence: float
    top: list[tuple[int, str, float]]
    error = None  # as an Unreadable's is its line: a list of both is filtered by `answer.error`

    def __repr__(self) -> str:  # what print() shows in a notebook: the answer, not ten tuples
        return f"<Prediction {self.path}: {self.name} ({self.confidence:.2%})>"


@dataclass(frozen=True)
class Unreadable:
    """An image that could not be read, in its place among the predictions (`predict_images`
    with `errors="keep"`): its name and `error`, the line `mnistkit predict` prints for it."""

    path: str
    error: str


def predict_paths(
    checkpoint: Checkpoint,
    paths: Iterable[str | StdinWaits | PipedImage],
    *,
    preprocess: bool = True,
    top_k: int = 1,
    save_dir: Path | None = None,
    workers: int | None = None,
) -> Iterator[Prediction | LoadedDigit]:
    """A Prediction for each readable image and the failed LoadedDigit for each other, in order;
    a StdinWaits among `paths` (stdin waits for its writer) answers every path before it first;
    a PipedImage is the image that a pipe held (stdin's, named `-`)."""
    chunks = load_digits(paths, preprocess, workers, style=checkpoint.preprocessing)
    with contextlib.closing(chunks):  # closing these predictions stops the pool of workers too
        yield from predict_loaded(checkpoint, chunks, top_k=top_k, save_dir=save_dir)


def predict_loaded(
    checkpoint: Checkpoint,
    chunks: Iterable[list[LoadedDigit]],
    *,
    top_k: int = 1,
    save_dir: Path | None = None,
) -> Iterator[Prediction | LoadedDigit]:
    """`predict_paths` of images already read, a chunk (one batch of the model) at a time."""
    classes, names = checkpoint.classes, checkpoint.class_names
    top_k = min(top_k, len(classes))
    index = 0
    for chunk in chunks:
        good = [loaded for loaded in chunk if loaded.image is not None]
        probabilities = (
            checkpoint.predict_probabilities(np.stack([loaded.image for loaded in good])) if good else None
        )
        row = 0
        for loaded in chunk:
            index += 1
            if loaded.image is None:
                yield loaded
                continue
            if save_dir is not None:
                write_bytes_atomic(save_dir / preprocessed_name(index, loaded.path), encode_png(loaded.image))
            ranked = np.argsort(-probabilities[row], kind="stable")[:top_k]
            top = [(classes[i], names[i], float(probabilities[row, i])) for i in ranked]
            yield Prediction(loaded.path, *top[0], top)
            row += 1


def preprocessed_name(index: int, path: str) -> str:
    """`--save-preprocessed` file name: the input's position (1-based) and its stem (a long
    one cut and hashed to fit); the image that stdin held is `stdin`."""
    position = f"{index:06d}-"
    stem = "stdin" if path == STDIN_NAME else Path(path).stem
    return f"{position}{fitting_name(stem, len(position) + len('.png'))}.png"


class PredictionWriter:
    """Rows in one of FORMATS: csv via the csv module, jsonl one object a line, tsv as it is
    but for a field that needs a CSV reader's quotes.

    With `digits` the column is `digit` and holds the digit, as for MNIST; otherwise it is
    `label` and holds the class's name, and jsonl adds the class's number as `class`.
    """

    def __init__(self, handle: IO[str], output_format: str, top_k: int, digits: bool = True) -> None:
        if output_format not in FORMATS:
            raise MnistkitError(f"--format: {output_format!r} is not one of {', '.join(FORMATS)}")
        self.handle = handle
        self.output_format = output_format
        self.top_k = top_k
        self.digits = digits
        self.column = "digit" if digits else "label"
        self.delimiter = "\t" if output_format == "tsv" else ","
        if output_format == "csv":
            self._write_row(self.header())

    def header(self) -> list[str]:
        columns = ["path", self.column, "confidence"]
        if self.top_k > 1:
            for rank in range(1, self.top_k + 1):
                columns += [f"top{rank}_{self.column}", f"top{rank}_probability"]
        return columns

    def _class_json(self, label: int, name: str) -> dict[str, object]:
        return {"digit": label} if self.digits else {"label": name, "class": label}

    def write(self, prediction: Prediction) -> None:
        if self.output_format == "jsonl":
            record = {
                **json_path("path", prediction.path),
                **self._class_json(prediction.label, prediction.name),
                "confidence": round(prediction.confidence, 6),
            }
            if self.top_k > 1:
                record["top"] = [
                    {**self._class_json(label, name), "probability": round(probability, 6)}
                    for label, name, probability in prediction.top
                ]
            self.handle.write(json.dumps(record) + "\n")
            return
        fields = [prediction.path, prediction.name, f"{prediction.confidence:.4f}"]
        if self.top_k > 1:
            for _, name, probability in prediction.top:
                fields += [name, f"{probability:.4f}"]
        self._write_row(fields)

    def _write_row(self, fields: list[str]) -> None:
        self.handle.write(self.delimiter.join(_field(field, self.delimiter) for field in fields) + "\n")


def _field(field: str, delimiter: str) -> str:
    """A field as a CSV reader with `delimiter` and `eval --labels` read it back: quoted where
    it holds a tab, a line break (a carriage return too, which Python's csv writer leaves bare
    when lines end in a newline) or, in csv, a comma or a quote, and where it starts with a
    quote or `#` (a comment to `eval --labels`); as it is otherwise, as `cut -f1` wants it."""
    specials = ("\t", "\r", "\n", *((",", '"') if delimiter == "," else ()))
    if field.startswith(('"', "#")) or any(special in field for special in specials):
        return '"' + field.replace('"', '""') + '"'
    return field


def write_predictions(
    checkpoint: Checkpoint,
    paths: Iterable[str | StdinWaits | PipedImage],
    output: IO[str],
    errors: IO[str],
    *,
    output_format: str = "tsv",
    top_k: int = 1,
    preprocess: bool = True,
    save_dir: Path | None = None,
    workers: int | None = None,
) -> int:
    """One row per readable image on `output`, one `path: reason` line per bad input on
    `errors`; returns how many inputs failed."""
    if top_k > len(checkpoint.classes):  # said, since the rows have fewer columns than asked for
        classes = len(checkpoint.classes)
        errors.write(f"{setting('top_k', top_k)}: the model knows {classes} classes; giving all {classes}\n")
        top_k = classes
    if save_dir is not None:
        make_output_folder(save_dir)
    writer = PredictionWriter(output, output_format, top_k, checkpoint.digit_classes)
    failures = 0
    results = predict_paths(
        checkpoint, paths, preprocess=preprocess, top_k=top_k, save_dir=save_dir, workers=workers
    )
    with contextlib.closing(results):  # at Ctrl-C, here and now, not when collected
        for result in results:
            if isinstance(result, Prediction):
                writer.write(result)
                output.flush()  # each row as it comes, to a pipe too
            else:
                failures += 1
                errors.write(f"{result.error}\n")
                errors.flush()
    return failures
