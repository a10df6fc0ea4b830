"""The error types mnistkit raises on purpose.

`MnistkitError` is for bad input and failed I/O: the CLI prints its message as one line
and exits non-zero. Anything else escaping a command is a bug and keeps its traceback.
"""

from __future__ import annotations


class MnistkitError(Exception):
    """A problem the user can act on; the message names the file and the problem."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived; a BaseException so that only cleanup code catches it."""

    def __init__(self, signal_number: int) -> None:
        super().__init__(signal_number)
        self.signal_number = signal_number

    @property
    def exit_code(self) -> int:
        return 128 + self.signal_number
