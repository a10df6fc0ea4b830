"""Where training runs: a one-axis mesh over the devices of every process, and arrays placed on it.

Data parallelism with JAX's own SPMD runtime. Each global batch is split along its batch
axis over the mesh; parameters, optimizer state and the dataset are replicated; `jax.jit`
with these shardings lets the compiler insert the collectives that average the
gradients. The same program runs on one device, on N local ones and on several
processes started with `jax.distributed`; only the shardings change. Nothing here names
a kind of device.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mnistkit.errors import Interrupted, MnistkitError
from mnistkit.rendezvous import Membership, gather, split_address
from mnistkit.terms import setting

BATCH_AXIS = "batch"
_membership: Membership | None = None
# How long a failed collective waits for the watcher to name a peer that died.
_PEER_DEATH_GRACE_S = 5.0


def join_cluster(
    coordinator: str | None, num_processes: int | None, process_id: int | None, timeout_s: int = 300
) -> int:
    """Start JAX's distributed runtime, before any computation, and return this process's index.

    Settings left out come from the cluster launcher's environment (Slurm, Open MPI, ...),
    which `jax.distributed.initialize` reads. CPU processes exchange gradients through gloo.
    The processes first meet on their own (`rendezvous.gather`), so that one whose peers
    have not all come within `timeout_s` ends with one error line rather than JAX's
    abort; from then on, a process that dies ends the others (see `cluster_run`).
    """
    global _membership
    if coordinator is not None:
        split_address(coordinator)
    if num_processes is not None and process_id is not None and process_id >= num_processes:
        raise MnistkitError(f"--process-id {process_id} must be below --num-processes {num_processes}")
    coordinator, num_processes, process_id = _launcher_settings(
        coordinator, num_processes, process_id, timeout_s
    )
    if coordinator is not None and num_processes is not None and process_id is not None and num_processes > 1:
        _membership = gather(coordinator, num_processes, process_id, timeout_s)
        _membership.watch()
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    # Preemption notices are unused here; without their service, a peer's death is
    # reported by the liveness channel's one line, not by JAX warnings as well.
    jax.config.update("jax_enable_preemption_service", False)
    try:
        jax.distributed.initialize(coordinator, num_processes, process_id, initialization_timeout=timeout_s)
    except (ValueError, RuntimeError) as error:
        settings = (
            ("--coordinator", coordinator),
            ("--num-processes", num_processes),
            ("--process-id", process_id),
        )
        missing = [option for option, value in settings if value is None]
        if missing:  # JAX names its own arguments; say which options would have given them
            raise MnistkitError(
                f"cannot join the multi-process run: give {' and '.join(missing)} as well, or start "
                "it under a cluster launcher that sets them (Slurm, Open MPI)"
            ) from None
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise MnistkitError(f"cannot join the multi-process run: {first_line}") from None
    return jax.process_index()


@contextlib.contextmanager
def cluster_run() -> Iterator[None]:
    """Around training in a multi-process run (nothing outside one): when the block ends
    cleanly, tell the others, so that this process's exit is not taken for a death. When a
    peer dies, a collective here may fail before the watcher has seen the death: a grace
    period lets the watcher end the process with its one line, not a traceback."""
    if _membership is None:
        yield
        return
    try:
        yield
    except (Interrupted, KeyboardInterrupt):
        # Ctrl-C reaches every process of a run started from one terminal: the first to end
        # killed itself by the signal at once, and the others, still in their exit hooks,
        # took its end for a death (exit 1 and a second line after the interrupt's).
        _membership.leave()
        raise
    except MnistkitError:
        raise
    except Exception:
        if _membership.wait_for_a_stop(_PEER_DEATH_GRACE_S):
            time.sleep(_PEER_DEATH_GRACE_S)  # the watcher is ending this process
        raise
    _membership.finish()


def stop_together(progress: Callable[..., None], *arguments: Any) -> None:
    """Run `progress(*arguments)`, which raises `Interrupted` for a signal this process holds; in a run of
    several processes, each one raises after the same step when any one does. One that
    stopped alone (`kill -INT` to it, or Ctrl-C to the one in the foreground) left the others
    waiting for it in their next step, and gloo aborted them ("collective mismatch")."""
    if jax.process_count() == 1:
        progress(*arguments)
        return
    from jax.experimental import multihost_utils

    held = None
    try:
        progress(*arguments)
    except Interrupted as stop:
        held = stop
    signals = np.asarray(multihost_utils.process_allgather(np.int32(held.signal_number if held else 0)))
    if held is not None:
        raise held
    stopped = np.flatnonzero(signals)
    if stopped.size:
        raise Interrupted(int(signals[stopped[0]]), process=int(stopped[0]))


def _launcher_settings(
    coordinator: str | None, num_processes: int | None, process_id: int | None, timeout_s: int
) -> tuple[str | None, int | None, int | None]:
    """Fill the settings left out from the launcher's environment the way
    `jax.distributed.initialize` will. That reader is private to JAX: where it is not as
    expected, the settings stay unknown and JAX alone gathers the processes."""
    if coordinator is not None and num_processes is not None and process_id is not None:
        return coordinator, num_processes, process_id
    try:
        from jax._src.clusters import ClusterEnv

        detected = ClusterEnv.auto_detect_unset_distributed_params(
            coordinator, num_processes, process_id, None, None, timeout_s
        )
    except (ImportError, AttributeError, TypeError, ValueError, RuntimeError):
        return coordinator, num_processes, process_id
    return detected[0], detected[1], detected[2]


@dataclass(frozen=True)
class Placement:
    """The mesh, and how arrays are laid out on it."""

    mesh: Mesh

    @property
    def device_count(self) -> int:
        return int(self.mesh.devices.size)

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec())

    def split(self, ndim: int, axis: int) -> NamedSharding:
        """Arrays of `ndim` dimensions cut along `axis` (their batch axis) over the devices."""
        spec = [None] * ndim
        spec[axis] = BATCH_AXIS
        return NamedSharding(self.mesh, PartitionSpec(*spec))

    def put(self, host_array: Any, sharding: NamedSharding) -> jax.Array:
        """Place an array that every process holds whole: each process feeds only the parts
        that its own devices hold (for a split array, its share of each batch)."""
        host_array = np.asarray(host_array)
        return jax.make_array_from_callback(host_array.shape, sharding, lambda index: host_array[index])

    def put_replicated(self, tree: Any) -> Any:
        return jax.tree.map(lambda leaf: self.put(leaf, self.replicated), tree)


def make_placement(
    batch_size: int, devices: int | None = None, log: Callable[[str], None] = lambda message: None
) -> Placement:
    """A mesh over `devices` local devices of every process (default: all of them).

    Every device gets the same share of each global batch, so the batch size must be a
    multiple of the mesh size: an explicit `devices` that does not divide it is an error;
    by default the largest local device count that does is taken, and logged.
    """
    local_count = jax.local_device_count()
    processes = jax.process_count()
    if devices is not None:
        if devices > local_count:
            raise MnistkitError(
                f"{setting('devices', devices)}: this process has {local_count} "
                f"{jax.default_backend()} device(s)"
            )
        if batch_size % (devices * processes):
            raise MnistkitError(
                f"{setting('batch_size', batch_size)} does not split evenly over "
                f"{devices * processes} devices ({processes} process(es) x {devices}); use a batch "
                f"size that is a multiple of {devices * processes}, or other {setting('devices')}"
            )
        count = devices
    else:
        usable = [n for n in range(1, local_count + 1) if batch_size % (n * processes) == 0]
        if not usable:
            raise MnistkitError(
                f"{setting('batch_size', batch_size)} does not split evenly over the {processes} processes; "
                f"use a multiple of {processes}"
            )
        count = usable[-1]
        if count < local_count:
            divided = setting("batch_size", batch_size)
            log(f"using {count} of {local_count} devices per process (they divide {divided})")
    mesh_devices = [
        device
        for process in range(processes)
        for device in [d for d in jax.devices() if d.process_index == process][:count]
    ]
    return Placement(Mesh(np.array(mesh_devices), (BATCH_AXIS,)))
