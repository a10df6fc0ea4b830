"""Training: `train(arrays, config, checkpoint_path)` runs the epochs and writes the checkpoint.

The core is `make_train_chunk`: one jitted `lax.scan` over a run of batches, a pure function
of (state, images, labels, batch indices, batch weights, key) with the dataset passed as
arguments (closing over it would bake it into the program and cost seconds of compile).
An epoch is a few such chunks so a terminal can show progress between them; every batch
slot carries weights, so the last partial batch trains exactly like the seed trainer's,
and padding slots leave the state untouched.

Randomness follows the seed trainer: the model is initialized from `PRNGKey(seed)`, and
each epoch splits that key to draw its permutation, so `--preset seed` repeats its run.
"""

from __future__ import annotations

import dataclasses
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
    # The 3-vs-8 tutorial's task: an MLP stops near 99%, the CNN gets past 99.5%.
    "3v8": {
        "model": "cnn",
        "hidden": (128,),
        "epochs": 8,
        "batch_size": 128,
        "optimizer": "adam",
        "lr": 2e-3,
        "schedule": "cosine",
        "augment": "shift",
        "digits": (3, 8),
    },
}
SHIFT_PX = 2
CHUNKS_PER_EPOCH = 8
EVAL_BLOCK = 2000


def config_from_options(preset: str | None, options: Mapping[str, Any]) -> TrainConfig:
    """A preset (or the chosen model's preset) overridden by the options given explicitly."""
    name = preset or options.get("model") or "mlp"
    if name not in PRESETS:
        raise MnistkitError(f"--preset: {name!r} is not one of {', '.join(PRESETS)}")
    return TrainConfig(**{**PRESETS[name], **options})


class TrainState(NamedTuple):
    params: dict[str, jax.Array]
    opt_state: Any


@dataclass
class Dataset:
    """One split on the device: uint8 images (N, 28, 28) and class indices (N,)."""

    images: jax.Array
    labels: jax.Array

    @property
    def size(self) -> int:
        return int(self.labels.shape[0])


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
        val = Dataset(jnp.asarray(train_images[val_rows]), jnp.asarray(train_labels[val_rows]))
        train_images, train_labels = train_images[train_rows], train_labels[train_rows]
    if len(train_labels) == 0:
        raise MnistkitError(f"{source}: no training images")
    return PreparedData(
        train=Dataset(jnp.asarray(train_images), jnp.asarray(train_labels)),
        val=val,
        test=Dataset(jnp.asarray(splits["test"][0]), jnp.asarray(splits["test"][1])),
        classes=classes,
        normalization=_normalization(config.normalize, train_images),
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
) -> Callable[..., tuple[TrainState, jax.Array]]:
    """The compiled training step over a run of batches.

    `train_chunk(state, images, labels, batch_indices (B, n), batch_weights (B, n), key, first_batch)`
    returns the new state and [loss sum, correct count] over the run. A batch whose weights are
    all zero is padding: the state passes through it unchanged.
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

    return jax.jit(train_chunk)


def make_evaluate(
    architecture: Mapping[str, Any], normalization: Mapping[str, Any]
) -> Callable[[dict[str, jax.Array], Dataset], tuple[float, float]]:
    """Mean loss and accuracy of params on a dataset, in fixed-size blocks (one compile for all splits)."""
    architecture = dict(architecture)
    normalization = dict(normalization)

    @jax.jit
    def block_totals(params, images, labels, weights):
        _, totals = weighted_loss(params, architecture, normalize(images, normalization), labels, weights)
        return jnp.stack(totals)

    def evaluate(params: dict[str, jax.Array], dataset: Dataset) -> tuple[float, float]:
        totals = np.zeros(2, np.float64)
        block = min(EVAL_BLOCK, dataset.size)
        for start in range(0, dataset.size, block):
            images = dataset.images[start : start + block]
            labels = dataset.labels[start : start + block]
            weights = jnp.ones(labels.shape[0], jnp.float32)
            if labels.shape[0] < block:
                pad = block - labels.shape[0]
                images = jnp.pad(images, ((0, pad), (0, 0), (0, 0)))
                labels = jnp.pad(labels, (0, pad))
                weights = jnp.pad(weights, (0, pad))
            totals += np.asarray(block_totals(params, images, labels, weights), np.float64)
        return float(totals[0] / dataset.size), float(totals[1] / dataset.size)

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
) -> TrainResult:
    """Train per `config` and write the checkpoint (and the history) atomically.

    Ctrl-C (KeyboardInterrupt or `Interrupted`) writes the last complete epoch's checkpoint,
    or none before the first, says which, and re-raises. A NaN loss raises MnistkitError
    and writes nothing.
    """
    checkpoint_path = Path(checkpoint_path)
    check_writable_target(checkpoint_path)
    if history_path is not None:
        check_writable_target(Path(history_path))
    if show_progress is None:
        show_progress = sys.stderr.isatty()
    data = prepare_data(arrays, config, data_name)
    architecture = models.architecture_for(config, len(data.classes))
    steps_per_epoch = -(-data.train.size // config.batch_size)
    optimizer = make_optimizer(config, steps_per_epoch)
    train_chunk = make_train_chunk(
        architecture, optimizer, data.normalization, SHIFT_PX if config.augment == "shift" else 0
    )
    evaluate = make_evaluate(architecture, data.normalization)
    chunks = chunks_per_epoch(data.train.size, config.batch_size)
    keys = epoch_keys(config.seed)

    if resume_from is None:
        params = models.init(jax.random.PRNGKey(config.seed), architecture)
        state = TrainState(params, optimizer.init(params))
        history: list[dict[str, Any]] = []
    else:
        state, history = _resumed_state(resume_from, optimizer, data, architecture, data_sha256)
        log(f"resuming from {len(history)} completed epochs of {config.epochs}")

    def finish(state: TrainState, history: list[dict[str, Any]]) -> TrainResult:
        result = _checkpoint_result(state, history, architecture, data, evaluate, config, data_sha256)
        save_checkpoint(
            checkpoint_path, result.params, result.metadata, flatten_optimizer_state(state.opt_state)
        )
        return result

    for _ in history:  # the keys of the epochs already trained
        next(keys)
    completed = (state, history)  # one assignment, so an interrupt never sees the two disagree
    try:
        for epoch in range(len(history) + 1, config.epochs + 1):
            started = time.perf_counter()
            epoch_key = next(keys)
            indices, weights = epoch_batches(epoch_key, data.train.size, config.batch_size, chunks)
            augment_key = jax.random.fold_in(epoch_key, 1)
            per_chunk = indices.shape[1]
            totals = np.zeros(2, np.float64)
            for chunk in range(chunks):
                state, chunk_totals = train_chunk(
                    state,
                    data.train.images,
                    data.train.labels,
                    indices[chunk],
                    weights[chunk],
                    augment_key,
                    chunk * per_chunk,
                )
                totals += np.asarray(chunk_totals, np.float64)
                if not np.isfinite(totals[0]):
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
            record = _epoch_record(epoch, totals, data, state, evaluate, config, seconds)
            completed = (state, [*history, record])
            history = completed[1]
            log(_epoch_line(record, config.epochs))
            if history_path is not None:
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
        f"test accuracy {100 * metrics['test_accuracy']:.2f}%  test loss {metrics['test_loss']:.4f}  "
        f"saved {checkpoint_path}"
    )
    return result


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
    params = {name: jnp.asarray(value) for name, value in checkpoint.params.items()}
    opt_state = restore_optimizer_state(optimizer.init(params), checkpoint.optimizer_state, source)
    history = [dict(record, seconds=None) for record in checkpoint.metadata.get("history", [])]
    if len(history) != int(checkpoint.metadata["metrics"]["epochs"]):
        raise MnistkitError(f"{source}: its history does not match its epoch count")
    return TrainState(params, opt_state), history


def _epoch_record(
    epoch: int,
    totals: np.ndarray,
    data: PreparedData,
    state: TrainState,
    evaluate: Callable[[dict[str, jax.Array], Dataset], tuple[float, float]],
    config: TrainConfig,
    seconds: float,
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "epoch": epoch,
        "train_loss": float(totals[0] / data.train.size),
        "train_accuracy": float(totals[1] / data.train.size),
        "val_loss": None,
        "val_accuracy": None,
        "test_loss": None,
        "test_accuracy": None,
    }
    if data.val is not None:
        record["val_loss"], record["val_accuracy"] = evaluate(state.params, data.val)
    if config.eval_test_each_epoch:
        record["test_loss"], record["test_accuracy"] = evaluate(state.params, data.test)
    record["seconds"] = round(seconds, 3)
    return record


def _epoch_line(record: Mapping[str, Any], epochs: int) -> str:
    parts = [
        f"epoch {record['epoch']:>{len(str(epochs))}}/{epochs}",
        f"train loss {record['train_loss']:.4f}",
        f"train acc {100 * record['train_accuracy']:.2f}%",
    ]
    if record["val_accuracy"] is not None:
        parts.append(f"val acc {100 * record['val_accuracy']:.2f}%")
    if record["test_accuracy"] is not None:
        parts.append(f"test acc {100 * record['test_accuracy']:.2f}%")
    parts.append(f"{record['seconds']:.2f} s")
    return "  ".join(parts)


def _checkpoint_result(
    state: TrainState,
    history: list[dict[str, Any]],
    architecture: dict[str, Any],
    data: PreparedData,
    evaluate: Callable[[dict[str, jax.Array], Dataset], tuple[float, float]],
    config: TrainConfig,
    data_sha256: str,
) -> TrainResult:
    """Params and metadata of the state after the last epoch in `history`.

    Timings stay out of the metadata (they are in the history file and on stderr) so the
    same command writes the same bytes.
    """
    test_loss, test_accuracy = evaluate(state.params, data.test)
    last = history[-1]
    metrics = {
        "epochs": len(history),
        "train_loss": last["train_loss"],
        "train_accuracy": last["train_accuracy"],
        "val_loss": last["val_loss"],
        "val_accuracy": last["val_accuracy"],
        "test_loss": test_loss,
        "test_accuracy": test_accuracy,
    }
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
    return TrainResult(params=params, metadata=metadata, history=history)
