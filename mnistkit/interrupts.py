"""SIGINT, SIGTERM and SIGHUP as the `Interrupted` exception, raised only where unwinding is safe.

A signal handler that raises lands its exception wherever the main thread happens to be:
inside one of jax's garbage-collector callbacks (where Python prints and swallows it, and
training goes on) or halfway through XLA's own bookkeeping (where the process later dies
with a segmentation fault). So commands that run jax hold signals inside `deferred()` and
call `raise_if_interrupted()` where stopping is clean, between compiled chunks of work.
Every other command takes the signal at once, which is safe in numpy and Pillow code.

A signal raised at once can still land in a weakref callback (importlib's module locks have
them, so any import): Python swallows the exception there and prints it. Every signal is
therefore held as well as raised, and one swallowed so is taken, quietly, at the next
`raise_if_interrupted()`.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

from mnistkit.errors import Interrupted

# train's line at Ctrl-C, SIGTERM or SIGHUP (a notebook's Stop), which it takes between chunks of
# work: within a compile, seconds passed without a word.
STOPPING_NOTICE = "stopping once the work in progress ends (a compile may take some seconds)"

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # Ctrl-C, `kill`, the terminal gone
_held_signals: list[int] = []
_deferring = False
_notice: str | None = None  # said at once when a first signal is held: the stop may take seconds
_CLEAR_LINE = "\r\x1b[K"  # a terminal's progress line, cleared before the notice


def _on_signal(signal_number: int, frame: object) -> None:
    if signal_number == signal.SIGHUP:
        _away_from_the_terminal()
    _held_signals.append(signal_number)
    if not _deferring:
        raise Interrupted(signal_number)
    if len(_held_signals) > 1:
        return
    if _announcer is not None:
        _announcer.announce()
    elif _notice is not None:
        # Written to the descriptor itself: the main thread may be inside sys.stderr's own
        # write, which a second write into its buffer from here would break (and sys.stderr
        # is None where descriptor 2 is closed).
        with contextlib.suppress(OSError):
            os.write(2, f"{_CLEAR_LINE if os.isatty(2) else ''}{_notice}\n".encode())


class _Announcer:
    """A notebook's notice, said on sys.stderr by a thread of its own once `announce()` is
    called: in a notebook, descriptor 2 is the server's terminal, not the cell, and the signal
    handler must not write to sys.stderr itself (the main thread may be inside its write)."""

    def __init__(self, notice: str) -> None:
        self._notice, self._closed = notice, False
        self._wanted = threading.Event()
        self._thread = threading.Thread(target=self._say, name="mnistkit stop notice", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def announce(self) -> None:
        self._wanted.set()

    def settle(self) -> None:
        """Wait for a notice already wanted to be said: said from its thread as the call wrote
        its own "interrupted" line, the two ran into one line."""
        if self._wanted.is_set() and self._thread.ident is not None:
            self._thread.join(timeout=1.0)

    def close(self) -> None:
        """Said by now, or never: nothing comes after the call's own last line. (A Stop raised
        inside start() may have left the thread started or not.)"""
        self._closed = True
        self._wanted.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=1.0)

    def _say(self) -> None:
        self._wanted.wait()
        if not self._closed and sys.stderr is not None:
            with contextlib.suppress(Exception):  # a closed or broken stream: the notice is a courtesy
                sys.stderr.write(f"{self._notice}\n")  # one write: a line of the main thread's
                sys.stderr.flush()  # may come at any moment


_announcer: _Announcer | None = None


_terminal_fds: list[int] = []  # the standard descriptors that were a terminal at install()


def _away_from_the_terminal() -> None:
    """A terminal that hung up fails every write to it (EIO): the lines still to come, and the
    checkpoint written after them, were lost with the process (exit 1). They go to /dev/null."""
    with contextlib.suppress(OSError):
        null = os.open(os.devnull, os.O_WRONLY)
        for fd in _terminal_fds:
            os.dup2(null, fd)
        os.close(null)


def on_the_terminal(write: Callable[[], None]) -> None:
    """Run `write`, a line for stderr. The kernel fails a hung-up terminal's writes (EIO) before
    it sends the SIGHUP, and a shell sends its jobs theirs later still, or never (`disown`):
    such a write ended train with exit 1, its last epoch unsaved. Its line is dropped, the
    terminal's descriptors go to /dev/null as the SIGHUP's would, and the run goes on until
    that signal, if any, stops it where stopping is clean."""
    try:
        write()
    except OSError as error:
        if error.errno != errno.EIO or not _terminal_fds:
            raise
        _away_from_the_terminal()


def _quiet_when_swallowed(unraisable: Any) -> None:
    """sys.unraisablehook: an `Interrupted` that Python swallowed stays held, unprinted."""
    if not isinstance(unraisable.exc_value, Interrupted):
        sys.__unraisablehook__(unraisable)


def install() -> None:
    """Turn SIGINT, SIGTERM and SIGHUP into `Interrupted` for this process (the CLI's first
    act). SIGHUP (the terminal or the ssh session gone) killed train without its last epoch's
    checkpoint, and predict with its temp file left. One that comes ignored stays ignored, as
    Python leaves SIGINT: nohup's SIGHUP, so that the run outlives its terminal, and the SIGINT
    that a shell script's background job (`mnistkit predict ... &`) starts without, so that a
    Ctrl-C for the script in the foreground leaves the job running."""
    sys.unraisablehook = _quiet_when_swallowed
    for signal_number in STOP_SIGNALS:
        if signal.getsignal(signal_number) is not signal.SIG_IGN:
            signal.signal(signal_number, _on_signal)
    if signal.getsignal(signal.SIGHUP) is _on_signal:
        _terminal_fds[:] = [fd for fd in (0, 1, 2) if os.isatty(fd)]


def uninstall() -> None:
    """Give the signals taken back their default action (the CLI's last act): a signal in the
    interpreter's shutdown, inside jax's exit hooks, then ends the process rather than raising
    in a hook, where Python would print and swallow it."""
    for signal_number in STOP_SIGNALS:
        if signal.getsignal(signal_number) is _on_signal:
            signal.signal(signal_number, signal.SIG_DFL)
    sys.unraisablehook = sys.__unraisablehook__


def settle_notice() -> None:
    """Before a Python caller's own line about a stop: the notice, if it is due, said first."""
    if _announcer is not None:
        _announcer.settle()


def raise_if_interrupted(outcome: str = "") -> None:
    """Raise `Interrupted` for the first signal held since `deferred()` began, if any; `outcome`
    says what the work kept."""
    if _held_signals:
        raise Interrupted(_held_signals[0], outcome)


@contextlib.contextmanager
def deferred(notice: str | None = None) -> Iterator[None]:
    """Hold signals inside the block; they surface at `raise_if_interrupted()` or at its end.
    A `notice` is the line stderr gets as the first one is held."""
    global _deferring, _notice
    outer, _deferring = _deferring, True
    outer_notice, _notice = _notice, notice if notice is not None else _notice
    try:
        yield
    finally:
        _deferring, _notice = outer, outer_notice
    raise_if_interrupted()


def held_for_stop(notice: str | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A decorator: the function, for a Python caller (a notebook's Stop), with SIGINT held as
    `deferred()` holds it for the CLI, taken at `raise_if_interrupted()` and raised from the
    call as KeyboardInterrupt; a `notice` is said on sys.stderr as the first Stop is held
    (unless the call is given verbose=False). The caller's own handler is back afterwards,
    and a signal that came after the last such call (the work was done) is dropped. Outside
    the main thread, where no signal arrives, or inside the CLI, which holds signals itself,
    nothing changes."""

    def decorator(function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def held(*args: Any, **kwargs: Any) -> Any:
            global _announcer, _deferring
            previous = signal.getsignal(signal.SIGINT)
            if threading.current_thread() is not threading.main_thread() or previous is _on_signal:
                return function(*args, **kwargs)
            previous_hook, outer, outer_announcer = sys.unraisablehook, _deferring, _announcer
            announcer = None
            try:
                # Held before the handler is ours (a Stop pending as it is set is raised by the
                # caller's own handler, in here), and given back before holding ends: a second
                # Stop between the two raised from this wrapper and left the notebook
                # mnistkit's handler.
                if notice is not None and kwargs.get("verbose", True) is not False:
                    announcer = _Announcer(notice)
                    announcer.start()
                sys.unraisablehook, _deferring, _announcer = _quiet_when_swallowed, True, announcer
                _held_signals.clear()  # one a Stop left as the last call ended
                signal.signal(signal.SIGINT, _on_signal)
                return function(*args, **kwargs)
            except Interrupted:
                raise KeyboardInterrupt from None
            finally:
                try:
                    signal.signal(
                        signal.SIGINT, previous if previous is not None else signal.default_int_handler
                    )
                finally:  # a Stop from here on is the caller's KeyboardInterrupt, raised past this
                    sys.unraisablehook, _deferring, _announcer = previous_hook, outer, outer_announcer
                    _held_signals.clear()
                    if announcer is not None:
                        announcer.close()

        return held

    return decorator
