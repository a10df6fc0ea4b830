"""Opening input files, with one-line errors that name the file and what is wrong with it:
missing, a directory, unreadable, or a file of another kind (an `.npz` given where a
checkpoint belongs, say, when two arguments were swapped).
"""

from __future__ import annotations

import base64
import contextlib
import os
import stat
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from mnistkit.errors import MnistkitError

# What mnistkit's users hand to the wrong command most often, by their first bytes.
_SIGNATURES = (
    (b"PK\x03\x04", "a zip archive such as an .npz data file (from parse-to-npz)"),
    (b"\x1f\x8b", "a gzip file (such as a downloaded IDX file)"),
    (b"\x89PNG", "a PNG image"),  # its signature's own line break ends a line read from stdin
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x00\x00\x08\x03", "an IDX images file"),
    (b"\x00\x00\x08\x01", "an IDX labels file"),
)


def json_path(key: str, path: str) -> dict[str, str]:
    """A path as JSON output holds it, under `key`. A file name that is not UTF-8 (its bytes
    kept as lone surrogates, which strict JSON readers refuse) is shown with U+FFFD, and its
    bytes are under `key`_bytes, base64, to open it by."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raw = os.fsencode(path)
        return {key: raw.decode("utf-8", "replace"), f"{key}_bytes": base64.b64encode(raw).decode("ascii")}
    return {key: path}


def what_file_is(start: bytes) -> str | None:
    """A name for the kind of file that begins with `start`, where it is a common one."""
    for signature, name in _SIGNATURES:
        if start.startswith(signature):
            return name
    if len(start) >= 9 and start[8:9] == b"{":
        return "a safetensors file (such as an mnistkit checkpoint)"
    if start.lstrip()[:1] in (b"{", b"["):
        return "a JSON file"
    return None


def input_path(path: str | os.PathLike[str], what: str) -> Path:
    """`path` as a Path, refused when empty: Path("") is the current folder, and an unset
    variable would be read as it."""
    if not os.fspath(path):
        raise MnistkitError(f"an empty path, expected {what}")
    return Path(path)


@contextlib.contextmanager
def open_input(path: str | os.PathLike[str], what: str) -> Iterator[BinaryIO]:
    """Open `path` for reading in binary; `what` names the expected kind ("a checkpoint")."""
    path = input_path(path, what)
    try:
        if path.is_dir():
            raise MnistkitError(f"{path}: is a directory, expected {what}")
        handle = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        if str(path) == "-":  # `parse-to-npz -o - | mnistkit train -`: an .npz needs a seekable file
            raise MnistkitError(
                f"-: no such file, and {what} is not read from standard input here; save it to a file "
                "and give that file's path"
            ) from None
        raise MnistkitError(f"{path}: no such file") from None
    except OSError as error:
        raise MnistkitError(f"{path}: cannot read: {error.strerror or error}") from None
    with handle:
        yield handle


# Text inputs (histories, metrics, labels files) larger than this are no such file: without a
# bound, `/dev/zero` or an endless pipe given as one filled the memory until the kernel killed
# the process (or another).
MAX_TEXT_BYTES = 512 << 20
READ_BLOCK_BYTES = 16 << 20


def read_input(
    path: str | os.PathLike[str],
    what: str,
    max_bytes: int,
    check_start: Callable[[bytes], None] | None = None,
) -> bytes:
    """The bytes of `path`, refusing files larger than `max_bytes`: before reading them where
    their size is known, and as soon as they pass it where not (a pipe, a device).
    `check_start` sees the first block (up to 16 MiB) before the rest is read, to refuse
    what is no such file early (`/dev/zero` as a checkpoint)."""
    with open_input(path, what) as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > max_bytes:
            raise MnistkitError(f"{path}: {size} bytes is too large for {what}")
        data = bytearray()
        try:
            if stat.S_ISREG(os.fstat(handle.fileno()).st_mode):  # its size is known: one read, one copy
                data = handle.read()
                if check_start is not None and data:
                    check_start(data[:READ_BLOCK_BYTES])
                if len(data) > max_bytes:  # it grew since
                    raise MnistkitError(f"{path}: more than {max_bytes} bytes, too large for {what}")
                return data
            while block := handle.read(min(READ_BLOCK_BYTES, max_bytes + 1 - len(data))):
                if not data and check_start is not None:
                    check_start(block)
                data += block
                if len(data) > max_bytes:
                    raise MnistkitError(f"{path}: more than {max_bytes} bytes, too large for {what}")
        except OSError as error:
            raise MnistkitError(f"{path}: cannot read: {error.strerror or error}") from None
        return bytes(data)


def read_text(path: str | os.PathLike[str], what: str, paths: bool = False) -> tuple[str, str]:
    """The UTF-8 text of `path` (`-` reads stdin) and a name for messages; a byte-order mark
    (as spreadsheets write one at the start of a CSV) is dropped. Text that lists file names
    (`paths`) may hold any bytes, as a name may: those that are not UTF-8 come as os.fsdecode
    gives them, so that the name opens its file."""
    if str(path) == "-":
        text = sys.stdin.read(READ_BLOCK_BYTES)
        if "\x00" in text:  # as for a file: refused from its first bytes
            raise MnistkitError(f"-: not {what} (it is binary data)")
        text += sys.stdin.read(MAX_TEXT_BYTES + 1 - len(text))
        if len(text) > MAX_TEXT_BYTES:
            raise MnistkitError(f"-: more than {MAX_TEXT_BYTES} characters on stdin, too large for {what}")
        return text.removeprefix("\ufeff"), "-"  # as every message names stdin
    data = read_input(path, what, MAX_TEXT_BYTES, lambda start: _check_text_start(path, start, what))
    try:
        return data.decode("utf-8-sig", errors="surrogateescape" if paths else "strict"), str(path)
    except UnicodeDecodeError:
        kind = what_file_is(data[:16])
        found = f"it is {kind}" if kind else "not UTF-8 text"
        raise MnistkitError(f"{path}: not {what} ({found})") from None


def _check_text_start(path: str | os.PathLike[str], start: bytes, what: str) -> None:
    if start.startswith((b"\xff\xfe", b"\xfe\xff")):  # Windows Notepad's "Unicode"
        raise MnistkitError(f"{path}: not {what} in UTF-8 (it is UTF-16 text: save it as UTF-8)")
    if b"\x00" in start:  # no text holds NUL: binary data, or a device such as /dev/zero
        kind = what_file_is(start[:16])
        raise MnistkitError(f"{path}: not {what} (it is {kind or 'binary data'})")


def wrong_kind(path: str | os.PathLike[str], start: bytes, what: str, hint: str = "") -> MnistkitError:
    """The error for a file that is not `what`: saying what it is instead, where known."""
    kind = what_file_is(start)
    if kind is None:
        return MnistkitError(f"{path}: not {what}")
    return MnistkitError(f"{path}: this is {kind}, not {what}{hint}")
