"""The `mnistkit` command (and `python -m mnistkit`): signal handling first, then the CLI.

The handlers go in before click and the commands are imported, so a Ctrl-C at any moment
after the interpreter starts ends in exit 130 (143 for SIGTERM) and one line.
"""

from __future__ import annotations

import errno
import io
import os
import sys
from pathlib import Path


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


def main() -> None:
    from mnistkit import interrupts
    from mnistkit.errors import Interrupted

    if sys.stdout is None:
        sys.stdout = io.TextIOWrapper(_ClosedStream(), write_through=True)  # unbuffered: fails at once
    if sys.stdin is None:
        sys.stdin = io.TextIOWrapper(io.BufferedReader(_ClosedStream()))
    interrupts.install()
    try:
        from mnistkit.cli import cli

        cli(prog_name="mnistkit")
    except Interrupted as stop:
        print(stop.line(), file=sys.stderr, flush=True)
        sys.exit(stop.exit_code)
    except OSError as error:  # `mnistkit --help >&-`: the group's own options write before its handler
        if error.errno != errno.EBADF or error.filename is not None:
            raise
        from mnistkit.atomic import STDOUT, describe_write_error

        print(f"Error: {describe_write_error(Path(STDOUT), error)}", file=sys.stderr, flush=True)
        sys.exit(1)
    finally:
        interrupts.uninstall()


if __name__ == "__main__":
    main()
