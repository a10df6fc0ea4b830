"""A training run's resumable state, written after every epoch beside the output, so that a
run killed by anything (SIGKILL, the OOM killer, a closed laptop) continues where it was.

`models/model.safetensors` trains with its state in `models/model.safetensors.resume`: a
safetensors file of the parameters and optimizer state (with their member axis), and as
metadata the epochs done, the history so far and the run's fingerprint: the data file's
SHA-256 and dataset, every training setting, the device count and the checkpoint format. Rerunning
the same command finds the state, checks the fingerprint and continues; the batch orders
and augmentation keys of the remaining epochs follow from the seed and the epoch number,
so the result is the uninterrupted run's, byte for byte. A state with another fingerprint
is never mixed in: training starts over and says why. The final checkpoint's writer
removes the state. numpy and safetensors only.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors

from mnistkit import __version__
from mnistkit.atomic import fitting_name, write_bytes_atomic, written_in_place
from mnistkit.checkpoint import FORMAT_VERSION, RUN_STATE_KEY, canonical_json
from mnistkit.config import TrainConfig
from mnistkit.datasets import DEFAULT_DATASET
from mnistkit.errors import MnistkitError
from mnistkit.terms import setting

SUFFIX = ".resume"
FORMAT = "mnistkit-run-state"
METADATA_KEY = RUN_STATE_KEY
PARAMS_PREFIX = "params."
OPTIMIZER_PREFIX = "optimizer."
MAX_STATE_BYTES = 16 << 30


@dataclass
class RunState:
    """Where a run stood after `epochs_done` epochs: tensors stacked by member, and its history."""

    epochs_done: int
    params: dict[str, np.ndarray]
    optimizer_state: dict[str, np.ndarray]
    history: list[dict[str, Any]]


def state_path(checkpoint_path: str | os.PathLike[str] | None) -> Path | None:
    """Where the state of a run writing `checkpoint_path` lives (none for stdout, a device or a
    pipe, or no file)."""
    if checkpoint_path is None or written_in_place(checkpoint_path):
        return None
    path = Path(checkpoint_path)
    return path.with_name(fitting_name(path.name, len(SUFFIX)) + SUFFIX)


def fingerprint(
    config: TrainConfig, data_sha256: str, device_count: int, dataset: str, start: str = ""
) -> dict[str, Any]:
    """What must be equal for a state to continue a run exactly, as it reads back from JSON;
    the dataset too, which the same file holds by `train --dataset` or by default, and where
    the run started (`start`: "" from scratch, else `starting_point` of the `--resume`
    checkpoint's history), since runs of the same settings from two starts differ."""
    return json.loads(
        canonical_json(
            {
                "checkpoint_format_version": FORMAT_VERSION,
                "config": config.to_dict(),
                "data_sha256": data_sha256,
                "dataset": dataset,
                "devices": device_count,
                **({"start": start} if start else {}),
            }
        )
    )


def starting_point(history: list[dict[str, Any]]) -> str:
    """A resumed checkpoint's history (its epochs' figures, without their seconds) as the
    start of a run: SHA-256 of its canonical JSON."""
    records = [{key: value for key, value in record.items() if key != "seconds"} for record in history]
    return hashlib.sha256(canonical_json(records).encode()).hexdigest()


def save_state(path: Path, state: RunState, run_fingerprint: dict[str, Any]) -> None:
    tensors = {PARAMS_PREFIX + name: np.ascontiguousarray(value) for name, value in state.params.items()}
    for name, value in state.optimizer_state.items():
        tensors[OPTIMIZER_PREFIX + name] = np.ascontiguousarray(value).reshape(np.shape(value))
    metadata = {
        "format": FORMAT,
        "mnistkit_version": __version__,
        "fingerprint": run_fingerprint,
        "epochs_done": state.epochs_done,
        "history": state.history,
        "tensors_sha256": _tensors_sha256(tensors),
    }
    write_bytes_atomic(path, save_safetensors(tensors, metadata={METADATA_KEY: canonical_json(metadata)}))


def _tensors_sha256(tensors: dict[str, np.ndarray]) -> str:
    """The tensors' names, types, shapes and bytes as one digest: a bit flipped on the disk
    would resume a run that ends with another model, without a word."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        value = tensors[name]
        digest.update(canonical_json([name, value.dtype.str, list(value.shape)]).encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()


def load_state(path: Path, run_fingerprint: dict[str, Any]) -> tuple[RunState | None, str]:
    """The state at `path` if it continues this run, else None; and a line saying which (for
    a state not used, why: the caller says where the run starts instead)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, ""
    except OSError as error:
        raise MnistkitError(f"{path}: cannot read the saved training state: {error.strerror}") from None
    try:
        tensors = load_safetensors(data)
        header_length = int.from_bytes(data[:8], "little")
        metadata = json.loads(json.loads(data[8 : 8 + header_length])["__metadata__"][METADATA_KEY])
        if metadata.get("format") != FORMAT:
            raise ValueError("not a run state")
        saved_fingerprint, epochs_done = metadata["fingerprint"], int(metadata["epochs_done"])
        history = list(metadata["history"])
        if len(history) != epochs_done or not all(isinstance(record, dict) for record in history):
            raise ValueError("a history that does not match its epochs")
        if "tensors_sha256" in metadata and metadata["tensors_sha256"] != _tensors_sha256(tensors):
            raise ValueError("tensors that are not those written")  # (states before 2026-12-07 have none)
    except Exception:  # any damage at all: this state cannot be trusted
        return None, f"{path}: unreadable training state"
    if isinstance(saved_fingerprint, dict) and run_fingerprint.get("start") == starting_point(history):
        # `train -o X --resume X` stopped: X was written with this state, and starts this run
        # where the state stands
        saved_fingerprint = {**saved_fingerprint, "start": run_fingerprint["start"]}
    different = _differences(saved_fingerprint, run_fingerprint)
    if different:
        return None, f"{path}: written by a run with another {different}"
    state = RunState(
        epochs_done,
        {
            name[len(PARAMS_PREFIX) :]: value
            for name, value in tensors.items()
            if name.startswith(PARAMS_PREFIX)
        },
        {
            name[len(OPTIMIZER_PREFIX) :]: value
            for name, value in tensors.items()
            if name.startswith(OPTIMIZER_PREFIX)
        },
        history,
    )
    total = run_fingerprint["config"]["epochs"]
    return state, f"resuming from {path}: epoch {epochs_done} of {total} was done"


_DEFAULT_SETTINGS = json.loads(canonical_json(TrainConfig().to_dict()))


def _differences(saved: Any, current: dict[str, Any]) -> str:
    """What differs between two fingerprints, in words ("" when they are equal)."""
    if not isinstance(saved, dict):
        return "format"
    if saved.get("checkpoint_format_version") != current["checkpoint_format_version"]:
        return "mnistkit checkpoint format"
    if saved.get("data_sha256") != current["data_sha256"]:
        return "data file"
    # A state saved before the dataset was kept ran on MNIST or on a file that named its own
    # (`train --dataset` came with the key); only MNIST is sure to be the same, and starting
    # over costs time where resuming under other classes would cost the model.
    saved_dataset = saved.get("dataset")
    if saved_dataset is None and current["dataset"] != DEFAULT_DATASET:
        return f"dataset (none recorded then, {current['dataset']} now)"
    if saved_dataset not in (None, current["dataset"]):
        return f"dataset ({saved_dataset} then, {current['dataset']} now)"
    if saved.get("start", "") != current.get("start", ""):
        return f"starting point (from scratch, or from another {setting('resume')} checkpoint)"
    if saved.get("devices") != current["devices"]:
        return f"device count ({saved.get('devices')} then, {current['devices']} now)"
    saved_config = saved.get("config")
    if isinstance(saved_config, dict):  # settings added since ran at their defaults, which keep old behaviour
        saved_config = {**_DEFAULT_SETTINGS, **saved_config}
    if saved_config != current["config"]:
        changed = sorted(
            name
            for name in set(current["config"]) | set(saved_config if isinstance(saved_config, dict) else {})
            if not isinstance(saved_config, dict) or saved_config.get(name) != current["config"].get(name)
        )
        return "setting: " + ", ".join(setting(name) for name in changed)
    return ""


def remove_state(path: Path | None) -> bool:
    """Remove the state at `path`; whether there was one."""
    if path is None:
        return False
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    except OSError as error:
        raise MnistkitError(f"{path}: cannot remove the saved training state: {error.strerror}") from None
    return True
