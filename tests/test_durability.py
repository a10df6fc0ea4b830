"""Every artifact is made durable in order: its temp file is fsynced, holding all its bytes,
before the rename onto the final name, and the folder is fsynced after it, so a power cut
leaves the old file or the new one. os.fsync and os.replace are wrapped to record the order
in which the real public functions call them."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import draw_large_digit, fetch_table
from PIL import Image

from mnistkit.architectures import param_shapes
from mnistkit.arrays import save_arrays
from mnistkit.checkpoint import save_checkpoint
from mnistkit.cli import cli
from mnistkit.fetch import fetch
from mnistkit.render import save_picture


@dataclass(frozen=True)
class Fsync:
    path: str
    size_bytes: int | None  # None for a folder


@dataclass(frozen=True)
class Replace:
    source: str
    target: str
    size_bytes: int


class DurabilityLog:
    """The fsync and replace calls of this process, in order, by path (fds are mapped back
    to paths through /proc/self/fd)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[Fsync | Replace] = []
        real_fsync, real_replace = os.fsync, os.replace

        def fsync(fd: int) -> None:
            info = os.fstat(fd)
            size_bytes = None if stat.S_ISDIR(info.st_mode) else info.st_size
            path = os.readlink(f"/proc/self/fd/{fd}")
            real_fsync(fd)
            self.calls.append(Fsync(path, size_bytes))

        def replace(source: str | os.PathLike[str], target: str | os.PathLike[str], **kwargs) -> None:
            size_bytes = os.stat(source).st_size
            real_replace(source, target, **kwargs)
            self.calls.append(Replace(os.path.realpath(source), os.path.realpath(target), size_bytes))

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "replace", replace)

    def assert_durable(self, *finals: Path) -> None:
        """Each of `finals` was put in place by a rename, and every rename recorded was
        preceded by an fsync of its source holding all its bytes and followed by an fsync
        of its folder."""
        replaced = {call.target for call in self.calls if isinstance(call, Replace)}
        missing = {os.path.realpath(final) for final in finals} - replaced
        assert not missing, f"not written by a rename: {sorted(missing)}"
        for position, call in enumerate(self.calls):
            if not isinstance(call, Replace):
                continue
            folder = os.path.dirname(call.target)
            assert os.path.dirname(call.source) == folder, call
            before, after = self.calls[:position], self.calls[position + 1 :]
            assert Fsync(call.source, call.size_bytes) in before, f"temp file not fsynced whole before {call}"
            assert Fsync(folder, None) in after, f"folder not fsynced after {call}"


@pytest.fixture
def durability(monkeypatch: pytest.MonkeyPatch) -> DurabilityLog:
    return DurabilityLog(monkeypatch)


@pytest.fixture
def logreg_checkpoint(tmp_path: Path) -> Path:
    """A logreg checkpoint that needs no training (and so no jax): all zeros."""
    architecture = {"model": "logreg", "num_classes": 10}
    params = {name: np.zeros(shape, np.float32) for name, shape in param_shapes(architecture).items()}
    path = tmp_path / "logreg.safetensors"
    save_checkpoint(
        path,
        params,
        {"architecture": architecture, "normalization": {"kind": "unit"}, "classes": list(range(10))},
    )
    return path


def invoke(*args: str | Path) -> None:
    result = CliRunner().invoke(cli, [str(arg) for arg in args])
    assert result.exit_code == 0, result.output


def test_checkpoint_new_and_overwritten(tmp_path: Path, durability: DurabilityLog) -> None:
    architecture = {"model": "logreg", "num_classes": 10}
    metadata = {"architecture": architecture, "normalization": {"kind": "unit"}, "classes": list(range(10))}
    path = tmp_path / "model.safetensors"
    for value in (0.0, 1.0):
        params = {
            name: np.full(shape, value, np.float32) for name, shape in param_shapes(architecture).items()
        }
        save_checkpoint(path, params, metadata)
    assert sum(isinstance(call, Replace) for call in durability.calls) == 2
    durability.assert_durable(path)


def test_npz(tmp_path: Path, durability: DurabilityLog, small_data: dict[str, np.ndarray]) -> None:
    path = tmp_path / "mnist.npz"
    save_arrays(path, small_data)
    durability.assert_durable(path)


def test_png(tmp_path: Path, durability: DurabilityLog) -> None:
    path = tmp_path / "picture.png"
    save_picture(Image.new("L", (8, 8), 128), path)
    durability.assert_durable(path)


def test_fetched_files(tmp_path: Path, durability: DurabilityLog, fetch_files: dict[str, bytes]) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name, data in fetch_files.items():
        (mirror / name).write_bytes(data)
    out_dir = tmp_path / "raw"
    fetch(out_dir, [mirror.as_uri()], files=fetch_table(fetch_files), log=lambda line: None)
    durability.assert_durable(*(out_dir / name for name in fetch_files))


def test_eval_metrics_json(
    tmp_path: Path, durability: DurabilityLog, logreg_checkpoint: Path, synthetic_npz: Path
) -> None:
    metrics = tmp_path / "metrics.json"
    invoke("eval", logreg_checkpoint, synthetic_npz, "--json", metrics)
    durability.assert_durable(metrics)


def test_predictions_and_preprocessed_images(
    tmp_path: Path, durability: DurabilityLog, logreg_checkpoint: Path
) -> None:
    images = []
    for digit in (3, 7):
        images.append(tmp_path / f"digit-{digit}.png")
        Image.fromarray(draw_large_digit(digit)).save(images[-1])
    predictions, preprocessed = tmp_path / "predictions.tsv", tmp_path / "seen"
    invoke("predict", logreg_checkpoint, *images, "-o", predictions, "--save-preprocessed", preprocessed)
    durability.assert_durable(
        predictions, preprocessed / "000001-digit-3.png", preprocessed / "000002-digit-7.png"
    )


@pytest.mark.slow
def test_training_checkpoint_and_history(
    tmp_path: Path, durability: DurabilityLog, synthetic_npz: Path
) -> None:
    """Every file train writes (checkpoint, history each epoch, and any other) keeps the order.
    Slow: it starts jax and compiles."""
    checkpoint, history = tmp_path / "model.safetensors", tmp_path / "model.history.jsonl"
    invoke(
        "train", synthetic_npz, "-o", checkpoint, "--history", history, "--model", "logreg", "--epochs", "2"
    )
    durability.assert_durable(checkpoint, history)
