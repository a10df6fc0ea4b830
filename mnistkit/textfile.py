"""Small text inputs (labels, history, metrics) read with one-line errors."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from mnistkit.errors import MnistkitError


def read_text(path: str | os.PathLike[str], what: str) -> tuple[str, str]:
    """The text of `path` (`-` reads stdin) and a name for messages."""
    if str(path) == "-":
        return sys.stdin.read(), "<stdin>"
    try:
        return Path(path).read_text(encoding="utf-8"), str(path)
    except FileNotFoundError:
        raise MnistkitError(f"{path}: no such {what} file") from None
    except IsADirectoryError:
        raise MnistkitError(f"{path}: is a directory, expected a {what} file") from None
    except UnicodeDecodeError:
        raise MnistkitError(f"{path}: not a {what} file (not UTF-8 text)") from None
    except OSError as error:
        raise MnistkitError(f"{path}: cannot read: {error.strerror}") from None
