"""How a message names a setting: as the command's option (`--batch-size 64`) while a
`mnistkit` command runs, as the Python keyword (`batch_size=64`) anywhere else.

The checks are shared by the commands and the Python API (TrainConfig's, the pictures',
predict's), so each names its setting through `setting` and reads right to either caller.
The terms are a context variable: a command running in one thread (`serve` started from a
notebook) leaves the Python calls of the others in Python's terms. Pure Python: `--help`
imports it.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

_UNSET = object()
_on_command_line = contextvars.ContextVar("mnistkit_command_line_terms", default=False)


@contextlib.contextmanager
def command_line_terms() -> Iterator[None]:
    """Settings named as the commands' options while this lasts: the `mnistkit` group runs
    each command in it."""
    token = _on_command_line.set(True)
    try:
        yield
    finally:
        _on_command_line.reset(token)


def use_command_line_terms(on: bool) -> None:
    """From now on, in this thread, settings are named as options (or not): predict's
    workers take their parent's terms this way."""
    _on_command_line.set(on)


def on_command_line() -> bool:
    return _on_command_line.get()


def setting(name: str, value: object = _UNSET) -> str:
    """The setting `name` (a keyword, as `batch_size`), alone or with a value, in the terms of
    whoever called: `option` in a command, `keyword` from Python."""
    return (option if _on_command_line.get() else keyword)(name, value)


def option(name: str, value: object = _UNSET) -> str:
    """`--batch-size`, `--model cnn`, `--lr 0.5`, `--hidden 128,64`; a flag's True is `--flag`
    and its False `--no-flag` (for the flags that have one: `--no-preprocess`)."""
    flag = "--" + name.replace("_", "-")
    if value is _UNSET:
        return flag
    if isinstance(value, bool):
        return flag if value else "--no-" + flag[2:]
    return f"{flag} {_as_typed(value)}"


def keyword(name: str, value: object = _UNSET) -> str:
    """`batch_size`, `model="cnn"`, `lr=0.5`, `hidden=(128, 64)`, `preprocess=False`."""
    if value is _UNSET:
        return name
    return f'{name}="{value}"' if isinstance(value, str) else f"{name}={value}"


def _as_typed(value: object) -> str:
    """As one would type it after the option: 0.001, 128,64, cnn."""
    if isinstance(value, tuple | list):
        return ",".join(_as_typed(item) for item in value)
    return str(value)
