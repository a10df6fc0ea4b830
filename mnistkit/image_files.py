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
import time
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from mnistkit import terms, worker_pool
from mnistkit.datasets import DEFAULT_DATASET
from mnistkit.errors import MnistkitError
from mnistkit.images import FRAME_PX, load_digit
from mnistkit.stdin_inputs import SIGNAL_POLL_S, PipedImage, StdinWaits

CHUNK_SIZE = 256
# A chunk read in this process is handed on in pieces, one as soon as this long has passed
# since the last: the rows of large pictures come as they are read, not a chunk's worth at once.
PIECE_S = 0.2
# Pictures read here for this long (large ones, slow to decode) hand the rest of their chunk
# to the workers: starting them costs milliseconds (a forkserver's, a few tenths of a second).
HAND_OFF_S = 0.5


@dataclass
class LoadedDigit:
    """One input: its 28x28 image, or why it could not be read (`error` is `path: reason`)."""

    path: str
    image: np.ndarray | None
    error: str | None


def load_one(path: str, preprocess: bool, style: str, **in_memory: Any) -> LoadedDigit:
    """One input as a LoadedDigit; `in_memory` is load_digit's `content` or `picture`, which
    `path` then names."""
    try:
        return LoadedDigit(path, load_digit(path, preprocess, style=style, **in_memory), None)
    except MnistkitError as error:
        # load_digit names the file as given; a name that does not print on one line is
        # quoted, as in the row (a line break split the line in two).
        message, named = str(error), f"{path}: "
        if message.startswith(named):
            message = f"{shell_quoted(path)}: {message[len(named) :]}"
        return LoadedDigit(path, None, message)


_ESCAPES = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def shell_quoted(path: str) -> str:
    """`path` for a `path: reason` line: as it is where it prints on one line, else quoted as
    bash's $'...' (as GNU ls quotes it), which a shell reads back as the name. Written as it
    is, a line break split the line in two, and a byte that is not UTF-8 matched neither the
    name's bytes nor jsonl's `path`."""
    if path.isprintable():
        return path
    quoted = []
    for character in path:
        if character in _ESCAPES:
            quoted.append(_ESCAPES[character])
        elif 0xDC80 <= ord(character) <= 0xDCFF:  # a byte that is not UTF-8, as Python keeps it
            quoted.append(f"\\x{ord(character) - 0xDC00:02x}")
        elif not character.isprintable():
            quoted.extend(f"\\x{byte:02x}" for byte in character.encode("utf-8", "surrogatepass"))
        else:
            quoted.append(character)
    return "$'" + "".join(quoted) + "'"


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
    paths: Iterable[str | StdinWaits | PipedImage],
    preprocess: bool = True,
    workers: int | None = None,
    chunk_size: int = CHUNK_SIZE,
    style: str = DEFAULT_DATASET,
) -> Iterator[list[LoadedDigit]]:
    """Yield the inputs' images in input order, one chunk at a time, prepared as the dataset
    named by `style` made its images (a PipedImage as the image its name names). A StdinWaits among
    `paths` ends a chunk, and every
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
            if isinstance(wait, PipedImage):
                while in_flight:  # the paths before it answered first, in input order
                    yield _oldest_answer(pool, in_flight)
                yield [load_one(wait.name, preprocess, style, content=wait.content)]
            elif wait:
                while in_flight:  # each chunk done before stdin's next paths come: its rows now
                    if all(pool.done(ticket) for _, ticket in in_flight[0]):
                        yield _oldest_answer(pool, in_flight)
                    elif wait.ready(SIGNAL_POLL_S):
                        break  # more paths: read them while the workers work
            if wait:
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


def _chunked(
    items: Iterable[str | StdinWaits | PipedImage], size: int
) -> Iterator[tuple[list[str], StdinWaits | PipedImage | None]]:
    """Chunks of at most `size` paths, each with the StdinWaits or PipedImage that came right
    after it, if one did (then perhaps with no paths: stdin waited again before a whole path
    came)."""
    chunk: list[str] = []
    for item in items:
        if isinstance(item, str) and len(chunk) < size:
            chunk.append(item)
            continue
        wait = None if isinstance(item, str) else item
        if chunk or wait:
            yield chunk, wait
        chunk = [] if wait else [item]
    if chunk:
        yield chunk, None
