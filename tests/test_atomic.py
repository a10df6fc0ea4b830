"""Atomic writes: the final name holds the old content or the new, never a partial file."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import OBEY_PERMISSIONS, run_script

from mnistkit.atomic import (
    atomic_write,
    remove_stale_temp_files,
    write_bytes_atomic,
    write_text_atomic,
    written_in_place,
)
from mnistkit.errors import MnistkitError
from mnistkit.run_state import state_path


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


def test_missing_folders_are_made_and_a_file_in_the_way_is_a_clear_error(tmp_path: Path) -> None:
    write_bytes_atomic(tmp_path / "models" / "mnist" / "out.bin", b"x")
    assert (tmp_path / "models" / "mnist" / "out.bin").read_bytes() == b"x"
    (tmp_path / "a-file").write_bytes(b"")
    with pytest.raises(
        MnistkitError, match=f"^{tmp_path / 'a-file' / 'out.bin'}: {tmp_path / 'a-file'} is a file"
    ):
        write_bytes_atomic(tmp_path / "a-file" / "out.bin", b"x")
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


def test_a_temp_file_still_locked_by_its_writer_is_kept_whatever_its_pid(tmp_path: Path) -> None:
    """A writer in another container (pid namespace) or on another host has a pid that runs no
    process here: its temp file was swept as it was written, and its rename failed as
    'folder does not exist'."""
    import fcntl

    target = tmp_path / "train-images-idx3-ubyte.gz"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    elsewhere = tmp_path / f".{target.name}.{int(dead.stdout)}.abc123.tmp"
    elsewhere.write_bytes(b"half a download")
    with open(elsewhere, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        remove_stale_temp_files(target)
        assert elsewhere.exists()
    remove_stale_temp_files(target)  # its writer is gone: no lock, and no process of its pid
    assert not elsewhere.exists()
    with pytest.raises(MnistkitError) as refused, atomic_write(target) as handle:
        handle.write(b"whole")
        (temp,) = [entry for entry in tmp_path.iterdir() if entry.name.endswith(".tmp")]
        temp.unlink()  # as such a sweep did
    assert str(refused.value) == (
        f"{target}: cannot write: its temp file {temp.name} was deleted meanwhile, by another process"
    )


@pytest.mark.parametrize("character", ["p", "ü", "字"])
def test_the_longest_legal_names_are_written_and_kept_apart(tmp_path: Path, character: str) -> None:
    """A file name of up to 255 bytes is legal, but `.NAME.PID.XXXXXXXX.tmp` was not: writing
    it failed with 'File name too long'."""
    width = len(character.encode())
    first = tmp_path / (character * ((251 - 1) // width) + "1.tsv")
    second = tmp_path / (character * ((251 - 1) // width) + "2.tsv")
    assert 250 <= len(os.fsencode(first.name)) <= 255
    write_bytes_atomic(first, b"first")
    write_bytes_atomic(second, b"second")
    assert first.read_bytes() == b"first" and second.read_bytes() == b"second"
    assert sorted(tmp_path.iterdir()) == [first, second]


def test_a_long_names_stale_temp_is_swept_and_its_derived_names_fit(tmp_path: Path) -> None:
    target = tmp_path / ("m" * 240 + ".safetensors")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    with pytest.raises(InterruptedError), atomic_write(target) as handle:
        (temp,) = [entry for entry in tmp_path.iterdir() if entry.name.endswith(".tmp")]
        handle.write(b"interrupted")
        raise InterruptedError
    assert len(os.fsencode(temp.name)) <= 255 and temp.name.startswith(".mmm")
    stale = temp.with_name(temp.name.replace(f".{os.getpid()}.", f".{int(dead.stdout)}."))
    stale.write_bytes(b"left by a writer that died")
    remove_stale_temp_files(target)
    assert list(tmp_path.iterdir()) == []
    resumed = state_path(target)
    assert len(os.fsencode(resumed.name)) <= 255 and resumed.name.endswith(".resume")
    assert resumed != state_path(target.with_name("m" * 239 + "n.safetensors"))


def test_a_pipe_is_written_in_place_and_stays_a_pipe(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE)
    try:
        write_bytes_atomic(fifo, b"through the pipe")
        assert reader.communicate(timeout=30)[0] == b"through the pipe"
    finally:
        reader.kill()
    assert fifo.is_fifo()
    assert written_in_place("/dev/null") and written_in_place("/dev/stdout")
    assert not written_in_place(tmp_path / "file") and not written_in_place(tmp_path)


def test_a_link_keeps_pointing_at_its_file_which_gets_the_new_content(tmp_path: Path) -> None:
    (tmp_path / "real.json").write_text("{}")
    link = tmp_path / "link.json"
    link.symlink_to("real.json")
    write_text_atomic(link, '{"new": 1}')
    assert link.is_symlink() and os.readlink(link) == "real.json"
    assert (tmp_path / "real.json").read_text() == '{"new": 1}'


def test_new_files_follow_the_umask_and_replaced_files_keep_their_mode(tmp_path: Path) -> None:
    mask = os.umask(0o077)
    try:
        write_bytes_atomic(tmp_path / "new.bin", b"x")
    finally:
        os.umask(mask)
    assert (tmp_path / "new.bin").stat().st_mode & 0o777 == 0o600
    secret = tmp_path / "secret.tsv"
    secret.write_text("old")
    secret.chmod(0o600)
    write_text_atomic(secret, "new")
    assert secret.read_text() == "new" and secret.stat().st_mode & 0o777 == 0o600


def test_text_keeps_the_bytes_of_a_file_name_that_is_not_utf8(tmp_path: Path) -> None:
    name = os.fsdecode(b"caf\xe9.png")  # a Latin-1 name, as an old camera or zip might give
    write_text_atomic(tmp_path / "out.tsv", f"{name}\t7\n")
    assert (tmp_path / "out.tsv").read_bytes() == b"caf\xe9.png\t7\n"


def test_a_dangling_link_is_replaced_and_no_folder_made_for_it(tmp_path: Path) -> None:
    link = tmp_path / "out.json"
    link.symlink_to(tmp_path / "nowhere" / "out.json")
    write_text_atomic(link, "{}")
    assert not link.is_symlink() and link.read_text() == "{}"
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_a_file_that_a_device_folder_cannot_make_is_named_so() -> None:
    """`-o /proc/x.png` was told "folder does not exist" of /proc."""
    with pytest.raises(
        MnistkitError, match=r"^/proc/x\.png: cannot write: no such file, and /proc makes none$"
    ):
        write_bytes_atomic("/proc/x.png", b"picture")


def test_standard_output_by_its_device_name_is_standard_output(tmp_path: Path) -> None:
    """`--json /dev/stdout >> log`: written as `-` is, so the shell's log keeps what it held
    (a file opened anew through /dev/stdout would be truncated)."""
    log = tmp_path / "log"
    log.write_text("before\n")
    script = "from mnistkit.atomic import write_text_atomic; write_text_atomic('/dev/stdout', 'after\\n')"
    with log.open("a") as stdout:
        subprocess.run([sys.executable, "-c", script], stdout=stdout, check=True, timeout=60)
    assert log.read_text() == "before\nafter\n"


def test_stdout_that_takes_part_of_a_write_is_given_the_rest(monkeypatch) -> None:
    """A pipe's buffer can take part of a checkpoint and say so only in its count (the next
    write raises BrokenPipeError): every byte is written, or that error is raised."""
    import io

    class Partial(io.RawIOBase):
        def __init__(self) -> None:
            self.taken = bytearray()

        def writable(self) -> bool:
            return True

        def write(self, data) -> int:
            self.taken += bytes(data[:1000])
            return min(len(data), 1000)

    raw = Partial()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(raw))
    data = bytes(range(256)) * 40
    write_bytes_atomic("-", data)
    assert bytes(raw.taken) == data


CTRL_C_AS_THE_TEMP_FILE_IS_MADE = """
import os, signal, sys
from mnistkit import interrupts
from mnistkit.atomic import atomic_write
from mnistkit.errors import Interrupted

make = os.open

def made_then_stopped(name, *args, **kwargs):  # Ctrl-C lands as the temp file is made
    made = make(name, *args, **kwargs)
    if str(name).endswith(".tmp"):
        os.kill(os.getpid(), signal.SIGINT)
    return made

os.open = made_then_stopped
interrupts.install()
try:
    with atomic_write(sys.argv[1]) as handle:
        handle.write(b"never")
except Interrupted:
    print("stopped")
"""


def test_ctrl_c_as_the_temp_file_is_made_leaves_no_temp_file(tmp_path: Path) -> None:
    """mkstemp made the temp file before atomic_write had its name: a Ctrl-C in between left it."""
    result = run_script(CTRL_C_AS_THE_TEMP_FILE_IS_MADE, tmp_path / "out.bin")
    assert result.stdout == "stopped\n", result.stderr
    assert list(tmp_path.iterdir()) == []


SAVED_AFTER_A_HELD_CTRL_C = """
import contextlib, os, signal, sys
from mnistkit import interrupts
from mnistkit.atomic import atomic_write
from mnistkit.errors import Interrupted

interrupts.install()
with contextlib.suppress(Interrupted):  # training stopped between chunks by a held Ctrl-C
    with interrupts.deferred():
        os.kill(os.getpid(), signal.SIGINT)
with atomic_write(sys.argv[1]) as handle:  # the last complete epoch, saved on the way out
    handle.write(b"epoch 1")
"""


def test_the_checkpoint_saved_after_a_held_ctrl_c_is_written(tmp_path: Path) -> None:
    """A Ctrl-C that stopped training stays held while its last epoch is saved: no write on the
    way out may be stopped by it (a version that held signals as the temp file was made
    raised it again there, and no checkpoint was written)."""
    output = tmp_path / "model.safetensors"
    result = run_script(SAVED_AFTER_A_HELD_CTRL_C, output)
    assert result.returncode == 0, result.stderr
    assert output.read_bytes() == b"epoch 1"
