"""The compiled steps of training: loss, optimizer, augmentation, a chunk of training batches,
and evaluation.

Every model trained is a member of an ensemble, possibly of one: parameters, optimizer
state, batch orders and augmentation keys carry a leading member axis, and `over_members`
maps a one-model function over it. The chunk is one jitted `lax.scan` over a run of
batches, a pure function of (state, images, labels, batch indices, batch weights, learning
rates, key) with the dataset passed as arguments (closing over it would bake it into the
program and cost seconds of compile). Every batch slot carries weights, so the last partial
batch trains exactly like the seed trainer's, and padding slots leave the state untouched.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mnistkit import models
from mnistkit.architectures import Architecture, image_views, is_running_statistic
from mnistkit.augment import make_augment
from mnistkit.config import TrainConfig
from mnistkit.parallel import Placement
from mnistkit.training_data import Dataset

EVAL_BLOCK = 2000
# Images each device runs through the model in one evaluation step on a CPU: XLA:CPU runs a
# CNN about four times faster 100 at a time, in a loop, than 2,000 at once (an MLP about as
# fast). The cache at work here is SUB_BATCH's in training and inference.CNN_CHUNK's in numpy.
EVAL_STEP_ROWS = 100
EPOCH_CYCLE_DECAY = 0.3


def compiler_options() -> dict[str, Any] | None:
    """XLA options for the training and evaluation programs on this process's backend. On a
    GPU, matmuls go to cuBLAS instead of fusions XLA writes in Triton: compiling and
    autotuning those took most of a first epoch on an H200 (the `fast` preset reached 99.2%
    after 5.1 s in a fresh process with them, 1.8 s without), for steps about a quarter slower
    (0.093 s an epoch against 0.073; 0.05 s with each CNN batch whole, `_sub_batches`)."""
    return {"xla_gpu_enable_triton_gemm": False} if jax.default_backend() == "gpu" else None


class TrainState(NamedTuple):
    params: dict[str, jax.Array]
    opt_state: Any


def over_members(function: Callable, members: int, in_axes: tuple[int | None, ...]) -> Callable:
    """`function` of one model, mapped over the leading member axis of the arguments marked 0
    in `in_axes` and of every output. Several members: `jax.vmap`, one program for all. One
    member: the function itself with the axis dropped and restored, since at size 1 vmap's
    batched gathers and dots cost up to 1.5x and round differently from a lone model."""
    if members > 1:
        return jax.vmap(function, in_axes=in_axes)

    def one_member(*args):
        args = [
            jax.tree.map(lambda a: a[0], arg) if axis == 0 else arg
            for arg, axis in zip(args, in_axes, strict=True)
        ]
        return jax.tree.map(lambda a: a[None], function(*args))

    return one_member


def normalize(images: jax.Array, normalization: Mapping[str, Any]) -> jax.Array:
    """The same float32 arithmetic as `inference.normalize`, on the device."""
    x = images.astype(jnp.float32) / jnp.float32(255.0)
    if normalization["kind"] == "standard":
        x = (x - jnp.float32(normalization["mean"])) / jnp.float32(normalization["std"])
    return x


def learning_rate(config: TrainConfig, steps_per_epoch: int) -> float | optax.Schedule:
    """The learning rate of the settings over the run's steps."""
    total_steps = config.epochs * steps_per_epoch
    schedules = {
        "constant": lambda: config.lr,
        "cosine": lambda: optax.cosine_decay_schedule(config.lr, total_steps),
        "warmup-cosine": lambda: optax.warmup_cosine_decay_schedule(
            0.0, config.lr, warmup_steps=max(1, total_steps // 20), decay_steps=total_steps
        ),
        # Smith's one cycle, as PyTorch's OneCycleLR: from lr/25 up for 30% of the steps, down to lr/25e4.
        "one-cycle": lambda: _one_cycle(total_steps, config.lr),
        # One such cycle per epoch, each peaking at 0.3x the last's: every epoch ends annealed.
        "epoch-cycles": lambda: optax.join_schedules(
            [
                _one_cycle(steps_per_epoch, config.lr * EPOCH_CYCLE_DECAY**epoch)
                for epoch in range(config.epochs)
            ],
            [steps_per_epoch * epoch for epoch in range(1, config.epochs)],
        ),
    }
    return schedules[config.schedule]()


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """The optax optimizer of the settings at a learning rate of one. The rate of each step
    (`epoch_learning_rates`) is an input of the compiled chunk, which multiplies the updates
    by it: a sweep over rates or epoch counts then runs the programs compiled for the first
    setting (a new rate compiled the `fast` preset's anew: 12.6 s for 10,000 images against
    3.2 s). Every optimizer here is linear in its rate, so the updates are the ones the rate
    itself would give, and the state is the same (a schedule's step count included)."""
    unit_rate = 1.0 if config.schedule == "constant" else (lambda count: 1.0)
    beta1, beta2 = config.adam_betas
    if config.optimizer == "adamw":
        return optax.adamw(unit_rate, b1=beta1, b2=beta2, weight_decay=config.weight_decay)
    base = {
        "sgd": lambda: optax.sgd(unit_rate),
        "momentum": lambda: optax.sgd(unit_rate, momentum=0.9),
        "adam": lambda: optax.adam(unit_rate, b1=beta1, b2=beta2),
    }[config.optimizer]()
    if config.weight_decay:
        return optax.chain(optax.add_decayed_weights(config.weight_decay), base)
    return base


def epoch_learning_rates(config: TrainConfig, steps_per_epoch: int) -> Callable[[int], np.ndarray]:
    """`rates(first_step)`: the learning rates (float32) of an epoch's steps from optimizer
    step `first_step` on. Each is worked out alone, in a loop, as a schedule inside the
    training step was (vectorized, XLA's cosine differs in the last bit of a few), an epoch
    at a time, so that `--epochs 1000000` stopped by Ctrl-C costs nothing up front (except
    with `epoch-cycles`, whose pieces, one an epoch, are all worked out for every step)."""
    rate = learning_rate(config, steps_per_epoch)
    if not callable(rate):
        return lambda first_step: np.full(steps_per_epoch, rate, np.float32)

    @jax.jit
    def learning_rate_schedule(counts: jax.Array) -> jax.Array:  # a program of 50 ms to compile
        return jax.lax.map(rate, counts)

    offsets = np.arange(steps_per_epoch, dtype=np.int64)
    last_count = np.iinfo(np.int32).max  # where optax's int32 count stops

    def rates(first_step: int) -> np.ndarray:
        counts = np.minimum(first_step + offsets, last_count).astype(np.int32)
        return np.asarray(learning_rate_schedule(counts), np.float32)

    return rates


def steps_taken(opt_state: Any) -> int:
    """How many steps an optimizer state has taken (its schedule's count; 0 for one that keeps
    none, whose rate is constant)."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(opt_state)[0]:
        if getattr(path[-1], "name", None) == "count":
            return int(np.asarray(leaf).reshape(-1)[0])
    return 0


def _one_cycle(steps: int, peak: float) -> optax.Schedule:
    return optax.cosine_onecycle_schedule(steps, peak, pct_start=0.3, div_factor=25.0, final_div_factor=1e4)


def trainable(params: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """The tensors an optimizer trains: all but the running statistics of batch norms."""
    return {name: value for name, value in params.items() if not is_running_statistic(name)}


def weighted_loss(
    params: dict[str, jax.Array],
    statistics: dict[str, jax.Array],
    architecture: Architecture,
    x: jax.Array,
    labels: jax.Array,
    weights: jax.Array,
    label_smoothing: float,
    denominator: jax.Array,
) -> tuple[jax.Array, tuple[jax.Array, jax.Array, dict[str, jax.Array]]]:
    """Cross-entropy over the weighted examples, summed and divided by `denominator` (the batch's
    weight), with labels smoothed by `label_smoothing`;
    also, for the epoch's figures, the sums of the plain cross-entropy and of the correct
    answers, and the batch norms' new running statistics."""
    logits, new_statistics = models.apply(
        params | statistics, architecture, x, training=True, weights=weights
    )
    log_probs = jax.nn.log_softmax(logits)
    nll = -jnp.take_along_axis(log_probs, labels[:, None], axis=1)[:, 0]
    objective = nll
    if label_smoothing:
        objective = (1 - label_smoothing) * nll - label_smoothing * jnp.mean(log_probs, axis=-1)
    correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    loss_sum = jnp.sum(nll * weights)
    mean_objective = jnp.sum(objective * weights) / denominator
    return mean_objective, (loss_sum, jnp.sum(correct * weights), new_statistics)


def make_train_chunk(
    architecture: Architecture,
    optimizer: optax.GradientTransformation,
    normalization: Mapping[str, Any],
    augmentation: str,
    label_smoothing: float,
    batch_size: int,
    placement: Placement,
    members: int,
) -> Callable[..., tuple[TrainState, jax.Array]]:
    """The compiled training step over a run of batches, for `members` models of `architecture`.

    `train_chunk(state, images, labels, batch_indices (K, B, n), batch_weights (K, B, n),
    learning_rates (B,), keys (K, 2), first_batch)`, for K members and B batches of n,
    returns the new state and each member's [loss sum, correct count] (K, 2) over the run. A
    batch whose weights are all zero is padding: the state passes through it unchanged.
    Indices and weights are split along their batch axis over the devices, everything else
    replicated.
    """
    architecture = dict(architecture)
    normalization = dict(normalization)
    augment = make_augment(augmentation)
    gradients = _batch_gradients(
        architecture, label_smoothing, _sub_batches(architecture, batch_size, placement)
    )

    def train_chunk(state, images, labels, batch_indices, batch_weights, learning_rates, key, first_batch):
        def step(carry, batch):
            state, totals = carry
            batch_number, indices, weights, rate = batch
            batch_images = images[indices]
            if augment is not None:
                batch_images = augment(batch_images, jax.random.fold_in(key, batch_number))
            x = normalize(batch_images, normalization)
            trained = trainable(state.params)
            statistics = {name: value for name, value in state.params.items() if name not in trained}
            grads, (loss_sum, correct, new_statistics) = gradients(
                trained, statistics, x, labels[indices], weights
            )
            updates, opt_state = optimizer.update(grads, state.opt_state, trained)
            updates = jax.tree.map(lambda update: update * rate, updates)
            params = optax.apply_updates(trained, updates) | new_statistics
            real = jnp.sum(weights) > 0
            new_state = jax.tree.map(
                lambda new, old: jnp.where(real, new, old), TrainState(params, opt_state), state
            )
            return (new_state, totals + jnp.stack([loss_sum, correct])), None

        batch_numbers = first_batch + jnp.arange(batch_indices.shape[0])
        (state, totals), _ = jax.lax.scan(
            step,
            (state, jnp.zeros(2, jnp.float32)),
            (batch_numbers, batch_indices, batch_weights, learning_rates),
        )
        return state, totals

    replicated, batches = placement.replicated, placement.split(3, 2)
    return jax.jit(
        over_members(train_chunk, members, (0, None, None, 0, 0, None, 0, None)),
        in_shardings=(replicated, replicated, replicated, batches, batches, *[replicated] * 3),
        out_shardings=replicated,
        compiler_options=compiler_options(),
    )


SUB_BATCH = 64
# Parts whose gradients one turn of the inner scan computes: two parts' are independent, so
# XLA:CPU runs their matmuls side by side on two cores (12% less time per `fast` step, 5% per
# `cnn` step on a 2-core Xeon; four at once thrash the cache). The sums are added in the same
# order: at the presets' batch of 256 (four parts) training writes the bits of one part a
# turn, while a scan unrolled whole or ending in an odd part (batch 128, 192) may round a few
# sums otherwise.
PARTS_AT_ONCE = 2


def _sub_batches(architecture: Architecture, batch_size: int, placement: Placement) -> int:
    """How many parts a CNN's batch is cut into, one after the other in an inner scan, so that
    each part's activations stay in the CPU's cache (about 10-15% less time per step for a
    batch of 256). Not with batch norm, whose statistics are the whole batch's, nor over
    several devices, where each already has its share, nor off a CPU."""
    if (
        architecture["model"] != "cnn"
        or architecture.get("batch_norm")
        or placement.device_count > 1
        or jax.default_backend() != "cpu"
    ):
        return 1
    return max(1, batch_size // SUB_BATCH) if batch_size % SUB_BATCH == 0 else 1


def _batch_gradients(architecture: Architecture, label_smoothing: float, sub_batches: int) -> Callable:
    """(trained, statistics, x, labels, weights) -> the gradient of the batch's mean objective,
    with the sums of `weighted_loss` and the new running statistics; over `sub_batches` parts,
    their gradients summed."""
    loss_and_gradients = jax.grad(weighted_loss, has_aux=True)

    def gradients(trained, statistics, x, labels, weights):
        denominator = jnp.maximum(jnp.sum(weights), 1.0)
        if sub_batches == 1:
            return loss_and_gradients(
                trained, statistics, architecture, x, labels, weights, label_smoothing, denominator
            )

        def part(carry, batch_part):
            grads, loss_sum, correct = carry
            part_grads, (part_loss, part_correct, _) = loss_and_gradients(
                trained, statistics, architecture, *batch_part, label_smoothing, denominator
            )
            return (
                jax.tree.map(jnp.add, grads, part_grads),
                loss_sum + part_loss,
                correct + part_correct,
            ), None

        parts = tuple(a.reshape(sub_batches, -1, *a.shape[1:]) for a in (x, labels, weights))
        zero = (jax.tree.map(jnp.zeros_like, trained), jnp.float32(0), jnp.float32(0))
        (grads, loss_sum, correct), _ = jax.lax.scan(part, zero, parts, unroll=PARTS_AT_ONCE)
        return grads, (loss_sum, correct, {})

    return gradients


def make_evaluate(
    architecture: Architecture, members: int, normalization: Mapping[str, Any], placement: Placement
) -> Callable[[dict[str, jax.Array], Dataset], np.ndarray]:
    """Mean loss and accuracy of the members' params on a dataset, as rows [loss, accuracy]: one
    per member, then the ensemble's (the log of their mean probability, as `inference` has it;
    for one member, the same as its own row).

    Blocks of a fixed size (one compile of the model for all splits), split over the devices
    like batches, run through the model EVAL_STEP_ROWS per device at a time on a CPU, whole on
    other backends.
    """
    architecture = dict(architecture)
    normalization = dict(normalization)
    devices = placement.device_count
    step_rows = EVAL_STEP_ROWS * devices if jax.default_backend() == "cpu" else None

    def member_log_probabilities(params, x):
        views = image_views(x, architecture, jnp)
        if len(views) == 1:
            return jax.nn.log_softmax(models.apply(params, architecture, views[0]))
        # The views take turns through one copy of the model: a copy per view compiled ~2 s
        # longer for `fast`'s five, and ran no faster.
        scores = jax.lax.map(
            lambda view: jax.nn.log_softmax(models.apply(params, architecture, view)), jnp.stack(views)
        )
        return functools.reduce(jnp.logaddexp, list(scores)) - jnp.log(jnp.float32(len(views)))

    log_probabilities = over_members(member_log_probabilities, members, (0, None))
    replicated, split, split_images = placement.replicated, placement.split(1, 0), placement.split(3, 0)

    @functools.partial(jax.jit, out_shardings=(split_images, split))
    def block_rows(images, labels, indices):
        return images[indices], labels[indices]

    @functools.partial(
        jax.jit,
        in_shardings=(replicated, split_images, split, split),
        out_shardings=replicated,
        compiler_options=compiler_options(),
    )
    def block_totals(params, images, labels, weights):
        def step_losses_and_hits(step_images_and_labels):
            step_images, step_labels = step_images_and_labels
            member_scores = log_probabilities(params, normalize(step_images, normalization))
            combined = jax.nn.logsumexp(member_scores, axis=0) - jnp.log(jnp.float32(members))
            scores = jnp.concatenate([member_scores, combined[None]])
            nll = -jnp.take_along_axis(scores, step_labels[None, :, None], axis=2)[..., 0]
            correct = (jnp.argmax(scores, axis=-1) == step_labels).astype(jnp.float32)
            return jnp.stack([nll, correct], axis=-1)  # (members + 1, rows, 2)

        # Step j takes every (block / rows)-th row from row j on: each device's share of the
        # block gives each step as many rows, so the steps stay split like the block and the
        # weighted sum at the end is the only exchange between devices.
        rows = step_rows or len(weights)
        step_inputs = tuple(a.reshape(rows, -1, *a.shape[1:]).swapaxes(0, 1) for a in (images, labels))
        per_row = jax.lax.map(step_losses_and_hits, step_inputs)
        return jnp.einsum("smrk,rs->mk", per_row, weights.reshape(rows, -1))

    def evaluate(params: dict[str, jax.Array], dataset: Dataset) -> np.ndarray:
        unit = step_rows or devices
        block = -(-min(EVAL_BLOCK, dataset.size) // unit) * unit
        blocks = -(-dataset.size // block)
        indices = np.zeros(blocks * block, np.int32)
        indices[: dataset.size] = np.arange(dataset.size)
        weights = (np.arange(blocks * block) < dataset.size).astype(np.float32)
        totals = np.zeros((members + 1, 2), np.float64)
        for rows in np.split(np.arange(blocks * block), blocks):
            block_indices, block_weights = (placement.put(a[rows], split) for a in (indices, weights))
            images, labels = block_rows(dataset.images, dataset.labels, block_indices)
            totals += np.asarray(block_totals(params, images, labels, block_weights), np.float64)
        return totals / dataset.size

    return evaluate
