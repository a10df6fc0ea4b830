"""Checkpoints describe themselves, round-trip exactly, and refuse hostile files in one line."""

from __future__ import annotations

import contextlib
import json
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mnistkit.architectures import param_shapes
from mnistkit.checkpoint import FORMAT_VERSION, METADATA_KEY, load_checkpoint, save_checkpoint
from mnistkit.errors import MnistkitError

ARCHITECTURE = {"model": "mlp", "hidden": [8], "activation": "relu", "num_classes": 3}
METADATA = {
    "architecture": ARCHITECTURE,
    "normalization": {"kind": "standard", "mean": 0.13, "std": 0.31},
    "classes": [3, 5, 8],
    "config": {"epochs": 1},
    "metrics": {"test_accuracy": 0.5},
    "data_sha256": "0" * 64,
}


def make_params(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        name: rng.standard_normal(shape).astype(np.float32)
        for name, shape in param_shapes(ARCHITECTURE).items()
    }


def test_round_trip_keeps_tensors_metadata_and_optimizer_state(tmp_path: Path) -> None:
    params = make_params()
    optimizer_state = {"0.mu.dense_0.kernel": np.ones((784, 8), np.float32)}
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, params, METADATA, optimizer_state)
    loaded = load_checkpoint(path)
    assert set(loaded.params) == set(params)
    for name in params:
        np.testing.assert_array_equal(loaded.params[name], params[name])
    np.testing.assert_array_equal(loaded.optimizer_state["0.mu.dense_0.kernel"], 1.0)
    assert loaded.classes == [3, 5, 8]
    assert loaded.architecture == ARCHITECTURE
    assert loaded.metadata["format_version"] == 1  # MNIST's digits: as written before names came
    assert loaded.metadata["data_sha256"] == "0" * 64


def test_metadata_is_one_canonical_json_key(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, make_params(), METADATA)
    data = path.read_bytes()
    header = json.loads(data[8 : 8 + struct.unpack("<Q", data[:8])[0]])
    assert list(header["__metadata__"]) == [METADATA_KEY]
    text = header["__metadata__"][METADATA_KEY]
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))


def test_same_inputs_give_same_bytes(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "a.safetensors", make_params(), METADATA)
    save_checkpoint(tmp_path / "b.safetensors", make_params(), dict(reversed(list(METADATA.items()))))
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()


def test_probabilities_come_from_the_file_alone(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, make_params(), METADATA)
    images = np.random.default_rng(1).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    probabilities = load_checkpoint(path).predict_probabilities(images)
    assert probabilities.shape == (5, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)


def _valid_bytes(tmp_path: Path) -> bytes:
    path = tmp_path / "valid.safetensors"
    save_checkpoint(path, make_params(), METADATA)
    return path.read_bytes()


def _with_header(data: bytes, edit) -> bytes:
    length = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + length])
    edit(header)
    new_header = json.dumps(header).encode()
    new_header += b" " * ((8 - len(new_header) % 8) % 8)
    return struct.pack("<Q", len(new_header)) + new_header + data[8 + length :]


def _with_metadata(data: bytes, edit) -> bytes:
    def change(header):
        metadata = json.loads(header["__metadata__"][METADATA_KEY])
        edit(metadata)
        header["__metadata__"][METADATA_KEY] = json.dumps(metadata)

    return _with_header(data, change)


class _Exploit:
    def __reduce__(self):
        return (print, ("unpickled!",))


HOSTILE = {
    "empty": (lambda d: b"", "not a safetensors checkpoint"),
    "truncated": (lambda d: d[: len(d) // 2], "truncated or corrupted"),
    "header longer than file": (lambda d: struct.pack("<Q", 10**9) + d[8:], "exceeds the file"),
    "header not JSON": (lambda d: struct.pack("<Q", 16) + b"{not json at all" + d[24:], "not JSON"),
    "no metadata": (
        lambda d: _with_header(d, lambda h: h.pop("__metadata__")),
        "not an mnistkit checkpoint",
    ),
    "newer format": (
        lambda d: _with_metadata(d, lambda m: m.update(format_version=FORMAT_VERSION + 1)),
        "newer than this mnistkit reads",
    ),
    "wrong architecture": (
        lambda d: _with_metadata(d, lambda m: m["architecture"].update(hidden=[9])),
        "the architecture needs",
    ),
    "unknown model": (
        lambda d: _with_metadata(d, lambda m: m["architecture"].update(model="transformer")),
        "unknown model architecture",
    ),
    "classes disagree": (
        lambda d: _with_metadata(d, lambda m: m.update(classes=[1, 2])),
        "does not match its 2 classes",
    ),
    "pickle renamed": (lambda d: pickle.dumps(_Exploit()), "not a safetensors checkpoint"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_checkpoints_fail_with_one_line(tmp_path: Path, case: str, capsys) -> None:
    corrupt, message = HOSTILE[case]
    path = tmp_path / "bad.safetensors"
    path.write_bytes(corrupt(_valid_bytes(tmp_path)))
    with pytest.raises(MnistkitError, match=message) as raised:
        load_checkpoint(path)
    assert "\n" not in str(raised.value)
    assert str(path) in str(raised.value)
    assert "unpickled!" not in capsys.readouterr().out


def test_nan_weights_are_refused(tmp_path: Path) -> None:
    params = make_params()
    params["dense_1.bias"][0] = np.nan
    path = tmp_path / "nan.safetensors"
    with pytest.raises(MnistkitError, match="NaN"):
        save_checkpoint(path, params, METADATA)
    assert not path.exists()
    good = tmp_path / "good.safetensors"
    save_checkpoint(good, make_params(), METADATA)
    data = bytearray(good.read_bytes())
    length = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + length])
    start = 8 + length + header["dense_1.bias"]["data_offsets"][0]
    data[start : start + 4] = np.float32(np.nan).tobytes()
    good.write_bytes(bytes(data))
    with pytest.raises(MnistkitError, match=r"dense_1\.bias holds NaN"):
        load_checkpoint(good)


def test_dtype_mismatch_is_refused(tmp_path: Path) -> None:
    params = make_params()
    params["dense_0.bias"] = params["dense_0.bias"].astype(np.float64)
    with pytest.raises(MnistkitError, match=r"dense_0\.bias is float64"):
        save_checkpoint(tmp_path / "x.safetensors", params, METADATA)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(MnistkitError, match="no such file"):
        load_checkpoint(tmp_path / "absent.safetensors")
    with pytest.raises(MnistkitError, match="is a directory"):
        load_checkpoint(tmp_path)


@given(st.binary(max_size=2048))
def test_fuzz_any_bytes_load_or_raise_mnistkit_error(tmp_path_factory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "x.safetensors"
    path.write_bytes(data)
    with contextlib.suppress(MnistkitError):
        load_checkpoint(path)


@given(st.data())
def test_fuzz_mutated_checkpoint_loads_or_raises_mnistkit_error(tmp_path_factory, data) -> None:
    """Byte flips inside a real checkpoint reach deeper than random bytes do."""
    folder = tmp_path_factory.mktemp("mut")
    original = bytearray(_valid_bytes(folder))
    for _ in range(data.draw(st.integers(1, 8))):
        position = data.draw(st.integers(0, len(original) - 1))
        original[position] = data.draw(st.integers(0, 255))
    path = folder / "m.safetensors"
    path.write_bytes(bytes(original))
    with contextlib.suppress(MnistkitError):
        load_checkpoint(path)
