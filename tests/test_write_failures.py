"""Writes fail: every command that writes, against a read-only folder, a file where a folder
of the output's path should be, an output path that is a directory, and a full disk. Each:
non-zero exit, one `Error:` line naming the path and the problem, no traceback, nothing
partial left, inputs untouched.

Root writes into read-only folders anyway, so that case runs in a subprocess that first
drops the capabilities that allow it (conftest.OBEY_PERMISSIONS); the full disk is
RLIMIT_FSIZE in a subprocess with SIGXFSZ ignored, so writes fail with EFBIG as they would
with ENOSPC. Each subprocess runs every command once through click's CliRunner, so the two
cost two interpreter starts in all.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import OBEY_PERMISSIONS, write_idx
from faults import file_digests
from PIL import Image

from mnistkit.architectures import param_shapes
from mnistkit.checkpoint import save_checkpoint
from mnistkit.cli import cli
from mnistkit.datasets import MNIST_FILES

SIZE_LIMIT_BYTES = 8

# Each command that writes: its arguments and whether {out} is a folder; {scratch} is a
# writable folder for a second output that is not under test.
COMMANDS: dict[str, tuple[tuple[str, ...], bool]] = {
    "fetch": (("fetch", "--out", "{out}", "--mirror", "{inputs}/mirror", "--no-default-mirrors"), True),
    "parse-to-npz": (("parse-to-npz", "{inputs}/raw", "-o", "{out}"), False),
    "train": (("train", "{inputs}/mnist.npz", "-o", "{out}", "--hidden", "8", "--epochs", "1"), False),
    "train --history": (
        ("train", "{inputs}/mnist.npz", "-o", "{scratch}/unused.safetensors", "--history", "{out}"),
        False,
    ),
    "eval --json": (("eval", "{inputs}/model.safetensors", "{inputs}/mnist.npz", "--json", "{out}"), False),
    "predict --output": (
        ("predict", "{inputs}/model.safetensors", "{inputs}/d0.png", "{inputs}/d1.png", "--output", "{out}"),
        False,
    ),
    "predict --save-preprocessed": (
        ("predict", "{inputs}/model.safetensors", "{inputs}/d0.png", "--save-preprocessed", "{out}"),
        True,
    ),
    "render-samples": (("render-samples", "{inputs}/mnist.npz", "-o", "{out}", "--count", "8"), False),
    "render-samples --export-dir": (
        ("render-samples", "{inputs}/mnist.npz", "-o", "{scratch}/unused.png", "--export-dir", "{out}"),
        True,
    ),
    "render-confusion": (("render-confusion", "--metrics", "{inputs}/metrics.json", "-o", "{out}"), False),
    "render-curves": (("render-curves", "{inputs}/history.jsonl", "-o", "{out}"), False),
    "render-embedding": (
        ("render-embedding", "{inputs}/2d.safetensors", "{inputs}/mnist.npz", "-o", "{out}", "--count", "20"),
        False,
    ),
    "render-weights": (("render-weights", "{inputs}/logreg.safetensors", "-o", "{out}"), False),
}
# Where a command fails with the full disk before it reaches the output under test.
FULL_DISK_SKIPS = {"train --history", "render-samples --export-dir"}

BATCH = f"""
import json, os, resource, signal, sys
from click.testing import CliRunner
from mnistkit.cli import cli
cases, fault = json.loads(sys.argv[1]), sys.argv[2]
if fault == "read-only":
{textwrap.indent(OBEY_PERMISSIONS, "    ")}
else:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, ({SIZE_LIMIT_BYTES}, {SIZE_LIMIT_BYTES}))
results = {{}}
for name, args in cases.items():
    result = CliRunner().invoke(cli, args)
    crash = result.exception if not isinstance(result.exception, (SystemExit, type(None))) else None
    results[name] = {{"exit_code": result.exit_code, "stderr": result.stderr, "crash": repr(crash)}}
print(json.dumps(results))
"""


def architecture(model: str, hidden: list[int]) -> dict:
    return {"model": model, "hidden": hidden, "activation": "relu", "num_classes": 10}


def random_checkpoint(path: Path, arch: dict) -> None:
    rng = np.random.default_rng(0)
    params = {
        name: (rng.standard_normal(shape) * 0.05).astype(np.float32)
        for name, shape in param_shapes(arch).items()
    }
    metadata = {"architecture": arch, "normalization": {"kind": "unit"}, "classes": list(range(10))}
    save_checkpoint(path, params, metadata)


@dataclass
class World:
    """Inputs every command reads, in a folder of their own."""

    base: Path
    inputs: Path
    scratch: Path

    def args(self, command: str, out: Path) -> list[str]:
        return [arg.format(inputs=self.inputs, scratch=self.scratch, out=out) for arg in COMMANDS[command][0]]

    def case_folder(self, fault: str, command: str) -> Path:
        return self.base / fault / command.replace(" ", "_").replace("-", "")

    def out_path(self, fault: str, command: str) -> Path:
        """Where the output goes for this fault: inside a read-only, absent or full folder,
        or, for `directory`, onto a folder (or, for a folder output, onto a file)."""
        folder = self.case_folder(fault, command)
        is_folder = COMMANDS[command][1]
        name = "output.safetensors" if command == "train" else "output"  # a checkpoint's name
        if fault == "under-a-file":
            return folder / "a-file" / name
        if fault == "directory":
            return folder / ("a-file" if is_folder else "a-folder")
        return folder if is_folder else folder / name


@pytest.fixture(scope="module")
def world(small_data: dict[str, np.ndarray], fetch_files: dict[str, bytes]) -> Iterator[World]:
    base = Path(tempfile.mkdtemp(prefix="mnistkit-write-failures-", dir="/tmp"))
    base.chmod(0o755)
    inputs = base / "inputs"
    (inputs / "raw").mkdir(parents=True)
    (inputs / "mirror").mkdir()
    for name, data in fetch_files.items():
        (inputs / "mirror" / name).write_bytes(data)
    for key, name in MNIST_FILES.items():
        write_idx(inputs / "raw" / name, small_data[key])
    np.savez(inputs / "mnist.npz", **small_data)
    random_checkpoint(inputs / "model.safetensors", architecture("mlp", [16]))
    random_checkpoint(inputs / "2d.safetensors", architecture("mlp", [8, 2]))
    random_checkpoint(inputs / "logreg.safetensors", {"model": "logreg", "num_classes": 10})
    for index in range(2):
        Image.fromarray(small_data["test_images"][index]).save(inputs / f"d{index}.png")
    result = CliRunner().invoke(
        cli, ["eval", str(inputs / "model.safetensors"), str(inputs / "mnist.npz"), "--json", str(base / "m")]
    )
    assert result.exit_code == 0, result.output
    shutil.move(base / "m", inputs / "metrics.json")
    record = {"train_loss": 1.0, "train_accuracy": 0.5, "val_loss": None, "val_accuracy": None}
    record |= {"test_loss": None, "test_accuracy": None, "seconds": 0.1}
    (inputs / "history.jsonl").write_text("".join(json.dumps({"epoch": e, **record}) + "\n" for e in (1, 2)))
    for path in [base, *base.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    scratch = base / "scratch"
    scratch.mkdir()
    scratch.chmod(0o777)
    yield World(base, inputs, scratch)
    shutil.rmtree(base)


def prepare(world: World, fault: str, command: str) -> Path:
    """Make the case's folder as the fault needs it; return the output path to give."""
    folder = world.case_folder(fault, command)
    folder.mkdir(parents=True)
    out = world.out_path(fault, command)
    if fault == "under-a-file":
        out.parent.write_text("a file where a folder should be")
    if fault == "directory":
        if COMMANDS[command][1]:
            out.write_text("a file where a folder should be")
        else:
            out.mkdir()
    if fault == "read-only":
        folder.chmod(0o555)
    return out


@pytest.fixture(scope="module")
def subprocess_results(world: World) -> dict[str, dict[str, dict]]:
    """Run every command under the read-only and the full-disk fault, once each."""
    results = {}
    for fault in ("read-only", "full-disk"):
        cases = {
            command: world.args(command, prepare(world, fault, command))
            for command in COMMANDS
            if not (fault == "full-disk" and command in FULL_DISK_SKIPS)
        }
        process = subprocess.run(
            [sys.executable, "-c", BATCH, json.dumps(cases), fault],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=world.base,
        )
        assert process.returncode == 0, process.stderr
        results[fault] = json.loads(process.stdout.splitlines()[-1])
    return results


REASONS = {
    "read-only": "is not writable",
    "under-a-file": "is a file, not a folder",
    "directory": "is a directory",
    "full-disk": "cannot write: file too large",
}


def expected_reason(fault: str, command: str) -> str:
    if fault == "directory" and COMMANDS[command][1]:
        return "exists and is not a folder|is a file"
    return REASONS[fault]


CASES = [
    (fault, command)
    for fault in REASONS
    for command in COMMANDS
    if not (fault == "full-disk" and command in FULL_DISK_SKIPS)
]


@pytest.mark.parametrize(("fault", "command"), CASES, ids=[f"{f}-{c}" for f, c in CASES])
def test_a_failed_write_is_one_line_and_leaves_nothing(
    world: World, subprocess_results: dict, fault: str, command: str
) -> None:
    inputs_before = file_digests([world.inputs])
    if fault in subprocess_results:
        out = world.out_path(fault, command)
        outcome = subprocess_results[fault][command]
    else:
        out = prepare(world, fault, command)
        result = CliRunner().invoke(cli, world.args(command, out))
        outcome = {"exit_code": result.exit_code, "stderr": result.stderr, "crash": repr(result.exception)}
        if isinstance(result.exception, SystemExit):
            outcome["crash"] = "None"
    assert outcome["crash"] == "None", outcome
    assert outcome["exit_code"] != 0
    errors = [line for line in outcome["stderr"].splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, outcome["stderr"]
    assert "Usage:" not in outcome["stderr"], outcome["stderr"]  # one line, not click's usage block
    assert str(out) in errors[0] or str(out.parent) in errors[0], errors[0]
    assert re.search(expected_reason(fault, command), errors[0]), errors[0]
    assert "Traceback" not in outcome["stderr"]
    folder = world.case_folder(fault, command)
    left = sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))
    expected_left = {"directory": [out.name], "under-a-file": [out.parent.name]}.get(fault, [])
    assert left == expected_left, f"left behind: {left}"
    assert file_digests([world.inputs]) == inputs_before
    assert list(world.scratch.iterdir()) == []
