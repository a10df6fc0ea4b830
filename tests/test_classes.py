"""Class names from the data to every output: a small Fashion-MNIST-named dataset trained with
`--classes` by name, then checkpoint, info, eval, render-samples, predict and serve; the
checkpoint's format versions; how predict prepares an image for each dataset's models."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageDraw

from mnistkit.architectures import param_shapes
from mnistkit.arrays import save_arrays
from mnistkit.checkpoint import FORMAT_VERSION, METADATA_KEY, canonical_json, load_checkpoint, save_checkpoint
from mnistkit.cli import cli
from mnistkit.config import TrainConfig
from mnistkit.datasets import FASHION_MNIST, IMAGE_STYLES
from mnistkit.errors import MnistkitError
from mnistkit.evaluation import Confusion, Evaluation
from mnistkit.images import load_digit
from mnistkit.plots import confusion_image, heat_map_origin
from mnistkit.preprocess import _object_map, preprocess_digit
from mnistkit.serve import prediction_json

NAMES = list(FASHION_MNIST.class_names)
CHOSEN = ("T-shirt/top", "Trouser", "Bag")


def run(*args: object):
    return CliRunner().invoke(cli, [str(arg) for arg in args])


def draw_product(label: int, rng: np.random.Generator) -> np.ndarray:
    """A 28x28 Fashion-MNIST-like picture, bright on black: a T-shirt's T, a trouser's two legs, a bag."""
    image = Image.new("L", (28, 28), 0)
    draw = ImageDraw.Draw(image)
    dx, dy, shade = int(rng.integers(-2, 3)), int(rng.integers(-2, 3)), int(rng.integers(150, 256))
    if label == 0:
        draw.rectangle((4 + dx, 5 + dy, 23 + dx, 10 + dy), fill=shade)
        draw.rectangle((10 + dx, 5 + dy, 17 + dx, 24 + dy), fill=shade)
    elif label == 1:
        draw.rectangle((7 + dx, 3 + dy, 12 + dx, 25 + dy), fill=shade)
        draw.rectangle((15 + dx, 3 + dy, 20 + dx, 25 + dy), fill=shade)
    else:
        draw.rectangle((4 + dx, 11 + dy, 23 + dx, 24 + dy), fill=shade)
        draw.arc((8 + dx, 3 + dy, 19 + dx, 16 + dy), 180, 360, fill=shade, width=2)
    return np.asarray(image, dtype=np.uint8)


@pytest.fixture(scope="module")
def fashion_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An .npz that says it holds Fashion-MNIST, with three of its classes drawn."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, count in (("train", 240), ("test", 60)):
        labels = np.resize(np.array([0, 1, 8], np.uint8), count)
        arrays[f"{split}_images"] = np.stack([draw_product(int(label), rng) for label in labels])
        arrays[f"{split}_labels"] = labels
    arrays["dataset"], arrays["class_names"] = np.array("fashion-mnist"), np.array(NAMES)
    path = tmp_path_factory.mktemp("fashion") / "fashion.npz"
    save_arrays(path, arrays)
    return path


@pytest.fixture(scope="module")
def fashion_model(fashion_npz: Path) -> Path:
    output = fashion_npz.with_name("model.safetensors")
    result = run(
        "train", fashion_npz, "-o", output, "--classes", ",".join(CHOSEN),
        "--hidden", "16", "--epochs", "4", "--batch-size", "32", "--lr", "0.01",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return output


def test_the_checkpoint_names_its_dataset_classes_and_preprocessing(fashion_model: Path) -> None:
    checkpoint = load_checkpoint(fashion_model)
    assert checkpoint.metadata["format_version"] == FORMAT_VERSION == 2
    assert checkpoint.classes == [0, 1, 8] and checkpoint.class_names == list(CHOSEN)
    assert checkpoint.dataset == "fashion-mnist" and checkpoint.preprocessing == "fashion-mnist"
    assert checkpoint.architecture["num_classes"] == 3
    assert checkpoint.metadata["config"]["classes"] == list(CHOSEN)
    info = json.loads(run("info", fashion_model, "--json").stdout)
    assert (info["dataset"], info["class_names"], info["preprocessing"]) == (
        "fashion-mnist", list(CHOSEN), "fashion-mnist",
    )  # fmt: skip


@pytest.mark.parametrize("preset", ["cnn", "cnn-best", "3v8"])
def test_a_handwriting_preset_mirrors_clothes_instead_of_distorting_them(
    preset: str, fashion_npz: Path, synthetic_npz: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def settings(data: Path, *options: str) -> dict:
        output = tmp_path / "m.safetensors"
        result = run("train", data, "-o", output, "--preset", preset, *options, "--show-config")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    assert settings(fashion_npz)["augment"].split("+")[0] == "mirror"
    assert settings(fashion_npz)["batch_norm"] is True
    assert settings(synthetic_npz)["augment"] == "distort"
    assert settings(fashion_npz, "--augment", "distort")["augment"] == "distort"
    assert settings(fashion_npz, "--model", "mlp")["batch_norm"] is False

    import mnistkit
    from mnistkit import training

    def stop_at_the_settings(arrays, config, output, **options):
        raise LookupError(config.augment)

    monkeypatch.setattr(training, "train", stop_at_the_settings)
    with pytest.raises(LookupError, match=r"^mirror(\+shift)?$"):
        mnistkit.train(mnistkit.load_arrays(fashion_npz), preset=preset)


def test_the_best_preset_reads_clothes_both_ways_round_and_digits_a_pixel_each_way(
    fashion_npz: Path, synthetic_npz: Path, tmp_path: Path
) -> None:
    def views(data: Path, *options: str) -> tuple[bool, bool]:
        """The preset's (mirror_average, shift_average) for the data, after the options."""
        output = tmp_path / "m.safetensors"
        result = run("train", data, "-o", output, "--preset", "cnn-best", *options, "--show-config")
        assert result.exit_code == 0, result.output
        config = json.loads(result.stdout)
        return config["mirror_average"], config["shift_average"]

    assert views(fashion_npz) == (True, False)
    assert views(fashion_npz, "--no-mirror-average") == (False, False)
    assert views(fashion_npz, "--shift-average") == (True, True)
    assert views(synthetic_npz) == (False, True)
    assert views(synthetic_npz, "--mirror-average", "--no-shift-average") == (True, False)


def test_eval_names_the_classes(fashion_model: Path, fashion_npz: Path, tmp_path: Path) -> None:
    result = run("eval", fashion_model, fashion_npz, "--json", tmp_path / "metrics.json")
    assert result.exit_code == 0, result.output
    assert "class  name         precision" in result.stdout and "    8  Bag" in result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) <= 80
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["class_names"] == list(CHOSEN) and metrics["accuracy"] >= 0.9
    assert [row["name"] for row in metrics["per_class"]] == list(CHOSEN)
    picture = tmp_path / "confusion.png"
    assert run("render-confusion", "--metrics", tmp_path / "metrics.json", "-o", picture).exit_code == 0
    with Image.open(picture) as image:
        assert image.size[0] > heat_map_origin(CHOSEN)[0] > 96  # room for "T-shirt/top" on the left


def test_a_file_naming_only_its_dataset_holds_that_dataset_s_classes(
    fashion_model: Path, fashion_npz: Path, tmp_path: Path
) -> None:
    """An .npz saved with `dataset` but no `class_names` (a user's own np.savez) holds the
    named dataset's classes: its clothes were taken for MNIST's digits and refused by eval."""
    with np.load(fashion_npz) as archive:
        arrays = {key: archive[key] for key in archive.files if key != "class_names"}
    named_only = tmp_path / "named-only.npz"
    np.savez(named_only, **arrays)
    result = run("eval", fashion_model, named_only)
    assert result.exit_code == 0, result.output
    assert "    8  Bag" in result.stdout
    arrays["dataset"] = np.array("my-own-scans")
    np.savez(named_only, **arrays)
    result = run("eval", fashion_model, named_only)
    assert result.exit_code != 0 and "holds my-own-scans (0, 1, 2, ...)" in result.output


def test_predict_on_exported_images_prints_names(
    fashion_model: Path, fashion_npz: Path, tmp_path: Path
) -> None:
    exported = tmp_path / "samples"
    shown = run(
        "render-samples", fashion_npz, "-o", tmp_path / "samples.png", "--model", fashion_model,
        "--count", "6", "--export-dir", exported,
    )  # fmt: skip
    assert shown.exit_code == 0, shown.output
    paths = shown.stdout.split()
    names = ["00000-label0-T-shirt-top.png", "00001-label1-Trouser.png", "00002-label8-Bag.png"]
    assert [Path(path).name for path in paths][:3] == names
    rows = list(
        csv.reader(
            io.StringIO(run("predict", fashion_model, *paths, "--no-preprocess").stdout), delimiter="\t"
        )
    )
    truth = {"0": "T-shirt/top", "1": "Trouser", "8": "Bag"}
    right = sum(row[1] == truth[Path(row[0]).name.split("-")[1].removeprefix("label")] for row in rows)
    assert len(rows) == 6 and right >= 5, rows
    table = run(
        "predict", fashion_model, *paths[:2], "--format", "csv", "--top-k", "2", "--no-preprocess"
    ).stdout
    assert (
        table.splitlines()[0]
        == "path,label,confidence,top1_label,top1_probability,top2_label,top2_probability"
    )
    record = json.loads(
        run("predict", fashion_model, paths[2], "--format", "jsonl", "--no-preprocess").stdout
    )
    assert set(record) == {"path", "label", "class", "confidence"}
    assert NAMES[record["class"]] == record["label"]


def test_serve_answers_with_the_name(fashion_model: Path, tmp_path: Path) -> None:
    bag = 255 - np.kron(draw_product(8, np.random.default_rng(1)), np.ones((6, 6), np.uint8))
    buffer = io.BytesIO()
    Image.fromarray(bag).save(buffer, format="PNG")
    reading = prediction_json(load_checkpoint(fashion_model), buffer.getvalue())
    assert (
        reading["class_names"] == list(CHOSEN)
        and reading["label"] == CHOSEN[reading["classes"].index(reading["digit"])]
    )


def test_classes_by_name_or_number_and_a_clear_error(fashion_npz: Path, tmp_path: Path) -> None:
    from mnistkit.arrays import load_arrays
    from mnistkit.training_data import prepare_data

    arrays = load_arrays(fashion_npz)
    data = prepare_data(arrays, TrainConfig(classes=("Bag", "0")))
    assert data.classes == [8, 0] and data.class_names == ["Bag", "T-shirt/top"]
    with pytest.raises(
        MnistkitError, match=r"^classes: 'Sandle' is neither a class of fashion-mnist \(T-shirt/top"
    ):
        prepare_data(arrays, TrainConfig(classes=("Bag", "Sandle")))
    with pytest.raises(MnistkitError, match="no training images of class Dress"):
        prepare_data(arrays, TrainConfig(classes=("Bag", "Dress")))
    assert TrainConfig.from_dict({"digits": [3, 8]}).classes == ("3", "8")  # a checkpoint from before


def test_show_config_refuses_the_classes_training_would_refuse(
    fashion_npz: Path, synthetic_npz: Path, tmp_path: Path
) -> None:
    """`--show-config` printed the settings and exited 0 for a class the data does not have,
    so a script checking its settings first went on to a training that failed."""
    output = tmp_path / "m.safetensors"
    for data, classes, wrong, options in (
        (fashion_npz, "Tshirt,Shirt", "Tshirt", ()),
        (synthetic_npz, "3,12", "12", ()),
        (synthetic_npz, "3,ki", "ki", ()),
        (synthetic_npz, "o,kana", "kana", ("--dataset", "kmnist")),
    ):
        shown = run("train", data, "-o", output, "--classes", classes, *options, "--show-config")
        trained = run("train", data, "-o", output, "--classes", classes, *options, "--epochs", "1")
        assert shown.exit_code == trained.exit_code == 1, (shown.output, trained.output)
        assert shown.output == trained.output and shown.output.startswith(f"Error: --classes: '{wrong}' is ")
    assert not output.exists()
    for data, classes, options in (
        (fashion_npz, "T-shirt/top,Bag", ()),
        (synthetic_npz, "o,ki", ("--dataset", "kmnist")),
    ):
        shown = run("train", data, "-o", output, "--classes", classes, *options, "--show-config")
        assert shown.exit_code == 0, shown.output
        assert json.loads(shown.stdout)["classes"] == classes.split(",")


# Checkpoint format versions --------------------------------------------------------------

ARCHITECTURE = {"model": "logreg", "num_classes": 3}


def _params() -> dict[str, np.ndarray]:
    return {name: np.zeros(shape, np.float32) for name, shape in param_shapes(ARCHITECTURE).items()}


def test_mnist_digits_are_still_written_as_version_1(tmp_path: Path) -> None:
    metadata = {"architecture": ARCHITECTURE, "normalization": {"kind": "unit"}, "classes": [3, 5, 8]}
    named = {**metadata, "dataset": "mnist", "class_names": ["3", "5", "8"], "preprocessing": "mnist"}
    save_checkpoint(tmp_path / "a.safetensors", _params(), metadata)
    save_checkpoint(tmp_path / "b.safetensors", _params(), named)
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    loaded = load_checkpoint(tmp_path / "b.safetensors")
    assert loaded.metadata["format_version"] == 1 and loaded.class_names == ["3", "5", "8"]
    assert loaded.dataset == "mnist" and loaded.preprocessing == "mnist"


def _raw_checkpoint(path: Path, metadata: dict) -> Path:
    from safetensors.numpy import save

    full = {"format": "mnistkit-checkpoint", "architecture": ARCHITECTURE, "normalization": {"kind": "unit"},
            **metadata}  # fmt: skip
    path.write_bytes(save(_params(), metadata={METADATA_KEY: canonical_json(full)}))
    return path


def test_a_version_1_checkpoint_means_mnist_digits_whatever_else_it_holds(tmp_path: Path) -> None:
    path = _raw_checkpoint(
        tmp_path / "old.safetensors",
        {"format_version": 1, "classes": [1, 2, 7], "class_names": ["x", "y", "z"], "dataset": "kmnist"},
    )
    checkpoint = load_checkpoint(path)
    assert checkpoint.class_names == ["1", "2", "7"] and checkpoint.dataset == "mnist"


def test_render_samples_of_classes_the_model_does_not_know_names_them(
    fashion_npz: Path, tmp_path: Path
) -> None:
    """`--classes Bag` for a model of tops, trousers and pullovers said "the model knows none
    of the digits asked for": digits, for clothes, and neither side named."""
    model = _raw_checkpoint(
        tmp_path / "tops.safetensors",
        {"format_version": 2, "classes": [0, 1, 2], "dataset": "fashion-mnist",
         "class_names": NAMES[:3], "preprocessing": "fashion-mnist"},
    )  # fmt: skip
    output = tmp_path / "samples.png"
    result = run("render-samples", fashion_npz, "-o", output, "--model", model, "--classes", "Bag")
    assert result.exit_code == 1 and not output.exists()
    assert result.output == (
        f"Error: {model}: --classes Bag names none of the model's classes (T-shirt/top, Trouser, Pullover)\n"
    )


VERSION_2 = {"format_version": 2, "classes": [0, 1, 30], "dataset": "emnist-balanced",
             "class_names": ["0", "1", "U"], "preprocessing": "emnist"}  # fmt: skip


@pytest.mark.parametrize(
    "change, problem",
    [
        ({"class_names": ["0", "1"]}, "class_names must be 3 distinct names, one per class"),
        ({"class_names": ["0", "0", "U"]}, "class_names must be 3 distinct names"),
        ({"class_names": ["0", "1", "\n"]}, "class_names must be 3 distinct names"),
        ({"dataset": 7}, "checkpoint dataset 7 is not a name"),
        (
            {"preprocessing": "polaroid"},
            "preprocessing 'polaroid' is not one of mnist, emnist, fashion-mnist, none (a newer "
            "mnistkit may have written it: upgrade mnistkit)",
        ),
        ({"classes": [0, 1, 1000]}, "are not distinct labels 0-999"),
        ({"format_version": 1}, "are not distinct digits 0-9"),
        # eval then said "holds emnist-balanced (...), but the model was trained on emnist-balanced (...)"
        ({"classes": [0, 1, 47]}, "checkpoint classes [0, 1, 47] are not labels of emnist-balanced (0-46)"),
    ],
)
def test_version_2_names_are_checked(tmp_path: Path, change: dict, problem: str) -> None:
    assert load_checkpoint(_raw_checkpoint(tmp_path / "ok.safetensors", VERSION_2)).class_names[2] == "U"
    path = _raw_checkpoint(tmp_path / "bad.safetensors", {**VERSION_2, **change})
    with pytest.raises(MnistkitError) as error:
        load_checkpoint(path)
    assert problem in str(error.value) and str(path) in str(error.value) and "\n" not in str(error.value)


# How a person's image is prepared for each dataset's models ------------------------------


def product_photo() -> np.ndarray:
    """A dark, shaded, wide object (120x50 px) off-centre on a white 200x160 photo, gray in [0, 1]."""
    photo = np.ones((160, 200), np.float32)
    shades = np.linspace(0.05, 0.45, 120, dtype=np.float32)
    photo[20:70, 60:180] = shades[None, :]
    return photo


def ink_rows_and_columns(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.flatnonzero(image.any(axis=1)), np.flatnonzero(image.any(axis=0))


@pytest.mark.parametrize("style, side_px", [("fashion-mnist", 28), ("emnist", 26), ("mnist", 20)])
def test_each_style_sizes_and_places_the_object_as_its_dataset_did(style: str, side_px: int) -> None:
    image = preprocess_digit(product_photo(), "photo.png", IMAGE_STYLES[style])
    rows, columns = ink_rows_and_columns(image)
    assert len(columns) == side_px and abs(len(rows) - round(side_px * 50 / 120)) <= 1
    weights = image.astype(np.float64)
    centre_y = (weights.sum(axis=1) * np.arange(28)).sum() / weights.sum()
    if style == "mnist":  # the centre of mass at the centre
        assert abs(centre_y - 14) <= 0.5
    else:  # the box in the middle
        assert abs(rows[0] - (27 - rows[-1])) <= 1 and abs(columns[0] - (27 - columns[-1])) <= 1
    levels = len(np.unique(image[image > 0]))
    if style == "fashion-mnist":  # a photo's shades kept: no saturated core
        assert levels > 20 and (image == 255).mean() < 0.05
    else:  # a pen stroke's core saturates
        assert (image[image > 0] >= 240).mean() > 0.5


def test_predict_prepares_an_image_by_the_checkpoint_s_dataset(fashion_model: Path, tmp_path: Path) -> None:
    photo = tmp_path / "photo.png"
    Image.fromarray((product_photo() * 255).astype(np.uint8)).save(photo)
    saved = tmp_path / "seen"
    assert run("predict", fashion_model, photo, "--save-preprocessed", saved).exit_code == 0
    with Image.open(next(saved.iterdir())) as seen:
        np.testing.assert_array_equal(np.asarray(seen), load_digit(photo, style="fashion-mnist"))
    assert not np.array_equal(load_digit(photo, style="fashion-mnist"), load_digit(photo))


@pytest.fixture(scope="module")
def shapes_arrays() -> dict[str, np.ndarray]:
    """A dataset of a user's own: filled discs, squares and bars, bright on black."""
    rng = np.random.default_rng(5)
    arrays = {}
    for split, count in (("train", 150), ("test", 30)):
        labels = np.arange(count, dtype=np.uint8) % 3
        images = np.zeros((count, 28, 28), np.uint8)
        for image, label in zip(images, labels, strict=True):
            top, left = rng.integers(4, 9, 2)
            canvas = Image.new("L", (28, 28), 0)
            draw = ImageDraw.Draw(canvas)
            box = (int(left), int(top), int(left) + 14, int(top) + 14)
            if label == 0:
                draw.ellipse(box, fill=255)
            else:  # a square, or a bar: its middle third
                draw.rectangle((box[0], box[1] + 5 * (label - 1), box[2], box[3] - 5 * (label - 1)), fill=255)
            image[:] = np.asarray(canvas)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels
    return arrays


def test_a_model_of_a_dataset_mnistkit_does_not_know_takes_images_as_they_are(
    shapes_arrays: dict[str, np.ndarray], tmp_path: Path
) -> None:
    """Prepared as MNIST's digits, a user's filled shapes were hollowed into rings and read with
    confidence (a filled circle: `ring 0.82`), or refused as blank."""
    import mnistkit

    data = tmp_path / "shapes.npz"
    np.savez(
        data, **shapes_arrays, dataset=np.array("shapes"), class_names=np.array(["disc", "square", "bar"])
    )
    model = tmp_path / "shapes.safetensors"
    mnistkit.train(str(data), "logreg", epochs=3, verbose=False, output=model)
    assert load_checkpoint(model).preprocessing == "none"
    pictures = []
    for index in range(6):
        path = tmp_path / f"own-{index}.png"
        Image.fromarray(shapes_arrays["test_images"][index]).save(path)
        pictures.append(path)
    result = run("predict", model, *pictures, "--format", "jsonl")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    expected = mnistkit.load(model).predict_proba(shapes_arrays["test_images"][:6])
    np.testing.assert_allclose([row["confidence"] for row in rows], expected.max(axis=1), atol=1e-6)
    large = tmp_path / "large.png"
    Image.fromarray(np.kron(shapes_arrays["test_images"][0], np.ones((4, 4), np.uint8))).save(large)
    result = run("predict", model, large)
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == (
        f"{large}: image is 112x112 pixels; the model takes 28x28 images as they are, as its dataset's "
        "own (mnistkit does not know how that dataset made its images from pictures)\n"
    )


def test_a_model_trained_on_class_names_without_a_dataset_still_reads_its_file(
    shapes_arrays: dict[str, np.ndarray], tmp_path: Path
) -> None:
    """Such files trained until 2026-12-07, into models that say they are MNIST's with other
    names: eval and the pictures still take the file they were trained on."""
    import mnistkit

    named, names = tmp_path / "named.npz", np.array(["disc", "square", "bar"])
    np.savez(named, **shapes_arrays, dataset=np.array("shapes"), class_names=names)
    model = tmp_path / "old.safetensors"
    mnistkit.train(str(named), "logreg", epochs=1, verbose=False, output=model)
    trained = load_checkpoint(model)
    save_checkpoint(model, trained.params, {**trained.metadata, "dataset": "mnist", "preprocessing": "mnist"})
    names_only = tmp_path / "names-only.npz"
    np.savez(names_only, **shapes_arrays, class_names=names)
    result = run("eval", model, names_only)
    assert result.exit_code == 0, result.output
    assert run("render-samples", names_only, "--model", model, "-o", tmp_path / "s.png").exit_code == 0


def test_class_names_without_a_dataset_are_refused_before_training(
    shapes_arrays: dict[str, np.ndarray], tmp_path: Path
) -> None:
    """Such a file trained as MNIST's digits named otherwise: with more than ten classes all
    its epochs ran before saving was refused; with fewer, the model said it was MNIST's."""
    data = tmp_path / "named.npz"
    np.savez(data, **shapes_arrays, class_names=np.array(["disc", "square", "bar"]))
    result = run("train", data, "-o", tmp_path / "m.safetensors", "--epochs", "1")
    assert result.exit_code == 1 and not (tmp_path / "m.safetensors").exists()
    assert result.output == (
        f"Error: {data}: class_names (disc, square, bar, ...) are not MNIST's, the dataset taken where "
        "none is named; record your dataset's name too: dataset='shapes'\n"
    )
    many = {key: value for key, value in shapes_arrays.items()}
    many["train_labels"] = (np.arange(150) % 12).astype(np.uint8)
    np.savez(data, **many)
    result = run("train", data, "-o", tmp_path / "m.safetensors")
    assert result.exit_code == 1
    assert result.output == (
        f"Error: {data}: train_labels holds 11, outside 0-9; classes of your own are named by "
        "class_names and dataset\n"
    )


def test_a_light_product_cut_out_on_transparency_is_read_as_on_white(tmp_path: Path) -> None:
    """Fashion-MNIST's photos were taken on white. A light garment cut out of its photo was put
    on black, as a light pen's strokes are, which inverted its shades (80.5% against 89.5% on
    the same 200 test images flattened on white)."""
    photo = np.ones((160, 200), np.float32)
    photo[20:70, 60:180] = np.linspace(0.55, 0.95, 120, dtype=np.float32)[None, :]
    gray = (photo * 255).round().astype(np.uint8)
    cut_out = np.zeros((160, 200, 4), np.uint8)  # transparent black around the garment
    cut_out[..., 3] = np.where(photo < 1.0, 255, 0)
    cut_out[..., :3] = np.where(photo < 1.0, gray, 0)[..., None]
    Image.fromarray(gray).save(tmp_path / "on-white.png")
    Image.fromarray(cut_out, "RGBA").save(tmp_path / "cut-out.png")
    on_white = load_digit(tmp_path / "on-white.png", style="fashion-mnist")
    np.testing.assert_array_equal(load_digit(tmp_path / "cut-out.png", style="fashion-mnist"), on_white)
    assert on_white[14, 2] > on_white[14, 25] > 0  # darker on the photo's left: brighter here


@pytest.mark.parametrize(
    "light",
    [
        lambda y, x: 1.0 - 0.3 * y,
        lambda y, x: 1.0 - 0.25 * x,
        lambda y, x: 1.0 - 0.6 * ((x - 0.5) ** 2 + (y - 0.5) ** 2),
    ],
    ids=["falling-down", "falling-across", "dark-corners"],
)
def test_a_product_photo_lit_unevenly_is_read_as_one_lit_evenly(tmp_path: Path, light) -> None:
    """The backdrop was taken as one level: where the light fell off, the backdrop was kept as
    part of the object (Fashion test images so lit read 66 to 82% against 90%)."""
    photo = product_photo()
    rows, columns = np.indices(photo.shape)
    lit = photo * light(rows / (photo.shape[0] - 1), columns / (photo.shape[1] - 1))
    for name, picture in (("even.png", photo), ("uneven.png", lit)):
        Image.fromarray((picture * 255).round().astype(np.uint8)).save(tmp_path / name)
    even = load_digit(tmp_path / "even.png", style="fashion-mnist").astype(int)
    uneven = load_digit(tmp_path / "uneven.png", style="fashion-mnist").astype(int)
    assert ink_rows_and_columns(uneven)[0].tolist() == ink_rows_and_columns(even)[0].tolist()
    assert ink_rows_and_columns(uneven)[1].tolist() == ink_rows_and_columns(even)[1].tolist()
    assert np.abs(uneven - even).max() <= 16  # the object's own shades, as the light left them


def test_an_object_that_reaches_the_border_keeps_the_part_there(tmp_path: Path) -> None:
    """The backdrop's surface, fitted through the border's pixels, bent into a dark garment
    that reached the picture's edge, and its lower half was taken for backdrop (a T-shirt
    read as a bag)."""
    photo = np.ones((160, 200), np.float32)
    photo[40:, 30:170] = np.linspace(0.1, 0.5, 120, dtype=np.float32)[:, None]  # to the bottom edge
    framed = np.pad(photo, 30, constant_values=1.0)  # the same on white all round
    for name, picture in (("reaching.png", photo), ("framed.png", framed)):
        Image.fromarray((picture * 255).round().astype(np.uint8)).save(tmp_path / name)
    reaching = load_digit(tmp_path / "reaching.png", style="fashion-mnist").astype(int)
    framed_seen = load_digit(tmp_path / "framed.png", style="fashion-mnist").astype(int)
    assert reaching[-6:].mean() > 0.5 * framed_seen[-6:].mean() > 0  # its lower part is there
    assert np.abs(reaching - framed_seen).mean() < 8


def test_a_light_object_over_a_third_of_the_border_of_a_dark_backdrop_leaves_it_backdrop() -> None:
    """A fit through every border pixel bent past the backdrop, and each fit without the pixels
    beyond it bent further: a fifth of the backdrop was taken for the object."""
    rng = np.random.default_rng(0)
    rows, columns = np.mgrid[0:120, 0:120] / 119
    placed = (columns < 0.6) & (rows < 0.7)
    photo = np.where(placed, 0.8, 0.1 + 0.05 * rows) + rng.normal(0, 0.01, placed.shape)
    _, found = _object_map(np.clip(photo, 0, 1).astype(np.float32), "photo")
    assert found[placed].mean() == 1.0 and found[~placed].mean() < 0.01


def test_pictures_of_many_named_classes() -> None:
    """EMNIST balanced's 47 classes: a heat map of smaller cells, the names on both axes."""
    names = ["0", "1", "A", "a", "T-shirt/top"] + [f"c{index}" for index in range(42)]
    evaluation = Evaluation.empty(list(range(47)), class_names=names)
    evaluation.confusion_matrix += np.eye(47, dtype=np.int64) * 400
    picture = confusion_image(Confusion(evaluation.classes, evaluation.confusion_matrix, "test", names))
    assert picture.size[0] < 47 * 54 and picture.size[1] > 47 * 36


def test_a_scatter_of_many_classes_shows_each_in_a_colour_of_its_own() -> None:
    """EMNIST letters' embedding: the legend ran off the picture after about 22 classes, and
    the colours came round every ten (a, k and u alike)."""
    from mnistkit.charts import DIGIT_COLOURS, scatter_chart
    from mnistkit.plots import class_colour

    colours = [class_colour(label) for label in range(62)]  # EMNIST byclass
    assert len(set(colours)) == 62 and colours[:10] == list(DIGIT_COLOURS)
    names = [chr(ord("a") + index % 26) * (1 + index // 26) for index in range(47)]
    points = np.random.default_rng(0).standard_normal((50, 2))
    picture = scatter_chart(points, [(0, 0, 0)] * 50, list(zip(names, colours, strict=False)), "t", "x", "y")
    shown = {tuple(pixel) for pixel in np.asarray(picture.convert("RGB")).reshape(-1, 3)}
    assert all(colour in shown for colour in colours[:47])


def test_weight_templates_of_many_classes_wrap_into_rows() -> None:
    """EMNIST balanced's 47 templates stood in one row 5,956 px wide."""
    from mnistkit.checkpoint import Checkpoint
    from mnistkit.plots import weights_image

    architecture = {"model": "logreg", "num_classes": 47}
    params = {name: np.ones(shape, np.float32) for name, shape in param_shapes(architecture).items()}
    names = [f"c{index}" for index in range(47)]
    metadata = {"architecture": architecture, "classes": list(range(47)), "class_names": names}
    picture = weights_image(Checkpoint(params, {**metadata, "dataset": "emnist-balanced"}), scale=4)
    assert picture.size[0] <= 13 * (28 * 4 + 14) + 48 and picture.size[1] >= 4 * 28 * 4


def test_a_letter_in_either_case_names_its_class_where_one_class_holds_both(tmp_path: Path) -> None:
    """EMNIST letters hold `C` and `c` in one class, named `c`: `--classes A,B`, a labels file's
    `C` and `render-samples --classes C` were refused as no class's name."""
    from mnistkit.arrays import class_labels
    from mnistkit.datasets import dataset_spec, label_named
    from mnistkit.evaluation import read_labels

    letters = dataset_spec("emnist-letters").class_names
    balanced = dict(enumerate(dataset_spec("emnist-balanced").class_names))
    assert label_named("C", dict(enumerate(letters))) == label_named("c", dict(enumerate(letters))) == 2
    assert balanced[label_named("c", balanced)] == "C"  # balanced merges c into C
    assert balanced[label_named("a", balanced)] == "a" and balanced[label_named("A", balanced)] == "A"
    assert label_named("Bag", dict(enumerate(FASHION_MNIST.class_names))) == 8
    assert label_named("bag", {}) is None
    assert class_labels(("A", "b", "25"), letters, "emnist-letters") == [0, 1, 25]
    (tmp_path / "labels.tsv").write_text("c.png\tC\nk.png\tk\n")
    labelled = read_labels(tmp_path / "labels.tsv", None, dict(enumerate(letters)))
    assert [label for _, label in labelled] == [2, 10]
