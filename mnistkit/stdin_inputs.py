"""What `-` gives predict on stdin: image paths as their writer sends them, or one image's bytes.

A list of paths is text. `find photos | mnistkit predict CKPT -` is answered path by path as
the paths come; `curl -s URL | mnistkit predict CKPT -` sends the image itself, which is read
whole as the image named `-`. Other files piped by mistake (a gzip, an .npz, a checkpoint) are
refused by name. A shell's pipe given by its path (`<(curl -s URL)`) is read whole as one image too.
Standard library only.
"""

from __future__ import annotations

import itertools
import os
import re
import select
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from mnistkit import interrupts, worker_pool
from mnistkit.errors import MnistkitError
from mnistkit.inputs import what_file_is

STDIN_NAME = "-"
# How often a wait for stdin's next paths looks for a held Ctrl-C or SIGTERM, as a wait for
# the workers does.
SIGNAL_POLL_S = worker_pool.SIGNAL_POLL_S
READ_BYTES = 1 << 16
# An image on stdin is held in memory whole; the most that a picture within the pixel limit
# takes uncompressed (40 megapixels of RGBA) is 160 MB.
MAX_IMAGE_BYTES = 200_000_000
# How the formats Pillow reads most begin: PNG, JPEG, TIFF (both byte orders); GIF, BMP, WebP
# and Netpbm need a few bytes more (`_image_start`). Any other image shows itself as binary.
_IMAGE_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*")
# Netpbm (PBM, PGM, PPM, as text or binary): its magic number, then its width and height.
_NETPBM = re.compile(rb"P[1-6]\s+(#[^\n]*\n\s*)*\d+\s+\d+\s")
_UTF16_MARKS = (b"\xff\xfe", b"\xfe\xff")
_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f]")  # not in a path, but for the oddest
# Bytes enough to tell an image from a list of paths (WebP's signature ends at byte 12).
TELLING_BYTES = 32
# How images begin that no path does; read on until TELLING_BYTES where stdin starts so.
_BINARY_STARTS = (*_IMAGE_SIGNATURES, b"GIF87a", b"GIF89a", b"RIFF")


@dataclass(frozen=True)
class StdinWaits:
    """Among the paths: stdin has no more for the moment (its writer is slow, or a person
    types them); `ready(timeout)` says whether more came within `timeout` seconds."""

    descriptor: int

    def ready(self, timeout: float) -> bool:
        return _readable(self.descriptor, timeout)


@dataclass(frozen=True)
class PipedImage:
    """Among the paths: an image's bytes from a pipe, `-` or one given by its path (`<(cmd)`,
    `/dev/stdin`), read as the image named `name`."""

    content: bytes = field(repr=False)
    name: str = STDIN_NAME


def expand_stdin(
    arguments: Iterable[str], stdin: IO[str], null_separated: bool = False
) -> Iterator[str | StdinWaits | PipedImage]:
    """The paths given, with `-` replaced by the lines of stdin (blank lines skipped), or with
    `null_separated` by its NUL-ended paths (`find -print0`), which may hold line breaks. Bytes
    that are not UTF-8 stay as they are, as in a path given as an argument. A StdinWaits says
    that stdin has no more path at the moment, so that what came before is answered now: a
    program that writes paths as it finds them gets its rows as it goes. Where stdin holds an
    image's bytes instead, `-` is that one image, a PipedImage."""
    for argument in arguments:
        if argument == STDIN_NAME:
            yield from _stdin_items(stdin, null_separated)
        elif _is_open_pipe(argument):
            yield _piped_image(argument)
        else:
            yield argument


def _is_open_pipe(path: str) -> bool:
    """Whether `path` is a pipe a shell hands over already open at its writer's end: `<(cmd)`
    (/dev/fd/63) or a piped stdin named /dev/stdin. A named pipe (mkfifo) is not: opening it
    waits for a writer that may never come, so it stays refused as no regular file."""
    try:
        return stat.S_ISFIFO(os.stat(path).st_mode) and os.path.basename(os.path.realpath(path)).startswith(
            "pipe:["
        )
    except (OSError, ValueError):
        return False


def _piped_image(path: str) -> PipedImage:
    """The image in a shell's pipe given by its path (`<(curl -s URL)`, `/dev/stdin`), read
    whole once, as `-`'s: it was refused as no regular file, since a pipe cannot be read
    twice, nor by a worker, as a file is."""
    try:
        with open(path, "rb") as pipe:
            content = pipe.read(MAX_IMAGE_BYTES + 1)
    except OSError as error:
        raise MnistkitError(f"{path}: cannot read: {error.strerror}") from None
    if len(content) > MAX_IMAGE_BYTES:
        raise MnistkitError(
            f"{path}: the pipe holds more than {MAX_IMAGE_BYTES:,} bytes, too large for one image"
        )
    return PipedImage(content, path)


def _stdin_items(stdin: IO[str], null_separated: bool) -> Iterator[str | StdinWaits | PipedImage]:
    """Told by stdin's first bytes: its paths, or the image it holds."""
    separator = b"\0" if null_separated else b"\n"
    blocks, start = _blocks(stdin), b""
    for block in blocks:
        if isinstance(block, StdinWaits):
            yield block
            continue
        start += block
        if _enough_to_tell(start, separator):
            break
    if not start:
        return
    rest = itertools.chain([start], blocks)
    if _stdin_holds(start, null_separated) == "image":
        yield _whole_image(rest)
    elif null_separated:
        yield from _null_ended_paths(_records(rest, b"\0"))
    else:
        yield from _line_paths(_records(rest, b"\n"))


def _enough_to_tell(start: bytes, separator: bytes) -> bool:
    """Whether `start` tells an image from paths: a slow writer's first bytes may be too few
    (a PNG's first three), while a path typed at a terminal is whole at its end."""
    if len(start) >= TELLING_BYTES:
        return True
    begun = any(sign.startswith(start) or start.startswith(sign) for sign in _BINARY_STARTS)
    return separator in start and not begun


def _stdin_holds(start: bytes, null_separated: bool) -> str:
    """What stdin, which begins with `start`, holds: "image" (or other binary data, which
    Pillow will refuse as not an image) or "paths", text; files piped in by mistake are
    refused by name."""
    if _image_start(start):
        return "image"
    if start.startswith(_UTF16_MARKS):
        raise MnistkitError(
            "-: standard input holds UTF-16 text; `-` reads paths in UTF-8, one per line "
            "(iconv -f UTF-16 -t UTF-8 turns one into the other)"
        )
    records = start.split(b"\0" if null_separated else b"\n")
    first_path = next((record for record in records if record.strip(b"\r\n")), b"")
    binary = _CONTROL.match(first_path) or (_CONTROL.search(first_path) and not _is_utf8(first_path))
    if not binary and (null_separated or b"\0" not in start):
        return "paths"  # (a path may hold any byte but NUL, a control character seldom)
    kind = what_file_is(start[:16])
    if kind is not None:
        raise MnistkitError(
            f"-: standard input holds {kind}, not an image nor image paths; `-` reads an image's "
            "bytes, or paths, one per line"
        )
    if not null_separated and not _CONTROL.search(start.replace(b"\0", b"")):
        raise MnistkitError(  # text between NULs: `find -print0`'s list
            "-: standard input holds paths ended by NUL bytes (find -print0); `-` reads one path "
            "per line, and with --null (-0) paths ended by NUL: mnistkit predict CKPT --null -"
        )
    return "image"


def _image_start(start: bytes) -> bool:
    """Whether `start` is how an image file of a format Pillow reads begins."""
    if start.startswith(_IMAGE_SIGNATURES) or (start[:4], start[8:12]) == (b"RIFF", b"WEBP"):
        return True
    if start[:2] == b"BM" and start[6:10] == b"\0\0\0\0":  # BMP: its reserved bytes
        return True
    if start.startswith((b"GIF87a", b"GIF89a")):  # its size and flags next, seldom all text
        return not start[6:13].isascii() or not start[6:13].decode("ascii").isprintable()
    return bool(_NETPBM.match(start))


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _whole_image(blocks: Iterator[bytes | StdinWaits]) -> PipedImage:
    """All of stdin as one image's bytes: an image is whole only at the end of stdin."""
    pieces, size = [], 0
    for block in blocks:
        if isinstance(block, StdinWaits):
            continue
        pieces.append(block)
        size += len(block)
        if size > MAX_IMAGE_BYTES:
            raise MnistkitError(
                f"-: standard input holds more than {MAX_IMAGE_BYTES:,} bytes, too large for one "
                "image (give it by its path)"
            )
    return PipedImage(b"".join(pieces))


def _line_paths(records: Iterator[bytes | StdinWaits]) -> Iterator[str | StdinWaits]:
    first = True
    for record in records:
        if isinstance(record, StdinWaits):
            yield record
            continue
        line = os.fsdecode(record)
        if first:
            line, first = line.removeprefix("\ufeff"), False  # as a spreadsheet saves a list
        if path := line.rstrip("\r\n"):
            yield path


def _null_ended_paths(records: Iterator[bytes | StdinWaits]) -> Iterator[str | StdinWaits]:
    """The paths on stdin, each ended by a NUL; the last one's NUL may be missing, as `xargs -0`
    allows."""
    seen_nul = False
    for record in records:
        if isinstance(record, StdinWaits):
            yield record
            continue
        ended = record.endswith(b"\0")
        if not ended and not seen_nul and b"\n" in record.rstrip(b"\r\n"):
            raise MnistkitError(
                "-: standard input holds lines, not paths ended by NUL bytes; --null reads what "
                "find -print0 writes (without --null, `-` reads one path per line)"
            )
        seen_nul = seen_nul or ended
        if raw := record[:-1] if ended else record.rstrip(b"\r\n"):
            yield os.fsdecode(raw)


def _blocks(stdin: IO[str]) -> Iterator[bytes | StdinWaits]:
    """stdin's bytes as a pipe or terminal gives them, with a StdinWaits before each read that
    would wait for more."""
    source = stdin.buffer
    read = getattr(source, "read1", source.read)  # read1 keeps nothing back in the buffer
    descriptor = _descriptor(source)
    while True:
        if descriptor is not None and not _readable(descriptor, 0):
            yield StdinWaits(descriptor)
            # Wait here (a non-blocking stdin would read as ended), but not past a held signal:
            # a SIGTERM swallowed as it landed left predict waiting for a stdin that stayed open.
            while not _readable(descriptor, SIGNAL_POLL_S):
                interrupts.raise_if_interrupted()
        data = read(READ_BYTES)
        if not data:
            return
        yield data


def _records(blocks: Iterable[bytes | StdinWaits], separator: bytes) -> Iterator[bytes | StdinWaits]:
    """The blocks' bytes cut after each `separator` (the last record may lack it), the waits
    between them kept."""
    pending: list[bytes] = []  # the unended record's pieces, joined once: no copy per read
    for data in blocks:
        if isinstance(data, StdinWaits):
            yield data
            continue
        *complete, tail = data.split(separator)
        if complete:
            complete[0], pending = b"".join([*pending, complete[0]]), []
        for record in complete:
            yield record + separator
        if tail:
            pending.append(tail)
    if pending:
        yield b"".join(pending)


def _descriptor(source: Any) -> int | None:
    try:
        return source.fileno()
    except (AttributeError, OSError, ValueError):  # an in-memory stream: all of it is there
        return None


def _readable(descriptor: int, timeout: float) -> bool:
    try:
        return bool(select.select([descriptor], [], [], timeout)[0])
    except (OSError, ValueError):  # Windows selects only sockets: read without asking
        return True
