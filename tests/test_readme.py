"""The README's command examples run as written: every `sh` block's commands, in order, in a
folder set up as after `make all`, offline, on small synthetic data.

Set-up lines (git clone, cd, make, activating the environment, curl against a server, and
the `$`-prompted transcripts' output) are not run. `mnistkit` is the real command, started
through the tests' launcher so that fetch verifies the synthetic files; `~` is a folder of
the test, holding a copy of the files as `~/datasets/mnist`. Slow: it trains every preset
the README shows.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, draw_large_digit, fetch_table, idx_bytes, synthetic_arrays
from faults import LAUNCHER, TABLE_ENV
from PIL import Image

from mnistkit.datasets import DATASETS, MNIST_FILES, ExpectedFile, Published

pytestmark = pytest.mark.slow

# What `make all` ran before the README's examples (see the Makefile).
MAKE_ALL = (
    "mnistkit fetch --out data/raw",
    "mnistkit parse-to-npz data/raw -o data/mnist.npz",
    "mnistkit train data/mnist.npz -o models/model.safetensors --history models/model.history.jsonl",
)
COMMANDS = ("mnistkit ", ".venv/bin/mnistkit ", "find ", "MNISTKIT_MIRROR=")
# Commands whose documented purpose is to fail on the small data used here.
EXPECTED_FAILURES = {"--min-accuracy 0.975": (3, "is below --min-accuracy")}


def readme_commands() -> list[str]:
    """The mnistkit commands of the README's `sh` blocks, in order: continuation lines joined,
    `$` prompts and comments dropped. Other lines (git clone, cd, make, activating the
    environment, curl, a transcript's output) are set-up or output, not run."""
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", (REPO_ROOT / "README.md").read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line.removeprefix("$ ")).strip()
            if line.startswith(COMMANDS) and not line.endswith(" make all"):
                commands.append(line)
    return commands


@pytest.fixture
def after_make_all(tmp_path: Path, synthetic_data) -> dict[str, str]:
    """A folder as `make all` leaves one (models/, reports/, data/raw from the mirror), the
    user's own images, and a home with a copy of the four files (and of two of MNIST's siblings,
    in `~/datasets/{dataset}`); the environment to run in."""
    home = tmp_path / "home"
    mirror = home / "datasets" / "mnist"
    mirror.mkdir(parents=True)
    small = synthetic_arrays(400, 100, seed=3)
    files = {name: idx_gz(small[key]) for key, name in MNIST_FILES.items()}
    for name, data in files.items():
        (mirror / name).write_bytes(data)
    work = tmp_path / "work"
    for folder in ("models", "reports", "photos", "my-digits", ".venv/bin", "bin"):
        (work / folder).mkdir(parents=True)
    shim = work / "bin" / "mnistkit"
    shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -c {shlex.quote(LAUNCHER)} "$@"\n')
    shim.chmod(0o755)
    (work / ".venv" / "bin" / "mnistkit").symlink_to(shim)
    Image.fromarray(255 - draw_large_digit(7)).save(work / "my-digit.png")
    labels = []
    for index in range(6):
        digit = int(synthetic_data["test_labels"][index])
        image = Image.fromarray(255 - synthetic_data["test_images"][index]).resize((112, 112))
        image.convert("RGB").save(work / "photos" / f"{index}.jpg", quality=90)
        image.save(work / "photos" / f"{index}.png")
        image.save(work / "my-digits" / f"{index}.png")
        labels.append(f"{index}.png\t{digit}\n")
    (work / "my-digits" / "labels.tsv").write_text("".join(labels))
    Image.fromarray(255 - small["test_images"][0]).resize((140, 140)).convert("RGB").save(
        work / "my-shoe.jpg"
    )
    tables = {"mnist": fetch_table(files), **sibling_mirrors(home / "datasets", small)}
    table = tmp_path / "table.json"
    table.write_text(
        json.dumps(
            {name: [dataclasses.asdict(entry) for entry in entries] for name, entries in tables.items()}
        )
    )
    env = {
        **os.environ,
        "HOME": str(home),
        "PATH": f"{work / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "MNISTKIT_MIRROR": str(mirror),
        TABLE_ENV: str(table),
        "WORK": str(work),
    }
    for command in MAKE_ALL:
        subprocess.run(
            ["bash", "-c", command], cwd=work, env=env, check=True, capture_output=True, timeout=600
        )
    return env


def sibling_mirrors(datasets: Path, small: dict[str, np.ndarray]) -> dict[str, tuple[ExpectedFile, ...]]:
    """`~/datasets/{dataset}` for the README's siblings: the small digits under Fashion-MNIST's
    names, and an EMNIST zip holding them as the letters split (labels from 1); what fetch must
    expect of each."""
    fashion = {name: idx_gz(small[key]) for key, name in DATASETS["fashion-mnist"].files.items()}
    (datasets / "fashion-mnist").mkdir()
    for name, data in fashion.items():
        (datasets / "fashion-mnist" / name).write_bytes(data)
    # EMNIST stores its images transposed and numbers its letters from 1.
    letters = {
        key: array + 1 if key.endswith("labels") else array.transpose(0, 2, 1) for key, array in small.items()
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for key, name in DATASETS["emnist-letters"].files.items():
            archive.writestr(f"gzip/{name}", idx_gz(letters[key]))
    (datasets / "emnist-letters").mkdir()
    (datasets / "emnist-letters" / "gzip.zip").write_bytes(buffer.getvalue())
    digest = hashlib.sha256(buffer.getvalue()).hexdigest()
    size = len(buffer.getvalue())
    return {
        "fashion-mnist": fetch_table(fashion),
        "emnist-letters": (ExpectedFile("gzip.zip", "", size, size, Published("sha256", digest, size)),),
    }


def idx_gz(array: np.ndarray) -> bytes:
    import gzip

    return gzip.compress(idx_bytes(array), mtime=0)


def test_every_readme_command_runs_as_written(after_make_all: dict[str, str]) -> None:
    work = Path(after_make_all["WORK"])
    commands = readme_commands()
    assert any(command.startswith("mnistkit train") for command in commands)
    for command in commands:
        if command.startswith("mnistkit serve"):
            assert_serves(command, work, after_make_all)
            continue
        result = subprocess.run(
            ["bash", "-c", command], cwd=work, env=after_make_all, capture_output=True, text=True, timeout=600
        )
        expected = next((failure for part, failure in EXPECTED_FAILURES.items() if part in command), None)
        if expected:
            status, message = expected
            assert result.returncode == status and message in result.stderr, (command, result.stderr)
        else:
            assert result.returncode == 0, (command, result.stderr)
    assert (work / "predictions.tsv").read_text().count("\n") == 6


def assert_serves(command: str, work: Path, env: dict[str, str]) -> None:
    """`serve` runs until Ctrl-C: it must print its URL, then end by it (status 130). It
    listens on any free port: the README's may be another server's on the machine that runs
    the tests (a developer's on 8080 failed them), and click takes the last `--port` given."""
    process = subprocess.Popen(
        ["bash", "-c", f"exec {command} --port 0"], cwd=work, env=env, stderr=subprocess.PIPE, text=True
    )
    line = process.stderr.readline()
    assert line.startswith("mnistkit serve: http://127.0.0.1:"), line
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=30) == -signal.SIGINT  # status 130 to a shell
