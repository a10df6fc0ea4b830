"""`mnistkit eval` and `mnistkit info`: metrics that add up, the JSON contract, the CI gate."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import draw_large_digit
from PIL import Image

import mnistkit
from mnistkit.architectures import param_shapes
from mnistkit.checkpoint import load_checkpoint, save_checkpoint
from mnistkit.cli import cli
from mnistkit.errors import MnistkitError
from mnistkit.evaluation import Evaluation, format_table, read_labels

EVAL_KEYS = {
    "split",
    "count",
    "accuracy",
    "mean_loss",
    "classes",
    "class_names",
    "confusion_matrix",
    "per_class",
    "top_confusions",
    "checkpoint",
    "data",
    "finished",
}


def run(*args):
    return CliRunner().invoke(cli, [str(arg) for arg in args])


def test_metrics_from_a_known_confusion() -> None:
    evaluation = Evaluation.empty([0, 1, 2])
    true = np.array([0, 0, 0, 1, 1, 2, 2, 2, 7])
    predicted = np.array([0, 0, 1, 1, 1, 1, 1, 2, 0])
    log_probabilities = np.log(np.full((9, 3), 0.1))
    log_probabilities[np.arange(9), predicted] = np.log(0.8)
    evaluation.add(log_probabilities, true)
    assert evaluation.skipped == 1 and evaluation.count == 8
    assert evaluation.confusion_matrix.tolist() == [[2, 1, 0], [0, 2, 0], [0, 2, 1]]
    assert evaluation.accuracy == pytest.approx(5 / 8)
    assert evaluation.mean_loss == pytest.approx((5 * -np.log(0.8) + 3 * -np.log(0.1)) / 8)
    per_class = {row["class"]: row for row in evaluation.per_class()}
    assert per_class[1]["precision"] == pytest.approx(2 / 5) and per_class[1]["recall"] == 1.0
    assert per_class[2]["precision"] == 1.0 and per_class[2]["recall"] == pytest.approx(1 / 3)
    assert per_class[2]["f1"] == pytest.approx(2 * (1 / 3) / (1 + 1 / 3))
    assert evaluation.top_confusions() == [
        {"true": 2, "predicted": 1, "count": 2},
        {"true": 0, "predicted": 1, "count": 1},
    ]


def test_the_table_of_many_classes_keeps_to_80_columns() -> None:
    """EMNIST's 47 classes leave out the confusion matrix, and the line saying so fits too."""
    evaluation = Evaluation.empty(list(range(47)), class_names=[f"class {label}" for label in range(47)])
    evaluation.add(np.log(np.full((47, 47), 1 / 47)), np.arange(47))
    table = format_table(evaluation, "models/emnist.safetensors", "data/emnist-balanced.npz")
    assert "see --json or render-confusion" in table
    assert max(len(line) for line in table.splitlines()) <= 80


def test_eval_table_json_and_gate(large_digit_model: Path, synthetic_npz: Path, tmp_path: Path) -> None:
    report = tmp_path / "metrics.json"
    result = run("eval", large_digit_model, synthetic_npz, "--json", report)
    assert result.exit_code == 0, result.output
    assert max(len(line) for line in result.stdout.splitlines()) <= 80
    metrics = json.loads(report.read_text())
    assert set(metrics) == EVAL_KEYS
    assert metrics["split"] == "test" and metrics["count"] == 200 and metrics["classes"] == list(range(10))
    matrix = np.array(metrics["confusion_matrix"])
    assert matrix.sum() == 200 and metrics["accuracy"] == pytest.approx(np.trace(matrix) / 200)
    assert [row["support"] for row in metrics["per_class"]] == matrix.sum(axis=1).tolist()
    assert f"accuracy {metrics['accuracy']:.2%}" in result.stdout
    assert metrics["checkpoint"] == str(large_digit_model) and metrics["data"] == str(synthetic_npz)
    assert metrics["finished"] is True and result.stderr == ""

    assert run("eval", large_digit_model, synthetic_npz, "--min-accuracy", "0.01").exit_code == 0
    exactly = f"{100 * metrics['accuracy']:g}"  # the accuracy itself, as a percentage: a pass
    assert run("eval", large_digit_model, synthetic_npz, "--min-accuracy", exactly).exit_code == 0
    failed = run("eval", large_digit_model, synthetic_npz, "--min-accuracy", "100")
    if metrics["accuracy"] < 1.0:
        # 3, not 1: a CI gate tells a model too weak from a file that could not be read
        assert failed.exit_code == 3 and "is below --min-accuracy 100.00%" in failed.stderr
    bad = run("eval", large_digit_model, synthetic_npz, "--min-accuracy", "250")
    assert bad.exit_code == 2 and "neither a fraction" in bad.stderr


def test_a_model_whose_training_stopped_midway_is_named_so_by_eval_predict_and_serve(
    large_digit_model: Path, synthetic_npz: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A train killed by `timeout` (SIGTERM) leaves the checkpoint of its last epoch. eval
    measured it, predict read with it and serve served it without a word, so a CI job that
    only gated on `eval --min-accuracy` went on with half a model."""
    model = load_checkpoint(large_digit_model)
    metadata = dict(model.metadata)
    done = metadata["metrics"]["epochs"]
    metadata["config"] = {**metadata["config"], "epochs": done + 4}
    unfinished = tmp_path / "unfinished.safetensors"
    save_checkpoint(unfinished, model.params, metadata)
    note = f"{unfinished}: note: an unfinished model, its training stopped after epoch {done} of {done + 4}\n"
    report = tmp_path / "metrics.json"
    evaluated = run("eval", unfinished, synthetic_npz, "--json", report, "--min-accuracy", "0.01")
    assert evaluated.exit_code == 0 and evaluated.stderr == note
    assert json.loads(report.read_text())["finished"] is False
    digit = tmp_path / "3.png"
    Image.fromarray(255 - draw_large_digit(3)).save(digit)
    predicted = run("predict", unfinished, digit)
    assert predicted.exit_code == 0 and predicted.stderr == note and predicted.stdout.startswith(f"{digit}\t")
    assert run("predict", large_digit_model, digit).stderr == ""

    from mnistkit import serve

    monkeypatch.setattr(serve.DigitServer, "serve_forever", lambda server: None)  # its lines alone
    lines = []
    serve.serve(unfinished, port=0, log=lines.append)
    assert len(lines) == 2 and lines[1] == note.rstrip("\n")
    lines.clear()
    serve.serve(large_digit_model, port=0, log=lines.append)
    assert len(lines) == 1


def test_json_reports_name_files_that_are_not_utf8_as_strict_json_readers_take_them(
    large_digit_model: Path, synthetic_npz: Path, tmp_path: Path
) -> None:
    """eval --json and info --json wrote such a name as lone surrogates (`"caf\\udce9"`), which
    strict readers refuse and Python cannot encode; predict's jsonl already did it this way."""
    model = tmp_path / os.fsdecode(b"mod\xe8le.safetensors")
    data = tmp_path / os.fsdecode(b"donn\xe9es.npz")
    model.write_bytes(large_digit_model.read_bytes())
    data.write_bytes(synthetic_npz.read_bytes())
    report = tmp_path / "metrics.json"
    # In a process of its own: click's test runner writes stdout as strict UTF-8, a terminal not
    evaluated = subprocess.run(
        [sys.executable, "-m", "mnistkit", "eval", model, data, "--json", report], capture_output=True
    )
    assert evaluated.returncode == 0, evaluated.stderr
    info = run("info", model, "--json")
    assert info.exit_code == 0, info.output
    for fields, key, path in [
        (json.loads(report.read_bytes().decode("utf-8")), "checkpoint", model),
        (json.loads(report.read_bytes().decode("utf-8")), "data", data),
        (json.loads(info.stdout), "checkpoint", model),
    ]:
        fields[key].encode("utf-8")  # no lone surrogate
        assert fields[key].endswith("\ufffdle.safetensors" if key == "checkpoint" else "\ufffdes.npz")
        assert base64.b64decode(fields[f"{key}_bytes"]) == os.fsencode(path)
    plain = json.loads(run("info", large_digit_model, "--json").stdout)
    assert plain["checkpoint"] == str(large_digit_model) and "checkpoint_bytes" not in plain


def test_split_with_labels_is_refused_rather_than_ignored(large_digit_model: Path, tmp_path: Path) -> None:
    (tmp_path / "labels.tsv").write_text("digit.png\t7\n")
    result = run("eval", large_digit_model, "--labels", tmp_path / "labels.tsv", "--split", "train")
    assert (
        result.exit_code == 2 and "--split picks a split of NPZ; --labels lists the images" in result.stderr
    )
    result = run("eval", large_digit_model, "--labels", tmp_path / "labels.tsv", "--split", "test")
    assert "--split" not in result.stderr  # the default, which scripts give: as good as none


def test_a_missed_threshold_shows_the_digits_that_tell_it_from_the_accuracy() -> None:
    """`accuracy 99.37% is below --min-accuracy 99.37%` read as a contradiction in a CI log."""
    from fractions import Fraction

    from mnistkit.cli import _accuracy_fraction
    from mnistkit.evaluation import distinct_percent, percent_as_given

    assert (distinct_percent(0.9937, 0.99371), distinct_percent(0.99371, 0.9937)) == ("99.370%", "99.371%")
    assert distinct_percent(0.5, 0.6) == "50.00%"
    # 619 of 625 is 99.04% exactly, which 99.04 / 100 in floats is above: a pass, not a failure
    # that printed "99.0400000% is below --min-accuracy 99.0400000%".
    assert 99.04 / 100 > 619 / 625
    assert _accuracy_fraction(99.04) == Fraction(619, 625) and _accuracy_fraction(0.25) == Fraction(1, 4)
    # The threshold as given: 99.999 is not shown as 100.00%, which 99.37% is also below.
    assert [percent_as_given(_accuracy_fraction(value)) for value in (99.999, 0.99999, 99, 99.3701)] == [
        "99.999%",
        "99.999%",
        "99.00%",
        "99.3701%",
    ]


def test_eval_on_the_train_split(large_digit_model: Path, synthetic_npz: Path, tmp_path: Path) -> None:
    report = tmp_path / "train.json"
    result = run("eval", large_digit_model, synthetic_npz, "--split", "train", "--json", report)
    assert result.exit_code == 0, result.output
    assert json.loads(report.read_text())["count"] == 600


def test_labels_outside_the_classes_are_left_out(tmp_path: Path, synthetic_npz: Path) -> None:
    architecture = {"model": "logreg", "num_classes": 2}
    params = {name: np.zeros(shape, np.float32) for name, shape in param_shapes(architecture).items()}
    checkpoint = tmp_path / "3v8.safetensors"
    metadata = {"architecture": architecture, "normalization": {"kind": "unit"}, "classes": [3, 8]}
    save_checkpoint(checkpoint, params, metadata)
    result = run("eval", checkpoint, synthetic_npz, "--json", tmp_path / "m.json")
    assert result.exit_code == 0, result.output
    assert "left out 160 images" in result.stderr
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["count"] == 40 and metrics["classes"] == [3, 8]


@pytest.fixture
def labelled_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "mine"
    folder.mkdir()
    lines = ["path\tdigit"]
    for digit in range(10):
        Image.fromarray(255 - draw_large_digit(digit)).save(folder / f"d{digit}.png")
        lines.append(f"d{digit}.png\t{digit}")
    (folder / "labels.tsv").write_text("\n".join(lines) + "\n")
    return folder


def test_eval_on_own_labelled_images(large_digit_model: Path, labelled_folder: Path, tmp_path: Path) -> None:
    report = tmp_path / "mine.json"
    result = run(
        "eval", large_digit_model, "--images", labelled_folder, "--labels", labelled_folder / "labels.tsv",
        "--json", report, "--min-accuracy", "1.0",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = json.loads(report.read_text())
    assert metrics["split"] == "images" and metrics["count"] == 10 and metrics["accuracy"] == 1.0


def test_eval_takes_labelled_images_as_they_are_with_no_preprocess(
    large_digit_model: Path, synthetic_data, tmp_path: Path
) -> None:
    """As `predict --no-preprocess` reads them: 28x28 images, only made grayscale (eval had no
    such option, so its figures were of the images prepared again)."""
    images = synthetic_data["test_images"][:20]
    lines = []
    for index, image in enumerate(images):
        Image.fromarray(np.roll(image, 3, axis=1)).save(tmp_path / f"{index}.png")  # off-centre
        lines.append(f"{index}.png\t{synthetic_data['test_labels'][index]}\n")
    (tmp_path / "labels.tsv").write_text("".join(lines))
    labels, report = tmp_path / "labels.tsv", tmp_path / "raw.json"
    result = run("eval", large_digit_model, "--labels", labels, "--no-preprocess", "--json", report)
    assert result.exit_code == 0, result.output
    model = mnistkit.load(large_digit_model)
    expected = model.predict(np.roll(images, 3, axis=2)) == synthetic_data["test_labels"][:20]
    assert json.loads(report.read_text())["accuracy"] == expected.mean()
    prepared = run("eval", large_digit_model, "--labels", labels, "--json", "-")
    assert json.loads(prepared.stdout)["accuracy"] != expected.mean()  # the option is what tells
    refused = run("eval", large_digit_model, tmp_path / "data.npz", "--no-preprocess")
    assert refused.exit_code == 2 and "--no-preprocess is for the images of --labels" in refused.output


def test_predicts_own_tsv_kept_beside_the_images_is_their_labels(
    large_digit_model: Path, labelled_folder: Path, monkeypatch
) -> None:
    """`predict folder/*.png -o folder/labels.tsv` writes the paths as given, from the folder
    above: eval looked for folder/folder/d0.png and found no images to evaluate."""
    monkeypatch.chdir(labelled_folder.parent)
    images = sorted(str(path.relative_to(labelled_folder.parent)) for path in labelled_folder.glob("*.png"))
    labels = Path(labelled_folder.name) / "predicted.tsv"
    assert run("predict", large_digit_model, *images, "-o", labels).exit_code == 0
    assert labels.read_text().startswith(f"{labelled_folder.name}/d0.png\t")  # paths as given
    for images_option in ([], ["--images", labelled_folder.name]):
        result = run("eval", large_digit_model, "--labels", labels, *images_option, "--min-accuracy", "1.0")
        assert result.exit_code == 0, result.output
        assert "images 10" in result.stdout


def test_an_unreadable_labelled_image_is_reported_and_left_out(
    large_digit_model: Path, labelled_folder: Path
) -> None:
    (labelled_folder / "d4.png").write_bytes(b"not a png")
    with (labelled_folder / "labels.tsv").open("a") as labels:
        labels.write("gone.png\t5\n")
    result = run("eval", large_digit_model, "--labels", labelled_folder / "labels.tsv")
    assert result.exit_code == 1
    errors = result.stderr.splitlines()
    assert errors[0].startswith(f"{labelled_folder / 'd4.png'}: not an image")
    assert errors[1] == f"{labelled_folder / 'gone.png'}: no such file"
    assert "images 9" in result.stdout
    gated = run(
        "eval", large_digit_model, "--labels", labelled_folder / "labels.tsv", "--min-accuracy", "1.0"
    )
    assert gated.exit_code == 1  # images it could not read outweigh the gate's 3


def test_labels_file_forms(tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("# my digits\npath,digit\na.png,3\n\nsub/b c.png,7,0.99\n")
    assert read_labels(labels, None) == [(str(tmp_path / "a.png"), 3), (str(tmp_path / "sub/b c.png"), 7)]
    images = tmp_path / "images"
    images.mkdir()
    assert read_labels(labels, images)[0] == (str(images / "a.png"), 3)
    with pytest.raises(MnistkitError, match=r"labels.csv: is not a folder"):
        read_labels(labels, labels)
    labels.write_bytes(b"\xef\xbb\xbfa.png,3\r\n")  # a spreadsheet's CSV: byte-order mark, CRLF
    assert read_labels(labels, None) == [(str(tmp_path / "a.png"), 3)]
    (tmp_path / "sub").mkdir()
    labels.write_text("a.png,3\nsub,7\n")  # not predict's hint for a folder: eval takes none
    with pytest.raises(MnistkitError) as folder:
        read_labels(labels, None)
    assert (
        str(folder.value)
        == f"{labels}:2: {tmp_path / 'sub'} is a folder; a labels file lists one image per line"
    )
    labels.write_text("a.png\t12\n")
    with pytest.raises(MnistkitError, match=r"labels.csv:1: label '12' is not a digit 0-9"):
        read_labels(labels, None)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"a.png\t2\nb.png,0\n", [("a.png", 2), ("b.png", 0)]),  # each line as it comes
        (b"path,digit\na.png\t2\nb.png\t0\n", [("a.png", 2), ("b.png", 0)]),  # a header on a TSV
        (b"path,digit\ra.png,2\rb.png,0\r", [("a.png", 2), ("b.png", 0)]),  # old Mac line ends
        (b'"a.png" ,2\n', [("a.png ", 2)]),  # a space after the quotes, as csv takes it
        (b"path,1.png\t7\t0.8994\n", [("path,1.png", 7)]),  # predict's TSV, a comma in its first name
        (b'"a\nb.png"\t2\t0.9168\nc.png\t3\t0.9\n', [("a\nb.png", 2), ("c.png", 3)]),  # a line break first
        (b'"a\tb.png",7,0.9\n', [("a\tb.png", 7)]),  # predict's csv, a tab in a name
    ],
)
def test_labels_files_in_every_form_predict_or_a_person_writes(
    tmp_path: Path, content: bytes, expected: list[tuple[str, int]]
) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_bytes(content)
    assert read_labels(labels, None) == [(str(tmp_path / name), digit) for name, digit in expected]


def test_a_broken_labels_file_is_one_line_at_once(tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text('a.png,1\n"open,1\n' + "a.png,1\n" * 20000)  # read once, not line by line again
    with pytest.raises(MnistkitError, match=r"^.*labels.csv:2: a quoted field is never closed$"):
        read_labels(labels, None)
    labels.write_bytes("caf\u00e9.png,3\n".encode("latin-1"))  # a spreadsheet's Latin-1 for a UTF-8 name
    with pytest.raises(MnistkitError, match=r"labels.csv:1: a name that is not UTF-8 names no file; save"):
        read_labels(labels, None)
    labels.write_text("shirt.png\n")
    with pytest.raises(MnistkitError, match=r"labels.csv:1: expected 'path<TAB>digit' or 'path,digit'$"):
        read_labels(labels, None)
    clothes = dict(enumerate(["T-shirt/top", "Trouser", "Pullover"]))  # a clothes model's labels: classes
    with pytest.raises(MnistkitError, match=r"labels.csv:1: expected 'path<TAB>class' or 'path,class'$"):
        read_labels(labels, None, clothes)


def test_predicts_json_lines_given_as_labels_are_named_for_what_they_are(
    large_digit_model: Path, tmp_path: Path
) -> None:
    """They read as a label '"digit": 7' that is not a digit before."""
    digit = tmp_path / "seven.png"
    Image.fromarray(255 - draw_large_digit(7)).save(digit)
    rows = run("predict", large_digit_model, digit, "--format", "jsonl")
    assert rows.exit_code == 0, rows.output
    labels = tmp_path / "labels.jsonl"
    labels.write_text(rows.stdout)
    result = run("eval", large_digit_model, "--labels", labels)
    assert result.exit_code == 1 and result.stderr == (
        f"Error: {labels}: holds JSON lines (as predict --format jsonl writes), not labels; a labels "
        "file has one path<TAB>digit or path,digit line per image (predict's tsv or csv, corrected by hand)\n"
    )
    labels.write_text("{braces}.png,7\n")  # a name in braces is still a name
    assert read_labels(labels, None) == [(str(tmp_path / "{braces}.png"), 7)]


def test_eval_needs_exactly_one_source(large_digit_model: Path, synthetic_npz: Path, tmp_path: Path) -> None:
    assert run("eval", large_digit_model).exit_code == 2
    both = run("eval", large_digit_model, synthetic_npz, "--labels", tmp_path / "l.tsv")
    assert both.exit_code == 2 and "not both" in both.stderr


def test_info_describes_the_checkpoint(large_digit_model: Path) -> None:
    result = run("info", large_digit_model, "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["architecture"]["model"] == "mlp" and info["classes"] == list(range(10))
    assert info["parameters"] == 784 * 64 + 64 + 64 * 10 + 10
    assert info["config"]["hidden"] == [64] and info["metrics"]["epochs"] == 20
    assert info["normalization"] == load_checkpoint(large_digit_model).normalization
    text = run("info", large_digit_model).stdout
    assert "parameters" in text and "dense_0.kernel" in text and "784x64" in text


def test_info_text_is_rounded_and_leaves_out_what_is_empty(large_digit_model: Path) -> None:
    metrics = load_checkpoint(large_digit_model).metadata["metrics"]
    text = run("info", large_digit_model).stdout
    lines = {
        line.split()[0]: line.split(maxsplit=1)[1] for line in text.splitlines() if len(line.split()) > 1
    }
    assert lines["test_accuracy"] == f"{100 * metrics['test_accuracy']:.2f}%"
    assert lines["test_loss"] == str(float(format(metrics["test_loss"], ".4g")))
    assert "val_accuracy" not in lines and "val_loss" not in lines  # not measured: null
    assert "null" not in text and "extra" not in text
    # An MLP trained with Adam: no conv settings, which shaped nothing; the JSON keeps them all.
    assert lines["hidden"] == "[64]" and "adam_betas" in lines
    assert not {"channels", "kernel_sizes", "strides", "batch_norm"} & set(lines)
    assert "channels" in json.loads(run("info", large_digit_model, "--json").stdout)["config"]


def test_info_leaves_out_the_settings_that_shaped_neither_model_nor_optimizer() -> None:
    import dataclasses

    from mnistkit.config import TrainConfig, settings_that_apply

    logreg = dataclasses.asdict(TrainConfig(model="logreg", hidden=(), optimizer="sgd"))
    left_out = {"channels", "kernel_sizes", "strides", "pools", "batch_norm"}
    left_out |= {"hidden", "activation", "linear_last_hidden", "adam_betas"}
    assert settings_that_apply(logreg) == {k: v for k, v in logreg.items() if k not in left_out}
    cnn = dataclasses.asdict(TrainConfig(model="cnn", optimizer="adamw"))
    assert settings_that_apply(cnn) == {k: v for k, v in cnn.items() if k != "linear_last_hidden"}
    assert settings_that_apply({"channels": [4, 8]}, "cnn") == {"channels": [4, 8]}  # naming no model


def test_counts_are_singular_when_there_is_one(tmp_path: Path, synthetic_npz: Path) -> None:
    picture = tmp_path / "one.png"
    assert (
        run("render-samples", synthetic_npz, "-o", picture, "--count", "1").stderr
        == f"{picture}: 1 test digit\n"
    )
    history = tmp_path / "h.jsonl"
    history.write_text('{"epoch": 1, "train_loss": 0.5, "train_accuracy": 0.8}\n')
    assert run("render-curves", history, "-o", picture).stderr == f"{picture}: curves of 1 epoch\n"


def test_data_of_other_classes_than_the_models_is_refused(
    large_digit_model: Path, synthetic_data, tmp_path: Path
) -> None:
    """A Fashion-MNIST `.npz` read by a digit model gave 10% and exit 0, in eval and in the
    pictures; QMNIST's digits, the same classes, are read as MNIST's."""
    from mnistkit.datasets import DATASETS

    for name in ("fashion-mnist", "qmnist"):
        np.savez(
            tmp_path / f"{name}.npz",
            **synthetic_data,
            dataset=np.array(name),
            class_names=np.array(DATASETS[name].class_names),
        )
    fashion, qmnist = tmp_path / "fashion-mnist.npz", tmp_path / "qmnist.npz"
    holds = "holds fashion-mnist (T-shirt/top, Trouser, Pullover, ...)"
    refused = f"{holds}, but the model was trained on mnist (0, 1, 2, ...)"
    for args in (
        ("eval", large_digit_model, fashion),
        ("render-samples", fashion, "--model", large_digit_model, "-o", tmp_path / "s.png"),
        ("render-confusion", "--model", large_digit_model, "--data", fashion, "-o", tmp_path / "c.png"),
    ):
        result = run(*args)
        assert result.exit_code == 1 and result.stderr == f"Error: {fashion}: {refused}\n", args
    assert not list(tmp_path.glob("*.png"))
    with pytest.raises(MnistkitError, match=re.escape(f"{fashion}: {refused}")):
        mnistkit.evaluate(large_digit_model, fashion)
    assert run("eval", large_digit_model, qmnist).exit_code == 0
    assert mnistkit.evaluate(large_digit_model, qmnist).count == len(synthetic_data["test_labels"])


def test_arrays_that_name_no_dataset_are_taken_as_the_models(
    synthetic_data, synthetic_npz: Path, tmp_path, monkeypatch
) -> None:
    """Keras' `fashion_mnist.load_data()`, or a part of it saved with numpy, names no classes:
    such arrays and files are the model's dataset's, in Python and in the commands, unless
    they hold a published dataset's labels (MNIST's own digits are refused by a clothes model)."""
    import hashlib
    import struct

    from mnistkit import idx
    from mnistkit.datasets import DATASETS

    fashion_npz = tmp_path / "fashion.npz"
    names = np.array(DATASETS["fashion-mnist"].class_names)
    np.savez(fashion_npz, **synthetic_data, dataset=np.array("fashion-mnist"), class_names=names)
    clothes_path = tmp_path / "clothes.safetensors"
    clothes = mnistkit.train(fashion_npz, "logreg", epochs=1, verbose=False, output=clothes_path)
    keras_pairs = tuple(
        (synthetic_data[f"{split}_images"], synthetic_data[f"{split}_labels"]) for split in ("train", "test")
    )
    count = len(synthetic_data["test_labels"])
    assert mnistkit.evaluate(clothes, keras_pairs).count == count
    assert mnistkit.draw_samples(keras_pairs, clothes, count=4).size[0] > 0
    assert mnistkit.evaluate(clothes, synthetic_npz).count == count
    result = CliRunner().invoke(cli, ["eval", str(clothes_path), str(synthetic_npz), "--json", "-"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["count"] == count
    picture = tmp_path / "confusion.png"
    confusion = [
        "render-confusion",
        "--model",
        str(clothes_path),
        "--data",
        str(synthetic_npz),
        "-o",
        str(picture),
    ]
    assert CliRunner().invoke(cli, confusion).exit_code == 0 and picture.stat().st_size > 0

    labels = synthetic_data["test_labels"]  # now standing in for MNIST's published test labels
    content = hashlib.sha256(struct.pack(">II", 2049, labels.size) + labels.tobytes()).hexdigest()
    published = {content: (("mnist", "t10k-labels-idx1-ubyte.gz"),)}
    monkeypatch.setattr(idx, "known_content", lambda digest: published.get(digest, ()))
    with pytest.raises(MnistkitError, match=f"^{re.escape(str(synthetic_npz))}: holds mnist"):
        mnistkit.evaluate(clothes, synthetic_npz)
    result = CliRunner().invoke(cli, ["eval", str(clothes_path), str(synthetic_npz)])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {synthetic_npz}: holds mnist (0, 1, 2, ...), but the model")


def test_arrays_without_names_are_taken_as_the_own_dataset_of_a_model(
    synthetic_data, synthetic_npz: Path, tmp_path
) -> None:
    """A model trained on an .npz naming a dataset of its own (three shapes): the same arrays
    without names are taken as that dataset, as for a dataset mnistkit knows (they were refused
    as MNIST's digits); labels past its classes are not, nor arrays for a model of some of them."""
    shapes = tmp_path / "shapes.npz"
    arrays = {key: value for key, value in synthetic_data.items()}
    for split in ("train", "test"):
        arrays[f"{split}_labels"] = (arrays[f"{split}_labels"] % 3).astype(np.uint8)
    np.savez(shapes, **arrays, dataset=np.array("shapes"), class_names=np.array(["ring", "bar", "cross"]))
    bare = tmp_path / "bare.npz"
    np.savez(bare, **arrays)
    model = tmp_path / "shapes.safetensors"
    mnistkit.train(shapes, "logreg", epochs=1, verbose=False, output=model)
    named = CliRunner().invoke(cli, ["eval", str(model), str(shapes)])
    assert named.exit_code == 0, named.output
    result = CliRunner().invoke(cli, ["eval", str(model), str(bare)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[2:] == named.stdout.splitlines()[2:]  # after the two files' names
    pair = (arrays["test_images"], arrays["test_labels"])
    assert mnistkit.evaluate(model, pair).accuracy == mnistkit.evaluate(model, shapes).accuracy
    result = CliRunner().invoke(cli, ["eval", str(model), str(synthetic_npz)])
    assert result.exit_code == 1
    assert result.output == f"Error: {synthetic_npz}: test_labels holds 9, outside 0-2\n"
    for chosen in ("ring,cross", "ring,bar"):  # the first two: all a model knows of its dataset
        some = tmp_path / "some.safetensors"
        mnistkit.train(shapes, "logreg", epochs=1, classes=chosen, verbose=False, output=some)
        result = CliRunner().invoke(cli, ["eval", str(some), str(bare)])
        assert result.exit_code == 1
        assert result.output == (
            f"Error: {bare}: holds mnist (0, 1, 2, ...), but the model was trained on shapes "
            f"({chosen.replace(',', ', ')}, ...); arrays of it record its name: dataset='shapes', and "
            "its class_names\n"
        )
