"""The measuring scripts: people_style.py's arithmetic (the gap between the digits as MNIST
gives them and as people's images, with its 95% interval) and its gap row, and every script's
arguments checked before minutes of work."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import bench_predict
import bench_train
import numpy as np
import people_style
import pytest
from conftest import REPO_ROOT, draw_large_digit
from people_style import paired_gap_points
from PIL import Image

from mnistkit.checkpoint import load_checkpoint, save_checkpoint
from mnistkit.images import load_digit


def test_the_gap_counts_the_digits_only_people_style_loses_less_those_it_gains() -> None:
    plain = np.array([True] * 90 + [False] * 10)
    people = plain.copy()
    people[:6] = False  # six digits lost to the people-style drawing
    people[95] = True  # one that only the drawing gets right
    gap, half_width = paired_gap_points(plain, people)
    assert gap == pytest.approx(5.0)
    # Differences +1 six times, -1 once, 0 otherwise: variance 7/100 - (5/100)^2.
    assert half_width == pytest.approx(100 * 1.96 * math.sqrt((0.07 - 0.05**2) / 100))


def test_digits_read_alike_leave_no_doubt_and_more_digits_narrow_the_interval() -> None:
    same = np.array([True, False, True, True])
    assert paired_gap_points(same, same) == (0.0, 0.0)
    plain = np.ones(300, bool)
    people = plain.copy()
    people[::30] = False
    _, narrow = paired_gap_points(np.tile(plain, 10), np.tile(people, 10))
    gap, wide = paired_gap_points(plain, people)
    assert gap == pytest.approx(100 / 30)
    assert narrow == pytest.approx(wide / math.sqrt(10))


def test_a_model_of_some_digits_is_measured_on_those_digits(tmp_path: Path, large_digit_model: Path) -> None:
    """A `3v8` model read MNIST 6.67% and people 20.00% (a gap of -13.33 points): its
    output's index was taken for the digit, and digits it does not know counted as wrong."""
    ten = load_checkpoint(large_digit_model)
    params = {
        name: value[..., [3, 8]] if value.shape[-1] == 10 else value for name, value in ten.params.items()
    }
    three_v_eight = tmp_path / "3v8.safetensors"
    metadata = {"architecture": {**ten.architecture, "num_classes": 2}, "classes": [3, 8]}
    save_checkpoint(three_v_eight, params, {**metadata, "normalization": ten.normalization})
    digits = [3, 8, 1, 5, 8, 3]  # styles take turns: scan, phone, desk, ruled, shadow, transparent
    paths = []
    for index, digit in enumerate(digits):
        paths.append(tmp_path / f"{index}-{digit}.png")
        Image.fromarray(255 - draw_large_digit(digit)).save(paths[-1])
    images = np.stack([load_digit(path) for path in paths])
    row = people_style.gap_row(three_v_eight, images, np.array(digits), paths)
    readings = ["4", "100.00%", "100.00%", "0.00 ± 0.00"]
    assert row[1:] == [*readings, "100.0%", "100.0%", "-", "-", "100.0%", "100.0%"]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["bench_train.py", "--presets", "nope"], "argument --presets: 'nope' is not one of logreg,"),
        (["bench_train.py", "--seeds", "x"], "argument --seeds: expected comma-separated whole numbers"),
        (["bench_predict.py", "--runs", "0"], "argument --runs: expected a whole number, 1 or more"),
        (["bench_serve.py", "--clients", "0"], "argument --clients: expected a whole number, 1 or more"),
        (["people_style.py", "m.safetensors", "--mnist", ".", "--count", "0"], "argument --count:"),
    ],
)
def test_a_scripts_bad_argument_is_a_usage_error_at_once(arguments: list[str], message: str) -> None:
    """`bench_train.py --presets nope` trained for minutes before it failed; --runs 0 and the
    like ended in tracebacks."""
    script = REPO_ROOT / "scripts" / arguments[0]
    result = subprocess.run(
        [sys.executable, str(script), *arguments[1:]], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_the_predict_bench_measures_the_commands_memory_not_its_own() -> None:
    """Linux carries a parent's peak RSS into its child's: the bench, holding 60,000 images,
    gave 165 MiB as the peak of predict of 1,000 paths, of 20,000 and of eval alike."""
    held = np.ones(256 << 20, np.uint8)  # this process 256 MiB larger, as the bench grows
    run = bench_predict.run_process([sys.executable, "-c", "import sys; sys.stdin.read()"], "paths\n")
    assert run.peak_rss_mib < 64 and held.all()
    assert run.wall_s > 0 and run.cpu_s > 0


def test_the_bench_counts_a_cnn_s_matmuls_where_its_pools_are() -> None:
    """`cnn-best` pools after its second and fourth convs; counted as if after each conv, its
    image shrank below 1x1 and the count came out 3.7e11 a digit."""
    from mnistkit.architectures import build_architecture
    from mnistkit.config import preset_config

    architecture = build_architecture(preset_config("cnn-best"), 10)
    # (rows, inner, outputs) per example: 28 -> 26 -> 24, pool 12 -> 10 -> 8, pool 4; 4*4*48 -> 256 -> 10
    layers = [(26 * 26, 9, 24), (24 * 24, 9 * 24, 24), (10 * 10, 9 * 24, 48), (8 * 8, 9 * 48, 48)]
    macs = [rows * inner * out for rows, inner, out in [*layers, (1, 768, 256), (1, 256, 10)]]
    assert bench_train.matmul_flops_per_epoch(architecture, 3) == 2 * 3 * (2 * sum(macs) + sum(macs[1:]))
