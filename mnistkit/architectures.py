"""Every model mnistkit trains, in one table: how its architecture is built from the training
settings and checked when a checkpoint brings it, which tensors it has, and the names of its
numpy forward (`inference.py`: predict, eval, pictures) and its JAX apply (`models.py`:
training). A new model is one entry here plus those two functions.

An architecture is the plain dict a checkpoint stores, for example
`{"model": "mlp", "hidden": [128], "activation": "relu", "num_classes": 10}`; an ensemble
wraps one: `{"model": "ensemble", "members": 5, "member": {...}, "num_classes": 10}`, its
tensors named `member_{i}.{name}`. Any single model may say `"mirror_average": true` or
`"shift_average": true`: it predicts with the mean probabilities of several views of each image
(`image_views`). Pure Python, so that the settings and `mnistkit --help` read this table
without importing numpy or jax.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mnistkit.datasets import IMAGE_SHAPE
from mnistkit.errors import MnistkitError

Architecture = Mapping[str, Any]
Shapes = dict[str, tuple[int, ...]]

ACTIVATIONS = ("relu", "tanh")
# The settings of a single model that make it predict from several views of each image.
VIEW_FLAGS = ("mirror_average", "shift_average")
# A pixel down, up, right and left: (pixels, axis) of images (N, height, width).
ONE_PIXEL_SHIFTS = ((1, 1), (-1, 1), (1, 2), (-1, 2))
MAX_ENSEMBLE_MEMBERS = 1024
MAX_CLASSES = 1000
RUNNING_STATISTICS = ("mean", "var")
BATCH_NORM_EPSILON = 1e-5  # the same in the JAX model and the numpy forward


@dataclass(frozen=True)
class ModelKind:
    """One model family: its architecture from settings, its checks, tensors and forwards."""

    summary: str
    build: Callable[[Any, int], dict[str, Any]]
    check: Callable[[Architecture], None]
    param_shapes: Callable[[Architecture], Shapes]
    numpy_forward: str
    jax_apply: str


def _whole(value: Any, low: int = 1) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _check_widths(architecture: Architecture, key: str, allow_empty: bool) -> None:
    widths = architecture.get(key)
    if not isinstance(widths, list) or not all(_whole(width) for width in widths):
        raise MnistkitError(f"{key} must be a list of positive widths, got {widths!r}")
    if not widths and not allow_empty:
        raise MnistkitError(f"a {architecture['model']} needs at least one hidden layer")


def _check_activation(architecture: Architecture) -> None:
    if architecture.get("activation", "relu") not in ACTIVATIONS:
        raise MnistkitError(f"unknown activation {architecture.get('activation')!r}")


def dense_widths(architecture: Architecture, inputs: int) -> list[int]:
    """Widths of a dense stack from its inputs through the hidden layers to the classes."""
    return [inputs, *architecture.get("hidden", []), architecture["num_classes"]]


def dense_shapes(widths: list[int]) -> Shapes:
    shapes: Shapes = {}
    for index, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
        shapes[f"dense_{index}.kernel"] = (fan_in, fan_out)
        shapes[f"dense_{index}.bias"] = (fan_out,)
    return shapes


INPUT_SIZE = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]

# logreg and mlp -----------------------------------------------------------------------


def _build_logreg(config: Any, num_classes: int) -> dict[str, Any]:
    return {"model": "logreg", "num_classes": num_classes}


def _check_logreg(architecture: Architecture) -> None:
    if architecture.get("hidden"):
        raise MnistkitError("a logreg model has no hidden layers")


def _build_mlp(config: Any, num_classes: int) -> dict[str, Any]:
    architecture = {
        "model": "mlp",
        "hidden": list(config.hidden),
        "activation": config.activation,
        "num_classes": num_classes,
    }
    if config.linear_last_hidden:
        architecture["linear_last_hidden"] = True
    return architecture


def _check_mlp(architecture: Architecture) -> None:
    _check_widths(architecture, "hidden", allow_empty=False)
    _check_activation(architecture)
    if not isinstance(architecture.get("linear_last_hidden", False), bool):
        raise MnistkitError("linear_last_hidden must be true or false")


def _dense_model_shapes(architecture: Architecture) -> Shapes:
    return dense_shapes(dense_widths(architecture, INPUT_SIZE))


# cnn ----------------------------------------------------------------------------------


def _build_cnn(config: Any, num_classes: int) -> dict[str, Any]:
    """One `kernel_size` when every conv has the same (the form of earlier checkpoints)."""
    sizes = list(config.kernel_sizes)
    architecture: dict[str, Any] = {"model": "cnn", "channels": list(config.channels)}
    if len(set(sizes)) == 1:
        architecture["kernel_size"] = sizes[0]
    else:
        architecture["kernel_sizes"] = sizes
    if any(stride != 1 for stride in config.strides):
        architecture["strides"] = list(config.strides)
    if config.pools:
        architecture["pools"] = [bool(pool) for pool in config.pools]
    if config.batch_norm:
        architecture["batch_norm"] = True
    return architecture | {
        "hidden": list(config.hidden),
        "activation": config.activation,
        "num_classes": num_classes,
    }


def cnn_kernel_sizes(architecture: Architecture) -> list[int]:
    if "kernel_sizes" in architecture:
        return list(architecture["kernel_sizes"])
    return [architecture["kernel_size"]] * len(architecture["channels"])


def cnn_strides(architecture: Architecture) -> list[int]:
    return list(architecture.get("strides", [1] * len(architecture["channels"])))


def cnn_layers(architecture: Architecture) -> list[tuple[int, int, bool]]:
    """Each conv's kernel side, stride, and whether a 2x2 max pool follows it: by default one
    after each conv of stride 1."""
    strides = cnn_strides(architecture)
    pools = architecture.get("pools", [stride == 1 for stride in strides])
    return list(zip(cnn_kernel_sizes(architecture), strides, pools, strict=True))


def describe(architecture: Architecture) -> str:
    """One line a person reads: `CNN, conv 24 6x6 stride 2, 32 3x3 pool -> dense 256->10`."""
    outputs = "→".join(map(str, [*architecture.get("hidden", []), architecture["num_classes"]]))
    model = architecture["model"]
    if model == "ensemble":
        return f"ensemble of {architecture['members']} × {describe(architecture['member'])}"
    if model == "logreg":
        return f"logistic regression 784→{outputs}"
    if model == "mlp":
        return f"MLP 784→{outputs}, {architecture['activation']}"
    if model == "cnn":
        convs = ", ".join(
            f"{channels} {kernel}×{kernel}"
            + (f" stride {stride}" if stride != 1 else "")
            + (" pool" if pool else "")
            for channels, (kernel, stride, pool) in zip(
                architecture["channels"], cnn_layers(architecture), strict=True
            )
        )
        norm = ", batch norm" if architecture.get("batch_norm") else ""
        return f"CNN, conv {convs}{norm} → dense {outputs}"
    return str(model)


def cnn_feature_size(architecture: Architecture) -> int:
    """Inputs to the dense head: each 'valid' conv shrinks the image by its kernel (less one)
    and divides it by its stride, each 2x2 max pool halves it."""
    side, _ = _cnn_walk(architecture)
    return side * side * architecture["channels"][-1]


def cnn_shrink_problem(architecture: Architecture) -> str | None:
    """Why the convolutions leave nothing of a 28x28 image, or None."""
    return _cnn_walk(architecture)[1]


def _cnn_walk(architecture: Architecture) -> tuple[int, str | None]:
    """The image's side after the conv blocks, and the problem that stops them short, if one
    does: a kernel wider than the image it slides over, or a pool over a 1x1 image."""
    side = IMAGE_SHAPE[0]
    for index, (size, stride, pool) in enumerate(cnn_layers(architecture), start=1):
        if size > side:
            return side, f"conv {index}'s {size}x{size} kernel is wider than the {side}x{side} image it gets"
        side = (side - size) // stride + 1
        if pool and side < 2:
            return side, f"conv {index} leaves a 1x1 image, too small for its 2x2 pool"
        side = side // 2 if pool else side
    return side, None


def _check_cnn(architecture: Architecture) -> None:
    _check_widths(architecture, "channels", allow_empty=False)
    _check_widths(architecture, "hidden", allow_empty=True)
    _check_activation(architecture)
    sizes = architecture.get("kernel_sizes", [architecture.get("kernel_size")])
    if ("kernel_size" in architecture) == ("kernel_sizes" in architecture) or not (
        isinstance(sizes, list) and sizes and all(_whole(size) for size in sizes)
    ):
        raise MnistkitError(
            "a cnn needs kernel_size, or kernel_sizes with one per conv, as positive integers"
        )
    if "kernel_sizes" in architecture and len(sizes) != len(architecture["channels"]):
        raise MnistkitError("kernel_sizes must name one size per entry of channels")
    strides = architecture.get("strides", [1] * len(architecture["channels"]))
    if not (isinstance(strides, list) and len(strides) == len(architecture["channels"])) or not all(
        stride in (1, 2) and not isinstance(stride, bool) for stride in strides
    ):
        raise MnistkitError("strides must name 1 or 2 for each entry of channels")
    pools = architecture.get("pools", [])
    if not (isinstance(pools, list) and all(isinstance(pool, bool) for pool in pools)) or (
        "pools" in architecture and len(pools) != len(architecture["channels"])
    ):
        raise MnistkitError("pools must say true or false for each entry of channels")
    if not isinstance(architecture.get("batch_norm", False), bool):
        raise MnistkitError("batch_norm must be true or false")
    problem = cnn_shrink_problem(architecture)
    if problem is not None:
        raise MnistkitError(f"the convolutions shrink 28x28 images to nothing: {problem}")


def _cnn_shapes(architecture: Architecture) -> Shapes:
    """Per block a kernel and a bias, or with batch norm (which has its own offset) a kernel and
    the norm's scale, offset and running mean and variance; then the dense head."""
    shapes: Shapes = {}
    channels = [1, *architecture["channels"]]
    for index, size in enumerate(cnn_kernel_sizes(architecture)):
        fan_in, fan_out = channels[index], channels[index + 1]
        shapes[f"conv_{index}.kernel"] = (size, size, fan_in, fan_out)
        if architecture.get("batch_norm"):
            for name in ("scale", "offset", *RUNNING_STATISTICS):
                shapes[f"bn_{index}.{name}"] = (fan_out,)
        else:
            shapes[f"conv_{index}.bias"] = (fan_out,)
    return shapes | dense_shapes(dense_widths(architecture, cnn_feature_size(architecture)))


def is_running_statistic(name: str) -> bool:
    """Tensors the forward pass keeps up to date (batch norm's mean and variance), which no
    optimizer trains."""
    return name.rsplit(".", 1)[-1] in RUNNING_STATISTICS


MODEL_KINDS: dict[str, ModelKind] = {
    "logreg": ModelKind(
        "784->classes softmax regression",
        _build_logreg,
        _check_logreg,
        _dense_model_shapes,
        "dense_stack",
        "dense_stack",
    ),
    "mlp": ModelKind(
        "dense layers (--hidden) with ReLU or tanh",
        _build_mlp,
        _check_mlp,
        _dense_model_shapes,
        "dense_stack",
        "dense_stack",
    ),
    "cnn": ModelKind(
        "conv + max-pool blocks (--channels, --kernel-sizes, --pools) and a dense head",
        _build_cnn,
        _check_cnn,
        _cnn_shapes,
        "cnn",
        "cnn",
    ),
}
MODELS = tuple(MODEL_KINDS)

# Ensembles ----------------------------------------------------------------------------


def member_tensor_name(index: int, name: str) -> str:
    """An ensemble stores member i's tensor `dense_0.kernel` as `member_i.dense_0.kernel`."""
    return f"member_{index}.{name}"


def ensemble_size(architecture: Architecture) -> int:
    """The number of members: that of an ensemble, 1 for a single model."""
    return architecture["members"] if architecture["model"] == "ensemble" else 1


def member_architecture(architecture: Architecture) -> Architecture:
    return architecture["member"] if architecture["model"] == "ensemble" else architecture


def build_architecture(config: Any, num_classes: int) -> dict[str, Any]:
    """The architecture a TrainConfig trains: its model, or an ensemble of one per seed."""
    member = MODEL_KINDS[config.model].build(config, num_classes)
    for flag in VIEW_FLAGS:
        if getattr(config, flag):
            member[flag] = True
    if len(config.member_seeds) == 1:
        return member
    return {
        "model": "ensemble",
        "members": len(config.member_seeds),
        "member": member,
        "num_classes": num_classes,
    }


def check_architecture(architecture: Any) -> None:
    """Raise MnistkitError unless `architecture` is one mnistkit can build: a checkpoint may
    come from anywhere, so this is the one place an architecture read from a file is checked."""
    if not isinstance(architecture, dict):
        raise MnistkitError(f"architecture must be a JSON object, got {architecture!r}")
    if not _whole(architecture.get("num_classes"), 2) or architecture["num_classes"] > MAX_CLASSES:
        raise MnistkitError(
            f"num_classes must be 2 to {MAX_CLASSES}, got {architecture.get('num_classes')!r}"
        )
    model = architecture.get("model")
    if model == "ensemble":
        for flag in VIEW_FLAGS:
            if flag in architecture:
                raise MnistkitError(f"{flag} belongs to an ensemble's member, not to the ensemble")
        members, member = architecture.get("members"), architecture.get("member")
        if not _whole(members, 2) or members > MAX_ENSEMBLE_MEMBERS:
            raise MnistkitError(f"an ensemble needs 2 to {MAX_ENSEMBLE_MEMBERS} members, got {members!r}")
        if not isinstance(member, dict) or member.get("model") not in MODEL_KINDS:
            raise MnistkitError(f"ensemble member architecture {member!r} is not a single model")
        if member.get("num_classes") != architecture["num_classes"]:
            raise MnistkitError("ensemble members and the ensemble disagree on the number of classes")
        check_architecture(member)
        return
    if model not in MODEL_KINDS:
        raise MnistkitError(f"unknown model architecture {model!r}")
    for flag in VIEW_FLAGS:
        if not isinstance(architecture.get(flag, False), bool):
            raise MnistkitError(f"{flag} must be true or false")
    MODEL_KINDS[model].check(architecture)


def image_views(images: Any, architecture: Architecture, xp: Any) -> list[Any]:
    """The views of images (N, height, width) that a single model predicts from, with `xp`
    numpy or jax.numpy: the images; their mirror images with mirror_average; and each of those
    moved a pixel each way with shift_average (the edge row repeated, where MNIST's border is
    blank), as a digit may sit a pixel off where its centre of mass put it."""
    views = [images]
    if architecture.get("mirror_average"):
        views.append(images[:, :, ::-1])
    if architecture.get("shift_average"):
        views += [_shifted(view, pixels, axis, xp) for view in views for pixels, axis in ONE_PIXEL_SHIFTS]
    return views


def _shifted(images: Any, pixels: int, axis: int, xp: Any) -> Any:
    """Images moved `pixels` along `axis`, the edge row or column repeated."""
    size = images.shape[axis]
    return xp.take(images, xp.clip(xp.arange(size) - pixels, 0, size - 1), axis=axis)


def param_shapes(architecture: Architecture) -> Shapes:
    """The tensor names and shapes of a checked architecture, in a fixed order."""
    member = member_architecture(architecture)
    shapes = MODEL_KINDS[member["model"]].param_shapes(member)
    if architecture["model"] != "ensemble":
        return shapes
    return {
        member_tensor_name(index, name): shape
        for index in range(architecture["members"])
        for name, shape in shapes.items()
    }
