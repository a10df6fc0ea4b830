"""Worker processes for the work one Python process can't spread over cores (Pillow
decoding, numpy preprocessing): requests in, results back in the order they were given.

Each worker has a connection of its own, so one that dies (the OOM killer, `kill`, a
terminal's signal to the whole group) is seen at once as the end of its connection. With
one result pipe for all workers (concurrent.futures), a worker killed halfway through
sending a result leaves its parent waiting forever for the rest, and a shutdown waiting on
that. An answer is read as its bytes arrive, never waiting on the rest: a worker stopped
halfway through one (SIGSTOP) leaves Ctrl-C working. Stopping early kills the workers and waits
for nothing they hold. Messages are bytes, each after its length: the caller encodes them (no
pickle).
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import socket
import struct
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from mnistkit import interrupts
from mnistkit.errors import Interrupted, MnistkitError

# How often a wait for results looks for a held Ctrl-C or SIGTERM: one that Python swallowed
# (`interrupts`) is taken only there.
SIGNAL_POLL_S = 0.05
ORPHAN_POLL_S = 0.5  # how often a forked worker looks whether its parent is still there
END_WAIT_S = 5.0  # how long a worker sent SIGTERM at close gets before SIGKILL
_ANSWERED, _FAILED = b"\x00", b"\x01"  # an answer's first byte
_LENGTH = struct.Struct("!Q")  # a message's length in bytes, sent before it
_READ_BYTES = 1 << 20  # the most one read takes from a socket


class _Incoming:
    """A message as its bytes arrive: its length first, then the bytes themselves."""

    def __init__(self) -> None:
        self.buffer = bytearray(_LENGTH.size)
        self.filled = 0
        self.sized = False

    def read_from(self, connection: socket.socket) -> bytearray | None:
        """Take what `connection` holds now, without waiting; the whole message once it is
        here, else None. EOFError where the other end closed first."""
        view = memoryview(self.buffer)
        while True:
            if self.filled == len(self.buffer):
                if self.sized:
                    return self.buffer
                (length,) = _LENGTH.unpack(self.buffer)
                self.buffer, self.filled, self.sized = bytearray(length), 0, True
                view = memoryview(self.buffer)
                continue
            try:
                count = connection.recv_into(
                    view[self.filled :], min(_READ_BYTES, len(self.buffer) - self.filled), socket.MSG_DONTWAIT
                )
            except BlockingIOError:
                return None
            if count == 0:
                raise EOFError
            self.filled += count


def _send(connection: socket.socket, *parts: bytes) -> None:
    """One message of `parts`, after its length; an OSError, not SIGPIPE, where the other end
    has closed."""
    connection.sendall(_LENGTH.pack(sum(len(part) for part in parts)), socket.MSG_NOSIGNAL)
    for part in parts:
        connection.sendall(part, socket.MSG_NOSIGNAL)


def _socket_pair() -> tuple[socket.socket, socket.socket]:
    """Two connected sockets that wait without a time limit, whatever a caller gave
    socket.setdefaulttimeout(): with one, a read that finds nothing yet waits for it and then
    raises TimeoutError, where MSG_DONTWAIT should return at once."""
    pair = socket.socketpair()
    for end in pair:
        end.settimeout(None)
    return pair


def _receive(connection: socket.socket) -> bytes:
    """The next message, waited for (a worker's read of its request)."""
    from multiprocessing.connection import wait

    incoming = _Incoming()
    while (message := incoming.read_from(connection)) is None:
        wait([connection])
    return bytes(message)


@dataclass
class _Worker:
    process: Any  # multiprocessing's Process
    connection: socket.socket  # the parent's end of the socket pair it shares with the worker
    answer: _Incoming | None = None  # its answer as it arrives, while it has a request


class WorkerPool:
    """`count` processes that each answer a request (bytes) with `work(request)` (bytes), after
    `initializer()` once. `submit` queues a request and returns its ticket; `result(ticket)`
    waits for that answer; `close()` ends the workers whatever they were doing."""

    def __init__(
        self, count: int, work: Callable[[bytes], bytes], initializer: Callable[[], None] | None = None
    ) -> None:
        import multiprocessing  # here: one image should not pay for these imports

        context = multiprocessing.get_context(start_method())
        self._workers: list[_Worker] = []
        self._idle: collections.deque[_Worker] = collections.deque()  # the longest idle first
        self._busy: dict[socket.socket, tuple[_Worker, int]] = {}  # connection -> its worker, its ticket
        self._queued: collections.deque[tuple[int, bytes]] = collections.deque()
        self._results: dict[int, bytes] = {}
        self._tickets = 0
        # A SIGTERM this process came with ignored (`trap '' TERM`) stays ignored in the workers
        # too: one sent to the whole group killed them, and the caller took their end for its own.
        self._term_ignored = signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
        try:
            for _ in range(count):
                with interrupts.deferred(), _signals_blocked():
                    connection, worker_end = _socket_pair()
                    with worker_end:  # the worker's end is the worker's alone
                        try:
                            process = context.Process(
                                target=_serve,
                                args=(worker_end, work, initializer, self._term_ignored),
                                daemon=True,
                            )
                            process.start()
                        except BaseException:
                            connection.close()
                            raise
                    self._workers.append(_Worker(process, connection))
                    self._idle.append(self._workers[-1])
        except BaseException:
            self.close()
            raise

    def submit(self, request: bytes) -> int:
        ticket, self._tickets = self._tickets, self._tickets + 1
        self._queued.append((ticket, request))
        with interrupts.deferred():
            self._dispatch()
        return ticket

    def done(self, ticket: int) -> bool:
        """Whether `ticket`'s result is here, taking every result that is ready without waiting."""
        with interrupts.deferred():
            self._take(0)
        return ticket in self._results

    def result(self, ticket: int) -> bytes:
        """`ticket`'s result, waited for with signals held and taken every SIGNAL_POLL_S."""
        with interrupts.deferred():
            while ticket not in self._results:
                self._take(SIGNAL_POLL_S)
                interrupts.raise_if_interrupted()
        return self._results.pop(ticket)

    def close(self) -> None:
        """End every worker: SIGTERM (a worker ends at once, holding nothing worth keeping;
        SIGCONT, so that a stopped one does too), or SIGKILL where the workers ignore SIGTERM
        as this process does, then SIGKILL for one still there after END_WAIT_S. Connections
        close last: a worker writing to a closed one would print a traceback."""
        with interrupts.deferred():
            for worker in self._workers:
                if worker.process.exitcode is None:  # not reaped by this process
                    if self._term_ignored:
                        worker.process.kill()
                    else:
                        worker.process.terminate()
                    with contextlib.suppress(ProcessLookupError):  # a forkserver reaped it at SIGTERM
                        os.kill(worker.process.pid, signal.SIGCONT)
            for worker in self._workers:
                worker.process.join(END_WAIT_S)
                if worker.process.exitcode is None:
                    worker.process.kill()
                    worker.process.join()
                worker.connection.close()
            self._idle, self._busy = collections.deque(), {}

    def _dispatch(self) -> None:
        """Hand queued requests to idle workers. Only an idle worker gets one: it is reading,
        so the send never waits on a worker that waits to send its own result. A request is
        sent whole (a chunk's paths, less than a socket holds)."""
        while self._idle and self._queued:
            worker = self._idle.popleft()
            ticket, request = self._queued.popleft()
            try:
                _send(worker.connection, request)
            except OSError:
                raise self._ended(worker) from None
            worker.answer = _Incoming()
            self._busy[worker.connection] = (worker, ticket)

    def _take(self, timeout_s: float) -> None:
        """Read what has arrived of the answers within `timeout_s`; the workers whose answers
        are whole take the next requests."""
        from multiprocessing.connection import wait

        for connection in wait(list(self._busy), timeout_s):
            worker, ticket = self._busy[connection]
            try:
                answer = worker.answer.read_from(connection)
            except (EOFError, OSError):
                raise self._ended(worker) from None
            if answer is None:
                continue
            del self._busy[connection]
            worker.answer = None
            if answer[:1] == _FAILED:
                raise RuntimeError(
                    f"worker process {worker.process.pid} failed:\n{answer[1:].decode(errors='replace')}"
                )
            self._results[ticket] = bytes(memoryview(answer)[1:])
            self._idle.append(worker)
        self._dispatch()

    def _ended(self, worker: _Worker) -> BaseException:
        """The error to raise for a worker whose connection closed under it, saying why it
        ended. A SIGINT, SIGTERM or SIGHUP that ended it (sent to the whole process group, as by
        `pkill`) stops the caller as one sent to it would."""
        interrupts.raise_if_interrupted()
        worker.process.join(END_WAIT_S)
        code = worker.process.exitcode
        if code is not None and -code in interrupts.STOP_SIGNALS:
            return Interrupted(-code)
        if code is not None and code < 0:
            how = f"killed by {signal.Signals(-code).name}"
        else:
            how = "still running" if code is None else f"exit status {code}"
        return MnistkitError(
            f"worker process {worker.process.pid} ended before it answered ({how}); "
            "the images it held were not read"
        )


def _serve(
    connection: socket.socket,
    work: Callable[[bytes], bytes],
    initializer: Callable[[], None] | None,
    term_ignored: bool,
) -> None:
    """A worker's life: answer requests until its parent ends it. An answer starts with
    _ANSWERED, or with _FAILED and the traceback of a bug, which the parent raises."""
    connection.settimeout(None)  # as _socket_pair's; a forkserver's child remade the socket
    _start_worker(term_ignored)
    if initializer is not None:
        initializer()
    while True:
        try:
            request = _receive(connection)
        except EOFError:  # the parent was killed: no one holds its end any more
            return
        try:
            answer = (_ANSWERED, work(request))
        except Exception:  # a bug: the parent raises it with this traceback
            answer = (_FAILED, traceback.format_exc().encode(errors="backslashreplace"))
        _send(connection, *answer)


def _start_worker(term_ignored: bool) -> None:
    """Leave SIGINT and SIGHUP to the parent, which stops the workers and cleans up, and end
    at SIGTERM, unless the parent ignores it. Standard output is /dev/null: a reader of the
    parent's output sees its end when the parent ends. And a worker whose parent is gone
    (killed outright) ends too, rather than wait for work forever."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the parent's too, as Ctrl-C is
    signal.signal(signal.SIGTERM, signal.SIG_IGN if term_ignored else signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, interrupts.STOP_SIGNALS)  # blocked since the fork
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


@contextlib.contextmanager
def _signals_blocked() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP blocked while a worker is forked, so that it never runs the parent's
    handler before its own are set (`_start_worker` unblocks them); the parent takes one that
    came meanwhile when they are unblocked."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, interrupts.STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def count() -> int:
    """The cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def workers_fork() -> bool:
    """Whether workers are forked. Forkserver and spawn workers import the caller's `__main__`
    again: a script without `if __name__ == "__main__":` would run again in each."""
    return start_method() == "fork"


def start_method() -> str | None:
    """fork starts workers in milliseconds; it is unsafe once other threads run in this
    process: jax's, or a caller's own. OpenBLAS stops its threads before each fork, under the
    feet of a thread inside a matrix product (a service's threads calling predict_images
    hung so, each of them in numpy)."""
    if sys.platform != "linux":
        return None
    return "forkserver" if "jax" in sys.modules or threading.active_count() > 1 else "fork"
