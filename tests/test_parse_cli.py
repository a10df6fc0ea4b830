"""parse-to-npz through the CLI: the arrays it writes, and one line and no file on any fault."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import REAL_MNIST_DIR, requires_real_mnist
from test_idx import CORRUPTIONS

from mnistkit.arrays import load_arrays
from mnistkit.cli import cli
from mnistkit.datasets import MNIST_FILES


def _parse(raw_dir: Path, output: Path):
    return CliRunner().invoke(cli, ["parse-to-npz", str(raw_dir), "-o", str(output)])


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def test_parse_to_npz_writes_the_four_arrays(
    synthetic_raw_dir: Path, synthetic_data: dict[str, np.ndarray], out_dir: Path
) -> None:
    result = _parse(synthetic_raw_dir, out_dir / "mnist.npz")
    assert result.exit_code == 0, result.output
    assert result.stderr == f"{out_dir / 'mnist.npz'}: 600 training and 200 test images\n"
    arrays = load_arrays(out_dir / "mnist.npz")
    for key, array in synthetic_data.items():
        assert arrays[key].dtype == np.uint8
        np.testing.assert_array_equal(arrays[key], array)
    with np.load(out_dir / "mnist.npz", allow_pickle=False) as archive:
        assert sorted(archive.files) == sorted(MNIST_FILES)
    assert [path.name for path in out_dir.iterdir()] == ["mnist.npz"]


@pytest.mark.parametrize("case_id, key, spoil, problem", CORRUPTIONS, ids=[c[0] for c in CORRUPTIONS])
def test_each_corruption_is_one_line_exit_1_and_no_output(
    small_raw_dir: Path,
    small_data: dict[str, np.ndarray],
    out_dir: Path,
    case_id: str,
    key: str,
    spoil: Callable[[np.ndarray], bytes],
    problem: str,
) -> None:
    (small_raw_dir / MNIST_FILES[key]).write_bytes(spoil(small_data[key]))
    result = _parse(small_raw_dir, out_dir / "mnist.npz")
    assert result.exit_code == 1
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("Error: ") and problem in result.stderr
    assert MNIST_FILES[key] in result.stderr
    assert list(out_dir.iterdir()) == []


def test_an_existing_output_survives_a_failed_parse(small_raw_dir: Path, out_dir: Path) -> None:
    output = out_dir / "mnist.npz"
    output.write_bytes(b"previous result")
    (small_raw_dir / MNIST_FILES["test_labels"]).write_bytes(b"")
    assert _parse(small_raw_dir, output).exit_code == 1
    assert output.read_bytes() == b"previous result"
    assert [path.name for path in out_dir.iterdir()] == ["mnist.npz"]


def test_bad_paths_are_one_line_errors(small_raw_dir: Path, out_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_bytes(b"")
    cases = [
        (small_raw_dir, tmp_path / "a-file" / "mnist.npz", "is a file, not a folder"),
        (small_raw_dir, out_dir, "is a directory"),
        (tmp_path / "no-raw", out_dir / "mnist.npz", "no such folder"),
    ]
    for raw_dir, output, problem in cases:
        result = _parse(raw_dir, output)
        assert result.exit_code == 1
        assert len(result.stderr.splitlines()) == 1 and problem in result.stderr
    assert list(out_dir.iterdir()) == []


def test_help_fetch_and_parse_never_import_jax(small_raw_dir: Path, out_dir: Path) -> None:
    script = (
        "import sys\n"
        "from mnistkit.cli import cli\n"
        "for args in (['--help'], ['fetch', '--help'], ['parse-to-npz', '--help'],\n"
        f"             ['parse-to-npz', {str(small_raw_dir)!r}, '-o', {str(out_dir / 'm.npz')!r}]):\n"
        "    cli(args, standalone_mode=False)\n"
        "assert 'jax' not in sys.modules, 'jax was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "mnistkit fetch --out data/raw" in result.stdout
    assert "mnistkit parse-to-npz data/raw -o data/mnist.npz" in result.stdout
    assert (out_dir / "m.npz").is_file()


@pytest.mark.slow
@requires_real_mnist
def test_parse_the_real_mnist(tmp_path: Path) -> None:
    result = _parse(REAL_MNIST_DIR, tmp_path / "mnist.npz")
    assert result.exit_code == 0, result.output
    arrays = load_arrays(tmp_path / "mnist.npz")
    shapes = {key: array.shape for key, array in arrays.items()}
    assert shapes == {
        "train_images": (60000, 28, 28),
        "train_labels": (60000,),
        "test_images": (10000, 28, 28),
        "test_labels": (10000,),
    }
    assert np.bincount(arrays["test_labels"]).tolist() == [
        980,
        1135,
        1032,
        1010,
        982,
        892,
        958,
        1028,
        974,
        1009,
    ]
    assert arrays["train_labels"][:5].tolist() == [5, 0, 4, 1, 9]
