"""The presets on real MNIST reach their documented test accuracy (slow: a few minutes of CPU in all)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import REAL_MNIST_DIR, requires_real_mnist

from mnistkit.checkpoint import load_checkpoint
from mnistkit.cli import cli

pytestmark = [pytest.mark.slow, requires_real_mnist]


@pytest.fixture(scope="module")
def real_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mnistkit.arrays import save_arrays
    from mnistkit.idx import read_mnist_dir

    path = tmp_path_factory.mktemp("real") / "mnist.npz"
    save_arrays(path, read_mnist_dir(REAL_MNIST_DIR))
    return path


def _train(real_npz: Path, tmp_path: Path, *options: str):
    output = tmp_path / "model.safetensors"
    result = CliRunner().invoke(cli, ["train", str(real_npz), "-o", str(output), *options])
    assert result.exit_code == 0, result.output
    return load_checkpoint(output)


@pytest.mark.parametrize(
    ("options", "minimum_accuracy"),
    [
        ([], 0.98),  # the default of `make all`
        (["--model", "logreg"], 0.925),
        (["--preset", "3v8"], 0.995),
    ],
    ids=["default-mlp", "logreg", "3v8"],
)
def test_preset_reaches_its_accuracy(
    real_npz: Path, tmp_path: Path, options: list[str], minimum_accuracy: float
):
    checkpoint = _train(real_npz, tmp_path, *options)
    assert checkpoint.metadata["metrics"]["test_accuracy"] >= minimum_accuracy


def test_seed_preset_repeats_the_seed_trainer(real_npz: Path, tmp_path: Path) -> None:
    """Same math as the seed trainer's loop, last partial batch included: its 95.6%."""
    checkpoint = _train(real_npz, tmp_path, "--preset", "seed")
    assert round(checkpoint.metadata["metrics"]["test_accuracy"], 3) == 0.956
    assert [record["epoch"] for record in checkpoint.metadata["history"]] == [1, 2, 3, 4, 5]
    assert all(record["test_accuracy"] is not None for record in checkpoint.metadata["history"])


def test_cnn_reaches_99_2_percent(real_npz: Path, tmp_path: Path) -> None:
    checkpoint = _train(real_npz, tmp_path, "--model", "cnn")
    assert checkpoint.metadata["config"]["epochs"] <= 10
    assert checkpoint.metadata["metrics"]["test_accuracy"] >= 0.992
    with np.load(real_npz, allow_pickle=False) as arrays:
        images, labels = arrays["test_images"][:2000], arrays["test_labels"][:2000]
    numpy_accuracy = np.mean(checkpoint.predict_probabilities(images).argmax(axis=1) == labels)
    assert numpy_accuracy >= 0.99


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_documented_embedding_command_learns_for_every_seed(
    real_npz: Path, tmp_path: Path, seed: int
) -> None:
    """`train --preset embedding` (README, render-embedding --help): 94.2-94.9% over seeds 0-4."""
    checkpoint = _train(real_npz, tmp_path, "--preset", "embedding", "--seed", str(seed))
    assert checkpoint.metadata["metrics"]["test_accuracy"] >= 0.93
