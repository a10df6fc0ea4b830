"""The IDX file format of MNIST and its siblings, read strictly.

An IDX file is a big-endian header (two zero bytes, a type code, the number of
dimensions, then each dimension as a uint32) followed by exactly the data it declares.
The type codes are 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32 and
0x0E float64; MNIST uses uint8 only, QMNIST's labels are int32 with two dimensions.
Files may be gzip- or xz-compressed (detected by their magic bytes, not the name).
Decompression streams and stops one byte past what the header declares, so a bomb or
an endless tail costs at most that byte; any fault is a one-line `MnistkitError` naming
the file. Payloads above MAX_DATA_BYTES (1 GiB, twice EMNIST's largest) are refused.
"""

from __future__ import annotations

import hashlib
import math
import os
import struct
from collections.abc import Collection
from pathlib import Path
from typing import BinaryIO

import numpy as np

from mnistkit.datasets import (
    DATASETS,
    DEFAULT_DATASET,
    IMAGE_SHAPE,
    DatasetSpec,
    dataset_option,
    dataset_spec,
    fetch_call,
    known_content,
)
from mnistkit.decompress import CorruptData, GunzipStream, UnxzStream, decompressed
from mnistkit.errors import MnistkitError
from mnistkit.inputs import open_input
from mnistkit.terms import on_command_line

# Each IDX type code and the big-endian dtype of its values.
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
IMAGES_MAGIC = 0x0803  # 2051: uint8, (count, rows, columns)
LABELS_MAGIC = 0x0801  # 2049: uint8, (count,)
TABLE_LABELS_MAGIC = 0x0C02  # 3074: int32, (count, columns), QMNIST's
MAGIC_NAMES = {IMAGES_MAGIC: "images", LABELS_MAGIC: "labels", TABLE_LABELS_MAGIC: "int32 label columns"}
MNIST_MAGICS = (IMAGES_MAGIC, LABELS_MAGIC)
MAX_DATA_BYTES = 1 << 30
_CHUNK_BYTES = 1 << 20
Stream = BinaryIO | GunzipStream | UnxzStream


def read_idx(path: str | os.PathLike[str], magics: Collection[int] | None = MNIST_MAGICS) -> np.ndarray:
    """Read an IDX file, compressed (gzip, xz) or raw, whose magic number is one of `magics`:
    MNIST's by default (images 2051, labels 2049); None takes every IDX type code and any
    number of dimensions.

    Returns an array shaped as the header declares, in native byte order: uint8 (count,
    rows, columns) for images, (count,) for labels.
    """
    path = Path(path)
    try:
        with open_input(path, "an IDX file") as raw_handle:
            return _read_idx_stream(decompressed(raw_handle), path, magics)
    except CorruptData as error:
        raise MnistkitError(f"{path}: {error}") from None
    except OSError as error:
        raise MnistkitError(f"{path}: cannot read: {error.strerror or error}") from None


def _read_exactly(stream: Stream, size: int) -> bytearray:
    """Up to `size` bytes, fewer only at the end of the stream (decompressed reads come in pieces)."""
    data = bytearray()
    while len(data) < size:
        chunk = stream.read(min(_CHUNK_BYTES, size - len(data)))
        if not chunk:
            break
        data += chunk
    return data


def magic_of(array: np.ndarray) -> int:
    """The IDX magic number of an array: its type code and number of dimensions."""
    codes = {np.dtype(dtype).newbyteorder("="): code for code, dtype in IDX_TYPES.items()}
    return codes[array.dtype.newbyteorder("=")] << 8 | array.ndim


def _magic_problem(magic: int, magics: Collection[int] | None) -> str | None:
    if magics is not None:
        if magic in magics:
            return None
        expected = " or ".join(f"{m} ({MAGIC_NAMES.get(m, f'0x{m:08x}')})" for m in magics)
        kind = "an MNIST IDX file" if tuple(magics) == MNIST_MAGICS else "an IDX file of the kind expected"
        return f"is not {kind}; expected {expected}"
    if magic >> 16 or (magic >> 8) not in IDX_TYPES or magic & 0xFF == 0:
        return (
            "is not an IDX file (expected two zero bytes, a type code "
            f"{', '.join(f'0x{code:02X}' for code in IDX_TYPES)} and one or more dimensions)"
        )
    return None


def _read_idx_stream(stream: Stream, path: Path, magics: Collection[int] | None) -> np.ndarray:
    magic_bytes = _read_exactly(stream, 4)
    if len(magic_bytes) < 4:
        raise MnistkitError(f"{path}: file ends inside the IDX header ({len(magic_bytes)} of 4 magic bytes)")
    (magic,) = struct.unpack(">I", magic_bytes)
    problem = _magic_problem(magic, magics)
    if problem is not None:
        raise MnistkitError(f"{path}: magic number {magic} (0x{magic:08x}) {problem}")
    dtype = np.dtype(IDX_TYPES[magic >> 8])
    ndim = magic & 0xFF
    header_bytes = _read_exactly(stream, 4 * ndim)
    if len(header_bytes) < 4 * ndim:
        raise MnistkitError(
            f"{path}: file ends inside the IDX header ({4 + len(header_bytes)} of {4 + 4 * ndim} bytes)"
        )
    shape = struct.unpack(f">{ndim}I", header_bytes)
    if 0 in shape:
        raise MnistkitError(f"{path}: header declares a zero dimension {shape}")
    data_bytes = math.prod(shape) * dtype.itemsize
    if data_bytes > MAX_DATA_BYTES:
        raise MnistkitError(
            f"{path}: header declares {shape} = {data_bytes} bytes of data, "
            f"more than the {MAX_DATA_BYTES >> 20} MiB limit"
        )
    data = _read_exactly(stream, data_bytes)
    if len(data) < data_bytes:
        raise MnistkitError(
            f"{path}: truncated: data ends after {len(data)} of the {data_bytes} bytes the header declares"
        )
    if stream.read(1):
        raise MnistkitError(f"{path}: trailing bytes after the {data_bytes} data bytes the header declares")
    array = np.frombuffer(data, dtype=dtype).reshape(shape)
    return array if dtype.itemsize == 1 else array.astype(dtype.newbyteorder("="))


def idx_files(raw_dir: str | os.PathLike[str], dataset: str = DEFAULT_DATASET) -> list[Path]:
    """The four files `read_mnist_dir` reads in `raw_dir`, each compressed or not as found."""
    return [_idx_file(Path(raw_dir), name) for name in dataset_spec(dataset).files.values()]


def _idx_file(raw_dir: Path, name: str) -> Path:
    """`name` (published gzip-compressed) as `raw_dir` holds it: so named, decompressed, or
    compressed with xz instead (the reader tells the compression from the bytes); the
    published name where it holds none of them."""
    return next(iter(_idx_forms(raw_dir, name)), raw_dir / name)


def _idx_forms(raw_dir: Path, name: str) -> list[Path]:
    """Each form of `name` that `raw_dir` holds, the one read first."""
    stem = name.removesuffix(".gz")
    return [raw_dir / candidate for candidate in (name, stem, f"{stem}.xz") if (raw_dir / candidate).exists()]


def _check_forms_agree(raw_dir: Path, name: str, array: np.ndarray) -> None:
    """A file kept both compressed and not (`gunzip -k`) is read once; where the two hold
    different data (one edited or replaced), which is meant is the user's to say."""
    read, *others = _idx_forms(raw_dir, name)
    for other in others:
        held = read_idx(other, (*MNIST_MAGICS, TABLE_LABELS_MAGIC))
        if held.dtype != array.dtype or not np.array_equal(held, array):
            raise MnistkitError(
                f"{other}: holds other data than {read.name} beside it, which would be read; "
                "keep only the one you mean"
            )


def _read_kind(path: Path, magic: int) -> np.ndarray:
    """Read an IDX file that must hold `magic`'s kind; naming the kind it holds instead."""
    array = read_idx(path, tuple(dict.fromkeys([*MNIST_MAGICS, magic])))
    found = magic_of(array)
    if found != magic:
        raise MnistkitError(
            f"{path}: holds {MAGIC_NAMES[found]} (magic {found}), not {MAGIC_NAMES[magic]} (magic {magic})"
        )
    return array


def published_as(array: np.ndarray) -> tuple[tuple[str, str], ...]:
    """Each (dataset, file name) whose published file holds `array`: the SHA-256 of the array
    written as an IDX file, against the published decompressed contents' hashes."""
    content = hashlib.sha256(struct.pack(">I", magic_of(array)))
    content.update(struct.pack(f">{array.ndim}I", *array.shape))
    content.update(np.ascontiguousarray(array, array.dtype.newbyteorder(">")).data)
    return known_content(content.hexdigest())


def _check_whose(path: Path, array: np.ndarray, spec: DatasetSpec, expected_name: str) -> None:
    """Refuse another dataset's file under this one's name (MNIST's digits parsed as
    Fashion-MNIST would be clothes labelled with digits' classes), and the test split's file
    under the training split's name or the other way round (a model would train on the test
    digits). Unknown files are the user's own data, and pass."""
    known = published_as(array)
    if not known or (spec.name, expected_name) in known:
        return
    refetch = fetch_call(spec.name, path.parent, force=True)
    dataset, name = next(((d, n) for d, n in known if d == spec.name), known[0])
    if dataset == spec.name:
        raise MnistkitError(
            f"{path}: holds {spec.title}'s {name}, not its {expected_name}: are the training and "
            f"test files swapped? (`{refetch}` puts verified copies there)"
        )
    found = f"{path}: holds {dataset_spec(dataset).title}'s {name}, not {spec.title}'s"
    mixed = _files_of_another_dataset(path, spec, dataset)
    if mixed:  # no --dataset reads this folder: each hint would send the user to the other
        raise MnistkitError(
            f"{found}, and {mixed}: the folder mixes datasets; fetch each into a folder of its "
            f"own (`{refetch}` puts {spec.title}'s files here)"
        )
    raise MnistkitError(
        f"{found}; read it with `{_parse_call(dataset, path.parent)}`, or fetch {spec.title} into "
        f"another folder (or over these files: `{refetch}`)"
    )


def _files_of_another_dataset(path: Path, spec: DatasetSpec, dataset: str) -> str:
    """The first other file of `path`'s folder (by `spec`'s names) that is a published file
    of a dataset other than `dataset`, as "NAME is TITLE's"; "" when there is none."""
    for name in spec.files.values():
        other = _idx_file(path.parent, name)
        if other == path or not other.is_file():
            continue
        try:
            known = published_as(read_idx(other, (*MNIST_MAGICS, TABLE_LABELS_MAGIC)))
        except MnistkitError:
            continue  # its own problem is told when its turn comes
        if known and dataset not in {whose for whose, _ in known}:
            return f"{other.name} is {dataset_spec(known[0][0]).title}'s"
    return ""


def _dataset_held(raw_dir: Path) -> DatasetSpec | None:
    """The one dataset whose four files (by name) `raw_dir` holds; None where none is, or
    where the names are several datasets' (MNIST's are Fashion-MNIST's and KMNIST's too)."""
    held = [
        spec
        for spec in DATASETS.values()
        if all(_idx_file(raw_dir, name).exists() for name in spec.files.values())
    ]
    return held[0] if len(held) == 1 else None


def _refetch_hint(raw_dir: Path, spec: DatasetSpec) -> str:
    return f"; `{fetch_call(spec.name, raw_dir)}` puts a verified copy there"


def _parse_call(name: str, folder: Path) -> str:
    """What reads a folder of this dataset's IDX files: `parse-to-npz` in a shell,
    `load_dataset` from Python."""
    if on_command_line():
        return f"mnistkit parse-to-npz{dataset_option(name)}"
    return f"mnistkit.load_dataset({name!r}, {str(folder)!r})"


def _class_labels(labels_path: Path, table: np.ndarray, spec: DatasetSpec, hint: str) -> np.ndarray:
    """The class of each image, numbered from 0: QMNIST's first label column, EMNIST letters' label - 1.
    A refusal ends with `hint`, how to put a verified copy there."""
    if spec.label_columns:
        if table.shape[1] != len(spec.label_columns):
            raise MnistkitError(
                f"{labels_path}: labels have {table.shape[1]} columns, expected {len(spec.label_columns)} "
                f"({', '.join(spec.label_columns)}){hint}"
            )
        table = table[:, 0]
    low, high = spec.label_offset, spec.label_offset + len(spec.class_names) - 1
    out_of_range = np.flatnonzero((table < low) | (table > high))
    if out_of_range.size:
        index = int(out_of_range[0])
        raise MnistkitError(
            f"{labels_path}: label {int(table[index])} at index {index} is outside {low}-{high} "
            f"({out_of_range.size} of {table.size} labels out of range){hint}"
        )
    return (table - spec.label_offset).astype(np.uint8)


def read_mnist_dir(
    raw_dir: str | os.PathLike[str], dataset: str = DEFAULT_DATASET, label_columns: bool = False
) -> dict[str, np.ndarray]:
    """Read a dataset's four IDX files in `raw_dir` into the arrays of the `.npz` file.

    Checks what a single file cannot: 28x28 images, labels within the dataset's classes,
    and as many labels as images in each split. EMNIST's images are turned upright, and its
    letters numbered from 0. Every dataset but MNIST also gets its name (`dataset`) and its
    `class_names`; an `.npz` without them holds MNIST. With `label_columns`, QMNIST's whole
    label table is kept too (`{split}_label_columns`, int32, named by `label_column_names`).
    """
    spec = dataset_spec(dataset)
    raw_dir = Path(raw_dir)
    if raw_dir.is_file():
        option = dataset_option(spec.name)
        raise MnistkitError(
            f"{raw_dir}: is a file; parse-to-npz reads the folder holding the four {spec.title} IDX files "
            f"(`mnistkit fetch{option} --out data/raw` fills one: "
            f"mnistkit parse-to-npz{option} data/raw -o data/{spec.name}.npz)"
        )
    if not raw_dir.is_dir():
        raise MnistkitError(f"{raw_dir}: no such folder (expected the four {spec.title} IDX files in it)")
    if label_columns and not spec.label_columns:
        raise MnistkitError(f"--label-columns: {spec.name} has one label per image and no other columns")
    arrays = {}
    for split in ("train", "test"):
        images_path = _idx_file(raw_dir, spec.files[f"{split}_images"])
        labels_path = _idx_file(raw_dir, spec.files[f"{split}_labels"])
        try:
            images = _read_kind(images_path, IMAGES_MAGIC)
            table = _read_kind(labels_path, TABLE_LABELS_MAGIC if spec.label_columns else LABELS_MAGIC)
        except MnistkitError as error:
            other = None if images_path.exists() and labels_path.exists() else _dataset_held(raw_dir)
            if other is not None:  # `--dataset` left out: fetching would put MNIST beside them
                raise MnistkitError(
                    f"{error}; the folder holds the files of {other.title}: read them with "
                    f"`{_parse_call(other.name, raw_dir)}`"
                ) from None
            raise MnistkitError(f"{error}{_refetch_hint(raw_dir, spec)}") from None
        if images.shape[1:] != IMAGE_SHAPE:
            raise MnistkitError(
                f"{images_path}: images are {images.shape[1]}x{images.shape[2]} pixels, expected 28x28"
            )
        _check_forms_agree(raw_dir, spec.files[f"{split}_images"], images)
        _check_forms_agree(raw_dir, spec.files[f"{split}_labels"], table)
        _check_whose(images_path, images, spec, spec.files[f"{split}_images"])
        _check_whose(labels_path, table, spec, spec.files[f"{split}_labels"])
        labels = _class_labels(labels_path, table, spec, _refetch_hint(raw_dir, spec))
        if len(images) != len(labels):
            raise MnistkitError(
                f"{images_path} holds {len(images)} images but {labels_path.name} holds {len(labels)} labels"
            )
        arrays[f"{split}_images"] = (
            np.ascontiguousarray(images.transpose(0, 2, 1)) if spec.transposed else images
        )
        arrays[f"{split}_labels"] = labels
        if label_columns:
            arrays[f"{split}_label_columns"] = table
    if spec.name != DEFAULT_DATASET:
        arrays["dataset"] = np.array(spec.name)
        arrays["class_names"] = np.array(spec.class_names)
    if label_columns:
        arrays["label_column_names"] = np.array(spec.label_columns)
    return arrays
