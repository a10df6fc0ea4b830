"""How good a checkpoint is: accuracy, mean loss, confusion matrix, per-class precision,
recall and F1, and the most frequent confusions, on an `.npz` split or on people's own
labelled images (preprocessed exactly as predict does).

Everything streams in batches into one confusion matrix and one loss sum, so memory
does not grow with the number of images. numpy only, never jax.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mnistkit.checkpoint import Checkpoint
from mnistkit.errors import MnistkitError
from mnistkit.inference import forward, normalize
from mnistkit.predict import load_digits

BATCH_SIZE = 1000
TOP_CONFUSIONS = 10


@dataclass
class Evaluation:
    """Counts from which every metric follows; `skipped` = labels outside the classes."""

    classes: list[int]
    confusion_matrix: np.ndarray
    loss_sum: float = 0.0
    skipped: int = 0
    _class_index: dict[int, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._class_index = {digit: index for index, digit in enumerate(self.classes)}

    @classmethod
    def empty(cls, classes: list[int]) -> Evaluation:
        return cls(list(classes), np.zeros((len(classes), len(classes)), np.int64))

    def add(self, log_probabilities: np.ndarray, digits: np.ndarray) -> None:
        """Count one batch: model log-probabilities (N, classes) and the true digits (N,)."""
        known = np.isin(digits, self.classes)
        self.skipped += int((~known).sum())
        log_probabilities = log_probabilities[known]
        true = np.array([self._class_index[int(d)] for d in digits[known]], np.int64)
        if true.size == 0:
            return
        predicted = log_probabilities.argmax(axis=1)
        np.add.at(self.confusion_matrix, (true, predicted), 1)
        self.loss_sum += float(-log_probabilities[np.arange(true.size), true].sum())

    @property
    def count(self) -> int:
        return int(self.confusion_matrix.sum())

    @property
    def accuracy(self) -> float:
        return float(np.trace(self.confusion_matrix)) / self.count if self.count else 0.0

    @property
    def mean_loss(self) -> float:
        return self.loss_sum / self.count if self.count else 0.0

    def per_class(self) -> list[dict[str, Any]]:
        correct = np.diag(self.confusion_matrix)
        support = self.confusion_matrix.sum(axis=1)
        predicted = self.confusion_matrix.sum(axis=0)
        rows = []
        for index, digit in enumerate(self.classes):
            precision = correct[index] / predicted[index] if predicted[index] else 0.0
            recall = correct[index] / support[index] if support[index] else 0.0
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            rows.append(
                {
                    "digit": digit,
                    "precision": float(precision),
                    "recall": float(recall),
                    "f1": float(f1),
                    "support": int(support[index]),
                }
            )
        return rows

    def top_confusions(self, limit: int = TOP_CONFUSIONS) -> list[dict[str, int]]:
        """The most frequent (true, predicted) mistakes, most frequent first."""
        off_diagonal = self.confusion_matrix.copy()
        np.fill_diagonal(off_diagonal, 0)
        pairs = zip(*np.nonzero(off_diagonal), strict=True)
        order = sorted(pairs, key=lambda pair: (-off_diagonal[pair], pair))
        return [
            {"true": self.classes[t], "predicted": self.classes[p], "count": int(off_diagonal[t, p])}
            for t, p in order[:limit]
        ]

    def to_json(self, split: str, checkpoint: str, data: str) -> dict[str, Any]:
        return {
            "split": split,
            "count": self.count,
            "accuracy": self.accuracy,
            "mean_loss": self.mean_loss,
            "classes": self.classes,
            "confusion_matrix": self.confusion_matrix.tolist(),
            "per_class": self.per_class(),
            "top_confusions": self.top_confusions(),
            "checkpoint": checkpoint,
            "data": data,
        }


def log_probabilities(checkpoint: Checkpoint, images: np.ndarray) -> np.ndarray:
    """Log-softmax of the logits, computed from the logits so a confident miss costs a
    finite loss instead of log(0)."""
    logits = forward(checkpoint.params, checkpoint.architecture, normalize(images, checkpoint.normalization))
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def evaluate_arrays(
    checkpoint: Checkpoint, images: np.ndarray, digits: np.ndarray, batch_size: int = BATCH_SIZE
) -> Evaluation:
    """Evaluate on uint8 images (N, 28, 28) and their digits (N,), batch by batch."""
    evaluation = Evaluation.empty(checkpoint.classes)
    for start in range(0, len(images), batch_size):
        batch = slice(start, start + batch_size)
        evaluation.add(log_probabilities(checkpoint, images[batch]), digits[batch])
    return evaluation


def evaluate_images(
    checkpoint: Checkpoint,
    labelled_paths: Iterable[tuple[str, int]],
    on_error: Callable[[str], None],
    preprocess: bool = True,
    workers: int | None = None,
) -> Evaluation:
    """Evaluate on image files with known digits, preprocessed as predict does; each
    unreadable image is passed to `on_error` as `path: reason` and left out."""
    evaluation = Evaluation.empty(checkpoint.classes)
    digit_of: dict[int, int] = {}

    def paths() -> Iterator[str]:
        for position, (path, digit) in enumerate(labelled_paths):
            digit_of[position] = digit
            yield path

    position = 0
    for chunk in load_digits(paths(), preprocess, workers):
        images, digits = [], []
        for loaded in chunk:
            digit = digit_of.pop(position)
            position += 1
            if loaded.image is None:
                on_error(loaded.error)
                continue
            images.append(loaded.image)
            digits.append(digit)
        if images:
            evaluation.add(log_probabilities(checkpoint, np.stack(images)), np.array(digits))
    return evaluation


def read_labels(
    labels_path: str | os.PathLike[str], images_dir: str | os.PathLike[str] | None
) -> list[tuple[str, int]]:
    """Read a labels file: one `path<TAB>digit` or `path,digit` line per image.

    Extra columns are ignored (so predict's own TSV, corrected by hand, is a labels
    file), as are blank lines, `#` comments and a `path,digit` header. Relative paths
    are resolved against `images_dir`, or against the labels file's folder without one.
    """
    labels_path = Path(labels_path)
    base = Path(images_dir) if images_dir is not None else labels_path.parent
    try:
        text = labels_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MnistkitError(f"{labels_path}: no such labels file") from None
    except IsADirectoryError:
        raise MnistkitError(f"{labels_path}: is a directory, expected a labels file") from None
    except UnicodeDecodeError:
        raise MnistkitError(f"{labels_path}: labels file is not UTF-8 text") from None
    except OSError as error:
        raise MnistkitError(f"{labels_path}: cannot read labels file: {error.strerror}") from None
    labelled = []
    lines = [
        (number, line)
        for number, line in enumerate(text.splitlines(), 1)
        if line.strip() and not line.startswith("#")
    ]
    for index, (number, line) in enumerate(lines):
        delimiter = "\t" if "\t" in line else ","
        fields = next(csv.reader([line], delimiter=delimiter))
        if len(fields) < 2:
            raise MnistkitError(f"{labels_path}:{number}: expected 'path<TAB>digit' or 'path,digit'")
        path, digit_text = fields[0], fields[1].strip()
        if index == 0 and digit_text.lower() in ("digit", "label"):
            continue
        if digit_text not in {str(d) for d in range(10)}:
            raise MnistkitError(f"{labels_path}:{number}: label {digit_text!r} is not a digit 0-9")
        labelled.append((str(base / path), int(digit_text)))
    if not labelled:
        raise MnistkitError(f"{labels_path}: no labelled images in the file")
    return labelled


def format_table(evaluation: Evaluation, checkpoint: str, data: str) -> str:
    """The report for a terminal: summary, per-class table, confusion matrix; <= 80 columns."""
    lines = [
        _fit(f"checkpoint  {checkpoint}"),
        _fit(f"data        {data}"),
        f"accuracy {evaluation.accuracy:.2%}  mean loss {evaluation.mean_loss:.4f}  "
        f"images {evaluation.count}",
        "",
        "digit  precision  recall      f1  support",
    ]
    for row in evaluation.per_class():
        lines.append(
            f"{row['digit']:>5}  {row['precision']:>9.4f}  {row['recall']:>6.4f}  {row['f1']:>6.4f}"
            f"  {row['support']:>7}"
        )
    width = max(3, len(str(int(evaluation.confusion_matrix.max(initial=0))))) + 1
    lines += ["", "confusion matrix (rows: true digit, columns: predicted)"]
    lines.append("true" + "".join(f"{digit:>{width}}" for digit in evaluation.classes))
    for digit, counts in zip(evaluation.classes, evaluation.confusion_matrix, strict=True):
        lines.append(f"{digit:>4}" + "".join(f"{int(count):>{width}}" for count in counts))
    confusions = evaluation.top_confusions()
    if confusions:
        lines += ["", "most frequent confusions (true -> predicted: count)"]
        pairs = [f"{c['true']}->{c['predicted']}: {c['count']}" for c in confusions]
        lines += ["  " + "   ".join(pairs[start : start + 5]) for start in range(0, len(pairs), 5)]
    return "\n".join(lines) + "\n"


def _fit(line: str, width: int = 80) -> str:
    """Long paths keep their informative end: '...' and the last columns."""
    return line if len(line) <= width else line[:12] + "..." + line[-(width - 15) :]
