"""Atomic writes: the final name holds the old content or the new, never a partial file."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import OBEY_PERMISSIONS

from mnistkit.atomic import atomic_write, remove_stale_temp_files, write_bytes_atomic
from mnistkit.errors import MnistkitError


def test_content_appears_only_after_success(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    with atomic_write(target) as handle:
        handle.write(b"new")
        assert not target.exists()
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_failure_keeps_old_content_and_removes_temp(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_write(target) as handle:
        handle.write(b"partial")
        raise RuntimeError("boom")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_missing_folder_and_directory_target_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(MnistkitError, match="does not exist"):
        write_bytes_atomic(tmp_path / "nope" / "out.bin", b"x")
    with pytest.raises(MnistkitError, match="is a directory"):
        write_bytes_atomic(tmp_path, b"x")


def test_read_only_folder_is_a_clear_error(tmp_path: Path) -> None:
    """Root drops the capabilities that let it write into read-only folders anyway."""
    base = Path(tempfile.mkdtemp(prefix="mnistkit-ro-", dir="/tmp"))
    try:
        base.chmod(0o755)
        read_only = base / "ro"
        read_only.mkdir(mode=0o555)
        read_only.chmod(0o555)
        script = OBEY_PERMISSIONS + (
            "import sys\n"
            "from mnistkit.atomic import write_bytes_atomic\n"
            "from mnistkit.errors import MnistkitError\n"
            "try:\n"
            f"    write_bytes_atomic({str(read_only / 'out.bin')!r}, b'x')\n"
            "except MnistkitError as error:\n"
            "    print(error)\n"
            "    sys.exit(1)\n"
        )
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
        assert result.returncode == 1, result.stderr
        assert "is not writable" in result.stdout
        assert list(read_only.iterdir()) == []
    finally:
        shutil.rmtree(base)


def test_full_disk_gives_one_line_and_no_file(tmp_path: Path) -> None:
    """RLIMIT_FSIZE makes writes fail with EFBIG, as a full disk would fail them."""
    target = tmp_path / "big.bin"
    script = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))\n"
        "from mnistkit.atomic import write_bytes_atomic\n"
        "from mnistkit.errors import MnistkitError\n"
        "try:\n"
        f"    write_bytes_atomic({str(target)!r}, b'x' * 100000)\n"
        "except MnistkitError as error:\n"
        "    print(error)\n"
        "    sys.exit(1)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "cannot write: file too large" in result.stdout
    assert list(tmp_path.iterdir()) == []


def test_stale_temp_of_dead_writer_is_swept_live_one_kept(tmp_path: Path) -> None:
    target = tmp_path / "model.safetensors"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".model.safetensors.{dead_pid}.abc123.tmp"
    live = tmp_path / f".model.safetensors.{os.getpid()}.def456.tmp"
    stale.write_bytes(b"stale")
    live.write_bytes(b"live")
    remove_stale_temp_files(target)
    assert not stale.exists()
    assert live.exists()
