"""The .npz array file: exact round trip, validation, and never an unpickle."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from mnistkit.arrays import KEYS, load_arrays, save_arrays
from mnistkit.datasets import FASHION_MNIST
from mnistkit.errors import MnistkitError


def test_round_trip_is_exact_and_uncompressed(tmp_path: Path, synthetic_data) -> None:
    path = tmp_path / "mnist.npz"
    save_arrays(path, synthetic_data)
    loaded = load_arrays(path)
    assert sorted(loaded) == sorted(KEYS)
    for key in KEYS:
        assert loaded[key].dtype == np.uint8
        np.testing.assert_array_equal(loaded[key], synthetic_data[key])
    with zipfile.ZipFile(path) as archive:
        assert {info.compress_type for info in archive.infolist()} == {zipfile.ZIP_STORED}


def _broken(synthetic_data, **changes):
    arrays = dict(synthetic_data)
    for key, value in changes.items():
        if value is None:
            del arrays[key]
        else:
            arrays[key] = value
    return arrays


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"test_labels": None}, "missing arrays test_labels"),
        ({"train_images": np.zeros((600, 28, 28), np.float32)}, "dtype float32"),
        ({"train_images": np.zeros((600, 784), np.uint8)}, r"shape \(600, 784\)"),
        ({"train_labels": np.zeros(5, np.uint8)}, "to match train_images"),
        ({"test_labels": np.full(200, 10, np.uint8)}, "holds 10, outside 0-9"),
        ({"class_names": np.array(["a"] * 10)}, "class_names must be distinct; 'a' is there more than once"),
        ({"class_names": np.array(["a"])}, "class_names must be 2 to 1000 names, got 1"),
        (
            {"dataset": np.array("kmnist"), "class_names": np.array(FASHION_MNIST.class_names)},
            "class_names .T-shirt/top, Trouser, Pullover, .... are not Kuzushiji-MNIST's, the dataset it "
            "names; they are Fashion-MNIST's: dataset='fashion-mnist'",
        ),
        (  # a dataset of one's own, whose pictures a model would take as they are
            {"dataset": np.array("Fashion-MNIST")},
            "dataset 'Fashion-MNIST' is spelled 'fashion-mnist' .mnistkit's names are lower case.",
        ),
    ],
)
def test_bad_arrays_are_refused_with_one_line(tmp_path: Path, synthetic_data, changes, message) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **_broken(synthetic_data, **changes))
    with pytest.raises(MnistkitError, match=message) as raised:
        load_arrays(path)
    assert str(path) in str(raised.value)
    with pytest.raises(MnistkitError, match=message):
        save_arrays(tmp_path / "out.npz", _broken(synthetic_data, **changes))
    assert not (tmp_path / "out.npz").exists()


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_object_arrays_are_never_unpickled(tmp_path: Path, synthetic_data) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.npz"
    arrays = dict(synthetic_data)
    arrays["train_labels"] = np.array([_Exploit(marker)], dtype=object)
    np.savez(path, **arrays)
    with pytest.raises(MnistkitError, match="object arrays"):
        load_arrays(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("content", "message"), [(b"", "not a valid .npz"), (b"PK\x03\x04garbage", "not a valid .npz")]
)
def test_not_an_npz(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "x.npz"
    path.write_bytes(content)
    with pytest.raises(MnistkitError, match=message):
        load_arrays(path)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(MnistkitError, match="no such file"):
        load_arrays(tmp_path / "absent.npz")
    with pytest.raises(MnistkitError, match="is a directory"):
        load_arrays(tmp_path)
