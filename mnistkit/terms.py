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
import difflib
import functools
import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

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


def check_keywords(
    options: Mapping[str, Any], known: Sequence[str], call: str, named: Sequence[str] = ()
) -> None:
    """A misspelt keyword (`epoch=3`, `learning_rate=0.1`, `verbos=False`) refused before any
    work, as Python refuses one, with the keyword likely meant among those `options` may hold
    (`known`) and the call's `named` parameters."""
    candidates = (*known, *named)
    for name in options:
        if name not in known:
            likely = [meant for meant in _LIKELY_MEANT.get(name, ()) if meant in candidates]
            guess = next(iter(likely or difflib.get_close_matches(name, candidates, n=1)), None)
            meant = f"; did you mean {guess}=?{_MEANING.get(guess, '')}" if guess else ""
            raise TypeError(f"{call} got an unexpected keyword argument {name!r}{meant}")


def keywords_checked(function: Callable[..., Any]) -> Callable[..., Any]:
    """`function` with a misspelt keyword (`evaluate(model, arrays, splt="train")`) refused as
    `check_keywords` refuses it, with the keyword likely meant: the functions that take
    `**options` check theirs, and those of fixed parameters said only "unexpected"."""
    parameters = inspect.signature(function).parameters.values()
    names = [parameter.name for parameter in parameters if parameter.kind in _KEYWORD_KINDS]

    @functools.wraps(function)
    def checked(*args: Any, **keywords: Any) -> Any:
        check_keywords(keywords, names, f"{function.__name__}()")
        return function(*args, **keywords)

    return checked


_KEYWORD_KINDS = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)

_LIKELY_MEANT = {  # names other libraries use
    "learning_rate": ("lr",),
    "num_epochs": ("epochs",),
    "n_epochs": ("epochs",),
    "hidden_sizes": ("hidden",),
    "n": ("count",),
    "num": ("count",),
    "validation_split": ("val_size",),  # Keras' fraction
    "val_split": ("val_size",),
}
_MEANING = {"val_size": " (a number of training images, as val_size=5000, not a fraction)"}
