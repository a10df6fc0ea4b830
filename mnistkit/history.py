"""The training history: one JSON object per epoch, written by `train --history` and read by
`render-curves`. Both sides live here, with the one list of its fields.

A record holds `epoch`, the loss and accuracy of each split (`null` where not measured),
the epoch's `seconds`, and for an ensemble a `members` list with each member's figures
(the splits' fields then describe the whole ensemble; `train_*` is the members' mean).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mnistkit.atomic import is_stderr, is_stdout, write_text_atomic, written_in_place
from mnistkit.errors import MnistkitError
from mnistkit.terms import setting

SPLITS = ("train", "val", "test")
METRICS = tuple(f"{split}_{name}" for split in SPLITS for name in ("loss", "accuracy"))
FIELDS = ("epoch", *METRICS, "seconds")


def history_text(records: Sequence[Mapping[str, Any]]) -> str:
    """One JSON line per epoch, its keys in the order a run writes them (FIELDS', an
    ensemble's `members` before `seconds`): the records a resumed run brings back from its
    saved state had their keys sorted."""
    return "".join(json.dumps(_in_field_order(record)) + "\n" for record in records)


def _in_field_order(record: Mapping[str, Any]) -> dict[str, Any]:
    first, last = FIELDS[:-1], FIELDS[-1:]
    ordered = {name: record[name] for name in first if name in record}
    ordered |= {name: value for name, value in record.items() if name not in (*first, *last)}
    if isinstance(ordered.get("members"), list):  # each member's: its seed, then FIELDS' order
        ordered["members"] = [
            {"seed": member["seed"], **_in_field_order(member)}
            if isinstance(member, dict) and "seed" in member
            else member
            for member in ordered["members"]
        ]
    return ordered | {name: record[name] for name in last if name in record}


def check_history_target(path: str | os.PathLike[str]) -> None:
    """The history is written after every epoch: a pipe's reader would take the first and
    leave, and the second would find no one to read it. It replaces a history of an earlier
    run, never another file: a checkpoint's name given by a slip would lose the model."""
    if is_stdout(path) or is_stderr(path):
        return
    if Path(path).is_fifo():
        raise MnistkitError(
            f"{path}: {setting('history')} is written after every epoch, which a pipe takes once; "
            "give a file, or - for standard output"
        )
    if written_in_place(path):  # /dev/null and the like
        return
    if _checkpoint_name(path):
        raise MnistkitError(
            f"{path}: {setting('history')} is JSON lines, not a checkpoint; give another name, "
            "such as models/model.history.jsonl"
        )
    try:
        with open(path, "rb") as file:
            start = file.read(FIRST_RECORD_BYTES)
    except OSError:
        return  # nothing to replace, or check_writable_target's to say
    if start.strip() and not begins_a_history(start):
        raise MnistkitError(
            f"{path}: holds no training history, and {setting('history')} would replace it; "
            "give another name, or delete the file first"
        )


# A history's first line (an epoch's record, an ensemble's with each member's) fits in this.
FIRST_RECORD_BYTES = 1 << 16


def begins_a_history(start: bytes) -> bool:
    """Whether a file's first bytes are an epoch's record: a metrics JSON, a notebook or a
    config begins with "{" too."""
    first_line = start.lstrip().split(b"\n", 1)[0]
    try:
        record = json.loads(first_line)
    except ValueError:
        return False
    return isinstance(record, dict) and "epoch" in record


def _checkpoint_name(path: str | os.PathLike[str]) -> bool:
    return str(path).lower().endswith(".safetensors")


def _holds_a_checkpoint(path: str | os.PathLike[str]) -> bool:
    """A checkpoint copied to a name of its own (`model.bak`), told by its first bytes: those
    of a regular file only, since a pipe's would be gone for read_text."""
    from mnistkit.checkpoint import begins_a_checkpoint

    if str(path) == "-" or not os.path.isfile(path):
        return False
    try:
        with open(path, "rb") as file:
            return begins_a_checkpoint(file.read(9))
    except OSError:
        return False  # read_text says why


def write_history(path: str | os.PathLike[str], records: Sequence[Mapping[str, Any]]) -> None:
    """The whole history so far, replacing the file; on stdout (`-`) or a device, only the
    newest line."""
    write_text_atomic(path, history_text(records[-1:] if written_in_place(path) else records))


def history_records(path: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], str]:
    """The records of a history file (`-`: stdin), or those a checkpoint keeps of its own
    training, and the source's name."""
    if _checkpoint_name(path) or _holds_a_checkpoint(path):
        from mnistkit.checkpoint import load_checkpoint

        kept = load_checkpoint(path).metadata.get("history") or []
        numbered = [(f"{path} record {number}", record) for number, record in enumerate(kept, start=1)]
        return checked_history(numbered, str(path)), str(path)
    from mnistkit.inputs import read_text

    text, source = read_text(path, "a history file")
    return read_history(text, source), source


def read_history(text: str, source: str) -> list[dict[str, Any]]:
    """The per-epoch records of a history file (epoch and METRICS), checked line by line."""
    numbered = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{source} line {line_number}"
        try:
            record = json.loads(line)
        except ValueError:
            raise _not_a_history(text, source, where) from None
        if not isinstance(record, dict):
            raise MnistkitError(f"{where}: not a JSON object (expected one per epoch)")
        numbered.append((where, record))
    return checked_history(numbered, source)


def _not_a_history(text: str, source: str, where: str) -> MnistkitError:
    """A line that is not JSON, or a whole file that is JSON over several lines: eval --json's
    metrics given by a slip, which "line 1: not JSON" would misname."""
    try:
        document = json.loads(text)
    except ValueError:
        return MnistkitError(f"{where}: not JSON (expected one JSON object per epoch)")
    metrics = isinstance(document, dict) and "confusion_matrix" in document
    kind = "the metrics of eval --json" if metrics else "JSON"
    return MnistkitError(
        f"{source}: {kind}, not a training history (one JSON object per epoch, as train --history "
        "writes; a checkpoint keeps its own)"
    )


def checked_history(numbered: Sequence[tuple[str, Mapping[str, Any]]], source: str) -> list[dict[str, Any]]:
    """Records, each with where it was found ("h.jsonl line 3"), as charts take them: whole
    epochs counting up and finite numbers, or None where a split was not measured."""
    records: list[dict[str, Any]] = []
    for where, given in numbered:
        record = {key: _plain(value) for key, value in given.items()}  # a notebook's np.float32
        epoch = record.get("epoch")
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 1:
            raise MnistkitError(f"{where}: 'epoch' must be a whole number from 1, got {epoch!r}")
        if records and epoch <= records[-1]["epoch"]:
            raise MnistkitError(
                f"{where}: epoch {epoch} follows epoch {records[-1]['epoch']} (two runs in one file?)"
            )
        for key in METRICS:
            value = record.get(key)
            if value is not None and (
                not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value)
            ):
                raise MnistkitError(f"{where}: {key} must be a number or null, got {value!r}")
        records.append({"epoch": epoch, **{key: record.get(key) for key in METRICS}})
    if not records:
        raise MnistkitError(f"{source}: empty history, no epochs to plot")
    if all(record[key] is None for record in records for key in METRICS):
        raise MnistkitError(f"{source}: no loss or accuracy values to plot")
    return records


def _plain(value: Any) -> Any:
    """numpy's and jax's scalars (np.int64(3), np.float32(0.5), a 0-d array) as Python's."""
    if hasattr(value, "__array__") and not isinstance(value, bool | int | float):
        array = np.asarray(value)
        if array.ndim == 0 and array.dtype.kind in "iuf":
            return array.item()
    return value


def members_range(record: Mapping[str, Any], split: str) -> str:
    """' (members 97.10-97.52%)': the spread of an ensemble's members on `split`."""
    if "members" not in record:
        return ""
    accuracies = [100 * member[f"{split}_accuracy"] for member in record["members"]]
    return f" (members {min(accuracies):.2f}-{max(accuracies):.2f}%)"


def epoch_line(record: Mapping[str, Any], epochs: int) -> str:
    """The log line of an epoch: `epoch 3/8  train loss 0.0712  train acc 97.81%  ...  2.31 s`."""
    parts = [
        f"epoch {record['epoch']:>{len(str(epochs))}}/{epochs}",
        f"train loss {record['train_loss']:.4f}",
        f"train acc {100 * record['train_accuracy']:.2f}%",
    ]
    if record["val_accuracy"] is not None:
        parts.append(f"val acc {100 * record['val_accuracy']:.2f}%{members_range(record, 'val')}")
    if record["test_accuracy"] is not None:
        parts.append(f"test acc {100 * record['test_accuracy']:.2f}%{members_range(record, 'test')}")
    parts.append(f"{record['seconds']:.2f} s")
    return "  ".join(parts)
