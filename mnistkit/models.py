"""The models in JAX, for training: `init(key, architecture) -> params` and
`apply(params, architecture, x) -> logits`, for a single model (ensembles are a member axis
added by the training steps). With `training=True`, apply also returns the new running
statistics of its batch norms, computed on the batch (an empty dict without batch norm).

Params are flat dicts named like the checkpoint's tensors (`dense_0.kernel`, `conv_0.bias`),
and each model computes exactly the function of its numpy twin in `inference.py`, so a
checkpoint needs nothing but numpy to predict. Which function applies which model is
written in the table of `architectures.py`.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from mnistkit.architectures import (
    BATCH_NORM_EPSILON,
    MODEL_KINDS,
    Architecture,
    cnn_feature_size,
    cnn_layers,
    param_shapes,
)
from mnistkit.datasets import IMAGE_SHAPE

Params = dict[str, jax.Array]

# Elements the initial draws may make beyond the tensors' own to draw them as one row per key
# (16 MB): the `fast` net's eight tensors are one row each of its largest, 200k.
ROW_SLACK = 1 << 22


def init(key: jax.Array, architecture: Architecture, scheme: str = "he") -> Params:
    """The initial parameters; batch norms start as the identity.

    "he": He-normal kernels (std sqrt(2 / fan_in)) and zero biases, one key per kernel in
    layer order: with two dense layers, exactly what the seed trainer draws from the same key.
    "uniform": PyTorch's default, kernels and biases uniform in +-1/sqrt(fan_in), one key per
    tensor in layer order (a batch norm's tensors take theirs, undrawn).
    The draws compile as one program and the scaling as another (op by op, each shape would
    compile its own; in one program, XLA could fuse the two and round differently).
    """
    shapes = param_shapes(architecture)
    scales = _uniform_bounds(shapes) if scheme == "uniform" else _he_scales(shapes)
    keyed = list(shapes) if scheme == "uniform" else list(scales)
    slots = tuple(shapes[name] if name in scales else None for name in keyed)
    draws = _draws(key, slots, "uniform" if scheme == "uniform" else "normal")
    layout = tuple((name, shape, scales.get(name)) for name, shape in shapes.items())
    params = _scaled(dict(zip([name for name in keyed if name in scales], draws, strict=True)), layout)
    return {name: params[name] for name in shapes}  # in layer order, not jit's sorted one


def _he_scales(shapes: dict[str, tuple[int, ...]]) -> dict[str, np.float32]:
    return {
        name: np.sqrt(np.float32(2.0 / math.prod(shape[:-1])))
        for name, shape in shapes.items()
        if name.endswith(".kernel")
    }


def _uniform_bounds(shapes: dict[str, tuple[int, ...]]) -> dict[str, np.float32]:
    """1/sqrt(fan_in) of each layer, for its kernel and its bias."""
    bounds = {}
    for name in shapes:
        layer = name.rsplit(".", 1)[0]
        if f"{layer}.kernel" in shapes:
            bounds[name] = np.float32(1.0 / math.sqrt(math.prod(shapes[f"{layer}.kernel"][:-1])))
    return bounds


@functools.partial(jax.jit, static_argnums=1)
def _scaled(
    draws: dict[str, jax.Array], layout: tuple[tuple[str, tuple[int, ...], np.float32 | None], ...]
) -> Params:
    """Each (name, shape, scale): its draw times its scale, or without a scale, a batch
    norm's identity: zero biases, offsets and running means, unit scales and variances."""
    return {
        name: draws[name] * scale
        if scale is not None
        else (jnp.ones if name.endswith((".scale", ".var")) else jnp.zeros)(shape, jnp.float32)
        for name, shape, scale in layout
    }


@functools.partial(jax.jit, static_argnums=(1, 2))
def _draws(key: jax.Array, slots: tuple[tuple[int, ...] | None, ...], distribution: str) -> list[jax.Array]:
    """A draw of each shape in `slots` from its slot's key (`split(key, len(slots))`; a None
    slot takes its key and draws nothing), standard normal or uniform in [-1, 1], in one program.

    With JAX's partitionable threefry (its default), an element's random bits depend only on
    its key and its index, so a tensor is the head of a longer row drawn from its key: tensors
    of similar sizes (`_row_groups`) are drawn as one row per key, the very numbers of drawing
    each on its own, with a random-number kernel to compile per group instead of per shape
    (XLA:CPU took 2.5 s for the `fast` net's eight).
    """
    keys = jax.random.split(key, len(slots))
    if distribution == "normal":
        sample = functools.partial(jax.random.normal, dtype=jnp.float32)
    else:
        sample = functools.partial(jax.random.uniform, dtype=jnp.float32, minval=-1.0, maxval=1.0)
    drawn = [slot for slot, shape in enumerate(slots) if shape is not None]
    if not getattr(jax.config, "jax_threefry_partitionable", True):  # the default since jax 0.5
        return [sample(keys[slot], slots[slot]) for slot in drawn]
    sizes = [math.prod(slots[slot]) for slot in drawn]
    draws = {}
    for group in _row_groups(sizes):
        row_shape = (sizes[group[0]],)
        rows = jax.vmap(functools.partial(sample, shape=row_shape))(
            keys[np.asarray([drawn[i] for i in group])]
        )
        for row, i in zip(rows, group, strict=True):
            draws[i] = row[: sizes[i]].reshape(slots[drawn[i]])
    return [draws[i] for i in range(len(drawn))]


def _row_groups(sizes: list[int]) -> list[list[int]]:
    """The tensors (indices into `sizes`) drawn together, as rows as long as each group's
    largest: largest first, each joining the last group while the rows hold at most a quarter
    more elements than its tensors, or at most ROW_SLACK more."""
    groups: list[list[int]] = []
    for index in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        if groups:
            group = groups[-1]
            total = sum(sizes[i] for i in group) + sizes[index]
            if (len(group) + 1) * sizes[group[0]] <= max(1.25 * total, total + ROW_SLACK):
                group.append(index)
                continue
        groups.append([index])
    return groups


# One per name of architectures.ACTIVATIONS, as inference.ACTIVATION_FUNCTIONS computes it in numpy.
ACTIVATION_FUNCTIONS = {"relu": jax.nn.relu, "tanh": jnp.tanh}


def _activation(architecture: Architecture):
    return ACTIVATION_FUNCTIONS[architecture.get("activation", "relu")]


def dense_stack(
    params: Params,
    architecture: Architecture,
    x: jax.Array,
    training: bool = False,
    weights: jax.Array | None = None,
) -> tuple[jax.Array, Params]:
    """Logits of logreg or an MLP (or a CNN's dense head), for inputs (N, 28, 28) or (N, features).
    `linear_last_hidden`: no activation after the last hidden layer (a linear bottleneck)."""
    activation = _activation(architecture)
    hidden = list(architecture.get("hidden", []))
    x = x.reshape(x.shape[0], -1)
    for index in range(len(hidden) + 1):
        x = x @ params[f"dense_{index}.kernel"] + params[f"dense_{index}.bias"]
        if index < len(hidden) and not (index == len(hidden) - 1 and architecture.get("linear_last_hidden")):
            x = activation(x)
    return x, {}


def conv2d_valid_chwn(x: jax.Array, kernel: jax.Array, stride: int = 1) -> jax.Array:
    """A 'valid' convolution in batch-last layout: (C, H, W, N) * (k, k, C, F) -> (F, H', W', N).

    Patches from shifted (and, for a stride, stepped) slices, each a copy of contiguous runs
    of N, then one matmul (F, k*k*C) @ (k*k*C, H'*W'*N). XLA:CPU emits the gradients of its own
    convolutions in a slow layout inside `lax.scan`; slices and a dot differentiate into pads,
    adds and dots. With the batch innermost, the weight gradient contracts the long axis of
    both operands and the input gradient's col2im adds whole rows, so no large array is
    transposed.
    """
    size = kernel.shape[0]
    height, width = (x.shape[1] - size) // stride + 1, (x.shape[2] - size) // stride + 1
    patches = jnp.stack(
        [
            x[:, i : i + stride * (height - 1) + 1 : stride, j : j + stride * (width - 1) + 1 : stride, :]
            for i, j in itertools.product(range(size), range(size))
        ]
    )
    matrix = kernel.reshape(-1, kernel.shape[-1]).T
    output = matrix @ patches.reshape(matrix.shape[1], -1)
    return output.reshape(kernel.shape[-1], height, width, x.shape[-1])


def conv2d_xla_chwn(x: jax.Array, kernel: jax.Array, stride: int = 1) -> jax.Array:
    """The same convolution as XLA's own (cuDNN on a GPU), at the backend's default precision
    as the patches' matmul is; see `backend_convolution` for where it is taken."""
    return jax.lax.conv_general_dilated(
        x,
        kernel,
        (stride, stride),
        "VALID",
        dimension_numbers=("CHWN", "HWIO", "CHWN"),
    )


def backend_convolution() -> Callable[[jax.Array, jax.Array, int], jax.Array]:
    """The formulation fastest on the backend this process runs on, so no user picks one
    (`make bench` times both). Patches won on both backends measured: a CPU (XLA's own is 7
    to 17 times slower per training step there) and an H200, where these small nets' steps are
    bound by kernel launches: the patches took 0.62 to 0.94 of XLA's (cuDNN's) time per step,
    and a fresh `train --preset fast` reached 99.2% after 1.7 s against 1.9 s. Other backends
    (a TPU) get XLA's own, which they are built for."""
    return conv2d_valid_chwn if jax.default_backend() in ("cpu", "gpu") else conv2d_xla_chwn


@jax.custom_vjp
def max_pool_2x2_chwn(x: jax.Array) -> jax.Array:
    """2x2 max pooling, stride 2 (odd edges dropped), of (C, H, W, N).

    Its gradient goes to the first maximum of each window, as PyTorch's does, in one select;
    jnp.max's own gradient, which splits ties, takes three passes over the net's largest
    activation (about 15% of a CNN step on a CPU).
    """
    c, h, w, n = x.shape
    return x[:, : h // 2 * 2, : w // 2 * 2, :].reshape(c, h // 2, 2, w // 2, 2, n).max(axis=(2, 4))


def _pool_forward(x: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    pooled = max_pool_2x2_chwn(x)
    return pooled, (x, pooled)


def _pool_backward(residuals: tuple[jax.Array, jax.Array], gradient: jax.Array) -> tuple[jax.Array]:
    x, pooled = residuals
    c, h, w, n = x.shape
    windows = x[:, : h // 2 * 2, : w // 2 * 2, :].reshape(c, h // 2, 2, w // 2, 2, n)
    hit = windows == pooled[:, :, None, :, None, :]
    first = hit[:, :, 0:1, :, 0:1]
    second = hit[:, :, 0:1, :, 1:2] & ~first
    third = hit[:, :, 1:2, :, 0:1] & ~(first | second)
    fourth = ~(first | second | third)
    mask = jnp.concatenate(
        [jnp.concatenate([first, second], axis=4), jnp.concatenate([third, fourth], axis=4)], axis=2
    )
    routed = jnp.where(mask, gradient[:, :, None, :, None, :], 0.0).reshape(c, h // 2 * 2, w // 2 * 2, n)
    return (jnp.pad(routed, ((0, 0), (0, h % 2), (0, w % 2), (0, 0))),)


max_pool_2x2_chwn.defvjp(_pool_forward, _pool_backward)


BATCH_NORM_MOMENTUM = 0.9


def batch_norm(
    x: jax.Array, params: Params, index: int, training: bool, weights: jax.Array | None
) -> tuple[jax.Array, Params]:
    """Batch norm of (C, H, W, N) per channel: on the batch's statistics in training (padding
    slots, weight 0, left out), on the running ones otherwise; and the updated running ones."""
    prefix = f"bn_{index}"
    statistics: Params = {}
    if training:
        example_weights = jnp.ones(x.shape[-1]) if weights is None else weights
        count = jnp.maximum(jnp.sum(example_weights), 1.0) * x.shape[1] * x.shape[2]
        mean = jnp.einsum("chwn,n->c", x, example_weights) / count
        var = jnp.einsum("chwn,n->c", jnp.square(x - mean[:, None, None, None]), example_weights) / count
        momentum = jnp.float32(BATCH_NORM_MOMENTUM)
        for name, value in (("mean", mean), ("var", var * count / jnp.maximum(count - 1, 1.0))):
            statistics[f"{prefix}.{name}"] = momentum * params[f"{prefix}.{name}"] + (
                1 - momentum
            ) * jax.lax.stop_gradient(value)
    else:
        mean, var = params[f"{prefix}.mean"], params[f"{prefix}.var"]
    factor = params[f"{prefix}.scale"] * jax.lax.rsqrt(var + jnp.float32(BATCH_NORM_EPSILON))
    shift = params[f"{prefix}.offset"] - mean * factor
    return x * factor[:, None, None, None] + shift[:, None, None, None], statistics


def cnn(
    params: Params,
    architecture: Architecture,
    x: jax.Array,
    training: bool = False,
    weights: jax.Array | None = None,
) -> tuple[jax.Array, Params]:
    """LeNet-style: per entry of `channels` a valid conv (of stride 1 or 2), a 2x2 max pool where
    `pools` has one (by default after each conv of stride 1), then bias (or batch norm) and
    activation; then the dense head.

    Pooling first is exact for a bias (max commutes with a monotone activation and a
    per-channel shift) and leaves a quarter of the elements for what follows, forward and
    backward; batch norm, when there is one, is defined on the pooled values.
    """
    activation = _activation(architecture)
    x = x.reshape(x.shape[0], *IMAGE_SHAPE).transpose(1, 2, 0)[None]
    statistics: Params = {}
    convolve = backend_convolution()
    for index, (_, stride, pool) in enumerate(cnn_layers(architecture)):
        x = convolve(x, params[f"conv_{index}.kernel"], stride)
        if pool:
            x = max_pool_2x2_chwn(x)
        if architecture.get("batch_norm"):
            x, updated = batch_norm(x, params, index, training, weights)
            statistics |= updated
        else:
            x = x + params[f"conv_{index}.bias"][:, None, None, None]
        x = activation(x)
    x = x.transpose(3, 1, 2, 0)  # (N, H, W, C): the dense kernel's input order
    logits, _ = dense_stack(params, architecture, x.reshape(x.shape[0], cnn_feature_size(architecture)))
    return logits, statistics


def apply(
    params: Params,
    architecture: Architecture,
    x: jax.Array,
    training: bool = False,
    weights: jax.Array | None = None,
):
    """Logits (N, num_classes) of a single model for normalized inputs (N, 28, 28); with
    `training`, (logits, the new running statistics); `weights` mark padding examples (0)."""
    logits, statistics = globals()[MODEL_KINDS[architecture["model"]].jax_apply](
        params, architecture, x, training, weights
    )
    return (logits, statistics) if training else logits
