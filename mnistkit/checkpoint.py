"""Self-describing safetensors checkpoints, read and written without jax.

All metadata lives under one `__metadata__` key, `mnistkit`, as canonical JSON (sorted
keys): safetensors writes several metadata keys in a different order in each process,
and one key keeps the same training run byte-identical. Tensors named `optimizer.*`
hold optimizer state for `train --resume`; all others are model parameters.

Format version 2 names what the model tells apart: the `dataset` it was trained on, the
name of each class (`class_names`, beside `classes`, their labels in that dataset) and how
a person's image must be prepared for it (`preprocessing`, one of `datasets.IMAGE_STYLES`).
Without those three a checkpoint means MNIST's digits, as every version 1 checkpoint does,
so a model of MNIST digits is still written as version 1, without them, and an older
mnistkit predicts and evaluates with it; one of another dataset is version 2, which an
older one refuses rather than take its classes for digits.

The loader checks the header itself before safetensors sees the bytes, and checks
every tensor against the architecture, so a hostile or damaged file fails with one
line naming the problem. Nothing here can unpickle.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors

from mnistkit import __version__
from mnistkit.architectures import MAX_CLASSES, check_architecture, param_shapes
from mnistkit.atomic import write_bytes_atomic, written_in_place
from mnistkit.datasets import DATASETS, DEFAULT_DATASET, IMAGE_STYLES, dataset_spec, named_by_digits
from mnistkit.errors import MnistkitError
from mnistkit.inputs import input_path, read_input, what_file_is, wrong_kind

FORMAT = "mnistkit-checkpoint"
FORMAT_VERSION = 2  # the newest this version reads and writes
NAME_KEYS = ("dataset", "class_names", "preprocessing")
MAX_NAME_CHARS = 100
METADATA_KEY = "mnistkit"
RUN_STATE_KEY = "mnistkit-run-state"  # what a run's saved state (run_state.py, OUTPUT.resume) holds instead
OPTIMIZER_PREFIX = "optimizer."
# The float32 numbers a checkpoint holds: weights and their optimizer's state, all members'.
MAX_CHECKPOINT_VALUES = 1 << 30
MAX_CHECKPOINT_BYTES = 4 * MAX_CHECKPOINT_VALUES
MAX_HEADER_BYTES = 100 << 20
SWAPPED_HINT = " (a checkpoint is the .safetensors file `mnistkit train` writes; are two arguments swapped?)"
_DTYPES = {"F32": np.float32, "I32": np.int32, "F64": np.float64, "I64": np.int64, "U32": np.uint32}


@dataclass
class Checkpoint:
    params: dict[str, np.ndarray]
    metadata: dict[str, Any]
    optimizer_state: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def architecture(self) -> dict[str, Any]:
        return self.metadata["architecture"]

    @property
    def normalization(self) -> dict[str, Any]:
        return self.metadata["normalization"]

    @property
    def classes(self) -> list[int]:
        """Each output's label in its dataset (MNIST: the digit)."""
        return self.metadata["classes"]

    @property
    def class_names(self) -> list[str]:
        """Each output's name: "7", "Ankle boot", "k"."""
        return self.metadata["class_names"]

    @property
    def dataset(self) -> str:
        return self.metadata["dataset"]

    @property
    def digit_classes(self) -> bool:
        """Whether each class is named by its label (MNIST's digits)."""
        return named_by_digits(self.classes, self.class_names)

    def naming(self) -> tuple[str | None, tuple[str, ...] | None]:
        """What arrays that name no dataset are taken as for this model: its dataset, and where
        mnistkit does not know that dataset, its classes' names by label (told only where the
        model was trained on all its classes, as its settings say); (None, None) where they
        cannot be told."""
        if self.dataset in DATASETS:
            return self.dataset, None
        if self.metadata.get("config", {}).get("classes") == []:
            return self.dataset, tuple(self.class_names)
        return None, None

    @property
    def preprocessing(self) -> str:
        """How `predict` prepares a person's image for this model: a key of IMAGE_STYLES."""
        return self.metadata["preprocessing"]

    @property
    def finished(self) -> bool | None:
        """Whether the run trained all its epochs (None where the checkpoint does not say). A
        run stopped midway (Ctrl-C, a notebook's Stop) writes the checkpoint of its last
        finished epoch, a model that looks finished but for its count of epochs."""
        epochs = self._epochs()
        return None if epochs is None else epochs[0] >= epochs[1]

    @property
    def stopped_midway(self) -> str:
        """ "stopped after epoch 1 of 2" for a run that did not finish, else ""."""
        epochs = self._epochs()
        return stopped_after(*epochs) if epochs is not None and epochs[0] < epochs[1] else ""

    def _epochs(self) -> tuple[int, int] | None:
        """(epochs trained, epochs the run was set to), where the metadata says."""
        done = self.metadata.get("metrics", {}).get("epochs")
        planned = (self.metadata.get("config") or {}).get("epochs")
        if not all(isinstance(count, int) and not isinstance(count, bool) for count in (done, planned)):
            return None
        return done, planned

    def predict_probabilities(self, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        from mnistkit.inference import predict_probabilities

        return predict_probabilities(self.params, self.architecture, self.normalization, images, batch_size)


def stopped_after(done: int, planned: int) -> str:
    return f"stopped after epoch {done} of {planned}"


def unfinished_note(checkpoint: Checkpoint, name: str) -> str:
    """The line eval, predict and serve say on stderr about a model whose training stopped
    midway (killed by a timeout, Ctrl-C), else "": its answers look like a finished model's,
    and a script that only measured it went on with half a model."""
    if not checkpoint.stopped_midway:
        return ""
    return f"{name}: note: an unfinished model, its training {checkpoint.stopped_midway}"


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def check_checkpoint_name(path: str | os.PathLike[str]) -> None:
    """A checkpoint file is written under a `.safetensors` name (standard output, a pipe or a
    device such as /dev/null take it as it is): `model.png` or a habit's `model.pt` would be
    read as what it is not, by people and by tools that go by the name."""
    if written_in_place(path) or os.fspath(path).endswith(("/", os.sep)) or Path(path).is_dir():
        return  # written as it is, or refused by the write as a folder
    path = Path(path)
    if not path.name.lower().endswith(".safetensors"):
        raise MnistkitError(
            f"{path}: a checkpoint is safetensors; name it {path.stem or path.name}.safetensors"
        )


def save_checkpoint(
    path: str | os.PathLike[str],
    params: dict[str, np.ndarray],
    metadata: dict[str, Any],
    optimizer_state: dict[str, np.ndarray] | None = None,
) -> None:
    """Write params (+ optimizer state) and metadata atomically to `path`. Metadata without a
    dataset means MNIST's digits; metadata that names MNIST's digits is written without the
    names, as version 1."""
    named = {key: metadata[key] for key in NAME_KEYS if key in metadata}
    mnist_digits = {**named_classes(metadata), **named} == named_classes(metadata)
    full_metadata = {
        **{key: value for key, value in metadata.items() if not (mnist_digits and key in NAME_KEYS)},
        "format": FORMAT,
        "format_version": 1 if mnist_digits else FORMAT_VERSION,
        "mnistkit_version": __version__,
    }
    _check_metadata(Path(path), full_metadata)
    _check_params(Path(path), params, full_metadata)
    # reshape: ascontiguousarray turns 0-d arrays (optimizer step counts) into shape (1,).
    tensors = {name: np.ascontiguousarray(value).reshape(np.shape(value)) for name, value in params.items()}
    for name, value in (optimizer_state or {}).items():
        tensors[OPTIMIZER_PREFIX + name] = np.ascontiguousarray(value).reshape(np.shape(value))
    data = save_safetensors(tensors, metadata={METADATA_KEY: canonical_json(full_metadata)})
    write_bytes_atomic(path, data)


def read_header(path: Path, data: bytes) -> dict[str, Any]:
    """Parse and check the safetensors header: a length, then JSON describing each tensor."""
    if len(data) < 8:
        raise MnistkitError(f"{path}: not a safetensors checkpoint (file is {len(data)} bytes)")
    header_length = int.from_bytes(data[:8], "little")
    if header_length > min(len(data) - 8, MAX_HEADER_BYTES):
        if data[8:9] != b"{" and what_file_is(data[:16]):
            raise wrong_kind(path, data[:16], "a checkpoint", SWAPPED_HINT)
        raise MnistkitError(
            f"{path}: not a safetensors checkpoint (header length {header_length} "
            f"exceeds the file's {len(data)} bytes)"
        )
    try:
        header = json.loads(data[8 : 8 + header_length])
    except (UnicodeDecodeError, ValueError):
        raise MnistkitError(f"{path}: not a safetensors checkpoint (header is not JSON)") from None
    if not isinstance(header, dict):
        raise MnistkitError(f"{path}: not a safetensors checkpoint (header is not a JSON object)")
    data_length = len(data) - 8 - header_length
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not (
            isinstance(info, dict)
            and info.get("dtype") in _DTYPES
            and isinstance(info.get("shape"), list)
            and all(isinstance(d, int) and d >= 0 for d in info["shape"])
            and isinstance(info.get("data_offsets"), list)
            and len(info["data_offsets"]) == 2
            and all(isinstance(o, int) for o in info["data_offsets"])
        ):
            raise MnistkitError(f"{path}: tensor {name!r} has a malformed header entry")
        start, end = info["data_offsets"]
        expected = int(np.prod(info["shape"], dtype=np.int64)) * np.dtype(_DTYPES[info["dtype"]]).itemsize
        if not (0 <= start <= end <= data_length) or end - start != expected:
            raise MnistkitError(
                f"{path}: tensor {name!r} lies outside the file or disagrees with its shape "
                "(truncated or corrupted checkpoint)"
            )
    return header


def begins_a_checkpoint(start: bytes) -> bool:
    """Whether a file's first 9 bytes or more are a safetensors header's length and its `{`."""
    return 0 < int.from_bytes(start[:8], "little") <= MAX_HEADER_BYTES and start[8:9] == b"{"


def _check_start(path: Path, start: bytes) -> None:
    """A checkpoint begins with its header's length, then the header's `{`: anything else is
    refused before more is read (a pipe or a device has no size to check first)."""
    if len(start) >= 9 and not begins_a_checkpoint(start):
        read_header(path, start)  # says what it is, as for a whole file
        raise MnistkitError(f"{path}: not a safetensors checkpoint")


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read and fully validate a checkpoint; raise MnistkitError naming the problem."""
    path = input_path(path, "a checkpoint")
    data = read_input(path, "a checkpoint", MAX_CHECKPOINT_BYTES, lambda start: _check_start(path, start))
    header = read_header(path, data)
    raw_metadata = header.get("__metadata__")
    if isinstance(raw_metadata, dict) and RUN_STATE_KEY in raw_metadata:
        raise MnistkitError(
            f"{path}: the saved state of a training run that has not finished, not a checkpoint; "
            "the same train command again goes on from it and writes the checkpoint"
        )
    if not isinstance(raw_metadata, dict) or METADATA_KEY not in raw_metadata:
        raise MnistkitError(f"{path}: not an mnistkit checkpoint (no '{METADATA_KEY}' metadata)")
    try:
        metadata = json.loads(raw_metadata[METADATA_KEY])
    except (TypeError, ValueError):
        raise MnistkitError(f"{path}: checkpoint metadata is not valid JSON") from None
    _check_metadata(path, metadata)
    if metadata["format_version"] == 1:  # MNIST's digits, whatever else it holds
        metadata = {**metadata, **named_classes(metadata)}
    else:
        metadata = {**named_classes(metadata), **metadata}
    try:
        tensors = load_safetensors(data)
    except Exception as error:  # safetensors raises its own untyped errors
        raise MnistkitError(f"{path}: corrupted checkpoint ({error})") from None
    params = {k: v for k, v in tensors.items() if not k.startswith(OPTIMIZER_PREFIX)}
    optimizer_state = {
        k[len(OPTIMIZER_PREFIX) :]: v for k, v in tensors.items() if k.startswith(OPTIMIZER_PREFIX)
    }
    _check_params(path, params, metadata)
    return Checkpoint(params=params, metadata=metadata, optimizer_state=optimizer_state)


def _check_metadata(path: Path, metadata: Any) -> None:
    if not isinstance(metadata, dict):
        raise MnistkitError(f"{path}: checkpoint metadata is not a JSON object")
    if metadata.get("format") != FORMAT:
        raise MnistkitError(f"{path}: not an mnistkit checkpoint (format {metadata.get('format')!r})")
    version = metadata.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise MnistkitError(f"{path}: checkpoint has no valid format_version")
    if version > FORMAT_VERSION:
        raise MnistkitError(
            f"{path}: checkpoint format version {version} is newer than this mnistkit reads "
            f"({FORMAT_VERSION}); upgrade mnistkit"
        )
    for key in ("architecture", "normalization", "classes"):
        if key not in metadata:
            raise MnistkitError(f"{path}: checkpoint metadata lacks {key!r}")
    classes = metadata["classes"]
    top = 9 if version == 1 else MAX_CLASSES - 1
    if (
        not isinstance(classes, list)
        or len(classes) < 2
        or len(set(classes)) != len(classes)
        or not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= top for c in classes)
    ):
        what = "digits 0-9" if version == 1 else f"labels 0-{top}"
        raise MnistkitError(f"{path}: checkpoint classes {classes!r} are not distinct {what}")
    try:
        check_architecture(metadata["architecture"])
    except MnistkitError as error:
        raise MnistkitError(f"{path}: checkpoint architecture: {error}") from None
    if metadata["architecture"]["num_classes"] != len(classes):
        raise MnistkitError(f"{path}: checkpoint architecture does not match its {len(classes)} classes")
    if version >= 2:
        _check_names(path, {**named_classes(metadata), **metadata}, len(classes))
    normalization = metadata["normalization"]
    kind = normalization.get("kind") if isinstance(normalization, dict) else None
    if kind == "standard":
        mean, std = normalization.get("mean"), normalization.get("std")
        if not all(isinstance(v, (int, float)) for v in (mean, std)) or not std > 0:
            raise MnistkitError(f"{path}: checkpoint normalization needs a mean and a positive std")
    elif kind != "unit":
        raise MnistkitError(f"{path}: unknown input normalization {normalization!r}")


def named_classes(metadata: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint without names means (all of version 1, or metadata without them):
    MNIST, each class named by its digit, images prepared as MNIST's."""
    return {
        "dataset": DEFAULT_DATASET,
        "class_names": [str(digit) for digit in metadata.get("classes", [])],
        "preprocessing": dataset_spec(DEFAULT_DATASET).image_style,
    }


def _check_names(path: Path, metadata: dict[str, Any], count: int) -> None:
    dataset, names = metadata["dataset"], metadata["class_names"]
    if not _is_name(dataset):
        raise MnistkitError(f"{path}: checkpoint dataset {dataset!r} is not a name")
    known = DATASETS.get(dataset)  # a dataset of one's own may number its classes as it likes
    if known is not None and max(metadata["classes"]) >= len(known.class_names):
        raise MnistkitError(
            f"{path}: checkpoint classes {metadata['classes']!r} are not labels of {dataset} "
            f"(0-{len(known.class_names) - 1})"
        )
    if (
        not isinstance(names, list)
        or len(names) != count
        or not all(_is_name(name) for name in names)
        or len(set(names)) != count
    ):
        raise MnistkitError(f"{path}: checkpoint class_names must be {count} distinct names, one per class")
    if metadata["preprocessing"] not in IMAGE_STYLES:
        raise MnistkitError(
            f"{path}: checkpoint preprocessing {metadata['preprocessing']!r} is not one of "
            f"{', '.join(IMAGE_STYLES)} (a newer mnistkit may have written it: upgrade mnistkit)"
        )


def _is_name(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_NAME_CHARS and value.isprintable()


def _check_params(path: Path, params: dict[str, np.ndarray], metadata: dict[str, Any]) -> None:
    expected = param_shapes(metadata["architecture"])
    missing = sorted(set(expected) - set(params))
    unexpected = sorted(set(params) - set(expected))
    if missing or unexpected:
        raise MnistkitError(
            f"{path}: tensors disagree with the architecture "
            f"(missing: {', '.join(missing) or 'none'}; unexpected: {', '.join(unexpected) or 'none'})"
        )
    for name, shape in expected.items():
        tensor = params[name]
        if tuple(tensor.shape) != tuple(shape) or tensor.dtype != np.float32:
            raise MnistkitError(
                f"{path}: tensor {name} is {tensor.dtype}{list(tensor.shape)}, "
                f"the architecture needs float32{list(shape)}"
            )
        if not np.isfinite(tensor).all():
            raise MnistkitError(f"{path}: tensor {name} holds NaN or infinite values")
