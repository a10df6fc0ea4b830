"""Model inference in numpy alone, so predict and eval start fast and never import jax.

Each architecture is described by a plain dict (stored in the checkpoint); `param_shapes`
says which tensors it has, `forward` computes its logits. The JAX models in `models.py`
compute the same functions for training; tests hold the two to 1e-5.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from mnistkit.errors import MnistkitError

Params = Mapping[str, np.ndarray]
Architecture = Mapping[str, Any]

IMAGE_SHAPE = (28, 28)
INPUT_SIZE = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]
MAX_ENSEMBLE_MEMBERS = 1024


def _dense_widths(architecture: Architecture) -> list[int]:
    hidden = [] if architecture["model"] == "logreg" else list(architecture["hidden"])
    return [INPUT_SIZE, *hidden, int(architecture["num_classes"])]


def _dense_shapes(architecture: Architecture) -> dict[str, tuple[int, ...]]:
    widths = _dense_widths(architecture)
    shapes: dict[str, tuple[int, ...]] = {}
    for index, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
        shapes[f"dense_{index}.kernel"] = (fan_in, fan_out)
        shapes[f"dense_{index}.bias"] = (fan_out,)
    return shapes


def _activation(name: str) -> Callable[[np.ndarray], np.ndarray]:
    if name == "relu":
        return lambda x: np.maximum(x, 0.0)
    if name == "tanh":
        return np.tanh
    raise MnistkitError(f"unknown activation {name!r}")


def dense_stack(
    params: Params, architecture: Architecture, inputs: np.ndarray, return_hidden: bool = False
) -> np.ndarray | tuple[np.ndarray, list[np.ndarray]]:
    """Logits of a logreg or MLP; with `return_hidden`, also every hidden layer's output."""
    activation = _activation(architecture.get("activation", "relu"))
    x = inputs.reshape(inputs.shape[0], -1).astype(np.float32, copy=False)
    layers = len(_dense_widths(architecture)) - 1
    hidden_outputs = []
    for index in range(layers):
        x = x @ params[f"dense_{index}.kernel"] + params[f"dense_{index}.bias"]
        if index < layers - 1:
            x = activation(x)
            hidden_outputs.append(x)
    return (x, hidden_outputs) if return_hidden else x


def _cnn_layers(architecture: Architecture) -> tuple[list[int], int]:
    """The conv channel counts and kernel size, checked: a checkpoint may come from anywhere."""
    channels = [int(c) for c in architecture["channels"]]
    kernel_size = int(architecture["kernel_size"])
    if not channels or min(channels) < 1 or kernel_size < 1:
        raise MnistkitError(f"cnn architecture needs positive channels and kernel_size, got {architecture!r}")
    return channels, kernel_size


def cnn_feature_size(architecture: Architecture) -> int:
    """Inputs to the dense head: each block is a 'valid' conv then a 2x2 pool."""
    channels, kernel_size = _cnn_layers(architecture)
    side = IMAGE_SHAPE[0]
    for _ in channels:
        side = (side - kernel_size + 1) // 2
    if side < 1:
        raise MnistkitError(f"cnn architecture shrinks 28x28 images to nothing: {architecture!r}")
    return side * side * channels[-1]


def _cnn_shapes(architecture: Architecture) -> dict[str, tuple[int, ...]]:
    channels, kernel_size = _cnn_layers(architecture)
    shapes: dict[str, tuple[int, ...]] = {}
    for index, (fan_in, fan_out) in enumerate(itertools.pairwise([1, *channels])):
        shapes[f"conv_{index}.kernel"] = (kernel_size, kernel_size, fan_in, fan_out)
        shapes[f"conv_{index}.bias"] = (fan_out,)
    widths = [cnn_feature_size(architecture), *architecture["hidden"], int(architecture["num_classes"])]
    for index, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
        shapes[f"dense_{index}.kernel"] = (int(fan_in), int(fan_out))
        shapes[f"dense_{index}.bias"] = (int(fan_out),)
    return shapes


def _conv2d_valid(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """(N, H, W, C) * (k, k, C, F): patches from shifted slices, then one matmul (im2col)."""
    size = kernel.shape[0]
    height, width = x.shape[1] - size + 1, x.shape[2] - size + 1
    patches = np.concatenate(
        [x[:, i : i + height, j : j + width, :] for i, j in itertools.product(range(size), range(size))],
        axis=-1,
    )
    return patches @ kernel.reshape(-1, kernel.shape[-1])


def cnn(params: Params, architecture: Architecture, inputs: np.ndarray) -> np.ndarray:
    """Logits of the LeNet-style CNN: blocks of valid conv, 2x2 max pool, bias, activation; then dense."""
    activation = _activation(architecture.get("activation", "relu"))
    x = inputs.reshape(inputs.shape[0], *IMAGE_SHAPE, 1).astype(np.float32, copy=False)
    for index in range(len(architecture["channels"])):
        x = _conv2d_valid(x, params[f"conv_{index}.kernel"])
        n, h, w, c = x.shape
        x = x[:, : h // 2 * 2, : w // 2 * 2, :].reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
        x = activation(x + params[f"conv_{index}.bias"])  # after pooling: exact, and 4x less work
    return dense_stack(params, architecture, x)


def member_tensor_name(index: int, name: str) -> str:
    """An ensemble stores member i's tensor `dense_0.kernel` as `member_i.dense_0.kernel`."""
    return f"member_{index}.{name}"


def ensemble_layout(architecture: Architecture) -> tuple[int, Architecture]:
    """An ensemble's member count and member architecture, checked: a checkpoint may come from anywhere."""
    members, member = architecture["members"], architecture["member"]
    if isinstance(members, bool) or not isinstance(members, int) or not 2 <= members <= MAX_ENSEMBLE_MEMBERS:
        raise MnistkitError(f"an ensemble needs 2 to {MAX_ENSEMBLE_MEMBERS} members, got {members!r}")
    if not isinstance(member, dict) or member.get("model") not in SHAPES or member["model"] == "ensemble":
        raise MnistkitError(f"ensemble member architecture {member!r} is not a single model")
    if member.get("num_classes") != architecture["num_classes"]:
        raise MnistkitError("ensemble members and the ensemble disagree on the number of classes")
    return members, member


def ensemble_size(architecture: Architecture) -> int:
    """The number of members of an ensemble; 0 for a single model."""
    return int(architecture["members"]) if architecture.get("model") == "ensemble" else 0


def member_params(params: Params, index: int) -> dict[str, np.ndarray]:
    """Member `index`'s tensors under their own names."""
    prefix = member_tensor_name(index, "")
    return {name[len(prefix) :]: value for name, value in params.items() if name.startswith(prefix)}


def _ensemble_shapes(architecture: Architecture) -> dict[str, tuple[int, ...]]:
    members, member = ensemble_layout(architecture)
    shapes = param_shapes(member)
    return {member_tensor_name(i, name): shape for i in range(members) for name, shape in shapes.items()}


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """In float64, from the logits, so a confident miss costs a finite loss instead of log(0)."""
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def member_log_probabilities(
    params: Params, architecture: Architecture, inputs: np.ndarray
) -> list[np.ndarray]:
    members, member = ensemble_layout(architecture)
    return [log_softmax(forward(member_params(params, i), member, inputs)) for i in range(members)]


def average_log_probabilities(member_log_probs: list[np.ndarray]) -> np.ndarray:
    """log(mean of the members' probabilities), computed from their log-probabilities."""
    stacked = np.stack(member_log_probs)
    top = stacked.max(axis=0)
    return top + np.log(np.exp(stacked - top).mean(axis=0))


def ensemble(params: Params, architecture: Architecture, inputs: np.ndarray) -> np.ndarray:
    """The log of the members' mean probabilities. As logits its softmax is that mean, so
    predict, eval and render treat an ensemble like any model."""
    return average_log_probabilities(member_log_probabilities(params, architecture, inputs)).astype(
        np.float32
    )


SHAPES: dict[str, Callable[[Architecture], dict[str, tuple[int, ...]]]] = {
    "logreg": _dense_shapes,
    "mlp": _dense_shapes,
    "cnn": _cnn_shapes,
    "ensemble": _ensemble_shapes,
}
FORWARD: dict[str, Callable[[Params, Architecture, np.ndarray], np.ndarray]] = {
    "logreg": dense_stack,
    "mlp": dense_stack,
    "cnn": cnn,
    "ensemble": ensemble,
}


def param_shapes(architecture: Architecture) -> dict[str, tuple[int, ...]]:
    """The tensor names and shapes an architecture has, in a fixed order."""
    model = architecture.get("model")
    if model not in SHAPES:
        raise MnistkitError(f"unknown model architecture {model!r}")
    return SHAPES[model](architecture)


def forward(params: Params, architecture: Architecture, inputs: np.ndarray) -> np.ndarray:
    """Logits for normalized float32 inputs of shape (N, 28, 28)."""
    return FORWARD[architecture["model"]](params, architecture, inputs)


def normalize(images: np.ndarray, normalization: Mapping[str, Any]) -> np.ndarray:
    """uint8 pixels -> the float32 inputs the model was trained on."""
    x = images.astype(np.float32) / np.float32(255.0)
    if normalization["kind"] == "standard":
        x = (x - np.float32(normalization["mean"])) / np.float32(normalization["std"])
    return x


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def predict_probabilities(
    params: Params,
    architecture: Architecture,
    normalization: Mapping[str, Any],
    images: np.ndarray,
    batch_size: int = 1000,
) -> np.ndarray:
    """Class probabilities (N, num_classes) for uint8 images (N, 28, 28), in batches."""
    outputs = [
        softmax(forward(params, architecture, normalize(images[start : start + batch_size], normalization)))
        for start in range(0, len(images), batch_size)
    ]
    if not outputs:
        return np.zeros((0, int(architecture["num_classes"])), np.float32)
    return np.concatenate(outputs).astype(np.float32, copy=False)
