"""The pictures: drawn from small synthetic inputs through the CLI and the library, then
checked pixel by pixel where a property can be checked (digits in their cells, mistakes in
confidence order, heat-map shades following the counts), and byte for byte for determinism."""

from __future__ import annotations

import itertools
import json
import math
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import REAL_MNIST_DIR, requires_real_mnist
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

import mnistkit
from mnistkit.charts import BLUE_WHITE_RED, DIGIT_COLOURS, blend, nice_ticks, tick_labels
from mnistkit.checkpoint import load_checkpoint, save_checkpoint
from mnistkit.cli import cli
from mnistkit.datasets import DATASETS
from mnistkit.errors import MnistkitError
from mnistkit.evaluation import distinct_percent, read_confusion
from mnistkit.history import METRICS, read_history
from mnistkit.inference import dense_stack, normalize
from mnistkit.plots import bottleneck_values, confusion_cell_box, count_ticks, curves_image, head_logits
from mnistkit.render import SampleOptions, samples_picture, samples_title

CLASSES = list(range(10))


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


def assert_failed_cleanly(result, output: Path, *fragments: str) -> None:
    """Exit 1, one `Error:` line naming the problem, no traceback, no picture."""
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0]
    assert not output.exists()
    assert not list(output.parent.glob(f".{output.name}.*"))


def fit_logreg(images: np.ndarray, labels: np.ndarray, sharpness: float = 6.0) -> dict[str, np.ndarray]:
    """A linear classifier by ridge regression on one-hot targets: known, imperfect, instant."""
    inputs = np.hstack([images.reshape(len(images), -1) / 255.0, np.ones((len(images), 1))])
    targets = np.eye(10)[labels]
    ridge = 30.0 * np.eye(inputs.shape[1])
    solution = np.linalg.solve(inputs.T @ inputs + ridge, inputs.T @ targets) * sharpness
    return {
        "dense_0.kernel": solution[:-1].astype(np.float32),
        "dense_0.bias": solution[-1].astype(np.float32),
    }


def write_logreg(
    path: Path, params: dict[str, np.ndarray], classes: list[int] = CLASSES, dataset: str = "mnist"
) -> Path:
    metadata = {
        "architecture": {"model": "logreg", "num_classes": len(classes)},
        "normalization": {"kind": "unit"},
        "classes": classes,
    }
    if dataset != "mnist":
        spec = DATASETS[dataset]
        metadata |= {"dataset": dataset, "class_names": [spec.class_names[c] for c in classes]}
    save_checkpoint(path, params, metadata)
    return path


def write_mlp(
    path: Path, hidden: list[int], classes: list[int] = CLASSES, seed: int = 0, views: tuple[str, ...] = ()
) -> Path:
    rng = np.random.default_rng(seed)
    widths = [784, *hidden, len(classes)]
    params = {}
    for index, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
        params[f"dense_{index}.kernel"] = (rng.normal(size=(fan_in, fan_out)) / np.sqrt(fan_in)).astype(
            np.float32
        )
        params[f"dense_{index}.bias"] = rng.normal(scale=0.1, size=fan_out).astype(np.float32)
    metadata = {
        "architecture": {"model": "mlp", "hidden": hidden, "activation": "relu", "num_classes": len(classes)},
        "normalization": {"kind": "standard", "mean": 0.13, "std": 0.31},
        "classes": classes,
    }
    metadata["architecture"].update(dict.fromkeys(views, True))
    save_checkpoint(path, params, metadata)
    return path


@pytest.fixture(scope="module")
def logreg_params(synthetic_data) -> dict[str, np.ndarray]:
    return fit_logreg(synthetic_data["train_images"], synthetic_data["train_labels"])


@pytest.fixture
def logreg_path(tmp_path: Path, logreg_params) -> Path:
    return write_logreg(tmp_path / "logreg.safetensors", logreg_params)


def test_sample_grid_cells_hold_the_digits_pixels(synthetic_data):
    grid, indices = samples_picture(synthetic_data, SampleOptions(count=12, columns=5, scale=2))
    assert list(indices) == list(range(12))
    assert grid.image.mode == "RGB"
    pixels = np.asarray(grid.image)
    for index, (left, top, right, bottom) in zip(indices, grid.digit_boxes, strict=True):
        assert (right - left, bottom - top) == (56, 56)
        cell = pixels[top:bottom, left:right]
        assert (cell == cell[..., :1]).all(), "digit pixels are gray"
        np.testing.assert_array_equal(cell[::2, ::2, 0], synthetic_data["test_images"][index])
    rows = sorted({top for _, top, _, _ in grid.digit_boxes})
    assert len(rows) == 3, "12 digits in 5 columns fill 3 rows"


def test_render_samples_cli_writes_the_grid_and_exports_digits(tmp_path, synthetic_npz, synthetic_data):
    output, export = tmp_path / "samples.png", tmp_path / "exported"
    result = run("render-samples", synthetic_npz, "-o", output, "--count", 10, "--export-dir", export)
    assert result.exit_code == 0, result.output
    with Image.open(output) as image:
        assert image.format == "PNG" and image.mode == "RGB"
        assert image.width > 8 * 28 * 3
    names = sorted(path.name for path in export.iterdir())
    labels = synthetic_data["test_labels"]
    assert names == [f"{i:05d}-label{labels[i]}.png" for i in range(10)]
    for name in names:
        with Image.open(export / name) as digit:
            assert digit.mode == "L" and digit.size == (28, 28)
            np.testing.assert_array_equal(np.asarray(digit), synthetic_data["test_images"][int(name[:5])])
    assert [line for line in result.stdout.splitlines() if line.endswith(".png")] == [
        str(export / name) for name in names
    ]


def test_exported_digits_are_ready_for_predict(tmp_path, synthetic_npz, logreg_path, synthetic_data):
    export = tmp_path / "exported"
    assert (
        run(
            "render-samples", synthetic_npz, "-o", tmp_path / "s.png", "--count", 5, "--export-dir", export
        ).exit_code
        == 0
    )
    paths = sorted(str(p) for p in export.iterdir())
    result = run("predict", logreg_path, *paths)
    assert result.exit_code == 0, result.output
    assert [line.split("\t")[0] for line in result.stdout.splitlines()] == paths


def test_digits_option_keeps_only_those_classes(synthetic_data):
    options = SampleOptions(count=30, classes=("3", "8"), select="random", seed=4)
    _, indices = samples_picture(synthetic_data, options)
    labels = synthetic_data["test_labels"]
    assert len(indices) == 30 and set(labels[indices]) == {3, 8}
    assert list(indices) == sorted(indices)
    _, again = samples_picture(synthetic_data, options)
    _, other_seed = samples_picture(
        synthetic_data, SampleOptions(count=30, classes=("3", "8"), select="random", seed=5)
    )
    assert list(again) == list(indices) and list(other_seed) != list(indices)


def test_mistake_grid_holds_only_mistakes_most_confident_first(synthetic_data, logreg_params, tmp_path):
    checkpoint = load_checkpoint(write_logreg(tmp_path / "m.safetensors", logreg_params))
    images, labels = synthetic_data["test_images"], synthetic_data["test_labels"]
    probabilities = checkpoint.predict_probabilities(images)
    predicted, confidence = probabilities.argmax(axis=1), probabilities.max(axis=1)
    all_mistakes = np.flatnonzero(predicted != labels)
    assert 3 <= len(all_mistakes) < len(labels) // 2, "the fixture model should be good but imperfect"

    grid, indices = samples_picture(synthetic_data, SampleOptions(select="mistakes", count=100), checkpoint)
    assert sorted(indices) == sorted(all_mistakes)
    assert (predicted[indices] != labels[indices]).all()
    assert (np.diff(confidence[indices]) <= 0).all()
    pixels = np.asarray(grid.image)
    first_left, first_top, first_right, _ = grid.digit_boxes[0]
    frame = pixels[first_top - 2, first_left:first_right]
    assert (frame == (204, 32, 39)).all(), "a wrong digit is framed in red"

    threshold = float(np.median(confidence[all_mistakes]))
    options = SampleOptions(select="confident-mistakes", count=100, min_confidence=threshold)
    _, confident = samples_picture(synthetic_data, options, checkpoint)
    assert set(confident) == {i for i in all_mistakes if confidence[i] >= threshold}
    _, top_two = samples_picture(synthetic_data, SampleOptions(select="mistakes", count=2), checkpoint)
    assert list(top_two) == list(indices[:2])
    # Past the model's reach (label smoothing keeps `make all`'s model under 91%): the picture
    # of none says how sure its surest mistake was.
    out_of_reach = SampleOptions(select="confident-mistakes", min_confidence=1.0)
    grid, none = samples_picture(synthetic_data, out_of_reach, checkpoint, model_name="m.safetensors")
    assert len(none) == 0 and grid.title.startswith("No mistakes made with at least 100.00% confidence")
    surest = distinct_percent(float(confidence[all_mistakes].max()), 1.0)
    assert (
        grid.subtitle == f"m.safetensors · the most confident of its {len(all_mistakes)} mistakes: {surest}"
    )


def test_render_samples_mistakes_cli(tmp_path, synthetic_npz, synthetic_data, logreg_path):
    images, labels = synthetic_data["test_images"], synthetic_data["test_labels"]
    predicted = load_checkpoint(logreg_path).predict_probabilities(images).argmax(axis=1)
    mistakes = int((predicted != labels).sum())
    output = tmp_path / "mistakes.png"
    result = run(
        "render-samples", synthetic_npz, "-o", output, "--model", logreg_path, "--select", "mistakes"
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == "" and f"{min(mistakes, 64)} test digits" in result.stderr
    with Image.open(output) as image:
        assert image.mode == "RGB"


@pytest.mark.parametrize("select", ["mistakes", "confident-mistakes"])
def test_mistakes_need_a_model(tmp_path, synthetic_npz, select):
    """A usage error, exit 2, as other options that cannot be taken together are (it was 1)."""
    output = tmp_path / "mistakes.png"
    result = run("render-samples", synthetic_npz, "-o", output, "--select", select)
    assert result.exit_code == 2, result.output
    assert f"Error: --select {select} needs a model: give a checkpoint as --model" in result.output
    assert not output.exists()


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--digits", "3,12"], "--classes: '12' is not a class of mnist (0-9)"),
        (["--classes", "three"], "--classes"),
    ],
)
def test_render_samples_rejects_bad_options(tmp_path, synthetic_npz, extra, fragment):
    output = tmp_path / "s.png"
    assert_failed_cleanly(run("render-samples", synthetic_npz, "-o", output, *extra), output, fragment)


@pytest.mark.parametrize(
    ("command", "option", "value"),
    [
        ("render-samples", "--count", "0"),
        ("render-samples", "--columns", "0"),
        ("render-samples", "--scale", "0"),
        ("render-samples", "--min-confidence", "1.5"),
        ("render-embedding", "--count", "0"),
    ],
)
def test_an_option_out_of_its_range_is_a_usage_error(
    tmp_path, synthetic_npz, logreg_path, command, option, value
):
    """Exit 2 with click's usage line, as for every render command's ranges (a script tells a
    wrong command line from bad data by it)."""
    output = tmp_path / "s.png"
    args = [synthetic_npz] if command == "render-samples" else [logreg_path, synthetic_npz]
    result = run(command, *args, "-o", output, option, value)
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}'" in result.output
    assert not output.exists()


def test_model_whose_digits_are_not_in_the_data(tmp_path, synthetic_data, logreg_params):
    arrays = dict(synthetic_data)
    for split in ("train", "test"):
        keep = np.isin(arrays[f"{split}_labels"], [0, 1])
        arrays[f"{split}_images"] = arrays[f"{split}_images"][keep]
        arrays[f"{split}_labels"] = arrays[f"{split}_labels"][keep]
    npz = tmp_path / "zeros-and-ones.npz"
    np.savez(npz, **arrays)
    three_v_eight = {k: v[:, [3, 8]] if v.ndim == 2 else v[[3, 8]] for k, v in logreg_params.items()}
    model = write_logreg(tmp_path / "3v8.safetensors", three_v_eight, classes=[3, 8])
    output = tmp_path / "out.png"
    for command in (
        ["render-samples", npz, "-o", output, "--model", model],
        ["render-confusion", "--model", model, "--data", npz, "-o", output],
    ):
        assert_failed_cleanly(run(*command), output, "3,8", "do not occur")


def test_data_of_the_wrong_shape(tmp_path, logreg_path):
    npz = tmp_path / "wide.npz"
    images = np.zeros((4, 32, 32), np.uint8)
    labels = np.zeros(4, np.uint8)
    np.savez(npz, train_images=images, train_labels=labels, test_images=images, test_labels=labels)
    output = tmp_path / "out.png"
    assert_failed_cleanly(
        run("render-samples", npz, "-o", output, "--model", logreg_path), output, "(N, 28, 28)"
    )


def write_metrics(path: Path, matrix: list[list[int]], classes: list[int]) -> Path:
    path.write_text(json.dumps({"split": "test", "classes": classes, "confusion_matrix": matrix}))
    return path


def test_heat_map_shades_follow_the_counts(tmp_path):
    counts = np.array([[900, 0, 1, 3], [2, 40, 7, 0], [120, 5, 300, 11], [0, 60, 1, 700]])
    metrics = write_metrics(tmp_path / "metrics.json", counts.tolist(), [0, 1, 7, 9])
    output = tmp_path / "confusion.png"
    result = run("render-confusion", "--metrics", metrics, "-o", output)
    assert result.exit_code == 0, result.output
    with Image.open(output) as image:
        pixels = np.asarray(image.convert("RGB")).astype(int)
    shades = {}
    for (row, column), count in np.ndenumerate(counts):
        left, top, right, _ = confusion_cell_box(4, row, column)
        assert right - left >= 54
        corner = pixels[top + 2 : top + 8, left + 2 : left + 8]
        assert (corner == corner[0, 0]).all(), "a cell is one flat colour"
        shades[int(count)] = corner[0, 0].sum()
    ordered = [shades[count] for count in sorted(shades)]
    assert all(darker < lighter for lighter, darker in itertools.pairwise(ordered))


def test_confusion_from_model_matches_eval_json(tmp_path, synthetic_npz, logreg_path):
    metrics, from_json, from_model = tmp_path / "m.json", tmp_path / "a.png", tmp_path / "b.png"
    assert run("eval", logreg_path, synthetic_npz, "--json", metrics).exit_code == 0
    assert run("render-confusion", "--metrics", metrics, "-o", from_json).exit_code == 0
    result = run("render-confusion", "--model", logreg_path, "--data", synthetic_npz, "-o", from_model)
    assert result.exit_code == 0, result.output
    with Image.open(from_json) as a, Image.open(from_model) as b:
        left, top, _, _ = confusion_cell_box(10, 0, 0)
        _, _, right, bottom = confusion_cell_box(10, 9, 9)
        assert a.size == b.size
        np.testing.assert_array_equal(
            np.asarray(a)[top:bottom, left:right], np.asarray(b)[top:bottom, left:right]
        )


@pytest.mark.parametrize(
    ("peak", "labels"),
    [
        (1, ["0", "1"]),
        (3, ["0", "1", "3"]),  # a matrix of 20 images: its bar said only 0 and 1
        (11, ["0", "1", "10"]),  # 11 would stand on 10
        (980, ["0", "1", "10", "100", "980"]),
        (50_000, ["0", "1", "10", "100", "1000", "10000", "50000"]),
    ],
)
def test_the_colour_bar_names_the_largest_count_unless_a_tick_stands_there(peak, labels):
    ticks = count_ticks(peak)
    assert [label for _, label in ticks] == labels
    positions = [position for position, _ in ticks]
    assert positions[0] == 0 and positions[-1] > 0.9 and positions[-1] - positions[-2] > 0.09


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("not json", "not a metrics JSON"),
        ("\n", "metrics.json: empty, expected the JSON of eval --json"),
        ('{"accuracy": 0.9}', "confusion_matrix"),
        ('{"classes": [0, 1], "confusion_matrix": [[1, 2]]}', "2 rows of 2"),
        ('{"classes": [0, 1], "confusion_matrix": [[1, -2], [0, 3]]}', "non-negative"),
        ('{"classes": [0, 0], "confusion_matrix": [[1, 2], [0, 3]]}', "distinct labels"),
        # past int64 (an OverflowError's traceback before), and past what float64 adds exactly
        (f'{{"classes": [0, 1], "confusion_matrix": [[{2**63}, 0], [0, 3]]}}', "at most 2^53"),
        (f'{{"classes": [0, 1], "confusion_matrix": [[{2**52}, 0], [0, {2**52 + 1}]]}}', "at most 2^53"),
    ],
)
def test_render_confusion_rejects_bad_metrics(tmp_path, content, fragment):
    metrics, output = tmp_path / "metrics.json", tmp_path / "confusion.png"
    metrics.write_text(content)
    assert_failed_cleanly(run("render-confusion", "--metrics", metrics, "-o", output), output, fragment)


def test_render_confusion_needs_one_source(tmp_path, logreg_path):
    result = run("render-confusion", "-o", tmp_path / "c.png", "--model", logreg_path)
    assert result.exit_code == 2 and "either --metrics" in result.output
    metrics = tmp_path / "m.json"
    metrics.write_text("{}")
    result = run("render-confusion", "-o", tmp_path / "c.png", "--metrics", metrics, "--split", "train")
    assert (
        result.exit_code == 2 and "--split picks a split of --data; --metrics holds" in result.output
    )  # ignored


def history_lines(epochs: int, with_validation: bool) -> str:
    lines = []
    for epoch in range(1, epochs + 1):
        measured = 1.0 / epoch if with_validation else None
        record = {
            "epoch": epoch,
            "train_loss": 2.0 / epoch,
            "train_accuracy": 1 - 0.5 / epoch,
            "val_loss": measured,
            "val_accuracy": None if measured is None else 1 - 0.3 / epoch,
            "test_loss": None,
            "test_accuracy": None,
            "seconds": 1.5,
        }
        lines.append(json.dumps(record))
    return "\n".join(lines) + "\n"


def colour_present(image: Image.Image, colour: tuple[int, int, int], tolerance: int = 12) -> bool:
    pixels = np.asarray(image.convert("RGB")).astype(int)
    return bool((np.abs(pixels - np.array(colour)).max(axis=-1) <= tolerance).any())


def test_curves_draw_only_the_measured_splits(tmp_path):
    both, train_only = tmp_path / "both.png", tmp_path / "train.png"
    (tmp_path / "both.jsonl").write_text(history_lines(6, with_validation=True))
    (tmp_path / "train.jsonl").write_text(history_lines(6, with_validation=False))
    assert run("render-curves", tmp_path / "both.jsonl", "-o", both).exit_code == 0
    assert run("render-curves", tmp_path / "train.jsonl", "-o", train_only).exit_code == 0
    train_colour, validation_colour, test_colour = DIGIT_COLOURS[0], DIGIT_COLOURS[1], DIGIT_COLOURS[2]
    with Image.open(both) as image:
        assert image.mode == "RGB" and image.size == (1000, 456)
        assert colour_present(image, train_colour) and colour_present(image, validation_colour)
        assert not colour_present(image, test_colour)
    with Image.open(train_only) as image:
        assert colour_present(image, train_colour) and not colour_present(image, validation_colour)


def test_curves_read_stdin_and_a_single_epoch(tmp_path):
    output = tmp_path / "curves.png"
    result = run("render-curves", "-", "-o", output, input=history_lines(1, with_validation=True))
    assert result.exit_code == 0, result.output
    with Image.open(output) as image:
        assert colour_present(image, DIGIT_COLOURS[1])
    broken = run("render-curves", "-", "-o", tmp_path / "broken.png", input="{}\n")
    assert_failed_cleanly(broken, tmp_path / "broken.png", "Error: - line 1: 'epoch'")  # it said <stdin>


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("", "empty history"),
        ("\n  \n", "empty history"),
        ('{"epoch": 1, "train_loss": 0.5}\n{"epoch": 2, "train_loss": 0.4\n', "line 2: not JSON"),
        ("[1, 2]\n", "line 1: not a JSON object"),
        ('{"train_loss": 0.5}\n', "'epoch'"),
        ('{"epoch": 0, "train_loss": 0.5}\n', "'epoch'"),
        ('{"epoch": 1, "train_loss": "low"}\n', "train_loss must be a number"),
        ('{"epoch": 2, "train_loss": 0.5}\n{"epoch": 1, "train_loss": 0.4}\n', "epoch 1 follows epoch 2"),
        ('{"epoch": 1, "seconds": 3}\n', "no loss or accuracy"),
    ],
)
def test_render_curves_rejects_bad_history(tmp_path, content, fragment):
    history, output = tmp_path / "history.jsonl", tmp_path / "curves.png"
    history.write_text(content)
    assert_failed_cleanly(run("render-curves", history, "-o", output), output, fragment)


def test_curves_and_confusion_name_each_others_file(tmp_path):
    """eval --json's metrics given to render-curves were "line 1: not JSON", and a history
    given to render-confusion json's own "Extra data: line 2 column 1"."""
    metrics, history = tmp_path / "metrics.json", tmp_path / "history.jsonl"
    metrics.write_text(json.dumps({"classes": [0, 1], "confusion_matrix": [[3, 1], [0, 4]]}, indent=2))
    history.write_text(history_lines(2, with_validation=True))
    output = tmp_path / "picture.png"
    assert_failed_cleanly(
        run("render-curves", metrics, "-o", output), output, f"{metrics}: the metrics of eval --json, not"
    )
    assert_failed_cleanly(
        run("render-confusion", "--metrics", history, "-o", output),
        output,
        f"{history}: a training history (train --history), not the JSON of eval --json",
    )


def test_curves_of_a_checkpoint_are_of_the_history_it_keeps(tmp_path, synthetic_npz):
    """render-curves of a checkpoint said "not a history file"; the checkpoint keeps its own."""
    model = tmp_path / "model.safetensors"
    trained = run("train", synthetic_npz, "-o", model, "--model", "logreg", "--epochs", "2")
    assert trained.exit_code == 0, trained.output
    result = run("render-curves", model, "-o", tmp_path / "curves.png")
    assert result.exit_code == 0, result.output
    records = load_checkpoint(model).metadata["history"]
    assert [record["epoch"] for record in records] == [1, 2]
    expected = curves_image(
        [{key: record[key] for key in ("epoch", *METRICS)} for record in records], model.name
    )
    with Image.open(tmp_path / "curves.png") as image:
        assert np.array_equal(np.asarray(image.convert("RGB")), np.asarray(expected.convert("RGB")))


def test_curves_of_a_checkpoint_copied_to_another_name(tmp_path, synthetic_npz):
    """A checkpoint kept as `model.bak` was refused as "not a history file (it is a
    safetensors file (such as an mnistkit checkpoint))", where info and predict read it."""
    model = tmp_path / "model.safetensors"
    assert run("train", synthetic_npz, "-o", model, "--model", "logreg", "--epochs", "2").exit_code == 0
    backup = tmp_path / "model.bak"
    backup.write_bytes(model.read_bytes())
    result = run("render-curves", backup, "-o", tmp_path / "curves.png")
    assert result.exit_code == 0, result.output
    records = load_checkpoint(backup).metadata["history"]
    expected = curves_image(
        [{key: record[key] for key in ("epoch", *METRICS)} for record in records], backup.name
    )
    with Image.open(tmp_path / "curves.png") as image:
        assert np.array_equal(np.asarray(image.convert("RGB")), np.asarray(expected.convert("RGB")))


def test_missing_history_file(tmp_path):
    output = tmp_path / "curves.png"
    assert_failed_cleanly(run("render-curves", tmp_path / "nope.jsonl", "-o", output), output, "no such")


def test_head_reproduces_the_model_from_the_two_unit_layer(tmp_path, synthetic_data):
    for hidden, layer in (([16, 2], 1), ([2, 8], 0), ([12, 2, 6], 1)):
        checkpoint = load_checkpoint(write_mlp(tmp_path / f"m{len(hidden)}{layer}.safetensors", hidden))
        images = synthetic_data["test_images"][:50]
        logits = dense_stack(
            checkpoint.params, checkpoint.architecture, normalize(images, checkpoint.normalization)
        )
        values = bottleneck_values(checkpoint, layer, images)
        assert values.shape == (50, 2)
        np.testing.assert_allclose(head_logits(checkpoint, layer, values), logits, rtol=1e-5, atol=1e-5)


def _half_plane_model(tmp_path: Path, synthetic_data) -> Path:
    """Unit 2 is minus unit 1, split at the median; the head picks 3 when unit 1 is the larger
    after ReLU, so half the plane is 3's region and half 8's."""
    normalization = {"kind": "unit"}
    direction = np.random.default_rng(1).normal(size=784)
    projection = normalize(synthetic_data["test_images"], normalization).reshape(-1, 784) @ direction
    middle = float(np.median(projection))
    params = {
        "dense_0.kernel": np.stack([direction, -direction], axis=1).astype(np.float32),
        "dense_0.bias": np.array([-middle, middle], np.float32),
        "dense_1.kernel": np.eye(2, dtype=np.float32),
        "dense_1.bias": np.zeros(2, np.float32),
    }
    metadata = {
        "architecture": {"model": "mlp", "hidden": [2], "activation": "relu", "num_classes": 2},
        "normalization": normalization,
        "classes": [3, 8],
    }
    model = tmp_path / "2d.safetensors"
    save_checkpoint(model, params, metadata)
    return model


def test_embedding_plot_shades_the_decision_regions(tmp_path, synthetic_npz, synthetic_data):
    model, output = _half_plane_model(tmp_path, synthetic_data), tmp_path / "embedding.png"
    result = run("render-embedding", model, synthetic_npz, "-o", output, "--count", 40)
    assert result.exit_code == 0, result.output
    assert result.stderr == f"{output}: 40 test digits in the 2-unit layer of 2d.safetensors\n"
    every = run("render-embedding", model, synthetic_npz, "-o", output, "--count", 100_000)
    threes_and_eights = int(np.isin(synthetic_data["test_labels"], [3, 8]).sum())
    assert (
        every.stderr == f"{output}: {threes_and_eights} test digits in the 2-unit layer of 2d.safetensors\n"
    )
    with Image.open(output) as image:
        assert image.mode == "RGB" and image.size == (860, 680)
        plot = np.asarray(image)[80:600, 100:670].reshape(-1, 3)
    colours = {tuple(int(c) for c in colour) for colour in np.unique(plot, axis=0)}
    regions = {blend(DIGIT_COLOURS[digit], (255, 255, 255), 0.72) for digit in (3, 8)}
    assert regions <= colours, "both classes' regions appear behind the dots"
    others = {blend(DIGIT_COLOURS[digit], (255, 255, 255), 0.72) for digit in (0, 1, 2, 4, 5, 6, 7, 9)}
    assert not others & colours


def test_embedding_of_one_point_is_drawn_around_it(tmp_path, synthetic_npz, synthetic_data):
    """One image (--count 1) is a range of no width on both axes: drawn, not divided by zero."""
    model, output = _half_plane_model(tmp_path, synthetic_data), tmp_path / "one.png"
    result = run("render-embedding", model, synthetic_npz, "-o", output, "--count", 1)
    assert result.exit_code == 0, result.output
    with Image.open(output) as image:
        plot = np.asarray(image.convert("RGB"))[80:600, 100:670].astype(int)
    nearest = (
        np.abs(plot - DIGIT_COLOURS[3]).max(axis=2).min(),
        np.abs(plot - DIGIT_COLOURS[8]).max(axis=2).min(),
    )
    assert min(nearest) < 12, "the one dot is drawn"


@pytest.mark.parametrize(
    ("kind", "fragment"),
    [
        ("mlp", "no 2-unit hidden layer"),
        (
            "wide-shifted",
            "no 2-unit hidden layer to plot (mlp, hidden layers: 16,4); train one with --preset",
        ),
        ("logreg", "logreg"),
        ("mirrored", "train it without --mirror-average"),
        ("shifted", "without --mirror-average and --shift-average"),
    ],
)
def test_embedding_needs_a_two_unit_layer_of_one_view(tmp_path, synthetic_npz, logreg_path, kind, fragment):
    models = {
        "mlp": lambda: write_mlp(tmp_path / "wide.safetensors", [16, 4]),
        "wide-shifted": lambda: write_mlp(tmp_path / "wide.safetensors", [16, 4], views=("shift_average",)),
        "logreg": lambda: logreg_path,
        "mirrored": lambda: write_mlp(tmp_path / "2d.safetensors", [16, 2], views=("mirror_average",)),
        "shifted": lambda: write_mlp(
            tmp_path / "2d.safetensors", [16, 2], views=("mirror_average", "shift_average")
        ),
    }
    model = models[kind]()
    output = tmp_path / "embedding.png"
    assert_failed_cleanly(run("render-embedding", model, synthetic_npz, "-o", output), output, fragment)


def test_weight_templates_are_red_for_positive_blue_for_negative(tmp_path):
    kernel = np.zeros((784, 10), np.float32)
    kernel[:, 0], kernel[:, 1] = 0.5, -0.5
    model = write_logreg(
        tmp_path / "lr.safetensors", {"dense_0.kernel": kernel, "dense_0.bias": np.zeros(10, np.float32)}
    )
    output = tmp_path / "weights.png"
    result = run("render-weights", model, "-o", output, "--scale", 3)
    assert result.exit_code == 0, result.output
    with Image.open(output) as image:
        assert image.mode == "RGB"
        pixels = np.asarray(image).reshape(-1, 3)

    def count(colour):
        return int((pixels == colour).all(axis=1).sum())

    tile = (28 * 3) ** 2
    assert count(BLUE_WHITE_RED[-1]) >= tile and count(BLUE_WHITE_RED[0]) >= tile
    assert count(BLUE_WHITE_RED[4]) >= 8 * tile, "zero weights are the middle of the scale"
    assert result.stderr.endswith(": weight templates of 10 digits\n")
    clothes = write_logreg(
        tmp_path / "clothes.safetensors", dict(load_checkpoint(model).params), dataset="fashion-mnist"
    )
    result = run("render-weights", clothes, "-o", output)
    assert result.exit_code == 0 and result.stderr.endswith(": weight templates of 10 classes\n"), (
        result.output
    )


def test_weights_need_a_logreg(tmp_path):
    model, output = write_mlp(tmp_path / "mlp.safetensors", [8]), tmp_path / "weights.png"
    assert_failed_cleanly(run("render-weights", model, "-o", output), output, "need a logreg")


def test_every_picture_is_deterministic(tmp_path, synthetic_npz, logreg_path):
    (tmp_path / "history.jsonl").write_text(history_lines(4, with_validation=True))
    write_metrics(tmp_path / "metrics.json", [[5, 1], [2, 9]], [3, 8])
    bottleneck = write_mlp(tmp_path / "2d.safetensors", [10, 2])
    commands = {
        "samples": ["render-samples", synthetic_npz, "--model", logreg_path, "--select", "random"],
        "mistakes": ["render-samples", synthetic_npz, "--model", logreg_path, "--select", "mistakes"],
        "confusion": ["render-confusion", "--metrics", tmp_path / "metrics.json"],
        "curves": ["render-curves", tmp_path / "history.jsonl"],
        "embedding": ["render-embedding", bottleneck, synthetic_npz, "--count", 50],
        "weights": ["render-weights", logreg_path],
    }
    for name, command in commands.items():
        first, second = tmp_path / f"{name}-1.png", tmp_path / f"{name}-2.png"
        assert run(*command, "-o", first).exit_code == 0, name
        assert run(*command, "-o", second).exit_code == 0, name
        assert first.read_bytes() == second.read_bytes(), name


def test_missing_output_folders_are_made(tmp_path, synthetic_npz):
    output = tmp_path / "reports" / "mnist" / "samples.png"
    assert run("render-samples", synthetic_npz, "-o", output, "--count", "4").exit_code == 0
    assert Image.open(output).format == "PNG"
    in_the_way = tmp_path / "a-file"
    in_the_way.write_bytes(b"")
    output = in_the_way / "samples.png"
    assert_failed_cleanly(
        run("render-samples", synthetic_npz, "-o", output), output, "is a file, not a folder"
    )


@pytest.mark.parametrize("exists", [False, True], ids=["new", "an-existing-file"])
def test_an_output_ending_in_a_slash_is_refused_not_written_as_a_file(tmp_path, synthetic_npz, exists):
    """`-o reports/` names a folder: writing a file `reports` (or over one) breaks what comes next."""
    target = tmp_path / "reports"
    if exists:
        target.write_bytes(b"kept")
    result = run("render-samples", synthetic_npz, "-o", f"{target}/", "--count", "4")
    assert result.exit_code == 1
    expected = f"Error: {target}/: ends in a slash, a folder's name; expected a file path"
    assert result.output.strip() == expected
    assert (target.read_bytes() == b"kept") if exists else not target.exists()


def test_render_commands_do_not_import_jax(tmp_path, synthetic_npz, logreg_path):
    output = tmp_path / "s.png"
    code = (
        "import sys; from click.testing import CliRunner; from mnistkit.cli import cli; "
        f"r = CliRunner().invoke(cli, ['render-samples', {str(synthetic_npz)!r}, '-o', {str(output)!r}, "
        f"'--model', {str(logreg_path)!r}, '--select', 'mistakes']); "
        "assert r.exit_code == 0, r.output; print('jax' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("low", "high", "integer", "expected"),
    [
        (1, 8, True, [0, 2, 4, 6, 8]),
        (0.004, 0.23, False, [0.0, 0.05, 0.1, 0.15, 0.2, 0.25]),
        (92.3, 99.9, False, [92, 94, 96, 98, 100]),
        (1, 1, True, [0, 1, 2]),
    ],
)
def test_nice_ticks_cover_the_data_with_round_numbers(low, high, integer, expected):
    assert nice_ticks(low, high, integer=integer) == pytest.approx(expected)


def _loss_history(*losses: float) -> list[dict[str, float | None]]:
    return [
        {"epoch": epoch, "train_loss": loss, "train_accuracy": 0.5}
        | dict.fromkeys(["val_loss", "val_accuracy", "test_loss", "test_accuracy"])
        for epoch, loss in enumerate(losses, 1)
    ]


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (2.302585092994046, 2.3025850929940463),  # a model that learns nothing: one float apart
        (1e-300, 2e-300),
        (0.0, 1e-310),
        (-1e300, 1e300),
        (1e300, 1e300),
    ],
)
def test_curves_of_any_losses_a_chart_can_hold_are_drawn(first: float, second: float) -> None:
    """These raised ZeroDivisionError or OverflowError from the ticks' arithmetic."""
    assert curves_image(_loss_history(first, second), "h.jsonl").size[0] > 0


@given(st.floats(-1e300, 1e300), st.floats(-1e300, 1e300))
def test_nice_ticks_cover_any_range_a_chart_can_hold(low: float, high: float) -> None:
    low, high = min(low, high), max(low, high)
    ticks = nice_ticks(low, high)
    assert len(ticks) >= 2 and all(math.isfinite(tick) for tick in ticks)
    slack = (ticks[1] - ticks[0]) * 1e-6  # a millionth of a step: float noise, not a missed tick
    assert ticks[0] - slack <= low and high <= ticks[-1] + slack


def test_curves_past_what_a_chart_can_hold_are_one_error_naming_the_file() -> None:
    with pytest.raises(MnistkitError, match=r"^h.jsonl: train_loss runs from 1e\+308 to 1e\+308, beyond"):
        curves_image(_loss_history(1e308), "h.jsonl")


def test_tick_labels_use_the_fewest_decimals():
    assert tick_labels([0.0, 0.05, 0.1]) == ["0.00", "0.05", "0.10"]
    assert tick_labels([-20.0, 0.0, 20.0]) == ["-20", "0", "20"]
    assert tick_labels([0.0, 2.5e9, 5e9]) == ["0", "2.5e9", "5.0e9"]
    assert tick_labels([-2e5, 0.0, 2e5]) == ["-2e5", "0", "2e5"]


@pytest.mark.parametrize("loss", [3.3e6, 3.3e9, 3.3e20, 1e300])
def test_a_diverged_runs_loss_axis_stays_inside_the_picture(loss: float) -> None:
    """From a loss of about a million the axis title, and from a billion the tick labels
    (0002097152), ran off the picture's left edge."""
    image = np.asarray(curves_image(_loss_history(loss, loss / 3), "h.jsonl").convert("L"))
    assert image[:, :4].min() == 255


@pytest.mark.slow
@requires_real_mnist
def test_real_mnist_pictures(tmp_path):
    npz = tmp_path / "mnist.npz"
    assert run("parse-to-npz", REAL_MNIST_DIR, "-o", npz).exit_code == 0
    with np.load(npz) as archive:
        arrays = {key: archive[key] for key in archive.files}
    model = write_logreg(
        tmp_path / "lstsq.safetensors", fit_logreg(arrays["train_images"], arrays["train_labels"])
    )
    checkpoint = load_checkpoint(model)

    grid, indices = samples_picture(arrays, SampleOptions(select="mistakes", count=40), checkpoint)
    predicted = checkpoint.predict_probabilities(arrays["test_images"][indices]).argmax(axis=1)
    assert len(indices) == 40 and (predicted != arrays["test_labels"][indices]).all()
    left, top, right, bottom = grid.digit_boxes[0]
    np.testing.assert_array_equal(
        np.asarray(grid.image)[top:bottom:3, left:right:3, 0], arrays["test_images"][indices[0]]
    )

    for command in (
        ["render-samples", npz, "-o", tmp_path / "samples.png", "--model", model],
        ["render-confusion", "--model", model, "--data", npz, "-o", tmp_path / "confusion.png"],
    ):
        result = run(*command)
        assert result.exit_code == 0, result.output
    assert (
        "10000 digits"
        in run("render-confusion", "--model", model, "--data", npz, "-o", tmp_path / "c.png").output
    )


def test_a_model_without_mistakes_gets_a_picture_saying_so(tmp_path, synthetic_data, logreg_params):
    model = write_logreg(tmp_path / "lr.safetensors", logreg_params)
    arrays = dict(synthetic_data)
    arrays["test_labels"] = load_checkpoint(model).predict_probabilities(arrays["test_images"]).argmax(axis=1)
    arrays["test_labels"] = arrays["test_labels"].astype(np.uint8)
    npz, output, export = tmp_path / "agreeing.npz", tmp_path / "mistakes.png", tmp_path / "none"
    np.savez(npz, **arrays)
    command = [
        "render-samples",
        npz,
        "-o",
        output,
        "--model",
        model,
        "--select",
        "mistakes",
        "--export-dir",
        export,
    ]
    result = run(*command)
    assert result.exit_code == 0, result.output
    assert "0 test digits" in result.stderr and list(export.iterdir()) == []
    with Image.open(output) as image:
        assert image.mode == "RGB" and image.height < 120


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
history_keys = st.sampled_from(["epoch", "train_loss", "val_accuracy", "seconds", "other"])


@given(
    st.lists(
        st.dictionaries(history_keys, json_values, max_size=4).map(json.dumps) | st.text(max_size=20),
        max_size=4,
    )
)
def test_fuzz_history_parses_or_says_why(lines):
    try:
        records = read_history("\n".join(lines), "history.jsonl")
    except MnistkitError as error:
        assert str(error).startswith("history.jsonl")
    else:
        assert [r["epoch"] for r in records] == sorted({r["epoch"] for r in records})


@given(st.dictionaries(st.sampled_from(["classes", "confusion_matrix", "split"]), json_values, max_size=3))
def test_fuzz_metrics_parse_or_say_why(metrics):
    try:
        confusion = read_confusion(json.dumps(metrics), "metrics.json")
    except MnistkitError as error:
        assert str(error).startswith("metrics.json")
    else:
        assert confusion.matrix.shape == (len(confusion.classes),) * 2


def test_a_picture_too_large_to_make_is_refused_before_it_is_made(tmp_path, synthetic_npz):
    output = tmp_path / "samples.png"
    result = run("render-samples", synthetic_npz, "-o", output, "--scale", "100000")
    assert_failed_cleanly(
        result,
        output,
        f"{output}: the picture would be",
        "over 200 megapixels; draw fewer or smaller digits (--count, --scale)",
    )
    model = write_logreg(
        tmp_path / "lr.safetensors",
        {"dense_0.kernel": np.zeros((784, 10), np.float32), "dense_0.bias": np.zeros(10, np.float32)},
    )
    result = run("render-weights", model, "-o", output, "--scale", "100000")
    assert_failed_cleanly(result, output, "over 200 megapixels; draw smaller templates (--scale)")


def test_the_pictures_take_counts_as_python_gives_them(tmp_path, synthetic_data):
    """count="16" or np.int64(16), as train's settings take them; a fraction is refused by name."""
    model = _half_plane_model(tmp_path, synthetic_data)
    embedding = np.asarray(mnistkit.draw_embedding(model, synthetic_data, count=40))
    for count in ("40", np.int64(40)):
        assert np.array_equal(
            np.asarray(mnistkit.draw_embedding(model, synthetic_data, count=count)), embedding
        )
    samples = np.asarray(mnistkit.draw_samples(synthetic_data, count=16, columns=4))
    as_text = mnistkit.draw_samples(synthetic_data, count="16", columns=np.int32(4))
    assert np.array_equal(np.asarray(as_text), samples)
    for bad in (16.5, "many"):
        with pytest.raises(
            MnistkitError, match=f"^count: expected a whole number, got {re.escape(repr(bad))}$"
        ):
            mnistkit.draw_samples(synthetic_data, count=bad)
        with pytest.raises(
            MnistkitError, match=f"^count: expected a whole number, got {re.escape(repr(bad))}$"
        ):
            mnistkit.draw_embedding(model, synthetic_data, count=bad)


def test_an_export_that_fails_midway_takes_back_the_files_it_wrote_and_draws_nothing(
    tmp_path, synthetic_npz, synthetic_data
):
    """A folder where the third PNG goes stops the export: the first two go too, the picture
    is not written, and the listing never reaches stdout."""
    output, export = tmp_path / "samples.png", tmp_path / "exported"
    labels = synthetic_data["test_labels"]
    (export / f"00002-label{labels[2]}.png").mkdir(parents=True)
    result = run("render-samples", synthetic_npz, "-o", output, "--count", 5, "--export-dir", export)
    assert result.exit_code == 1 and f"00002-label{labels[2]}.png" in result.output
    assert ".png\n" not in result.stdout
    assert [path.name for path in export.iterdir()] == [f"00002-label{labels[2]}.png"]
    assert not output.exists()


def test_a_picture_that_cannot_be_written_takes_its_exported_digits_along(
    tmp_path, synthetic_npz, monkeypatch
):
    """The disk fills up at the picture, after the digits were written: they go too."""
    from mnistkit import render

    output, export, write = tmp_path / "samples.png", tmp_path / "exported", render.save_picture

    def full_disk_at_the_picture(image, path):
        if Path(path) == output:
            raise MnistkitError(f"{output}: cannot write: no space left on device")
        write(image, path)

    monkeypatch.setattr(render, "save_picture", full_disk_at_the_picture)
    result = run("render-samples", synthetic_npz, "-o", output, "--count", 5, "--export-dir", export)
    assert result.exit_code == 1 and "no space left on device" in result.output
    assert ".png\n" not in result.stdout
    assert not export.exists() and not output.exists()  # the folder made for them too


def test_an_export_over_an_earlier_one_that_fails_keeps_the_file_it_failed_at(
    tmp_path, synthetic_npz, monkeypatch
):
    """The digit being written when the disk fills up was there from an earlier export: it
    stays as it was (taking back each file listed before its write removed it)."""
    from mnistkit import render

    output, export, write = tmp_path / "samples.png", tmp_path / "exported", render.save_picture
    assert (
        run("render-samples", synthetic_npz, "-o", output, "--count", 3, "--export-dir", export).exit_code
        == 0
    )
    earlier = {path.name: path.read_bytes() for path in export.iterdir()}
    third = sorted(earlier)[2]

    def full_disk_at_the_third(image, path):
        if Path(path).name == third:
            raise MnistkitError(f"{path}: cannot write: no space left on device")
        write(image, path)

    monkeypatch.setattr(render, "save_picture", full_disk_at_the_third)
    result = run("render-samples", synthetic_npz, "-o", output, "--count", 3, "--export-dir", export)
    assert result.exit_code == 1 and "no space left on device" in result.output
    assert {path.name: path.read_bytes() for path in export.iterdir()} == {third: earlier[third]}


def test_an_empty_split_is_refused_as_eval_refuses_it(tmp_path, synthetic_data):
    """A .npz with no test images drew a picture of none, with exit status 0."""
    npz, output = tmp_path / "empty.npz", tmp_path / "samples.png"
    empty = {**synthetic_data, "test_images": synthetic_data["test_images"][:0]}
    np.savez(npz, **{**empty, "test_labels": synthetic_data["test_labels"][:0]})
    result = run("render-samples", npz, "-o", output)
    assert_failed_cleanly(result, output, f"{npz}: no test images to show")


def test_ctrl_c_right_after_a_digit_is_written_takes_it_back_with_the_folder(
    tmp_path, synthetic_npz, monkeypatch
):
    """A Ctrl-C landing after a digit's file was renamed into place, before it was counted as
    written, left that digit in the folder (found in 5 of 14 runs interrupted at random), and
    the folder made for the export stayed, empty."""
    from mnistkit import render
    from mnistkit.errors import Interrupted

    output, export, write = tmp_path / "samples.png", tmp_path / "new" / "exported", render.save_picture

    def stopped_after_the_third(image, path):
        write(image, path)
        if len(list(export.iterdir())) == 3:
            raise Interrupted(signal.SIGINT)

    monkeypatch.setattr(render, "save_picture", stopped_after_the_third)
    with pytest.raises(Interrupted):  # `mnistkit`'s main makes it exit status 130
        run("render-samples", synthetic_npz, "-o", output, "--count", 5, "--export-dir", export)
    assert not (tmp_path / "new").exists() and not output.exists()


def test_a_jpeg_too_wide_for_the_format_is_one_line(tmp_path, synthetic_npz):
    """Past 65,500 pixels a side Pillow's JPEG writer fails: that was a traceback."""
    output = tmp_path / "wide.jpg"
    result = run(
        "render-samples", synthetic_npz, "-o", output, "--count", "200", "--columns", "200", "--scale", "12"
    )
    assert_failed_cleanly(result, output, "a JPEG is at most 65500 pixels a side", "; write it as .png")
    assert (
        run(
            "render-samples",
            synthetic_npz,
            "-o",
            tmp_path / "wide.png",
            "--count",
            "200",
            "--columns",
            "200",
            "--scale",
            "12",
        ).exit_code
        == 0
    )


@pytest.mark.parametrize(
    ("threshold", "shown"), [(0.996, "99.60%"), (0.955, "95.50%"), (0.5, "50.00%"), (0.99995, "99.995%")]
)
def test_a_confidence_threshold_is_titled_as_given(threshold, shown):
    """0.996 was titled 100%, above the 99.7% of the captions it let in."""
    for count in (0, 3):
        title = samples_title("confident-mistakes", count, "test", 10000, None, 9, threshold)
        assert f" made with at least {shown} confidence" in title


def test_the_picture_never_goes_among_the_exported_digits(tmp_path, synthetic_npz):
    """-o ex/00000-label7.png replaced an exported digit with the grid, listed as a digit."""
    for inside in ("ex/00000-label7.png", "ex/grid.png", "ex/sub/grid.png"):
        output = tmp_path / inside
        result = run(
            "render-samples", synthetic_npz, "--count", "2", "--export-dir", tmp_path / "ex", "-o", output
        )
        assert_failed_cleanly(
            result, output, f"-o is inside --export-dir {tmp_path / 'ex'}, among the digits"
        )
        assert not (tmp_path / "ex").exists()
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")  # one folder under two names
    output = tmp_path / "real" / "00000-label7.png"
    result = run(
        "render-samples", synthetic_npz, "--count", "2", "--export-dir", tmp_path / "link", "-o", output
    )
    assert_failed_cleanly(result, output, "-o is inside --export-dir")


def test_a_title_of_some_classes_sets_their_names_apart() -> None:
    """ "2000 test images T-shirt/top, Shirt" ran the class names into the noun."""
    title = samples_title("first", 64, "test", 2000, ("T-shirt/top", "Shirt"), None, 0.9, "images")
    assert title == "The first 64 of 2000 test images (T-shirt/top, Shirt)"
