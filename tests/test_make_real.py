"""The front door on the real data: `make all` from the mirror, then a second `make all` that
does nothing. Uses the project's Makefile in a fresh folder, with the existing venv."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import REAL_MNIST_DIR, REPO_ROOT, requires_real_mnist

from mnistkit.checkpoint import load_checkpoint

pytestmark = [pytest.mark.slow, requires_real_mnist]


def test_make_all_on_real_mnist_reaches_98_percent_and_then_runs_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    shutil.copy(REPO_ROOT / "pyproject.toml", folder / "pyproject.toml")
    past = time.time() - 3600
    os.utime(folder / "pyproject.toml", (past, past))
    installed = tmp_path / "installed"
    installed.touch()
    make = [
        "make",
        "-f",
        str(REPO_ROOT / "Makefile"),
        "-C",
        str(folder),
        f"VENV={REPO_ROOT / '.venv'}",
        f"INSTALLED={installed}",
    ]
    env = {**os.environ, "MNISTKIT_MIRROR": f"file://{REAL_MNIST_DIR}"}
    first = subprocess.run([*make, "all"], env=env, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]

    metrics = json.loads((folder / "reports/metrics.json").read_text())
    assert metrics["count"] == 10000
    assert metrics["accuracy"] >= 0.98
    assert "test accuracy" in first.stderr
    checkpoint = load_checkpoint(folder / "models/model.safetensors")
    assert checkpoint.metadata["data_sha256"]
    rows = (folder / "reports/predictions.tsv").read_text().splitlines()
    exported = sorted((folder / "reports/samples").glob("*.png"))
    assert len(rows) == len(exported) == 64
    correct = sum(row.split("\t")[0].split("label")[1][0] == row.split("\t")[1] for row in rows)
    assert correct >= 60
    for picture in ("samples", "mistakes", "confusion", "curves"):
        assert (folder / f"reports/{picture}.png").stat().st_size > 1000

    outputs = sorted(path for path in folder.rglob("*") if path.is_file())
    built = {path: path.stat().st_mtime_ns for path in outputs}
    again = subprocess.run([*make, "all"], env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0
    assert "bin/mnistkit" not in again.stdout, again.stdout
    assert {path: path.stat().st_mtime_ns for path in outputs} == built
