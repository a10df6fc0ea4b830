"""Atomic file writes: a temp file in the target folder, fsync, then rename.

An interrupted or failed write never leaves a file under the final name, so make never
takes a half-written artifact as done. Temp names carry the writer's pid so a later run
can remove the leftovers of a killed one without touching a live writer's file.
The path `-` means standard output, as it does for every mnistkit output. A device, a pipe
or /dev/stdout is written in place (a rename would put a plain file where it was); a link
to a file has its file replaced, the link kept. New files get the umask's permissions and
a replaced file keeps its own.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from mnistkit import interrupts
from mnistkit.errors import MnistkitError
from mnistkit.inputs import input_path

WRITE_ERRNOS = {
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "read-only file system",
    errno.ENOSPC: "no space left on device",
    errno.EFBIG: "file too large (disk quota or size limit reached)",
    errno.EDQUOT: "disk quota exceeded",
    errno.EISDIR: "is a directory",
    errno.ENOENT: "folder does not exist",
    errno.ENXIO: "nothing reads it (a pipe without a reader, or a socket)",
    errno.EBADF: "it is closed (the command was started with >&-)",
}


# The longest file name Linux, macOS and Windows file systems take, in bytes.
NAME_MAX_BYTES = 255
# What a temp file's name adds to its target's: `.` before it, `.PID.XXXXXXXX.tmp` after.
TEMP_NAME_EXTRA_BYTES = 1 + 1 + 7 + 1 + 8 + 4


def fitting_name(name: str, extra_bytes: int) -> str:
    """`name`, or where it and `extra_bytes` more would pass the file systems' limit, its
    start and a hash of the whole: a name that is legal on its own must still be written
    through a temp file, and names derived from it (its saved state, `--save-preprocessed`
    files) must still fit. Distinct names stay distinct."""
    encoded = os.fsencode(name)
    if len(encoded) + extra_bytes <= NAME_MAX_BYTES:
        return name
    import hashlib

    digest = hashlib.sha256(encoded).hexdigest()[:16]
    cut = NAME_MAX_BYTES - extra_bytes - len(digest) - 1
    while cut > 0 and encoded[cut] & 0xC0 == 0x80:  # not inside a UTF-8 character
        cut -= 1
    return f"{os.fsdecode(encoded[:cut])}~{digest}"


def _temp_prefix(path: Path) -> str:
    return f".{fitting_name(path.name, TEMP_NAME_EXTRA_BYTES)}."


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (perhaps owned by another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temp_files(path: Path) -> None:
    """Delete temp files for `path` left by writers that no longer run: their pid runs no
    process here, and no one holds the file's lock. A writer holds it while it writes, which
    keeps its file from a sweeper that cannot see its pid (in another container's pid
    namespace, on another host sharing the folder)."""
    prefix = _temp_prefix(path)
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return
    for entry in entries:
        name = entry.name
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        pid_text = name[len(prefix) :].split(".", 1)[0]
        if pid_text.isdigit() and not pid_alive(int(pid_text)) and not _locked(entry):
            with contextlib.suppress(OSError):
                entry.unlink()


def _locked(path: Path) -> bool:
    """Whether a writer holds `path`'s lock. Asked with a shared lock, which a file open for
    reading may take (an exclusive one needs it open for writing on NFS); a file this user
    may not open (another's, mode 0600) is judged by its pid alone, as before locks."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | _NO_FOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:  # no locks here: the pid alone tells
        return False
    finally:
        os.close(fd)
    return False


STDOUT = "-"
_NO_FOLLOW = getattr(os, "O_NOFOLLOW", 0)  # a link planted at a temp file's name is not followed
PIPE_READER_POLL_S = 0.05  # how often a write into a named pipe looks for its reader


def _umask() -> int:
    """The process's umask, read where Linux shows it (setting it to read it would change it
    for every thread for a moment); 022 where it cannot be read."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


# Paths that name this process's standard output: written as `-` is (a file opened anew
# through them would be truncated under the shell's redirection).
STDOUT_ALIASES = ("/dev/stdout", "/dev/fd/1", "/proc/self/fd/1")
# And its standard error: opened anew, such a file kept an offset of its own, and its lines
# (train --history /dev/stderr 2> log) overwrote the log's.
STDERR_ALIASES = ("/dev/stderr", "/dev/fd/2", "/proc/self/fd/2")


def is_stdout(path: str | os.PathLike[str]) -> bool:
    return str(path) == STDOUT or os.path.abspath(path) in STDOUT_ALIASES


def is_stderr(path: str | os.PathLike[str]) -> bool:
    return os.path.abspath(path) in STDERR_ALIASES


def same_path(path: str | os.PathLike[str], other: str | os.PathLike[str]) -> bool:
    """The same file, or (where one does not exist yet) the same path however spelled."""
    if is_stdout(path) or is_stdout(other):
        return is_stdout(path) and is_stdout(other)
    try:
        return os.path.samefile(path, other)
    except (OSError, ValueError):
        return os.path.realpath(path) == os.path.realpath(other)


def written_in_place(path: str | os.PathLike[str]) -> bool:
    """Whether `path` is a stream or a device rather than a file to replace: `-` and
    /dev/stdout, /dev/null, a pipe, a shell's process substitution (/dev/fd/N)."""
    if is_stdout(path):
        return True
    absolute = os.path.abspath(path)
    if absolute.startswith(("/proc/", "/dev/")) and not absolute.startswith("/dev/shm/"):
        return True
    try:
        mode = os.stat(absolute).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def check_writable_target(path: str | os.PathLike[str]) -> None:
    """Fail early, before any work, when `path` cannot be written (`-`, stdout, always can).
    Missing folders on the way are fine: the write creates them."""
    if is_stdout(path):
        return
    input_path(path, "a file path to write")
    if os.fspath(path).endswith(("/", os.sep)):  # Path() would drop the slash and write a file
        raise MnistkitError(f"{os.fspath(path)}: ends in a slash, a folder's name; expected a file path")
    path = Path(path)
    try:
        if path.is_dir():
            raise MnistkitError(f"{path}: is a directory, expected a file path")
    except PermissionError as error:
        raise MnistkitError(f"{path}: cannot reach its folder ({error.strerror})") from None
    except OSError as error:  # a name over 255 bytes: File name too long
        raise MnistkitError(f"{path}: cannot be written ({error.strerror or error})") from None
    if written_in_place(path):
        if path.exists() and not os.access(path, os.W_OK):
            raise MnistkitError(f"{path}: is not writable")
        return
    _check_folder_can_be(path, _followed_link(path).parent)


def _missing_folders(folder: Path) -> list[Path]:
    """`folder` and those of its parents that do not exist yet, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _check_folder_can_be(path: Path, folder: Path, missing: list[Path] | None = None) -> None:
    """`folder` exists, or its nearest existing ancestor is a folder it can be made in."""
    missing = _missing_folders(folder) if missing is None else missing
    existing = missing[-1].parent if missing else folder
    if not existing.is_dir():
        raise MnistkitError(f"{path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise MnistkitError(f"{path}: output folder {existing} is not writable")


def make_output_folder(folder: Path) -> list[Path]:
    """Create `folder` (and its parents) for outputs; one-line errors when that cannot be.
    Returns the folders it made, deepest first."""
    try:
        if folder.exists() and not folder.is_dir():
            raise MnistkitError(f"{folder}: exists and is not a folder")
        made = _missing_folders(folder)
        if made:
            _check_folder_can_be(folder, folder, made)
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # a name over 255 bytes too: File name too long
        raise MnistkitError(f"{folder}: cannot create the folder ({error.strerror})") from None
    return made


def describe_write_error(path: Path, error: OSError) -> MnistkitError:
    reason = WRITE_ERRNOS.get(error.errno or 0, error.strerror or str(error))
    return MnistkitError(f"{path}: cannot write: {reason}")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO]:
    """Yield a file object whose content appears at `path` only if the block succeeds; for `-`,
    standard output (binary data is refused when that is a terminal)."""
    if is_stdout(path) or is_stderr(path):
        yield _standard_stream(path, mode)
        return
    check_writable_target(path)
    encoding, errors = (None, None) if "b" in mode else ("utf-8", "surrogateescape")
    if written_in_place(path):
        try:
            with _open_in_place(Path(path), mode, encoding, errors) as handle:
                yield handle
        except OSError as error:
            folder = Path(path).parent
            if error.errno == errno.ENOENT and folder.is_dir():  # /proc/x.png: "folder does not exist"
                raise MnistkitError(f"{path}: cannot write: no such file, and {folder} makes none") from None
            if error.errno in WRITE_ERRNOS:
                raise describe_write_error(Path(path), error) from None
            raise
        return
    path = _followed_link(Path(path))
    try:
        permissions = stat.S_IMODE(os.stat(path).st_mode) & 0o777
    except OSError:
        permissions = 0o666 & ~_umask()
    made = make_output_folder(path.parent)
    remove_stale_temp_files(path)
    temp_name = fd = None
    try:
        # Named before it is made: a Ctrl-C landing as mkstemp made one, before it said its
        # name, left the file.
        for _ in range(100):
            temp_name = _temp_name(path)
            with contextlib.suppress(FileExistsError):
                fd = os.open(temp_name, os.O_RDWR | os.O_CREAT | os.O_EXCL | _NO_FOLLOW, 0o600)
                break
        else:
            temp_name = None  # each name tried was another writer's
            raise FileExistsError(errno.EEXIST, "no free name for a temp file")
        with contextlib.suppress(OSError):  # a file system without locks: the pid alone tells
            fcntl.flock(fd, fcntl.LOCK_EX)  # held until closed (see the sweep); waits out a sweep's probe
        with os.fdopen(fd, mode, encoding=encoding, errors=errors) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
            os.fchmod(handle.fileno(), permissions)
            try:  # renamed while still locked
                os.replace(temp_name, path)
            except FileNotFoundError:
                if not path.parent.is_dir():
                    raise
                raise MnistkitError(
                    f"{path}: cannot write: its temp file {Path(temp_name).name} was deleted meanwhile, "
                    "by another process"
                ) from None
    except BaseException as error:
        if temp_name is not None:
            with contextlib.suppress(OSError):
                os.unlink(temp_name)
        _remove_empty(made)
        if isinstance(error, OSError) and (fd is None or error.errno in WRITE_ERRNOS):
            raise describe_write_error(path, error) from None
        raise
    _fsync_directory(path.parent)


def _temp_name(path: Path) -> str:
    """A temp file's name beside `path`: `.NAME.PID.RANDOM.tmp`, so that one left by a writer
    that died is known to `remove_stale_temp_files`."""
    return str(path.parent / f"{_temp_prefix(path)}{os.getpid()}.{os.urandom(4).hex()}.tmp")


@contextlib.contextmanager
def taken_back_on_failure(files: list[Path], folders: list[Path] | None = None) -> Iterator[list[Path]]:
    """Files written one by one (each atomically) that stand or fall together: those in
    `files` when the block fails, a full disk or Ctrl-C, are removed, then those of `folders`
    (made for them, deepest first) that are empty by then. A path goes in before its file is
    written: a Ctrl-C right after the write would otherwise leave the file."""
    try:
        yield files
    except BaseException:
        for path in files:
            with contextlib.suppress(IsADirectoryError, PermissionError):  # a folder in its place
                path.unlink(missing_ok=True)
        _remove_empty(folders or [])
        raise


def _remove_empty(folders: list[Path]) -> None:
    """The folders a write that failed made for its file: no output, no trace (one that holds
    something by now, another's output, stays)."""
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


def _open_in_place(path: Path, mode: str, encoding: str | None, errors: str | None) -> IO:
    """A device or a pipe, opened to append (a redirected /dev/stderr keeps what it holds)."""
    if stat.S_ISFIFO(os.stat(path).st_mode):
        fd = _open_pipe(path)
    else:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    return os.fdopen(fd, mode.replace("w", "a"), encoding=encoding, errors=errors)


def _open_pipe(path: Path) -> int:
    """A named pipe's writing end, once a reader has opened it, as a blocking open waits; but
    a Ctrl-C that training holds back still ends this wait."""
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK)
        except OSError as error:
            if error.errno != errno.ENXIO:
                raise
            interrupts.raise_if_interrupted()
            time.sleep(PIPE_READER_POLL_S)
        else:
            os.set_blocking(fd, True)
            return fd


def _followed_link(path: Path) -> Path:
    """The file a link names, to replace it and keep the link, when the link is the caller's
    (or its folder owner's, as Linux's protected_symlinks has it) and names a file; otherwise
    the path itself, whose rename replaces the link."""
    if not path.is_symlink():
        return path
    target = Path(os.path.realpath(path))
    link_owner = os.lstat(path).st_uid
    trusted = link_owner in (os.geteuid(), os.stat(path.parent).st_uid)
    return target if trusted and target.is_file() else path


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_write(path, "wb") as handle:
        # stdout's buffer may take part of `data` from a pipe whose reader left, and say so only
        # in its count: the next write raises BrokenPipeError.
        remaining = memoryview(data)
        while remaining:
            remaining = remaining[handle.write(remaining) :]


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    with atomic_write(path, "w") as handle:
        handle.write(text)


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable; some file systems refuse, which is harmless."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _standard_stream(path: str | os.PathLike[str], mode: str) -> IO:
    """Standard output for `-` and its aliases, standard error for its: the streams themselves."""
    stream, name = (sys.stdout, "output") if is_stdout(path) else (sys.stderr, "error")
    if "b" not in mode:
        return stream
    if stream.isatty():
        raise MnistkitError(f"{path}: refusing to write binary data to a terminal; redirect standard {name}")
    stream.flush()
    return stream.buffer
