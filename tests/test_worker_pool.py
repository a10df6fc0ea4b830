"""The worker processes behind predict and eval: answers in order, and a worker that dies is
one error at once, never a wait for an answer that will not come."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import run_script, synthetic_arrays
from PIL import Image

from mnistkit.errors import Interrupted, MnistkitError
from mnistkit.image_files import _decoded_chunk, _load_encoded_chunk, load_digits
from mnistkit.worker_pool import WorkerPool

ANSWER_BYTES = 64 << 20  # far more than a socket holds: its sender waits for a reader


def _reversed(request: bytes) -> bytes:
    return request[::-1]


def _answer_after_marking(request: bytes) -> bytes:
    """Mark the file named by `request`, then answer with more bytes than a socket holds."""
    Path(os.fsdecode(request)).touch()
    return bytes(ANSWER_BYTES)


def _answering(pool: WorkerPool, marker: Path) -> tuple[int, object]:
    """Ask `pool` for `_answer_after_marking`'s answer; its ticket and worker once it answers."""
    ticket = pool.submit(os.fsencode(marker))
    deadline = time.monotonic() + 30
    while not marker.exists():
        assert time.monotonic() < deadline, "the worker never answered"
        time.sleep(0.01)
    (worker, _) = next(iter(pool._busy.values()))
    return ticket, worker


def _waited(call, timeout_s: float = 30):
    """`call()`'s result or exception, failing the test where it would hang instead."""
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["result"] = call()
        except BaseException as error:
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout_s)
    assert not thread.is_alive(), f"still waiting after {timeout_s} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def test_answers_come_back_in_the_order_asked_whichever_worker_gave_them() -> None:
    pool = WorkerPool(3, _reversed)
    try:
        tickets = [pool.submit(f"request {index}".encode()) for index in range(20)]
        assert [pool.result(ticket) for ticket in reversed(tickets)] == [
            f"request {index}".encode()[::-1] for index in reversed(range(20))
        ]
    finally:
        pool.close()
    assert pool._workers and not any(worker.process.is_alive() for worker in pool._workers)


def _failing(request: bytes) -> bytes:
    raise ZeroDivisionError(request.decode())


def test_a_bug_in_a_worker_is_raised_with_its_traceback_and_the_pool_still_closes() -> None:
    pool = WorkerPool(2, _failing)
    try:
        ticket = pool.submit(b"the request")
        with pytest.raises(
            RuntimeError, match=r"(?s)worker process \d+ failed:.*ZeroDivisionError: the request"
        ):
            _waited(lambda: pool.result(ticket))
    finally:
        _waited(pool.close)
    assert not any(worker.process.is_alive() for worker in pool._workers)


def test_a_worker_killed_halfway_through_its_answer_is_one_error_not_a_wait(tmp_path: Path) -> None:
    """The worker has sent part of its answer and waits for its reader when SIGKILL (the OOM
    killer) comes: concurrent.futures' pool waits forever there for the rest."""
    pool = WorkerPool(1, _answer_after_marking)
    try:
        ticket, worker = _answering(pool, tmp_path / "answering")
        time.sleep(0.3)  # its answer fills the socket; the rest waits for a reader
        os.kill(worker.process.pid, signal.SIGKILL)
        with pytest.raises(MnistkitError, match=rf"worker process {worker.process.pid} .*killed by SIGKILL"):
            _waited(lambda: pool.result(ticket))
    finally:
        _waited(pool.close)


def test_a_worker_ended_by_sigterm_stops_the_caller_as_sigterm_would(tmp_path: Path) -> None:
    """`pkill mnistkit` reaches predict's workers as well as predict."""
    pool = WorkerPool(2, _answer_after_marking)
    try:
        ticket, worker = _answering(pool, tmp_path / "answering")
        os.kill(worker.process.pid, signal.SIGTERM)
        with pytest.raises(Interrupted) as stopped:
            _waited(lambda: pool.result(ticket))
        assert stopped.value.signal_number == signal.SIGTERM
    finally:
        _waited(pool.close)


STOPPED_HALFWAY = """
import os, signal, socket, threading, time
from mnistkit import interrupts
from mnistkit.errors import Interrupted
from mnistkit.worker_pool import WorkerPool

interrupts.install()
def answer(request):
    return bytes(64 << 20)
pool = WorkerPool(1, answer)
ticket = pool.submit(b"")
connection = pool._workers[0].connection
while True:  # the worker has begun its answer: 64 MiB, far more than the socket holds
    try:
        connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        break
    except BlockingIOError:
        time.sleep(0.01)
worker = pool._workers[0].process
print(worker.pid, flush=True)
os.kill(worker.pid, signal.SIGSTOP)
threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
try:
    try:
        pool.result(ticket)
    finally:
        started = time.monotonic()
        pool.close()
except Interrupted as stop:
    seconds = round(time.monotonic() - started)
    print("taken", stop.exit_code, "and closed by", -worker.exitcode, "in", seconds, "s")
"""


def test_ctrl_c_is_taken_while_a_worker_is_stopped_halfway_through_its_answer() -> None:
    """A worker stopped (SIGSTOP) with part of its answer sent: the wait for the rest once
    held Ctrl-C until the worker went on. Now the wait takes it, and close ends the stopped
    worker by SIGTERM at once, not by SIGKILL after END_WAIT_S."""
    _, stdout, stderr = run_in_a_group_of_its_own(STOPPED_HALFWAY)
    assert stdout.splitlines()[1:] == [f"taken 130 and closed by {signal.SIGTERM} in 0 s"], stderr


TERM_IGNORED = """
import os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # as `trap '' TERM` starts the command
from mnistkit import interrupts
from mnistkit.worker_pool import WorkerPool

interrupts.install()
def answer(request):
    return request[::-1]
pool = WorkerPool(2, answer)
assert pool.result(pool.submit(b"ab")) == b"ba"
os.killpg(os.getpid(), signal.SIGTERM)  # to the whole group, as `kill -TERM -PGID` sends it
time.sleep(0.5)
print(pool.result(pool.submit(b"request")).decode(), flush=True)
started = time.monotonic()
pool.close()
print("closed by", -pool._workers[0].process.exitcode, "in", round(time.monotonic() - started), "s")
"""


def test_a_sigterm_the_caller_ignores_leaves_its_workers_working() -> None:
    """A command started with SIGTERM ignored leaves it ignored (`interrupts.install`), but its
    workers took it: a SIGTERM to the whole group killed them, and the caller stopped as if
    SIGTERM had ended it. They ignore it as well now, and close ends them with SIGKILL at once."""
    returncode, stdout, stderr = run_in_a_group_of_its_own(TERM_IGNORED)
    assert returncode == 0, stderr
    assert stdout.splitlines() == ["tseuqer", f"closed by {signal.SIGKILL} in 0 s"], stderr


def run_in_a_group_of_its_own(script: str) -> tuple[int, str, str]:
    """`script` run by Python in a process group of its own (for a SIGTERM to the group, and so
    that a worker a failure leaves stopped is killed with it): its status, stdout and stderr."""
    process = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        stdout, stderr = process.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
    return process.returncode, stdout.decode(), stderr.decode()


def _reversed_slowly(request: bytes) -> bytes:
    time.sleep(0.2)
    return request[::-1]


def test_a_default_socket_timeout_changes_nothing() -> None:
    """A notebook's socket.setdefaulttimeout() reached the pool's sockets: a worker idle for
    longer died of TimeoutError, and a wait for an answer longer than it was taken for a
    worker's end."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(0.05)
    try:
        pool = WorkerPool(1, _reversed_slowly)
    finally:
        socket.setdefaulttimeout(previous)
    try:
        time.sleep(0.2)  # idle for longer than the timeout
        assert _waited(lambda: pool.result(pool.submit(b"request"))) == b"tseuqer"
    finally:
        _waited(pool.close)


def test_an_answer_carries_each_images_pixels_and_each_failures_reason(tmp_path: Path) -> None:
    images = synthetic_arrays(1, 3)["test_images"]
    paths = []
    for index, image in enumerate(images):
        paths.append(str(tmp_path / f"{index}.png"))
        Image.fromarray(image).save(paths[-1])
    paths.insert(1, str(tmp_path / "missing \udcff.png"))  # a name that is not UTF-8
    answer = _load_encoded_chunk(b"\0".join(os.fsencode(path) for path in paths), False, "mnist")
    loaded = _decoded_chunk(paths, answer)
    assert [digit.path for digit in loaded] == paths
    assert loaded[1].image is None and loaded[1].error == f"$'{tmp_path}/missing \\xff.png': no such file"
    for digit, image in zip([loaded[0], *loaded[2:]], images, strict=True):
        assert digit.error is None
        np.testing.assert_array_equal(digit.image, image)


def test_load_digits_with_a_worker_killed_stops_with_one_error_and_leaves_no_worker(tmp_path: Path) -> None:
    digit = tmp_path / "digit.png"
    Image.fromarray(synthetic_arrays(1, 1)["test_images"][0]).save(digit)
    chunks = load_digits([str(digit)] * 40, workers=2, chunk_size=4)
    assert len(next(chunks)) == 4
    pool = chunks.gi_frame.f_locals["pool"]
    os.kill(pool._workers[0].process.pid, signal.SIGKILL)
    with pytest.raises(MnistkitError, match="killed by SIGKILL"):
        _waited(lambda: list(chunks))
    assert pool._workers and not any(worker.process.is_alive() for worker in pool._workers)


FORKS_WITH_THREADS = """
import threading
from mnistkit.worker_pool import start_method

print(start_method())
threading.Thread(target=threading.Event().wait, daemon=True).start()  # a service's thread
print(start_method())
"""


def test_workers_are_not_forked_while_other_threads_run() -> None:
    """OpenBLAS stops its threads before each fork: a thread inside a matrix product then
    waits for ever. A service's 8 threads calling predict_images hung so in 5 of 7 runs."""
    result = run_script(FORKS_WITH_THREADS)
    assert result.stdout == "fork\nforkserver\n", result.stderr


MANY_THREADS_PREDICTING = """
import sys
from concurrent.futures import ThreadPoolExecutor
import mnistkit

model = mnistkit.load(sys.argv[1])
paths = sys.argv[2:]
alone = [prediction.label for prediction in mnistkit.predict_images(model, paths)]
with ThreadPoolExecutor(8) as threads:
    calls = threads.map(lambda _: [p.label for p in mnistkit.predict_images(model, paths)], range(16))
    together = list(calls)
print(all(labels == alone for labels in together))
"""


def test_threads_reading_many_pictures_at_once_all_get_their_answers(
    large_digit_model: Path, tmp_path: Path
) -> None:
    """More pictures than a chunk start workers in each call; with fork, the threads' matrix
    products and the forks deadlocked (`predict_images` from a service's threads)."""
    images = synthetic_arrays(n_test=300, seed=3)["test_images"]
    paths = []
    for index, image in enumerate(images):
        paths.append(tmp_path / f"{index:03d}.png")
        Image.fromarray(image).save(paths[-1])
    result = run_script(MANY_THREADS_PREDICTING, large_digit_model, *paths, timeout=300)
    assert result.stdout == "True\n", result.stderr
