"""The command line as a whole: help everywhere, examples, and no jax on the light paths."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner
from conftest import REPO_ROOT

from mnistkit.cli import cli
from mnistkit.config import PRESETS, TrainConfig, config_from_options
from mnistkit.datasets import DATASETS

JAX_FREE_COMMANDS = ("fetch", "parse-to-npz", "predict", "eval", "info", "render-samples")


def _imports_jax(args: list[str]) -> tuple[int, bool]:
    exit_code, modules = _run_and_list_modules(args)
    return exit_code, "jax" not in modules


def _run_and_list_modules(args: list[str]) -> tuple[int, set[str]]:
    """Run `mnistkit ARGS` in a fresh interpreter; its exit code and the modules it imported."""
    code = (
        "import sys\n"
        "from mnistkit.cli import cli\n"
        "code = 0\n"
        "try:\n"
        f"    cli.main(args={args!r}, prog_name='mnistkit')\n"
        "except SystemExit as stop:\n"
        "    code = stop.code\n"
        "print(code, *sys.modules, file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    exit_code, *modules = result.stderr.splitlines()[-1].split()
    return int(exit_code), set(modules)


def test_top_level_help_lists_every_stage_without_importing_jax() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in ("fetch", "parse-to-npz", "train", "eval", "predict", "render-samples"):
        assert name in result.output
    assert _imports_jax(["--help"]) == (0, True)


def test_top_level_help_imports_neither_numpy_nor_jax() -> None:
    exit_code, modules = _run_and_list_modules(["--help"])
    assert exit_code == 0
    assert not {"numpy", "jax", "PIL"} & modules


def test_command_summaries_are_whole_sentences() -> None:
    """click cuts a long first sentence at 45 characters with '...'; every summary fits."""
    result = CliRunner().invoke(cli, ["--help"], terminal_width=80)
    listed = result.output.split("Commands:")[1]
    assert "..." not in listed
    for name, command in cli.commands.items():
        summary = " ".join(listed.split(f"  {name}  ", 1)[1].split("\n  ")[0].split())
        assert summary == command.short_help and summary.endswith("."), name


def test_train_help_shows_every_option_with_help_and_the_presets() -> None:
    result = CliRunner().invoke(cli, ["train", "--help"], terminal_width=200)
    assert result.exit_code == 0
    context = click.Context(cli.commands["train"])
    for param in cli.commands["train"].params:
        if isinstance(param, click.Option) and param.name != "help":
            _, help_text = param.get_help_record(context)
            assert help_text, f"{param.name} has no help"
    text = " ".join(result.output.split())
    for name, preset in PRESETS.items():
        assert f"{name}: {preset.summary}" in text
    assert "--epochs INTEGER Passes over the training images. [default: the preset's; mlp: 8]" in text


def test_every_training_setting_is_an_option_of_train() -> None:
    """A setting whose option went missing trained from Python alone, and no test noticed."""
    options = {param.name for param in cli.commands["train"].params}
    assert [field.name for field in dataclasses.fields(TrainConfig) if field.name not in options] == []


def _readme_section_rows(heading: str) -> set[str]:
    """The first column's `names` of the tables under README's `heading`, to the next heading."""
    text = (REPO_ROOT / "README.md").read_text()
    section = text.split(f"\n{heading}\n", 1)[1].split("\n#", 1)[0]
    return set(re.findall(r"^\| `([^`]+)` \|", section, re.M))


def test_the_readme_lists_every_preset_and_every_dataset() -> None:
    """Both tables are written by hand; a preset or a dataset added to the code alone was missed."""
    assert set(PRESETS) <= _readme_section_rows("### train")
    assert set(DATASETS) <= _readme_section_rows("## Datasets: MNIST's siblings")


def test_show_config_prints_the_merged_settings_and_trains_nothing(tmp_path) -> None:
    args = ["train", "data.npz", "-o", str(tmp_path / "x.safetensors"), "--preset", "cnn", "--epochs", "3"]
    exit_code, modules = _run_and_list_modules([*args, "--show-config"])
    assert exit_code == 0 and "jax" not in modules
    result = CliRunner().invoke(cli, [*args, "--show-config"])
    settings = json.loads(result.stdout)
    assert settings == json.loads(json.dumps(config_from_options("cnn", {"epochs": 3}).to_dict()))
    assert settings["epochs"] == 3 and settings["hidden"] == [256] and settings["classes"] == []
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("strides", "expected"),
    [
        ("2,1", None),
        ("2,2,1", "--strides: 1 (then a 2x2 max pool) or 2 (no pool) per conv layer (2), got 2,2,1"),
        ("3,1", "got 3,1"),
    ],
)
def test_strides_are_one_per_conv_layer_and_each_one_or_two(tmp_path, strides, expected) -> None:
    args = [
        "train",
        "data.npz",
        "-o",
        str(tmp_path / "x.safetensors"),
        "--preset",
        "cnn",
        "--strides",
        strides,
    ]
    result = CliRunner().invoke(cli, [*args, "--show-config"])
    if expected is None:
        assert result.exit_code == 0 and json.loads(result.stdout)["strides"] == [2, 1]
    else:
        assert result.exit_code != 0 and expected in result.output


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
