"""Many image files to 28x28 images as a model's dataset made them, decoded in parallel, in
input order.

Images are decoded and preprocessed in a process pool once there are more than a
chunk of them, or once reading them here has taken HAND_OFF_S (one image pays no pool
start-up, a few large pictures still get every core), in bounded chunks so that memory
stays flat for any number of inputs read from stdin. predict and eval share this;
numpy and Pillow only.
"""

from __future__ import annotations

import collections
import functools
import io
import json
import os
import select
import time
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from mnistkit import interrupts, terms, worker_pool
from mnistkit.datasets import DEFAULT_DATASET
from mnistkit.errors import MnistkitError
from mnistkit.images import FRAME_PX, load_digit
from mnistkit.inputs import what_file_is

CHUNK_SIZE = 256
# A chunk read in this process is handed on in pieces, one as soon as this long has passed
# since the last: the rows of large pictures come as they are read, not a chunk's worth at once.
PIECE_S = 0.2
# Pictures read here for this long (large ones, slow to decode) hand the rest of their chunk
# to the workers: starting them costs milliseconds (a forkserver's, a few tenths of a second).
HAND_OFF_S = 0.5
# How often a wait for stdin's next paths looks for a held Ctrl-C or SIGTERM, as a wait for
# the workers does.
SIGNAL_POLL_S = worker_pool.SIGNAL_POLL_S


@dataclass
class LoadedDigit:
    """One input: its 28x28 image, or why it could not be read (`error` is `path: reason`)."""

    path: str
    image: np.ndarray | None
    error: str | None


def expand_stdin(
    arguments: Iterable[str], stdin: IO[str], null_separated: bool = False
) -> Iterator[str | StdinWaits]:
    """The paths given, with `-` replaced by the lines of stdin (blank lines skipped), or with
    `null_separated` by its NUL-ended paths (`find -print0`), which may hold line breaks. Bytes
    that are not UTF-8 stay as they are, as in a path given as an argument. A StdinWaits says
    that stdin has no more path at the moment, so that what came before is answered now: a
    program that writes paths as it finds them gets its rows as it goes."""
    for argument in arguments:
        if argument == "-":
            yield from (_null_ended_paths(stdin) if null_separated else _line_paths(stdin))
        else:
            yield argument


def _line_paths(stdin: IO[str]) -> Iterator[str | StdinWaits]:
    first = True
    for record in _records(stdin, b"\n"):
        if isinstance(record, StdinWaits):
            yield record
            continue
        line = os.fsdecode(record)
        if first:
            _check_paths_not_bytes(line)
            line, first = line.removeprefix("\ufeff"), False  # as a spreadsheet saves a list
        if path := line.rstrip("\r\n"):
            yield path


def _null_ended_paths(stdin: IO[str]) -> Iterator[str | StdinWaits]:
    """The paths on stdin, each ended by a NUL; the last one's NUL may be missing, as `xargs -0`
    allows."""
    first, seen_nul = True, False
    for record in _records(stdin, b"\0"):
        if isinstance(record, StdinWaits):
            yield record
            continue
        ended = record.endswith(b"\0")
        if not ended and not seen_nul and b"\n" in record.rstrip(b"\r\n"):
            raise MnistkitError(
                "-: standard input holds lines, not paths ended by NUL bytes; --null reads what "
                "find -print0 writes (without --null, `-` reads one path per line)"
            )
        raw = record[:-1] if ended else record.rstrip(b"\r\n")
        if first:
            _check_paths_not_bytes(os.fsdecode(raw))
        first, seen_nul = False, seen_nul or ended
        if raw:
            yield os.fsdecode(raw)


@dataclass(frozen=True)
class StdinWaits:
    """Among the paths: stdin has no more for the moment (its writer is slow, or a person
    types them); `ready(timeout)` says whether more came within `timeout` seconds."""

    descriptor: int

    def ready(self, timeout: float) -> bool:
        return _readable(self.descriptor, timeout)


def _records(stdin: IO[str], separator: bytes) -> Iterator[bytes | StdinWaits]:
    """stdin's bytes cut after each `separator` (the last record may lack it), taken as a pipe
    or terminal gives them, with a StdinWaits before each read that would wait for more."""
    source = stdin.buffer
    read = getattr(source, "read1", source.read)  # read1 keeps nothing back in the buffer
    descriptor = _descriptor(source)
    pending: list[bytes] = []  # the unended record's pieces, joined once: no copy per read
    while True:
        if descriptor is not None and not _readable(descriptor, 0):
            yield StdinWaits(descriptor)
            # Wait here (a non-blocking stdin would read as ended), but not past a held signal:
            # a SIGTERM swallowed as it landed left predict waiting for a stdin that stayed open.
            while not _readable(descriptor, SIGNAL_POLL_S):
                interrupts.raise_if_interrupted()
        data = read(1 << 16)
        if not data:
            break
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


# How images begin, as stdin's text shows them: PNG, JPEG.
_IMAGE_STARTS = ("\udc89PNG", "\udcff\udcd8\udcff")


def _check_paths_not_bytes(first_line: str) -> None:
    """`cat digit.png | mnistkit predict CKPT -` sends the image, where paths belong. A path
    list is text: no NUL, no control character first (gzip and zip files start with one), and
    not an image's first bytes."""
    first = first_line[:1]
    control = first < " " and first not in "\t\r\n"
    if "\x00" in first_line or (first and control) or first_line.startswith(_IMAGE_STARTS):
        kind = what_file_is(first_line.encode("utf-8", "surrogateescape")[:16])
        if kind is None and first_line.split("\x00", 1)[0].isprintable() and not control:
            raise MnistkitError(  # a path, then NUL: `find -print0`'s list
                "-: standard input holds paths ended by NUL bytes (find -print0); `-` reads one path "
                "per line, and with --null (-0) paths ended by NUL: mnistkit predict CKPT --null -"
            )
        kind = kind or "binary data"
        raise MnistkitError(
            f"-: standard input holds {kind}, not image paths; `-` reads paths, one per line "
            "(give an image by its path: mnistkit predict CKPT my-digit.png)"
        )


def load_one(path: str, preprocess: bool, style: str, **in_memory: Any) -> LoadedDigit:
    """One input as a LoadedDigit; `in_memory` is load_digit's `content` or `picture`, which
    `path` then names."""
    try:
        return LoadedDigit(path, load_digit(path, preprocess, style=style, **in_memory), None)
    except MnistkitError as error:
        return LoadedDigit(path, None, str(error))


def _load_chunk(paths: list[str], preprocess: bool, style: str) -> list[LoadedDigit]:
    return [load_one(path, preprocess, style) for path in paths]


def _loaded_here(
    paths: list[str], preprocess: bool, style: str, hand_off: bool
) -> Generator[list[LoadedDigit], None, list[str]]:
    """`paths` read in this process, in pieces of what was read within PIECE_S. With
    `hand_off`, reading stops once it has taken HAND_OFF_S and two or more paths are left;
    returns the paths not read."""
    piece: list[LoadedDigit] = []
    reading_s, piece_started = 0.0, time.monotonic()  # the caller's time between pieces is not reading
    for index, path in enumerate(paths):
        began = time.monotonic()
        piece.append(load_one(path, preprocess, style))
        now = time.monotonic()
        reading_s += now - began
        if hand_off and reading_s >= HAND_OFF_S and len(paths) - index > 2:
            yield piece
            return paths[index + 1 :]
        if now - piece_started >= PIECE_S:
            yield piece
            piece, piece_started = [], time.monotonic()
    if piece:
        yield piece
    return []


def _encoded_paths(paths: list[str]) -> bytes:
    """A chunk of paths as a worker gets it: their bytes, NUL between them."""
    return b"\0".join(os.fsencode(path) for path in paths)


def _load_encoded_chunk(request: bytes, preprocess: bool, style: str) -> bytes:
    """A worker's answer to `_encoded_paths`: each path's error (or null) as a JSON line, then
    the images that were read, as one .npy."""
    loaded = _load_chunk([os.fsdecode(path) for path in request.split(b"\0")], preprocess, style)
    images = [digit.image for digit in loaded if digit.image is not None]
    stacked = np.stack(images) if images else np.zeros((0, FRAME_PX, FRAME_PX), np.uint8)
    answer = io.BytesIO()
    answer.write(json.dumps([digit.error for digit in loaded]).encode("ascii") + b"\n")
    np.lib.format.write_array(answer, stacked, allow_pickle=False)
    return answer.getvalue()


def _decoded_chunk(paths: list[str], answer: bytes) -> list[LoadedDigit]:
    errors_line, _, array = answer.partition(b"\n")
    images = iter(np.lib.format.read_array(io.BytesIO(array), allow_pickle=False))
    return [
        LoadedDigit(path, None if error else next(images), error)
        for path, error in zip(paths, json.loads(errors_line), strict=True)
    ]


def load_digits(
    paths: Iterable[str | StdinWaits],
    preprocess: bool = True,
    workers: int | None = None,
    chunk_size: int = CHUNK_SIZE,
    style: str = DEFAULT_DATASET,
) -> Iterator[list[LoadedDigit]]:
    """Yield the inputs' images in input order, one chunk at a time, prepared as the dataset
    named by `style` made its images. A StdinWaits among `paths` ends a chunk, and every
    chunk before it is yielded before stdin is waited for; while more paths come, they are
    read as the workers work.

    A chunk goes to the workers in 2 x `workers` parts, so that they share its last chunk
    evenly, and comes back whole (its rows at once, as few matrix products in this process as
    whole chunks take: each product's idle BLAS threads spin against the workers); what large
    pictures leave from reading here comes back part by part. In flight are at most two
    chunks' paths per worker and one chunk more, so memory does not grow with the number of
    paths.
    """
    workers = worker_pool.count() if workers is None else workers
    chunks = _chunked(paths, chunk_size)
    pool = None
    # Groups of parts, each part's paths with its ticket: a group's images are yielded together.
    in_flight: collections.deque[list[tuple[list[str], int]]] = collections.deque()
    try:
        upcoming = next(chunks, None)
        while upcoming is not None:
            chunk, wait = upcoming
            upcoming = None if wait else next(chunks, None)
            last = upcoming is None and not wait
            read_here = pool is None and (workers < 2 or last or (wait and len(chunk) <= workers))
            if chunk and read_here:
                # Alone, or a few before a wait; what reading here leaves goes to the workers.
                chunk = yield from _loaded_here(chunk, preprocess, style, hand_off=workers >= 2)
            if chunk:
                if pool is None:
                    pool = _start_pool(workers, preprocess, style)
                parts = _submitted(pool, chunk, 2 * workers)
                in_flight.extend([[part] for part in parts] if read_here else [parts])
                while (
                    sum(len(paths) for group in in_flight for paths, _ in group) >= 2 * workers * chunk_size
                ):
                    yield _oldest_answer(pool, in_flight)
            if wait:
                while in_flight:  # each chunk done before stdin's next paths come: its rows now
                    if all(pool.done(ticket) for _, ticket in in_flight[0]):
                        yield _oldest_answer(pool, in_flight)
                    elif wait.ready(SIGNAL_POLL_S):
                        break  # more paths: read them while the workers work
                upcoming = next(chunks, None)
        while in_flight:
            yield _oldest_answer(pool, in_flight)
    finally:
        if pool is not None:
            pool.close()


def _submitted(pool: worker_pool.WorkerPool, paths: list[str], parts: int) -> list[tuple[list[str], int]]:
    """`paths` handed to the workers in `parts` parts as equal as can be, each with its ticket."""
    size = -(-len(paths) // parts)
    return [
        (paths[start : start + size], pool.submit(_encoded_paths(paths[start : start + size])))
        for start in range(0, len(paths), size)
    ]


def _oldest_answer(pool: worker_pool.WorkerPool, in_flight: collections.deque) -> list[LoadedDigit]:
    """The images of the oldest group of parts in flight, waited for."""
    return [
        digit for paths, ticket in in_flight.popleft() for digit in _decoded_chunk(paths, pool.result(ticket))
    ]


def _start_pool(workers: int, preprocess: bool, style: str) -> worker_pool.WorkerPool:
    """Workers that read chunks of paths, naming settings in errors as this process does."""
    return worker_pool.WorkerPool(
        workers,
        functools.partial(_load_encoded_chunk, preprocess=preprocess, style=style),
        functools.partial(terms.use_command_line_terms, terms.on_command_line()),
    )


def _chunked(items: Iterable[str | StdinWaits], size: int) -> Iterator[tuple[list[str], StdinWaits | None]]:
    """Chunks of at most `size` paths, each with the StdinWaits that came right after it, if
    one did (then perhaps with no paths: stdin waited again before a whole path came)."""
    chunk: list[str] = []
    for item in items:
        if not isinstance(item, StdinWaits) and len(chunk) < size:
            chunk.append(item)
            continue
        wait = item if isinstance(item, StdinWaits) else None
        if chunk or wait:
            yield chunk, wait
        chunk = [] if wait else [item]
    if chunk:
        yield chunk, None
