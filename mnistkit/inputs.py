"""Opening input files, with one-line errors that name the file and what is wrong with it:
missing, a directory, unreadable, or a file of another kind (an `.npz` given where a
checkpoint belongs, say, when two arguments were swapped).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from mnistkit.errors import MnistkitError

# What mnistkit's users hand to the wrong command most often, by their first bytes.
_SIGNATURES = (
    (b"PK\x03\x04", "a zip archive such as an .npz data file (from parse-to-npz)"),
    (b"\x1f\x8b", "a gzip file (such as a downloaded IDX file)"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x00\x00\x08\x03", "an IDX images file"),
    (b"\x00\x00\x08\x01", "an IDX labels file"),
)


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


@contextlib.contextmanager
def open_input(path: str | os.PathLike[str], what: str) -> Iterator[BinaryIO]:
    """Open `path` for reading in binary; `what` names the expected kind ("a checkpoint")."""
    path = Path(path)
    try:
        if path.is_dir():
            raise MnistkitError(f"{path}: is a directory, expected {what}")
        handle = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        raise MnistkitError(f"{path}: no such file") from None
    except OSError as error:
        raise MnistkitError(f"{path}: cannot read: {error.strerror or error}") from None
    with handle:
        yield handle


def read_input(path: str | os.PathLike[str], what: str, max_bytes: int) -> bytes:
    """The bytes of `path`, refusing files larger than `max_bytes` before reading them."""
    with open_input(path, what) as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > max_bytes:
            raise MnistkitError(f"{path}: {size} bytes is too large for {what}")
        try:
            return handle.read()
        except OSError as error:
            raise MnistkitError(f"{path}: cannot read: {error.strerror or error}") from None


def read_text(path: str | os.PathLike[str], what: str) -> tuple[str, str]:
    """The UTF-8 text of `path` (`-` reads stdin) and a name for messages; a byte-order mark
    (as spreadsheets write one at the start of a CSV) is dropped."""
    if str(path) == "-":
        return sys.stdin.read().removeprefix("\ufeff"), "<stdin>"
    with open_input(path, what) as handle:
        try:
            data = handle.read()
        except OSError as error:
            raise MnistkitError(f"{path}: cannot read: {error.strerror or error}") from None
    try:
        return data.decode("utf-8-sig"), str(path)
    except UnicodeDecodeError:
        kind = what_file_is(data[:16])
        found = f"it is {kind}" if kind else "not UTF-8 text"
        raise MnistkitError(f"{path}: not {what} ({found})") from None


def wrong_kind(path: str | os.PathLike[str], start: bytes, what: str, hint: str = "") -> MnistkitError:
    """The error for a file that is not `what`: saying what it is instead, where known."""
    kind = what_file_is(start)
    if kind is None:
        return MnistkitError(f"{path}: not {what}")
    return MnistkitError(f"{path}: this is {kind}, not {what}{hint}")
