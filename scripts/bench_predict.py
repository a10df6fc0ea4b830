"""Benchmark predict and eval as a user runs them: whole `mnistkit` processes.

Prints, for the issue's targets (one PNG in at most 0.3 s wall; at least 1,000 images/s
for 10,000 people-sized PNGs; peak memory flat from 1,000 to 20,000 images on stdin):

- wall time of `mnistkit predict CKPT one.png`, median of several runs, for an MLP and a CNN;
- throughput of predict over 10,000 PNGs of a few hundred pixels, and over 60 scans of
  2,000 pixels (too few for a chunk: read where they are slow to read, on every core);
- peak RSS of predict with 1,000 and 20,000 paths on stdin (the largest single process);
- throughput of `mnistkit eval` on 60,000 training images.

Checkpoints hold random weights of the default MLP and CNN shapes (speed does not depend
on the values), so the script needs no trained model: `python scripts/bench_predict.py`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from script_arguments import positive_int

from mnistkit.architectures import param_shapes
from mnistkit.checkpoint import save_checkpoint

MNISTKIT = [str(Path(sys.executable).with_name("mnistkit"))]
# Python caches compiled modules in __pycache__ unless told not to; some sandboxes set this,
# which makes every run recompile mnistkit's modules (about 35 ms). Time what users run.
ENVIRONMENT = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
ARCHITECTURES = {
    "mlp": {"model": "mlp", "hidden": [512, 256], "activation": "relu", "num_classes": 10},
    "cnn": {
        "model": "cnn",
        "channels": [16, 32],
        "kernel_size": 5,
        "hidden": [128],
        "activation": "relu",
        "num_classes": 10,
    },
}


def random_checkpoint(folder: Path, name: str) -> Path:
    architecture = ARCHITECTURES[name]
    rng = np.random.default_rng(0)
    params = {
        tensor: (rng.standard_normal(shape) * 0.05).astype(np.float32)
        for tensor, shape in param_shapes(architecture).items()
    }
    path = folder / f"{name}.safetensors"
    metadata = {"architecture": architecture, "normalization": {"kind": "unit"}, "classes": list(range(10))}
    save_checkpoint(path, params, metadata)
    return path


def people_pngs(folder: Path, count: int) -> list[Path]:
    """Dark digits on light paper, about 300x260 pixels, at varied places and sizes."""
    rng = np.random.default_rng(0)
    font_sizes = (120, 150, 180)
    fonts = {size: ImageFont.load_default(size=size) for size in font_sizes}
    paths = []
    for index in range(count):
        page = Image.new(
            "L", (int(rng.integers(260, 340)), int(rng.integers(220, 300))), int(rng.integers(200, 250))
        )
        draw = ImageDraw.Draw(page)
        position = (int(rng.integers(10, 100)), int(rng.integers(0, 40)))
        draw.text(
            position,
            str(index % 10),
            fill=30,
            font=fonts[font_sizes[index % 3]],
            stroke_width=3,
            stroke_fill=30,
        )
        path = folder / f"{index:05d}.png"
        page.save(path)
        paths.append(path)
    return paths


def large_pngs(folder: Path, count: int) -> list[Path]:
    """Grainy colour scans, 2,000 pixels square: each about 12 MB of pixels to decode."""
    grain = np.random.default_rng(0).integers(-8, 9, (2000, 2000, 1), dtype=np.int16)
    font = ImageFont.load_default(size=1200)
    paths = []
    for index in range(count):
        page = Image.new("RGB", (2000, 2000), (235, 232, 225))
        ImageDraw.Draw(page).text((500, 300), str(index % 10), fill=(40, 40, 90), font=font)
        pixels = (np.asarray(page, np.int16) + grain).clip(0, 255).astype(np.uint8)
        path = folder / f"large-{index:03d}.png"
        Image.fromarray(pixels).save(path, compress_level=1)  # quick to write, as slow to read
        paths.append(path)
    return paths


@dataclass
class Run:
    wall_s: float
    cpu_s: float
    peak_rss_mib: int


# Linux carries a parent's peak RSS across (v)fork and exec into the child's ru_maxrss: started
# from this script, which holds the pictures' paths and 60,000 images, every command "peaked"
# at the script's own size (165 MiB for predict of 1,000 and 20,000 paths and eval alike). A
# small probe process starts each one instead, so the floor is the probe's few MiB; it prints
# the command's wall seconds, CPU seconds and peak RSS in KiB.
PROBE = """
import os, subprocess, sys, time
started = time.perf_counter()
process = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(process.pid, 0)
print(time.perf_counter() - started, usage.ru_utime + usage.ru_stime, usage.ru_maxrss)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_process(arguments: list[str], stdin_text: str | None = None) -> Run:
    """Wall and CPU seconds (user + system) and peak RSS of one process; CPU includes its
    pool workers, and the peak is that of its largest process."""
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, *arguments],
        input=stdin_text,
        stdin=subprocess.DEVNULL if stdin_text is None else None,
        capture_output=True,
        text=True,
        env=ENVIRONMENT,
    )
    if probe.returncode != 0:
        raise SystemExit(f"{' '.join(arguments[:4])} ... failed ({probe.returncode}): {probe.stderr.strip()}")
    wall_s, cpu_s, peak_rss_kib = probe.stdout.split()
    return Run(float(wall_s), float(cpu_s), int(peak_rss_kib) // 1024)


def median_wall(arguments: list[str], runs: int) -> str:
    """Median wall time of `runs` processes, after one untimed run that warms the caches."""
    run_process(arguments)
    walls = sorted(run_process(arguments).wall_s for _ in range(runs))
    return f"{statistics.median(walls):.3f} s (median of {runs}; {walls[0]:.3f}-{walls[-1]:.3f} s)"


def throughput(count: int, run: Run) -> str:
    """Images per second, and CPU milliseconds per image: on a busy machine the second
    tells what an idle one would do (2 cores: 2000 / ms-per-image images/s)."""
    return f"{count / run.wall_s:,.0f} images/s, {1000 * run.cpu_s / count:.2f} CPU ms/image"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runs", type=positive_int, default=7, help="one-PNG runs per model (median reported)"
    )
    parser.add_argument(
        "--images", type=positive_int, default=10_000, help="PNG files for the throughput run"
    )
    parser.add_argument("--large", type=positive_int, default=60, help="2,000 px scans for their run")
    options = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    rows = []
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        checkpoints = {name: random_checkpoint(folder, name) for name in ARCHITECTURES}
        (folder / "images").mkdir()
        print(f"writing {options.images:,} people-sized PNGs ...", file=sys.stderr)
        paths = [str(path) for path in people_pngs(folder / "images", options.images)]
        predict = [*MNISTKIT, "predict"]
        imports = [sys.executable, "-c", "import numpy, click, PIL.Image"]
        rows.append(("import numpy, click, PIL.Image alone", median_wall(imports, options.runs)))
        for name, checkpoint in checkpoints.items():
            rows.append(
                (f"predict one PNG, {name}", median_wall([*predict, str(checkpoint), paths[0]], options.runs))
            )
        run = run_process([*predict, str(checkpoints["mlp"]), *paths])
        rows.append((f"predict {len(paths):,} PNG arguments, mlp", throughput(len(paths), run)))
        print(f"writing {options.large} scans of 2,000 px ...", file=sys.stderr)
        scans = [str(path) for path in large_pngs(folder / "images", options.large)]
        run = run_process([*predict, str(checkpoints["mlp"]), *scans])
        rows.append((f"predict {len(scans)} 2,000 px PNG arguments, mlp", throughput(len(scans), run)))
        for count in (1_000, 20_000):
            listing = "".join(f"{paths[i % len(paths)]}\n" for i in range(count))
            run = run_process([*predict, str(checkpoints["mlp"]), "-"], listing)
            rows.append(
                (
                    f"predict {count:,} paths on stdin, mlp",
                    f"peak RSS {run.peak_rss_mib} MiB, {throughput(count, run)}",
                )
            )
        npz = folder / "mnist.npz"
        rng = np.random.default_rng(0)
        np.savez(
            npz,
            train_images=rng.integers(0, 256, (60_000, 28, 28), dtype=np.uint8),
            train_labels=rng.integers(0, 10, 60_000, dtype=np.uint8),
            test_images=rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
            test_labels=rng.integers(0, 10, 10, dtype=np.uint8),
        )
        for name, checkpoint in checkpoints.items():
            run = run_process([*MNISTKIT, "eval", str(checkpoint), str(npz), "--split", "train"])
            rows.append(
                (
                    f"eval 60,000 train images, {name}",
                    f"peak RSS {run.peak_rss_mib} MiB, {throughput(60_000, run)}",
                )
            )
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")


if __name__ == "__main__":
    main()
