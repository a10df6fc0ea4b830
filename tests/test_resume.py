"""A run that dies continues from its last epoch when the same command runs again, and ends
with the uninterrupted run's bytes; a state that belongs to another run is never mixed in.

The crash here is an exception thrown from the progress callback in the middle of an epoch,
which leaves what a SIGKILL leaves: the state of the last complete epoch beside the output,
and no checkpoint. The kill harness (tests/test_crash.py, slow) does it with real SIGKILLs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mnistkit.arrays import file_sha256, named_as
from mnistkit.checkpoint import load_checkpoint
from mnistkit.cli import cli
from mnistkit.config import config_from_options
from mnistkit.run_state import METADATA_KEY
from mnistkit.training import train

OPTIONS = {"hidden": (16,), "epochs": 4, "batch_size": 64, "val_size": 100, "augment": "shift"}


class Crash(Exception):
    pass


def crash_in_epoch(doomed_epoch: int):
    def progress(epoch: int, epochs: int, fraction: float) -> None:
        if epoch == doomed_epoch and fraction >= 0.5:
            raise Crash

    return progress


def run(arrays, tmp_path: Path, data_sha256: str, messages: list[str] | None = None, **changes):
    options = {**OPTIONS, **changes.pop("options", {})}
    output = tmp_path / "model.safetensors"
    log = messages.append if messages is not None else (lambda message: None)
    return train(
        arrays,
        config_from_options(None, options),
        output,
        history_path=tmp_path / "history.jsonl",
        data_sha256=data_sha256,
        log=log,
        **changes,
    )


def timeless(history: Path) -> list[dict]:
    return [
        {k: v for k, v in json.loads(line).items() if k != "seconds"}
        for line in history.read_text().splitlines()
    ]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, synthetic_data) -> tuple[bytes, list[dict]]:
    folder = tmp_path_factory.mktemp("uninterrupted")
    run(synthetic_data, folder, "data-hash")
    assert not (folder / "model.safetensors.resume").exists()
    return (folder / "model.safetensors").read_bytes(), timeless(folder / "history.jsonl")


@pytest.mark.parametrize(
    "doomed_epoch", [pytest.param(1, marks=pytest.mark.slow), 3, pytest.param(4, marks=pytest.mark.slow)]
)
def test_a_crashed_run_resumes_to_the_same_bytes(
    tmp_path: Path, synthetic_data, reference, doomed_epoch
) -> None:
    with pytest.raises(Crash):
        run(synthetic_data, tmp_path, "data-hash", progress=crash_in_epoch(doomed_epoch))
    state = tmp_path / "model.safetensors.resume"
    assert not (tmp_path / "model.safetensors").exists()
    assert state.exists() == (doomed_epoch > 1)
    messages: list[str] = []
    run(synthetic_data, tmp_path, "data-hash", messages)
    if doomed_epoch > 1:
        assert f"resuming from {state}: epoch {doomed_epoch - 1} of 4 was done" in messages
    assert (tmp_path / "model.safetensors").read_bytes() == reference[0]
    assert timeless(tmp_path / "history.jsonl") == reference[1]
    assert not state.exists()


def test_a_state_given_as_a_checkpoint_is_named_for_what_it_is(tmp_path: Path, synthetic_data) -> None:
    """`mnistkit info model.safetensors.resume` after a killed run: the state, and what to do."""
    with pytest.raises(Crash):
        run(synthetic_data, tmp_path, "data-hash", progress=crash_in_epoch(3))
    state = tmp_path / "model.safetensors.resume"
    for command in (["info", str(state)], ["eval", str(state), str(tmp_path / "any.npz")]):
        result = CliRunner().invoke(cli, command)
        assert result.exit_code == 1, result.output
        assert result.stderr == (
            f"Error: {state}: the saved state of a training run that has not finished, not a "
            "checkpoint; the same train command again goes on from it and writes the checkpoint\n"
        )


def test_an_ensemble_resumes_to_the_same_bytes(tmp_path: Path, synthetic_data) -> None:
    ensemble = {"options": {"ensemble": 2, "epochs": 3}}
    (tmp_path / "once").mkdir()
    run(synthetic_data, tmp_path / "once", "data-hash", **ensemble)
    with pytest.raises(Crash):
        run(synthetic_data, tmp_path, "data-hash", progress=crash_in_epoch(3), **ensemble)
    run(synthetic_data, tmp_path, "data-hash", **ensemble)
    assert (tmp_path / "model.safetensors").read_bytes() == (
        tmp_path / "once" / "model.safetensors"
    ).read_bytes()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"options": {"lr": 3e-3}}, "another setting: lr"),  # from Python; the command says --lr
        pytest.param({"options": {"epochs": 5}}, "another setting: epochs", marks=pytest.mark.slow),
        pytest.param({"data_sha256": "other-data"}, "another data file", marks=pytest.mark.slow),
        # the same file, said to hold KMNIST (`train --dataset kmnist`): other classes
        ({"dataset": "kmnist"}, "another dataset (mnist then, kmnist now)"),
    ],
)
def test_a_state_of_another_run_is_not_mixed_in(tmp_path: Path, synthetic_data, change, reason) -> None:
    with pytest.raises(Crash):
        run(synthetic_data, tmp_path, "data-hash", progress=crash_in_epoch(3))
    messages: list[str] = []
    sha = change.pop("data_sha256", "data-hash")
    dataset = change.pop("dataset", None)
    arrays = named_as(synthetic_data, dataset) if dataset else synthetic_data
    run(arrays, tmp_path, sha, messages, **change)
    state = tmp_path / "model.safetensors.resume"
    assert f"{state}: written by a run with {reason}; starting over" in messages
    assert not any(message.startswith("resuming") for message in messages)


def test_a_state_beside_a_checkpoint_that_moved_on_leaves_the_run_going_on_from_it(
    tmp_path: Path, synthetic_data
) -> None:
    """`train -o X --resume X` stopped by Ctrl-C writes X at its last epoch, beside the state
    of the run that began at X's older epoch. Run again, that state is not used and the run
    goes on from X: the line said "starting over", as if from scratch."""
    run(synthetic_data, tmp_path, "data-hash", options={"epochs": 1})
    first = load_checkpoint(tmp_path / "model.safetensors")
    with pytest.raises(Crash):
        run(synthetic_data, tmp_path, "data-hash", resume_from=first, progress=crash_in_epoch(3))
    moved_on = tmp_path / "moved-on"
    moved_on.mkdir()
    run(synthetic_data, moved_on, "data-hash", resume_from=first, options={"epochs": 2})
    checkpoint = load_checkpoint(moved_on / "model.safetensors")
    messages: list[str] = []
    run(synthetic_data, tmp_path, "data-hash", messages, resume_from=checkpoint)
    state = tmp_path / "model.safetensors.resume"
    assert f"{state}: written by a run with another starting point" in messages[1]
    assert messages[1].endswith("; going on after epoch 2"), messages
    assert not any("starting over" in message for message in messages)
    assert len(load_checkpoint(tmp_path / "model.safetensors").metadata["history"]) == 4


def stop_in_epoch(doomed_epoch: int):
    """A Ctrl-C in the middle of `doomed_epoch`: train saves the epochs done and raises it."""

    def progress(epoch: int, epochs: int, fraction: float) -> None:
        if epoch == doomed_epoch and fraction >= 0.5:
            raise KeyboardInterrupt

    return progress


def test_a_run_onto_its_own_resume_checkpoint_stopped_and_run_again_goes_on_in_silence(
    tmp_path: Path, synthetic_data
) -> None:
    """`train -o X --resume X` stopped by Ctrl-C writes X and its state at the same epoch. The
    same command again said the state was "written by a run with another starting point",
    though X was its own."""
    run(synthetic_data, tmp_path, "data-hash", options={"epochs": 1})
    output = tmp_path / "model.safetensors"
    first = load_checkpoint(output)
    uninterrupted = tmp_path / "uninterrupted"
    uninterrupted.mkdir()
    run(synthetic_data, uninterrupted, "data-hash", resume_from=first)
    with pytest.raises(KeyboardInterrupt):
        run(synthetic_data, tmp_path, "data-hash", resume_from=first, progress=stop_in_epoch(3))
    messages: list[str] = []
    run(synthetic_data, tmp_path, "data-hash", messages, resume_from=load_checkpoint(output))
    assert messages[0] == "resuming after epoch 2 of 4"
    assert not any("written by a run" in message for message in messages), messages
    assert output.read_bytes() == (uninterrupted / "model.safetensors").read_bytes()


def test_restart_ignores_the_state_and_a_damaged_state_starts_over(
    tmp_path: Path, synthetic_data, reference
) -> None:
    state = tmp_path / "model.safetensors.resume"
    with pytest.raises(Crash):
        run(synthetic_data, tmp_path, "data-hash", progress=crash_in_epoch(3))
    messages: list[str] = []
    run(synthetic_data, tmp_path, "data-hash", messages, restart=True)
    assert not any(message.startswith("resuming") for message in messages)
    assert f"{state}: removed, as restart=True asks; starting over" in messages
    assert (tmp_path / "model.safetensors").read_bytes() == reference[0]
    for damage in ("truncated", "a bit flipped in a tensor"):
        with pytest.raises(Crash):
            run(synthetic_data, tmp_path, "data-hash", progress=crash_in_epoch(3))
        data = bytearray(state.read_bytes())
        if damage == "truncated":
            del data[-100:]
        else:  # a saved state's tensors were resumed whatever their bytes had become
            data[-100] ^= 0x10
        state.write_bytes(bytes(data))
        messages = []
        run(synthetic_data, tmp_path, "data-hash", messages)
        assert f"{state}: unreadable training state; starting over" in messages, damage
        assert (tmp_path / "model.safetensors").read_bytes() == reference[0]


def test_a_run_killed_between_saves_leaves_the_history_of_the_model_it_keeps(
    tmp_path: Path, synthetic_data
) -> None:
    """With --save-every 2, the history was written after every epoch: a run killed after its
    first left the model before beside a history of the run that died."""
    output = tmp_path / "model.safetensors"
    run(synthetic_data, tmp_path, "data-hash", options={"epochs": 2}, save_every=2)
    kept = (output.read_bytes(), (tmp_path / "history.jsonl").read_bytes())

    def killed_after_epoch_1(message: str) -> None:
        if message.startswith("epoch 1/3"):
            raise Crash

    with pytest.raises(Crash):
        train(
            synthetic_data,
            config_from_options(None, {**OPTIONS, "epochs": 3}),
            output,
            history_path=tmp_path / "history.jsonl",
            data_sha256="data-hash",
            log=killed_after_epoch_1,
            save_every=2,
        )
    assert (output.read_bytes(), (tmp_path / "history.jsonl").read_bytes()) == kept
    assert not (tmp_path / "model.safetensors.resume").exists()


def test_restart_with_a_folder_where_the_state_goes_is_one_line(tmp_path: Path, synthetic_npz: Path) -> None:
    output = tmp_path / "model.safetensors"
    (tmp_path / "model.safetensors.resume").mkdir()
    result = CliRunner().invoke(cli, ["train", str(synthetic_npz), "-o", str(output), "--restart"])
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == (
        f"Error: {output}.resume: cannot remove the saved training state: Is a directory"
    )
    assert "Traceback" not in result.output


def test_the_cli_resumes_by_itself_and_reports_it(tmp_path: Path, synthetic_npz: Path) -> None:
    """`mnistkit train` twice, the first one dead after two epochs: the second says so and finishes."""
    from click.testing import CliRunner

    from mnistkit.cli import cli

    output = tmp_path / "model.safetensors"
    args = ["train", str(synthetic_npz), "-o", str(output), "--hidden", "16", "--epochs", "3"]
    config = config_from_options(None, {"hidden": (16,), "epochs": 3})
    with pytest.raises(Crash):
        train(
            np.load(synthetic_npz),
            config,
            output,
            data_sha256=file_sha256(synthetic_npz),
            log=lambda m: None,
            progress=crash_in_epoch(3),
        )
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert f"resuming from {output}.resume: epoch 2 of 3 was done" in result.stderr
    assert [line.split()[1] for line in result.stderr.splitlines() if line.startswith("epoch")] == ["3/3"]


def _as_an_earlier_mnistkit_saved_it(state: Path) -> None:
    """The state without the settings added since (it ran at their defaults) and without its
    dataset, which the data file then told alone: MNIST, or the dataset the file named."""
    data = state.read_bytes()
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    metadata = json.loads(header["__metadata__"][METADATA_KEY])
    del metadata["fingerprint"]["config"]["mirror_average"], metadata["fingerprint"]["dataset"]
    header["__metadata__"][METADATA_KEY] = json.dumps(metadata)
    text = json.dumps(header).encode()
    state.write_bytes(len(text).to_bytes(8, "little") + text + data[8 + length :])


def test_a_state_from_before_a_setting_existed_resumes(tmp_path: Path, synthetic_data, reference) -> None:
    with pytest.raises(Crash):
        run(synthetic_data, tmp_path, "data-hash", progress=crash_in_epoch(3))
    state = tmp_path / "model.safetensors.resume"
    _as_an_earlier_mnistkit_saved_it(state)
    messages: list[str] = []
    run(synthetic_data, tmp_path, "data-hash", messages)
    assert f"resuming from {state}: epoch 2 of 4 was done" in messages
    assert (tmp_path / "model.safetensors").read_bytes() == reference[0]


def test_a_state_from_before_the_dataset_was_kept_is_not_resumed_as_another(
    tmp_path: Path, synthetic_data
) -> None:
    """The same file trained with `--dataset kmnist` (its classes read as kana) cannot continue
    a state that recorded no dataset: that run took the file as MNIST."""
    with pytest.raises(Crash):
        run(synthetic_data, tmp_path, "data-hash", progress=crash_in_epoch(3))
    state = tmp_path / "model.safetensors.resume"
    _as_an_earlier_mnistkit_saved_it(state)
    messages: list[str] = []
    run(named_as(synthetic_data, "kmnist"), tmp_path, "data-hash", messages)
    assert (
        f"{state}: written by a run with another dataset (none recorded then, kmnist now); starting over"
        in messages
    )
    assert not any(message.startswith("resuming") for message in messages)
