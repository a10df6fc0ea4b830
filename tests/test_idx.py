"""The IDX reader: exact round trips, every corruption as one clear error, and fuzzing."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import lzma
import struct
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import idx_bytes
from hypothesis import given
from hypothesis import strategies as st

from mnistkit.api import load_dataset
from mnistkit.cli import cli
from mnistkit.datasets import MNIST_FILES
from mnistkit.decompress import MAX_GZIP_ZERO_PADDING
from mnistkit.errors import MnistkitError
from mnistkit.idx import read_idx, read_mnist_dir
from mnistkit.terms import command_line_terms


def _gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def _flip(data: bytes, index: int) -> bytes:
    changed = bytearray(data)
    changed[index] ^= 0xFF
    return bytes(changed)


def _invalid_deflate_block(gz_bytes: bytes) -> bytes:
    """Mark the first deflate block (right after the 10-byte gzip header) with the reserved type 3."""
    changed = bytearray(gz_bytes)
    changed[10] |= 0b110
    return bytes(changed)


def _with_label(labels: np.ndarray, index: int, value: int) -> np.ndarray:
    changed = labels.copy()
    changed[index] = value
    return changed


# (id, the array whose file is spoiled, its spoiled bytes, what the error says)
Corruption = tuple[str, str, Callable[[np.ndarray], bytes], str]
FILE_CORRUPTIONS: list[Corruption] = [
    ("gzip-truncated", "train_images", lambda a: _gz(idx_bytes(a))[:-40], "truncated gzip data"),
    ("gzip-crc", "train_labels", lambda a: _flip(_gz(idx_bytes(a)), -8), "CRC check failed"),
    ("gzip-length", "train_labels", lambda a: _flip(_gz(idx_bytes(a)), -4), "length check failed"),
    (
        "gzip-deflate",
        "test_images",
        lambda a: _invalid_deflate_block(_gz(idx_bytes(a))),
        "invalid block type",
    ),
    ("gzip-header", "test_labels", lambda a: b"\x1f\x8b\x09" + bytes(30), "corrupt gzip data"),
    ("gzip-trailing", "train_labels", lambda a: _gz(idx_bytes(a)) + b"junk", "after the gzip stream"),
    (
        "gzip-padding-then-junk",
        "test_labels",
        lambda a: _gz(idx_bytes(a)) + bytes(512) + b"x",
        "zero padding",
    ),
    (  # junk right after a MiB of padding is junk, not too much padding
        "gzip-junk-after-a-mib-of-padding",
        "test_labels",
        lambda a: _gz(idx_bytes(a)) + bytes(MAX_GZIP_ZERO_PADDING) + b"x",
        "trailing bytes after the gzip stream's zero padding",
    ),
    (
        "gzip-endless-zeros",
        "test_labels",
        lambda a: _gz(idx_bytes(a)) + bytes(MAX_GZIP_ZERO_PADDING + 1),
        "more than 1 MiB of zero bytes after the gzip stream",
    ),
    ("bad-magic", "test_images", lambda a: _gz(idx_bytes(a, magic=2052)), "magic number 2052"),
    ("float-magic", "train_labels", lambda a: idx_bytes(a, magic=0x0D01), "magic number 3329"),
    ("zero-dimension", "test_images", lambda a: _gz(idx_bytes(a[:0])), "zero dimension"),
    ("header-truncated", "test_images", lambda a: _gz(idx_bytes(a)[:10]), "ends inside the IDX header"),
    ("empty-file", "test_labels", lambda a: b"", "ends inside the IDX header (0 of 4"),
    ("data-truncated", "train_images", lambda a: _gz(idx_bytes(a)[:-100]), "truncated: data ends after"),
    ("data-truncated-raw", "train_labels", lambda a: idx_bytes(a)[:-3], "truncated: data ends after"),
    ("trailing-bytes", "train_images", lambda a: _gz(idx_bytes(a) + b"\x00"), "trailing bytes after the"),
    ("trailing-bytes-raw", "test_labels", lambda a: idx_bytes(a) + b"extra", "trailing bytes after the"),
    (
        "huge-declaration",
        "test_images",
        lambda a: struct.pack(">IIII", 2051, 2**31, 2**31, 28) + bytes(100),
        "MiB limit",
    ),
]
DIR_CORRUPTIONS: list[Corruption] = [
    (
        "label-out-of-range",
        "test_labels",
        lambda a: _gz(idx_bytes(_with_label(a, 3, 12))),
        "label 12 at index 3",
    ),
    ("counts-disagree", "train_labels", lambda a: _gz(idx_bytes(a[:-1])), "labels"),
    ("images-not-28x28", "test_images", lambda a: _gz(idx_bytes(a[:, :20, :20])), "expected 28x28"),
    (
        "labels-as-images",
        "train_images",
        lambda a: _gz(idx_bytes(np.zeros(len(a), np.uint8))),
        "holds labels",
    ),
]
CORRUPTIONS = FILE_CORRUPTIONS + DIR_CORRUPTIONS


def _small_array(key: str) -> np.ndarray:
    rng = np.random.default_rng(1)
    if key.endswith("images"):
        return rng.integers(0, 256, (12, 28, 28), dtype=np.uint8)
    return rng.integers(0, 10, 12, dtype=np.uint8)


def _assert_one_line_naming(error: pytest.ExceptionInfo[MnistkitError], path: Path, problem: str) -> None:
    message = str(error.value)
    assert "\n" not in message
    assert str(path) in message
    assert problem in message


@pytest.mark.parametrize("compress", [True, False], ids=["gz", "raw"])
@pytest.mark.parametrize("key", ["train_images", "train_labels"])
def test_read_idx_round_trips(tmp_path: Path, key: str, compress: bool) -> None:
    array = _small_array(key)
    path = tmp_path / "file.idx"
    path.write_bytes(_gz(idx_bytes(array)) if compress else idx_bytes(array))
    loaded = read_idx(path)
    assert loaded.dtype == np.uint8
    np.testing.assert_array_equal(loaded, array)


def test_multi_member_gzip_reads_as_one_stream(tmp_path: Path) -> None:
    data = idx_bytes(_small_array("train_images"))
    path = tmp_path / "two-members.gz"
    path.write_bytes(_gz(data[:1000]) + _gz(data[1000:]))
    np.testing.assert_array_equal(read_idx(path), _small_array("train_images"))


def test_zero_padding_after_the_gzip_stream_is_read_as_gunzip_reads_it(tmp_path: Path) -> None:
    """A file out of a tar archive or `dd conv=sync` ends in zeros up to a block: gunzip and
    Python's gzip read it, mnistkit called it trailing bytes."""
    path = tmp_path / "padded.gz"
    data = idx_bytes(_small_array("train_labels"))
    path.write_bytes(_gz(data) + bytes(10240 - len(_gz(data))))
    assert gzip.decompress(path.read_bytes()) == data
    np.testing.assert_array_equal(read_idx(path), _small_array("train_labels"))


@pytest.mark.parametrize(
    "case_id, key, spoil, problem", FILE_CORRUPTIONS, ids=[c[0] for c in FILE_CORRUPTIONS]
)
def test_each_file_corruption_is_one_line_naming_the_file(
    tmp_path: Path, case_id: str, key: str, spoil: Callable[[np.ndarray], bytes], problem: str
) -> None:
    path = tmp_path / MNIST_FILES[key]
    path.write_bytes(spoil(_small_array(key)))
    with pytest.raises(MnistkitError) as error:
        read_idx(path)
    _assert_one_line_naming(error, path, problem)


@pytest.mark.parametrize("case_id, key, spoil, problem", DIR_CORRUPTIONS, ids=[c[0] for c in DIR_CORRUPTIONS])
def test_each_dataset_inconsistency_is_one_line(
    small_raw_dir: Path,
    small_data: dict[str, np.ndarray],
    case_id: str,
    key: str,
    spoil: Callable[[np.ndarray], bytes],
    problem: str,
) -> None:
    path = small_raw_dir / MNIST_FILES[key]
    path.write_bytes(spoil(small_data[key]))
    with pytest.raises(MnistkitError) as error:
        read_mnist_dir(small_raw_dir)
    message = str(error.value)
    assert "\n" not in message and problem in message
    assert path.name in message


def test_missing_file_directory_and_folder(tmp_path: Path) -> None:
    with pytest.raises(MnistkitError, match="no such file"):
        read_idx(tmp_path / "absent.gz")
    with pytest.raises(MnistkitError, match="is a directory"):
        read_idx(tmp_path)
    with pytest.raises(MnistkitError, match="no such folder"):
        read_mnist_dir(tmp_path / "absent")
    with pytest.raises(MnistkitError, match=r"train-images-idx3-ubyte\.gz: no such file"):
        read_mnist_dir(tmp_path)


def test_read_mnist_dir_matches_the_arrays_written(
    small_raw_dir: Path, small_data: dict[str, np.ndarray]
) -> None:
    arrays = read_mnist_dir(small_raw_dir)
    assert sorted(arrays) == sorted(small_data)
    for key, array in small_data.items():
        np.testing.assert_array_equal(arrays[key], array)


@pytest.mark.parametrize("suffix", ["", ".xz"])
def test_plain_and_xz_files_are_found_under_their_own_names(
    small_raw_dir: Path, small_data: dict[str, np.ndarray], suffix: str
) -> None:
    """`xz` of the unpacked files gives `train-images-idx3-ubyte.xz`: it was read only when
    named `.gz`, and parse-to-npz said the folder held no such file."""
    compress = lzma.compress if suffix else bytes
    for name in MNIST_FILES.values():
        compressed = small_raw_dir / name
        compressed.with_suffix(suffix).write_bytes(compress(gzip.decompress(compressed.read_bytes())))
        compressed.unlink()
    np.testing.assert_array_equal(read_mnist_dir(small_raw_dir)["test_images"], small_data["test_images"])
    result = CliRunner().invoke(cli, ["parse-to-npz", str(small_raw_dir), "-o", str(small_raw_dir / "x.npz")])
    assert result.exit_code == 0, result.output
    assert load_dataset(folder=small_raw_dir)["test_labels"].tolist() == small_data["test_labels"].tolist()


def test_a_file_kept_both_compressed_and_not_is_read_only_where_both_agree(
    small_raw_dir: Path, small_data: dict[str, np.ndarray]
) -> None:
    """`gunzip -k` keeps both forms; the compressed one was read without a word where the
    other had been edited since."""
    labels = small_raw_dir / MNIST_FILES["test_labels"]
    plain = labels.with_suffix("")
    plain.write_bytes(gzip.decompress(labels.read_bytes()))
    np.testing.assert_array_equal(read_mnist_dir(small_raw_dir)["test_labels"], small_data["test_labels"])
    edited = bytearray(plain.read_bytes())
    edited[-1] = (edited[-1] + 1) % 10
    plain.write_bytes(edited)
    result = CliRunner().invoke(cli, ["parse-to-npz", str(small_raw_dir), "-o", str(small_raw_dir / "x.npz")])
    assert result.exit_code == 1 and result.stderr == (
        f"Error: {plain}: holds other data than {labels.name} beside it, which would be read; "
        "keep only the one you mean\n"
    )
    assert not (small_raw_dir / "x.npz").exists()


def _peak_traced_bytes(action: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        with pytest.raises(MnistkitError):
            action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_header_declaring_much_more_than_the_file_holds_allocates_only_what_is_there(
    tmp_path: Path,
) -> None:
    path = tmp_path / "liar.idx"
    path.write_bytes(struct.pack(">IIII", 2051, 300_000, 28, 28) + bytes(1000))
    assert _peak_traced_bytes(lambda: read_idx(path)) < 4 << 20


def test_a_gzip_tail_is_never_decompressed(tmp_path: Path) -> None:
    """40 MB of zeros behind ten declared labels: the reader stops one byte past them."""
    deflate = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
    parts = [deflate.compress(idx_bytes(np.arange(10, dtype=np.uint8)))]
    parts += [deflate.compress(bytes(1 << 20)) for _ in range(40)]
    path = tmp_path / "bomb.gz"
    path.write_bytes(b"".join(parts) + deflate.flush())
    peak = _peak_traced_bytes(lambda: read_idx(path))
    assert peak < 4 << 20
    with pytest.raises(MnistkitError, match="trailing bytes"):
        read_idx(path)


@pytest.fixture(scope="module")
def fuzz_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "input.idx"


def _parses_or_refuses(path: Path, data: bytes) -> None:
    """The property: an array consistent with the bytes, or a one-line MnistkitError."""
    path.write_bytes(data)
    try:
        array = read_idx(path)
    except MnistkitError as error:
        assert "\n" not in str(error) and str(path) in str(error)
        return
    assert array.dtype == np.uint8 and array.ndim in (1, 3)
    content = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    assert content[4 + 4 * array.ndim :] == array.tobytes()


@given(data=st.binary(max_size=4096))
def test_fuzz_any_bytes_parse_or_raise_mnistkit_error(fuzz_path: Path, data: bytes) -> None:
    _parses_or_refuses(fuzz_path, data)


@st.composite
def _mutated_idx_files(draw: st.DrawFn) -> bytes:
    """A valid IDX file, maybe gzipped, then a few byte flips, cuts, insertions or tails."""
    count = draw(st.integers(1, 6))
    if draw(st.booleans()):
        rows, columns = draw(st.integers(1, 30)), draw(st.integers(1, 30))
        array = np.frombuffer(
            draw(st.binary(min_size=count * rows * columns, max_size=count * rows * columns)), np.uint8
        )
        data = idx_bytes(array.reshape(count, rows, columns))
    else:
        data = idx_bytes(
            np.array(draw(st.lists(st.integers(0, 255), min_size=count, max_size=count)), np.uint8)
        )
    if draw(st.booleans()):
        data = _gz(data)
    for _ in range(draw(st.integers(0, 3))):
        position = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["flip", "cut", "insert", "append"]))
        if action == "flip" and position < len(data):
            data = _flip(data, position)
        elif action == "cut":
            data = data[:position]
        elif action == "insert":
            data = data[:position] + draw(st.binary(min_size=1, max_size=8)) + data[position:]
        else:
            data = data + draw(st.binary(min_size=1, max_size=64))
    return data


@given(data=_mutated_idx_files())
def test_fuzz_mutated_idx_files_parse_or_raise_mnistkit_error(fuzz_path: Path, data: bytes) -> None:
    _parses_or_refuses(fuzz_path, data)


# Every IDX type code, xz, and the layouts of MNIST's siblings ------------------------------

TYPED_ARRAYS = {
    "uint8": np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
    "int8": np.array([-128, -1, 0, 127], np.int8),
    "int16": np.array([[-32768, 7], [300, 32767]], np.int16),
    "int32": np.array([[3, 1, 2_000_000_000, -5, 0, 9, 1, 0]] * 3, np.int32),
    "float32": np.array([0.5, -1.25, np.inf], np.float32),
    "float64": np.array([[1e300, -0.0]], np.float64),
}


@pytest.mark.parametrize("compression", ["raw", "gz", "xz"])
@pytest.mark.parametrize("kind", sorted(TYPED_ARRAYS))
def test_every_type_code_round_trips(tmp_path: Path, kind: str, compression: str) -> None:
    array = TYPED_ARRAYS[kind]
    data = idx_bytes(array)
    data = {"raw": data, "gz": _gz(data), "xz": lzma.compress(data)}[compression]
    path = tmp_path / "typed.idx"
    path.write_bytes(data)
    loaded = read_idx(path, magics=None)
    assert loaded.dtype == array.dtype and loaded.dtype.isnative
    np.testing.assert_array_equal(loaded, array)
    with pytest.raises(MnistkitError, match=r"is not an MNIST IDX file") if kind != "uint8" else _no_error():
        read_idx(path)  # MNIST's reader takes uint8 images or labels only


@contextlib.contextmanager
def _no_error():
    yield


XZ_CORRUPTIONS = [
    ("xz-truncated", lambda xz: xz[:-12], "truncated xz data"),
    ("xz-trailing", lambda xz: xz + b"junk", "trailing bytes after the xz stream"),
    ("xz-flipped", lambda xz: _flip(xz, len(xz) // 2), "corrupt xz data"),
    ("xz-second-stream", lambda xz: xz + xz, "trailing bytes after the xz stream"),
]


@pytest.mark.parametrize("case_id, spoil, problem", XZ_CORRUPTIONS, ids=[c[0] for c in XZ_CORRUPTIONS])
def test_each_xz_corruption_is_one_line_naming_the_file(
    tmp_path: Path, case_id: str, spoil: Callable[[bytes], bytes], problem: str
) -> None:
    path = tmp_path / "labels.xz"
    path.write_bytes(spoil(lzma.compress(idx_bytes(TYPED_ARRAYS["int32"]))))
    with pytest.raises(MnistkitError) as error:
        read_idx(path, magics=None)
    _assert_one_line_naming(error, path, problem)


@pytest.mark.parametrize(
    "magic, problem",
    [(0x0A01, "is not an IDX file"), (0x01080100, "is not an IDX file"), (0x0800, "is not an IDX file")],
    ids=["unknown-type", "nonzero-first-bytes", "no-dimensions"],
)
def test_any_type_still_needs_a_valid_magic(tmp_path: Path, magic: int, problem: str) -> None:
    path = tmp_path / "bad.idx"
    path.write_bytes(struct.pack(">II", magic, 1) + bytes(8))
    with pytest.raises(MnistkitError) as error:
        read_idx(path, magics=None)
    _assert_one_line_naming(error, path, problem)


def test_an_xz_bomb_is_never_decompressed(tmp_path: Path) -> None:
    """40 MB of zeros behind ten declared labels, xz-compressed (1 MiB dictionary): the reader
    stops one byte past them."""
    path = tmp_path / "bomb.xz"
    path.write_bytes(lzma.compress(idx_bytes(np.arange(10, dtype=np.uint8)) + bytes(40 << 20), preset=1))
    assert _peak_traced_bytes(lambda: read_idx(path)) < 4 << 20


def test_an_xz_file_declaring_a_huge_dictionary_is_refused(tmp_path: Path, monkeypatch) -> None:
    """The decoder would allocate the dictionary the header declares; the limit (128 MiB, here
    lowered to 1 MiB against `xz -6`'s 8 MiB) refuses it before any allocation."""
    monkeypatch.setattr("mnistkit.decompress.XZ_MEMORY_LIMIT_BYTES", 1 << 20)
    path = tmp_path / "big-dictionary.xz"
    path.write_bytes(lzma.compress(idx_bytes(np.arange(10, dtype=np.uint8))))
    with pytest.raises(MnistkitError) as error:
        read_idx(path)
    _assert_one_line_naming(error, path, "xz data that needs more than 1 MiB to decompress")


def _qmnist_dir(tmp_path: Path, train_table: np.ndarray, test_table: np.ndarray) -> Path:
    raw = tmp_path / "qmnist"
    raw.mkdir()
    rng = np.random.default_rng(3)
    for split, table in (("train", train_table), ("test", test_table)):
        images = rng.integers(0, 256, (len(table), 28, 28), dtype=np.uint8)
        (raw / f"qmnist-{split}-images-idx3-ubyte.gz").write_bytes(_gz(idx_bytes(images)))
        (raw / f"qmnist-{split}-labels-idx2-int.gz").write_bytes(_gz(idx_bytes(table)))
    return raw


def _qmnist_table(count: int, seed: int = 0) -> np.ndarray:
    """QMNIST's eight label columns, the first the digit."""
    rng = np.random.default_rng(seed)
    table = rng.integers(0, 100_000, (count, 8)).astype(np.int32)
    table[:, 0] = rng.integers(0, 10, count)
    return table


def test_qmnist_labels_are_the_first_of_eight_int32_columns(tmp_path: Path) -> None:
    train, test = _qmnist_table(12), _qmnist_table(5, seed=1)
    raw = _qmnist_dir(tmp_path, train, test)
    arrays = read_mnist_dir(raw, "qmnist")
    assert arrays["train_labels"].dtype == np.uint8
    np.testing.assert_array_equal(arrays["train_labels"], train[:, 0])
    assert "train_label_columns" not in arrays and str(arrays["dataset"]) == "qmnist"
    kept = read_mnist_dir(raw, "qmnist", label_columns=True)
    np.testing.assert_array_equal(kept["test_label_columns"], test)
    assert list(kept["label_column_names"])[:3] == ["class", "hsf_series", "writer_id"]
    with pytest.raises(MnistkitError, match="has one label per image"):
        read_mnist_dir(raw, "mnist", label_columns=True)


@pytest.mark.parametrize(
    "table, problem",
    [
        (_qmnist_table(12)[:, :7], "labels have 7 columns, expected 8"),
        (
            np.where(np.arange(8) == 0, 10, _qmnist_table(12)).astype(np.int32),
            "label 10 at index 0 is outside 0-9 (12 of 12 labels out of range)",
        ),
        (_qmnist_table(12)[:, 0].astype(np.uint8), "holds labels (magic 2049), not int32 label columns"),
    ],
    ids=["seven-columns", "class-out-of-range", "one-dimensional"],
)
def test_qmnist_label_faults_are_one_line(tmp_path: Path, table: np.ndarray, problem: str) -> None:
    raw = _qmnist_dir(tmp_path, table, _qmnist_table(5))
    with pytest.raises(MnistkitError) as error:
        read_mnist_dir(raw, "qmnist")
    _assert_one_line_naming(error, raw / "qmnist-train-labels-idx2-int.gz", problem)
    if "columns" in problem or "outside" in problem:  # a damaged or other file: fetch puts it right
        assert "mnistkit.download(" in str(error.value) and "puts a verified copy there" in str(error.value)


def test_emnist_images_turn_upright_and_letters_count_from_zero(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    upright = {
        split: rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        for split, count in (("train", 9), ("test", 4))
    }
    labels = {"train": np.arange(1, 10, dtype=np.uint8), "test": np.array([26, 1, 2, 3], np.uint8)}
    raw = tmp_path / "letters"
    raw.mkdir()
    for split in ("train", "test"):
        stored = upright[split].transpose(0, 2, 1)  # as EMNIST stores them
        (raw / f"emnist-letters-{split}-images-idx3-ubyte.gz").write_bytes(_gz(idx_bytes(stored)))
        (raw / f"emnist-letters-{split}-labels-idx1-ubyte.gz").write_bytes(_gz(idx_bytes(labels[split])))
    arrays = read_mnist_dir(raw, "emnist-letters")
    np.testing.assert_array_equal(arrays["train_images"], upright["train"])
    assert arrays["test_labels"].tolist() == [25, 0, 1, 2]
    names = [str(name) for name in arrays["class_names"]]
    assert names[0] == "a" and names[25] == "z" and len(names) == 26
    (raw / "emnist-letters-test-labels-idx1-ubyte.gz").write_bytes(
        _gz(idx_bytes(np.array([0, 1, 2, 3], np.uint8)))
    )
    with pytest.raises(MnistkitError, match="label 0 at index 0 is outside 1-26"):
        read_mnist_dir(raw, "emnist-letters")


def _parses_any_type_or_refuses(path: Path, data: bytes) -> None:
    """The property for every type code: an array consistent with the bytes, or one line."""
    path.write_bytes(data)
    try:
        array = read_idx(path, magics=None)
    except MnistkitError as error:
        assert "\n" not in str(error) and str(path) in str(error)
        return
    content = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    content = lzma.decompress(content) if content[:6] == b"\xfd7zXZ\x00" else content
    assert (
        array.dtype.isnative
        and content[4 + 4 * array.ndim :] == array.astype(array.dtype.newbyteorder(">")).tobytes()
    )


@given(data=st.binary(max_size=4096))
def test_fuzz_any_bytes_parse_as_any_type_or_raise_mnistkit_error(fuzz_path: Path, data: bytes) -> None:
    _parses_any_type_or_refuses(fuzz_path, data)


@st.composite
def _mutated_typed_files(draw: st.DrawFn) -> bytes:
    """A valid IDX file of any type code and 1-3 dimensions, maybe gzip or xz, then a few mutations."""
    dtype = draw(st.sampled_from([np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]))
    shape = tuple(draw(st.lists(st.integers(1, 6), min_size=1, max_size=3)))
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    array = np.frombuffer(draw(st.binary(min_size=size, max_size=size)), dtype).reshape(shape)
    data = idx_bytes(array)
    data = draw(st.sampled_from([lambda d: d, _gz, lzma.compress]))(data)
    for _ in range(draw(st.integers(0, 3))):
        position = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["flip", "cut", "append"]))
        if action == "flip" and position < len(data):
            data = _flip(data, position)
        elif action == "cut":
            data = data[:position]
        else:
            data = data + draw(st.binary(min_size=1, max_size=16))
    return data


@given(data=_mutated_typed_files())
def test_fuzz_mutated_typed_files_parse_or_raise_mnistkit_error(fuzz_path: Path, data: bytes) -> None:
    _parses_any_type_or_refuses(fuzz_path, data)


def test_another_datasets_file_is_known_by_its_content(synthetic_raw_dir: Path, monkeypatch) -> None:
    """The content's SHA-256 is taken from the parsed array (header and data as the IDX file
    has them): the same as the decompressed file's, so a file published for one dataset is
    refused under another's name, and passes under its own."""
    import hashlib

    from mnistkit import idx

    name = MNIST_FILES["train_images"]
    content = hashlib.sha256(gzip.decompress((synthetic_raw_dir / name).read_bytes())).hexdigest()
    monkeypatch.setattr(idx, "known_content", lambda digest: (("mnist", name),) if digest == content else ())
    with pytest.raises(
        MnistkitError, match=f"{name}: holds MNIST's {name}, not Fashion-MNIST's; read it with"
    ) as raised:
        read_mnist_dir(synthetic_raw_dir, "fashion-mnist")
    assert f"`mnistkit.load_dataset('mnist', '{synthetic_raw_dir}')`" in str(raised.value)  # from Python
    with command_line_terms(), pytest.raises(MnistkitError, match=r"read it with `mnistkit parse-to-npz`"):
        read_mnist_dir(synthetic_raw_dir, "fashion-mnist")
    assert read_mnist_dir(synthetic_raw_dir, "mnist")["train_images"].shape[1:] == (28, 28)


def test_a_folder_mixing_two_datasets_is_named_so_not_sent_back_and_forth(
    synthetic_raw_dir: Path, monkeypatch
) -> None:
    """Fashion-MNIST's training files beside MNIST's test files: read as MNIST, the hint said
    to read them as Fashion-MNIST, and read so, to read them as MNIST."""
    from mnistkit import idx

    def content(name: str) -> str:
        return hashlib.sha256(gzip.decompress((synthetic_raw_dir / name).read_bytes())).hexdigest()

    published = {
        content(MNIST_FILES[f"train_{kind}"]): (("fashion-mnist", MNIST_FILES[f"train_{kind}"]),)
        for kind in ("images", "labels")
    }
    published |= {
        content(MNIST_FILES[f"test_{kind}"]): (("mnist", MNIST_FILES[f"test_{kind}"]),)
        for kind in ("images", "labels")
    }
    monkeypatch.setattr(idx, "known_content", lambda digest: published.get(digest, ()))
    train, test = MNIST_FILES["train_images"], MNIST_FILES["test_images"]
    for dataset, first, other, title in (
        ("mnist", train, test, "MNIST"),
        ("fashion-mnist", test, train, "Fashion-MNIST"),
    ):
        with command_line_terms(), pytest.raises(MnistkitError) as refused:
            read_mnist_dir(synthetic_raw_dir, dataset)
        message = str(refused.value)
        assert message.startswith(f"{synthetic_raw_dir / first}: holds ")
        assert f"and {other} is " in message and "the folder mixes datasets" in message
        assert "read it with" not in message and f"puts {title}'s files here" in message


def test_the_test_splits_file_under_the_training_splits_name_is_refused(
    synthetic_raw_dir: Path, monkeypatch
) -> None:
    """Swapped train and test files parsed silently: a model then trained on the 10,000 test
    digits and was scored on the 60,000 training digits."""
    from mnistkit import idx

    name, test_name = MNIST_FILES["train_images"], MNIST_FILES["test_images"]
    content = hashlib.sha256(gzip.decompress((synthetic_raw_dir / name).read_bytes())).hexdigest()
    published = {content: (("mnist", test_name),)}
    monkeypatch.setattr(idx, "known_content", lambda digest: published.get(digest, ()))
    with command_line_terms(), pytest.raises(MnistkitError) as refused:
        read_mnist_dir(synthetic_raw_dir, "mnist")
    assert str(refused.value) == (
        f"{synthetic_raw_dir / name}: holds MNIST's {test_name}, not its {name}: are the training and test "
        f"files swapped? (`mnistkit fetch --force --out {synthetic_raw_dir}` puts verified copies there)"
    )
    with pytest.raises(MnistkitError) as refused:  # from Python: the call that does it
        read_mnist_dir(synthetic_raw_dir, "mnist")
    assert str(refused.value).endswith(
        f"(`mnistkit.download('{synthetic_raw_dir}', force=True)` puts verified copies there)"
    )
