"""How a message names a setting: as the command's option (`--batch-size 64`) while a
`mnistkit` command runs, as the Python keyword (`batch_size=64`) anywhere else.

The checks are shared by the commands and the Python API (TrainConfig's, the pictures',
predict's), so each names its setting through `setting` and reads right to either caller.
Pure Python: `--help` imports it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

_UNSET = object()
_on_command_line = False


@contextlib.contextmanager
def command_line_terms() -> Iterator[None]:
    """Settings named as the commands' options while this lasts: the `mnistkit` group runs
    each command in it."""
    before = _on_command_line
    use_command_line_terms(True)
    try:
        yield
    finally:
        use_command_line_terms(before)


def use_command_line_terms(on: bool) -> None:
    """From now on, settings are named as options (or not): predict's workers take their
    parent's terms this way."""
    global _on_command_line
    _on_command_line = on


def on_command_line() -> bool:
    return _on_command_line


def setting(name: str, value: object = _UNSET) -> str:
    """The setting `name` (a keyword, as `batch_size`), alone or with a value: `--batch-size`
    or `batch_size`; `--model cnn` or `model="cnn"`; `--lr 0.5` or `lr=0.5`;
    `--no-preprocess` or `preprocess=False`."""
    if not _on_command_line:
        return name if value is _UNSET else f"{name}={_as_python(value)}"
    option = "--" + name.replace("_", "-")
    if value is _UNSET:
        return option
    if isinstance(value, bool):
        return option if value else "--no-" + option[2:]
    return f"{option} {_as_typed(value)}"


def _as_python(value: object) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    return format(value, "g") if isinstance(value, float) else repr(value)


def _as_typed(value: object) -> str:
    """As one would type it after the option: 0.001, 128,64, cnn."""
    if isinstance(value, tuple | list):
        return ",".join(_as_typed(item) for item in value)
    return format(value, "g") if isinstance(value, float) else str(value)
