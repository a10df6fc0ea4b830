"""The error types mnistkit raises on purpose.

`MnistkitError` is for bad input and failed I/O: the CLI prints its message as one line
and exits non-zero. Anything else escaping a command is a bug and keeps its traceback.
"""

from __future__ import annotations

import signal

# A reader that stops early (`mnistkit predict ... | head -1`) ends the command as SIGPIPE ends
# other tools, with 128 + SIGPIPE; the command keeps SIGPIPE ignored, as Python does, so that
# `serve` outlives a client that goes away.
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE
# `eval --min-accuracy` that read everything and found the model below it: a CI gate tells a
# model too weak from a broken pipeline (1) by the exit status alone.
EXIT_BELOW_MIN_ACCURACY = 3


class MnistkitError(Exception):
    """A problem the user can act on; the message names the file and the problem."""


class BadArrays(MnistkitError, ValueError):
    """Arrays of the wrong shape, type or values: a ValueError too, as numpy's own checks
    raise, whichever of mnistkit's calls refused them."""


class UndecodableImage(MnistkitError):
    """Bytes that are no image Pillow can decode (as against an image with nothing to read)."""


class PictureTooLarge(MnistkitError):
    """A picture refused before it is drawn; the command names its output file."""


class Interrupted(BaseException):
    """SIGINT, SIGTERM or SIGHUP arrived; a BaseException so that only cleanup code catches it.

    `outcome` says what the interrupted work kept, for the one line the CLI prints; `process`,
    the other process of a multi-process run that the signal reached, when it was another.
    """

    def __init__(self, signal_number: int, outcome: str = "", process: int | None = None) -> None:
        super().__init__(signal_number)
        self.signal_number = signal_number
        self.outcome = outcome
        self.process = process

    @property
    def exit_code(self) -> int:
        return 128 + self.signal_number

    def line(self) -> str:
        name = signal.Signals(self.signal_number).name
        whom = "" if self.process is None else f"process {self.process} was "
        return f"mnistkit: {whom}interrupted by {name}" + (f"; {self.outcome}" if self.outcome else "")
