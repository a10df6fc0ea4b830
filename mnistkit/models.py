"""The models in JAX: for each, `init(key, architecture) -> params` and `apply(params, architecture, x)`.

Params are flat dicts named like the checkpoint's tensors (`dense_0.kernel`, `conv_0.bias`),
and each model computes exactly the function of its numpy twin in `inference.py`, so a
checkpoint needs nothing but numpy to predict. Architectures are the plain dicts stored in
the checkpoint metadata.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from mnistkit.inference import IMAGE_SHAPE, cnn_feature_size, param_shapes

Params = dict[str, jax.Array]
Architecture = Mapping[str, Any]

CNN_CHANNELS = (16, 32)
CNN_KERNEL_SIZE = 5


def architecture_for(config: Any, num_classes: int) -> dict[str, Any]:
    """The architecture dict of a TrainConfig: what the checkpoint needs to rebuild the model."""
    if config.model == "logreg":
        return {"model": "logreg", "num_classes": num_classes}
    if config.model == "mlp":
        return {
            "model": "mlp",
            "hidden": list(config.hidden),
            "activation": config.activation,
            "num_classes": num_classes,
        }
    return {
        "model": "cnn",
        "channels": list(CNN_CHANNELS),
        "kernel_size": CNN_KERNEL_SIZE,
        "hidden": list(config.hidden),
        "activation": config.activation,
        "num_classes": num_classes,
    }


def init(key: jax.Array, architecture: Architecture) -> Params:
    """He-normal kernels (std sqrt(2 / fan_in)), zero biases; one key per layer, in layer order.

    With two dense layers this draws exactly what the seed trainer draws from the same key.
    The draws compile as one program (op by op, each shape would compile its own); the
    scaling stays outside it, where XLA cannot fuse it and round differently from the seed.
    """
    shapes = param_shapes(architecture)
    kernel_shapes = {name: shape for name, shape in shapes.items() if name.endswith(".kernel")}
    draws = _normal_draws(key, tuple(kernel_shapes.values()))
    params: Params = {}
    for name, shape in shapes.items():
        if name in kernel_shapes:
            fan_in = math.prod(shape[:-1])
            params[name] = draws[list(kernel_shapes).index(name)] * jnp.sqrt(2.0 / fan_in)
        else:
            params[name] = jnp.zeros(shape, jnp.float32)
    return params


@functools.partial(jax.jit, static_argnums=1)
def _normal_draws(key: jax.Array, shapes: tuple[tuple[int, ...], ...]) -> list[jax.Array]:
    layer_keys = jax.random.split(key, len(shapes))
    return [jax.random.normal(k, shape, jnp.float32) for k, shape in zip(layer_keys, shapes, strict=True)]


def _activation(name: str) -> Callable[[jax.Array], jax.Array]:
    return {"relu": jax.nn.relu, "tanh": jnp.tanh}[name]


def dense_stack(params: Params, architecture: Architecture, x: jax.Array) -> jax.Array:
    """Logits of logreg (no hidden layer) or an MLP, for inputs (N, 28, 28) or (N, features)."""
    activation = _activation(architecture.get("activation", "relu"))
    hidden = [] if architecture["model"] == "logreg" else list(architecture["hidden"])
    x = x.reshape(x.shape[0], -1)
    for index in range(len(hidden) + 1):
        x = x @ params[f"dense_{index}.kernel"] + params[f"dense_{index}.bias"]
        if index < len(hidden):
            x = activation(x)
    return x


def conv2d_valid(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """A 'valid' convolution (N, H, W, C) * (k, k, C, F) as patches from shifted slices and one matmul.

    XLA:CPU emits the gradients of its own convolutions in a slow layout inside `lax.scan`;
    slices and a dot differentiate into pads, adds and dots, which it compiles well (stacking
    the slices on a new axis compiles faster than concatenating them on the channel axis).
    """
    size = kernel.shape[0]
    height, width = x.shape[1] - size + 1, x.shape[2] - size + 1
    patches = jnp.stack(
        [x[:, i : i + height, j : j + width, :] for i, j in itertools.product(range(size), range(size))],
        axis=3,
    )
    return patches.reshape(*patches.shape[:3], -1) @ kernel.reshape(-1, kernel.shape[-1])


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2 max pooling, stride 2 (odd edges dropped), as a reshape and a max."""
    n, h, w, c = x.shape
    x = x[:, : h // 2 * 2, : w // 2 * 2, :]
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def cnn(
    params: Params, architecture: Architecture, x: jax.Array, conv2d: Callable = conv2d_valid
) -> jax.Array:
    """LeNet-style: per entry of `channels` a valid conv, 2x2 max pool, bias, activation; then dense."""
    activation = _activation(architecture.get("activation", "relu"))
    x = x.reshape(x.shape[0], *IMAGE_SHAPE, 1)
    for index in range(len(architecture["channels"])):
        # Pooling first is exact (max commutes with a monotone activation and a per-channel bias)
        # and leaves a quarter of the elements for the bias and activation, forward and backward.
        x = activation(max_pool_2x2(conv2d(x, params[f"conv_{index}.kernel"])) + params[f"conv_{index}.bias"])
    x = x.reshape(x.shape[0], cnn_feature_size(architecture))
    return dense_stack(params, {**architecture, "model": "mlp"}, x)


APPLY: dict[str, Callable[[Params, Architecture, jax.Array], jax.Array]] = {
    "logreg": dense_stack,
    "mlp": dense_stack,
    "cnn": cnn,
}


def apply(params: Params, architecture: Architecture, x: jax.Array) -> jax.Array:
    """Logits (N, num_classes) for normalized inputs (N, 28, 28)."""
    return APPLY[architecture["model"]](params, architecture, x)
