"""Training state: the models' parameters and optimizer state, how they start (fresh, or from a
checkpoint), how they become checkpoint tensors, and the stream of each epoch's batch order
and augmentation keys.

Every tensor carries a leading member axis (one member for a single model). A checkpoint
stores a single model's tensors under their own names and an ensemble's as
`member_{i}.{name}`; optimizer state is stored with the member axis of an ensemble and
without it for a single model, as `optimizer.{path in the optax pytree}`.

Randomness follows the seed trainer: each model is initialized from `PRNGKey(seed)`, and
each epoch splits that key to draw its permutation, so `--preset seed` repeats its run.
"""

from __future__ import annotations

import concurrent.futures
import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mnistkit import models
from mnistkit.architectures import Architecture, member_tensor_name
from mnistkit.config import TrainConfig
from mnistkit.errors import MnistkitError
from mnistkit.inference import member_params
from mnistkit.steps import TrainState, trainable

CHUNKS_PER_EPOCH = 8


def initial_state(
    config: TrainConfig, architecture: Architecture, optimizer: optax.GradientTransformation
) -> TrainState:
    """Each member's model from `PRNGKey(its seed)`, stacked, and fresh optimizer state.

    Stacked by numpy and the optimizer's state made in one compiled program: op by op, every
    tensor's shape compiled its own small programs, a second of a 2-core machine.
    """
    members = [
        models.init(jax.random.PRNGKey(seed), architecture, config.init) for seed in config.member_seeds
    ]
    params = {name: jax.device_put(np.stack([member[name] for member in members])) for name in members[0]}
    return TrainState(params, jax.jit(jax.vmap(optimizer.init))(trainable(params)))


def checkpoint_tensors(state: TrainState) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The state's parameters and optimizer state as a checkpoint stores them."""
    params = {name: np.asarray(value, np.float32) for name, value in state.params.items()}
    members = len(next(iter(params.values())))
    opt_state = jax.tree.map(np.asarray, state.opt_state)
    if members == 1:
        return {name: value[0] for name, value in params.items()}, _named_leaves(
            jax.tree.map(lambda leaf: leaf[0], opt_state)
        )
    stored = {
        member_tensor_name(index, name): value[index]
        for index in range(members)
        for name, value in params.items()
    }
    return stored, _named_leaves(opt_state)


def state_from_checkpoint(
    params: Mapping[str, np.ndarray],
    optimizer_state: Mapping[str, np.ndarray],
    members: int,
    optimizer: optax.GradientTransformation,
    source: str,
) -> TrainState:
    """The training state a checkpoint holds, its optimizer state checked against `optimizer`.

    Made in numpy and placed as it is (as are the other restored states below): op by op in
    JAX, every tensor's shape compiled its own small programs."""
    per_member = [member_params(params, index) for index in range(members)] if members > 1 else [params]
    stacked = {name: np.stack([np.asarray(member[name]) for member in per_member]) for name in per_member[0]}
    if members == 1:
        template = jax.eval_shape(optimizer.init, trainable(params))
        restored = jax.tree.map(lambda leaf: leaf[None], _restore_leaves(template, optimizer_state, source))
    else:
        template = jax.eval_shape(jax.vmap(optimizer.init), trainable(stacked))
        restored = _restore_leaves(template, optimizer_state, source)
    return jax.device_put(TrainState(stacked, restored))


def stacked_tensors(state: TrainState) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The state's tensors as they are, member axis included (what `run_state` saves)."""
    return {name: np.asarray(value) for name, value in state.params.items()}, _named_leaves(state.opt_state)


def state_from_stacked(
    params: Mapping[str, np.ndarray],
    optimizer_state: Mapping[str, np.ndarray],
    optimizer: optax.GradientTransformation,
    source: str,
    like: TrainState,
) -> TrainState:
    """The state `stacked_tensors` gave, checked against a state of the same run (`like`)."""
    expected = {name: (value.shape, value.dtype) for name, value in like.params.items()}
    if {name: (value.shape, value.dtype) for name, value in params.items()} != expected:
        raise MnistkitError(f"{source}: its parameters do not fit this run's model")
    template = jax.eval_shape(jax.vmap(optimizer.init), trainable(params))
    return jax.device_put(TrainState(dict(params), _restore_leaves(template, optimizer_state, source)))


def _named_leaves(tree: Any) -> dict[str, np.ndarray]:
    """A pytree's leaves named by their place in it (`1.0.mu.dense_0.kernel`)."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(path, simple=True, separator="."): np.asarray(leaf) for path, leaf in leaves}


def _restore_leaves(template: Any, saved: Mapping[str, np.ndarray], source: str) -> Any:
    """`template` (the state's shapes) with every leaf the saved array of its name, checked."""
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
        # Scalars (step counts) may come back with shape (1,) from older checkpoints.
        if value.size != leaf.size or value.dtype != leaf.dtype:
            raise MnistkitError(f"{source}: optimizer tensor {name} has the wrong shape or dtype")
        leaves.append(np.asarray(value).reshape(leaf.shape))
    return jax.tree_util.tree_unflatten(treedef, leaves)


# Batch orders and augmentation keys ---------------------------------------------------


@functools.partial(jax.jit, static_argnames="size")
def _epoch_draw(key: jax.Array, size: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One turn of the seed trainer's key chain (`key, epoch_key = split(key)`) and what the
    epoch draws from its key: the sort keys of `permutation(epoch_key, size)` (`_permutation`
    sorts by them) and the augmentation key `fold_in(epoch_key, 1)`. One compiled program:
    called op by op, the random functions compiled seven, a second of a 2-core machine."""
    key, epoch_key = jax.random.split(key)
    rounds, sort_keys = _permutation_rounds(size), []
    shuffle_key = epoch_key
    for _ in range(rounds):
        shuffle_key, round_key = jax.random.split(shuffle_key)
        sort_keys.append(jax.random.bits(round_key, (size,), jnp.uint32))
    sort_keys_array = jnp.stack(sort_keys) if rounds else jnp.zeros((0, size), jnp.uint32)
    return key, sort_keys_array, jax.random.fold_in(epoch_key, 1)


def _permutation_rounds(size: int) -> int:
    """How many sorts `jax.random.permutation` makes for `size` elements: enough rounds of
    32-bit keys that ties are unlikely (jax's heuristic)."""
    return int(np.ceil(3 * np.log(max(1, size)) / np.log(np.iinfo(np.uint32).max)))


def _permutation(sort_keys: np.ndarray) -> np.ndarray:
    """`jax.random.permutation(epoch_key, size)` from its rounds' sort keys: each round a
    stable sort of the order so far by its keys, as jax's `lax.sort_key_val` does. numpy sorts
    60,000 keys in a quarter of XLA:CPU's time (3.4 against 12 ms a round), and every
    millisecond of the background draw was taken from the epoch it overlaps on 2 cores."""
    order = np.arange(sort_keys.shape[1], dtype=np.int32)
    for keys in sort_keys:
        order = order[np.argsort(keys, kind="stable")]
    return order


def batches_per_epoch(size: int, batch_size: int) -> int:
    """Training steps an epoch takes: the last batch may be partial."""
    return -(-size // batch_size)


def chunks_per_epoch(size: int, batch_size: int) -> int:
    batches = batches_per_epoch(size, batch_size)
    per_chunk = -(-batches // CHUNKS_PER_EPOCH)
    return -(-batches // per_chunk)


def epoch_batches(order: np.ndarray, batch_size: int, chunks: int) -> tuple[np.ndarray, np.ndarray]:
    """The epoch's shuffled indices as (chunks, batches per chunk, batch_size), with weights.

    `order` (the permutation of the examples) is cut into batches as the seed trainer does,
    the last batch partial; the slots past the end have weight 0.
    """
    size = len(order)
    batches = batches_per_epoch(size, batch_size)
    per_chunk = -(-batches // chunks)
    slots = chunks * per_chunk * batch_size
    indices = np.zeros(slots, np.int32)
    indices[:size] = order
    weights = np.zeros(slots, np.float32)
    weights[:size] = 1.0
    shape = (chunks, per_chunk, batch_size)
    return indices.reshape(shape), weights.reshape(shape)


class EpochInputs:
    """Each epoch's batch indices and weights (chunks, members, batches, batch size) and the
    members' augmentation keys (members, 2), from each member's own key chain.

    The next epoch's are drawn in a background thread while the current one trains: about
    9 ms for 60,000 examples, which the training's threads on a 2-core machine go without.
    The first epoch's is drawn from the start, while the models are made: compiling the
    random functions takes most of a second. `close()` ends the thread.
    """

    def __init__(self, config: TrainConfig, size: int) -> None:
        self._seeds = config.member_seeds
        self._size, self._batch_size = size, config.batch_size
        self.chunks = chunks_per_epoch(size, config.batch_size)
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        self._begin_at(1)

    def _begin_at(self, first_epoch: int) -> None:
        self._keys = [jax.random.PRNGKey(seed) for seed in self._seeds]
        for _ in range(first_epoch - 1):
            self._keys = [jax.random.split(key)[0] for key in self._keys]
        self._upcoming = self._pool.submit(self._draw)

    def start_at(self, first_epoch: int) -> None:
        """Begin at `first_epoch` instead of the first (a resumed run)."""
        if first_epoch > 1:
            concurrent.futures.wait([self._upcoming])  # its chains' turn is over; its draw unused
            self._begin_at(first_epoch)

    def _draw(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        draws = [_epoch_draw(key, self._size) for key in self._keys]
        self._keys = [key for key, _, _ in draws]
        orders = [_permutation(np.asarray(sort_keys)) for _, sort_keys, _ in draws]
        batches = [epoch_batches(order, self._batch_size, self.chunks) for order in orders]
        indices, weights = (np.stack([batch[part] for batch in batches], axis=1) for part in (0, 1))
        return indices, weights, np.stack([np.asarray(augment_key) for _, _, augment_key in draws])

    def next_epoch(self, more_to_come: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        current = self._upcoming.result()
        if more_to_come:
            self._upcoming = self._pool.submit(self._draw)
        return current

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
