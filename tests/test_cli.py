"""The command line as a whole: help everywhere, examples, and no jax on the light paths."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from mnistkit.cli import cli

JAX_FREE_COMMANDS = ("fetch", "parse-to-npz", "predict", "eval", "info", "render-samples")


def _imports_jax(args: list[str]) -> tuple[int, bool]:
    code = (
        "import sys\n"
        "from mnistkit.cli import cli\n"
        "code = 0\n"
        "try:\n"
        f"    cli.main(args={args!r}, prog_name='mnistkit')\n"
        "except SystemExit as stop:\n"
        "    code = stop.code\n"
        "print('JAX' if 'jax' in sys.modules else 'NOJAX', code)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    verdict, exit_code = result.stdout.split()[-2:]
    return int(exit_code), verdict == "NOJAX"


def test_top_level_help_lists_every_stage_without_importing_jax() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in ("fetch", "parse-to-npz", "train", "eval", "predict", "render-samples"):
        assert name in result.output
    assert _imports_jax(["--help"]) == (0, True)


@pytest.mark.parametrize("command", sorted(cli.commands))
def test_every_command_has_help_with_an_example(command: str) -> None:
    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert f"mnistkit {command}" in result.output, "help should show an example invocation"


@pytest.mark.parametrize("command", JAX_FREE_COMMANDS)
def test_light_commands_start_without_jax(command: str) -> None:
    assert _imports_jax([command, "--help"]) == (0, True)


def test_python_dash_m_runs_the_same_program() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mnistkit", "--version"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    assert "mnistkit" in result.stdout


def test_unknown_command_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["frobnicate"])
    assert result.exit_code == 2
