"""The `mnistkit` command (and `python -m mnistkit`): signal handling first, then the CLI.

The handlers go in before click and the commands are imported, so a Ctrl-C at any moment
after the interpreter starts ends in one line and status 130 (143 for SIGTERM).
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import io
import os
import signal
import sys


class _ClosedStream(io.RawIOBase):
    """A standard stream the command was started without (`>&-`, `<&-`), where Python leaves
    None: writing fails as the closed descriptor would (EBADF: one line, exit 1, as `ls >&-`
    does), and reading says that standard input is closed."""

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        from mnistkit.errors import MnistkitError

        raise MnistkitError("-: cannot read: standard input is closed (the command was started with <&-)")

    def write(self, data) -> int:
        raise OSError(errno.EBADF, os.strerror(errno.EBADF))


def _hold_closed_descriptors() -> None:
    """Put /dev/null on the standard descriptors the command was started without, so that no
    file it opens takes their number, and C code writing to them writes nowhere, not into
    the checkpoint. Python's own streams for them stay as below."""
    for descriptor in (0, 1, 2):
        try:
            os.fstat(descriptor)
        except OSError:
            devnull = os.open(os.devnull, os.O_RDWR)
            if devnull != descriptor:
                os.dup2(devnull, descriptor)
                os.close(devnull)


_ended_by: list[int] = []  # the signal (SIGINT, SIGTERM, SIGHUP, SIGPIPE) that ended the command


def _die_of_the_signal() -> None:
    """The last exit hook (registered first): a command a signal ended dies of it, once Python
    has run the others (jax's among them). Its status reads 128 + N all the same, but bash
    goes on with a loop (`for f in *; do mnistkit ...; done`) past a Ctrl-C its command
    took and exited 130 from, and xargs starts its next command after an exit 141 where it
    stops at one that SIGPIPE killed."""
    if not _ended_by:
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a reader gone: what is left goes nowhere
            stream.flush()
    signal.signal(_ended_by[0], signal.SIG_DFL)
    os.kill(os.getpid(), _ended_by[0])


def main() -> None:
    from mnistkit import interrupts
    from mnistkit.errors import EXIT_BROKEN_PIPE, Interrupted

    atexit.register(_die_of_the_signal)
    _hold_closed_descriptors()
    if sys.stderr is None:  # `2>&-`: messages go nowhere, exit statuses still tell
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 (the process's own stream)
    if sys.stdout is None:
        sys.stdout = io.TextIOWrapper(_ClosedStream(), write_through=True)  # unbuffered: fails at once
    if sys.stdin is None:
        sys.stdin = io.TextIOWrapper(io.BufferedReader(_ClosedStream()))
    interrupts.install()
    try:
        from mnistkit.cli import cli

        interrupts.raise_if_interrupted()  # a signal swallowed while the modules loaded
        try:
            cli(prog_name="mnistkit")
        except SystemExit as done:
            if done.code in (0, None):  # one swallowed later, where nothing looked for it
                interrupts.raise_if_interrupted()
            if done.code == EXIT_BROKEN_PIPE:  # a reader that stopped early
                _ended_by.append(signal.SIGPIPE)
            raise
    except (Interrupted, RuntimeError) as error:
        # Python 3.11 wraps what a class's __set_name__ raises in a RuntimeError: a signal that
        # lands while a dataclass is being made, as the modules load, arrives wrapped.
        stop = error if isinstance(error, Interrupted) else error.__cause__
        if not isinstance(stop, Interrupted):
            raise
        try:
            print(stop.line(), file=sys.stderr, flush=True)
        except OSError:  # stderr's reader is gone (`2>&1 | head -1`): the status still tells
            sys.stderr = open(os.devnull, "w")  # noqa: SIM115 (so that exiting flushes nothing there)
        _ended_by.append(stop.signal_number)
        sys.exit(stop.exit_code)
    finally:
        interrupts.uninstall()


if __name__ == "__main__":
    main()
