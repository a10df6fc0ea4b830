"""The usual mistakes of a first hour get errors that say what to do: one line, exit 1."""

from __future__ import annotations

import gzip
import shlex
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import write_idx
from PIL import Image

from mnistkit.architectures import param_shapes
from mnistkit.checkpoint import save_checkpoint
from mnistkit.cli import cli
from mnistkit.datasets import MNIST_FILES
from mnistkit.errors import MnistkitError

MLP = {"model": "mlp", "hidden": [16], "activation": "relu", "num_classes": 10}
UNIT = {"kind": "unit"}


def run(*args: str | Path):
    return CliRunner().invoke(cli, [str(arg) for arg in args])


def one_error(result) -> str:
    assert result.exit_code == 1, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


def random_checkpoint(path: Path, architecture: dict) -> Path:
    rng = np.random.default_rng(0)
    params = {
        name: (0.1 * rng.standard_normal(shape)).astype(np.float32)
        for name, shape in param_shapes(architecture).items()
    }
    save_checkpoint(
        path, params, {"architecture": architecture, "normalization": UNIT, "classes": list(range(10))}
    )
    return path


def test_swapped_arguments_are_named_for_what_they_are(tmp_path: Path, synthetic_npz: Path) -> None:
    model = random_checkpoint(tmp_path / "model.safetensors", MLP)
    line = one_error(run("eval", synthetic_npz, model))
    assert line == (
        f"Error: {synthetic_npz}: this is a zip archive such as an .npz data file (from parse-to-npz), "
        "not a checkpoint (a checkpoint is the .safetensors file `mnistkit train` writes; "
        "are two arguments swapped?)"
    )
    line = one_error(run("render-samples", model, "-o", tmp_path / "s.png"))
    assert "this is a safetensors file (such as an mnistkit checkpoint), not a valid .npz file" in line


def test_dash_for_a_file_read_only_from_disk_says_so(
    tmp_path: Path, synthetic_npz: Path, monkeypatch
) -> None:
    """`parse-to-npz -o - | mnistkit train -`: an .npz (a zip) and a checkpoint are read from
    files; `-` there is named as standard input, not as a missing file called `-`."""
    monkeypatch.chdir(tmp_path)
    model = random_checkpoint(tmp_path / "model.safetensors", MLP)
    before = sorted(tmp_path.iterdir())
    for args, what in [
        (("train", "-", "-o", "m.safetensors"), "an .npz file"),
        (("eval", model, "-"), "an .npz file"),
        (("info", "-"), "a checkpoint"),
    ]:
        line = one_error(run(*args))
        assert line == (
            f"Error: -: no such file, and {what} is not read from standard input here; "
            "save it to a file and give that file's path"
        )
    assert sorted(tmp_path.iterdir()) == before
    Path("-").write_bytes(synthetic_npz.read_bytes())  # a file named `-` is still that file
    assert run("eval", model, "-").exit_code == 0


def test_dash_for_an_output_folder_is_refused_not_made(
    tmp_path: Path, synthetic_npz: Path, monkeypatch
) -> None:
    """`-` is stdin or stdout everywhere else: a folder named `-` made quietly surprised."""
    monkeypatch.chdir(tmp_path)
    model = random_checkpoint(tmp_path / "model.safetensors", MLP)
    digit = tmp_path / "digit.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(digit)
    for args in [
        ("fetch", "--out", "-", "--no-default-mirrors"),
        ("fetch", "--cache", "-", "--no-default-mirrors"),
        ("predict", model, digit, "--save-preprocessed", "-"),
        ("render-samples", synthetic_npz, "-o", "s.png", "--export-dir", "-"),
    ]:
        result = run(*args)
        assert result.exit_code == 2, result.output
        assert "`-` is not a folder here (give ./- for a folder of that name)" in result.stderr
        assert not Path("-").exists() and not Path("s.png").exists()


def test_an_empty_path_is_a_usage_error_not_the_current_folder(
    tmp_path: Path, synthetic_npz: Path, monkeypatch
) -> None:
    """`Path("")` is `.`: an unset shell variable named the current folder, and parse-to-npz
    then offered to fetch MNIST into it."""
    monkeypatch.chdir(tmp_path)
    model = random_checkpoint(tmp_path / "model.safetensors", MLP)
    digit = tmp_path / "digit.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(digit)
    before = sorted(tmp_path.iterdir())
    for args, named in [
        (("predict", "", digit), "'CKPT'"),
        (("predict", model, digit, ""), "'IMAGE...'"),
        (("predict", model, digit, "-o", ""), "'-o' / '--output'"),
        (("predict", model, digit, "--save-preprocessed", ""), "'--save-preprocessed'"),
        (("eval", model, ""), "'[NPZ]'"),
        (("eval", model, synthetic_npz, "--json", ""), "'--json'"),
        (("info", ""), "'CKPT'"),
        (("parse-to-npz", "", "-o", "out.npz"), "'RAW_DIR'"),
        (("train", "", "-o", "m.safetensors"), "'DATA'"),
        (("train", synthetic_npz, "-o", ""), "'-o' / '--output'"),
        (("render-samples", synthetic_npz, "-o", ""), "'-o' / '--output'"),
        (("render-curves", ""), "'HISTORY'"),
        (("fetch", "--out", "", "--no-default-mirrors"), "'--out'"),
    ]:
        result = run(*args)
        assert result.exit_code == 2, (args, result.output)
        assert f"Invalid value for {named}: empty path (an unset shell variable?)" in result.stderr, args
        assert sorted(tmp_path.iterdir()) == before, args


def test_an_empty_path_from_python_is_named_as_such(tmp_path: Path, synthetic_npz: Path, monkeypatch) -> None:
    import mnistkit

    monkeypatch.chdir(tmp_path)
    model = mnistkit.load(random_checkpoint(tmp_path / "model.safetensors", MLP))
    for call, message in [
        (lambda: mnistkit.load(""), "an empty path, expected a checkpoint"),
        (lambda: mnistkit.predict_images(model, [""]), "an empty path, expected an image file"),
        (lambda: model.save(""), "an empty path, expected a file path to write"),
    ]:
        with pytest.raises(MnistkitError, match=message):
            call()
    for fetches_into_a_folder in (mnistkit.load_mnist, mnistkit.download):
        with pytest.raises(MnistkitError, match="an empty path, expected a folder"):
            fetches_into_a_folder("")
    with pytest.raises(MnistkitError, match="an empty path, expected a folder"):
        mnistkit.load_dataset("mnist", "")
    assert not (tmp_path / "raw").exists()  # nothing fetched here


def test_parse_to_npz_of_a_siblings_folder_without_dataset_names_the_dataset(
    tmp_path: Path, synthetic_data
) -> None:
    """The hint was `mnistkit fetch --out DIR`, which would put MNIST beside EMNIST's files."""
    from mnistkit.datasets import dataset_spec

    raw = tmp_path / "emnist-letters"
    raw.mkdir()
    for array, name in dataset_spec("emnist-letters").files.items():
        write_idx(raw / name, synthetic_data[array])
    line = one_error(run("parse-to-npz", raw, "-o", tmp_path / "x.npz"))
    assert line == (
        f"Error: {raw / MNIST_FILES['train_images']}: no such file; the folder holds the files of "
        "EMNIST letters: read them with `mnistkit parse-to-npz --dataset emnist-letters`"
    )


def test_parse_to_npz_given_a_file_asks_for_the_folder(tmp_path: Path, synthetic_npz: Path) -> None:
    line = one_error(run("parse-to-npz", synthetic_npz, "-o", tmp_path / "out.npz"))
    assert line.startswith(
        f"Error: {synthetic_npz}: is a file; parse-to-npz reads the folder holding the four"
    )
    assert "mnistkit fetch --out data/raw" in line


def test_a_keras_npz_comes_with_a_command_that_converts_it(tmp_path: Path, synthetic_data) -> None:
    """The suggested one-liner, run as printed, makes an .npz that mnistkit reads."""
    keras = tmp_path / "keras-mnist.npz"
    np.savez(
        keras,
        x_train=synthetic_data["train_images"],
        y_train=synthetic_data["train_labels"],
        x_test=synthetic_data["test_images"],
        y_test=synthetic_data["test_labels"],
    )
    line = one_error(run("render-samples", keras, "-o", tmp_path / "s.png"))
    assert line.startswith(
        f"Error: {keras}: missing arrays test_images, test_labels (it holds x_test, x_train"
    )
    command = line.split("Convert it with: ", 1)[1]
    subprocess.run(shlex.split(command), cwd=tmp_path, check=True, timeout=60)
    assert run("render-samples", tmp_path / "mnist.npz", "-o", tmp_path / "s.png").exit_code == 0


def test_a_training_set_alone_is_told_to_hold_some_out(tmp_path: Path, synthetic_data) -> None:
    """A dataset of one's own with no test split was told to make an .npz with parse-to-npz,
    which reads only MNIST's kind of files."""
    alone = tmp_path / "mine.npz"
    np.savez(alone, train_images=synthetic_data["train_images"], train_labels=synthetic_data["train_labels"])
    assert one_error(run("train", alone, "-o", tmp_path / "m.safetensors")) == (
        f"Error: {alone}: missing arrays test_images, test_labels (it holds train_images, train_labels); "
        "beside them, save images held out from training, to score the model, as test_images, test_labels"
    )


def test_eval_needs_only_the_test_arrays(tmp_path: Path, synthetic_data) -> None:
    model = random_checkpoint(tmp_path / "model.safetensors", MLP)
    test_only = tmp_path / "test-only.npz"
    np.savez(test_only, test_images=synthetic_data["test_images"], test_labels=synthetic_data["test_labels"])
    result = run("eval", model, test_only)
    assert result.exit_code == 0, result.output
    assert "images 200" in result.stdout
    line = one_error(run("eval", model, test_only, "--split", "train"))
    assert "missing arrays train_images, train_labels" in line


def test_predict_on_a_folder_suggests_its_files(tmp_path: Path) -> None:
    model = random_checkpoint(tmp_path / "model.safetensors", MLP)
    (tmp_path / "digits").mkdir()
    result = run("predict", model, tmp_path / "digits")
    assert result.exit_code == 1
    folder = tmp_path / "digits"
    assert result.stderr == (
        f"{folder}: is a directory, expected an image file; give its images ({folder}/*.png) "
        f"or their paths on stdin: find {folder} -name '*.png' | mnistkit predict CKPT -\n"
    )
    for name in ("a.JPG", "b.JPG", "c.png", "notes.txt", "d.pdf", "e.pdf", "f.pdf"):  # a phone's photos
        (folder / name).write_bytes(b"")
    for name in ("g.png", "h.png"):  # folders, not images
        (folder / name).mkdir()
    result = run("predict", model, folder)
    assert f"give its images ({folder}/*.JPG) or their paths on stdin: find {folder} -name '*.JPG' |" in (
        result.stderr
    )


def test_weights_of_a_logreg_ensemble_say_how_it_was_trained(tmp_path: Path) -> None:
    ensemble = {
        "model": "ensemble",
        "members": 3,
        "member": {"model": "logreg", "num_classes": 10},
        "num_classes": 10,
    }
    model = random_checkpoint(tmp_path / "logreg5.safetensors", ensemble)
    line = one_error(run("render-weights", model, "-o", tmp_path / "w.png"))
    assert "an ensemble of 3 logreg models (trained with --ensemble or --seeds)" in line
    assert "train it without --ensemble" in line
    # An ensemble of embedding nets was told to train with --preset embedding, as it had been.
    embedding = {"model": "mlp", "hidden": [8, 2], "activation": "relu", "num_classes": 10}
    model = random_checkpoint(tmp_path / "embedding3.safetensors", {**ensemble, "member": embedding})
    line = one_error(run("render-embedding", model, tmp_path / "unread.npz", "-o", tmp_path / "e.png"))
    assert line.endswith(
        "an ensemble of 3 mlp models (trained with --ensemble or --seeds); this picture draws one "
        "model's 2-unit layer: train it without --ensemble"
    ), line
    wide = {**ensemble, "member": {**embedding, "hidden": [16]}}  # its members have none either
    model = random_checkpoint(tmp_path / "mlp3.safetensors", wide)
    line = one_error(run("render-embedding", model, tmp_path / "unread.npz", "-o", tmp_path / "e.png"))
    assert "no 2-unit hidden layer to plot" in line and "train one with --preset embedding" in line, line


def test_a_damaged_download_points_at_fetch(tmp_path: Path, small_data) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    for key, name in MNIST_FILES.items():
        write_idx(raw / name, small_data[key])
    damaged = raw / MNIST_FILES["train_images"]
    damaged.write_bytes(gzip.compress(damaged.read_bytes())[:-20])
    line = one_error(run("parse-to-npz", raw, "-o", tmp_path / "mnist.npz"))
    assert line.startswith(f"Error: {damaged}: ")
    assert line.endswith(f"; `mnistkit fetch --out {raw}` puts a verified copy there")


@pytest.mark.parametrize("name", ["model.safetensors", "digits.png"])
def test_info_names_what_it_was_given_instead(tmp_path: Path, synthetic_data, name: str) -> None:
    from PIL import Image

    path = tmp_path / name
    if name.endswith(".png"):
        Image.fromarray(synthetic_data["test_images"][0]).save(path)
        assert "this is a PNG image, not a checkpoint" in one_error(run("info", path))
    else:
        random_checkpoint(path, MLP)
        assert run("info", path).exit_code == 0


def test_an_output_name_over_255_bytes_is_one_line(tmp_path: Path, synthetic_npz: Path) -> None:
    """Each was a traceback ending in OSError: File name too long."""
    model = random_checkpoint(tmp_path / "model.safetensors", MLP)
    picture = tmp_path / "digit.png"
    Image.fromarray(np.full((28, 28), 255, np.uint8)).save(picture)
    long = tmp_path / ("c" * 300)
    commands = [
        ("render-weights", model, "-o", f"{long}.png"),
        ("eval", model, synthetic_npz, "--json", f"{long}.json"),
        ("render-samples", synthetic_npz, "-o", tmp_path / "s.png", "--count", "1", "--export-dir", long),
        ("predict", model, picture, "--save-preprocessed", long),
        ("fetch", "--out", long, "--no-default-mirrors", "--mirror", tmp_path),
    ]
    for command in commands:
        line = one_error(run(*command))
        assert line.startswith(f"Error: {long}") and "File name too long" in line, line
    assert sorted(tmp_path.iterdir()) == sorted([picture, model, synthetic_npz])  # nothing written
