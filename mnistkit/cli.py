"""The `mnistkit` command line: a thin click skin over the library's plain functions.

Heavy modules (jax, the trainer) are imported inside the commands that need them, so
`mnistkit --help`, fetch, parse-to-npz, predict and eval start without jax.
"""

from __future__ import annotations

import signal
import sys

import click

from mnistkit import __version__
from mnistkit.errors import Interrupted, MnistkitError


class MnistkitGroup(click.Group):
    """Turns MnistkitError into one line on stderr and exit status 1, never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except MnistkitError as error:
            raise click.ClickException(str(error)) from None


@click.group(cls=MnistkitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mnistkit")
def cli() -> None:
    """MNIST from download to a trained JAX model and predictions on your own digits.

    Each stage reads files and writes files; chain them with make or a shell:

    \b
      mnistkit fetch --out data/raw
      mnistkit parse-to-npz data/raw -o data/mnist.npz
      mnistkit train data/mnist.npz -o models/model.safetensors
      mnistkit eval models/model.safetensors data/mnist.npz
      mnistkit predict models/model.safetensors my-digit.png
      mnistkit render-samples data/mnist.npz -o reports/samples.png

    Offline: MNISTKIT_MIRROR=file:///path/to/mnist mnistkit fetch
    """


def _raise_interrupted(signal_number: int, frame) -> None:
    raise Interrupted(signal_number)


def main() -> None:
    """Console entry point: SIGINT/SIGTERM unwind (removing temp files) and exit 130/143."""
    signal.signal(signal.SIGINT, _raise_interrupted)
    signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        cli(prog_name="mnistkit")
    except Interrupted as stop:
        name = signal.Signals(stop.signal_number).name
        click.echo(f"mnistkit: interrupted by {name}; no partial output was kept", err=True)
        sys.exit(stop.exit_code)
