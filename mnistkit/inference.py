"""Model inference in numpy alone, so predict, eval and the pictures start fast and never import jax.

Each model's forward is named in the table of `architectures.py`; the JAX models in
`models.py` compute the same functions for training, and tests hold the two to 1e-5.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from mnistkit.architectures import (
    BATCH_NORM_EPSILON,
    MODEL_KINDS,
    VIEW_FLAGS,
    Architecture,
    cnn_layers,
    ensemble_size,
    image_views,
    member_architecture,
    member_tensor_name,
)
from mnistkit.datasets import IMAGE_SHAPE

Params = Mapping[str, np.ndarray]
CNN_CHUNK = 64


# One per name of architectures.ACTIVATIONS, as models.ACTIVATION_FUNCTIONS computes it in jax.
ACTIVATION_FUNCTIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "relu": lambda x: np.maximum(x, 0.0),
    "tanh": np.tanh,
}


def activation_function(architecture: Architecture) -> Callable[[np.ndarray], np.ndarray]:
    return ACTIVATION_FUNCTIONS[architecture.get("activation", "relu")]


def _floats(x: np.ndarray) -> np.ndarray:
    """float32, or float64 as given (`_finite_logits`' second try)."""
    return x.astype(np.promote_types(x.dtype, np.float32), copy=False)


def dense_stack(
    params: Params, architecture: Architecture, inputs: np.ndarray, return_hidden: bool = False
) -> np.ndarray | tuple[np.ndarray, list[np.ndarray]]:
    """Logits of a logreg or MLP (or a CNN's head); with `return_hidden`, also every hidden
    layer's output. `linear_last_hidden`: no activation after the last hidden layer."""
    activation = activation_function(architecture)
    hidden = list(architecture.get("hidden", []))
    x = _floats(inputs.reshape(inputs.shape[0], -1))
    hidden_outputs = []
    for index in range(len(hidden) + 1):
        x = x @ params[f"dense_{index}.kernel"] + params[f"dense_{index}.bias"]
        if index < len(hidden):
            if not (index == len(hidden) - 1 and architecture.get("linear_last_hidden")):
                x = activation(x)
            hidden_outputs.append(x)
    return (x, hidden_outputs) if return_hidden else x


def _conv2d_valid(x: np.ndarray, kernel: np.ndarray, stride: int = 1) -> np.ndarray:
    """(N, H, W, C) * (k, k, C, F): every patch laid out as a row (im2col), then one matmul.

    The rows are copied once from a strided window view; on 4-D patches numpy's matmul would
    run one small product per image row, four times slower for the `fast` net's second layer.
    """
    size, features = kernel.shape[0], kernel.shape[-1]
    windows = sliding_window_view(x, (size, size), axis=(1, 2))[:, ::stride, ::stride]
    count, height, width, channels = windows.shape[:4]
    patches = windows.transpose(0, 1, 2, 4, 5, 3).reshape(count * height * width, size * size * channels)
    return (patches @ kernel.reshape(-1, features)).reshape(count, height, width, features)


def cnn(params: Params, architecture: Architecture, inputs: np.ndarray) -> np.ndarray:
    """Logits of the CNN, CNN_CHUNK images at a time: their patches then stay in the processor's
    cache, which makes the whole about twice as fast as 1,000 images at once."""
    if len(inputs) == 0:
        return np.zeros((0, int(architecture["num_classes"])), np.float32)
    starts = range(0, len(inputs), CNN_CHUNK)
    return np.concatenate(
        [_cnn_logits(params, architecture, inputs[start : start + CNN_CHUNK]) for start in starts]
    )


def _cnn_logits(params: Params, architecture: Architecture, inputs: np.ndarray) -> np.ndarray:
    """Blocks of valid conv (of stride 1 or 2), 2x2 max pool where `pools` has one, bias (or
    batch norm with its running statistics) and activation; then the dense head."""
    activation = activation_function(architecture)
    x = _floats(inputs.reshape(inputs.shape[0], *IMAGE_SHAPE, 1))
    for index, (_, stride, pool) in enumerate(cnn_layers(architecture)):
        x = _conv2d_valid(x, params[f"conv_{index}.kernel"], stride)
        if pool:
            n, h, w, c = x.shape
            x = x[:, : h // 2 * 2, : w // 2 * 2, :].reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
        if architecture.get("batch_norm"):
            bn = {name: params[f"bn_{index}.{name}"] for name in ("scale", "offset", "mean", "var")}
            factor = bn["scale"] / np.sqrt(bn["var"] + np.float32(BATCH_NORM_EPSILON))
            x = x * factor + (bn["offset"] - bn["mean"] * factor)
        else:
            x = x + params[f"conv_{index}.bias"]  # after pooling: exact, and 4x less work
        x = activation(x)
    return dense_stack(params, architecture, x)


def member_params(params: Params, index: int) -> dict[str, np.ndarray]:
    """Member `index`'s tensors of an ensemble under their own names."""
    prefix = member_tensor_name(index, "")
    return {name[len(prefix) :]: value for name, value in params.items() if name.startswith(prefix)}


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """In float64, from the logits, so a confident miss costs a finite loss instead of log(0)."""
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def member_logits(params: Params, architecture: Architecture, inputs: np.ndarray) -> list[np.ndarray]:
    """Each model's logits: one array for a single model, one per member of an ensemble."""
    member = member_architecture(architecture)
    member_forward = globals()[MODEL_KINDS[member["model"]].numpy_forward]
    if any(member.get(flag) for flag in VIEW_FLAGS):
        member_forward = _view_averaged(member_forward)
    if architecture["model"] != "ensemble":
        return [_finite_logits(member_forward, params, member, inputs)]
    return [
        _finite_logits(member_forward, member_params(params, index), member, inputs)
        for index in range(ensemble_size(architecture))
    ]


def _finite_logits(
    member_forward: Callable, params: Params, member: Architecture, inputs: np.ndarray
) -> np.ndarray:
    """A model's logits in float32, or in float64 where float32 overflows: weights near
    float32's limit (a checkpoint scaled by hand) gave NaN probabilities."""
    with np.errstate(over="ignore", invalid="ignore"):
        logits = member_forward(params, member, inputs)
    if np.isfinite(logits).all():
        return logits
    wide = {name: value.astype(np.float64) for name, value in params.items()}
    return member_forward(wide, member, inputs.astype(np.float64))


def _view_averaged(member_forward: Callable) -> Callable:
    """The forward of a model that predicts from several views of each image (`image_views`):
    the log of their mean probabilities, logits whose softmax is that mean."""

    def averaged(params: Params, architecture: Architecture, inputs: np.ndarray) -> np.ndarray:
        images = inputs.reshape(inputs.shape[0], *IMAGE_SHAPE)
        views = image_views(images, architecture, np)
        log_probs = [log_softmax(member_forward(params, architecture, view)) for view in views]
        return average_log_probabilities(log_probs).astype(inputs.dtype)  # float64 where float32 overflowed

    return averaged


def average_log_probabilities(member_log_probs: list[np.ndarray]) -> np.ndarray:
    """log(mean of the members' probabilities), computed from their log-probabilities."""
    stacked = np.stack(member_log_probs)
    top = stacked.max(axis=0)
    return top + np.log(np.exp(stacked - top).mean(axis=0))


def forward(params: Params, architecture: Architecture, inputs: np.ndarray) -> np.ndarray:
    """Logits for normalized float32 inputs (N, 28, 28). An ensemble's are the log of its
    members' mean probabilities, whose softmax is that mean, so every caller treats an
    ensemble like any model."""
    logits = member_logits(params, architecture, inputs)
    if len(logits) == 1:
        return logits[0]
    averaged = average_log_probabilities([log_softmax(member) for member in logits])
    return averaged.astype(np.result_type(np.float32, *logits))  # float64 if a member needed it


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
