"""The arrays a training run uses: the chosen classes, the validation split, the normalization.

numpy only; `train` places the result on its devices.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from mnistkit.config import TrainConfig
from mnistkit.errors import MnistkitError


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
    classes: list[int]
    normalization: dict[str, Any]


def prepare_data(arrays: Mapping[str, np.ndarray], config: TrainConfig, source: str = "data") -> TrainingData:
    """Select `--digits`, map labels to class indices, carve the validation split, fix normalization."""
    classes = list(config.digits)
    lookup = np.full(10, -1, np.int32)
    lookup[classes] = np.arange(len(classes), dtype=np.int32)
    splits = {}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        keep = np.isin(labels, classes)
        splits[split] = Dataset(images[keep], lookup[labels[keep]])
    absent = sorted(set(range(len(classes))) - set(np.unique(splits["train"].labels).tolist()))
    if absent:
        missing = ",".join(str(classes[index]) for index in absent)
        raise MnistkitError(
            f"{source}: --digits {','.join(map(str, classes))}: no training images of digit {missing}"
        )
    train, val = splits["train"], None
    if config.val_size:
        if config.val_size >= train.size:
            raise MnistkitError(
                f"--val-size {config.val_size} leaves no training images ({train.size} available)"
            )
        order = np.random.default_rng(config.seed).permutation(train.size)
        val_rows, train_rows = np.sort(order[: config.val_size]), np.sort(order[config.val_size :])
        val = Dataset(train.images[val_rows], train.labels[val_rows])
        train = Dataset(train.images[train_rows], train.labels[train_rows])
    return TrainingData(train, val, splits["test"], classes, normalization_of(config.normalize, train.images))


def normalization_of(kind: str, train_images: np.ndarray) -> dict[str, Any]:
    """Unit scaling, or the training pixels' mean and std (exact, from a histogram) after /255."""
    if kind == "unit":
        return {"kind": "unit"}
    counts = np.bincount(train_images.ravel(), minlength=256).astype(np.float64)
    values = np.arange(256, dtype=np.float64) / 255.0
    mean = float((counts * values).sum() / counts.sum())
    std = float(math.sqrt((counts * (values - mean) ** 2).sum() / counts.sum()))
    return {"kind": "standard", "mean": mean, "std": std if std > 0 else 1.0}
