"""The Python API: the README's notebook example runs as written, and `import mnistkit` is light."""

from __future__ import annotations

import dataclasses
import inspect
import io
import json
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, draw_large_digit, run_script
from PIL import Image

import mnistkit
from mnistkit import api, terms
from mnistkit.arrays import load_arrays, named_as, save_arrays
from mnistkit.errors import MnistkitError
from mnistkit.interrupts import STOPPING_NOTICE


@pytest.fixture(autouse=True)
def nothing_said_yet(monkeypatch) -> None:
    """Each test begins a session: `train` says some lines once a session."""
    monkeypatch.setattr(api, "_told_unnamed", set())


def readme_python_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", (REPO_ROOT / "README.md").read_text(), re.S)
    assert len(blocks) == 1, "the README has one Python example"
    return blocks[0]


def test_the_readme_notebook_example_runs(tmp_path: Path, synthetic_data, monkeypatch, capsys) -> None:
    """In a folder where `make all` already made data/mnist.npz (here: the synthetic digits)."""
    (tmp_path / "data").mkdir()
    (tmp_path / "models").mkdir()
    np.savez(tmp_path / "data" / "mnist.npz", **synthetic_data)
    Image.fromarray(255 - draw_large_digit(7)).save(tmp_path / "my-digit.png")
    Image.fromarray(255 - draw_large_digit(7)).save(tmp_path / "my-digit.jpg")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(readme_python_example(), "README.md", "exec"), namespace)
    assert isinstance(namespace["model"], mnistkit.Model)
    assert namespace["evaluation"].count == 200
    assert namespace["picture"].size[0] > 300
    assert mnistkit.load("models/notebook.safetensors").architecture["hidden"] == [512, 256]
    out = capsys.readouterr()
    assert "test accuracy" in out.out and "<Prediction my-digit.png: " in out.out
    # The photo opened with PIL reads as the same file given by its path.
    photo_digit = mnistkit.predict_images(namespace["model"], tmp_path / "my-digit.jpg")[0].name
    assert out.out.splitlines()[-1] == photo_digit
    assert "epoch 3/3" in out.err


def test_load_mnist_fetches_and_parses_once(tmp_path: Path, fetch_files, monkeypatch) -> None:
    from conftest import fetch_table, use_fetch_table

    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name, data in fetch_files.items():
        (mirror / name).write_bytes(data)
    use_fetch_table(monkeypatch, fetch_table(fetch_files))
    monkeypatch.setenv("MNISTKIT_MIRROR", str(mirror))
    arrays = mnistkit.load_mnist(tmp_path / "data")
    assert arrays["train_images"].shape == (30, 28, 28)
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["mnist.npz", "raw"]
    monkeypatch.delenv("MNISTKIT_MIRROR")
    for number, mirrors in enumerate(
        (f"{tmp_path / 'nowhere'}, {mirror}", mirror)
    ):  # as the variable has them
        again = mnistkit.load_mnist(tmp_path / f"data{number}", mirrors=mirrors)
        assert again["train_images"].shape == (30, 28, 28)
    for name in fetch_files:
        (mirror / name).unlink()
    assert mnistkit.load_mnist(tmp_path / "data")["test_labels"].shape == (10,)  # cached, no fetch


def test_a_damaged_kept_npz_says_how_to_have_it_made_again(tmp_path: Path, fetch_files, monkeypatch) -> None:
    """load_mnist keeps the arrays it parsed in data/mnist.npz; damaged, every call failed
    with no way out named."""
    from conftest import fetch_table, use_fetch_table

    use_fetch_table(monkeypatch, fetch_table(fetch_files))
    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True)
    for name, data in fetch_files.items():
        (raw / name).write_bytes(data)
    npz = tmp_path / "data" / "mnist.npz"
    mnistkit.load_mnist(tmp_path / "data", mirrors=[])
    npz.write_bytes(npz.read_bytes()[:100])
    with pytest.raises(
        MnistkitError, match=re.escape(f"; delete it, and this call makes it again from {raw} (force=True")
    ):
        mnistkit.load_mnist(tmp_path / "data", mirrors=[])
    npz.unlink()
    assert mnistkit.load_mnist(tmp_path / "data", mirrors=[])["train_images"].shape == (30, 28, 28)
    shutil.rmtree(raw)  # the folder it was parsed from gone too: made from a download
    npz.write_bytes(npz.read_bytes()[:100])
    from_a_download = (
        "; delete it, and this call makes it again from a download (force=True downloads it too)"
    )
    with pytest.raises(MnistkitError, match=re.escape(from_a_download) + "$"):
        mnistkit.load_mnist(tmp_path / "data", mirrors=[])
    mirror = tmp_path / "mirror"  # force=True, as the hint says: downloaded and parsed again
    mirror.mkdir()
    for name, data in fetch_files.items():
        (mirror / name).write_bytes(data)
    assert mnistkit.load_mnist(tmp_path / "data", mirrors=[mirror], force=True)["train_images"].shape == (
        30,
        28,
        28,
    )
    assert mnistkit.load_mnist(tmp_path / "data", mirrors=[])["test_labels"].shape == (10,)


def test_a_model_of_a_module_since_reloaded_is_named_so(large_digit_model: Path) -> None:
    """%autoreload reloads mnistkit.api: a Model made before was refused as "a mnistkit.Model
    ..., not a Model". In a process of its own: the reload would leave this one's classes two."""
    code = (
        "import importlib, mnistkit, mnistkit.api as api\n"
        f"model = mnistkit.load({str(large_digit_model)!r})\n"
        "importlib.reload(api)\n"
        "try:\n"
        "    api.evaluate(model, {})\n"
        "except TypeError as error:\n"
        "    print(error)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout == (
        "evaluate(model, arrays, split='test'): the model is a Model of an earlier import of mnistkit "
        "(its module was reloaded since, as %autoreload does): load or train it again\n"
    ), result.stderr


def test_load_mnist_reads_a_folder_of_the_raw_files_as_it_is(
    synthetic_raw_dir: Path, synthetic_data, monkeypatch
) -> None:
    monkeypatch.setenv("MNISTKIT_MIRROR", str(synthetic_raw_dir / "nowhere"))
    before = sorted(path.name for path in synthetic_raw_dir.iterdir())
    arrays = mnistkit.load_mnist(synthetic_raw_dir)
    for key, array in synthetic_data.items():
        np.testing.assert_array_equal(arrays[key], array)
    assert sorted(path.name for path in synthetic_raw_dir.iterdir()) == before  # no raw/ inside raw/


def test_the_package_names_the_api_and_stays_light() -> None:
    assert sorted(mnistkit._API) == sorted(api.__all__)
    listed = set(mnistkit.__doc__.split("The names,")[1].replace(",", " ").split())
    assert set(mnistkit._API) <= listed  # help(mnistkit) names the API, which loads lazily
    presets = mnistkit.train.__doc__.split("The presets (`mnistkit.PRESETS`):")[1].split(".")[0]
    named = sorted(name.strip() for name in presets.split(","))
    assert named == sorted(mnistkit.PRESETS)  # help(mnistkit.train) names every preset, and no other
    assert callable(mnistkit.train) and callable(mnistkit.evaluate)
    code = "import sys, mnistkit; print(sorted(m for m in ('numpy', 'jax', 'PIL') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "[]"
    star: dict = {}
    exec("from mnistkit import *", star)  # as the fast.ai lessons import their library
    assert {name for name in star if not name.startswith("__")} == set(api.__all__)


def test_a_caller_catches_mnistkits_errors_by_the_packages_own_name(tmp_path: Path) -> None:
    """They were mnistkit.errors.MnistkitError, an internal module's, named nowhere in the README."""
    with pytest.raises(mnistkit.MnistkitError, match=r"missing.safetensors: no such file$"):
        mnistkit.load(tmp_path / "missing.safetensors")
    with pytest.raises(mnistkit.MnistkitError, match=r"^epochs must be at least 1, got 0$"):
        mnistkit.TrainConfig(epochs=0)


def test_model_predicts_single_images_and_batches(large_digit_model: Path, synthetic_data) -> None:
    model = mnistkit.load(large_digit_model)
    images = synthetic_data["test_images"][:5]
    assert model.predict(images).shape == (5,)
    assert model.predict(images[0]).shape == (1,)
    np.testing.assert_allclose(model.predict_proba(images).sum(axis=1), 1.0, rtol=1e-5)
    tutorial_vectors = images.reshape(-1, 784) / 255.0  # the tutorials' flat floats in [0, 1]
    with pytest.raises(ValueError, match=re.escape("(give images.reshape(-1, 28, 28) and (images * 255)")):
        model.predict(tutorial_vectors)
    assert list(model.predict((tutorial_vectors.reshape(-1, 28, 28) * 255).round().astype(np.uint8))) == list(
        model.predict(images)
    )
    assert repr(model).startswith(
        "<mnistkit.Model mlp, classes [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], test accuracy "
    )
    assert model.predict([]).shape == (0,)  # no images: no predictions
    with pytest.raises(ValueError, match=re.escape("got images of different shapes; for image files and")):
        model.predict([images[0], images[0][:20]])
    evaluation = mnistkit.evaluate(model, synthetic_data)
    assert repr(evaluation) == (
        f"<Evaluation accuracy {evaluation.accuracy:.2%}, mean loss {evaluation.mean_loss:.4f}, 200 images>"
    )


def test_arrays_a_model_would_misread_are_refused_as_an_npz_would_be(
    large_digit_model: Path, synthetic_data
) -> None:
    """Float images in [0, 1] (a notebook habit) would train a model that guesses; they, and
    arrays of the wrong shape or missing a split, get the .npz's one-line reasons instead."""
    images, labels = synthetic_data["train_images"], synthetic_data["train_labels"]
    no_test = {key: value for key, value in synthetic_data.items() if not key.startswith("test_")}
    for bad_images, reason in (
        (images.astype(np.float32) / 255, "has dtype float32, expected uint8 (pixels 0-255"),
        (images.reshape(-1, 784), "has shape (600, 784), expected (N, 28, 28)"),
    ):
        with pytest.raises(MnistkitError, match=re.escape(f"arrays: train_images {reason}")):
            mnistkit.train({**synthetic_data, "train_images": bad_images}, "logreg", epochs=1, verbose=False)
        with pytest.raises(MnistkitError, match=re.escape(f"arrays: test_images {reason}")):
            mnistkit.evaluate(large_digit_model, {"test_images": bad_images, "test_labels": labels})
    with pytest.raises(MnistkitError, match="arrays: missing arrays test_images, test_labels"):
        mnistkit.train(no_test, "logreg", epochs=1, verbose=False)
    # `(x / 255).astype(np.uint8)` and `(x > 127).astype(np.uint8)`: uint8, but 0 and 1 only
    ones = (images > 127).astype(np.uint8)
    only_0_and_1 = re.escape(
        "arrays: train_images holds only pixels 0 and 1, expected 0-255; give images * 255"
    )
    with pytest.raises(MnistkitError, match=only_0_and_1):
        mnistkit.train({**synthetic_data, "train_images": ones}, "logreg", epochs=1, verbose=False)
    with pytest.raises(MnistkitError, match=only_0_and_1.replace("train_images", "test_images")):
        mnistkit.evaluate(large_digit_model, {"test_images": ones, "test_labels": labels})
    model = mnistkit.load(large_digit_model)
    with pytest.raises(
        ValueError, match=re.escape("expected pixels 0-255, got only pixels 0 and 1 (give images * 255)")
    ):
        model.predict(ones[:3])
    assert model.predict(ones[:3] * 255).shape == (3,)


def test_paths_names_and_integer_labels_are_taken_as_a_notebook_gives_them(
    tmp_path: Path, large_digit_model: Path, synthetic_data, synthetic_npz: Path
) -> None:
    int64_labels = {
        key: value.astype(np.int64) if key.endswith("labels") else value
        for key, value in synthetic_data.items()
    }
    model = mnistkit.train(int64_labels, "logreg", epochs=1, verbose=False)
    assert model.architecture["model"] == "logreg"
    assert (
        mnistkit.evaluate(model, synthetic_npz).accuracy == mnistkit.evaluate(model, synthetic_data).accuracy
    )
    keras_pairs = (  # keras.datasets.mnist.load_data(), labels as a list for good measure
        (synthetic_data["train_images"], list(synthetic_data["train_labels"])),
        (synthetic_data["test_images"], synthetic_data["test_labels"].astype(np.int64)),
    )
    assert mnistkit.train(keras_pairs, "logreg", epochs=1, verbose=False).metrics == model.metrics
    with pytest.raises(
        MnistkitError, match=r"^arrays: test_labels holds -1, not a class number \(0 to 255\)$"
    ):
        mnistkit.evaluate(model, {**synthetic_data, "test_labels": np.full(200, -1)})
    images, labels = synthetic_data["test_images"], synthetic_data["test_labels"]
    with pytest.raises(
        TypeError, match=r"^evaluate\(model, arrays, split='test'\): the arrays are a dict .* not a list"
    ):
        mnistkit.evaluate(model, [images, labels, labels])
    digit = tmp_path / "digit.png"
    Image.fromarray(synthetic_data["test_images"][0]).save(digit)
    one = mnistkit.predict_images(large_digit_model, digit)
    assert [prediction.path for prediction in one] == [str(digit)]
    assert one == mnistkit.predict_images(mnistkit.load(large_digit_model), [str(digit)])


def test_arrays_that_name_no_dataset_are_named_by_dataset_or_said_to_be_mnist(
    synthetic_data, synthetic_npz: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    """Keras' `fashion_mnist.load_data()` holds bare arrays: trained as MNIST, such a model
    recorded digit names and read people's pictures as digits. The line says so once a
    session: a notebook trains on its slice of MNIST again and again."""
    keras_pairs = (
        (synthetic_data["train_images"], synthetic_data["train_labels"]),
        (synthetic_data["test_images"], synthetic_data["test_labels"]),
    )
    as_mnist = mnistkit.train(keras_pairs, "logreg", epochs=1)
    assert (
        'arrays: names no dataset: taken as MNIST\'s digits (dataset="NAME" names another)'
        in capsys.readouterr().err
    )
    mnistkit.train(keras_pairs, "logreg", epochs=1)
    assert "names no dataset" not in capsys.readouterr().err  # said once for these arrays
    mnistkit.train(synthetic_data, "logreg", epochs=1)  # the same images and labels, as a dict
    assert "names no dataset" not in capsys.readouterr().err
    fewer = {key: value[:150] for key, value in synthetic_data.items()}  # others: said again
    mnistkit.train(fewer, "logreg", epochs=1, verbose=False)
    assert capsys.readouterr().err == ""
    with pytest.raises(MnistkitError, match="val_size"):  # refused before the line: not used up
        mnistkit.train(fewer, "logreg", epochs=1, val_size=10_000)
    assert capsys.readouterr().err == ""
    mnistkit.train(fewer, "logreg", epochs=1)
    assert "arrays: names no dataset" in capsys.readouterr().err  # not used up when not shown
    assert (as_mnist.checkpoint.dataset, as_mnist.checkpoint.preprocessing) == ("mnist", "mnist")
    fashion = mnistkit.train(keras_pairs, "logreg", epochs=1, dataset="fashion-mnist")
    assert "names no dataset" not in capsys.readouterr().err
    assert (fashion.checkpoint.dataset, fashion.checkpoint.preprocessing) == (
        "fashion-mnist",
        "fashion-mnist",
    )
    assert fashion.checkpoint.class_names[:2] == ["T-shirt/top", "Trouser"]
    assert mnistkit.evaluate(fashion, keras_pairs).count == 200  # bare arrays: the model's dataset
    # An .npz that names no dataset is said to be MNIST too, or named; one that names another
    # is refused.
    part = tmp_path / "part.npz"
    save_arrays(part, {key: value[:120] for key, value in synthetic_data.items()})
    mnistkit.train(part, "logreg", epochs=1)
    assert f"{part}: names no dataset: taken as MNIST's digits" in capsys.readouterr().err
    kmnist = mnistkit.train(synthetic_npz, "logreg", epochs=1, dataset="kmnist")
    assert kmnist.checkpoint.dataset == "kmnist" and kmnist.checkpoint.class_names[0] == "o"
    assert mnistkit.evaluate(kmnist, synthetic_npz).count == 200  # the model's dataset
    named = tmp_path / "fashion.npz"
    save_arrays(named, named_as(dict(synthetic_data), "fashion-mnist"))
    refusal = f"^{re.escape(str(named))}: holds fashion-mnist, not dataset='kmnist'$"
    with pytest.raises(MnistkitError, match=refusal):
        mnistkit.train(named, "logreg", epochs=1, dataset="kmnist")
    with pytest.raises(MnistkitError, match=r"^dataset: 'digits' is not one of mnist, fashion-mnist"):
        mnistkit.train(synthetic_npz, "logreg", epochs=1, dataset="digits")


def test_arrays_holding_a_published_datasets_labels_are_named_after_it(
    synthetic_data, tmp_path: Path, monkeypatch, capsys
) -> None:
    """Keras' `fashion_mnist.load_data()` is Fashion-MNIST's published arrays: known by its
    labels, it trains a clothes model without `dataset=`, and MNIST's own arrays are refused
    as clothes (here the synthetic labels stand in for the published ones)."""
    import hashlib
    import struct

    from mnistkit import idx
    from mnistkit.arrays import load_arrays, recorded_naming

    labels = synthetic_data["test_labels"]
    content = hashlib.sha256(struct.pack(">II", 2049, labels.size) + labels.tobytes()).hexdigest()
    published = {content: (("fashion-mnist", "t10k-labels-idx1-ubyte.gz"),)}
    monkeypatch.setattr(idx, "known_content", lambda digest: published.get(digest, ()))
    keras_pairs = (
        (synthetic_data["train_images"], synthetic_data["train_labels"]),
        (synthetic_data["test_images"], labels.astype(np.int64)),
    )
    clothes = mnistkit.train(keras_pairs, "logreg", epochs=1)
    assert "names no dataset" not in capsys.readouterr().err
    assert clothes.checkpoint.dataset == clothes.checkpoint.preprocessing == "fashion-mnist"
    with pytest.raises(MnistkitError, match=r"^arrays: holds fashion-mnist, not dataset='mnist'$"):
        mnistkit.train(keras_pairs, "logreg", epochs=1, dataset="mnist")
    digits = mnistkit.train({**synthetic_data, "test_labels": labels[::-1].copy()}, "logreg", epochs=1)
    with pytest.raises(
        MnistkitError, match=r"^arrays: holds fashion-mnist \(T-shirt/top, .* trained on mnist"
    ):
        mnistkit.evaluate(digits, keras_pairs)  # bare arrays are the model's dataset, unless known
    np.savez(tmp_path / "saved.npz", **synthetic_data)  # names nothing, as an np.savez of them
    assert str(load_arrays(tmp_path / "saved.npz")["dataset"]) == "fashion-mnist"
    assert recorded_naming(tmp_path / "saved.npz")[0] == "fashion-mnist"


def test_a_script_that_trained_reads_many_files_without_workers_that_would_rerun_it(
    tmp_path: Path, large_digit_model: Path, synthetic_data, monkeypatch
) -> None:
    """After `train`, jax's threads forbid fork, and forkserver or spawn workers import an
    unguarded script again (it would train again in each): predict_images reads them itself."""
    import mnistkit.image_files as image_files
    import mnistkit.worker_pool as worker_pool

    def no_pool(workers: int, *settings: object):
        raise AssertionError(f"a pool of {workers} workers was started")

    monkeypatch.setattr(worker_pool, "start_method", lambda: "forkserver")
    monkeypatch.setattr(image_files, "_start_pool", no_pool)
    paths = []
    for index in range(image_files.CHUNK_SIZE + 20):
        paths.append(tmp_path / f"{index}.png")
        Image.fromarray(synthetic_data["test_images"][index % 8]).save(paths[-1])
    predictions = mnistkit.predict_images(large_digit_model, paths)
    assert [prediction.path for prediction in predictions] == [str(path) for path in paths]
    same, first = predictions[8].top, predictions[0].top  # in other batches: the last bits may differ
    assert [label for label, *_ in same] == [label for label, *_ in first]
    assert [chance for *_, chance in same] == pytest.approx([chance for *_, chance in first], rel=1e-5)
    empty_labels = {**synthetic_data, "test_images": synthetic_data["test_images"][:0]}
    empty_labels["test_labels"] = synthetic_data["test_labels"][:0].astype(np.int64)
    with pytest.raises(MnistkitError, match="no test images"):
        mnistkit.train(empty_labels, "logreg", epochs=1, verbose=False)


def test_a_batch_with_unreadable_images_is_read_on_with_errors_keep(
    tmp_path: Path, large_digit_model: Path, synthetic_data
) -> None:
    """A service's batch of uploads with one broken: the first bad image raised and the rest
    went unread, so it read them one call at a time; `errors="keep"` answers each in its place."""
    digits = []
    for index in range(3):
        digits.append(tmp_path / f"{index}.png")
        Image.fromarray(synthetic_data["test_images"][index]).save(digits[-1])
    broken = tmp_path / "broken.png"
    broken.write_text("not a picture")
    batch = [digits[0], broken, digits[1], b"\x89PNG truncated", digits[2]]
    with pytest.raises(MnistkitError, match=re.escape(f"{broken}: not an image")):
        mnistkit.predict_images(large_digit_model, batch)
    answers = mnistkit.predict_images(large_digit_model, batch, errors="keep")
    alone = [mnistkit.predict_images(large_digit_model, digit)[0] for digit in digits]
    names = [str(digits[0]), str(broken), str(digits[1]), "<image 3>", str(digits[2])]
    assert [answer.path for answer in answers] == names
    read = [answer for answer in answers if not answer.error]
    assert [(answer.path, answer.label) for answer in read] == [(one.path, one.label) for one in alone]
    confidences = [one.confidence for one in alone]
    assert [answer.confidence for answer in read] == pytest.approx(confidences, rel=1e-5)
    unreadable = [answer for answer in answers if answer.error]
    assert [answer.error.split(": ")[0] for answer in unreadable] == [str(broken), "<image 3>"]
    assert all(not hasattr(answer, "label") for answer in unreadable)
    with pytest.raises(MnistkitError, match=re.escape('errors=\'skip\' is not one of "raise", "keep"')):
        mnistkit.predict_images(large_digit_model, batch, errors="skip")


def test_images_in_memory_are_read_as_their_files_are(tmp_path: Path, large_digit_model: Path) -> None:
    """A notebook holds its digits as PIL images, arrays or an upload's bytes, not files."""
    ink = draw_large_digit(4, canvas_px=(200, 150), stroke_px=5)
    paper = Image.fromarray(255 - ink)  # dark ink on white
    paper.save(tmp_path / "four.png")
    before = (paper.size, paper.mode, paper.tobytes())
    from_file = mnistkit.predict_images(large_digit_model, tmp_path / "four.png")[0]
    assert from_file.name == "4"
    colour = np.stack([255 - ink, 255 - ink, np.full_like(ink, 255)], axis=-1)  # blue ink
    transparent = np.stack([np.zeros_like(ink)] * 3 + [ink], axis=-1)  # strokes on nothing
    in_memory = [
        paper,
        np.asarray(paper),
        np.asarray(paper)[..., None],
        np.asarray(paper) / 255.0,
        (tmp_path / "four.png").read_bytes(),
        colour,
        transparent,
        tmp_path / "four.png",
    ]
    predictions = mnistkit.predict_images(large_digit_model, in_memory)
    assert [p.path for p in predictions] == [f"<image {n}>" for n in range(7)] + [str(tmp_path / "four.png")]
    assert [p.name for p in predictions] == ["4"] * 8
    for same_pixels in predictions[:5]:
        np.testing.assert_allclose(
            [probability for *_, probability in sorted(same_pixels.top)],
            [probability for *_, probability in sorted(from_file.top)],
            atol=1e-6,
        )
    assert (paper.size, paper.mode, paper.tobytes()) == before  # the caller's image is left as it was

    # A file open in binary is one image, read whole (iterated, a BytesIO is lines of bytes).
    with open(tmp_path / "four.png", "rb") as file:
        assert mnistkit.predict_images(large_digit_model, file)[0].top == from_file.top
    in_bytes = mnistkit.predict_images(large_digit_model, [io.BytesIO((tmp_path / "four.png").read_bytes())])
    assert in_bytes[0].top == from_file.top
    with Image.open(tmp_path / "four.png") as closed_too_soon:
        pass  # the notebook's slip: the pixels were never read
    with pytest.raises(MnistkitError, match=re.escape("<image 0>: the image's file was closed before")):
        mnistkit.predict_images(large_digit_model, closed_too_soon)
    as_text = re.escape("<image 0>: a file open as text; open it in binary")
    for encoding in ("latin-1", "utf-8"):  # as UTF-8, reading it would fail first
        with (
            open(tmp_path / "four.png", encoding=encoding) as text,
            pytest.raises(MnistkitError, match=as_text),
        ):
            mnistkit.predict_images(large_digit_model, text)

    stack = mnistkit.predict_images(large_digit_model, np.stack([np.asarray(paper)] * 3))
    assert [p.path for p in stack] == ["<image 0>", "<image 1>", "<image 2>"]
    # torch's layout, (N, 1, H, W), and a jax array: the same pictures
    channel_first = mnistkit.predict_images(large_digit_model, np.stack([np.asarray(paper)] * 2)[:, None])
    import jax.numpy as jnp

    from_jax = mnistkit.predict_images(large_digit_model, jnp.asarray(np.stack([np.asarray(paper)] * 2)))
    for prediction in (*channel_first, *from_jax):
        assert prediction.top == stack[0].top
    assert repr(stack[0]) == f"<Prediction <image 0>: 4 ({stack[0].confidence:.2%})>"
    with pytest.raises(TypeError, match=re.escape("predict_images reads images, not a dict of arrays")):
        mnistkit.predict_images(large_digit_model, {"test_images": np.asarray(paper)[None]})

    for bad, reason in (
        (
            np.zeros((30, 30, 2), np.uint8),
            "array of shape (30, 30, 2), expected (H, W) gray or (H, W, 3 or 4)",
        ),
        (np.full((30, 30), 2.0), "float pixels must lie in [0, 1]"),
        (np.full((30, 30), 300, np.int32), "int32 pixels, expected uint8 (0 to 255) or floats in [0, 1]"),
        (
            np.full((30, 30), 300, np.uint16),
            "uint16 pixels, expected uint8 (0 to 255) or floats in [0, 1]; "
            "give (image // 257).astype(np.uint8)",
        ),
        (np.zeros((30, 30), np.uint8), "blank image"),
        (np.zeros((1, 100), np.uint8), "image is 100x1 pixels, too elongated for a digit or an object"),
        (
            np.zeros((100, 784)),
            "array of shape (100, 784): flat digits, as the tutorials keep them? "
            "Give images.reshape(-1, 28, 28)",
        ),
        (np.zeros(784, np.uint8), "array of shape (784,): flat digits"),
        (b"not an image", "not an image"),
    ):
        with pytest.raises(MnistkitError, match=re.escape(f"<image 1>: {reason}")):
            mnistkit.predict_images(large_digit_model, [paper, bad])
    for not_an_image in (7, [{"path": "four.png"}], None):
        with pytest.raises(
            TypeError,
            match="predict_images reads image files' paths or bytes, files open in binary, PIL images",
        ):
            mnistkit.predict_images(large_digit_model, not_an_image)


def test_arrays_any_call_refuses_raise_a_value_error_that_is_a_mnistkit_error(
    synthetic_data, large_digit_model: Path
) -> None:
    """As the README says, arrays of the wrong shape or type raise ValueError: train, evaluate
    and predict_images raised MnistkitError alone, and Model.predict ValueError alone, so that
    neither `except` caught all four."""
    model = mnistkit.load(large_digit_model)
    floats = synthetic_data["test_images"] / 255.0
    flat = synthetic_data["test_images"][:3].reshape(-1, 784)
    calls = {
        "train": lambda: mnistkit.train(dict(synthetic_data, train_images=floats), "logreg", epochs=1),
        "evaluate": lambda: mnistkit.evaluate(model, dict(synthetic_data, test_images=floats)),
        "predict_images": lambda: mnistkit.predict_images(model, flat),
        "Model.predict": lambda: model.predict(flat),
    }
    for name, call in calls.items():
        with pytest.raises(mnistkit.BadArrays) as refused:
            call()
        assert isinstance(refused.value, MnistkitError) and isinstance(refused.value, ValueError), name
        assert "reshape(-1, 28, 28)" in str(refused.value) or "* 255).round()" in str(refused.value), name
    # Wrong values, not only shapes and types: these raised MnistkitError alone.
    labels = synthetic_data["train_labels"].astype(np.int64)
    refused_values = [
        (dict(synthetic_data, train_labels=labels - 1), "holds -1, not a class number"),
        (dict(synthetic_data, train_labels=labels + 290), "not a class number"),
        (dict(synthetic_data, train_images=255 - synthetic_data["train_images"]), "dark on light paper"),
        (dict(synthetic_data, class_names=np.array(["a", "a"])), "class_names must be"),
    ]
    for arrays, message in refused_values:
        with pytest.raises(mnistkit.BadArrays, match=message):
            mnistkit.train(arrays, "logreg", epochs=1)


def test_print_of_an_evaluation_is_evals_report(large_digit_model: Path, synthetic_npz: Path) -> None:
    """A notebook had the repr's one line, and no way to the command's table."""
    from click.testing import CliRunner

    from mnistkit.cli import cli

    evaluation = mnistkit.evaluate(large_digit_model, synthetic_npz)
    command = CliRunner().invoke(cli, ["eval", str(large_digit_model), str(synthetic_npz)])
    named, report = command.stdout.splitlines(keepends=True)[:2], command.stdout.splitlines(keepends=True)[2:]
    assert command.exit_code == 0 and named[0].startswith("checkpoint  ") and named[1].startswith("data  ")
    assert str(evaluation) == "".join(report)
    assert "confusion matrix" in str(evaluation)


def test_a_config_and_options_together_get_the_call_that_mends_them(synthetic_data) -> None:
    """TrainConfig is frozen: `config.epochs = 2` fails, and the refusal said no more."""
    config = mnistkit.TrainConfig(hidden=(16,), epochs=1)
    with pytest.raises(ValueError, match=re.escape("dataclasses.replace(config, epochs=2)")):
        mnistkit.train(synthetic_data, config, epochs=2)
    changed = mnistkit.train(synthetic_data, dataclasses.replace(config, epochs=2), verbose=False)
    assert [record["epoch"] for record in changed.history] == [1, 2]


def test_one_valued_settings_are_read_as_their_options_or_refused_in_one_line() -> None:
    """epochs="3" or np.int64(3) is 3, as `--epochs 3`; epochs=1.5 or val_size=0.1 (a fraction,
    as other libraries take) once reached jax or numpy as a traceback."""
    config = api.config_from_options(
        "seed",
        {
            "epochs": "3",
            "batch_size": np.int64(64),
            "lr": 1,
            "seed": "2",
            "shift_average": np.True_,
            "ensemble": "2",
        },
    )
    assert (config.epochs, config.batch_size, config.lr, config.seeds, config.shift_average) == (
        3,
        64,
        1.0,
        (2, 3),
        True,
    )
    assert type(config.lr) is float and type(config.batch_size) is int
    for setting, value, reason in (
        ("epochs", 1.5, "epochs: expected a whole number, got 1.5"),
        ("epochs", True, "epochs: expected a whole number, got True"),
        ("seed", "1.5", "seed: expected a whole number, got '1.5'"),
        ("val_size", 0.1, "val_size: expected a whole number of images, not a fraction, got 0.1"),
        ("ensemble", 2.0, "ensemble: expected a whole number, got 2.0"),
        ("label_smoothing", "x", "label_smoothing: expected a number, got 'x'"),
        ("shift_average", "no", "shift_average: expected True or False, got 'no'"),
        ("augment", None, "augment: expected text, got None"),
    ):
        with pytest.raises(MnistkitError, match=f"^{re.escape(reason)}$"):
            api.config_from_options("seed", {setting: value})
    with pytest.raises(MnistkitError, match=r"^epochs: expected a whole number, got 2\.0$"):
        mnistkit.TrainConfig(epochs=2.0)


def test_train_names_its_keywords_where_the_command_names_its_options(
    synthetic_data, capsys, tmp_path: Path
) -> None:
    """The checks are the command's too (`terms`): here they speak of `model=` and `batch_size=`."""
    for options, reason in (
        ({"hidden": (128,)}, 'model="logreg" has no hidden layers; drop hidden, or use model="mlp"'),
        ({"epochs": 0}, "epochs must be at least 1, got 0"),
        ({"val_size": 600}, "val_size=600 leaves no training images (600 available)"),
    ):
        with pytest.raises(MnistkitError, match=f"^{re.escape(reason)}$"):
            mnistkit.train(synthetic_data, "logreg", **options)
    mnistkit.train(synthetic_data, "logreg", epochs=1, batch_size=1000)
    assert "batch_size=1000 is larger than the 600 training images; using 600" in capsys.readouterr().err


def test_the_pictures_and_predict_images_name_their_keywords_too(
    synthetic_data, large_digit_model: Path
) -> None:
    for call, reason in (
        (
            lambda: mnistkit.draw_samples(synthetic_data, select="mistakes"),
            'select="mistakes" needs a model: give a checkpoint as model',
        ),
        (lambda: mnistkit.draw_samples(synthetic_data, count=0), "count must be at least 1, got 0"),
        (
            lambda: mnistkit.draw_weights(large_digit_model),  # the file named, not "the model"
            f"{large_digit_model}: weight templates need a logreg model, this one is mlp "
            '(train one with model="logreg")',
        ),
        (
            lambda: mnistkit.draw_embedding(large_digit_model, synthetic_data),
            f"{large_digit_model}: no 2-unit hidden layer to plot",
        ),
        (
            lambda: mnistkit.predict_images(
                large_digit_model, np.zeros((40, 40), np.uint8), preprocess=False
            ),
            "<image 0>: image is 40x40 pixels; preprocess=False needs 28x28",
        ),
    ):
        with pytest.raises(MnistkitError, match=re.escape(reason)) as raised:
            call()
        assert "--" not in str(raised.value)


def test_list_settings_are_taken_as_python_gives_them(synthetic_data) -> None:
    """classes=(3, 8), hidden="64,32", channels=[8, 8]: as the command's options would read."""
    three_eight = mnistkit.train(synthetic_data, "logreg", epochs=1, classes=(3, 8), verbose=False)
    assert three_eight.classes == [3, 8]
    as_digits = mnistkit.train(synthetic_data, "logreg", epochs=1, digits=(3, 8), verbose=False)
    assert as_digits.classes == [3, 8]  # digits=, as the commands' --digits
    with pytest.raises(ValueError, match="not both"):
        mnistkit.train(synthetic_data, "logreg", classes=(3, 8), digits=(3, 8))
    config = api.config_from_options("fast", {"channels": [8, 8], "hidden": "64,32", "classes": "3,8"})
    assert (config.channels, config.hidden, config.classes) == ((8, 8), (64, 32), ("3", "8"))
    assert mnistkit.TrainConfig(classes=(3, 8), hidden=[16]).classes == ("3", "8")
    empty = mnistkit.TrainConfig(model="logreg", hidden="", classes="", seeds=" ")  # text of no items
    assert (empty.hidden, empty.classes, empty.seeds) == ((), (), ())
    with pytest.raises(MnistkitError, match=r"^hidden: expected comma-separated integers, got 'a,b'$"):
        api.config_from_options("mlp", {"hidden": "a,b"})  # as `--hidden a,b` is refused
    pictures = [
        np.asarray(mnistkit.draw_samples(synthetic_data, classes=classes, count=8))
        for classes in ((3, 8), "3,8", ["3", "8"], np.array([3, 8]))
    ]
    pictures.append(np.asarray(mnistkit.draw_samples(synthetic_data, digits=(3, 8), count=8)))
    assert all(np.array_equal(picture, pictures[0]) for picture in pictures)
    assert not np.array_equal(pictures[0], np.asarray(mnistkit.draw_samples(synthetic_data, count=8)))
    threes = [np.asarray(mnistkit.draw_samples(synthetic_data, classes=c, count=8)) for c in ([3], "3", 3)]
    assert all(np.array_equal(picture, threes[0]) for picture in threes)
    assert not np.array_equal(threes[0], pictures[0])
    with pytest.raises(MnistkitError, match=r"^pools: expected comma-separated 0s and 1s, got '0,2'$"):
        api.config_from_options("cnn", {"pools": "0,2"})
    with pytest.raises(MnistkitError, match=r"^hidden: expected whole numbers, got True$"):
        api.config_from_options("mlp", {"hidden": True})


def test_pictures_take_paths_as_the_other_functions_do(
    tmp_path: Path, large_digit_model: Path, synthetic_npz: Path
) -> None:
    model = mnistkit.load(large_digit_model)
    arrays = mnistkit.load_arrays(synthetic_npz)
    assert (
        mnistkit.draw_samples(synthetic_npz, large_digit_model, count=8).tobytes()
        == mnistkit.draw_samples(arrays, model, count=8).tobytes()
    )
    history = tmp_path / "h.jsonl"
    history.write_text("".join(f'{{"epoch": {epoch}, "train_loss": {1 / epoch}}}\n' for epoch in (1, 2)))
    assert (
        mnistkit.draw_curves(history).tobytes()
        == mnistkit.draw_curves([{"epoch": 1, "train_loss": 1.0}, {"epoch": 2, "train_loss": 0.5}]).tobytes()
    )
    logreg = mnistkit.train(
        synthetic_npz, "logreg", epochs=1, verbose=False, output=tmp_path / "l.safetensors"
    )
    assert (
        mnistkit.draw_weights(tmp_path / "l.safetensors").tobytes() == mnistkit.draw_weights(logreg).tobytes()
    )
    # A checkpoint's path draws the history it keeps, as the model itself does.
    curves = mnistkit.draw_curves(logreg).tobytes()
    assert mnistkit.draw_curves(tmp_path / "l.safetensors").tobytes() == curves


# A notebook's kernel takes Stop as KeyboardInterrupt; a process started in the background by a
# shell that is not interactive (`make test &`) starts with SIGINT ignored.
NOTEBOOK_STOP = "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
# Arrays of noise for a notebook's script, as `arrays` (numpy imported as np).
NOISE_ARRAYS = """
rng = np.random.default_rng(0)
arrays = {}
for split, n in (("train", 300), ("test", 50)):
    arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    arrays[f"{split}_labels"] = np.arange(n, dtype=np.uint8) % 10
"""

STOP_INSIDE_A_GC_CALLBACK = (
    """
import gc, os, signal, sys
import numpy as np
import mnistkit
from mnistkit import training
"""
    + NOTEBOOK_STOP
    + NOISE_ARRAYS
    + """
sent = []

def stop_inside_gc(phase, info):  # as Stop lands when jax's gc callback runs
    if armed and not sent:
        sent.append(phase)
        os.kill(os.getpid(), signal.SIGINT)

armed = False
gc.callbacks.append(stop_inside_gc)
real_set_up = training._set_up

def set_up(*args, **kwargs):
    global armed
    armed = True
    gc.collect()
    return real_set_up(*args, **kwargs)

training._set_up = set_up
try:
    mnistkit.train(arrays, "mlp", hidden=(16,), epochs=2, output=sys.argv[1], dataset="mnist")
    print("finished")
except KeyboardInterrupt:
    print("stopped")
print("handler back:", signal.getsignal(signal.SIGINT) is signal.default_int_handler)
gc.callbacks.remove(stop_inside_gc)
options = dict(hidden=(16,), epochs=2, output=sys.argv[1], dataset="mnist")
model = mnistkit.train(arrays, "mlp", verbose=False, **options)
print("then", len(model.history), "epochs")
"""
)


def test_the_notebooks_stop_is_never_swallowed_by_jax(tmp_path: Path) -> None:
    """Stop (SIGINT) raising at once inside a garbage-collector callback (jax has one) was
    printed and swallowed by Python, and training went on to the end; `train` holds it and
    stops at the next chunk of batches, then gives the notebook its handler back."""
    output = tmp_path / "nb.safetensors"
    result = run_script(STOP_INSIDE_A_GC_CALLBACK, output, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["stopped", "handler back: True", "then 2 epochs"], result.stderr
    assert "interrupted: no epoch completed, no checkpoint written" in result.stderr
    assert "Exception ignored" not in result.stderr and "Traceback" not in result.stderr


A_SECOND_STOP_AS_TRAIN_ENDS = (
    """
import os, signal
from mnistkit import interrupts
from mnistkit.errors import Interrupted
"""
    + NOTEBOOK_STOP
    + """

set_handler = signal.signal

def second_stop_first(number, handler):  # a second Stop lands as the handler is given back
    if handler is not interrupts._on_signal:
        os.kill(os.getpid(), signal.SIGINT)
    return set_handler(number, handler)

signal.signal = second_stop_first

@interrupts.held_for_stop()
def stopped_training():
    os.kill(os.getpid(), signal.SIGINT)
    interrupts.raise_if_interrupted()

try:
    stopped_training()
except KeyboardInterrupt as stop:
    print(type(stop).__name__)
signal.signal = set_handler
handler_back = signal.getsignal(signal.SIGINT) is signal.default_int_handler
print(handler_back, interrupts._deferring, interrupts._held_signals)
"""
)


def test_a_second_stop_as_train_ends_leaves_the_notebook_its_own_handler() -> None:
    """A Stop landing while `train` gave the notebook its handler back raised from there, and left
    mnistkit's handler in place without holding signals: the next Stop inside a jax callback
    was swallowed again."""
    result = run_script(A_SECOND_STOP_AS_TRAIN_ENDS)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["KeyboardInterrupt", "True False []"], result.stderr


STOP_DURING_A_COMPILE = (
    """
import os, signal, sys, threading, time
from mnistkit import interrupts
"""
    + NOTEBOOK_STOP
    + """

@interrupts.held_for_stop(notice="stopping once the work in progress ends")
def compiling_then_stopped(verbose=True):
    os.kill(os.getpid(), signal.SIGINT)
    os.kill(os.getpid(), signal.SIGINT)  # a second Stop, pressed as nothing was said
    time.sleep(0.5)  # the compile: Stop is held
    print("compiled", file=sys.stderr, flush=True)
    interrupts.raise_if_interrupted()

for verbose in (True, False):
    try:
        compiling_then_stopped(verbose=verbose)
    except KeyboardInterrupt:
        print("KeyboardInterrupt", threading.active_count())
"""
)


STOP_AS_TRAINING_ENDS = (
    """
import os, signal, sys, threading, time
import numpy as np
import mnistkit
"""
    + NOTEBOOK_STOP
    + NOISE_ARRAYS
    + """

class StopAtTheLastLine:  # Stop pressed as the last evaluation ends, after the last chunk
    def __init__(self, stream):
        self.stream = stream
    def write(self, text):
        if text.startswith("test accuracy"):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.3)  # the notice's thread writes first, and slowly:
        written = self.stream.write(text)
        if threading.current_thread() is not threading.main_thread():
            time.sleep(0.6)  # the call's own line comes while it writes
        return written
    def flush(self):
        self.stream.flush()

sys.stderr = StopAtTheLastLine(sys.stderr)
for output in (None, sys.argv[1]):
    for learning_rate in (0.1, 0.05):  # a sweep
        try:
            mnistkit.train(arrays, "mlp", hidden=(16,), epochs=1, lr=learning_rate, output=output,
                           dataset="mnist")
            print("returned", learning_rate)
        except KeyboardInterrupt:
            print("stopped", learning_rate)
            break
"""
)


def test_a_notebooks_stop_as_training_ends_stops_the_sweep(tmp_path: Path) -> None:
    """A Stop held through train's last evaluation was dropped: the notice said it would be
    taken, the call returned, and the sweep's loop went on to its next run. The notice, said
    from a thread of its own, ran into the call's "interrupted" line."""
    output = tmp_path / "nb.safetensors"
    result = run_script(STOP_AS_TRAINING_ENDS, output, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["stopped 0.1", "stopped 0.1"], result.stderr
    lines = result.stderr.splitlines()
    assert lines.count(STOPPING_NOTICE) == 2, result.stderr
    assert (
        "interrupted: training had ended; the model is not returned (train(..., output=PATH) keeps it)"
        in lines
    )
    assert f"interrupted: training had ended; the model is saved to {output}" in lines
    assert len(mnistkit.load(output).history) == 1


def test_a_notebooks_stop_during_a_compile_is_answered_at_once() -> None:
    """A notebook's Stop during train's first compile got no word for seconds, until the
    "interrupted" line: it is answered at once, in the cell (sys.stderr, not descriptor 2,
    which is the notebook server's terminal), once however many Stops come."""
    result = run_script(STOP_DURING_A_COMPILE)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["KeyboardInterrupt 1"] * 2
    assert result.stderr.splitlines() == ["stopping once the work in progress ends", "compiled", "compiled"]


def info_of(checkpoint: Path, *options: str) -> str:
    from click.testing import CliRunner

    from mnistkit.cli import cli

    result = CliRunner().invoke(cli, ["info", str(checkpoint), *options])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_a_notebook_run_stopped_midway_continues_on_the_same_data_only(
    tmp_path: Path, synthetic_data, monkeypatch, capsys
) -> None:
    """The notebook's Stop in epoch 2 keeps epoch 1 beside `output`; the same call continues
    from it, to the bytes of a run never stopped, but other arrays (another dataset, a
    notebook's edited copy) or `restart=True` start over."""
    from mnistkit import training

    real_epoch = training._train_epoch
    epochs_begun: list[int] = []

    def stopped_in_epoch_two(*args, **kwargs):
        epochs_begun.append(1)
        if len(epochs_begun) == 2:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    def stopped_run(arrays, output) -> str:
        epochs_begun.clear()
        monkeypatch.setattr(training, "_train_epoch", stopped_in_epoch_two)
        with pytest.raises(KeyboardInterrupt):
            mnistkit.train(arrays, "logreg", epochs=3, output=output)
        monkeypatch.setattr(training, "_train_epoch", real_epoch)
        return capsys.readouterr().err

    one_go = tmp_path / "one-go.safetensors"
    mnistkit.train(synthetic_data, "logreg", epochs=3, output=one_go, verbose=False)
    output = tmp_path / "stopped.safetensors"
    assert "saved the checkpoint of epoch 1 of 3" in stopped_run(synthetic_data, output)
    # The stopped run's checkpoint replaced any finished model there: it says it is not one.
    assert repr(mnistkit.load(output)).endswith(", stopped after epoch 1 of 3>")
    assert "finished               no: stopped after epoch 1 of 3\n" in info_of(output)
    assert json.loads(info_of(output, "--json"))["finished"] is False
    mnistkit.train(synthetic_data, "logreg", epochs=3, output=output)
    assert "epoch 1 of 3 was done" in capsys.readouterr().err
    assert output.read_bytes() == one_go.read_bytes()
    assert "stopped" not in repr(mnistkit.load(output))
    assert "finished               yes\n" in info_of(output)

    edited = {**synthetic_data, "train_images": synthetic_data["train_images"][:, ::-1]}
    for arrays, restart in ((edited, False), (synthetic_data, True)):
        stopped_run(synthetic_data, output)
        mnistkit.train(arrays, "logreg", epochs=3, output=output, restart=restart)
        err = capsys.readouterr().err
        assert "was done" not in err
        assert ("written by a run with another data file; starting over" in err) is not restart
        assert [record["epoch"] for record in mnistkit.load(output).history] == [1, 2, 3]
    assert output.read_bytes() == one_go.read_bytes()  # restarted on the same data

    # The arrays' fingerprint tells saved states only: the command resumes the model on the
    # same data as a file ("trained on a different data file" before).
    from click.testing import CliRunner

    from mnistkit.cli import cli

    np.savez(tmp_path / "same.npz", **synthetic_data)
    more = [str(tmp_path / "same.npz"), "-o", str(tmp_path / "more.safetensors"), "--epochs", "4"]
    result = CliRunner().invoke(cli, ["train", *more, "--resume", str(output)])
    assert result.exit_code == 0 and "resuming after epoch 3 of 4" in result.stderr, result.output

    stopped = stopped_run(synthetic_data, None)
    assert "epoch 1 of 3 was done, but nothing is saved without a checkpoint path" in stopped
    assert "None" not in stopped


def test_a_model_trains_further_from_python_as_with_the_commands_resume(
    tmp_path: Path, synthetic_data, synthetic_npz: Path, capsys
) -> None:
    """`train(arrays, resume=model, epochs=3)` continues with the model's own settings, to the
    bytes of one run of three epochs, and takes the command's history, save_every and devices."""
    options = {"hidden": 32, "lr": 3e-3, "schedule": "constant", "verbose": False}
    one_go = tmp_path / "one-go.safetensors"
    mnistkit.train(synthetic_data, epochs=3, output=one_go, **options)
    two = mnistkit.train(synthetic_data, epochs=2, **options)
    history, resumed = tmp_path / "history.jsonl", tmp_path / "resumed.safetensors"
    three = mnistkit.train(
        synthetic_data, resume=two, epochs=3, output=resumed, history=history, save_every=0, devices=1
    )
    assert "resuming after epoch 2 of 3" in capsys.readouterr().err
    assert resumed.read_bytes() == one_go.read_bytes()
    assert [record["epoch"] for record in three.history] == [1, 2, 3]
    assert [json.loads(line)["epoch"] for line in history.read_text().splitlines()] == [1, 2, 3]
    # A checkpoint's path too, and an .npz's, as the command takes them.
    assert mnistkit.train(synthetic_npz, resume=resumed, epochs=4, verbose=False).history[-1]["epoch"] == 4

    other = {**synthetic_data, "train_images": synthetic_data["train_images"][:, ::-1]}
    with pytest.raises(MnistkitError, match=r"^resume checkpoint: it was trained on other arrays \(SHA-256"):
        mnistkit.train(other, resume=two, epochs=3)
    with pytest.raises(ValueError, match=r"^.*history.jsonl: history= would overwrite the arrays given$"):
        mnistkit.train(history, resume=resumed, epochs=5, history=history)
    with pytest.raises(ValueError, match=r": output= and history= would both write to it$"):
        mnistkit.train(synthetic_data, epochs=1, output=resumed, history=resumed)
    with pytest.raises(ValueError, match=r"history= would overwrite the resume given$"):
        mnistkit.train(synthetic_data, resume=resumed, epochs=5, history=resumed)
    # The run's state beside the checkpoint, OUTPUT.resume, is written each epoch and deleted
    # at the end: an input or a history of that name was lost so.
    state = tmp_path / "m.safetensors.resume"
    for call in (
        lambda: mnistkit.train(synthetic_npz, epochs=1, output=tmp_path / "m.safetensors", history=state),
        lambda: mnistkit.train(state, epochs=1, output=tmp_path / "m.safetensors"),
    ):
        with pytest.raises(ValueError, match=r"the run state beside output= (and|would)"):
            call()
    with pytest.raises(
        MnistkitError, match=r"^resume continues with the checkpoint's own settings; drop lr$"
    ):
        mnistkit.train(synthetic_data, resume=two, epochs=3, lr=0.1)
    with pytest.raises(MnistkitError, match=r"; drop preset$"):
        mnistkit.train(synthetic_data, "cnn", resume=two, epochs=3)
    with pytest.raises(MnistkitError, match=r"^resume: already trained 2 epochs; pass epochs above 2"):
        mnistkit.train(synthetic_data, resume=two)
    with pytest.raises(
        ValueError, match=r"^resume= continues with the model's own settings: give no config$"
    ):
        mnistkit.train(synthetic_data, mnistkit.TrainConfig(epochs=3), resume=two)
    with pytest.raises(MnistkitError, match=r"^resume: trained on mnist, not dataset='kmnist'$"):
        mnistkit.train(synthetic_data, resume=two, epochs=3, dataset="kmnist")
    fashion = named_as(dict(synthetic_data), "fashion-mnist")
    with pytest.raises(MnistkitError, match=r"^arrays: holds fashion-mnist .* trained on mnist"):
        mnistkit.train(fashion, resume=two, epochs=3)
    with pytest.raises(ValueError, match=r"^save_every is a number of epochs, 0 or more, got -1$"):
        mnistkit.train(synthetic_data, epochs=1, save_every=-1)
    with pytest.raises(MnistkitError, match=r"^devices=2: this process has 1"):
        mnistkit.train(synthetic_data, epochs=1, devices=2, verbose=False)
    for devices in (0, -1, True, "2"):  # -1 aborted the interpreter inside jax
        with pytest.raises(
            ValueError, match=rf"^devices is a number of devices, 1 or more, got {devices!r}$"
        ):
            mnistkit.train(synthetic_data, epochs=1, devices=devices)
    with pytest.raises(MnistkitError, match=r"^dataset: 'fashion' is not one of mnist"):
        mnistkit.train(synthetic_data, resume=two, epochs=3, dataset="fashion")
    with pytest.raises(
        TypeError, match=re.escape("'validation_split'; did you mean val_size=? (a number of training images")
    ):
        mnistkit.train(synthetic_data, validation_split=0.1)


def _failing_in_epoch(monkeypatch, epoch: int, error: BaseException) -> None:
    """Training raises `error` when epoch `epoch` (counted in this call) begins."""
    from mnistkit import training

    real_epoch, begun = training._train_epoch, []

    def failing(*args, **kwargs):
        begun.append(1)
        if len(begun) == epoch:
            raise error
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(training, "_train_epoch", failing)


@pytest.mark.parametrize(("save_every", "kept"), [(1, True), (2, False), (0, False)])
def test_save_every_says_after_which_epochs_a_crashed_run_can_continue(
    tmp_path: Path, synthetic_data, monkeypatch, save_every: int, kept: bool
) -> None:
    """A crash (an error in epoch 2; a kill is the same) keeps the state of the epochs saved:
    after epoch 1 with save_every=1, none with 2 or 0 (only when stopped)."""
    from mnistkit import run_state

    _failing_in_epoch(monkeypatch, 2, RuntimeError("crashed"))
    output = tmp_path / "model.safetensors"
    with pytest.raises(RuntimeError, match="crashed"):
        mnistkit.train(
            synthetic_data, "logreg", epochs=3, output=output, save_every=save_every, verbose=False
        )
    assert run_state.state_path(output).exists() is kept


def test_a_saved_state_from_another_starting_point_is_not_continued(
    tmp_path: Path, synthetic_data, monkeypatch, capsys
) -> None:
    """`resume=model, output=path` beside the state of a stopped run of the same settings but
    another start (a cosine schedule over 4 epochs, where the model's 2 had their own): the
    model given is trained further, not that run."""
    options = {"hidden": 16, "lr": 3e-3, "schedule": "cosine"}
    output = tmp_path / "model.safetensors"
    with monkeypatch.context() as patch:
        _failing_in_epoch(patch, 4, KeyboardInterrupt())
        with pytest.raises(KeyboardInterrupt):
            mnistkit.train(synthetic_data, epochs=4, output=output, verbose=False, **options)
    two = mnistkit.train(synthetic_data, epochs=2, verbose=False, **options)
    further = mnistkit.train(synthetic_data, resume=two, epochs=4, verbose=False)
    capsys.readouterr()
    resumed = mnistkit.train(synthetic_data, resume=two, epochs=4, output=output)
    assert "written by a run with another starting point" in capsys.readouterr().err
    assert resumed.history[:2] == [dict(record, seconds=None) for record in two.history]
    for name, tensor in further.checkpoint.params.items():
        np.testing.assert_array_equal(resumed.checkpoint.params[name], tensor)
    # The other way round: a run from scratch beside the state a resumed run left.
    with monkeypatch.context() as patch:
        _failing_in_epoch(patch, 2, KeyboardInterrupt())  # epoch 3 of 4 done, from `two`
        with pytest.raises(KeyboardInterrupt):
            mnistkit.train(synthetic_data, resume=two, epochs=4, output=output, verbose=False)
    scratch = mnistkit.train(synthetic_data, epochs=4, output=output, **options)
    assert "written by a run with another starting point" in capsys.readouterr().err
    assert scratch.history[0]["train_loss"] != two.history[0]["train_loss"]  # the cosine over 4 epochs


def test_nothing_to_score_is_an_error_not_a_zero(
    tmp_path: Path, large_digit_model: Path, synthetic_data, capsys
) -> None:
    """As `mnistkit eval` says: an evaluation with no images, or none of the model's classes,
    read 0% accuracy and 0 loss; and training without test images divided by zero."""
    images, labels = synthetic_data["test_images"], synthetic_data["test_labels"]
    with pytest.raises(MnistkitError, match=r"^arrays: no test images to evaluate$"):
        mnistkit.evaluate(large_digit_model, {"test_images": images[:0], "test_labels": labels[:0]})
    three_eight = mnistkit.train(synthetic_data, "logreg", epochs=1, classes=(3, 8), verbose=False)
    capsys.readouterr()
    not_three_or_eight = np.flatnonzero(~np.isin(labels, [3, 8]))[:5]
    with pytest.raises(MnistkitError, match=r"^arrays: no test images to evaluate$"):
        mnistkit.evaluate(
            three_eight,
            {"test_images": images[not_three_or_eight], "test_labels": labels[not_three_or_eight]},
        )
    no_test_digits = tmp_path / "no-test-digits.npz"
    np.savez(no_test_digits, test_images=images[:0], test_labels=labels[:0])
    named = f"^{re.escape(str(no_test_digits))}: no test images to evaluate$"
    with pytest.raises(MnistkitError, match=named):
        mnistkit.evaluate(large_digit_model, no_test_digits)
    assert "left out 5 images whose class is not among the model's classes" in capsys.readouterr().err
    with pytest.raises(MnistkitError, match=r"^arrays: no test images to measure the model on$"):
        mnistkit.train({**synthetic_data, "test_images": images[:0], "test_labels": labels[:0]}, "logreg")
    with pytest.raises(MnistkitError, match=r"^arrays: no test images of the classes trained on"):
        mnistkit.train(
            {
                **synthetic_data,
                "test_images": images[not_three_or_eight],
                "test_labels": labels[not_three_or_eight],
            },
            "logreg",
            classes=(3, 8),
        )


def test_pictures_of_the_wrong_thing_say_what_they_draw(large_digit_model: Path) -> None:
    with pytest.raises(TypeError, match=r"^draw_confusion draws an evaluation, not a Model: "):
        mnistkit.draw_confusion(mnistkit.load(large_digit_model))
    with pytest.raises(MnistkitError, match=r"^history: empty history, no epochs to plot$"):
        mnistkit.draw_curves([])
    # Records of one's own are checked as a file's lines are (inside Pillow or charts before).
    # A notebook's own loop writes numpy's scalars: drawn as Python's numbers are.
    as_numpy = [
        {"epoch": np.int64(1), "train_loss": np.float32(0.5)},
        {"epoch": 2, "train_loss": np.float64(0.25)},
    ]
    assert (
        mnistkit.draw_curves(as_numpy).tobytes()
        == mnistkit.draw_curves([{"epoch": 1, "train_loss": 0.5}, {"epoch": 2, "train_loss": 0.25}]).tobytes()
    )
    for records, message in (
        ([{"epoch": 1}], "history: no loss or accuracy values to plot"),
        (
            [{"epoch": "1", "train_loss": 0.5}],
            "history record 1: 'epoch' must be a whole number from 1, got '1'",
        ),
        (
            [{"epoch": 1, "train_loss": 0.5}, {"epoch": 2, "train_loss": float("nan")}],
            "history record 2: train_loss must be a number or null, got nan",
        ),
    ):
        with pytest.raises(MnistkitError, match="^" + re.escape(message) + "$"):
            mnistkit.draw_curves(records)


def test_arguments_swapped_or_of_another_kind_get_the_calls_form(
    large_digit_model: Path, synthetic_data, tmp_path: Path
) -> None:
    """A notebook's usual slips: the model and the arrays swapped, a picture given to
    Model.predict; each gets the call's form in one line, not a traceback from inside."""
    model = mnistkit.load(large_digit_model)
    for call, expected in (
        (
            lambda: mnistkit.evaluate(synthetic_data, model),
            r"^evaluate\(model, arrays, split='test'\): "
            r"the model is a mnistkit.Model or a checkpoint's path, not a dict$",
        ),
        (
            lambda: mnistkit.draw_samples(model, synthetic_data),
            r"^draw_samples\(arrays, model\): the model is .* not a dict$",
        ),
        (
            lambda: mnistkit.draw_samples(model),
            r"^draw_samples\(arrays, model\): the arrays are a dict .* not a Model$",
        ),
        (
            lambda: mnistkit.draw_embedding(synthetic_data, model),
            r"^draw_embedding\(model, arrays\): the model is .* not a dict$",
        ),
        (
            lambda: mnistkit.draw_weights(synthetic_data),
            r"^draw_weights\(model\): the model is .* not a dict$",
        ),
        (
            lambda: mnistkit.predict_images(synthetic_data["test_images"][:2], model),
            r"^predict_images\(model, images\): the model is .* not a ndarray$",
        ),
        (
            lambda: mnistkit.draw_curves(synthetic_data),
            r"^draw_curves\(history\): the history is .* not a dict$",
        ),
        (lambda: mnistkit.draw_curves(model.history[0]), r"^draw_curves\(history\): .* not a dict$"),
    ):
        with pytest.raises(TypeError, match=expected):
            call()
    picture = Image.fromarray(draw_large_digit(7))
    path = tmp_path / "seven.png"
    picture.save(path)
    for image in (str(path), path, path.read_bytes(), [str(path), str(path)]):
        with pytest.raises(
            TypeError, match=r"for image files and pictures: mnistkit.predict_images\(model, images\)$"
        ):
            model.predict(image)
    for image, hint in (
        (picture, r"got uint8 \(160, 160\); for a picture of another size: mnistkit.predict_images"),
        (np.asarray(picture), r"got uint8 \(160, 160\); for a picture of another size"),
        (
            np.zeros((28, 28, 3), np.uint8),
            r"got uint8 \(28, 28, 3\); colour pictures: mnistkit.predict_images",
        ),
    ):
        with pytest.raises(ValueError, match=hint):
            model.predict_proba(image)
    digit = synthetic_data["test_images"][0]  # a 28x28 gray PIL image is an image, as torchvision gives them
    assert model.predict(Image.fromarray(digit)) == model.predict(digit)
    # The same digit as a palette image, whose pixels numpy reads as indices: it was predicted
    # from them, silently wrong.
    inverted = Image.fromarray(255 - digit).convert("P")  # index 255 - level holds level
    inverted.putpalette(bytes(level for level in range(255, -1, -1) for _ in range(3)))
    assert np.array_equal(np.asarray(inverted.convert("L")), digit)
    for given in (inverted, [inverted]):
        with pytest.raises(ValueError, match=r"not a palette image \(mode P\).*picture.convert\('L'\)"):
            model.predict(given)
    assert model.predict(inverted.convert("L")) == model.predict(digit)
    assert list(mnistkit.draw_curves(record for record in model.history).size) == list(
        mnistkit.draw_curves(model.history).size
    )
    assert mnistkit.predict_images(model, picture)[0].label == 7


def test_a_learners_slips_get_one_line_that_says_what_was_meant(
    synthetic_data, capsys, large_digit_model: Path
) -> None:
    """The slips of a notebook after a tutorial, each refused before any work with its fix."""
    for options, error, reason in (
        (
            {"epoch": 3},
            TypeError,
            "train() got an unexpected keyword argument 'epoch'; did you mean epochs=?",
        ),
        ({"learning_rate": 0.1}, TypeError, "keyword argument 'learning_rate'; did you mean lr=?"),
        ({"batch": 64}, TypeError, "keyword argument 'batch'; did you mean batch_size=?"),
    ):
        with pytest.raises(error, match=re.escape(reason)):
            mnistkit.train(synthetic_data, **options)
    assert capsys.readouterr().err == ""  # refused before the arrays were looked at
    with pytest.raises(MnistkitError, match=r"^model: 'CNN' is not one of logreg, mlp, cnn$"):
        mnistkit.train(synthetic_data, model="CNN")  # not taken for a preset's name
    with pytest.raises(
        MnistkitError, match=r'^model="mlp" needs hidden layers: give hidden, e.g. hidden=128$'
    ):
        mnistkit.train(synthetic_data, preset="mlp", hidden=[])  # the preset has some: hidden= emptied them
    with pytest.raises(MnistkitError, match=r"\(the logreg preset has none\)"):
        mnistkit.train(synthetic_data, "logreg", model="mlp")
    with pytest.raises(
        TypeError, match=r"^draw_samples\(\) got an unexpected keyword argument 'n'; did you mean count=\?$"
    ):
        mnistkit.draw_samples(synthetic_data, n=10)
    # The functions of fixed parameters said only "unexpected keyword argument".
    model = mnistkit.load(large_digit_model)
    with pytest.raises(
        TypeError, match=r"^evaluate\(\) got an unexpected keyword argument 'splt'; did you mean split=\?$"
    ):
        mnistkit.evaluate(model, synthetic_data, splt="train")
    with pytest.raises(
        TypeError, match=r"^draw_embedding\(\) got an unexpected keyword argument 'n'; did you mean count=\?$"
    ):
        mnistkit.draw_embedding(model, synthetic_data, n=100)
    with pytest.raises(
        TypeError,
        match=re.escape("load_mnist() loads MNIST; for another dataset: load_dataset('fashion-mnist')"),
    ):
        mnistkit.load_mnist("data", dataset="fashion-mnist")
    with pytest.raises(
        TypeError,
        match=r"^TrainConfig\(\) got an unexpected keyword argument 'epoch'; did you mean epochs=\?$",
    ):
        mnistkit.TrainConfig(epoch=3)
    # TrainConfig's defaults are the mlp preset's: its hidden layers, not given, were blamed.
    with pytest.raises(
        MnistkitError, match=re.escape("hidden=(512, 256) is the mlp preset's default: give hidden=() too")
    ):
        mnistkit.TrainConfig(model="logreg", epochs=15)
    assert mnistkit.TrainConfig(model="logreg", hidden=()).hidden == ()
    # Blamed on the kernel sizes, not given, of conv layers the default model does not have.
    for given in ({"channels": (8,)}, {"kernel_sizes": (5,)}):
        with pytest.raises(MnistkitError, match=r'^channels and kernel_sizes apply to model="cnn", not mlp$'):
            mnistkit.TrainConfig(**given)
    with (
        terms.command_line_terms(),
        pytest.raises(  # --hidden 512,256 was typed: no default to blame
            MnistkitError, match=r"^--model logreg has no hidden layers; drop --hidden, or use --model mlp$"
        ),
    ):
        mnistkit.TrainConfig(model="logreg", hidden=(512, 256))
    assert list(inspect.signature(mnistkit.TrainConfig).parameters)[:2] == ["model", "hidden"]  # help()'s
    with pytest.raises(MnistkitError, match=r"^split: 'val' is not one of train, test$"):
        mnistkit.draw_samples(synthetic_data, split="val")


def test_keras_and_torch_habits_get_the_call_that_works(synthetic_data, large_digit_model: Path) -> None:
    model = mnistkit.load(large_digit_model)
    images, labels = synthetic_data["test_images"], synthetic_data["test_labels"]
    given_as_a_pair = "give images and labels as one pair: evaluate(model, (x_test, y_test))"
    with pytest.raises(TypeError, match=re.escape(given_as_a_pair)):
        mnistkit.evaluate(model, images, labels)  # Keras' model.evaluate(x, y)
    with pytest.raises(TypeError, match=r"split is 'train' or 'test', got NoneType$"):
        mnistkit.evaluate(model, synthetic_data, None)
    as_dict = mnistkit.evaluate(model, {"test_images": images, "test_labels": labels})
    as_pair = mnistkit.evaluate(model, (images, labels))  # refused before: a TypeError
    assert as_dict.count == len(labels) and np.array_equal(as_pair.confusion_matrix, as_dict.confusion_matrix)
    as_train = mnistkit.evaluate(model, [images[:50], labels[:50]], split="train")
    assert as_train.count == 50
    for pair in ((images, labels.tolist()), [list(images), list(labels)]):  # lists, as a dict's may be
        assert np.array_equal(mnistkit.evaluate(model, pair).confusion_matrix, as_dict.confusion_matrix)
    two = mnistkit.evaluate(model, ([images[0], images[1]], [int(labels[0]), int(labels[1])]))
    assert two.count == 2  # not Keras' two pairs, (x_train, y_train) an image and another
    with pytest.raises(
        TypeError, match=re.escape("Keras' ((x_train, y_train), (x_test, y_test)), not a tuple")
    ):
        mnistkit.train((images, labels), "logreg")  # training needs both splits
    held_out = "add images held out for the test: dict(arrays, test_images="
    with pytest.raises(MnistkitError, match=re.escape(held_out)):
        mnistkit.train({"train_images": images, "train_labels": labels}, "logreg")
    for given, hint in (
        (images[:4].astype(np.int64), "(give images.astype(np.uint8) for pixels 0-255)"),
        # a 16-bit scan's: astype(np.uint8), offered before, wrapped each pixel past 255 around
        (
            images[:4].astype(np.uint16) * 257,
            "(give (images // 257).astype(np.uint8) for 16-bit pixels 0-65535)",
        ),
        (
            images[:4].astype(np.int32) * 4,
            "(give (images * 255 // 1020).astype(np.uint8) for pixels up to 1020)",
        ),
        (images[:4] > 100, "(give images.astype(np.uint8) * 255)"),
        (images[:4, None], "(give images[:, 0])"),  # torchvision's (N, 1, 28, 28)
    ):
        with pytest.raises(ValueError, match=re.escape(hint)):
            model.predict(given)
    assert np.array_equal(model.predict(images[:4, None][:, 0]), model.predict(images[:4]))


def test_predict_names_what_it_got_where_no_images_are(large_digit_model: Path, synthetic_data) -> None:
    """The arrays' dict, None or a number given to Model.predict: numpy made them an object
    or a scalar array, and the refusal named that, or offered a cast, which mends no scalar."""
    model = mnistkit.load(large_digit_model)
    with pytest.raises(
        TypeError,
        match=re.escape(
            "expected uint8 images (N, 28, 28) as MNIST's arrays hold them, not a dict of arrays; "
            "for a split of them: model.predict(arrays['test_images'])"
        ),
    ):
        model.predict(synthetic_data)
    for given, named in ((None, "not None;"), ({1, 2}, "not a set;")):
        with pytest.raises(TypeError, match=re.escape(named)):
            model.predict(given)
    with pytest.raises(ValueError, match=r"^expected uint8 images of shape \(N, 28, 28\), got int64 \(\)$"):
        model.predict(5)
    with pytest.raises(ValueError, match=r"got float64 \(30, 30\); for a picture of another size"):
        model.predict(np.zeros((30, 30)))  # no cast: it would still be no 28x28 image


def test_predict_names_the_shape_of_one_image_as_given(large_digit_model: Path, synthetic_data) -> None:
    """The JAX lab's one digit as floats in [0, 1], (28, 28): the refusal named (1, 28, 28), a
    shape the learner never made."""
    model = mnistkit.load(large_digit_model)
    digit = synthetic_data["test_images"][0].astype(np.float32) / 255
    with pytest.raises(ValueError, match=r"got float32 \(28, 28\) \(give \(images \* 255\)"):
        model.predict(digit)


def test_nan_and_infinite_pixels_are_named_not_cast_away(large_digit_model: Path, synthetic_data) -> None:
    """Each fix a refusal gives casts to uint8, which makes NaN a pixel unnoticed."""
    model = mnistkit.load(large_digit_model)
    images = synthetic_data["test_images"] / 255.0
    images[0, 5, 5] = np.nan
    not_pixels = "holds NaN or infinite values, not pixels; mend them or leave out the images that hold them"
    with pytest.raises(ValueError, match=re.escape(f"images {not_pixels}")):  # as its other bad arrays
        model.predict(images)
    with pytest.raises(MnistkitError, match=re.escape(f"<image 0> {not_pixels}")):
        mnistkit.predict_images(model, np.full((28, 28), np.inf))
    all_nan = {**synthetic_data, "test_images": np.full((10, 28, 28), np.nan)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "All-NaN slice encountered" once leaked
        with pytest.raises(MnistkitError, match=re.escape(f"arrays: test_images {not_pixels}")):
            mnistkit.evaluate(model, all_nan)
        with pytest.raises(MnistkitError, match=re.escape(f"arrays: train_images {not_pixels}")):
            mnistkit.train({**synthetic_data, "train_images": -images}, "logreg", epochs=1, verbose=False)


def test_a_folder_given_to_predict_images_gets_pythons_way_to_list_it(
    large_digit_model: Path, tmp_path: Path
) -> None:
    with pytest.raises(MnistkitError) as refusal:
        mnistkit.predict_images(large_digit_model, [tmp_path])
    assert str(refusal.value) == (
        f"{tmp_path}: is a directory, expected an image file; "
        f"give its images sorted(pathlib.Path({str(tmp_path)!r}).glob('*.png'))"
    )


def test_preprocess_is_true_or_false_not_text(large_digit_model: Path, tmp_path: Path) -> None:
    """preprocess="no", being text, was true."""
    path = tmp_path / "seven.png"
    Image.fromarray(255 - draw_large_digit(7)).save(path)
    for given in ("no", "False", 0, None):
        with pytest.raises(
            MnistkitError, match=rf"^preprocess: expected True or False, got {re.escape(repr(given))}$"
        ):
            mnistkit.predict_images(large_digit_model, path, preprocess=given)
    assert mnistkit.predict_images(large_digit_model, path, preprocess=np.True_)[0].label == 7


def test_load_arrays_takes_one_split_by_its_name(synthetic_npz: Path) -> None:
    assert sorted(mnistkit.load_arrays(synthetic_npz, splits="test")) == sorted(
        mnistkit.load_arrays(synthetic_npz, splits=("test",))
    )


def test_the_arrays_refusals_give_the_fix_for_each_tutorials_habit(synthetic_data) -> None:
    x, y = synthetic_data["train_images"], synthetic_data["train_labels"]
    for train_images, train_labels, fix in (
        (x / 255.0, y, "; give (images * 255).round().astype(np.uint8) for pixels in [0, 1]"),
        (x.reshape(-1, 784), y, "expected (N, 28, 28); give images.reshape(-1, 28, 28)"),
        (x[:, None], y, "expected (N, 28, 28); give images[:, 0]"),
        (x, np.eye(10, dtype=np.float32)[y], "expected uint8; give labels.argmax(1) for one-hot labels"),
        (x, np.eye(10, dtype=np.int64)[y], "to match train_images; give labels.argmax(1) for one-hot labels"),
        (x, y[:, None], "to match train_images; give labels[:, 0]"),  # a column, not one-hot
        (x[..., None], y, "expected (N, 28, 28); give images[..., 0]"),  # Keras' channel axis
        (x.astype(np.float32), y, "; give images.round().astype(np.uint8) for pixels 0-255"),
    ):
        arrays = {**synthetic_data, "train_images": train_images, "train_labels": train_labels}
        with pytest.raises(MnistkitError, match=re.escape(fix)):
            mnistkit.train(arrays, "logreg", epochs=1)
    keras_names = {"x_train": x, "y_train": y, "x_test": x, "y_test": y}
    with pytest.raises(MnistkitError, match=re.escape("are given as ((x_train, y_train), (x_test, y_test))")):
        mnistkit.train(keras_names, "logreg", epochs=1)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("fast", "ARRAYS"), "the arrays come first, then the preset: train(arrays, 'fast')"),
        (("ARRAYS", mnistkit.PRESETS["fast"]), "not a Preset; name it: train(arrays, 'fast')"),
        (("ARRAYS", {"model": "mlp"}), "not a dict; settings go as keywords: train(arrays, **settings)"),
        (("ARRAYS", 3), "not an int; as train(arrays, 'fast')"),
    ],
)
def test_train_says_where_its_arguments_go(synthetic_data, arguments, message) -> None:
    """A preset named first was taken for a missing file, and a preset's entry, a dict or a
    number as the config broke inside training with an AttributeError."""
    arguments = [synthetic_data if argument == "ARRAYS" else argument for argument in arguments]
    with pytest.raises(TypeError, match=r"^train\(arrays, preset\): .*" + re.escape(message)):
        mnistkit.train(*arguments)


def test_digits_drawn_dark_on_white_are_refused_with_the_fix(large_digit_model: Path, synthetic_data) -> None:
    """A learner's own 28x28 drawing is black on white: Model.predict read such images as
    confident nonsense (27% of MNIST's test digits right), with no word of why."""
    images = synthetic_data["test_images"]
    model = mnistkit.load(large_digit_model)
    drawn = 255 - images
    with pytest.raises(
        ValueError, match=r"^image 0 is dark on light paper \(its edge averages 2\d\d of 255\)"
    ):
        model.predict(drawn)
    with pytest.raises(ValueError, match=r"^the image is dark on light paper .*give 255 - images"):
        model.predict_proba(drawn[3])
    assert np.array_equal(model.predict(255 - drawn), model.predict(images))
    mixed = images.copy()
    mixed[4] = drawn[4]
    with pytest.raises(ValueError, match=r"^image 4 is dark on light paper"):
        model.predict(mixed)
    filled = images.copy()
    filled[:, :, :2] = 255  # ink along one side is no paper: a coat fills Fashion-MNIST's frame
    model.predict(filled)


def test_training_images_drawn_dark_on_white_are_refused(
    large_digit_model: Path, synthetic_data, tmp_path: Path
) -> None:
    """A model trained on inverted digits trained and evaluated well, then refused its own test
    images in Model.predict and read every prepared picture inverted. The files themselves
    stay readable: parsed, evaluated, drawn."""
    count = len(synthetic_data["train_images"])
    refusal = re.escape(
        f"train_images are drawn dark on light paper ({count} of {count} have edges brighter than 192 of "
        "255), where mnistkit's models learn light on black, as every dataset has them and predict prepares "
        "pictures; "
    )
    inverted = {**synthetic_data, "train_images": 255 - synthetic_data["train_images"]}
    with pytest.raises(MnistkitError, match=rf"^arrays: {refusal}give 255 - images$"):
        mnistkit.train(inverted, epochs=1)
    saved = tmp_path / "inverted.npz"
    save_arrays(saved, inverted)
    assert load_arrays(saved)["train_images"].shape == inverted["train_images"].shape
    result = subprocess.run(
        [sys.executable, "-m", "mnistkit", "train", str(saved), "-o", str(tmp_path / "m.safetensors")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1 and result.stderr == (
        f"Error: {saved}: " + re.sub(r"\\(.)", r"\1", refusal) + "invert them (255 - images) in the .npz\n"
    )
    assert not (tmp_path / "m.safetensors").exists()
    a_few = synthetic_data["test_images"].copy()
    a_few[:3] = 255 - a_few[:3]
    assert mnistkit.evaluate(large_digit_model, {**synthetic_data, "test_images": a_few}).count == len(a_few)
    a_few_to_train = {**synthetic_data, "train_images": synthetic_data["train_images"].copy()}
    a_few_to_train["train_images"][:3] = 255 - a_few_to_train["train_images"][:3]  # noise, not a convention
    assert mnistkit.train(a_few_to_train, preset="seed", epochs=1).predict(
        synthetic_data["test_images"][:2]
    ).shape == (2,)


def test_a_validation_split_of_ones_own_is_refused_not_ignored(synthetic_data, tmp_path: Path) -> None:
    """A tutorial keeps its own X_val, y_val: given as val_images and val_labels, from Python or
    in an .npz, they were dropped without a word, and the history's val_* stayed empty."""
    from click.testing import CliRunner

    from mnistkit.cli import cli

    own = {
        **synthetic_data,
        "val_images": synthetic_data["test_images"],
        "val_labels": synthetic_data["test_labels"],
    }
    with pytest.raises(
        MnistkitError,
        match=re.escape(
            "arrays: holds val_images and val_labels, which training does not read: it holds out its "
            "validation split from the training images (val_size); add yours to train_images and "
            "train_labels, or leave them out"
        ),
    ):
        mnistkit.train(own, "logreg", epochs=1)
    saved = tmp_path / "own.npz"
    np.savez(saved, **own)
    output = tmp_path / "m.safetensors"
    result = CliRunner().invoke(
        cli, ["train", str(saved), "-o", str(output), "--preset", "logreg", "--epochs", "1"]
    )
    assert result.exit_code == 1 and not output.exists()
    assert result.output.startswith(
        f"Error: {saved}: holds val_images and val_labels, which training does not"
    )
    assert "(--val-size)" in result.output
    assert mnistkit.evaluate(mnistkit.train(synthetic_data, "logreg", epochs=1), saved).count > 0


def test_standardized_and_faint_images_get_the_code_that_undoes_them(
    large_digit_model: Path, synthetic_data
) -> None:
    """A model's input (torchvision's Normalize) and scikit-learn's 0-16 pixels are no MNIST
    images; the hint each refusal gives, run as written, gives back the images."""
    images, labels = synthetic_data["test_images"], synthetic_data["test_labels"]
    model = mnistkit.load(large_digit_model)
    standardized = ((images / 255.0 - 0.1307) / 0.3081).astype(np.float32)
    with pytest.raises(ValueError, match=r"\(give (.+) for standardized pixels\)") as refusal:
        model.predict(standardized)
    fix = re.search(r"\(give (.+) for standardized pixels\)", str(refusal.value))[1]
    assert np.array_equal(eval(fix, {"np": np, "images": standardized}), images)
    with pytest.raises(
        MnistkitError, match=re.escape("arrays: test_images has dtype float32, expected uint8 (")
    ):
        mnistkit.evaluate(model, {"test_images": standardized, "test_labels": labels})

    faint = (images // 16).astype(np.uint8)  # pixels 0-15, as scikit-learn's digits (0-16)
    with pytest.raises(ValueError, match=re.escape("got only pixels 0 to 15 (give (images * (255 / 15))")):
        model.predict(faint)
    with pytest.raises(
        MnistkitError, match=re.escape("arrays: test_images holds only pixels 0 to 15, expected")
    ):
        mnistkit.evaluate(model, {"test_images": faint, "test_labels": labels})
    mended = (faint * (255 / 15)).round().astype(np.uint8)
    assert mended.max() == 255 and model.predict(mended).shape == labels.shape
    assert model.predict(np.zeros((2, 28, 28), np.uint8)).shape == (2,)  # blank pages are no mistake

    picture = np.kron(images[0], np.ones((3, 3), np.uint8))  # 84x84, as a drawing or a photo
    expected = mnistkit.predict_images(model, picture)[0].top
    for given, reason in (
        ((picture // 20).astype(np.uint8), "<image 0>: only pixels 0 to 12, expected 0-255 (give "),
        ((picture / 255 - 0.1307) / 0.3081, "<image 0>: float pixels must lie in [0, 1] (give "),
        (
            picture.astype(np.float32),
            "<image 0>: float pixels must lie in [0, 1] (pixels 0 to 255 as floats: give ",
        ),
    ):
        with pytest.raises(MnistkitError, match=re.escape(reason)) as refusal:
            mnistkit.predict_images(model, given)
        fix = re.search(r"give (.+)\)$", str(refusal.value))[1]
        mended = eval(fix, {"np": np, "image": given})
        assert [label for label, _, _ in mnistkit.predict_images(model, mended)[0].top] == [
            label for label, _, _ in expected
        ]
    with pytest.raises(MnistkitError, match=re.escape("(or give uint8 pixels, 0 to 255)")):
        mnistkit.predict_images(model, (picture // 20).astype(np.float32))  # / 255 would be too faint


def test_labels_of_other_types_load_or_get_their_fix(synthetic_data, tmp_path: Path) -> None:
    """Keras' int64 labels saved with np.savez load as uint8, in a shell and from Python;
    float labels (a pandas column) get `astype`; data of some classes only gets `classes=`."""
    from click.testing import CliRunner

    from mnistkit.cli import cli

    int64 = tmp_path / "int64.npz"
    np.savez(int64, **{**synthetic_data, "test_labels": synthetic_data["test_labels"].astype(np.int64)})
    loaded = mnistkit.load_arrays(int64)
    assert loaded["test_labels"].dtype == np.uint8
    assert np.array_equal(loaded["test_labels"], synthetic_data["test_labels"])
    result = CliRunner().invoke(cli, ["render-samples", str(int64), "-o", str(tmp_path / "s.png")])
    assert result.exit_code == 0, result.output
    negative = tmp_path / "negative.npz"
    np.savez(
        negative, **{**synthetic_data, "test_labels": -synthetic_data["test_labels"].astype(np.int64) - 1}
    )
    result = CliRunner().invoke(cli, ["render-samples", str(negative), "-o", str(tmp_path / "n.png")])
    assert result.exit_code == 1
    assert result.output == f"Error: {negative}: test_labels holds -10, not a class number (0 to 255)\n"
    assert not (tmp_path / "n.png").exists()

    floats = {**synthetic_data, "train_labels": synthetic_data["train_labels"].astype(np.float64)}
    with pytest.raises(
        MnistkitError,
        match=re.escape("train_labels has dtype float64, expected uint8; give labels.astype(np.uint8)"),
    ):
        mnistkit.train(floats, "logreg", epochs=1, verbose=False)
    halves = {**floats, "train_labels": floats["train_labels"] + 0.5}
    with pytest.raises(MnistkitError, match=r"train_labels has dtype float64, expected uint8$"):
        mnistkit.train(halves, "logreg", epochs=1, verbose=False)

    low = synthetic_data["train_labels"] < 5
    first_five = {
        **synthetic_data,
        "train_images": synthetic_data["train_images"][low],
        "train_labels": synthetic_data["train_labels"][low],
    }
    with pytest.raises(
        MnistkitError,
        match=re.escape(
            "no training images of digit 5, 6, 7, 8, 9; "
            "to train on those it holds, give classes=(0, 1, 2, 3, 4)"
        ),
    ):
        mnistkit.train(first_five, "logreg", epochs=1, verbose=False)
    model = mnistkit.train(first_five, "logreg", epochs=1, verbose=False, classes=(0, 1, 2, 3, 4))
    assert model.classes == [0, 1, 2, 3, 4]


def test_an_npz_gets_no_python_fix_in_a_shell_or_from_python(synthetic_data, tmp_path: Path) -> None:
    """A file's labels must be uint8 already, so `labels.argmax(1)` alone would be refused again."""
    from click.testing import CliRunner

    from mnistkit.cli import cli

    one_hot = tmp_path / "one-hot.npz"
    np.savez(
        one_hot,
        **{**synthetic_data, "test_labels": np.eye(10, dtype=np.uint8)[synthetic_data["test_labels"]]},
    )
    result = CliRunner().invoke(cli, ["render-samples", str(one_hot), "-o", str(tmp_path / "s.png")])
    assert result.exit_code == 1 and re.search(
        r"expected \(\d+,\) to match test_images$", result.output.rstrip()
    )
    with pytest.raises(MnistkitError, match=r"to match test_images$"):
        mnistkit.draw_samples(one_hot)


def test_a_preset_or_download_option_given_twice_or_misspelt_is_refused(synthetic_data, tmp_path) -> None:
    with pytest.raises(
        ValueError, match=re.escape("give the preset once: train(arrays, 'logreg') or preset='mlp'")
    ):
        mnistkit.train(synthetic_data, "logreg", preset="mlp")
    with pytest.raises(
        TypeError,
        match=r"^load_mnist\(\) got an unexpected keyword argument 'mirror'; did you mean mirrors=\?$",
    ):
        mnistkit.load_mnist(tmp_path, mirror="/somewhere")  # not only when a download is due
    assert not list(tmp_path.iterdir())


def test_presets_are_read_only_as_train_config_is() -> None:
    """`PRESETS["seed"].settings["epochs"] = 1` in a notebook was taken, and every later
    train(arrays, "seed") in the session trained one epoch."""
    preset = mnistkit.PRESETS["cnn"]
    for mapping, key in (
        (preset.settings, "epochs"),
        (preset.on_dataset["fashion-mnist"], "augment"),
        (mnistkit.PRESETS, "mine"),
    ):
        with pytest.raises(TypeError, match="does not support item assignment"):
            mapping[key] = 1
    config = mnistkit.TrainConfig(**{**preset.settings, "epochs": 1})  # a preset changed is a config
    assert config.epochs == 1 and config.channels == preset.settings["channels"]
