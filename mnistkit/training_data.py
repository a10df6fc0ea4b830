"""The arrays a training run uses: the chosen classes, the validation split, the normalization.

numpy only; `train` places the result on its devices.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from mnistkit.arrays import VALIDATION_KEYS, check_names_fit, class_labels, class_names, dataset_name
from mnistkit.config import TrainConfig
from mnistkit.datasets import DATASETS, UNKNOWN_STYLE, named_by_digits
from mnistkit.errors import MnistkitError
from mnistkit.terms import setting

# np.bincount widens its input to int64 first: 60,000 images at once took 1.2 s of a 2-core
# machine, a million pixels at a time 0.1 s.
HISTOGRAM_CHUNK = 1 << 20


@dataclass
class Dataset:
    """One split: uint8 images (N, 28, 28) and class indices (N,), on the host or on the devices."""

    images: Any
    labels: Any

    @property
    def size(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class TrainingData:
    train: Dataset
    val: Dataset | None
    test: Dataset
    classes: list[int]  # each output's label in the dataset
    normalization: dict[str, Any]
    class_names: list[str]
    dataset: str

    def class_metadata(self) -> dict[str, Any]:
        """What the checkpoint says of the classes: labels, names, dataset, and how to prepare
        a person's image for them (as the dataset's images were made; taken as they are for a
        dataset mnistkit does not know)."""
        spec = DATASETS.get(self.dataset)
        return {
            "classes": self.classes,
            "class_names": self.class_names,
            "dataset": self.dataset,
            "preprocessing": spec.image_style if spec else UNKNOWN_STYLE,
        }


def prepare_data(arrays: Mapping[str, np.ndarray], config: TrainConfig, source: str = "data") -> TrainingData:
    """Select the classes trained on, map labels to class indices, carve the validation split,
    fix normalization."""
    check_names_fit(arrays, source, training=True)
    if own_validation := [key for key in VALIDATION_KEYS if key in arrays]:
        raise MnistkitError(
            f"{source}: holds {' and '.join(own_validation)}, which training does not read: it holds "
            f"out its validation split from the training images ({setting('val_size')}); add yours to "
            "train_images and train_labels, or leave them out"
        )
    names, dataset = class_names(arrays), dataset_name(arrays)
    classes = class_labels(config.classes, names, dataset) if config.classes else list(range(len(names)))
    lookup = np.full(len(names), -1, np.int32)
    lookup[classes] = np.arange(len(classes), dtype=np.int32)
    splits = {}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        keep = np.isin(labels, classes)
        splits[split] = Dataset(images[keep], lookup[labels[keep]])
    absent = sorted(set(range(len(classes))) - set(np.unique(splits["train"].labels).tolist()))
    if absent:
        missing = ", ".join(names[classes[index]] for index in absent)
        kind = "digit" if named_by_digits(range(len(names)), names) else "class"
        held = tuple(int(label) for index, label in enumerate(classes) if index not in absent)
        fix = f"; to train on those it holds, give {setting('classes', held)}" if len(held) > 1 else ""
        raise MnistkitError(f"{source}: no training images of {kind} {missing}{fix}")
    if splits["test"].size == 0:
        among = " of the classes trained on" if config.classes else ""
        raise MnistkitError(f"{source}: no test images{among} to measure the model on")
    train, val = splits["train"], None
    if config.val_size:
        if config.val_size >= train.size:
            raise MnistkitError(
                f"{setting('val_size', config.val_size)} leaves no training images ({train.size} available)"
            )
        order = np.random.default_rng(config.seed).permutation(train.size)
        val_rows, train_rows = np.sort(order[: config.val_size]), np.sort(order[config.val_size :])
        val = Dataset(train.images[val_rows], train.labels[val_rows])
        train = Dataset(train.images[train_rows], train.labels[train_rows])
    normalization = normalization_of(config.normalize, train.images)
    return TrainingData(
        train, val, splits["test"], classes, normalization, [names[label] for label in classes], dataset
    )


def normalization_of(kind: str, train_images: np.ndarray) -> dict[str, Any]:
    """Unit scaling, or the training pixels' mean and std (exact, from a histogram) after /255."""
    if kind == "unit":
        return {"kind": "unit"}
    counts = np.zeros(256, np.int64)
    flat = train_images.ravel()
    for start in range(0, flat.size, HISTOGRAM_CHUNK):
        counts += np.bincount(flat[start : start + HISTOGRAM_CHUNK], minlength=256)
    counts = counts.astype(np.float64)
    values = np.arange(256, dtype=np.float64) / 255.0
    mean = float((counts * values).sum() / counts.sum())
    std = float(math.sqrt((counts * (values - mean) ** 2).sum() / counts.sum()))
    return {"kind": "standard", "mean": mean, "std": std if std > 0 else 1.0}
