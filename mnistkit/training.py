"""Training: `train(arrays, config, checkpoint_path)` runs the epochs and writes the checkpoint.

The loop only orders the work: the data comes from `training_data`, the compiled steps from
`steps`, the state and batch orders from `train_state`, the devices from `parallel`, the
history format from `history`. Progress goes to two callbacks, `log` (whole lines: notes
and one per epoch) and `progress` (within an epoch, after each compiled chunk); the CLI
draws a progress line and takes Ctrl-C there.

Scale (`parallel.py`): the chunk is compiled for a mesh of devices, possibly in several
processes. The dataset is replicated on every device and each device gathers its own
share of every global batch from it, so the batch is split along its batch axis while
the global batch, and so the training, is the same on 1 device and on N. An ensemble
(`seeds`) is K models with their own init, data order and augmentation, stacked on a
leading axis and trained by one compiled program; member i trains as `--seed` i alone would.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np
import optax

from mnistkit import run_state
from mnistkit.architectures import build_architecture, ensemble_size, member_architecture, param_shapes
from mnistkit.arrays import arrays_sha256, check_light_ink, dataset_name, unnamed
from mnistkit.atomic import check_writable_target
from mnistkit.checkpoint import MAX_CHECKPOINT_VALUES, Checkpoint, check_checkpoint_name, save_checkpoint
from mnistkit.compile_cache import compile_cache
from mnistkit.config import TrainConfig
from mnistkit.errors import Interrupted, MnistkitError
from mnistkit.history import METRICS, check_history_target, epoch_line, members_range, write_history
from mnistkit.parallel import Placement, make_placement, stop_together
from mnistkit.steps import (
    TrainState,
    epoch_learning_rates,
    make_evaluate,
    make_optimizer,
    make_train_chunk,
    steps_taken,
)
from mnistkit.terms import setting
from mnistkit.train_state import (
    EpochInputs,
    batches_per_epoch,
    checkpoint_tensors,
    initial_state,
    stacked_tensors,
    state_from_checkpoint,
    state_from_stacked,
)
from mnistkit.training_data import Dataset, TrainingData, prepare_data

Log = Callable[[str], None]
Progress = Callable[[int, int, float], None]


@dataclass
class TrainResult:
    checkpoint: Checkpoint
    history: list[dict[str, Any]]


def _log_to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Setup:
    """What a run decides and compiles before its first epoch."""

    config: TrainConfig
    placement: Placement
    data: TrainingData
    architecture: dict[str, Any]
    optimizer: optax.GradientTransformation
    train_chunk: Callable[..., tuple[TrainState, jax.Array]]
    evaluate: Callable[[dict[str, jax.Array], Dataset], np.ndarray]
    data_sha256: str
    arrays_sha256: str = ""  # the arrays' own: they may come from a file or not

    @property
    def members(self) -> int:
        return ensemble_size(self.architecture)


def train(
    arrays: Mapping[str, np.ndarray],
    config: TrainConfig,
    checkpoint_path: str | Path | None = None,
    *,
    history_path: str | Path | None = None,
    resume_from: Checkpoint | None = None,
    data_sha256: str = "",
    data_name: str = "data",
    devices: int | None = None,
    restart: bool = False,
    save_every: int = 1,
    tell_unnamed: bool = False,
    log: Log = _log_to_stderr,
    progress: Progress | None = None,
) -> TrainResult:
    """Train per `config` on `devices` local devices of every process (default: all), write
    the checkpoint (when a path is given) and the history atomically, and return both.

    `data_sha256` is the data file's ("" for arrays that never were one), recorded in the
    checkpoint with the arrays' own (`arrays.arrays_sha256`): either tells a saved state of
    the same run, and a `resume_from` checkpoint trained on other data.
    Every `save_every` epochs (with 0, only when interrupted) the run's state is saved
    beside the checkpoint (`run_state`); the same call after a crash continues from it, unless
    `restart`. In a multi-process run
    every process calls this with the same arguments; only process 0 logs and writes.
    `progress(epoch, epochs, fraction)` runs after each chunk of batches in every process.
    With `tell_unnamed`, arrays that name no dataset and hold no published one's labels are
    said to be taken as MNIST's digits (a part of Fashion-MNIST saved with numpy would
    otherwise train a model of digits in silence).
    Ctrl-C (KeyboardInterrupt, or `Interrupted` from `progress`) writes the last complete
    epoch's checkpoint, or none before the first, says which, and re-raises. A NaN loss
    raises MnistkitError and writes no checkpoint. Compiled programs are kept on disk for the
    next run (`compile_cache`).
    """
    check_light_ink(arrays["train_images"], data_name)
    writer = jax.process_index() == 0
    log = log if writer else (lambda message: None)
    with compile_cache(log):
        if checkpoint_path is not None:  # in every process: the others would wait for process 0
            check_checkpoint_name(checkpoint_path)
        for path in (checkpoint_path, history_path):
            if writer and path is not None:
                check_writable_target(path)
        if writer and history_path is not None:
            check_history_target(history_path)
        setup = _set_up(arrays, config, data_name, data_sha256, devices, log)
        if tell_unnamed and resume_from is None and unnamed(arrays):  # after the checks: no error follows
            naming = setting("dataset", "NAME")
            log(f"{data_name}: names no dataset: taken as MNIST's digits ({naming} names another)")
        setup = dataclasses.replace(setup, arrays_sha256=arrays_sha256(arrays))
        config = setup.config
        state_file = run_state.state_path(checkpoint_path)
        start = (
            "" if resume_from is None else run_state.starting_point(resume_from.metadata.get("history", []))
        )
        run_fingerprint = run_state.fingerprint(
            config,
            data_sha256 or setup.arrays_sha256,
            setup.placement.device_count,
            dataset_name(arrays),
            start,
        )
        inputs = EpochInputs(config, setup.data.train.size)
        try:
            state, history = _starting_point(setup, resume_from, state_file, run_fingerprint, restart, log)
            inputs.start_at(len(history) + 1)
            steps_per_epoch = batches_per_epoch(setup.data.train.size, config.batch_size)
            learning_rates, step = epoch_learning_rates(config, steps_per_epoch), steps_taken(state.opt_state)
            state = setup.placement.put_replicated(state)
        except BaseException:
            inputs.close()
            raise

        def finish(state: TrainState, history: list[dict[str, Any]]) -> TrainResult:
            result = _result(setup, state, history)
            if writer and checkpoint_path is not None:
                checkpoint = result.checkpoint
                save_checkpoint(
                    checkpoint_path, checkpoint.params, checkpoint.metadata, checkpoint.optimizer_state
                )
            return result

        completed = (state, history)  # one assignment, so an interrupt never sees the two disagree
        started_at = saved_at = len(history)
        try:
            for epoch in range(len(history) + 1, config.epochs + 1):
                state, record = _train_epoch(setup, state, epoch, learning_rates(step), inputs, progress)
                step += steps_per_epoch
                completed = (state, [*history, record])
                history = completed[1]
                if writer:
                    saves_state = save_every > 0 and (epoch % save_every == 0 or epoch == config.epochs)
                    if saves_state or epoch == config.epochs:
                        _keep_epoch(
                            state, history, state_file if saves_state else None, run_fingerprint, history_path
                        )
                    saved_at = epoch if saves_state else saved_at
                log(epoch_line(record, config.epochs))  # last: an epoch reported is an epoch kept
        except (KeyboardInterrupt, Interrupted) as stop:
            outcome = _save_on_interrupt(completed, resume_from, finish, checkpoint_path, config)
            if writer and started_at < len(completed[1]) > saved_at:
                # The epochs since the last state saved (every one, with --save-every 0): kept
                # too, so that the same call continues from the checkpoint just written (and
                # make, seeing the state, runs it again).
                with contextlib.suppress(OSError, MnistkitError):  # the interrupt stays the news
                    _keep_epoch(*completed, state_file, run_fingerprint, history_path)
            if isinstance(stop, Interrupted):
                stop.outcome = outcome
            else:
                log(f"interrupted: {outcome}")
            raise
        finally:
            inputs.close()
        result = finish(state, history)
        if writer:
            run_state.remove_state(state_file)
        metrics = result.checkpoint.metadata["metrics"]
        saved = f"  saved {checkpoint_path}" if checkpoint_path is not None else ""
        log(
            f"test accuracy {100 * metrics['test_accuracy']:.2f}%{members_range(metrics, 'test')}  "
            f"test loss {metrics['test_loss']:.4f}{saved}"
        )
        return result


def _keep_epoch(
    state: TrainState,
    history: list[dict[str, Any]],
    state_file: Path | None,
    run_fingerprint: dict[str, Any],
    history_path: str | Path | None,
) -> None:
    """Write what an epoch leaves: the run's state (first, so that a history line never
    outruns it) and the history file. Called only where the state is saved, or for the last
    epoch: a run killed between saves leaves the history that goes with what it keeps."""
    if state_file is not None:
        params, optimizer_state = stacked_tensors(state)
        run_state.save_state(
            state_file, run_state.RunState(len(history), params, optimizer_state, history), run_fingerprint
        )
    if history_path is not None:
        write_history(history_path, history)


def _set_up(
    arrays: Mapping[str, np.ndarray],
    config: TrainConfig,
    data_name: str,
    data_sha256: str,
    devices: int | None,
    log: Log,
) -> Setup:
    """The devices, the data on them, the architecture, the optimizer and the compiled steps."""
    placement = make_placement(config.batch_size, devices, log)
    data = prepare_data(arrays, config, data_name)
    config = _batch_within_data(config, data.train.size, placement.device_count, log)
    data = dataclasses.replace(
        data,
        **{
            split: Dataset(
                *(placement.put(array, placement.replicated) for array in (dataset.images, dataset.labels))
            )
            for split, dataset in (("train", data.train), ("val", data.val), ("test", data.test))
            if dataset is not None
        },
    )
    architecture = build_architecture(config, len(data.classes))
    members, member = ensemble_size(architecture), member_architecture(architecture)
    optimizer = make_optimizer(config)
    _check_fits_a_checkpoint(member, members, optimizer)
    if placement.device_count > 1:
        processes = f" in {jax.process_count()} processes" if jax.process_count() > 1 else ""
        log(f"data parallel over {placement.device_count} {jax.default_backend()} devices{processes}")
    if len(config.seeds) > 1:
        log(f"training an ensemble of {members} models at once, seeds {','.join(map(str, config.seeds))}")
    return Setup(
        config,
        placement,
        data,
        architecture,
        optimizer,
        make_train_chunk(
            member,
            optimizer,
            data.normalization,
            config.augment,
            config.label_smoothing,
            config.batch_size,
            placement,
            members,
        ),
        make_evaluate(member, members, data.normalization, placement),
        data_sha256,
    )


def _check_fits_a_checkpoint(member: dict[str, Any], members: int, optimizer: Any) -> None:
    """Settings whose model a checkpoint could not hold are one line here, not a traceback
    from jax (a width of 10**20) or a checkpoint written and then refused as too large."""
    shapes = param_shapes(member)
    weights = members * sum(math.prod(shape) for shape in shapes.values())
    values = weights
    if weights <= MAX_CHECKPOINT_VALUES:  # jax's shapes hold no more than int64 does
        leaves = {name: jax.ShapeDtypeStruct(shape, np.float32) for name, shape in shapes.items()}
        state = jax.eval_shape(optimizer.init, leaves)
        values += members * sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(state))
    if values > MAX_CHECKPOINT_VALUES:
        fewer = f" or fewer members than {members}" if members > 1 else ""
        raise MnistkitError(
            f"the model would keep {values:,} numbers (its {weights:,} weights and their optimizer's "
            f"state), more than the {MAX_CHECKPOINT_VALUES:,} a checkpoint holds: choose narrower "
            f"layers{fewer}"
        )


def _starting_point(
    setup: Setup,
    resume_from: Checkpoint | None,
    state_file: Path | None,
    run_fingerprint: dict[str, Any],
    restart: bool,
    log: Log,
) -> tuple[TrainState, list[dict[str, Any]]]:
    """Fresh models, a `--resume` checkpoint's, or (newer than either) the saved state of this
    very run; in a multi-process run, process 0 decides and the others receive its choice."""
    if resume_from is None:
        state = initial_state(setup.config, member_architecture(setup.architecture), setup.optimizer)
        history: list[dict[str, Any]] = []
    else:
        state, history = _resumed(resume_from, setup)
        log(f"resuming after epoch {len(history)} of {setup.config.epochs}")
    # A state not used leaves the run where it was: at the --resume checkpoint (which
    # `train -o X --resume X` stopped by Ctrl-C has moved on), or at the start.
    instead = "starting over" if resume_from is None else f"going on after epoch {len(history)}"
    saved = None
    if state_file is not None and jax.process_index() == 0:
        if restart:
            if run_state.remove_state(state_file):
                log(f"{state_file}: removed, as {setting('restart', True)} asks; starting over")
        else:
            saved, line = run_state.load_state(state_file, run_fingerprint)
            if saved is not None and saved.epochs_done <= len(history):
                saved, line = None, ""  # the checkpoint given to --resume is as far along
            if line:
                log(line if saved is not None else f"{line}; {instead}")
    if saved is not None:
        try:
            state = state_from_stacked(
                saved.params, saved.optimizer_state, setup.optimizer, str(state_file), state
            )
            history = saved.history
        except MnistkitError as error:
            log(f"{error}; {instead}")
    if jax.process_count() > 1:
        state, history = _as_process_zero(state, history)
    return state, history


def _as_process_zero(
    state: TrainState, history: list[dict[str, Any]]
) -> tuple[TrainState, list[dict[str, Any]]]:
    """Process 0's starting point in every process (only process 0 reads the saved state; the
    others need its tensors and how many epochs are done, not its history's figures)."""
    from jax.experimental import multihost_utils

    done, state = multihost_utils.broadcast_one_to_all((np.int32(len(history)), state))
    if jax.process_index() != 0:
        history = [{"epoch": epoch, **dict.fromkeys(METRICS)} for epoch in range(1, int(done) + 1)]
    return state, history


def _train_epoch(
    setup: Setup,
    state: TrainState,
    epoch: int,
    learning_rates: np.ndarray,
    inputs: EpochInputs,
    progress: Progress | None,
) -> tuple[TrainState, dict[str, Any]]:
    """One epoch, chunk by chunk, at the given rate for each of its steps; the new state and
    the epoch's history record."""
    config, placement, data = setup.config, setup.placement, setup.data
    started = time.perf_counter()
    indices, weights, augment_keys = inputs.next_epoch(more_to_come=epoch < config.epochs)
    augment_keys = placement.put(augment_keys, placement.replicated)
    batches, per_chunk = placement.split(3, 2), indices.shape[-2]
    learning_rates = np.resize(learning_rates, inputs.chunks * per_chunk)  # the padding's are unused
    totals = np.zeros((setup.members, 2), np.float64)
    for chunk in range(inputs.chunks):
        state, chunk_totals = setup.train_chunk(
            state,
            data.train.images,
            data.train.labels,
            placement.put(indices[chunk], batches),
            placement.put(weights[chunk], batches),
            placement.put(learning_rates[chunk * per_chunk : (chunk + 1) * per_chunk], placement.replicated),
            augment_keys,
            placement.put(np.int32(chunk * per_chunk), placement.replicated),
        )
        totals += np.asarray(chunk_totals, np.float64)
        if not np.isfinite(totals[:, 0]).all():
            raise MnistkitError(
                f"training diverged: the loss became NaN or infinite in epoch {epoch} with "
                f"{setting('lr', config.lr)}; try a lower {setting('lr')}. No checkpoint was written."
            )
        if progress is not None:
            stop_together(progress, epoch, config.epochs, (chunk + 1) / inputs.chunks)
    jax.block_until_ready(state)
    seconds = time.perf_counter() - started
    return state, _epoch_record(setup, epoch, totals / data.train.size, state, seconds)


def _batch_within_data(config: TrainConfig, size: int, device_count: int, log: Log) -> TrainConfig:
    """A batch larger than the training set would be mostly padding: cap it at the data size
    (a multiple of the device count, so every device keeps an equal share)."""
    if config.batch_size <= size:
        return config
    capped = max(device_count, size // device_count * device_count)
    too_large = setting("batch_size", config.batch_size)
    log(f"{too_large} is larger than the {size} training images; using {capped}")
    return dataclasses.replace(config, batch_size=capped)


def _resumed(checkpoint: Checkpoint, setup: Setup) -> tuple[TrainState, list[dict[str, Any]]]:
    source = f"{setting('resume')} checkpoint"
    saved_sha = checkpoint.metadata.get("data_sha256", "")
    if setup.data_sha256 and saved_sha and saved_sha != setup.data_sha256:
        raise MnistkitError(f"{source}: it was trained on a different data file (SHA-256 {saved_sha[:12]}…)")
    saved_arrays = checkpoint.metadata.get("arrays_sha256", "")
    if setup.arrays_sha256 and saved_arrays and saved_arrays != setup.arrays_sha256:
        raise MnistkitError(f"{source}: it was trained on other arrays (SHA-256 {saved_arrays[:12]}…)")
    if checkpoint.architecture != setup.architecture:
        raise MnistkitError(f"{source}: its architecture disagrees with its own settings")
    if checkpoint.normalization != setup.data.normalization:  # the mean and spread of other images
        raise MnistkitError(f"{source}: it was trained on other images (their normalization differs)")
    state = state_from_checkpoint(
        checkpoint.params, checkpoint.optimizer_state, setup.members, setup.optimizer, source
    )
    history = [dict(record, seconds=None) for record in checkpoint.metadata.get("history", [])]
    if len(history) != int(checkpoint.metadata["metrics"]["epochs"]):
        raise MnistkitError(f"{source}: its history does not match its epoch count")
    return state, history


def _save_on_interrupt(
    completed: tuple[TrainState, list[dict[str, Any]]],
    resume_from: Checkpoint | None,
    finish: Callable[[TrainState, list[dict[str, Any]]], TrainResult],
    checkpoint_path: str | Path | None,
    config: TrainConfig,
) -> str:
    """Write the last complete epoch's checkpoint, if there is a new one; say what was kept."""
    state, history = completed
    done = len(history)
    already = int(resume_from.metadata["metrics"]["epochs"]) if resume_from is not None else 0
    if done == 0:
        return "no epoch completed, no checkpoint written"
    if done == already:
        return f"no new epoch completed, {checkpoint_path} not written"
    if checkpoint_path is None:
        return (
            f"epoch {done} of {config.epochs} was done, but nothing is saved without a checkpoint "
            "path (from Python: train(..., output=PATH) keeps each epoch and continues from it)"
        )
    finish(state, history)
    return f"saved the checkpoint of epoch {done} of {config.epochs} to {checkpoint_path}"


def _epoch_record(
    setup: Setup, epoch: int, train_scores: np.ndarray, state: TrainState, seconds: float
) -> dict[str, Any]:
    """The history line of an epoch. `train_scores`: mean [loss, accuracy] over its batches, a
    row per member; evaluations have a row per member and then the ensemble's. For an
    ensemble, train_* is the members' mean, val_* and test_* the ensemble's, and `members`
    holds each member's."""
    config, data, evaluate = setup.config, setup.data, setup.evaluate
    scores = {
        "train": np.concatenate([train_scores, train_scores.mean(axis=0, keepdims=True)]),
        "val": evaluate(state.params, data.val) if data.val is not None else None,
        "test": evaluate(state.params, data.test) if config.eval_test_each_epoch else None,
    }
    record: dict[str, Any] = {"epoch": epoch}
    for split, values in scores.items():
        loss, accuracy = (None, None) if values is None else (float(values[-1, 0]), float(values[-1, 1]))
        record[f"{split}_loss"], record[f"{split}_accuracy"] = loss, accuracy
    if len(config.seeds) > 1:
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


def _result(setup: Setup, state: TrainState, history: list[dict[str, Any]]) -> TrainResult:
    """The checkpoint of the state after the last epoch in `history`.

    Timings stay out of the metadata (they are in the history file and on stderr) so the
    same command writes the same bytes.
    """
    config, data = setup.config, setup.data
    test_scores = setup.evaluate(state.params, data.test)
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
    if len(config.seeds) > 1:
        metrics["members"] = [
            {"seed": seed, "test_loss": float(loss), "test_accuracy": float(accuracy)}
            for seed, (loss, accuracy) in zip(config.seeds, test_scores[:-1], strict=True)
        ]
    metadata = {
        "architecture": setup.architecture,
        "normalization": data.normalization,
        **data.class_metadata(),
        "config": config.to_dict(),
        "metrics": metrics,
        "history": [{k: v for k, v in record.items() if k != "seconds"} for record in history],
        "data_sha256": setup.data_sha256,
        "arrays_sha256": setup.arrays_sha256,
    }
    params, optimizer_state = checkpoint_tensors(state)
    return TrainResult(Checkpoint(params, metadata, optimizer_state), history)
