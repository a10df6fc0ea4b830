"""Shared tools of the fault suites: the real CLI in a subprocess, and artifact validators.

`mnistkit_command` runs `mnistkit.cli.main` exactly as the console script does. Fetch
verifies against MNIST's real SHA-256s, so for synthetic mirrors the launcher first
swaps in the table named by $MNISTKIT_TEST_FETCH_TABLE (a JSON list of ExpectedFile
fields: MNIST's downloads; or an object of such lists by dataset name); nothing else
differs from `mnistkit ...`.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import os
import re
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from mnistkit.arrays import load_arrays
from mnistkit.checkpoint import load_checkpoint
from mnistkit.datasets import ExpectedFile

TABLE_ENV = "MNISTKIT_TEST_FETCH_TABLE"
LAUNCHER = f"""
import json, os, sys
table = os.environ.get({TABLE_ENV!r})
if table:
    import dataclasses
    from mnistkit import datasets
    with open(table) as handle:
        tables = json.load(handle)
    for name, entries in (tables if isinstance(tables, dict) else {{"mnist": tables}}).items():
        published = [entry.pop("published") for entry in entries]
        downloads = tuple(
            datasets.ExpectedFile(**entry, published=checksum and datasets.Published(**checksum))
            for entry, checksum in zip(entries, published)
        )
        datasets.DATASETS[name] = dataclasses.replace(datasets.DATASETS[name], downloads=downloads)
from mnistkit.__main__ import main
sys.argv[0] = "mnistkit"
main()
"""
HISTORY_KEYS = {
    "epoch",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "test_loss",
    "test_accuracy",
    "seconds",
}
INTERRUPTED_LINE = re.compile(r"^mnistkit: interrupted by SIG(INT|TERM|HUP)(; .+)?$")
# atomic_write's temp names: .NAME.PID.RANDOM.tmp beside the final NAME.
TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.(?P<pid>\d+)\.[^.]+\.tmp$")


def mnistkit_command(*args: str | os.PathLike[str]) -> list[str]:
    """argv that runs `mnistkit ARGS...` in a fresh interpreter."""
    return [sys.executable, "-c", LAUNCHER, *map(str, args)]


def write_fetch_table(path: Path, files: dict[str, bytes]) -> Path:
    """Write what fetch must expect of these `.gz` files, for $MNISTKIT_TEST_FETCH_TABLE."""
    table = []
    for name, gz_bytes in files.items():
        content = gzip.decompress(gz_bytes)
        entry = ExpectedFile(name, hashlib.sha256(content).hexdigest(), len(content), 2 * len(gz_bytes))
        table.append(dataclasses.asdict(entry))
    path.write_text(json.dumps(table))
    return path


def check_artifact(path: Path) -> None:
    """Raise AssertionError (or MnistkitError) unless `path` is a complete artifact of its type."""
    suffix = path.suffix
    if suffix == ".gz":
        with gzip.open(path) as handle:
            while handle.read(1 << 20):
                pass
    elif suffix == ".npz":
        load_arrays(path)
    elif suffix == ".safetensors":
        checkpoint = load_checkpoint(path)
        images = np.random.default_rng(0).integers(0, 256, (16, 28, 28), dtype=np.uint8)
        probabilities = checkpoint.predict_probabilities(images)
        assert probabilities.shape == (16, len(checkpoint.classes))
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    elif suffix == ".png":
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            image.load()
    elif suffix == ".json":
        assert isinstance(json.loads(path.read_text()), dict)
    elif suffix == ".jsonl":
        lines = path.read_text().splitlines()
        assert lines, f"{path}: empty history"
        for number, line in enumerate(lines, 1):
            record = json.loads(line)
            assert set(record) == HISTORY_KEYS and record["epoch"] == number, line
    elif suffix == ".tsv":
        for line in path.read_text().splitlines():
            image_path, digit, confidence = line.split("\t")
            assert image_path and 0 <= int(digit) <= 9 and 0 <= float(confidence) <= 1, line
    else:
        raise AssertionError(f"{path}: no validator for {suffix!r} files")


def history_records(path: Path) -> list[dict]:
    """The history without its timings, which differ from run to run."""
    return [
        {key: value for key, value in json.loads(line).items() if key != "seconds"}
        for line in path.read_text().splitlines()
    ]


def same_as_reference(path: Path, reference: Path, complete: bool) -> bool:
    """Whether `path` holds what the uninterrupted run wrote (or, for a history cut short by
    a kill, its first epochs)."""
    if path.suffix == ".jsonl":
        records, expected = history_records(path), history_records(reference)
        return records == expected if complete else records == expected[: len(records)]
    return path.read_bytes() == reference.read_bytes()


def temp_files(folder: Path) -> list[Path]:
    """Every atomic_write temp file under `folder`."""
    return sorted(path for path in folder.rglob("*") if TEMP_NAME.match(path.name))

    return True


def file_digests(paths: list[Path]) -> dict[Path, str]:
    """SHA-256 of each file under `paths` (files or folders), to show inputs stay untouched."""
    digests = {}
    for root in paths:
        for path in [root] if root.is_file() else sorted(root.rglob("*")):
            if path.is_file():
                digests[path] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests
