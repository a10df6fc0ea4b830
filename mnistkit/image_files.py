"""Many image files to 28x28 images as a model's dataset made them, decoded in parallel, in
input order.

Images are decoded and preprocessed in a process pool once there are more than a
chunk of them (one image pays no pool start-up), in bounded chunks so that memory
stays flat for any number of inputs read from stdin. predict and eval share this;
numpy and Pillow only.
"""

from __future__ import annotations

import collections
import contextlib
import os
import select
import signal
import sys
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from mnistkit import interrupts, terms
from mnistkit.datasets import DEFAULT_DATASET
from mnistkit.errors import MnistkitError
from mnistkit.images import load_digit
from mnistkit.inputs import what_file_is

if TYPE_CHECKING:
    from concurrent.futures import Future

CHUNK_SIZE = 256
# How often a wait (for the pool, for stdin's next paths) looks for a held Ctrl-C or SIGTERM:
# one that Python swallowed (`interrupts`) is taken only there.
SIGNAL_POLL_S = 0.05
ORPHAN_POLL_S = 0.5  # how often a forked worker looks whether its parent is still there
_POOL_SIGNALS = {signal.SIGINT, signal.SIGTERM}

# In a worker: the pool's flag, set when its parent stops early (Ctrl-C, an error, a reader
# that left), so the chunk at hand ends after the image at hand instead of after all 256.
# A flag in shared memory with no lock: a worker killed while reading it holds nothing.
_stop_flag: Any = None


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
    """The chunk's images; cut short once the parent has stopped, which reads no more."""
    loaded = []
    for path in paths:
        if _stop_flag is not None and _stop_flag.value:
            break
        loaded.append(load_one(path, preprocess, style))
    return loaded


def _start_worker(stop_flag: Any, command_line: bool) -> None:
    """Workers name settings as the parent does (`terms`), leave SIGINT to the parent, which
    stops the pool and cleans up, and end at SIGTERM. Their standard output is /dev/null: a
    reader of the parent's output sees its end when the parent ends. And a worker whose
    parent is gone (killed outright) ends too, rather than wait for work forever."""
    global _stop_flag
    _stop_flag = stop_flag
    terms.use_command_line_terms(command_line)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _POOL_SIGNALS)  # blocked since the fork
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    import multiprocessing

    parent = multiprocessing.parent_process()
    threading.Thread(target=_end_with_parent, args=(parent.pid, parent.sentinel), daemon=True).start()


def _end_with_parent(parent: int, sentinel: int) -> None:
    """End once the parent has. Its pid and sentinel were taken before this worker began, so
    a parent killed before then is told too (the pid looked up here is init's by then). A
    forked worker also watches its own parent's pid: the sentinel's pipe stays open while any
    later child of the parent that inherited it lives; a forkserver's child has the
    forkserver as its parent and the sentinel alone."""
    from multiprocessing.connection import wait

    forked = os.getppid() == parent
    while not wait([sentinel], timeout=ORPHAN_POLL_S):
        if forked and os.getppid() != parent:
            break
    os._exit(1)


def worker_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


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

    At most two chunks per worker are in flight, so memory does not grow with the
    number of paths.
    """
    workers = worker_count() if workers is None else workers
    chunks = _chunked(paths, chunk_size)
    pool, stop_flag = None, None
    # Ctrl-C or SIGTERM raising inside the pool's own locks and queues can leave one held and
    # hang the shutdown, so signals are held while the pool is called and taken between calls.
    in_flight: collections.deque = collections.deque()
    try:
        upcoming = next(chunks, None)
        while upcoming is not None:
            chunk, wait = upcoming
            upcoming = None if wait else next(chunks, None)
            last = upcoming is None and not wait
            if chunk and pool is None and (workers < 2 or last or (wait and len(chunk) <= workers)):
                yield _load_chunk(chunk, preprocess, style)  # alone, or a few before a wait: here
            elif chunk:
                if pool is None:
                    pool, stop_flag = _start_pool(workers)
                with interrupts.deferred(), _signals_blocked():
                    in_flight.append(pool.submit(_load_chunk, chunk, preprocess, style))
                while len(in_flight) >= 2 * workers:
                    yield _result(in_flight.popleft())
            if wait:
                while in_flight:  # each chunk done before stdin's next paths come: its rows now
                    if in_flight[0].done():
                        yield _result(in_flight.popleft())
                    elif wait.ready(SIGNAL_POLL_S):
                        break  # more paths: read them while the workers work
                upcoming = next(chunks, None)
        while in_flight:
            yield _result(in_flight.popleft())
    finally:
        if pool is not None:
            with interrupts.deferred():
                stop_flag.value = 1
                pool.shutdown(wait=True, cancel_futures=True)


def _start_pool(workers: int) -> tuple[Any, Any]:
    """A pool of `workers` processes and the flag that tells them to stop early."""
    import multiprocessing  # here, not at the top: one image should not pay for the pool's imports
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context(_start_method())
    stop_flag = context.RawValue("b", 0)
    pool = ProcessPoolExecutor(
        workers, mp_context=context, initializer=_start_worker, initargs=(stop_flag, terms.on_command_line())
    )
    return pool, stop_flag


@contextlib.contextmanager
def _signals_blocked() -> Iterator[None]:
    """SIGINT and SIGTERM blocked while the pool may fork its workers, so that a worker never
    runs the parent's handler before its own are set (`_start_worker` unblocks them); the
    parent takes one that came meanwhile when they are unblocked."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _POOL_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _result(future: Future) -> list[LoadedDigit]:
    """The future's result, waited for with signals held and taken every SIGNAL_POLL_S."""
    # Not the builtin TimeoutError: Python 3.10's futures raise their own.
    from concurrent.futures import TimeoutError as WaitTimedOut

    with interrupts.deferred():
        while True:
            try:
                return future.result(timeout=SIGNAL_POLL_S)
            except WaitTimedOut:
                interrupts.raise_if_interrupted()


def workers_fork() -> bool:
    """Whether a pool's workers are forked. Forkserver and spawn workers import the caller's
    `__main__` again: a script without `if __name__ == "__main__":` would run again in each."""
    return _start_method() == "fork"


def _start_method() -> str | None:
    """fork starts workers in milliseconds; it is unsafe once jax's threads run in this process."""
    if sys.platform != "linux":
        return None
    return "forkserver" if "jax" in sys.modules else "fork"


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
