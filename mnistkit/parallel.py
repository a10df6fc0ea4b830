"""Where training runs: a one-axis mesh over the devices of every process, and arrays placed on it.

Data parallelism with JAX's own SPMD runtime. Each global batch is split along its batch
axis over the mesh; parameters, optimizer state and the dataset are replicated; `jax.jit`
with these shardings lets the compiler insert the collectives that average the
gradients. The same program runs on one device, on N local ones and on several
processes started with `jax.distributed`; only the shardings change. Nothing here names
a kind of device.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mnistkit.errors import MnistkitError

BATCH_AXIS = "batch"


def join_cluster(
    coordinator: str | None, num_processes: int | None, process_id: int | None, timeout_s: int = 300
) -> int:
    """Start JAX's distributed runtime, before any computation, and return this process's index.

    Settings left out come from the cluster launcher's environment (Slurm, Open MPI, ...),
    which `jax.distributed.initialize` reads. CPU processes exchange gradients through gloo.
    A process that has not heard from all the others within `timeout_s` gives up.
    """
    if coordinator is not None and not re.fullmatch(
        r"[^\s:]+:\d{1,5}|\[[0-9a-fA-F:]+\]:\d{1,5}", coordinator
    ):
        raise MnistkitError(f"--coordinator: expected HOST:PORT, got {coordinator!r}")
    if num_processes is not None and process_id is not None and process_id >= num_processes:
        raise MnistkitError(f"--process-id {process_id} must be below --num-processes {num_processes}")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(coordinator, num_processes, process_id, initialization_timeout=timeout_s)
    except (ValueError, RuntimeError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise MnistkitError(f"cannot join the multi-process run: {first_line}") from None
    return jax.process_index()


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
                f"--devices {devices}: this process has {local_count} {jax.default_backend()} device(s)"
            )
        if batch_size % (devices * processes):
            raise MnistkitError(
                f"--batch-size {batch_size} does not split evenly over {devices * processes} devices "
                f"({processes} process(es) x {devices}); use a batch size that is a multiple of "
                f"{devices * processes}, or other --devices"
            )
        count = devices
    else:
        usable = [n for n in range(1, local_count + 1) if batch_size % (n * processes) == 0]
        if not usable:
            raise MnistkitError(
                f"--batch-size {batch_size} does not split evenly over the {processes} processes; "
                f"use a multiple of {processes}"
            )
        count = usable[-1]
        if count < local_count:
            log(f"using {count} of {local_count} devices per process (they divide --batch-size {batch_size})")
    mesh_devices = [
        device
        for process in range(processes)
        for device in [d for d in jax.devices() if d.process_index == process][:count]
    ]
    return Placement(Mesh(np.array(mesh_devices), (BATCH_AXIS,)))
