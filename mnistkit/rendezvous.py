"""Gather the processes of a multi-process run before JAX does, and end them all when one dies.

`jax.distributed.initialize` aborts the process (a C++ stack trace, exit status 134) when
its peers do not all come in time, and a process blocked in a collective never learns
that a peer died. So the processes first meet on the coordinator's port themselves,
under their own timeout: process 0 listens, every other process connects (retrying until
the deadline) and says who it is, and process 0 answers once all have come, then closes
its listener for JAX's own service to take the port. The connections stay open as a
liveness channel: a thread in each process watches them, and when one closes without a
"done" (its process died, or stopped on an error), it prints one line and ends this
process too, since the main thread may be stuck in a collective inside XLA.

Messages are ASCII lines: `join ID COUNT` (to process 0), `go`, `missing IDS` or
`refused REASON` (from process 0), `stopped ID` (process 0 passing on a death), `done`.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Callable

from mnistkit.errors import MnistkitError

NO_CHECKPOINT = "no checkpoint written"
_CONNECT_RETRY_S = 0.2
_BIND_ADDRESS_ENV = "JAX_COORDINATOR_BIND_ADDRESS"


def split_address(address: str) -> tuple[str, int]:
    """HOST:PORT or [IPV6]:PORT as (host, port)."""
    match = re.fullmatch(r"\[([0-9a-fA-F:]+)\]:(\d{1,5})|([^\s:\[\]]+):(\d{1,5})", address)
    if match is None or int(match.group(2) or match.group(4)) > 65535:
        raise MnistkitError(f"--coordinator: expected HOST:PORT, got {address!r}")
    return match.group(1) or match.group(3), int(match.group(2) or match.group(4))


class _Channel:
    """A connection between two processes, carrying newline-ended messages."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._pending = b""

    def send(self, message: str) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(message.encode("ascii") + b"\n")

    def receive(self, deadline: float | None = None) -> str | None:
        """The next message; None once the other end has closed. TimeoutError at `deadline`
        (a time.monotonic() value; None waits for ever)."""
        while b"\n" not in self._pending:
            if deadline is None:
                self.sock.settimeout(None)
            else:
                remaining_s = deadline - time.monotonic()
                if remaining_s <= 0:
                    raise TimeoutError
                self.sock.settimeout(remaining_s)
            try:
                chunk = self.sock.recv(4096)
            except TimeoutError:
                raise
            except OSError:  # reset: the other process died
                chunk = b""
            if not chunk:
                return None
            self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        return line.decode("ascii", "replace")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def _stop_this_process(message: str) -> None:
    """os._exit, not an exception: the main thread may be blocked inside a collective.

    JAX's client may be logging the lost peer from C++ at this very moment. Its stderr goes to
    os.devnull first and this line to the stderr saved before, so that JAX's lines can come
    before it but never follow and bury it."""
    sys.stderr.flush()
    saved_stderr = os.dup(2)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
    os.write(saved_stderr, f"Error: {message}\n".encode())
    os._exit(1)


class Membership:
    """This process's open connections to the others: process 0 holds one per peer, every
    other process one to process 0."""

    def __init__(self, process_id: int, num_processes: int, channels: dict[int, _Channel]) -> None:
        self.process_id = process_id
        self.num_processes = num_processes
        self._channels = channels
        self._lock = threading.Lock()
        self._ended = False
        self._stopped = threading.Event()

    def watch(self, on_stop: Callable[[str], None] = _stop_this_process) -> None:
        """Watch the others from daemon threads; when one stops without saying "done",
        call `on_stop` with the line to show (by default: print it, exit status 1)."""
        for peer_id, channel in self._channels.items():
            thread = threading.Thread(
                target=self._watch_channel,
                args=(peer_id, channel, on_stop),
                name=f"mnistkit-watch-process-{peer_id}",
                daemon=True,
            )
            thread.start()

    def wait_for_a_stop(self, timeout_s: float) -> bool:
        """Whether the watcher sees another process stop within `timeout_s`."""
        return self._stopped.wait(timeout_s)

    def finish(self) -> None:
        """This process ends cleanly: tell the others, so that its exit is not taken for a death."""
        with self._lock:
            self._ended = True
            for channel in self._channels.values():
                channel.send("done")

    def leave(self) -> None:
        """This process ends of a stop of its own (Ctrl-C, SIGTERM), its checkpoint written:
        the others still see it go as a stop, but one that goes as well no longer ends this
        one with exit status 1 and a line of its own after the interrupt's."""
        with self._lock:
            self._ended = True

    def _watch_channel(self, peer_id: int, channel: _Channel, on_stop: Callable[[str], None]) -> None:
        while True:
            message = channel.receive()
            if message == "done":
                return
            if message is None:
                stopped_id = peer_id
                break
            stopped = re.fullmatch(r"stopped (\d+)", message)
            if stopped:
                stopped_id = int(stopped.group(1))
                break
        with self._lock:
            if self._ended:
                return
            self._ended = True
            for other_id, other in self._channels.items():
                if other_id != stopped_id:
                    other.send(f"stopped {stopped_id}")
        self._stopped.set()
        on_stop(
            f"process {stopped_id} of {self.num_processes} stopped; "
            "stopping this one too, without a final checkpoint"
        )


def gather(coordinator: str, num_processes: int, process_id: int, timeout_s: float) -> Membership:
    """Meet every process of the run at `coordinator` within `timeout_s`, or raise
    MnistkitError saying which are missing."""
    host, port = split_address(coordinator)
    deadline = time.monotonic() + timeout_s
    if process_id == 0:
        return _gather_as_coordinator(port, num_processes, deadline, timeout_s)
    return _join_coordinator(coordinator, host, port, num_processes, process_id, deadline, timeout_s)


def _listen(port: int) -> socket.socket:
    """Listen where JAX's service will: all interfaces, or $JAX_COORDINATOR_BIND_ADDRESS."""
    bind_address = os.environ.get(_BIND_ADDRESS_ENV)
    try:
        if bind_address:
            return socket.create_server(split_address(bind_address))
        if socket.has_dualstack_ipv6():
            return socket.create_server(("", port), family=socket.AF_INET6, dualstack_ipv6=True)
        return socket.create_server(("", port))
    except OSError as error:
        raise MnistkitError(
            f"--coordinator: process 0 cannot listen on port {port} ({error.strerror or error})"
        ) from None


def _gather_as_coordinator(port: int, num_processes: int, deadline: float, timeout_s: float) -> Membership:
    channels: dict[int, _Channel] = {}
    with _listen(port) as server:
        while len(channels) < num_processes - 1:
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                break
            server.settimeout(remaining_s)
            try:
                connection, _ = server.accept()
            except TimeoutError:
                break
            channel = _Channel(connection)
            try:
                hello = channel.receive(deadline)
            except TimeoutError:
                channel.close()
                break
            joined = re.fullmatch(r"join (\d+) (\d+)", hello or "")
            if joined is None:
                channel.close()  # not one of ours
                continue
            peer_id, peer_count = int(joined.group(1)), int(joined.group(2))
            problem = None
            if peer_count != num_processes:
                problem = (
                    f"process {peer_id} says --num-processes {peer_count}, process 0 says {num_processes}"
                )
            elif not 0 < peer_id < num_processes or peer_id in channels:
                problem = f"two processes say --process-id {peer_id}"
            if problem is not None:
                for other in (*channels.values(), channel):
                    other.send(f"refused {problem}")
                    other.close()
                raise MnistkitError(f"{problem}; {NO_CHECKPOINT}")
            channels[peer_id] = channel
    missing = [peer_id for peer_id in range(1, num_processes) if peer_id not in channels]
    if missing:
        for channel in channels.values():
            channel.send(f"missing {','.join(map(str, missing))}")
            channel.close()
        raise MnistkitError(
            f"process 0: {len(channels) + 1} of {num_processes} processes joined within {timeout_s:g} s "
            f"(missing: {', '.join(map(str, missing))}); {NO_CHECKPOINT}"
        )
    for channel in channels.values():
        channel.send("go")
    return Membership(0, num_processes, channels)


def _join_coordinator(
    coordinator: str,
    host: str,
    port: int,
    num_processes: int,
    process_id: int,
    deadline: float,
    timeout_s: float,
) -> Membership:
    me = f"process {process_id} of {num_processes}"
    channel = _Channel(_connect(coordinator, host, port, deadline, timeout_s, me))
    channel.send(f"join {process_id} {num_processes}")
    try:
        answer = channel.receive(deadline)
    except TimeoutError:
        channel.close()
        raise MnistkitError(
            f"{me}: the coordinator at {coordinator} did not start the run within {timeout_s:g} s "
            f"(other processes missing); {NO_CHECKPOINT}"
        ) from None
    if answer == "go":
        return Membership(process_id, num_processes, {0: channel})
    channel.close()
    if answer is not None and answer.startswith("missing "):
        missing = answer.removeprefix("missing ").replace(",", ", ")
        raise MnistkitError(f"{me}: process 0 gave up waiting (missing: {missing}); {NO_CHECKPOINT}")
    if answer is not None and answer.startswith("refused "):
        raise MnistkitError(f"{me}: {answer.removeprefix('refused ')}; {NO_CHECKPOINT}")
    raise MnistkitError(f"{me}: the coordinator at {coordinator} closed the connection; {NO_CHECKPOINT}")


def _connect(
    coordinator: str, host: str, port: int, deadline: float, timeout_s: float, me: str
) -> socket.socket:
    """Connect to process 0, retrying until the deadline (it may start after this one)."""
    while True:
        remaining_s = deadline - time.monotonic()
        try:
            return socket.create_connection((host, port), timeout=max(min(remaining_s, 5.0), 0.01))
        except OSError as error:
            reason = error.strerror or str(error) or type(error).__name__
        if remaining_s <= _CONNECT_RETRY_S:
            raise MnistkitError(
                f"{me}: no coordinator at {coordinator} within {timeout_s:g} s ({reason.lower()}); "
                f"{NO_CHECKPOINT}"
            )
        time.sleep(_CONNECT_RETRY_S)
