"""The `.npz` array file between parse-to-npz and everything after it.

Four uint8 arrays under fixed keys, uncompressed, pixels raw. Loading validates keys,
dtypes, shapes and label range, and never unpickles (`allow_pickle=False`).
"""

from __future__ import annotations

import hashlib
import os
import shlex
import sys
import zipfile
import zlib
from collections.abc import Sequence

import numpy as np

from mnistkit.atomic import atomic_write
from mnistkit.datasets import IMAGE_SHAPE
from mnistkit.errors import MnistkitError
from mnistkit.inputs import open_input, wrong_kind

SPLITS = ("train", "test")
KEYS = ("train_images", "train_labels", "test_images", "test_labels")
KERAS_KEYS = {
    "x_train": "train_images",
    "y_train": "train_labels",
    "x_test": "test_images",
    "y_test": "test_labels",
}


def check_arrays(arrays: dict[str, np.ndarray], source: str, splits: Sequence[str] = SPLITS) -> None:
    """Raise MnistkitError unless `arrays` holds well-formed MNIST arrays of `splits`."""
    wanted = [f"{split}_{kind}" for split in splits for kind in ("images", "labels")]
    missing = [key for key in wanted if key not in arrays]
    if missing:
        raise MnistkitError(f"{source}: missing arrays {', '.join(missing)} (expected {', '.join(wanted)})")
    for split in splits:
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


def _other_layout(source: str, found: list[str], splits: Sequence[str]) -> MnistkitError:
    """The error for an .npz without mnistkit's keys: which keys it has, and how to convert
    the common layout of Keras' `mnist.npz` (x_train, y_train, x_test, y_test)."""
    wanted = [f"{split}_{kind}" for split in splits for kind in ("images", "labels")]
    missing = ", ".join(key for key in wanted if key not in found)
    message = f"{source}: missing arrays {missing} (it holds {', '.join(found) or 'none'})"
    if set(KERAS_KEYS) <= set(found):
        renames = ", ".join(f"{new}=a[{old!r}]" for old, new in KERAS_KEYS.items())
        message += (
            f"; it looks like Keras' mnist.npz. Convert it with: {shlex.quote(sys.executable)} -c "
            f"\"import numpy as np; a = np.load('{source}'); np.savez('mnist.npz', {renames})\""
        )
    else:
        message += "; make one with `mnistkit parse-to-npz`"
    return MnistkitError(message)


def save_arrays(path: str | os.PathLike[str], arrays: dict[str, np.ndarray]) -> None:
    """Validate and write the four arrays atomically as an uncompressed .npz."""
    check_arrays(arrays, str(path))
    with atomic_write(path, "wb") as handle:
        np.savez(handle, **{key: arrays[key] for key in KEYS})


def load_arrays(path: str | os.PathLike[str], splits: Sequence[str] = SPLITS) -> dict[str, np.ndarray]:
    """Load and validate the arrays of `splits` from an mnistkit `.npz`; object arrays are
    refused, never unpickled."""
    try:
        with open_input(path, "an .npz file") as handle:
            start = handle.read(16)
            handle.seek(0)
            if not start.startswith(b"PK"):
                raise wrong_kind(path, start, "a valid .npz file", " (make one with `mnistkit parse-to-npz`)")
            with np.load(handle, allow_pickle=False) as archive:
                wanted = [f"{split}_{kind}" for split in splits for kind in ("images", "labels")]
                if not set(wanted) <= set(archive.files):
                    raise _other_layout(str(path), sorted(archive.files), splits)
                arrays = {key: archive[key] for key in wanted}
        check_arrays(arrays, str(path), splits)
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
