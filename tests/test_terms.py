"""The checks shared by the commands and the Python API name a setting as its caller writes
it: `--batch-size 64` in a shell, `batch_size=64` in Python."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from mnistkit import worker_pool
from mnistkit.cli import cli
from mnistkit.config import TrainConfig
from mnistkit.errors import MnistkitError
from mnistkit.image_files import load_digits
from mnistkit.terms import command_line_terms, setting


@pytest.mark.parametrize(
    ("named", "option", "keyword"),
    [
        (("batch_size",), "--batch-size", "batch_size"),
        (("model", "cnn"), "--model cnn", 'model="cnn"'),
        (("lr", 0.5), "--lr 0.5", "lr=0.5"),
        (("lr", 1e-6), "--lr 1e-06", "lr=1e-06"),
        (("val_size", 600), "--val-size 600", "val_size=600"),
        (("hidden", (128, 64)), "--hidden 128,64", "hidden=(128, 64)"),
        (("preprocess", False), "--no-preprocess", "preprocess=False"),
        (("shift_average", True), "--shift-average", "shift_average=True"),
    ],
)
def test_a_setting_is_named_as_an_option_or_as_a_keyword(named: tuple, option: str, keyword: str) -> None:
    assert setting(*named) == keyword
    with command_line_terms():
        assert setting(*named) == option
    assert setting(*named) == keyword  # and back once the command is done


def test_the_same_check_reads_in_the_terms_of_each_caller(tmp_path: Path, synthetic_npz: Path) -> None:
    with pytest.raises(
        MnistkitError, match=r'^model="logreg" has no hidden layers; drop hidden, or use model="mlp"$'
    ):
        TrainConfig(model="logreg", hidden=(128,))
    with pytest.raises(MnistkitError, match=r"^epochs must be at least 1, got 0$"):
        TrainConfig(epochs=0)
    result = CliRunner().invoke(
        cli, ["train", str(synthetic_npz), "-o", str(tmp_path / "m.safetensors"), "--epochs", "0"]
    )
    assert result.exit_code == 1 and "Error: --epochs must be at least 1, got 0\n" in result.output
    refused = CliRunner().invoke(
        cli,
        [
            "train",
            str(synthetic_npz),
            "-o",
            str(tmp_path / "m.safetensors"),
            "--model",
            "logreg",
            "--hidden",
            "9",
        ],
    )
    assert refused.exit_code == 1
    assert "--model logreg has no hidden layers; drop --hidden, or use --model mlp" in refused.output
    with pytest.raises(MnistkitError, match=r"^epochs must be at least 1, got 0$"):
        TrainConfig(epochs=0)  # the command left Python's terms as they were
    assert not (tmp_path / "m.safetensors").exists()


def test_predicts_workers_name_settings_as_their_parent_does(tmp_path: Path, monkeypatch) -> None:
    """Workers start afresh, not forked, once jax is imported: they inherit nothing."""
    monkeypatch.setattr(worker_pool, "start_method", lambda: "forkserver")
    paths = []
    for index in range(3):
        paths.append(str(tmp_path / f"{index}.png"))
        Image.fromarray(np.zeros((40, 28), np.uint8)).save(paths[-1])

    def errors() -> list[str]:
        chunks = load_digits(paths, preprocess=False, workers=2, chunk_size=1)
        return [digit.error for chunk in chunks for digit in chunk]

    assert all("pixels; preprocess=False needs 28x28" in error for error in errors())
    with command_line_terms():
        assert all("pixels; --no-preprocess needs 28x28" in error for error in errors())


def test_a_command_in_another_thread_leaves_this_threads_terms_alone() -> None:
    """`serve` started from a notebook runs its command in a thread; the notebook's own calls
    still speak Python."""
    inside, done = threading.Event(), threading.Event()
    seen = {}

    def command() -> None:
        with command_line_terms():
            seen["command"] = setting("epochs", 0)
            inside.set()
            done.wait(10)

    thread = threading.Thread(target=command)
    thread.start()
    inside.wait(10)
    try:
        with pytest.raises(MnistkitError, match=r"^epochs must be at least 1, got 0$"):
            TrainConfig(epochs=0)
    finally:
        done.set()
        thread.join()
    assert seen["command"] == "--epochs 0"


def test_draw_embedding_refuses_a_count_below_one(synthetic_data, tmp_path: Path) -> None:
    import mnistkit

    model = mnistkit.train(synthetic_data, "embedding", epochs=1, hidden=(8, 2), verbose=False)
    for count in (0, -5):
        with pytest.raises(MnistkitError, match=rf"^count must be at least 1, got {count}$"):
            mnistkit.draw_embedding(model, synthetic_data, count=count)


def test_a_refusal_names_the_keyword_of_the_call_it_came_through(tmp_path: Path) -> None:
    import mnistkit

    with pytest.raises(MnistkitError, match=r"^name: 'digits' is not one of mnist, fashion-mnist"):
        mnistkit.load_dataset("digits", folder=tmp_path)
    with pytest.raises(MnistkitError, match=r"^dataset: 'digits' is not one of mnist, fashion-mnist"):
        mnistkit.download(tmp_path, dataset="digits")
    assert not list(tmp_path.iterdir())
