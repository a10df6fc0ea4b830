"""The `.npz` array file between parse-to-npz and everything after it.

Four uint8 arrays under fixed keys, uncompressed, pixels raw; a label is a class's index
(labels of another integer type, as `np.savez` of Keras' arrays writes them, load as uint8).
Every dataset but MNIST also records its name (`dataset`, a 0-d unicode array) and its
`class_names` (1-d unicode), so a file without them holds MNIST's digits, unless its labels
are a published dataset's (Fashion-MNIST saved by Keras' loader or `np.savez`), which names it. QMNIST's whole
label table may come along (`{split}_label_columns` int32, `label_column_names`).
Loading validates keys, dtypes, shapes and label range, and never unpickles
(`allow_pickle=False`): names are plain unicode arrays.
"""

from __future__ import annotations

import collections
import hashlib
import os
import shlex
import stat
import sys
import zipfile
import zlib
from collections.abc import Mapping, Sequence

import numpy as np

from mnistkit.architectures import MAX_CLASSES
from mnistkit.atomic import atomic_write
from mnistkit.datasets import (
    DATASETS,
    DEFAULT_DATASET,
    DIGIT_NAMES,
    IMAGE_SHAPE,
    dataset_spec,
    label_named,
    named_by_digits,
)
from mnistkit.errors import BadArrays, MnistkitError
from mnistkit.idx import published_as
from mnistkit.inputs import open_input, wrong_kind
from mnistkit.terms import on_command_line, setting

SPLITS = ("train", "test")
FLAT_PIXELS = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]  # a digit as the tutorials keep it: one row of 784
KEYS = ("train_images", "train_labels", "test_images", "test_labels")
NAME_KEYS = ("dataset", "class_names", "label_column_names")
# A validation split of one's own, which training refuses rather than ignores (it holds out
# its own from the training images): loaded along with the training split, to be named.
VALIDATION_KEYS = ("val_images", "val_labels")
MAX_NAME_CHARS = 100
KERAS_KEYS = {
    "x_train": "train_images",
    "y_train": "train_labels",
    "x_test": "test_images",
    "y_test": "test_labels",
}


def dataset_name(arrays: dict[str, np.ndarray]) -> str:
    """The dataset `arrays` holds: its recorded name, MNIST when none is recorded."""
    return str(arrays["dataset"]) if "dataset" in arrays else DEFAULT_DATASET


def names_dataset(arrays: Mapping[str, np.ndarray]) -> bool:
    return "dataset" in arrays or "class_names" in arrays


def unnamed(arrays: Mapping[str, np.ndarray]) -> bool:
    """Arrays that neither name a dataset nor hold a published one's labels: taken as MNIST's
    digits, which a part of another dataset is not."""
    return not names_dataset(arrays) and recognised_dataset(arrays) is None


def recognised_dataset(arrays: Mapping[str, np.ndarray]) -> str | None:
    """The published dataset whose whole test (or training) labels `arrays` holds, for arrays
    that record no name: Keras' `fashion_mnist.load_data()`, an `np.savez` of it."""
    for key in ("test_labels", "train_labels"):
        labels = arrays.get(key)
        uint8_row = isinstance(labels, np.ndarray) and labels.dtype == np.uint8 and labels.ndim == 1
        if uint8_row and (known := published_as(labels)):
            return known[0][0]
    return None


def named_as(
    arrays: Mapping[str, np.ndarray], dataset: str, names: Sequence[str] | None = None
) -> dict[str, np.ndarray]:
    """`arrays` with `dataset`'s name and class names recorded: `names`, for a dataset
    mnistkit does not know (a model's own)."""
    names = dataset_spec(dataset).class_names if names is None else names
    return {**arrays, "dataset": np.array(dataset), "class_names": np.array(names)}


def catalogued(dataset: str) -> str | None:
    """`dataset` where mnistkit knows it (a model's own dataset may have any name), else None."""
    return dataset if dataset in DATASETS else None


def named_if_unnamed(
    arrays: Mapping[str, np.ndarray], dataset: str | None, names: Sequence[str] | None = None
) -> dict[str, np.ndarray]:
    """Arrays that name no dataset, named after the published dataset whose labels they hold,
    or else `dataset`'s (a part of KMNIST saved with `np.savez`, with `train --dataset kmnist`
    or a KMNIST model; `names` are the classes of a dataset mnistkit does not know); as they
    are when they name one, or with neither."""
    if names_dataset(arrays):
        return dict(arrays)
    recognised = recognised_dataset(arrays)
    if recognised is not None:
        return named_as(arrays, recognised)
    return dict(arrays) if dataset is None else named_as(arrays, dataset, names)


def recorded_naming(path: str | os.PathLike[str], dataset: str | None = None) -> tuple[str, list[str] | None]:
    """The dataset an `.npz` file records (or holds the published labels of, or else
    `dataset`) and its class names, read without its images: a preset takes that dataset's
    settings, and `--show-config` checks `--classes` as training will. MNIST and no names
    when it cannot be read (`load_arrays` says why)."""
    if not _in_place(path):
        return DEFAULT_DATASET, None
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = ("dataset", "class_names", "test_labels", "train_labels")
            small = {key: archive[key] for key in keys if key in archive.files}
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, NotImplementedError, RuntimeError, zlib.error):
        return DEFAULT_DATASET, None
    named = named_if_unnamed(small, dataset)
    try:
        return dataset_name(named), class_names(named)
    except TypeError:  # class names that are not a row: training refuses them, and says why
        return dataset_name(named), None


def class_names(arrays: Mapping[str, np.ndarray]) -> list[str]:
    """The name of each class, by label: the recorded ones; where none are, those of the
    dataset it names (a KMNIST `.npz` saved with `dataset` alone holds kana, not digits), or
    MNIST's digits."""
    if "class_names" in arrays:
        return [str(name) for name in arrays["class_names"]]
    if "dataset" in arrays and (known := catalogued(str(arrays["dataset"]))):
        return list(dataset_spec(known).class_names)
    return list(DIGIT_NAMES)


def class_labels(requested: Sequence[str], names: Sequence[str], dataset: str) -> list[int]:
    """The label of each requested class (the `classes` setting), given by its name or its number."""
    labels = []
    for item in requested:
        named = label_named(item, dict(enumerate(names)))
        if named is not None:
            labels.append(named)
        elif item.isdigit() and int(item) < len(names):
            labels.append(int(item))
        elif named_by_digits(range(len(names)), names):
            raise MnistkitError(
                f"{setting('classes')}: {item!r} is not a class of {dataset} (0-{len(names) - 1})"
            )
        else:
            shown = ", ".join(names) if len(names) <= 12 else f"{', '.join(names[:10])}, ..."
            raise MnistkitError(
                f"{setting('classes')}: {item!r} is neither a class of {dataset} ({shown}) "
                f"nor a class number 0-{len(names) - 1}"
            )
    if len(set(labels)) != len(labels):
        raise MnistkitError(f"{setting('classes')}: {','.join(requested)} names a class twice")
    return labels


def _check_names(arrays: dict[str, np.ndarray], source: str) -> None:
    for key, ndim in (("dataset", 0), ("class_names", 1), ("label_column_names", 1)):
        if key not in arrays:
            continue
        array = arrays[key]
        if array.dtype.kind != "U" or array.ndim != ndim:
            wanted = "a unicode string" if ndim == 0 else "a 1-d array of unicode strings"
            raise BadArrays(f"{source}: {key} is {array.dtype} {array.shape}, expected {wanted}")
        names = [str(name) for name in array.ravel()]
        if not all(0 < len(name) <= MAX_NAME_CHARS and name.isprintable() for name in names):
            raise BadArrays(f"{source}: {key} holds an empty, unprintable or overlong name")
    names = class_names(arrays)
    if not 2 <= len(names) <= MAX_CLASSES:
        raise BadArrays(f"{source}: class_names must be 2 to {MAX_CLASSES} names, got {len(names)}")
    repeated = [name for name, count in collections.Counter(names).items() if count > 1]
    if repeated:
        raise BadArrays(f"{source}: class_names must be distinct; {repeated[0]!r} is there more than once")
    check_names_fit(arrays, source)


def check_names_fit(arrays: Mapping[str, np.ndarray], source: str, training: bool = False) -> None:
    """Refuse class_names that are not those of the dataset the arrays name: a model would
    record the one dataset with the other's classes, and prepare pictures for the first. Where
    none is named the arrays are MNIST's; `training` refuses other names then too (such a model
    said it was MNIST's digits), where reading them stays open to the models trained so."""
    named = str(arrays["dataset"]) if "dataset" in arrays else None
    spelled = next((name for name in DATASETS if named and name == named.lower() != named), None)
    if spelled:  # read as a dataset of one's own, its pictures would be taken as they are
        raise MnistkitError(
            f"{source}: dataset {named!r} is spelled {spelled!r} (mnistkit's names are lower case)"
        )
    known = catalogued(named or DEFAULT_DATASET)
    names = class_names(arrays)
    if "class_names" not in arrays or not known or names == list(dataset_spec(known).class_names):
        return
    if named is None and not training:
        return
    owner = next((spec for spec in DATASETS.values() if list(spec.class_names) == names), None)
    if owner:
        fix = f"they are {owner.title}'s: dataset={owner.name!r}"
    else:
        fix = "name your data otherwise" if named else "record your dataset's name too: dataset='shapes'"
    which = "the dataset it names" if named else "the dataset taken where none is named"
    raise MnistkitError(
        f"{source}: class_names ({', '.join(names[:3])}, ...) are not {dataset_spec(known).title}'s, "
        f"{which}; {fix}"
    )


def check_split(split: str) -> None:
    """A split's name given by a user (`split="val"`): one of those an .npz holds."""
    if split not in SPLITS:
        raise MnistkitError(f"{setting('split')}: {split!r} is not one of {', '.join(SPLITS)}")


# Standardized pixels back to 0-255: the background is their least value, full ink their most.
UNSTANDARDIZE = "(({array} - {array}.min()) / ({array}.max() - {array}.min()) * 255).round().astype(np.uint8)"


FAINTEST_INK = 16  # scikit-learn's digits reach 16; an MNIST digit's ink reaches 255


def too_faint(images: np.ndarray, name: str = "images") -> tuple[str, str] | None:
    """What uint8 pixels that never pass FAINTEST_INK hold and the code that makes them 0-255
    (`(x / 255).astype(np.uint8)` and `x > 127` leave 0 and 1, scikit-learn's digits 0-16),
    or None for pixels that do (or that are all paper)."""
    high = int(images.max()) if images.size else 0
    if not 1 <= high <= FAINTEST_INK:
        return None
    if high == 1:
        return "only pixels 0 and 1", f"{name} * 255"
    return f"only pixels 0 to {high}", f"({name} * (255 / {high})).round().astype(np.uint8)"


# The brightest mean of an image's outer two pixels in the datasets' own images (a coat that
# fills Fashion-MNIST's frame: 137 of 255); dark ink drawn on white is near 255 there.
LIGHT_PAPER_EDGE = 192


def on_light_paper(images: np.ndarray) -> tuple[int, float] | None:
    """The first of uint8 images (N, 28, 28) drawn dark on light paper, as a person draws a
    digit, and the mean of its outer two pixels; or None. Every dataset's images are light on
    black, and a model reads the others as confident nonsense."""
    means = _edge_means(images)
    light = np.flatnonzero(means > LIGHT_PAPER_EDGE)
    return (int(light[0]), float(means[light[0]])) if light.size else None


def _edge_means(images: np.ndarray) -> np.ndarray:
    """The mean of each image's outer two pixels."""
    edge = np.ones(images.shape[1:], bool)
    edge[2:-2, 2:-2] = False
    return images[:, edge].mean(axis=1) if images.size else np.zeros(len(images))


def check_light_ink(images: np.ndarray, source: str) -> None:
    """Refuse training images mostly drawn dark on light paper: a model trained on them reads
    every picture `predict` prepares (light ink on black, as every dataset's) inverted. A few
    such images among the rest are noise, and pass."""
    light = int((_edge_means(images) > LIGHT_PAPER_EDGE).sum())
    if light * 2 > len(images):
        fix = "invert them (255 - images) in the .npz" if on_command_line() else "give 255 - images"
        raise BadArrays(
            f"{source}: train_images are drawn dark on light paper ({light} of {len(images)} have edges "
            f"brighter than {LIGHT_PAPER_EDGE} of 255), where mnistkit's models learn light on black, "
            f"as every dataset has them and predict prepares pictures; {fix}"
        )


def check_finite(images: np.ndarray, name: str) -> None:
    """Refuse NaN and infinite pixels before any fix is offered: every cast to uint8 would
    turn them into some pixel unnoticed, and min and max would not be numbers."""
    if images.dtype.kind in "fc" and not np.isfinite(images).all():
        raise BadArrays(
            f"{name} holds NaN or infinite values, not pixels; "
            "mend them or leave out the images that hold them"
        )


def image_fixes(images: np.ndarray) -> list[str]:
    """The code that turns the tutorials' images into MNIST's uint8 (N, 28, 28), for a refusal
    of finite pixels. A cast is offered only where the shape is right or mended too: it
    cannot make images of a scalar or of a picture of another size."""
    fixes = []
    if images.shape[-1:] == (FLAT_PIXELS,):  # the tutorials' flat vectors
        fixes.append("images.reshape(-1, 28, 28)")
    elif images.shape[1:] == (1, *IMAGE_SHAPE):  # torchvision's channel axis
        fixes.append("images[:, 0]")
    elif images.shape[1:] == (*IMAGE_SHAPE, 1):  # Keras' channel axis
        fixes.append("images[..., 0]")
    if not fixes and (images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE):
        return fixes
    if np.issubdtype(images.dtype, np.floating):
        if images.size and float(images.min()) < 0:  # torchvision's Normalize((0.1307,), (0.3081,))
            fixes.append(f"{UNSTANDARDIZE.format(array='images')} for standardized pixels")
        elif images.size and float(images.max()) > 1:  # torchvision's `.data.float()`
            fixes.append("images.round().astype(np.uint8) for pixels 0-255")
        else:  # the tutorials' pixels in [0, 1]
            fixes.append("(images * 255).round().astype(np.uint8) for pixels in [0, 1]")
    elif images.dtype == np.bool_:
        fixes.append("images.astype(np.uint8) * 255")
    elif images.dtype != np.uint8 and np.issubdtype(images.dtype, np.integer):
        high = int(images.max()) if images.size else 0
        if high <= 255:
            fixes.append("images.astype(np.uint8) for pixels 0-255")
        elif images.dtype == np.uint16:  # a 16-bit scan's: astype would wrap each past 255 around
            fixes.append("(images // 257).astype(np.uint8) for 16-bit pixels 0-65535")
        else:
            fixes.append(f"(images * 255 // {high}).astype(np.uint8) for pixels up to {high}")
    return fixes


def _label_fix(labels: np.ndarray) -> str:
    """The code that makes labels one class number each, for a refusal."""
    if labels.ndim == 2 and labels.shape[1] == 1:  # a column, as scikit-learn and torch keep them
        return "labels[:, 0]"
    if labels.ndim == 2:
        return "labels.argmax(1) for one-hot labels"
    whole = np.issubdtype(labels.dtype, np.floating) and bool(np.all(labels == np.round(labels)))
    return "labels.astype(np.uint8)" if whole else ""  # a pandas column or a float tensor's


def labels_as_uint8(arrays: Mapping[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    """The arrays with integer labels of any type (Keras' and torchvision's int64, an int32
    `np.savez`) as uint8, the type mnistkit keeps them in; a label outside 0-255 is refused."""
    converted = dict(arrays)
    for key, labels in arrays.items():
        if not key.endswith("_labels") or labels.dtype == np.uint8 or labels.dtype.kind not in "iu":
            continue
        if labels.size:
            low, high = int(labels.min()), int(labels.max())
            if low < 0 or high > 255:
                raise BadArrays(
                    f"{source}: {key} holds {low if low < 0 else high}, not a class number (0 to 255)"
                )
        converted[key] = labels.astype(np.uint8)
    return converted


def check_arrays(
    arrays: dict[str, np.ndarray], source: str, splits: Sequence[str] = SPLITS, fixes: bool = False
) -> None:
    """Raise BadArrays unless `arrays` holds well-formed arrays of `splits`, labels within
    its classes. With `fixes` (arrays given from Python, whose labels are then taken in any
    integer type), a refusal gives the code that mends the tutorials' arrays."""
    wanted = [f"{split}_{kind}" for split in splits for kind in ("images", "labels")]
    missing = [key for key in wanted if key not in arrays]
    if missing:
        hint = ""
        if fixes and ("x_train" in arrays or "x_test" in arrays):
            hint = "; Keras' x_train, y_train, ... are given as ((x_train, y_train), (x_test, y_test))"
        elif fixes and all(key.startswith("test_") for key in missing):  # training scores the test split
            hint = "; add images held out for the test: dict(arrays, test_images=x_test, test_labels=y_test)"
        raise BadArrays(f"{source}: missing arrays {', '.join(missing)} (expected {', '.join(wanted)}){hint}")
    _check_names(arrays, source)
    top = len(class_names(arrays)) - 1
    for split in splits:
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        check_finite(images, f"{source}: {split}_images")
        image_fix = "".join(f"; give {fix}" for fix in image_fixes(images)) if fixes else ""
        label_fix = f"; give {_label_fix(labels)}" if fixes and _label_fix(labels) else ""
        if images.dtype != np.uint8:
            raise BadArrays(
                f"{source}: {split}_images has dtype {images.dtype}, expected uint8 "
                f"(pixels 0-255, as MNIST's files hold them){image_fix}"
            )
        if labels.dtype != np.uint8:
            raise BadArrays(f"{source}: {split}_labels has dtype {labels.dtype}, expected uint8{label_fix}")
        if images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
            raise BadArrays(
                f"{source}: {split}_images has shape {images.shape}, expected (N, 28, 28){image_fix}"
            )
        faint = too_faint(images)
        if faint:
            raise BadArrays(
                f"{source}: {split}_images holds {faint[0]}, expected 0-255"
                + (f"; give {faint[1]}" if fixes else "")
            )
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise BadArrays(
                f"{source}: {split}_labels has shape {labels.shape}, expected ({images.shape[0]},) "
                f"to match {split}_images{label_fix}"
            )
        if labels.size and int(labels.max()) > top:
            own = (
                "" if names_dataset(arrays) else "; classes of your own are named by class_names and dataset"
            )
            raise BadArrays(f"{source}: {split}_labels holds {int(labels.max())}, outside 0-{top}{own}")
        columns = arrays.get(f"{split}_label_columns")
        if columns is not None and (
            columns.dtype != np.int32 or columns.ndim != 2 or columns.shape[0] != labels.shape[0]
        ):
            raise BadArrays(
                f"{source}: {split}_label_columns is {columns.dtype} {columns.shape}, "
                f"expected int32 ({labels.shape[0]}, columns)"
            )


def _other_layout(source: str, found: list[str], splits: Sequence[str]) -> MnistkitError:
    """The error for an .npz without mnistkit's keys: which keys it has, and how to convert
    the common layout of Keras' `mnist.npz` (x_train, y_train, x_test, y_test)."""
    wanted = [f"{split}_{kind}" for split in splits for kind in ("images", "labels")]
    missing = ", ".join(key for key in wanted if key not in found)
    message = f"{source}: missing arrays {missing} (it holds {', '.join(found) or 'none'})"
    if set(KERAS_KEYS) <= set(found):
        renames = ", ".join(f"{new}=a[{old!r}]" for old, new in KERAS_KEYS.items())
        message += "; it looks like Keras' mnist.npz. "
        if on_command_line():
            code = f"import numpy as np; a = np.load('{source}'); np.savez('mnist.npz', {renames})"
            message += f'Convert it with: {shlex.quote(sys.executable)} -c "{code}"'
        else:
            message += f"Read it as: a = np.load('{source}'); arrays = dict({renames})"
    elif not any(key.startswith("test_") for key in found) and any(key.startswith("train_") for key in found):
        message += (
            "; beside them, save images held out from training, to score the model, as test_images, "
            "test_labels"
        )
    elif on_command_line():
        message += "; make one with `mnistkit parse-to-npz`"
    else:
        message += "; give your arrays as a dict of these names, or MNIST's: mnistkit.load_mnist('data')"
    return MnistkitError(message)


def _npz_maker() -> str:
    """What writes an .npz: `parse-to-npz` in a shell, `load_mnist` (data/mnist.npz) from Python."""
    return "`mnistkit parse-to-npz`" if on_command_line() else "mnistkit.load_mnist('data') (data/mnist.npz)"


def _stored_keys(keys: Sequence[str], splits: Sequence[str]) -> list[str]:
    """The keys of `keys` an .npz keeps for `splits`: images, labels, names, label columns."""
    wanted = [f"{split}_{kind}" for split in splits for kind in ("images", "labels", "label_columns")]
    return [key for key in [*wanted, *NAME_KEYS] if key in keys]


def save_arrays(path: str | os.PathLike[str], arrays: dict[str, np.ndarray]) -> None:
    """Validate and write the arrays atomically as an uncompressed .npz: the four of KEYS,
    and the dataset's names and label columns when `arrays` has them."""
    check_arrays(arrays, str(path))
    with atomic_write(path, "wb") as handle:
        np.savez(handle, **{key: arrays[key] for key in _stored_keys(list(arrays), SPLITS)})


def load_arrays(
    path: str | os.PathLike[str],
    splits: Sequence[str] = SPLITS,
    dataset: str | None = None,
    names: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """Load and validate the arrays of `splits` from an mnistkit `.npz`, with the dataset's
    names when it records them or holds a published dataset's labels, or else `dataset`'s
    (`names`: the classes of one mnistkit does not know); object arrays are refused, never
    unpickled."""
    if isinstance(splits, str):  # splits="test"
        splits = (splits,)
    if not _in_place(path):
        raise MnistkitError(
            f"{path}: not a regular file (a pipe or a device), expected an .npz file, which is read "
            "in place; save it to a file first"
        )
    try:
        with open_input(path, "an .npz file") as handle:
            start = handle.read(16)
            handle.seek(0)
            if not start.startswith(b"PK"):
                raise wrong_kind(path, start, "a valid .npz file", f" (make one with {_npz_maker()})")
            if not start.startswith((b"PK\x03\x04", b"PK\x05\x06")):  # numpy would try it as a pickle
                raise MnistkitError(
                    f"{path}: not a valid .npz file (it starts as a zip archive does, but is none)"
                )
            with np.load(handle, allow_pickle=False) as archive:
                wanted = [f"{split}_{kind}" for split in splits for kind in ("images", "labels")]
                if not set(wanted) <= set(archive.files):
                    raise _other_layout(str(path), sorted(archive.files), splits)
                own_validation = [
                    key for key in VALIDATION_KEYS if key in archive.files and "train" in splits
                ]
                arrays = {
                    key: archive[key] for key in [*_stored_keys(archive.files, splits), *own_validation]
                }
            arrays = labels_as_uint8(arrays, str(path))
        # As named_if_unnamed, except that MNIST's digits load as the four arrays the file holds.
        if dataset_name(named := named_if_unnamed(arrays, dataset, names)) != DEFAULT_DATASET:
            arrays = named
        check_arrays(arrays, str(path), splits)
    except BadArrays:
        raise
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


def _in_place(path: str | os.PathLike[str]) -> bool:
    """Whether `path` can be read as an .npz is, more than once and by seeking; or names no
    file (opening it says why). A pipe (`<(cmd)`, a FIFO) is told apart before it is opened:
    opening one that nothing writes to yet waits, and train does so where signals are held."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return True
    return stat.S_ISREG(mode) or stat.S_ISDIR(mode)


def arrays_sha256(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 of the images and labels in memory (each array's name, dtype, shape and bytes),
    which stands for an `.npz`'s `file_sha256` when the data never was a file (a notebook's);
    the dataset's names are left out, as the same arrays may come named or not."""
    digest = hashlib.sha256()
    for name in sorted(key for key in arrays if key.endswith(("_images", "_labels"))):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name} {array.dtype.str} {array.shape}\n".encode())
        digest.update(array)  # its buffer, not a copy
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
