"""Two at once, and under load: concurrent runs on the same files, `make -j4 all`, and
predict's memory over 20,000 images on stdin.

Every concurrent run must end with a valid result and no temp file left: temp names are
unique per writer (the pid and random bytes, O_EXCL), and the last rename wins with a whole file.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, idx_bytes, synthetic_arrays
from faults import LAUNCHER, TABLE_ENV, check_artifact, mnistkit_command, temp_files, write_fetch_table
from PIL import Image

from mnistkit.architectures import param_shapes
from mnistkit.checkpoint import save_checkpoint
from mnistkit.datasets import MNIST_FILES

ROUNDS = 3


def noise_mirror(folder: Path, images: int) -> dict[str, bytes]:
    """Four canonical files of noise images, large enough for two downloads to overlap."""
    rng = np.random.default_rng(1)
    arrays = {
        "train_images": rng.integers(0, 256, (images, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, images, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (images // 4, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, images // 4, dtype=np.uint8),
    }
    folder.mkdir()
    files = {name: gzip.compress(idx_bytes(arrays[key]), 1, mtime=0) for key, name in MNIST_FILES.items()}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return files


def start_together(
    commands: list[list[str]], env: dict[str, str], cwd: Path
) -> list[subprocess.CompletedProcess]:
    processes = [
        subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for command in commands
    ]
    results = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=600)
        results.append(subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr))
    return results


def test_two_fetches_into_one_folder_both_succeed(tmp_path: Path) -> None:
    files = noise_mirror(tmp_path / "mirror", 6000)
    env = {**os.environ, TABLE_ENV: str(write_fetch_table(tmp_path / "table.json", files))}
    out_dir = tmp_path / "raw"
    fetch = mnistkit_command(
        "fetch", "--out", out_dir, "--mirror", tmp_path / "mirror", "--no-default-mirrors"
    )
    for round_number in range(ROUNDS):
        extra = ["--force"] if round_number else []
        for result in start_together([fetch + extra, fetch + extra], env, tmp_path):
            assert result.returncode == 0, result.stderr
            assert result.stdout.splitlines() == [str(out_dir / name) for name in MNIST_FILES.values()]
        assert sorted(path.name for path in out_dir.iterdir()) == sorted(files)
        for name, data in files.items():
            assert (out_dir / name).read_bytes() == data


@pytest.mark.slow
def test_two_trainings_to_one_checkpoint_both_succeed(tmp_path: Path, synthetic_npz: Path) -> None:
    """The same command twice at once: both finish, and the file is what one alone writes."""
    alone = tmp_path / "alone.safetensors"
    train_args = ["--hidden", "16", "--epochs", "2"]
    solo = subprocess.run(
        mnistkit_command("train", synthetic_npz, "-o", alone, *train_args), capture_output=True
    )
    assert solo.returncode == 0, solo.stderr
    shared = tmp_path / "out"
    shared.mkdir()
    command = mnistkit_command(
        "train",
        synthetic_npz,
        "-o",
        shared / "model.safetensors",
        "--history",
        shared / "h.jsonl",
        *train_args,
    )
    for result in start_together([command, command], dict(os.environ), tmp_path):
        assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in shared.iterdir()) == ["h.jsonl", "model.safetensors"]
    check_artifact(shared / "model.safetensors")
    check_artifact(shared / "h.jsonl")
    assert (shared / "model.safetensors").read_bytes() == alone.read_bytes()


def make_folder(tmp_path: Path) -> tuple[Path, list[str], dict[str, str]]:
    """A folder where the project's Makefile runs on a synthetic mirror with the existing venv."""
    folder = tmp_path / "project"
    folder.mkdir()
    data = synthetic_arrays(600, 200, 3)
    files = {name: gzip.compress(idx_bytes(data[key]), mtime=0) for key, name in MNIST_FILES.items()}
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name, content in files.items():
        (mirror / name).write_bytes(content)
    launcher = tmp_path / "run_mnistkit.py"
    launcher.write_text(LAUNCHER)
    shutil.copy(REPO_ROOT / "pyproject.toml", folder / "pyproject.toml")
    installed = tmp_path / "installed"
    installed.touch()
    past = time.time() - 3600
    os.utime(folder / "pyproject.toml", (past, past))
    variables = [
        f"VENV={REPO_ROOT / '.venv'}",
        f"INSTALLED={installed}",
        f"MNISTKIT={sys.executable} {launcher}",
        "EPOCHS=2",
        "VAL_SIZE=100",
        "TRAIN_ARGS=--hidden 16",
    ]
    env = {
        **os.environ,
        "MNISTKIT_MIRROR": str(mirror),
        TABLE_ENV: str(write_fetch_table(tmp_path / "table.json", files)),
    }
    return folder, variables, env


ARTIFACTS = [
    *(f"data/raw/{name}" for name in MNIST_FILES.values()),
    "data/mnist.npz",
    "models/model.safetensors",
    "models/model.history.jsonl",
    "reports/metrics.json",
    "reports/samples.png",
    "reports/mistakes.png",
    "reports/confusion.png",
    "reports/curves.png",
    "reports/predictions.tsv",
]


@pytest.mark.slow
def test_make_j4_all_builds_everything_once(tmp_path: Path) -> None:
    folder, variables, env = make_folder(tmp_path)
    make = ["make", "-f", str(REPO_ROOT / "Makefile"), "-C", str(folder), "-j4", *variables]
    first = subprocess.run([*make, "all"], env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    for artifact in ARTIFACTS:
        check_artifact(folder / artifact)
    exported = sorted((folder / "reports" / "samples").glob("*.png"))
    assert len(exported) == 64 and len((folder / "reports/predictions.tsv").read_text().splitlines()) == 64
    assert temp_files(folder) == []
    built = {artifact: (folder / artifact).stat().st_mtime_ns for artifact in ARTIFACTS}
    again = subprocess.run([*make, "all"], env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "run_mnistkit.py" not in again.stdout, again.stdout
    assert {artifact: (folder / artifact).stat().st_mtime_ns for artifact in ARTIFACTS} == built
    serial = [part for part in make if part != "-j4"]
    # A rule that always ran made `make -q` and `make -n` say that training would run again.
    up_to_date = subprocess.run([*serial, "-q", "all"], env=env, capture_output=True, timeout=60)
    dry = subprocess.run([*serial, "-n", "all"], env=env, capture_output=True, text=True, timeout=60)
    assert up_to_date.returncode == 0 and "run_mnistkit.py" not in dry.stdout, dry.stdout
    more = subprocess.run(
        [*serial, "-n", "all", "EPOCHS=3"], env=env, capture_output=True, text=True, timeout=60
    )
    assert "run_mnistkit.py train" in more.stdout and "--epochs 3" in more.stdout, more.stdout
    for after_training in ("eval", "render-samples", "render-confusion", "render-curves", "predict"):
        assert f"run_mnistkit.py {after_training} " in more.stdout, more.stdout  # as `make all` runs them
    assert subprocess.run([*serial, "-q", "all"], env=env, capture_output=True, timeout=60).returncode == 0
    assert {artifact: (folder / artifact).stat().st_mtime_ns for artifact in ARTIFACTS} == built
    # Without -j, make deleted the history of a run that failed before touching it.
    for target in ("all", "models/model.history.jsonl"):  # reached through either of its files
        refused = subprocess.run(
            [*serial, target, "PRESET=nope"], env=env, capture_output=True, text=True, timeout=60
        )
        assert refused.returncode != 0 and "Deleting" not in refused.stderr, refused.stderr
        assert {artifact: (folder / artifact).stat().st_mtime_ns for artifact in ARTIFACTS} == built
    # With only the history deleted, make found the checkpoint up to date for eval and the
    # samples, then trained for curves.png: they stayed older than the checkpoint until a second make.
    (folder / "models/model.history.jsonl").unlink()
    dry = subprocess.run([*serial, "-n", "all"], env=env, capture_output=True, text=True, timeout=60)
    for command in ("train", "eval", "render-samples", "render-curves", "predict"):
        assert f"run_mnistkit.py {command} " in dry.stdout, dry.stdout
    rebuilt = subprocess.run([*serial, "all"], env=env, capture_output=True, text=True, timeout=600)
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert subprocess.run([*serial, "-q", "all"], env=env, capture_output=True, timeout=60).returncode == 0


# Started from pytest, a child's ru_maxrss starts at pytest's own peak: Linux carries the
# parent's high-water mark across (v)fork and exec. A small probe process in between makes
# the floor the probe's few MiB instead. It prints the command's peak RSS in KiB.
RSS_PROBE = """
import os, subprocess, sys
process = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(process.pid, 0)
print(usage.ru_maxrss)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def peak_rss_mib(command: list[str], stdin_text: str) -> tuple[int, float]:
    """The largest resident set of the process or any of its workers, and the wall seconds."""
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", RSS_PROBE, *command], input=stdin_text, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return int(result.stdout) // 1024, time.perf_counter() - started


def random_mlp_checkpoint(path: Path) -> Path:
    """A checkpoint of the default MLP's shape with random weights: enough to measure memory."""
    architecture = {"model": "mlp", "hidden": [512, 256], "activation": "relu", "num_classes": 10}
    rng = np.random.default_rng(0)
    params = {
        name: (rng.standard_normal(shape) * 0.05).astype(np.float32)
        for name, shape in param_shapes(architecture).items()
    }
    metadata = {"architecture": architecture, "normalization": {"kind": "unit"}, "classes": list(range(10))}
    save_checkpoint(path, params, metadata)
    return path


@pytest.mark.slow
def test_predict_memory_does_not_grow_with_the_number_of_images(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Predict streams stdin in bounded chunks: 20,000 paths peak near what 1,000 do."""
    checkpoint = random_mlp_checkpoint(tmp_path / "model.safetensors")
    images = tmp_path / "images"
    images.mkdir()
    digits = synthetic_arrays(10, 100, 5)["test_images"]
    paths = []
    for index, digit in enumerate(digits):
        path = images / f"{index:03d}.png"
        Image.fromarray(digit).save(path)
        paths.append(path)
    figures = {}
    for count in (1_000, 20_000):
        listing = "".join(f"{paths[i % len(paths)]}\n" for i in range(count))
        figures[count] = peak_rss_mib(mnistkit_command("predict", checkpoint, "-"), listing)
    with capsys.disabled():
        for count, (peak_mib, seconds) in figures.items():
            rate = count / seconds
            print(
                f"\npredict {count:,} PNGs on stdin: peak RSS {peak_mib} MiB, {rate:,.0f} images/s",
                file=sys.stderr,
            )
    assert figures[20_000][0] < 1.3 * figures[1_000][0]


@pytest.mark.slow
def test_eval_memory_grows_only_by_the_data_it_loads(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Eval goes through the images in batches: 60,000 images cost their 47 MB, not more."""
    rng = np.random.default_rng(0)
    checkpoint = random_mlp_checkpoint(tmp_path / "model.safetensors")
    figures = {}
    for count in (1_000, 60_000):
        npz = tmp_path / f"{count}.npz"
        np.savez(
            npz,
            train_images=rng.integers(0, 256, (count, 28, 28), dtype=np.uint8),
            train_labels=rng.integers(0, 10, count, dtype=np.uint8),
            test_images=np.zeros((1, 28, 28), np.uint8),
            test_labels=np.zeros(1, np.uint8),
        )
        figures[count] = peak_rss_mib(mnistkit_command("eval", checkpoint, npz, "--split", "train"), "")
    with capsys.disabled():
        for count, (peak_mib, seconds) in figures.items():
            rate = count / seconds
            print(
                f"\neval {count:,} train images: peak RSS {peak_mib} MiB, {rate:,.0f} images/s",
                file=sys.stderr,
            )
    data_mib = 60_000 * 28 * 28 / 2**20
    assert figures[60_000][0] - figures[1_000][0] < 2 * data_mib
