"""How good a checkpoint is: accuracy, mean loss, confusion matrix, per-class precision,
recall and F1, and the most frequent confusions, on an `.npz` split or on people's own
labelled images (preprocessed exactly as predict does).

Everything streams in batches into one confusion matrix and one loss sum, so memory
does not grow with the number of images. numpy only, never jax.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from mnistkit.architectures import MAX_CLASSES, ensemble_size
from mnistkit.arrays import catalogued, class_names, dataset_name, names_dataset
from mnistkit.checkpoint import Checkpoint
from mnistkit.datasets import DATASETS, label_named, named_by_digits
from mnistkit.errors import MnistkitError
from mnistkit.history import FIRST_RECORD_BYTES, begins_a_history
from mnistkit.image_files import load_digits
from mnistkit.inference import average_log_probabilities, log_softmax, member_logits, normalize
from mnistkit.inputs import json_path, read_text

BATCH_SIZE = 1000
TOP_CONFUSIONS = 10
TABLE_WIDTH = 80
NAME_COLUMN_CHARS = 20
MAX_COUNT = 2**53  # the most images a confusion matrix may count: float64 adds them exactly


@dataclass
class Evaluation:
    """Counts from which every metric follows; `skipped` = labels outside the classes.
    `classes` are the model's labels, `class_names` their names (the labels as text by default)."""

    classes: list[int]
    confusion_matrix: np.ndarray
    loss_sum: float = 0.0
    skipped: int = 0
    members: list[Evaluation] = field(default_factory=list)  # an ensemble's members, one by one
    class_names: list[str] = field(default_factory=list)
    _class_index: dict[int, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._class_index = {digit: index for index, digit in enumerate(self.classes)}
        self.class_names = list(self.class_names) or [str(label) for label in self.classes]

    @classmethod
    def empty(cls, classes: list[int], members: int = 0, class_names: Sequence[str] = ()) -> Evaluation:
        evaluation = cls(list(classes), np.zeros((len(classes), len(classes)), np.int64))
        evaluation.class_names = list(class_names) or evaluation.class_names
        evaluation.members = [cls.empty(classes, class_names=class_names) for _ in range(members)]
        return evaluation

    def add(
        self,
        log_probabilities: np.ndarray,
        digits: np.ndarray,
        member_log_probabilities: Sequence[np.ndarray] = (),
    ) -> None:
        """Count one batch: model log-probabilities (N, classes) and the true digits (N,),
        and for an ensemble each member's log-probabilities."""
        for member, member_log_probs in zip(self.members, member_log_probabilities, strict=True):
            member.add(member_log_probs, digits)
        known = np.isin(digits, self.classes)
        self.skipped += int((~known).sum())
        log_probabilities = log_probabilities[known]
        true = np.array([self._class_index[int(d)] for d in digits[known]], np.int64)
        if true.size == 0:
            return
        predicted = log_probabilities.argmax(axis=1)
        np.add.at(self.confusion_matrix, (true, predicted), 1)
        self.loss_sum += float(-log_probabilities[np.arange(true.size), true].sum())

    def __str__(self) -> str:  # print(evaluation): `mnistkit eval`'s report
        return format_table(self)

    def __repr__(self) -> str:  # what a notebook's cell shows: the figures, not the matrix
        members = f", {len(self.members)} members" if self.members else ""
        return (
            f"<Evaluation accuracy {self.accuracy:.2%}, mean loss {self.mean_loss:.4f}, "
            f"{self.count} images{members}>"
        )

    @property
    def count(self) -> int:
        return int(self.confusion_matrix.sum())

    @property
    def correct(self) -> int:
        return int(np.trace(self.confusion_matrix))

    @property
    def accuracy(self) -> float:
        return self.correct / self.count if self.count else 0.0

    @property
    def mean_loss(self) -> float:
        return self.loss_sum / self.count if self.count else 0.0

    def per_class(self) -> list[dict[str, Any]]:
        correct = np.diag(self.confusion_matrix)
        support = self.confusion_matrix.sum(axis=1)
        predicted = self.confusion_matrix.sum(axis=0)
        rows = []
        for index, (label, name) in enumerate(zip(self.classes, self.class_names, strict=True)):
            precision = correct[index] / predicted[index] if predicted[index] else 0.0
            recall = correct[index] / support[index] if support[index] else 0.0
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            rows.append(
                {
                    "class": label,
                    "name": name,
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
        members = {"members": self.member_summaries()} if self.members else {}
        return {
            "split": split,
            "count": self.count,
            "accuracy": self.accuracy,
            "mean_loss": self.mean_loss,
            "classes": self.classes,
            "class_names": self.class_names,
            "confusion_matrix": self.confusion_matrix.tolist(),
            "per_class": self.per_class(),
            "top_confusions": self.top_confusions(),
            **json_path("checkpoint", checkpoint),
            **json_path("data", data),
            **members,
        }

    def member_summaries(self) -> list[dict[str, Any]]:
        return [
            {
                "member": index,
                "count": member.count,
                "accuracy": member.accuracy,
                "mean_loss": member.mean_loss,
            }
            for index, member in enumerate(self.members)
        ]


def log_probabilities(checkpoint: Checkpoint, images: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """The model's log-probabilities, and for an ensemble each member's (the model's are
    then the log of their mean probability)."""
    inputs = normalize(images, checkpoint.normalization)
    members = [
        log_softmax(logits) for logits in member_logits(checkpoint.params, checkpoint.architecture, inputs)
    ]
    if len(members) == 1:
        return members[0], []
    return average_log_probabilities(members), members


def _empty_for(checkpoint: Checkpoint) -> Evaluation:
    """No counts yet, for the model's classes and, for an ensemble, each member one by one."""
    members = ensemble_size(checkpoint.architecture)
    return Evaluation.empty(checkpoint.classes, members if members > 1 else 0, checkpoint.class_names)


def percent_as_given(fraction: Fraction | float) -> str:
    """A fraction as the shortest percentage that is it, decimal for decimal (99.999%, not
    100.00%; a threshold of 0.996 is 99.60%, not the 100% that `:.0%` rounds it to)."""
    exact = fraction if isinstance(fraction, Fraction) else Fraction(str(fraction))
    for decimals in range(2, 12):
        text = f"{float(exact):.{decimals}%}"
        if Fraction(text[:-1]) / 100 == exact:
            return text
    return text


def distinct_percent(value: float, other: float) -> str:
    """`value` as a percentage with the digits that tell it from `other` (99.370% below 99.371%)."""
    for decimals in range(2, 12):
        if f"{value:.{decimals}%}" != f"{other:.{decimals}%}":
            break
    return f"{value:.{decimals}%}"


def check_same_classes(checkpoint: Checkpoint, arrays: dict[str, np.ndarray], source: str) -> None:
    """Refuse arrays whose classes are not the model's: a Fashion-MNIST model read 10% of
    MNIST's digits without a word. Another dataset of the same classes (QMNIST's digits for
    an MNIST model) is welcome."""
    names = class_names(arrays)
    if any(
        label >= len(names) or names[label] != name
        for label, name in zip(checkpoint.classes, checkpoint.class_names, strict=True)
    ):
        model_names = ", ".join(checkpoint.class_names[:3])
        own = not catalogued(checkpoint.dataset) and not names_dataset(arrays)
        fix = (
            f"; arrays of it record its name: dataset={checkpoint.dataset!r}, and its class_names"
            if own
            else ""
        )
        raise MnistkitError(
            f"{source}: holds {dataset_name(arrays)} ({', '.join(names[:3])}, ...), "
            f"but the model was trained on {checkpoint.dataset} ({model_names}, ...){fix}"
        )


def evaluate_arrays(
    checkpoint: Checkpoint, images: np.ndarray, digits: np.ndarray, batch_size: int = BATCH_SIZE
) -> Evaluation:
    """Evaluate on uint8 images (N, 28, 28) and their labels (N,), batch by batch."""
    evaluation = _empty_for(checkpoint)
    for start in range(0, len(images), batch_size):
        batch = slice(start, start + batch_size)
        combined, members = log_probabilities(checkpoint, images[batch])
        evaluation.add(combined, digits[batch], members)
    return evaluation


def evaluate_images(
    checkpoint: Checkpoint,
    labelled_paths: Iterable[tuple[str, int]],
    on_error: Callable[[str], None],
    preprocess: bool = True,
    workers: int | None = None,
) -> Evaluation:
    """Evaluate on image files with known labels, preprocessed as predict does; each
    unreadable image is passed to `on_error` as `path: reason` and left out."""
    evaluation = _empty_for(checkpoint)
    digit_of: dict[int, int] = {}

    def paths() -> Iterator[str]:
        for position, (path, digit) in enumerate(labelled_paths):
            digit_of[position] = digit
            yield path

    position = 0
    # Closed here and now at Ctrl-C or an error, not when collected: the workers stop with it.
    with contextlib.closing(
        load_digits(paths(), preprocess, workers, style=checkpoint.preprocessing)
    ) as chunks:
        for chunk in chunks:
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
                combined, members = log_probabilities(checkpoint, np.stack(images))
                evaluation.add(combined, np.array(digits), members)
    return evaluation


def dataset_class_names(checkpoint: Checkpoint) -> dict[int, str]:
    """The name of every class of the model's dataset, by label: the registry's when mnistkit
    knows the dataset (a labels file may name classes the model leaves out), else the model's."""
    spec = DATASETS.get(checkpoint.dataset)
    names = dict(enumerate(spec.class_names)) if spec is not None else {}
    return {**names, **dict(zip(checkpoint.classes, checkpoint.class_names, strict=True))}


def read_labels(
    labels_path: str | os.PathLike[str],
    images_dir: str | os.PathLike[str] | None,
    names: dict[int, str] | None = None,
) -> list[tuple[str, int]]:
    """Read a labels file: one `path<TAB>label` or `path,label` line per image, the label a
    class's number or name (`names`, by label; MNIST's digits by default).

    Extra columns are ignored (so predict's own TSV, corrected by hand, is a labels
    file), as are blank lines, `#` comments and a `path,digit` header. Relative paths
    are resolved against `images_dir`, or against the labels file's folder without one; where
    no file is there but one is from the current folder, that one: predict's own paths are
    as it was given them (`predict my-digits/*.png -o my-digits/labels.tsv`).
    """
    names = names if names is not None else {digit: str(digit) for digit in range(10)}
    label_of = {**{str(label): label for label in names}, **{name: label for label, name in names.items()}}
    labels_path = Path(labels_path)
    base = Path(images_dir) if images_dir is not None else labels_path.parent
    if not base.is_dir():
        raise MnistkitError(f"{base}: is not a folder (--images names the folder of the labelled images)")
    text, _ = read_text(labels_path, "labels", paths=True)
    label = "digit" if named_by_digits(names, names.values()) else "class"
    _check_not_json_lines(text, labels_path, label)
    labelled = []
    for index, (number, fields) in enumerate(_label_records(text, labels_path)):
        if len(fields) < 2:
            raise MnistkitError(f"{labels_path}:{number}: expected 'path<TAB>{label}' or 'path,{label}'")
        path, label_text = fields[0], fields[1].strip()
        if index == 0 and label_text.lower() in ("digit", "label", "class"):
            continue
        if label_text not in label_of:
            label_of[label_text] = label_named(label_text, names)
        if label_of[label_text] is None:
            raise MnistkitError(f"{labels_path}:{number}: label {label_text!r} is not {_classes_text(names)}")
        undecoded = any("\udc80" <= character <= "\udcff" for character in path)
        if undecoded and not (base / path).exists():
            raise MnistkitError(  # a spreadsheet's Latin-1 for names that are UTF-8 on disk
                f"{labels_path}:{number}: a name that is not UTF-8 names no file; save the labels as UTF-8"
            )
        in_base = base / path
        image_path = path if not in_base.exists() and Path(path).exists() else str(in_base)
        if Path(image_path).is_dir():
            raise MnistkitError(
                f"{labels_path}:{number}: {image_path} is a folder; a labels file lists one image per line"
            )
        labelled.append((image_path, label_of[label_text]))
    if not labelled:
        raise MnistkitError(f"{labels_path}: no labelled images in the file")
    return labelled


def _check_not_json_lines(text: str, source: Path, label: str) -> None:
    """`predict --format jsonl` output given as labels read as a label '"digit": 7'."""
    first_line = text.lstrip().split("\n", 1)[0]
    try:
        is_json_object = first_line.startswith("{") and isinstance(json.loads(first_line), dict)
    except ValueError:
        is_json_object = False
    if is_json_object:
        raise MnistkitError(
            f"{source}: holds JSON lines (as predict --format jsonl writes), not labels; a labels file has "
            f"one path<TAB>{label} or path,{label} line per image (predict's tsv or csv, corrected by hand)"
        )


def _label_records(text: str, source: Path) -> Iterator[tuple[int, list[str]]]:
    """Each record's first line number and fields. Lines end at newlines only (a file's name
    may hold any other character; at carriage returns in a file that has no newline, as old
    Mac spreadsheets save it), a quoted field runs across them, blank lines and `#` comments
    between records are skipped. Each record is read with tabs between its fields where that
    gives two or more (predict's TSV), else with commas (predict's csv, a `path,digit` file)."""
    lines = text.split("\n") if "\n" in text or "\r" not in text else text.split("\r")
    record, first = "", 0
    for number, line in enumerate(lines, 1):
        if not record:
            if not line.strip() or line.startswith("#"):
                continue
            first = number
        record += line + "\n"
        fields = _record_fields(record)
        if fields is None:  # a quoted field that goes on in the next line
            if number == len(lines) or len(record) > MAX_RECORD_CHARS:
                raise MnistkitError(f"{source}:{first}: a quoted field is never closed")
            continue
        record = ""
        yield first, fields


# A record longer than any path can be: a quote left open, not a name across lines.
MAX_RECORD_CHARS = 16384


def _record_fields(record: str) -> list[str] | None:
    """The fields of one record, or None while a quoted field is still open."""
    open_quote = False
    for delimiter in ("\t", ",") if "\t" in record else (",",):
        try:
            fields = next(csv.reader([record], delimiter=delimiter, strict=True))
        except csv.Error as error:
            open_quote = open_quote or "unexpected end of data" in str(error)
            continue
        if len(fields) >= 2:
            return fields
    if open_quote:
        return None
    return next(csv.reader([record], delimiter="\t" if "\t" in record else ","))  # as it comes


def _classes_text(names: dict[int, str]) -> str:
    if named_by_digits(names, names.values()):
        return f"a digit {min(names)}-{max(names)}"
    shown = ", ".join(names.values()) if len(names) <= 12 else f"{', '.join(list(names.values())[:10])}, ..."
    return f"a class's name or number ({shown})"


def _short(name: str) -> str:
    return name if len(name) <= NAME_COLUMN_CHARS else name[: NAME_COLUMN_CHARS - 3] + "..."


def _wrapped(items: list[str], width: int = TABLE_WIDTH, most: int = 5) -> list[str]:
    """Items three spaces apart, indented by two, at most `most` a line, lines within `width`."""
    lines: list[list[str]] = []
    for item in items:
        if lines and len(lines[-1]) < most and 2 + len("   ".join([*lines[-1], item])) <= width:
            lines[-1].append(item)
        else:
            lines.append([item])
    return ["  " + "   ".join(line) for line in lines]


def format_table(evaluation: Evaluation, checkpoint: str | None = None, data: str | None = None) -> str:
    """The report for a terminal: summary, per-class table, confusion matrix; <= 80 columns.
    The checkpoint and the data are named first where given (eval's report; print(evaluation))."""
    lines = [
        _fit(f"{label}{name}")
        for label, name in (("checkpoint  ", checkpoint), ("data        ", data))
        if name
    ]
    lines.append(
        f"accuracy {evaluation.accuracy:.2%}  mean loss {evaluation.mean_loss:.4f}  images {evaluation.count}"
    )
    if evaluation.members:
        lines += ["", f"ensemble of {len(evaluation.members)}: the line above averages their probabilities"]
        lines += ["member  accuracy  mean loss"]
        lines += [
            f"{row['member']:>6}  {row['accuracy']:>8.2%}  {row['mean_loss']:>9.4f}"
            for row in evaluation.member_summaries()
        ]
    digits = named_by_digits(evaluation.classes, evaluation.class_names)
    name_of = dict(zip(evaluation.classes, evaluation.class_names, strict=True))
    name_px = max(len("name"), *(len(_short(name)) for name in evaluation.class_names))
    lines += [
        "",
        "digit  precision  recall      f1  support"
        if digits
        else f"class  {'name':<{name_px}}  precision  recall      f1  support",
    ]
    for row in evaluation.per_class():
        label = f"{row['class']:>5}" + ("" if digits else f"  {_short(row['name']):<{name_px}}")
        scores = f"{row['precision']:>9.4f}  {row['recall']:>6.4f}  {row['f1']:>6.4f}"
        lines.append(f"{label}  {scores}  {row['support']:>7}")
    width = max(3, len(str(int(evaluation.confusion_matrix.max(initial=0))))) + 1
    kind = "digit" if digits else "class"
    if 4 + width * len(evaluation.classes) <= TABLE_WIDTH:
        lines += ["", f"confusion matrix (rows: true {kind}, columns: predicted)"]
        lines.append("true" + "".join(f"{label:>{width}}" for label in evaluation.classes))
        for label, counts in zip(evaluation.classes, evaluation.confusion_matrix, strict=True):
            lines.append(f"{label:>4}" + "".join(f"{int(count):>{width}}" for count in counts))
    else:
        lines += [
            "",
            f"confusion matrix: too wide for {TABLE_WIDTH} columns; see --json or render-confusion",
        ]
    confusions = evaluation.top_confusions()
    if confusions:
        lines += ["", "most frequent confusions (true -> predicted: count)"]
        pairs = [
            f"{_short(name_of[c['true']])}->{_short(name_of[c['predicted']])}: {c['count']}"
            for c in confusions
        ]
        lines += _wrapped(pairs)
    return "\n".join(lines) + "\n"


def _fit(line: str, width: int = 80) -> str:
    """Long paths keep their informative end: '...' and the last columns."""
    return line if len(line) <= width else line[:12] + "..." + line[-(width - 15) :]


# The metrics file (eval --json), read back for render-confusion --------------------


@dataclass(frozen=True)
class Confusion:
    """Counts with rows = true class and columns = predicted class, in `classes` order;
    `class_names` name them (empty: the labels as text)."""

    classes: list[int]
    matrix: np.ndarray
    split: str = ""
    class_names: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return self.class_names or [str(label) for label in self.classes]

    @property
    def accuracy(self) -> float:
        total = self.matrix.sum()
        return float(np.trace(self.matrix) / total) if total else 0.0


def read_confusion(text: str, source: str) -> Confusion:
    """The `classes`, `class_names`, `confusion_matrix` and `split` of the JSON `Evaluation.to_json`
    wrote, checked (`class_names` may be missing, in files of earlier versions)."""
    if not text.strip():  # json's "Expecting value: line 1 column 1" says less
        raise MnistkitError(f"{source}: empty, expected the JSON of eval --json")
    try:
        metrics = json.loads(text)
    except ValueError as error:
        if begins_a_history(text[:FIRST_RECORD_BYTES].encode()):
            raise MnistkitError(
                f"{source}: a training history (train --history), not the JSON of eval --json"
            ) from None
        raise MnistkitError(f"{source}: not a metrics JSON file ({error})") from None
    if not isinstance(metrics, dict) or "confusion_matrix" not in metrics or "classes" not in metrics:
        raise MnistkitError(
            f"{source}: no 'classes' and 'confusion_matrix' (expected the JSON of eval --json)"
        )
    classes, rows = metrics["classes"], metrics["confusion_matrix"]
    if not (
        isinstance(classes, list)
        and classes
        and all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c < MAX_CLASSES for c in classes)
        and len(set(classes)) == len(classes)
    ):
        raise MnistkitError(
            f"{source}: 'classes' must be a list of distinct labels 0-{MAX_CLASSES - 1}, got {classes!r}"
        )
    size = len(classes)
    names = metrics.get("class_names", [str(label) for label in classes])
    if not (
        isinstance(names, list)
        and len(names) == size
        and all(isinstance(name, str) and 0 < len(name) <= 100 for name in names)
    ):
        raise MnistkitError(f"{source}: 'class_names' must be {size} names, one per class")
    if not (
        isinstance(rows, list)
        and len(rows) == size
        and all(isinstance(row, list) and len(row) == size for row in rows)
        and all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_COUNT
            for row in rows
            for v in row
        )
        and sum(sum(row) for row in rows) <= MAX_COUNT
    ):
        raise MnistkitError(
            f"{source}: 'confusion_matrix' must be {size} rows of {size} non-negative integers, one per "
            "class, that add up to at most 2^53"
        )
    split = metrics.get("split") if isinstance(metrics.get("split"), str) else ""
    return Confusion(list(classes), np.array(rows, dtype=np.int64).reshape(size, size), split, list(names))
