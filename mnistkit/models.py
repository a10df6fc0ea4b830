"""The models in JAX: for each, `init(key, architecture) -> params` and `apply(params, architecture, x)`.

Params are flat dicts named like the checkpoint's tensors (`dense_0.kernel`, `conv_0.bias`),
and each model computes exactly the function of its numpy twin in `inference.py`, so a
checkpoint needs nothing but numpy to predict. Architectures are the plain dicts stored in
the checkpoint metadata.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from mnistkit.inference import IMAGE_SHAPE, cnn_feature_size, member_tensor_name, param_shapes

Params = dict[str, jax.Array]
Architecture = Mapping[str, Any]

CNN_CHANNELS = (16, 32)
CNN_KERNEL_SIZE = 5


def architecture_for(config: Any, num_classes: int) -> dict[str, Any]:
    """The architecture dict of a TrainConfig: what the checkpoint needs to rebuild the model.

    With `seeds`, an ensemble: that many members of the configured model.
    """
    if config.seeds:
        member = architecture_for(dataclasses.replace(config, seeds=()), num_classes)
        return {
            "model": "ensemble",
            "members": len(config.seeds),
            "member": member,
            "num_classes": num_classes,
        }
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


def conv2d_valid_chwn(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """A 'valid' convolution in batch-last layout: (C, H, W, N) * (k, k, C, F) -> (F, H', W', N).

    Patches from shifted slices (each a copy of contiguous runs of N), then one matmul
    (F, k*k*C) @ (k*k*C, H'*W'*N). With the batch innermost, the weight gradient contracts
    the long axis of both operands and the input gradient's col2im adds whole rows, so
    XLA:CPU needs no transposes of the large arrays (NHWC patches cost ~1.6x the time).
    """
    size = kernel.shape[0]
    height, width = x.shape[1] - size + 1, x.shape[2] - size + 1
    patches = jnp.stack(
        [x[:, i : i + height, j : j + width, :] for i, j in itertools.product(range(size), range(size))]
    )
    matrix = kernel.reshape(-1, kernel.shape[-1]).T
    output = matrix @ patches.reshape(matrix.shape[1], -1)
    return output.reshape(kernel.shape[-1], height, width, x.shape[-1])


def max_pool_2x2_chwn(x: jax.Array) -> jax.Array:
    """2x2 max pooling, stride 2 (odd edges dropped), of (C, H, W, N)."""
    c, h, w, n = x.shape
    x = x[:, : h // 2 * 2, : w // 2 * 2, :]
    return x.reshape(c, h // 2, 2, w // 2, 2, n).max(axis=(2, 4))


def cnn(
    params: Params, architecture: Architecture, x: jax.Array, conv2d: Callable | None = None
) -> jax.Array:
    """LeNet-style: per entry of `channels` a valid conv, 2x2 max pool, bias, activation; then dense.

    Computed in (C, H, W, N) layout (see `conv2d_valid_chwn`); an NHWC `conv2d` (such as
    `conv2d_valid` or XLA's own) runs the same model in NHWC, for comparisons.
    """
    activation = _activation(architecture.get("activation", "relu"))
    # Pooling first is exact (max commutes with a monotone activation and a per-channel bias)
    # and leaves a quarter of the elements for the bias and activation, forward and backward.
    if conv2d is not None:
        x = x.reshape(x.shape[0], *IMAGE_SHAPE, 1)
        for index in range(len(architecture["channels"])):
            x = max_pool_2x2(conv2d(x, params[f"conv_{index}.kernel"])) + params[f"conv_{index}.bias"]
            x = activation(x)
    else:
        x = x.reshape(x.shape[0], *IMAGE_SHAPE).transpose(1, 2, 0)[None]
        for index in range(len(architecture["channels"])):
            x = max_pool_2x2_chwn(conv2d_valid_chwn(x, params[f"conv_{index}.kernel"]))
            x = activation(x + params[f"conv_{index}.bias"][:, None, None, None])
        x = x.transpose(3, 1, 2, 0)  # (N, H, W, C): the dense kernel's input order
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


def stack_members(members: list[Params]) -> Params:
    """Member params stacked on a new leading axis: what `jax.vmap` trains as one program."""
    return {name: jnp.stack([member[name] for member in members]) for name in members[0]}


def unstack_members(stacked: Mapping[str, Any]) -> dict[str, Any]:
    """Stacked member params as the ensemble checkpoint's tensors, `member_{i}.{name}`."""
    return {
        member_tensor_name(index, name): value[index]
        for index in range(len(next(iter(stacked.values()))))
        for name, value in stacked.items()
    }


def ensemble_log_probabilities(stacked: Params, member_architecture: Architecture, x: jax.Array) -> jax.Array:
    """Log-probabilities (K + 1, N, classes): each member's, then the ensemble's, the log of
    their mean probability, as `inference.ensemble` computes it."""
    logits = jax.vmap(lambda params: apply(params, member_architecture, x))(stacked)
    members = jax.nn.log_softmax(logits)
    combined = jax.nn.logsumexp(members, axis=0) - jnp.log(jnp.float32(members.shape[0]))
    return jnp.concatenate([members, combined[None]])
