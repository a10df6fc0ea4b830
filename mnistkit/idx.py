"""The IDX file format of MNIST, read strictly.

An IDX file is a big-endian header (two zero bytes, a type code, the number of
dimensions, then each dimension as a uint32) followed by exactly the data it declares.
Files may be gzip-compressed (detected by the gzip magic, not the name). Decompression
streams and stops one byte past what the header declares, so a gzip bomb or an endless
tail costs at most that byte; any fault is a one-line `MnistkitError` naming the file.
Payloads above MAX_DATA_BYTES (256 MiB, five times MNIST's largest) are refused.
"""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np

from mnistkit.datasets import IMAGE_SHAPE, MNIST_FILES
from mnistkit.errors import MnistkitError
from mnistkit.gunzip import GZIP_MAGIC, CorruptGzip, GunzipStream
from mnistkit.inputs import open_input

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
MAGIC_NAMES = {IMAGES_MAGIC: "images", LABELS_MAGIC: "labels"}
MAX_DATA_BYTES = 256 << 20
NUM_CLASSES = 10
_CHUNK_BYTES = 1 << 20
_REFETCH_HINT = "; `mnistkit fetch --out {folder}` puts a verified copy there"


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an MNIST IDX file (images, magic 2051, or labels, magic 2049), `.gz` or raw.

    Returns a uint8 array shaped as the header declares: (count, rows, columns) for
    images, (count,) for labels.
    """
    path = Path(path)
    try:
        with open_input(path, "an IDX file") as raw_handle:
            compressed = raw_handle.read(2) == GZIP_MAGIC
            raw_handle.seek(0)
            return _read_idx_stream(GunzipStream(raw_handle) if compressed else raw_handle, path)
    except CorruptGzip as error:
        raise MnistkitError(f"{path}: {error}") from None
    except OSError as error:
        raise MnistkitError(f"{path}: cannot read: {error.strerror or error}") from None


def _read_exactly(stream: BinaryIO | GunzipStream, size: int) -> bytearray:
    """Up to `size` bytes, fewer only at the end of the stream (gzip reads come in pieces)."""
    data = bytearray()
    while len(data) < size:
        chunk = stream.read(min(_CHUNK_BYTES, size - len(data)))
        if not chunk:
            break
        data += chunk
    return data


def _read_idx_stream(stream: BinaryIO | GunzipStream, path: Path) -> np.ndarray:
    magic_bytes = _read_exactly(stream, 4)
    if len(magic_bytes) < 4:
        raise MnistkitError(f"{path}: file ends inside the IDX header ({len(magic_bytes)} of 4 magic bytes)")
    (magic,) = struct.unpack(">I", magic_bytes)
    if magic not in MAGIC_NAMES:
        raise MnistkitError(
            f"{path}: magic number {magic} (0x{magic:08x}) is not an MNIST IDX file; "
            f"expected {IMAGES_MAGIC} (images) or {LABELS_MAGIC} (labels)"
        )
    ndim = magic & 0xFF
    header_bytes = _read_exactly(stream, 4 * ndim)
    if len(header_bytes) < 4 * ndim:
        raise MnistkitError(
            f"{path}: file ends inside the IDX header ({4 + len(header_bytes)} of {4 + 4 * ndim} bytes)"
        )
    shape = struct.unpack(f">{ndim}I", header_bytes)
    if 0 in shape:
        raise MnistkitError(f"{path}: header declares a zero dimension {shape}")
    data_bytes = math.prod(shape)
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
    return np.frombuffer(data, dtype=np.uint8).reshape(shape)


def _mnist_file(raw_dir: Path, name: str) -> Path:
    compressed = raw_dir / name
    uncompressed = raw_dir / name.removesuffix(".gz")
    if not compressed.exists() and uncompressed.exists():
        return uncompressed
    return compressed


def _read_kind(path: Path, magic: int) -> np.ndarray:
    array = read_idx(path)
    found = IMAGES_MAGIC if array.ndim == 3 else LABELS_MAGIC
    if found != magic:
        raise MnistkitError(
            f"{path}: holds {MAGIC_NAMES[found]} (magic {found}), not {MAGIC_NAMES[magic]} (magic {magic})"
        )
    return array


def read_mnist_dir(raw_dir: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read the four MNIST IDX files of `raw_dir` into the arrays of the `.npz` file.

    Checks what a single file cannot: 28x28 images, labels 0-9, and as many labels as
    images in each split.
    """
    raw_dir = Path(raw_dir)
    if raw_dir.is_file():
        raise MnistkitError(
            f"{raw_dir}: is a file; parse-to-npz reads the folder holding the four MNIST IDX files "
            "(`mnistkit fetch --out data/raw` fills one: mnistkit parse-to-npz data/raw -o data/mnist.npz)"
        )
    if not raw_dir.is_dir():
        raise MnistkitError(f"{raw_dir}: no such folder (expected the four MNIST IDX files in it)")
    arrays = {}
    for split in ("train", "test"):
        images_path = _mnist_file(raw_dir, MNIST_FILES[f"{split}_images"])
        labels_path = _mnist_file(raw_dir, MNIST_FILES[f"{split}_labels"])
        try:
            images = _read_kind(images_path, IMAGES_MAGIC)
            labels = _read_kind(labels_path, LABELS_MAGIC)
        except MnistkitError as error:
            raise MnistkitError(f"{error}{_REFETCH_HINT.format(folder=raw_dir)}") from None
        if images.shape[1:] != IMAGE_SHAPE:
            raise MnistkitError(
                f"{images_path}: images are {images.shape[1]}x{images.shape[2]} pixels, expected 28x28"
            )
        out_of_range = np.flatnonzero(labels >= NUM_CLASSES)
        if out_of_range.size:
            index = int(out_of_range[0])
            raise MnistkitError(
                f"{labels_path}: label {int(labels[index])} at index {index} is outside 0-9 "
                f"({out_of_range.size} such labels)"
            )
        if len(images) != len(labels):
            raise MnistkitError(
                f"{images_path} holds {len(images)} images but {labels_path.name} holds {len(labels)} labels"
            )
        arrays[f"{split}_images"] = images
        arrays[f"{split}_labels"] = labels
    return arrays
