"""Training settings as one record: the CLI fills it, train reads it, the checkpoint stores it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from mnistkit.errors import MnistkitError
from mnistkit.inference import MAX_ENSEMBLE_MEMBERS

MODELS = ("logreg", "mlp", "cnn")
ACTIVATIONS = ("relu", "tanh")
OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "warmup-cosine")
NORMALIZATIONS = ("unit", "standard")
AUGMENTATIONS = ("none", "shift")


@dataclass(frozen=True)
class TrainConfig:
    model: str = "mlp"
    hidden: tuple[int, ...] = (128,)
    activation: str = "relu"
    epochs: int = 5
    batch_size: int = 128
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "constant"
    normalize: str = "unit"
    val_size: int = 0
    digits: tuple[int, ...] = tuple(range(10))
    augment: str = "none"
    eval_test_each_epoch: bool = False
    seed: int = 0
    seeds: tuple[int, ...] = ()  # an ensemble: one member per seed, trained at once
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_choice("model", self.model, MODELS)
        _check_choice("activation", self.activation, ACTIVATIONS)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("normalize", self.normalize, NORMALIZATIONS)
        _check_choice("augment", self.augment, AUGMENTATIONS)
        if any(width < 1 for width in self.hidden):
            raise MnistkitError(f"--hidden: layer widths must be positive, got {self.hidden}")
        if self.epochs < 1:
            raise MnistkitError(f"--epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise MnistkitError(f"--batch-size must be at least 1, got {self.batch_size}")
        if not self.lr > 0:
            raise MnistkitError(f"--lr must be positive, got {self.lr}")
        if self.weight_decay < 0:
            raise MnistkitError(f"--weight-decay must be non-negative, got {self.weight_decay}")
        if self.val_size < 0:
            raise MnistkitError(f"--val-size must be non-negative, got {self.val_size}")
        digits = self.digits
        if len(digits) < 2 or len(set(digits)) != len(digits) or any(d not in range(10) for d in digits):
            raise MnistkitError(
                f"--digits: need two or more distinct digits from 0-9, got {','.join(map(str, digits))}"
            )
        if self.seeds and not 2 <= len(set(self.seeds)) == len(self.seeds) <= MAX_ENSEMBLE_MEMBERS:
            raise MnistkitError(
                f"--seeds: an ensemble needs 2 to {MAX_ENSEMBLE_MEMBERS} distinct seeds, "
                f"got {','.join(map(str, self.seeds))}"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise MnistkitError(f"unknown training settings: {', '.join(unknown)}")
        values = dict(values)
        for name in ("hidden", "digits", "seeds"):
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise MnistkitError(f"--{name}: {value!r} is not one of {', '.join(choices)}")


def parse_int_list(text: str, what: str) -> tuple[int, ...]:
    """'100,200' -> (100, 200); the error names the option."""
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip() != "")
    except ValueError:
        raise MnistkitError(f"{what}: expected comma-separated integers, got {text!r}") from None
    if not values:
        raise MnistkitError(f"{what}: expected at least one integer, got {text!r}")
    return values
