"""The `.npz` array file between parse-to-npz and everything after it.

Four uint8 arrays under fixed keys, uncompressed, pixels raw. Loading validates keys,
dtypes, shapes and label range, and never unpickles (`allow_pickle=False`).
"""

from __future__ import annotations

import hashlib
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

from mnistkit.atomic import atomic_write
from mnistkit.errors import MnistkitError

SPLITS = ("train", "test")
KEYS = ("train_images", "train_labels", "test_images", "test_labels")
IMAGE_SHAPE = (28, 28)


def check_arrays(arrays: dict[str, np.ndarray], source: str) -> None:
    """Raise MnistkitError unless `arrays` is a well-formed MNIST array set."""
    missing = [key for key in KEYS if key not in arrays]
    if missing:
        raise MnistkitError(f"{source}: missing arrays {', '.join(missing)} (expected {', '.join(KEYS)})")
    for split in SPLITS:
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        for key, array in ((f"{split}_images", images), (f"{split}_labels", labels)):
            if array.dtype != np.uint8:
                raise MnistkitError(f"{source}: {key} has dtype {array.dtype}, expected uint8")
        if images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
            raise MnistkitError(f"{source}: {split}_images has shape {images.shape}, expected (N, 28, 28)")
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise MnistkitError(
                f"{source}: {split}_labels has shape {labels.shape}, expected ({images.shape[0]},) "
                f"to match {split}_images"
            )
        if labels.size and int(labels.max()) > 9:
            raise MnistkitError(f"{source}: {split}_labels holds {int(labels.max())}, outside 0-9")


def save_arrays(path: str | os.PathLike[str], arrays: dict[str, np.ndarray]) -> None:
    """Validate and write the four arrays atomically as an uncompressed .npz."""
    check_arrays(arrays, str(path))
    with atomic_write(path, "wb") as handle:
        np.savez(handle, **{key: arrays[key] for key in KEYS})


def load_arrays(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Load and validate an mnistkit `.npz`; object arrays are refused, never unpickled."""
    path = Path(path)
    if path.is_dir():
        raise MnistkitError(f"{path}: is a directory, expected an .npz file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files if key in KEYS}
            check_arrays(arrays, str(path))
    except FileNotFoundError:
        raise MnistkitError(f"{path}: no such file") from None
    except ValueError as error:
        if "allow_pickle" in str(error) or "Object arrays" in str(error):
            raise MnistkitError(f"{path}: holds object arrays, which mnistkit never unpickles") from None
        raise MnistkitError(f"{path}: not a valid .npz file ({error})") from None
    # zipfile raises NotImplementedError (unknown version or method), RuntimeError (encrypted)
    # and zlib.error (corrupt deflate data) for damaged archives, besides BadZipFile.
    except (OSError, EOFError, zipfile.BadZipFile, NotImplementedError, RuntimeError, zlib.error) as error:
        raise MnistkitError(f"{path}: not a valid .npz file ({error})") from None
    except MemoryError:
        raise MnistkitError(f"{path}: an array's header declares more data than fits in memory") from None
    return arrays


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
