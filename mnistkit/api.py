"""mnistkit from Python, for notebooks and scripts: the functions the commands call, with
defaults that suit an interactive session. `import mnistkit` exposes these names.

    import mnistkit
    arrays = mnistkit.load_mnist("data")            # downloads and parses once, then cached
    fashion = mnistkit.load_dataset("fashion-mnist")  # data/fashion-mnist/, as make all keeps it
    model = mnistkit.train(arrays, preset="mlp", epochs=3)
    model.predict(arrays["test_images"][:10])      # digits, with numpy alone
    mnistkit.evaluate(model, arrays).accuracy
    mnistkit.predict_images(model, ["my-digit.png"])
    mnistkit.draw_confusion(mnistkit.evaluate(model, arrays))   # a PIL image; a notebook shows it
    model.save("models/notebook.safetensors")    # for mnistkit predict, eval, serve

jax is imported only by `train`; everything else runs on numpy and Pillow.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import io
import operator
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mnistkit import interrupts
from mnistkit.arrays import (
    FAINTEST_INK,
    FLAT_PIXELS,
    UNSTANDARDIZE,
    arrays_sha256,
    check_arrays,
    check_finite,
    check_split,
    dataset_name,
    file_sha256,
    image_fixes,
    labels_as_uint8,
    load_arrays,
    named_if_unnamed,
    on_light_paper,
    save_arrays,
    too_faint,
    unnamed,
)
from mnistkit.atomic import same_path, written_in_place
from mnistkit.checkpoint import Checkpoint, check_checkpoint_name, load_checkpoint, save_checkpoint
from mnistkit.config import (
    PRESETS,
    TrainConfig,
    check_resume_options,
    config_from_options,
    resume_config,
    scalar_setting,
)
from mnistkit.datasets import DEFAULT_DATASET, IMAGE_SHAPE, dataset_spec
from mnistkit.errors import BadArrays, Interrupted, MnistkitError
from mnistkit.evaluation import Evaluation, check_same_classes, evaluate_arrays
from mnistkit.image_files import LoadedDigit, load_one
from mnistkit.inputs import input_path
from mnistkit.mirrors import DEFAULT_CACHE_DIR, MIRROR_ENV, mirror_list, split_mirrors
from mnistkit.predict import Prediction, Unreadable, predict_loaded, predict_paths
from mnistkit.run_state import state_path
from mnistkit.terms import check_keywords, keywords_checked
from mnistkit.worker_pool import workers_fork

__all__ = [
    "PRESETS",
    "BadArrays",
    "MnistkitError",
    "Model",
    "TrainConfig",
    "download",
    "draw_confusion",
    "draw_curves",
    "draw_embedding",
    "draw_samples",
    "draw_weights",
    "evaluate",
    "load",
    "load_arrays",
    "load_dataset",
    "load_mnist",
    "predict_images",
    "train",
]


class Model:
    """A trained model: its checkpoint in memory. It predicts with numpy alone."""

    def __init__(self, checkpoint: Checkpoint, history: Sequence[Mapping[str, Any]] = ()) -> None:
        self.checkpoint = checkpoint
        self.history = list(history) or list(checkpoint.metadata.get("history", []))

    @property
    def classes(self) -> list[int]:
        """Each output's label in its dataset (MNIST: the digit)."""
        return list(self.checkpoint.classes)

    @property
    def class_names(self) -> list[str]:
        """Each output's name: "7", "Ankle boot", "k"."""
        return list(self.checkpoint.class_names)

    @property
    def architecture(self) -> dict[str, Any]:
        return self.checkpoint.architecture

    @property
    def metrics(self) -> dict[str, Any]:
        return self.checkpoint.metadata.get("metrics", {})

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """Probabilities (N, classes) for uint8 MNIST-style images (N, 28, 28), or one (28, 28)."""
        return self.checkpoint.predict_probabilities(_image_batch(images))

    def predict(self, images: np.ndarray) -> np.ndarray:
        """The label (MNIST: the digit) of each uint8 image (N, 28, 28), or of one (28, 28)."""
        return np.asarray(self.classes)[self.predict_proba(images).argmax(axis=1)]

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the checkpoint (atomically), for `mnistkit predict` and friends."""
        checkpoint = self.checkpoint
        check_checkpoint_name(path)
        save_checkpoint(path, checkpoint.params, checkpoint.metadata, checkpoint.optimizer_state)

    def __repr__(self) -> str:
        accuracy = self.metrics.get("test_accuracy")
        scored = f", test accuracy {accuracy:.2%}" if isinstance(accuracy, float) else ""
        dataset = self.checkpoint.dataset
        of = "" if dataset == DEFAULT_DATASET else f" of {dataset}"
        stopped = f", {self.checkpoint.stopped_midway}" if self.checkpoint.stopped_midway else ""
        return f"<mnistkit.Model {self.architecture['model']}{of}, classes {self.classes}{scored}{stopped}>"


# What Model.predict and predict_images say of the arrays' dict, given where images go.
_NOT_A_DICT_OF_ARRAYS = "not a dict of arrays; for a split of them: model.predict(arrays['test_images'])"


def _image_batch(images: np.ndarray) -> np.ndarray:
    """Uint8 images (N, 28, 28) from an array, one image, or a list of them (28x28 gray PIL
    images too, as torchvision's MNIST gives them); files and other pictures are
    predict_images' to prepare."""
    expected = "expected uint8 images (N, 28, 28) as MNIST's arrays hold them"
    to_predict_images = "for image files and pictures: mnistkit.predict_images(model, images)"
    if isinstance(images, Mapping):
        raise TypeError(f"{expected}, {_NOT_A_DICT_OF_ARRAYS}")
    if isinstance(images, str | os.PathLike | bytes | io.IOBase):
        raise TypeError(f"{expected}, not a {type(images).__name__}; {to_predict_images}")
    given = images
    pictures = [images] if isinstance(images, Image.Image) else images if isinstance(images, list) else []
    if any(isinstance(picture, Image.Image) and picture.mode == "P" for picture in pictures):
        # numpy reads its palette's indices, which are no brightness: confident nonsense
        raise BadArrays(
            f"{expected}, not a palette image (mode P), whose pixels are indices into its colours; "
            "give picture.convert('L'), or mnistkit.predict_images(model, images)"
        )
    try:
        images = np.asarray(images)
    except ValueError:  # numpy's "inhomogeneous shape" for a list of pictures of other sizes
        raise BadArrays(
            f"expected uint8 images (N, 28, 28), got images of different shapes; {to_predict_images}"
        ) from None
    if images.shape == (0,):  # [] : no images, no predictions
        images = np.zeros((0, *IMAGE_SHAPE), np.uint8)
    if images.dtype.kind in "USO":  # paths, objects numpy cannot stack, or no array at all (None)
        what = f"{images.dtype} {images.shape}"
        if images.ndim == 0:
            what = "None" if given is None else f"a {type(given).__name__}"
        raise TypeError(f"{expected}, not {what}; {to_predict_images}")
    check_finite(images, "images")
    given_shape = images.shape
    given_one = given_shape == IMAGE_SHAPE
    if given_one:
        images = images[None]
    if images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE or images.dtype != np.uint8:
        hints = image_fixes(images)
        hint = f" (give {' and '.join(hints)})" if hints else ""
        if not hints and images.ndim in (3, 4) and images.shape[-1] in (3, 4):
            hint = "; colour pictures: mnistkit.predict_images(model, images) reads them"
        elif not hints and images.ndim in (2, 3) and min(images.shape[-2:]) > 1:
            hint = "; for a picture of another size: mnistkit.predict_images(model, picture) prepares it"
        raise BadArrays(f"expected uint8 images of shape (N, 28, 28), got {images.dtype} {given_shape}{hint}")
    faint = too_faint(images)
    if faint:
        raise BadArrays(f"expected pixels 0-255, got {faint[0]} (give {faint[1]})")
    light = on_light_paper(images)
    if light:
        which = "the image" if given_one else f"image {light[0]}"
        raise BadArrays(
            f"{which} is dark on light paper (its edge averages {light[1]:.0f} of 255), where the "
            "model's dataset has them light on black: give 255 - images, or "
            "mnistkit.predict_images(model, images), which prepares pictures as people draw them"
        )
    return images


@keywords_checked
def download(
    folder: str | os.PathLike[str] = "data/raw",
    mirrors: Sequence[str] | str | os.PathLike[str] = (),
    force: bool = False,
    timeout_s: float = 30.0,
    dataset: str = DEFAULT_DATASET,
    cache_dir: str | os.PathLike[str] = DEFAULT_CACHE_DIR,
) -> list[Path]:
    """`mnistkit fetch`: a dataset's four verified files in `folder` (kept if already valid).
    Mirrors: those given (a list, or one string of them separated as $MNISTKIT_MIRROR's are),
    then $MNISTKIT_MIRROR, then the dataset's public ones."""
    from mnistkit.fetch import fetch

    input_path(folder, "a folder")
    if isinstance(mirrors, str):
        mirrors = split_mirrors(mirrors)
    elif isinstance(mirrors, os.PathLike):
        mirrors = [os.fspath(mirrors)]
    else:  # a list of folders may hold pathlib's paths
        mirrors = [os.fspath(mirror) if isinstance(mirror, os.PathLike) else mirror for mirror in mirrors]
    urls = mirror_list(mirrors, os.environ.get(MIRROR_ENV), dataset=dataset)
    return fetch(folder, urls, force=force, timeout_s=timeout_s, dataset=dataset, cache_dir=cache_dir)


def load_dataset(
    name: str = DEFAULT_DATASET, folder: str | os.PathLike[str] = "data", **download_options: Any
) -> dict[str, np.ndarray]:
    """A dataset's arrays (for a dataset other than MNIST, with its `dataset` and `class_names`),
    downloaded and parsed the first time, read from there after, in the files
    `make all DATASET=name` uses: `folder`/raw and
    `folder`/mnist.npz for MNIST, `folder`/NAME/raw and `folder`/NAME/NAME.npz for the others.
    A folder that holds the dataset's four IDX files itself (such as data/raw) is read as it
    is; files published for another dataset are refused by their content."""
    from mnistkit.idx import idx_files, read_mnist_dir

    check_keywords(download_options, _DOWNLOAD_KEYWORDS, "load_dataset()")
    input_path(folder, "a folder")
    if Path(folder).is_file():
        raise ValueError(f"{folder} is a file: give the folder that holds it, or read it with load_arrays")
    dataset_spec(name, "name")  # an unknown name is refused before any file is looked for
    if all(path.exists() for path in idx_files(folder, name)):
        return read_mnist_dir(folder, name)
    folder = Path(folder) if name == DEFAULT_DATASET else Path(folder) / name
    npz = folder / f"{name}.npz"
    if not npz.exists() or download_options.get("force"):  # force: downloaded and parsed again
        download(folder / "raw", dataset=name, cache_dir=folder.parent / "cache", **download_options)
        save_arrays(npz, read_mnist_dir(folder / "raw", name))
    try:
        return load_arrays(npz)
    except MnistkitError as error:  # damaged since it was written here: made again if deleted
        source = f"from {folder / 'raw'}" if (folder / "raw").is_dir() else "from a download"
        raise type(error)(
            f"{error}; delete it, and this call makes it again {source} (force=True downloads it too)"
        ) from None


def load_mnist(folder: str | os.PathLike[str] = "data", **download_options: Any) -> dict[str, np.ndarray]:
    """MNIST's four arrays, downloaded to `folder`/raw and parsed to `folder`/mnist.npz the
    first time, read from there after (the same files `make all` uses)."""
    if "dataset" in download_options:  # load_dataset's parameter, not a download option here
        raise TypeError(
            f"load_mnist() loads MNIST; for another dataset: load_dataset({download_options['dataset']!r})"
        )
    check_keywords(download_options, _DOWNLOAD_KEYWORDS, "load_mnist()")
    return load_dataset(DEFAULT_DATASET, folder, **download_options)


# download()'s keywords that load_dataset passes on: all but those it sets itself.
_DOWNLOAD_KEYWORDS = tuple(
    sorted(set(inspect.signature(download).parameters) - {"folder", "dataset", "cache_dir"})
)


def _checked(
    arrays: Mapping[str, np.ndarray] | str | os.PathLike[str],
    splits: Sequence[str],
    dataset: str | None = None,
    call: str = "arrays",
    names: Sequence[str] | None = None,
) -> dict:
    """The arrays, or those of an .npz given by its path, checked as `mnistkit` checks an
    .npz: float images in [0, 1] would otherwise train a model that guesses. Keras'
    `load_data()` pairs ((x_train, y_train), (x_test, y_test)) are taken too. Arrays that name
    no dataset are named after the published dataset whose labels they hold; if none,
    `dataset`'s when it is given (with `names`, where mnistkit does not know it)."""
    source, from_file = _source(arrays), isinstance(arrays, str | os.PathLike)
    if from_file:
        arrays = load_arrays(arrays, splits=splits, dataset=dataset, names=names)
    elif _is_keras_pairs(arrays):
        (train_images, train_labels), (test_images, test_labels) = arrays
        arrays = {
            "train_images": train_images,
            "train_labels": train_labels,
            "test_images": test_images,
            "test_labels": test_labels,
        }
    elif _is_one_pair(arrays) and len(splits) == 1:  # evaluate(model, (x_test, y_test))
        images, labels = arrays
        arrays = {f"{splits[0]}_images": images, f"{splits[0]}_labels": labels}
    elif not isinstance(arrays, Mapping):
        one_split = ", or for one split (images, labels)" if len(splits) == 1 else ""
        raise TypeError(
            f"{call}: the arrays are a dict (train_images, train_labels, test_images, test_labels), "
            f"an .npz's path or Keras' ((x_train, y_train), (x_test, y_test)){one_split}, "
            f"not a {type(arrays).__name__}"
        )
    arrays = labels_as_uint8({key: np.asarray(value) for key, value in arrays.items()}, source)
    arrays = named_if_unnamed(arrays, dataset, names)
    check_arrays(arrays, source, splits, fixes=not from_file)
    return arrays


def _source(arrays: Any) -> str:
    """What errors call the arrays: the .npz's path, or "arrays"."""
    return str(arrays) if isinstance(arrays, str | os.PathLike) else "arrays"


def _checked_for(
    checkpoint: Checkpoint,
    arrays: Mapping[str, np.ndarray] | str | os.PathLike[str],
    splits: Sequence[str],
    call: str,
) -> dict:
    """`_checked` arrays that hold the model's classes. Arrays or an `.npz` that name no
    dataset and hold no published dataset's labels (a part of Keras'
    `fashion_mnist.load_data()`, a dict of one's own) are taken as the model's."""
    source = _source(arrays)
    dataset, names = checkpoint.naming()
    checked = _checked(arrays, splits, dataset, call, names)
    check_same_classes(checkpoint, checked, source)
    return checked


def _is_keras_pairs(arrays: Any) -> bool:
    return (
        isinstance(arrays, tuple | list)
        and len(arrays) == 2
        and all(isinstance(pair, tuple | list) and len(pair) == 2 for pair in arrays)
        # images first in each pair, not a label: ([image, image], [3, 7]) is one split's pair
        and all(np.ndim(pair[0]) >= 2 for pair in arrays)
    )


def _is_one_pair(arrays: Any) -> bool:
    """(images, labels) of one split: two arrays (numpy's, jax's, torch's) or lists, as a
    dict's arrays may be."""
    return (
        isinstance(arrays, tuple | list)
        and len(arrays) == 2
        and all(hasattr(part, "__array__") or isinstance(part, list | tuple) for part in arrays)
    )


def _model(model: Model | str | os.PathLike[str], call: str) -> Model:
    """The model given to `call` (its usage, as "evaluate(model, arrays)"), loaded if a path."""
    if isinstance(model, Model):
        return model
    if isinstance(model, str | os.PathLike):
        return load(model)
    if type(model).__qualname__ == Model.__qualname__ and type(model).__module__ == Model.__module__:
        raise TypeError(
            f"{call}: the model is a Model of an earlier import of mnistkit (its module was reloaded "
            "since, as %autoreload does): load or train it again"
        )
    raise TypeError(
        f"{call}: the model is a mnistkit.Model or a checkpoint's path, not a {type(model).__name__}"
    )


# Stop (SIGINT) raising at once landed in jax's callbacks, where Python swallowed it and
# training went on, or in its compiler; held, it is taken between chunks of batches.
@interrupts.held_for_stop(notice=interrupts.STOPPING_NOTICE)
def train(
    arrays: Mapping[str, np.ndarray] | str | os.PathLike[str],
    config: TrainConfig | str | None = None,
    *,
    preset: str | None = None,
    output: str | os.PathLike[str] | None = None,
    resume: Model | str | os.PathLike[str] | None = None,
    restart: bool = False,
    history: str | os.PathLike[str] | None = None,
    save_every: int = 1,
    devices: int | None = None,
    verbose: bool = True,
    dataset: str | None = None,
    **options: Any,
) -> Model:
    """Train a model as `mnistkit train` does: `config`, or a preset (by default the one named
    like `model=`, else `mlp`; as it is for the arrays' dataset) with `options` overriding its
    settings (`epochs=3`, `hidden=(256,)`, `ensemble=5`, ...); `train(arrays, "fast")` names the
    preset. `arrays` may be an .npz's path. With `output`, the checkpoint is written there too,
    and a run stopped midway (Ctrl-C, the notebook's Stop) continues when called again with
    the same data and settings, unless `restart`; `save_every` saves that state every N epochs
    (0: only when stopped). `resume` (a model, or a checkpoint's path) trains it further with
    its own settings, to a new total of `epochs`. `history` writes one JSON line per epoch
    there; `devices` splits each batch over that many devices. `verbose` prints one line per
    epoch to stderr. `dataset` names the dataset of arrays that name none (Keras'
    `fashion_mnist.load_data()`: `dataset="fashion-mnist"`); without it they are taken as
    MNIST's digits, with a line saying so (once).

    The presets (`mnistkit.PRESETS`): logreg, seed, mlp, mlp-best, fast, cnn, cnn-best,
    embedding, 3v8. The options are the settings of `mnistkit.TrainConfig` (its help lists
    each), spelled as the command's options with `_` for `-`: `train(arrays, "cnn",
    epochs=3, lr=1e-3, augment="distort")`."""
    from mnistkit.training import train as run_training

    def log(message: str) -> None:
        if verbose:  # one write: the stop notice's thread may write at any moment
            sys.stderr.write(f"{message}\n")
            sys.stderr.flush()

    check_keywords(options, _TRAIN_KEYWORDS, "train()", _TRAIN_PARAMETERS)
    _check_train_call(arrays, config)
    if isinstance(config, str):
        if preset not in (None, config):
            raise ValueError(
                f"give the preset once: train(arrays, {config!r}) or preset={preset!r}, not both"
            )
        config, preset = None, config
    if config is not None and (preset or options):
        changed = ", ".join(f"{name}={value!r}" for name, value in options.items()) or "..."
        raise ValueError(
            f"give a config, or a preset and options, not both; a config with other settings is "
            f"dataclasses.replace(config, {changed})"
        )
    if devices is not None:
        devices = _whole_number(devices, "devices", "a number of devices, 1 or more", 1)
    save_every = _whole_number(save_every, "save_every", "a number of epochs, 0 or more", 0)
    _check_files_apart(
        {"output=": output, "history=": history, "the run state beside output=": state_path(output)},
        {"arrays": arrays, "resume": resume},
    )
    options = _classes_named(options)
    if dataset is not None:
        dataset_spec(dataset)  # one of those there are
    resumed = None if resume is None else _resumed_model(resume, config, preset, options, dataset)
    is_file, data_name = isinstance(arrays, str | os.PathLike), _source(arrays)
    if resumed is None:
        checked = _checked(arrays, ("train", "test"), dataset, "train(arrays, preset)")
    else:  # arrays that name no dataset are the model's
        checked = _checked_for(resumed, arrays, ("train", "test"), "train(arrays, resume=model)")
    if dataset is not None and dataset_name(checked) != dataset:
        raise MnistkitError(f"{data_name}: holds {dataset_name(checked)}, not dataset={dataset!r}")
    tell_unnamed = False
    if resumed is None and unnamed(checked) and verbose:
        told = arrays_sha256(checked)
        tell_unnamed = told not in _told_unnamed  # once: a notebook trains on them again and again
    # A saved state of a run stopped midway, and the model a run resumes, are matched by the
    # `.npz`'s SHA-256, as the command's, and by the arrays' own (training.train's).
    file_hash = file_sha256(arrays) if is_file else ""
    arrays = checked
    if resumed is not None:
        done = int(resumed.metadata.get("metrics", {}).get("epochs", 0))
        config = resume_config(resumed.metadata.get("config", {}), _resume_source(resume), options, done)
    elif config is None:
        config = config_from_options(preset, options, dataset_name(arrays))
    try:
        result = run_training(
            arrays,
            config,
            output,
            history_path=history,
            resume_from=resumed,
            data_sha256=file_hash,
            data_name=data_name,
            tell_unnamed=tell_unnamed,
            devices=devices,
            restart=restart,
            save_every=save_every,
            log=log,
            progress=lambda epoch, epochs, fraction: interrupts.raise_if_interrupted(),
        )
        # A Stop held through the last evaluation and save: it was said to be taken, and a
        # sweep's loop went on to its next run as if it had never come.
        interrupts.raise_if_interrupted(_trained_to_the_end(output))
    except Interrupted as stop:  # past training's checks: the line was said
        if tell_unnamed:
            _told_unnamed.add(told)
        interrupts.settle_notice()
        log(f"interrupted: {stop.outcome}")
        raise
    if tell_unnamed:  # not by a call its checks refused, which says nothing of the arrays
        _told_unnamed.add(told)
    return Model(result.checkpoint, result.history)


def _trained_to_the_end(output: str | os.PathLike[str] | None) -> str:
    if output is not None:
        return f"training had ended; the model is saved to {output}"
    return "training had ended; the model is not returned (train(..., output=PATH) keeps it)"


def _check_train_call(arrays: Any, config: Any) -> None:
    """The arguments of `train(arrays, config)` in the places where they go: a preset named
    first read as a missing file, and a preset's entry, a dict or a number as the config broke
    inside training with an AttributeError."""
    call = "train(arrays, preset)"
    if isinstance(arrays, str) and arrays in PRESETS and not os.path.exists(arrays):
        raise TypeError(f"{call}: the arrays come first, then the preset: train(arrays, {arrays!r})")
    if config is None or isinstance(config, str | TrainConfig):
        return
    named = [name for name, preset in PRESETS.items() if preset is config]
    if named:
        fix = f"name it: train(arrays, {named[0]!r})"
    elif isinstance(config, Mapping):
        fix = "settings go as keywords: train(arrays, **settings)"
    else:
        fix = "as train(arrays, 'fast'), or train(arrays, 'mlp', epochs=3)"
    kind = type(config).__name__
    article = "an" if kind[0] in "aeiouAEIOU" else "a"
    raise TypeError(f"{call}: the preset is a name or a TrainConfig, not {article} {kind}; {fix}")


_TRAIN_PARAMETERS = tuple(
    name for name in inspect.signature(train).parameters if name not in ("arrays", "config", "options")
)
_told_unnamed: set[str] = set()  # the arrays `train` has said it takes as MNIST's, by their SHA-256


def _resumed_model(
    resume: Model | str | os.PathLike[str],
    config: TrainConfig | None,
    preset: str | None,
    options: Mapping[str, Any],
    dataset: str | None,
) -> Checkpoint:
    """The checkpoint `resume` names, once it is clear nothing given would mix two runs."""
    if config is not None:
        raise ValueError("resume= continues with the model's own settings: give no config")
    check_resume_options({**options, **({"preset": preset} if preset else {})})
    checkpoint = _model(resume, "train(arrays, resume=model)").checkpoint
    if dataset not in (None, checkpoint.dataset):
        source = _resume_source(resume)
        raise MnistkitError(f"{source}: trained on {checkpoint.dataset}, not dataset={dataset!r}")
    return checkpoint


def _whole_number(value: Any, name: str, what: str, least: int) -> int:
    """`value` as an int (numpy's integers too), or ValueError naming the keyword."""
    try:
        number = operator.index(value)
    except TypeError:
        number = None
    if isinstance(value, bool) or number is None or number < least:
        raise ValueError(f"{name} is {what}, got {value!r}")
    return number


def _check_files_apart(outputs: Mapping[str, Any], inputs: Mapping[str, Any]) -> None:
    """As a command checks its files: no output (named as `outputs` name them: "output=") is
    an input file or another output; only `output=` the `resume=` checkpoint's path continues
    a model in its own file."""
    written = [(name, path) for name, path in outputs.items() if path is not None]
    read = [(name, path) for name, path in inputs.items() if isinstance(path, str | os.PathLike)]
    for index, (name, path) in enumerate(written):
        for other, other_path in written[:index]:
            if same_path(path, other_path):
                raise ValueError(f"{path}: {other} and {name} would both write to it")
        if written_in_place(path):
            continue
        for input_name, given in read:
            if same_path(path, given) and (input_name, name) != ("resume", "output="):
                raise ValueError(f"{path}: {name} would overwrite the {input_name} given")


def _resume_source(resume: Model | str | os.PathLike[str]) -> str:
    return str(resume) if isinstance(resume, str | os.PathLike) else "resume"


@keywords_checked
def load(path: str | os.PathLike[str]) -> Model:
    """A checkpoint written by `mnistkit train` (or `Model.save`)."""
    return Model(load_checkpoint(path))


# What predict_images reads: a file's path, bytes or binary file object, a PIL image, a numpy array.
ImageSource = str | os.PathLike | bytes | bytearray | memoryview | io.IOBase | Image.Image | np.ndarray


@keywords_checked
def predict_images(
    model: Model | str | os.PathLike[str],
    images: Iterable[ImageSource] | ImageSource,
    preprocess: bool = True,
    errors: str = "raise",
) -> list[Prediction] | list[Prediction | Unreadable]:
    """`mnistkit predict`: each image (or the one given) prepared as the model's dataset made
    its images, then predicted. An image is a file's path, a file's bytes (an upload widget's)
    or the file open in binary (`open(path, "rb")`, `io.BytesIO`), a PIL image, or a numpy
    array of any size: gray (H, W) or colour (H, W, 3 or 4), uint8 or floats in [0, 1] (a
    stack (N, H, W) is N images, so torch's (3, H, W) colour is given as (H, W, 3)). Those
    in memory are named `<image N>` (N their place in the list, from 0) in `Prediction.path`
    and in errors. Raises MnistkitError for the first that cannot be read, or with
    `errors="keep"` puts an `Unreadable` (`path`, `error`) in its place and reads on, as the
    command does (a service's batch of uploads with one broken). An array that is no picture
    raises BadArrays, a ValueError too, either way, before any file is read."""
    checkpoint = _model(model, "predict_images(model, images)").checkpoint
    preprocess = scalar_setting("preprocess", preprocess, bool)  # "no", being text, is true
    if errors not in ("raise", "keep"):
        raise MnistkitError(f'errors={errors!r} is not one of "raise", "keep"')
    if isinstance(images, Mapping):  # the arrays' dict: its keys would be taken as paths
        raise TypeError(f"predict_images reads images, {_NOT_A_DICT_OF_ARRAYS}")
    images = _as_numpy(images)
    if isinstance(images, np.ndarray) and (images.ndim == 4 or (images.ndim == 3 and images.shape[2] > 4)):
        images = list(images)  # a stack of images, as test_images[:8]
    elif isinstance(images, ImageSource) or not isinstance(images, Iterable):
        images = [images]  # one image; anything else is refused below
    images = [_as_numpy(image) for image in images]
    for image in images:
        if not isinstance(image, ImageSource):
            raise TypeError(
                "predict_images reads image files' paths or bytes, files open in binary, PIL images "
                f"and numpy arrays, not a {type(image).__name__}"
            )
    if all(isinstance(image, str | os.PathLike) for image in images):
        # A script that trained first (jax's threads forbid fork) reads its files itself.
        workers = None if workers_fork() else 1
        results = predict_paths(
            checkpoint, map(str, images), preprocess=preprocess, top_k=10, workers=workers
        )
    else:  # read here, one after the other: a notebook's images are few
        loaded = [
            _load_image(image, place, preprocess, checkpoint.preprocessing)
            for place, image in enumerate(images)
        ]
        results = predict_loaded(checkpoint, [loaded], top_k=10)
    predictions: list[Prediction | Unreadable] = []
    with contextlib.closing(results):  # the first bad image stops the workers too
        for result in results:
            if isinstance(result, Prediction):
                predictions.append(result)
            elif errors == "keep":
                predictions.append(Unreadable(result.path, result.error))
            else:
                raise MnistkitError(result.error)
    return predictions


def _as_numpy(image: Any) -> Any:
    """A jax or torch array as numpy's; anything else as it is."""
    if hasattr(image, "__array__") and not isinstance(image, np.ndarray | Image.Image):
        return np.asarray(image)
    return image


def _load_image(image: ImageSource, place: int, preprocess: bool, style: str) -> LoadedDigit:
    """One image of `predict_images`, read as `predict` reads a file."""
    if isinstance(image, str | os.PathLike):
        return load_one(str(image), preprocess, style)
    name = f"<image {place}>"
    if isinstance(image, io.TextIOBase):  # before reading: an image's bytes are no UTF-8
        return LoadedDigit(name, None, f'{name}: a file open as text; open it in binary, open(path, "rb")')
    if isinstance(image, io.IOBase):  # read whole, not line by line as iterating it would
        image = image.read()
    if isinstance(image, bytes | bytearray | memoryview):
        return load_one(name, preprocess, style, content=bytes(image))
    picture = image if isinstance(image, Image.Image) else _array_picture(image, name)  # or BadArrays
    return load_one(name, preprocess, style, picture=picture)


def _array_picture(array: np.ndarray, name: str) -> Image.Image:
    """A numpy image as Pillow holds it: uint8 as it is, floats in [0, 1] scaled to 255."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    elif array.ndim == 3 and array.shape[0] == 1 and array.shape[2] not in (3, 4):  # torch's (1, H, W)
        array = array[0]
    if array.ndim in (1, 2) and array.shape[-1] == FLAT_PIXELS:  # no guess: a picture may be 784 wide
        raise BadArrays(
            f"{name}: array of shape {array.shape}: flat digits, as the tutorials keep them? Give "
            f"images.reshape(-1, 28, 28); a picture {FLAT_PIXELS} pixels wide, give as a PIL image"
        )
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))) or array.size == 0:
        raise BadArrays(
            f"{name}: array of shape {array.shape}, expected (H, W) gray or (H, W, 3 or 4) colour"
        )
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif np.issubdtype(array.dtype, np.floating):
        check_finite(array, name)
        if array.min() < 0 or array.max() > 1:
            standardized = array.min() < 0  # as a model's input
            if standardized:
                fix = f"give {UNSTANDARDIZE.format(array='image')}"
            elif FAINTEST_INK < array.max() <= 255:  # pixels 0-255 kept as floats, as a tutorial's
                fix = "pixels 0 to 255 as floats: give image / 255"
            else:
                fix = "or give uint8 pixels, 0 to 255"
            raise BadArrays(f"{name}: float pixels must lie in [0, 1] ({fix})")
        array = np.round(array * 255)
    elif not np.issubdtype(array.dtype, np.integer) or array.min() < 0 or array.max() > 255:
        fix = "; give (image // 257).astype(np.uint8) for 16-bit pixels" if array.dtype == np.uint16 else ""
        raise BadArrays(f"{name}: {array.dtype} pixels, expected uint8 (0 to 255) or floats in [0, 1]{fix}")
    elif faint := too_faint(array, "image"):  # read as 0-255 it would be a blank page
        raise BadArrays(f"{name}: {faint[0]}, expected 0-255 (give {faint[1]})")
    return Image.fromarray(array.astype(np.uint8), "L" if array.ndim == 2 else "RGBA"[: array.shape[2]])


@keywords_checked
def evaluate(
    model: Model | str | os.PathLike[str],
    arrays: Mapping[str, np.ndarray] | str | os.PathLike[str],
    split: str = "test",
) -> Evaluation:
    """`mnistkit eval`: accuracy, loss, confusion matrix and per-class figures on a split (of
    the arrays, of an .npz given by its path, or the split's (images, labels); the model may
    be given by its path too).
    Images of classes the model has not are left out, with a line on stderr, as the command
    does; with nothing left to score, MnistkitError."""
    if not isinstance(split, str):
        keras = "; give images and labels as one pair: evaluate(model, (x_test, y_test))"
        raise TypeError(  # evaluate(model, x_test, y_test), as Keras' model.evaluate
            f"evaluate(model, arrays, split='test'): split is 'train' or 'test', got {type(split).__name__}"
            + (keras if isinstance(arrays, np.ndarray) else "")
        )
    check_split(split)
    call = f"evaluate(model, arrays, split={split!r})"
    checkpoint = _model(model, call).checkpoint
    source = _source(arrays)
    arrays = _checked_for(checkpoint, arrays, (split,), call)
    evaluation = evaluate_arrays(checkpoint, arrays[f"{split}_images"], arrays[f"{split}_labels"])
    if evaluation.skipped:
        noun = "image" if evaluation.skipped == 1 else "images"
        print(
            f"left out {evaluation.skipped} {noun} whose class is not among the model's classes",
            file=sys.stderr,
        )
    if evaluation.count == 0:
        raise MnistkitError(f"{source}: no {split} images to evaluate")
    return evaluation


_TRAIN_KEYWORDS = (*(field.name for field in dataclasses.fields(TrainConfig)), "ensemble", "digits")


def _classes_named(options: dict[str, Any]) -> dict[str, Any]:
    """`digits=`, as the commands' `--digits`, is `classes=`."""
    if "digits" not in options:
        return options
    if "classes" in options:
        raise ValueError("give classes= or digits= (the same option), not both")
    return {("classes" if name == "digits" else name): value for name, value in options.items()}


def draw_samples(
    arrays: Mapping[str, np.ndarray] | str | os.PathLike[str],
    model: Model | str | os.PathLike[str] | None = None,
    **options: Any,
) -> Image.Image:
    """`mnistkit render-samples`: a grid of digits, captioned with `model`'s predictions
    (options as the command's: split, select, count, classes, columns, scale, seed)."""
    from mnistkit.render import SampleOptions, samples_picture

    check_keywords(
        options, (*(field.name for field in dataclasses.fields(SampleOptions)), "digits"), "draw_samples()"
    )
    sample_options = SampleOptions(**_classes_named(options))
    call = "draw_samples(arrays, model)"
    checkpoint = _model(model, call).checkpoint if model is not None else None
    splits = (sample_options.split,)
    if checkpoint is None:
        arrays = _checked(arrays, splits, call=call)
    else:
        arrays = _checked_for(checkpoint, arrays, splits, call)
    grid, _ = samples_picture(arrays, sample_options, checkpoint, "data", "model")
    return grid.image


@keywords_checked
def draw_confusion(evaluation: Evaluation) -> Image.Image:
    """`mnistkit render-confusion`: the confusion matrix of an evaluation as a heat map."""
    from mnistkit.evaluation import Confusion
    from mnistkit.plots import confusion_image

    if not isinstance(evaluation, Evaluation):
        raise TypeError(
            f"draw_confusion draws an evaluation, not a {type(evaluation).__name__}: "
            "draw_confusion(mnistkit.evaluate(model, arrays))"
        )
    return confusion_image(
        Confusion(evaluation.classes, evaluation.confusion_matrix, class_names=evaluation.class_names)
    )


@keywords_checked
def draw_curves(history: Model | Sequence[Mapping[str, Any]] | str | os.PathLike[str]) -> Image.Image:
    """`mnistkit render-curves`: loss and accuracy per epoch of a model's training (a model,
    its history's records, a `--history` file's path or a checkpoint's)."""
    from mnistkit.history import checked_history, history_records
    from mnistkit.plots import curves_image

    if isinstance(history, str | os.PathLike):
        return curves_image(history_records(history)[0])
    records = history.history if isinstance(history, Model) else history
    if isinstance(records, Iterable) and not isinstance(records, Mapping | str | bytes):
        records = list(records)  # a generator of records, as a list's
    if not (
        isinstance(records, list | tuple) and all(isinstance(r, Mapping) and "epoch" in r for r in records)
    ):
        raise TypeError(
            "draw_curves(history): the history is a mnistkit.Model, its .history (a record per "
            f"epoch) or a history file's path, not a {type(history).__name__}"
        )
    return curves_image(
        checked_history([(f"history record {n}", r) for n, r in enumerate(records, 1)], "history")
    )


@keywords_checked
def draw_embedding(
    model: Model | str | os.PathLike[str],
    arrays: Mapping[str, np.ndarray] | str | os.PathLike[str],
    count: int = 2000,
    split: str = "test",
) -> Image.Image:
    """`mnistkit render-embedding`: digits in the model's 2-unit layer (train it with preset="embedding")."""
    from mnistkit.plots import embedding_image

    check_split(split)
    count = scalar_setting("count", count, int)
    call = "draw_embedding(model, arrays)"
    checkpoint = _model(model, call).checkpoint
    arrays = _checked_for(checkpoint, arrays, (split,), call)
    return embedding_image(
        checkpoint,
        arrays[f"{split}_images"],
        arrays[f"{split}_labels"],
        count,
        split=split,
        model_name=_model_name(model),
    )


@keywords_checked
def draw_weights(model: Model | str | os.PathLike[str]) -> Image.Image:
    """`mnistkit render-weights`: a logreg model's weights as one template per digit."""
    from mnistkit.plots import weights_image

    return weights_image(_model(model, "draw_weights(model)").checkpoint, _model_name(model))


def _model_name(model: Model | str | os.PathLike[str]) -> str:
    """What a picture's errors call the model: its checkpoint's path where one was given."""
    return str(model) if isinstance(model, str | os.PathLike) else "the model"
