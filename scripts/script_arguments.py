"""Argument types the measuring scripts share: a bad value is argparse's usage error at once,
not a traceback after minutes of work."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """A whole number, 1 or more."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number, 1 or more, got {text!r}")
    return int(text)
