"""Training: `train(arrays, config, checkpoint_path)` runs the epochs and writes the checkpoint.

The core is `make_train_chunk`: one jitted `lax.scan` over a run of batches, a pure function
of (state, images, labels, batch indices, batch weights, key) with the dataset passed as
arguments (closing over it would bake it into the program and cost seconds of compile).
An epoch is a few such chunks so a terminal can show progress between them; every batch
slot carries weights, so the last partial batch trains exactly like the seed trainer's,
and padding slots leave the state untouched.

Randomness follows the seed trainer: the model is initialized from `PRNGKey(seed)`, and
each epoch splits that key to draw its permutation, so `--preset seed` repeats its run.

Scale (`parallel.py`): the chunk is compiled for a mesh of devices, possibly in several
processes. The dataset is replicated on every device and each device gathers its own
share of every global batch from it, so the batch is split along its batch axis while
the global batch, and so the training, is the same on 1 device and on N. An ensemble
(`seeds`) is the same chunk under `jax.vmap`: K models with their own init, data order and
augmentation, stacked on a leading axis and trained by one compiled program; member i
trains as `--seed` i alone would.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import json
import math
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mnistkit import models
from mnistkit.atomic import check_writable_target, write_text_atomic
from mnistkit.checkpoint import Checkpoint, save_checkpoint
from mnistkit.config import TrainConfig
from mnistkit.errors import Interrupted, MnistkitError
from mnistkit.inference import ensemble_size, member_params
from mnistkit.parallel import Placement, make_placement

# Named starting points; explicit options override them. `--model X` alone means preset X.
PRESETS: dict[str, dict[str, Any]] = {
    "logreg": {
        "model": "logreg",
        "hidden": (),
        "epochs": 15,
        "optimizer": "adam",
        "lr": 1e-3,
        "schedule": "cosine",
        "normalize": "standard",
    },
    # The seed trainer: 784-128-10 ReLU, plain SGD 0.1, batch 128, 5 epochs, test accuracy each epoch.
    "seed": {
        "model": "mlp",
        "hidden": (128,),
        "epochs": 5,
        "batch_size": 128,
        "optimizer": "sgd",
        "lr": 0.1,
        "schedule": "constant",
        "normalize": "unit",
        "eval_test_each_epoch": True,
    },
    # The default of `make all`: at least 98% in well under 30 s of training on 2 CPU cores.
    "mlp": {
        "model": "mlp",
        "hidden": (512, 256),
        "epochs": 8,
        "batch_size": 128,
        "optimizer": "adam",
        "lr": 1e-3,
        "schedule": "cosine",
    },
    "mlp-best": {
        "model": "mlp",
        "hidden": (1024, 1024),
        "epochs": 20,
        "batch_size": 128,
        "optimizer": "adamw",
        "lr": 1e-3,
        "weight_decay": 1e-4,
        "schedule": "warmup-cosine",
        "augment": "shift",
    },
    "cnn": {
        "model": "cnn",
        "hidden": (128,),
        "epochs": 8,
        "batch_size": 128,
        "optimizer": "adam",
        "lr": 2e-3,
        "schedule": "cosine",
        "augment": "shift",
    },
}
# The 3-vs-8 tutorial's task: an MLP stops near 99%, the CNN gets past 99.5%.
PRESETS["3v8"] = {**PRESETS["cnn"], "digits": (3, 8)}
SHIFT_PX = 2
CHUNKS_PER_EPOCH = 8
EVAL_BLOCK = 2000


def config_from_options(preset: str | None, options: Mapping[str, Any]) -> TrainConfig:
    """A preset (or the chosen model's preset) overridden by the options given explicitly.

    `ensemble: K` stands for `seeds` seed, seed + 1, ..., seed + K - 1.
    """
    name = preset or options.get("model") or "mlp"
    if name not in PRESETS:
        raise MnistkitError(f"--preset: {name!r} is not one of {', '.join(PRESETS)}")
    options = dict(options)
    members = options.pop("ensemble", None)
    if members is not None:
        if "seeds" in options:
            raise MnistkitError("give --seeds or --ensemble, not both")
        if members < 2:
            raise MnistkitError(f"--ensemble: an ensemble needs at least 2 members, got {members}")
        seed = options.get("seed", TrainConfig.seed)
        options["seeds"] = tuple(range(seed, seed + members))
    return TrainConfig(**{**PRESETS[name], **options})


class TrainState(NamedTuple):
    params: dict[str, jax.Array]
    opt_state: Any


@dataclass
class Dataset:
    """One split: uint8 images (N, 28, 28) and class indices (N,), on the host or on the devices."""

    images: np.ndarray | jax.Array
    labels: np.ndarray | jax.Array

    @property
    def size(self) -> int:
        return int(self.labels.shape[0])

    def placed(self, placement: Placement) -> Dataset:
        """A copy on every device of the mesh: each gathers its share of each batch from it."""
        return Dataset(*(placement.put(array, placement.replicated) for array in (self.images, self.labels)))


@dataclass
class PreparedData:
    train: Dataset
    val: Dataset | None
    test: Dataset
    classes: list[int]
    normalization: dict[str, Any]


@dataclass
class TrainResult:
    params: dict[str, np.ndarray]
    metadata: dict[str, Any]
    history: list[dict[str, Any]]


def prepare_data(arrays: Mapping[str, np.ndarray], config: TrainConfig, source: str = "data") -> PreparedData:
    """Select `--digits`, map labels to class indices, carve the validation split, fix normalization."""
    classes = list(config.digits)
    splits = {}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        keep = np.isin(labels, classes)
        lookup = np.full(10, -1, np.int32)
        lookup[classes] = np.arange(len(classes), dtype=np.int32)
        splits[split] = (images[keep], lookup[labels[keep]])
        present = set(np.unique(labels[keep]).tolist())
        absent = [d for d in classes if d not in present]
        if split == "train" and absent:
            raise MnistkitError(
                f"{source}: --digits {','.join(map(str, classes))}: no training images of digit "
                f"{','.join(map(str, absent))}"
            )
    train_images, train_labels = splits["train"]
    val = None
    if config.val_size:
        if config.val_size >= len(train_labels):
            raise MnistkitError(
                f"--val-size {config.val_size} leaves no training images ({len(train_labels)} available)"
            )
        order = np.random.default_rng(config.seed).permutation(len(train_labels))
        val_rows, train_rows = np.sort(order[: config.val_size]), np.sort(order[config.val_size :])
        val = Dataset(train_images[val_rows], train_labels[val_rows])
        train_images, train_labels = train_images[train_rows], train_labels[train_rows]
    if len(train_labels) == 0:
        raise MnistkitError(f"{source}: no training images")
    return PreparedData(
        train=Dataset(train_images, train_labels),
        val=val,
        test=Dataset(*splits["test"]),
        classes=classes,
        normalization=_normalization(config.normalize, train_images),
    )


def place_data(data: PreparedData, placement: Placement) -> PreparedData:
    return dataclasses.replace(
        data,
        train=data.train.placed(placement),
        val=data.val.placed(placement) if data.val is not None else None,
        test=data.test.placed(placement),
    )


def _normalization(kind: str, train_images: np.ndarray) -> dict[str, Any]:
    """Unit scaling, or the training pixels' mean and std (exact, from a histogram) after /255."""
    if kind == "unit":
        return {"kind": "unit"}
    counts = np.bincount(train_images.ravel(), minlength=256).astype(np.float64)
    values = np.arange(256, dtype=np.float64) / 255.0
    mean = float((counts * values).sum() / counts.sum())
    std = float(math.sqrt((counts * (values - mean) ** 2).sum() / counts.sum()))
    return {"kind": "standard", "mean": mean, "std": std if std > 0 else 1.0}


def normalize(images: jax.Array, normalization: Mapping[str, Any]) -> jax.Array:
    """The same float32 arithmetic as `inference.normalize`, on the device."""
    x = images.astype(jnp.float32) / jnp.float32(255.0)
    if normalization["kind"] == "standard":
        x = (x - jnp.float32(normalization["mean"])) / jnp.float32(normalization["std"])
    return x


def random_shift(images: jax.Array, key: jax.Array, max_px: int) -> jax.Array:
    """Shift each uint8 image by up to `max_px` pixels in each direction, filling with black."""
    count, height, width = images.shape
    padded = jnp.pad(images, ((0, 0), (max_px, max_px), (max_px, max_px)))
    offsets = jax.random.randint(key, (count, 2), 0, 2 * max_px + 1)
    crop = jax.vmap(lambda image, offset: jax.lax.dynamic_slice(image, offset, (height, width)))
    return crop(padded, offsets)


def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    total_steps = config.epochs * steps_per_epoch
    if config.schedule == "constant":
        learning_rate: float | optax.Schedule = config.lr
    elif config.schedule == "cosine":
        learning_rate = optax.cosine_decay_schedule(config.lr, total_steps)
    else:
        learning_rate = optax.warmup_cosine_decay_schedule(
            0.0, config.lr, warmup_steps=max(1, total_steps // 20), decay_steps=total_steps
        )
    if config.optimizer == "adamw":
        return optax.adamw(learning_rate, weight_decay=config.weight_decay)
    base = {
        "sgd": lambda: optax.sgd(learning_rate),
        "momentum": lambda: optax.sgd(learning_rate, momentum=0.9),
        "adam": lambda: optax.adam(learning_rate),
    }[config.optimizer]()
    if config.weight_decay:
        return optax.chain(optax.add_decayed_weights(config.weight_decay), base)
    return base


def weighted_loss(
    params: dict[str, jax.Array],
    architecture: Mapping[str, Any],
    x: jax.Array,
    labels: jax.Array,
    weights: jax.Array,
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """Mean cross-entropy over the weighted examples; also the sums for the epoch's statistics."""
    logits = models.apply(params, architecture, x)
    log_probs = jax.nn.log_softmax(logits)
    nll = -jnp.take_along_axis(log_probs, labels[:, None], axis=1)[:, 0]
    correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    loss_sum = jnp.sum(nll * weights)
    return loss_sum / jnp.maximum(jnp.sum(weights), 1.0), (loss_sum, jnp.sum(correct * weights))


def make_train_chunk(
    architecture: Mapping[str, Any],
    optimizer: optax.GradientTransformation,
    normalization: Mapping[str, Any],
    augment_px: int = 0,
    *,
    placement: Placement,
    members: int = 0,
) -> Callable[..., tuple[TrainState, jax.Array]]:
    """The compiled training step over a run of batches.

    `train_chunk(state, images, labels, batch_indices (B, n), batch_weights (B, n), key, first_batch)`
    returns the new state and [loss sum, correct count] over the run. A batch whose weights are
    all zero is padding: the state passes through it unchanged. Compiled for `placement`:
    indices and weights split along their batch axis, everything else replicated. With
    `members`, the state, indices, weights and key carry a leading member axis.
    """
    architecture = dict(architecture)
    normalization = dict(normalization)
    grad_fn = jax.grad(weighted_loss, has_aux=True)

    def train_chunk(state, images, labels, batch_indices, batch_weights, key, first_batch):
        def step(carry, batch):
            state, totals = carry
            batch_number, indices, weights = batch
            batch_images = images[indices]
            if augment_px:
                batch_images = random_shift(batch_images, jax.random.fold_in(key, batch_number), augment_px)
            x = normalize(batch_images, normalization)
            grads, (loss_sum, correct) = grad_fn(state.params, architecture, x, labels[indices], weights)
            updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
            params = optax.apply_updates(state.params, updates)
            real = jnp.sum(weights) > 0
            new_state = jax.tree.map(
                lambda new, old: jnp.where(real, new, old), TrainState(params, opt_state), state
            )
            return (new_state, totals + jnp.stack([loss_sum, correct])), None

        batch_numbers = first_batch + jnp.arange(batch_indices.shape[0])
        (state, totals), _ = jax.lax.scan(
            step, (state, jnp.zeros(2, jnp.float32)), (batch_numbers, batch_indices, batch_weights)
        )
        return state, totals

    if members:
        train_chunk = jax.vmap(train_chunk, in_axes=(0, None, None, 0, 0, 0, None))
    replicated = placement.replicated
    batches = placement.split(3 if members else 2, 2 if members else 1)
    return jax.jit(
        train_chunk,
        in_shardings=(replicated, replicated, replicated, batches, batches, replicated, replicated),
        out_shardings=replicated,
    )


def make_evaluate(
    architecture: Mapping[str, Any], normalization: Mapping[str, Any], placement: Placement
) -> Callable[[dict[str, jax.Array], Dataset], np.ndarray]:
    """Mean loss and accuracy of params on a dataset, as rows [loss, accuracy]: one for a
    single model; for an ensemble one per member, then the ensemble's.

    Blocks of a fixed size (one compile for all splits), split over the devices like batches.
    """
    architecture = dict(architecture)
    normalization = dict(normalization)
    members = ensemble_size(architecture)

    def log_probabilities(params: dict[str, jax.Array], x: jax.Array) -> jax.Array:
        if members:
            return models.ensemble_log_probabilities(params, architecture["member"], x)
        return jax.nn.log_softmax(models.apply(params, architecture, x))[None]

    replicated, split = placement.replicated, placement.split(1, 0)

    @functools.partial(
        jax.jit,
        in_shardings=(replicated, replicated, replicated, split, split),
        out_shardings=replicated,
    )
    def block_totals(params, images, labels, indices, weights):
        log_probs = log_probabilities(params, normalize(images[indices], normalization))
        block_labels = labels[indices]
        nll = -jnp.take_along_axis(log_probs, block_labels[None, :, None], axis=2)[..., 0]
        correct = (jnp.argmax(log_probs, axis=-1) == block_labels).astype(jnp.float32)
        return jnp.stack([jnp.sum(nll * weights, axis=1), jnp.sum(correct * weights, axis=1)], axis=1)

    def evaluate(params: dict[str, jax.Array], dataset: Dataset) -> np.ndarray:
        devices = placement.device_count
        block = -(-min(EVAL_BLOCK, dataset.size) // devices) * devices
        blocks = -(-dataset.size // block)
        indices = np.zeros(blocks * block, np.int32)
        indices[: dataset.size] = np.arange(dataset.size)
        weights = (np.arange(blocks * block) < dataset.size).astype(np.float32)
        totals = np.zeros((members + 1 if members else 1, 2), np.float64)
        for rows in np.split(np.arange(blocks * block), blocks):
            block_indices, block_weights = (placement.put(a[rows], split) for a in (indices, weights))
            totals += np.asarray(
                block_totals(params, dataset.images, dataset.labels, block_indices, block_weights), np.float64
            )
        return totals / dataset.size

    return evaluate


def epoch_batches(key: jax.Array, size: int, batch_size: int, chunks: int) -> tuple[np.ndarray, np.ndarray]:
    """The epoch's shuffled indices as (chunks, batches per chunk, batch_size), with weights.

    The order is `jax.random.permutation(key, size)` cut into batches as the seed trainer does,
    the last batch partial; the slots past the end have weight 0.
    """
    order = np.asarray(jax.random.permutation(key, size), np.int32)
    batches = -(-size // batch_size)
    per_chunk = -(-batches // chunks)
    slots = chunks * per_chunk * batch_size
    indices = np.zeros(slots, np.int32)
    indices[:size] = order
    weights = np.zeros(slots, np.float32)
    weights[:size] = 1.0
    shape = (chunks, per_chunk, batch_size)
    return indices.reshape(shape), weights.reshape(shape)


def chunks_per_epoch(size: int, batch_size: int) -> int:
    batches = -(-size // batch_size)
    per_chunk = -(-batches // CHUNKS_PER_EPOCH)
    return -(-batches // per_chunk)


def epoch_keys(seed: int) -> Iterator[jax.Array]:
    """The seed trainer's key chain: `key, epoch_key = split(key)` once per epoch."""
    key = jax.random.PRNGKey(seed)
    while True:
        key, epoch_key = jax.random.split(key)
        yield epoch_key


def flatten_optimizer_state(opt_state: Any) -> dict[str, np.ndarray]:
    """Optimizer state as named arrays (`1.0.mu.dense_0.kernel`), named by their place in the pytree."""
    leaves = jax.tree_util.tree_flatten_with_path(opt_state)[0]
    return {jax.tree_util.keystr(path, simple=True, separator="."): np.asarray(leaf) for path, leaf in leaves}


def restore_optimizer_state(template: Any, saved: Mapping[str, np.ndarray], source: str) -> Any:
    """Fill a freshly initialized optimizer state with the saved arrays, checking every name and shape."""
    paths_and_leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    names = [jax.tree_util.keystr(path, simple=True, separator=".") for path, _ in paths_and_leaves]
    if sorted(names) != sorted(saved):
        raise MnistkitError(
            f"{source}: optimizer state does not match the checkpoint's optimizer settings "
            "(was it written by `mnistkit train`?)"
        )
    leaves = []
    for name, (_, leaf) in zip(names, paths_and_leaves, strict=True):
        value = saved[name]
        # Scalars (step counts) come back with shape (1,): the checkpoint stores at least 1-d arrays.
        if value.size != leaf.size or value.dtype != leaf.dtype:
            raise MnistkitError(f"{source}: optimizer tensor {name} has the wrong shape or dtype")
        leaves.append(jnp.asarray(value).reshape(leaf.shape))
    return jax.tree_util.tree_unflatten(treedef, leaves)


def resume_config(checkpoint: Checkpoint, source: str, epochs: int | None) -> TrainConfig:
    """The checkpoint's training settings, with a new total number of epochs if given."""
    try:
        config = TrainConfig.from_dict(checkpoint.metadata["config"])
        done = int(checkpoint.metadata["metrics"]["epochs"])
    except (KeyError, TypeError, ValueError) as error:
        raise MnistkitError(f"{source}: checkpoint has no usable training settings ({error})") from None
    if not checkpoint.optimizer_state:
        raise MnistkitError(f"{source}: checkpoint holds no optimizer state to resume from")
    if epochs is not None:
        config = dataclasses.replace(config, epochs=epochs)
    if config.epochs <= done:
        raise MnistkitError(
            f"{source}: already trained {done} epochs; pass --epochs above {done} to train further"
        )
    return config


def _log_to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _silent(message: str) -> None:
    pass


def train(
    arrays: Mapping[str, np.ndarray],
    config: TrainConfig,
    checkpoint_path: str | Path,
    *,
    history_path: str | Path | None = None,
    resume_from: Checkpoint | None = None,
    data_sha256: str = "",
    data_name: str = "data",
    log: Callable[[str], None] = _log_to_stderr,
    show_progress: bool | None = None,
    devices: int | None = None,
) -> TrainResult:
    """Train per `config` on `devices` local devices of every process (default: all) and
    write the checkpoint (and the history) atomically.

    In a multi-process run every process calls this with the same arguments; only process 0
    logs and writes. Ctrl-C (KeyboardInterrupt or `Interrupted`) writes the last complete
    epoch's checkpoint, or none before the first, says which, and re-raises. A NaN loss
    raises MnistkitError and writes nothing.
    """
    writer = jax.process_index() == 0
    if not writer:
        log, show_progress = _silent, False
    checkpoint_path = Path(checkpoint_path)
    if writer:
        check_writable_target(checkpoint_path)
        if history_path is not None:
            check_writable_target(Path(history_path))
    if show_progress is None:
        show_progress = sys.stderr.isatty()
    placement = make_placement(config.batch_size, devices, log)
    data = place_data(prepare_data(arrays, config, data_name), placement)
    architecture = models.architecture_for(config, len(data.classes))
    members = len(config.seeds)
    member_architecture = architecture["member"] if members else architecture
    steps_per_epoch = -(-data.train.size // config.batch_size)
    optimizer = make_optimizer(config, steps_per_epoch)
    train_chunk = make_train_chunk(
        member_architecture,
        optimizer,
        data.normalization,
        SHIFT_PX if config.augment == "shift" else 0,
        placement=placement,
        members=members,
    )
    evaluate = make_evaluate(architecture, data.normalization, placement)
    chunks = chunks_per_epoch(data.train.size, config.batch_size)
    key_chains = [epoch_keys(seed) for seed in config.seeds or (config.seed,)]
    if placement.device_count > 1:
        processes = f" in {jax.process_count()} processes" if jax.process_count() > 1 else ""
        log(f"data parallel over {placement.device_count} {jax.default_backend()} devices{processes}")
    if members:
        log(f"training an ensemble of {members} models at once, seeds {','.join(map(str, config.seeds))}")

    if resume_from is None:
        params = _initial_params(config, member_architecture)
        state = TrainState(params, _init_optimizer(optimizer, params, members))
        history: list[dict[str, Any]] = []
    else:
        state, history = _resumed_state(resume_from, optimizer, data, architecture, data_sha256)
        log(f"resuming from {len(history)} completed epochs of {config.epochs}")
    state = placement.put_replicated(state)

    def finish(state: TrainState, history: list[dict[str, Any]]) -> TrainResult:
        result = _checkpoint_result(state, history, architecture, data, evaluate, config, data_sha256)
        if writer:
            save_checkpoint(
                checkpoint_path, result.params, result.metadata, flatten_optimizer_state(state.opt_state)
            )
        return result

    for _ in history:  # the keys of the epochs already trained
        for chain in key_chains:
            next(chain)
    epoch_inputs = _epoch_input_stream(
        key_chains, data.train.size, config, chunks, members, config.epochs - len(history)
    )
    completed = (state, history)  # one assignment, so an interrupt never sees the two disagree
    try:
        for epoch in range(len(history) + 1, config.epochs + 1):
            started = time.perf_counter()
            indices, weights, augment_key = next(epoch_inputs)
            augment_key = placement.put(augment_key, placement.replicated)
            batches = placement.split(indices.ndim - 1, indices.ndim - 2)
            per_chunk = indices.shape[-2]
            totals = np.zeros((max(members, 1), 2), np.float64)
            for chunk in range(chunks):
                state, chunk_totals = train_chunk(
                    state,
                    data.train.images,
                    data.train.labels,
                    placement.put(indices[chunk], batches),
                    placement.put(weights[chunk], batches),
                    augment_key,
                    placement.put(np.int32(chunk * per_chunk), placement.replicated),
                )
                totals += np.asarray(chunk_totals, np.float64).reshape(-1, 2)
                if not np.isfinite(totals[:, 0]).all():
                    raise MnistkitError(
                        f"training diverged: the loss became NaN or infinite in epoch {epoch} with "
                        f"--lr {config.lr:g}; try a lower --lr. No checkpoint was written."
                    )
                if show_progress:
                    print(
                        f"\repoch {epoch}/{config.epochs} {100 * (chunk + 1) // chunks:3d}%",
                        end="",
                        file=sys.stderr,
                        flush=True,
                    )
            jax.block_until_ready(state)
            seconds = time.perf_counter() - started
            if show_progress:
                print("\r", end="", file=sys.stderr)
            record = _epoch_record(epoch, totals / data.train.size, data, state, evaluate, config, seconds)
            completed = (state, [*history, record])
            history = completed[1]
            log(_epoch_line(record, config.epochs))
            if history_path is not None and writer:
                write_text_atomic(history_path, "".join(json.dumps(r) + "\n" for r in history))
    except (KeyboardInterrupt, Interrupted):
        completed_state, completed_history = completed
        done = len(completed_history)
        if resume_from is not None and done == int(resume_from.metadata["metrics"]["epochs"]):
            log(f"interrupted: no new epoch completed; {checkpoint_path} not written")
        elif done:
            finish(completed_state, completed_history)
            log(f"interrupted: saved the checkpoint of epoch {done} of {config.epochs} to {checkpoint_path}")
        else:
            log("interrupted before the first epoch completed: no checkpoint written")
        raise
    result = finish(state, history)
    metrics = result.metadata["metrics"]
    log(
        f"test accuracy {100 * metrics['test_accuracy']:.2f}%{_members_range(metrics, 'test')}  "
        f"test loss {metrics['test_loss']:.4f}  saved {checkpoint_path}"
    )
    return result


def _initial_params(config: TrainConfig, member_architecture: dict[str, Any]) -> dict[str, jax.Array]:
    """The model from `PRNGKey(seed)`; for an ensemble each member's from its own seed, stacked."""
    if not config.seeds:
        return models.init(jax.random.PRNGKey(config.seed), member_architecture)
    return models.stack_members(
        [models.init(jax.random.PRNGKey(seed), member_architecture) for seed in config.seeds]
    )


def _init_optimizer(
    optimizer: optax.GradientTransformation, params: dict[str, jax.Array], members: int
) -> Any:
    return jax.vmap(optimizer.init)(params) if members else optimizer.init(params)


def _epoch_inputs(
    key_chains: list[Iterator[jax.Array]], size: int, config: TrainConfig, chunks: int, members: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The epoch's batch indices and weights (chunks, [members,] batches, batch size), and the
    augmentation key: for an ensemble each member's own, from its own key chain."""
    epoch_key_list = [next(chain) for chain in key_chains]
    batches = [epoch_batches(key, size, config.batch_size, chunks) for key in epoch_key_list]
    augment_keys = [np.asarray(jax.random.fold_in(key, 1)) for key in epoch_key_list]
    if not members:
        return *batches[0], augment_keys[0]
    indices, weights = (np.stack([batch[part] for batch in batches], axis=1) for part in (0, 1))
    return indices, weights, np.stack(augment_keys)


def _epoch_input_stream(
    key_chains: list[Iterator[jax.Array]],
    size: int,
    config: TrainConfig,
    chunks: int,
    members: int,
    epochs: int,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """`_epoch_inputs` of each of `epochs` epochs, the next one drawn in a background thread
    while the current one trains: the permutation takes about 40 ms, a tenth of a seed epoch."""
    if epochs <= 0:
        return
    draw = functools.partial(_epoch_inputs, key_chains, size, config, chunks, members)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        upcoming = pool.submit(draw)
        for remaining in range(epochs, 0, -1):
            current = upcoming.result()
            if remaining > 1:
                upcoming = pool.submit(draw)
            yield current


def _resumed_state(
    checkpoint: Checkpoint,
    optimizer: optax.GradientTransformation,
    data: PreparedData,
    architecture: dict[str, Any],
    data_sha256: str,
) -> tuple[TrainState, list[dict[str, Any]]]:
    source = "--resume checkpoint"
    saved_sha = checkpoint.metadata.get("data_sha256", "")
    if data_sha256 and saved_sha and saved_sha != data_sha256:
        raise MnistkitError(f"{source}: it was trained on a different data file (SHA-256 {saved_sha[:12]}…)")
    if checkpoint.architecture != architecture or checkpoint.normalization != data.normalization:
        raise MnistkitError(f"{source}: its architecture or normalization disagrees with its own settings")
    members = ensemble_size(architecture)
    if members:
        params = models.stack_members(
            [
                {name: jnp.asarray(value) for name, value in member_params(checkpoint.params, index).items()}
                for index in range(members)
            ]
        )
    else:
        params = {name: jnp.asarray(value) for name, value in checkpoint.params.items()}
    template = _init_optimizer(optimizer, params, members)
    opt_state = restore_optimizer_state(template, checkpoint.optimizer_state, source)
    history = [dict(record, seconds=None) for record in checkpoint.metadata.get("history", [])]
    if len(history) != int(checkpoint.metadata["metrics"]["epochs"]):
        raise MnistkitError(f"{source}: its history does not match its epoch count")
    return TrainState(params, opt_state), history


SPLITS = ("train", "val", "test")


def _epoch_record(
    epoch: int,
    train_scores: np.ndarray,
    data: PreparedData,
    state: TrainState,
    evaluate: Callable[[dict[str, jax.Array], Dataset], np.ndarray],
    config: TrainConfig,
    seconds: float,
) -> dict[str, Any]:
    """The history line of an epoch. `train_scores`: mean [loss, accuracy] over its batches, a row
    per member. For an ensemble, train_* is the members' mean, val_* and test_* the ensemble's,
    and `members` holds each member's."""
    scores = {
        "train": train_scores,
        "val": evaluate(state.params, data.val) if data.val is not None else None,
        "test": evaluate(state.params, data.test) if config.eval_test_each_epoch else None,
    }
    record: dict[str, Any] = {"epoch": epoch}
    for split, values in scores.items():
        if values is None:
            loss = accuracy = None
        elif split == "train":
            loss, accuracy = (float(value) for value in values.mean(axis=0))
        else:
            loss, accuracy = float(values[-1, 0]), float(values[-1, 1])
        record[f"{split}_loss"], record[f"{split}_accuracy"] = loss, accuracy
    if config.seeds:
        record["members"] = [
            {
                "seed": seed,
                **{
                    f"{split}_{name}": None if values is None else float(values[index, column])
                    for split, values in scores.items()
                    for column, name in enumerate(("loss", "accuracy"))
                },
            }
            for index, seed in enumerate(config.seeds)
        ]
    record["seconds"] = round(seconds, 3)
    return record


def _members_range(record: Mapping[str, Any], split: str) -> str:
    """' (members 97.10-97.52%)': the spread of an ensemble's members on `split`."""
    if "members" not in record:
        return ""
    accuracies = [100 * member[f"{split}_accuracy"] for member in record["members"]]
    return f" (members {min(accuracies):.2f}-{max(accuracies):.2f}%)"


def _epoch_line(record: Mapping[str, Any], epochs: int) -> str:
    parts = [
        f"epoch {record['epoch']:>{len(str(epochs))}}/{epochs}",
        f"train loss {record['train_loss']:.4f}",
        f"train acc {100 * record['train_accuracy']:.2f}%",
    ]
    if record["val_accuracy"] is not None:
        parts.append(f"val acc {100 * record['val_accuracy']:.2f}%{_members_range(record, 'val')}")
    if record["test_accuracy"] is not None:
        parts.append(f"test acc {100 * record['test_accuracy']:.2f}%{_members_range(record, 'test')}")
    parts.append(f"{record['seconds']:.2f} s")
    return "  ".join(parts)


def _checkpoint_result(
    state: TrainState,
    history: list[dict[str, Any]],
    architecture: dict[str, Any],
    data: PreparedData,
    evaluate: Callable[[dict[str, jax.Array], Dataset], np.ndarray],
    config: TrainConfig,
    data_sha256: str,
) -> TrainResult:
    """Params and metadata of the state after the last epoch in `history`.

    Timings stay out of the metadata (they are in the history file and on stderr) so the
    same command writes the same bytes.
    """
    test_scores = evaluate(state.params, data.test)
    last = history[-1]
    metrics: dict[str, Any] = {
        "epochs": len(history),
        "train_loss": last["train_loss"],
        "train_accuracy": last["train_accuracy"],
        "val_loss": last["val_loss"],
        "val_accuracy": last["val_accuracy"],
        "test_loss": float(test_scores[-1, 0]),
        "test_accuracy": float(test_scores[-1, 1]),
    }
    if config.seeds:
        metrics["members"] = [
            {"seed": seed, "test_loss": float(loss), "test_accuracy": float(accuracy)}
            for seed, (loss, accuracy) in zip(config.seeds, test_scores[:-1], strict=True)
        ]
    metadata = {
        "architecture": architecture,
        "normalization": data.normalization,
        "classes": data.classes,
        "config": config.to_dict(),
        "metrics": metrics,
        "history": [{k: v for k, v in record.items() if k != "seconds"} for record in history],
        "data_sha256": data_sha256,
    }
    params = {name: np.asarray(value, np.float32) for name, value in state.params.items()}
    if config.seeds:
        params = models.unstack_members(params)
    return TrainResult(params=params, metadata=metadata, history=history)
