"""The trainer on small synthetic data: learning, checkpoints, determinism, resume, subsets, bad input."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from faults import HISTORY_KEYS

from mnistkit import train_state, training
from mnistkit.architectures import build_architecture, check_architecture, param_shapes
from mnistkit.arrays import file_sha256, named_as, save_arrays
from mnistkit.checkpoint import load_checkpoint
from mnistkit.cli import cli
from mnistkit.config import PRESETS, TrainConfig, check_resume_options, config_from_options
from mnistkit.errors import MnistkitError
from mnistkit.history import FIELDS
from mnistkit.plots import bottleneck_values
from mnistkit.terms import command_line_terms

SMALL_MLP = ["--hidden", "32", "--lr", "3e-3"]


def run_train(*args: str | Path):
    return CliRunner().invoke(cli, ["train", *map(str, args)])


@pytest.mark.parametrize(
    ("options", "minimum_accuracy"),
    [
        ({"model": "logreg", "epochs": 10, "lr": 1e-2}, 0.6),
        ({"model": "mlp", "hidden": (64,), "epochs": 10, "lr": 3e-3}, 0.7),
        pytest.param(
            {"model": "cnn", "hidden": (32,), "epochs": 6, "lr": 3e-3, "batch_size": 32},
            0.7,
            marks=pytest.mark.slow,  # a CNN also trains in test_models' batch norm test
        ),
    ],
    ids=["logreg", "mlp", "cnn"],
)
def test_each_model_learns_a_small_synthetic_problem(
    tmp_path: Path, synthetic_data, options: dict, minimum_accuracy: float
) -> None:
    config = config_from_options(None, options)
    messages: list[str] = []
    result = training.train(synthetic_data, config, tmp_path / "model.safetensors", log=messages.append)
    metrics = result.checkpoint.metadata["metrics"]
    assert metrics["test_accuracy"] >= minimum_accuracy, messages
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    checkpoint = load_checkpoint(tmp_path / "model.safetensors")
    probabilities = checkpoint.predict_probabilities(synthetic_data["test_images"])
    numpy_accuracy = float(np.mean(probabilities.argmax(axis=1) == synthetic_data["test_labels"]))
    assert numpy_accuracy == pytest.approx(metrics["test_accuracy"], abs=0.01)


def test_the_command_says_that_an_npz_naming_no_dataset_is_taken_as_mnist(
    tmp_path: Path, synthetic_npz: Path, synthetic_data
) -> None:
    """A part of Fashion-MNIST saved with numpy names no dataset: the command trained a model of
    digits on it in silence (Python's train said so), which then read clothes as digits."""
    result = run_train(synthetic_npz, "-o", tmp_path / "a.safetensors", "--epochs", "1", "--model", "logreg")
    assert result.exit_code == 0, result.output
    notice = f"{synthetic_npz}: names no dataset: taken as MNIST's digits (--dataset NAME names another)"
    assert result.stderr.splitlines().count(notice) == 1
    named = tmp_path / "fashion.npz"
    save_arrays(named, named_as(dict(synthetic_data), "fashion-mnist"))
    for args in ([synthetic_npz, "--dataset", "kmnist"], [named]):
        result = run_train(*args, "-o", tmp_path / "b.safetensors", "--epochs", "1", "--model", "logreg")
        assert result.exit_code == 0, result.output
        assert "names no dataset" not in result.stderr
    assert load_checkpoint(tmp_path / "b.safetensors").dataset == "fashion-mnist"


def test_train_command_writes_a_self_describing_checkpoint_and_history(
    tmp_path: Path, synthetic_npz: Path
) -> None:
    output, history = tmp_path / "model.safetensors", tmp_path / "history.jsonl"
    result = run_train(
        synthetic_npz, "-o", output, "--history", history, "--epochs", "3", "--val-size", "100", *SMALL_MLP
    )
    assert result.exit_code == 0, result.output
    epoch_lines = [line for line in result.stderr.splitlines() if line.startswith("epoch")]
    assert len(epoch_lines) == 3 and "val acc" in epoch_lines[0] and "train loss" in epoch_lines[0]
    assert "test accuracy" in result.stderr and result.stdout == ""

    checkpoint = load_checkpoint(output)
    metadata = checkpoint.metadata
    assert metadata["architecture"] == {
        "model": "mlp",
        "hidden": [32],
        "activation": "relu",
        "num_classes": 10,
    }
    assert metadata["normalization"] == {"kind": "unit"}
    assert metadata["classes"] == list(range(10))
    assert TrainConfig.from_dict(metadata["config"]).epochs == 3
    assert metadata["data_sha256"] == file_sha256(synthetic_npz)
    assert set(metadata["metrics"]) >= {"test_accuracy", "test_loss", "val_accuracy", "train_loss", "epochs"}
    assert metadata["metrics"]["epochs"] == 3
    assert any(
        name.endswith("mu.dense_0.kernel") for name in checkpoint.optimizer_state
    )  # adam's first moment

    records = [json.loads(line) for line in history.read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert all(set(r) == HISTORY_KEYS for r in records)
    assert all(r["test_accuracy"] is None and 0 <= r["val_accuracy"] <= 1 for r in records)
    assert records[-1]["train_loss"] == metadata["metrics"]["train_loss"]


@pytest.mark.slow  # two jax processes; the in-process resume tests check the same bytes quickly
@pytest.mark.parametrize(
    "options",
    [
        [
            "--model",
            "mlp",
            "--hidden",
            "32",
            "--augment",
            "shift",
            "--normalize",
            "standard",
            "--val-size",
            "50",
        ],
        ["--model", "cnn", "--hidden", "16", "--augment", "shift", "--epochs", "1"],
    ],
    ids=["mlp", "cnn"],
)
def test_same_command_writes_the_same_bytes_in_two_processes(
    tmp_path: Path, synthetic_npz: Path, options: list[str]
) -> None:
    outputs = [tmp_path / "first.safetensors", tmp_path / "second.safetensors"]
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mnistkit",
                "train",
                str(synthetic_npz),
                "-o",
                str(out),
                "--epochs",
                "2",
                *options,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for out in outputs
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr.decode()
    assert outputs[0].read_bytes() == outputs[1].read_bytes()


def test_resume_after_an_interrupt_equals_training_in_one_go(
    tmp_path: Path, synthetic_npz: Path, synthetic_data
) -> None:
    options = [
        "--epochs",
        "3",
        "--schedule",
        "cosine",
        "--optimizer",
        "adamw",
        "--weight-decay",
        "1e-3",
        *SMALL_MLP,
    ]
    one_go = tmp_path / "one-go.safetensors"
    assert run_train(synthetic_npz, "-o", one_go, *options).exit_code == 0

    config = config_from_options(
        None,
        {
            "epochs": 3,
            "schedule": "cosine",
            "optimizer": "adamw",
            "weight_decay": 1e-3,
            "hidden": (32,),
            "lr": 3e-3,
        },
    )
    resumed = tmp_path / "resumed.safetensors"
    messages: list[str] = []

    def interrupt_after_first_epoch(message: str) -> None:
        messages.append(message)
        if message.startswith("epoch"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        training.train(
            synthetic_data,
            config,
            resumed,
            data_sha256=file_sha256(synthetic_npz),
            log=interrupt_after_first_epoch,
        )
    assert "saved the checkpoint of epoch 1 of 3" in messages[-1]
    assert load_checkpoint(resumed).metadata["metrics"]["epochs"] == 1

    history = tmp_path / "history.jsonl"
    result = run_train(synthetic_npz, "-o", resumed, "--resume", resumed, "--history", history)
    assert result.exit_code == 0, result.output
    assert "resuming after epoch 1 of 3" in result.stderr
    assert resumed.read_bytes() == one_go.read_bytes()
    assert [json.loads(line)["epoch"] for line in history.read_text().splitlines()] == [1, 2, 3]
    # The lines brought back from the saved state in the order a run writes them, not sorted.
    assert all(list(json.loads(line)) == list(FIELDS) for line in history.read_text().splitlines())


def test_resume_can_extend_a_constant_schedule(tmp_path: Path, synthetic_npz: Path) -> None:
    one_go, resumed = tmp_path / "one-go.safetensors", tmp_path / "resumed.safetensors"
    options = ["--schedule", "constant", *SMALL_MLP]
    assert run_train(synthetic_npz, "-o", one_go, "--epochs", "3", *options).exit_code == 0
    assert run_train(synthetic_npz, "-o", resumed, "--epochs", "2", *options).exit_code == 0
    result = run_train(synthetic_npz, "-o", resumed, "--resume", resumed, "--epochs", "3")
    assert result.exit_code == 0, result.output
    assert resumed.read_bytes() == one_go.read_bytes()


@pytest.mark.parametrize("save_every", [0, 5])
def test_an_interrupted_run_without_saved_states_keeps_one_to_continue(
    tmp_path: Path, synthetic_data, save_every: int
) -> None:
    """With --save-every 0 (or before its first state), Ctrl-C left the last epoch's checkpoint
    at the output and no state: the next run started over, and `make`, seeing a fresh
    checkpoint, took it as finished."""
    config = TrainConfig(hidden=(16,), epochs=3, lr=3e-3)
    one_go = tmp_path / "one-go.safetensors"
    training.train(synthetic_data, config, one_go, save_every=save_every, log=lambda message: None)
    stopped = tmp_path / "stopped.safetensors"

    def interrupt_after_first_epoch(message: str) -> None:
        if message.startswith("epoch 1/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        training.train(
            synthetic_data, config, stopped, save_every=save_every, log=interrupt_after_first_epoch
        )
    assert stopped.with_name(stopped.name + ".resume").exists()
    messages: list[str] = []
    training.train(synthetic_data, config, stopped, save_every=save_every, log=messages.append)
    assert any("epoch 1 of 3 was done" in message for message in messages)
    assert stopped.read_bytes() == one_go.read_bytes()
    assert not stopped.with_name(stopped.name + ".resume").exists()


def test_interrupt_before_the_first_epoch_writes_nothing(tmp_path: Path, synthetic_data, monkeypatch) -> None:
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_state, "epoch_batches", interrupted)
    messages: list[str] = []
    output = tmp_path / "model.safetensors"
    with pytest.raises(KeyboardInterrupt):
        training.train(synthetic_data, TrainConfig(hidden=(8,)), output, log=messages.append)
    assert messages == ["interrupted: no epoch completed, no checkpoint written"]
    assert list(tmp_path.iterdir()) == []


def test_digit_subset_maps_outputs_back_to_digits(
    tmp_path: Path, synthetic_npz: Path, synthetic_data
) -> None:
    output = tmp_path / "8v3.safetensors"
    result = run_train(
        synthetic_npz, "-o", output, "--digits", "8,3", "--epochs", "15", "--batch-size", "16", *SMALL_MLP
    )
    assert result.exit_code == 0, result.output
    checkpoint = load_checkpoint(output)
    assert checkpoint.classes == [8, 3]
    assert checkpoint.architecture["num_classes"] == 2
    labels = synthetic_data["test_labels"]
    keep = np.isin(labels, [3, 8])
    probabilities = checkpoint.predict_probabilities(synthetic_data["test_images"][keep])
    predicted_digits = np.array(checkpoint.classes)[probabilities.argmax(axis=1)]
    accuracy = np.mean(predicted_digits == labels[keep])
    assert accuracy >= 0.75 and set(predicted_digits.tolist()) == {3, 8}
    assert checkpoint.metadata["metrics"]["test_accuracy"] == pytest.approx(accuracy, abs=0.03)


def test_embedding_preset_spreads_digits_over_a_linear_two_unit_layer(
    tmp_path: Path, synthetic_npz: Path
) -> None:
    """The documented 2-D embedding command: no ReLU on the 2-unit layer, so neither unit dies."""
    output = tmp_path / "2d.safetensors"
    result = run_train(
        synthetic_npz, "-o", output, "--preset", "embedding", "--batch-size", "32", "--epochs", "6"
    )
    assert result.exit_code == 0, result.output
    checkpoint = load_checkpoint(output)
    assert checkpoint.architecture == {
        "model": "mlp",
        "hidden": [100, 100, 2],
        "activation": "relu",
        "linear_last_hidden": True,
        "num_classes": 10,
    }
    images = np.load(synthetic_npz)["test_images"]
    points = bottleneck_values(checkpoint, 2, images)
    assert (points < 0).any(axis=0).all() and (points > 0).any(axis=0).all()  # both units used, both signs
    assert checkpoint.metadata["metrics"]["test_accuracy"] > 0.25  # chance is 0.1; real data: test_train_real


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--model", "logreg", "--hidden", "128"], "--model logreg has no hidden layers; drop --hidden"),
        (
            ["--preset", "logreg", "--model", "mlp"],
            "--model mlp needs hidden layers (the logreg preset has none)",
        ),
        (["--model", "logreg", "--activation", "tanh"], "--activation has no effect on --model logreg"),
        (["--preset", "logreg", "--activation", "tanh"], "--activation has no effect on --model logreg"),
        (["--model", "cnn", "--linear-last-hidden"], "--linear-last-hidden needs --model mlp"),
        (["--model", "cnn", "--pools", "0,2"], "--pools: expected comma-separated 0s and 1s, got '0,2'"),
        (["--hidden", "12,,3"], "--hidden: an empty item in '12,,3'"),
        (["--hidden", "12,"], "--hidden: an empty item in '12,'"),
        (["--classes", "3,,8"], "--classes: an empty item in '3,,8'"),
        (["--hidden", ","], "--hidden: expected comma-separated integers, got ','"),
        (["--model", "cnn", "--pools", "0,1,0"], "--pools: one 0 or 1 per conv layer (2), got 0,1,0"),
        (["--pools", "0,1"], "--pools applies to --model cnn, not mlp"),
        (
            ["--model", "cnn", "--channels", "8,8,8,8,8", "--kernel-sizes", "3,3,3,3,3"],
            "--channels, --kernel-sizes, --strides, --pools: conv 4's 3x3 kernel is wider than the 1x1 image",
        ),
        (
            ["--model", "cnn", "--channels", "8", "--kernel-sizes", "29"],
            "--channels, --kernel-sizes, --strides, --pools: conv 1's 29x29 kernel is wider than the 28x28",
        ),
        (
            ["--preset", "seed", "--optimizer", "sgd", "--adam-betas", "0.9,0.99"],
            "--adam-betas applies to --optimizer adam or adamw, not sgd",
        ),
    ],
)
def test_options_that_would_be_ignored_or_harmful_are_errors(
    tmp_path: Path, synthetic_npz: Path, options: list[str], expected: str
) -> None:
    result = run_train(synthetic_npz, "-o", tmp_path / "m.safetensors", *options)
    assert result.exit_code == 1 and result.stderr.startswith(f"Error: {expected}"), result.output
    assert not (tmp_path / "m.safetensors").exists()


@pytest.mark.parametrize(
    ("preset", "model", "dropped"),
    [("embedding", "logreg", {"hidden": (), "linear_last_hidden": False}), ("embedding", "cnn", {})],
)
def test_another_model_leaves_the_presets_settings_that_only_its_own_model_has(
    preset: str, model: str, dropped: dict
) -> None:
    """`--preset embedding --model logreg` said `--linear-last-hidden needs --model mlp`, a
    setting the user never gave: an MLP preset's linear last layer goes with its hidden layers."""
    config = config_from_options(preset, {"model": model})
    assert config.model == model and not config.linear_last_hidden
    for name, value in dropped.items():
        assert getattr(config, name) == value


@pytest.mark.parametrize(
    ("preset", "option", "name"),
    [
        ("cnn-best", "--no-batch-norm", "batch_norm"),
        ("seed", "--no-eval-test-each-epoch", "eval_test_each_epoch"),
        ("embedding", "--no-linear-last-hidden", "linear_last_hidden"),
    ],
)
def test_a_presets_switch_can_be_turned_off(tmp_path: Path, preset: str, option: str, name: str) -> None:
    """Their help said [default: off], though these presets turn them on, and no option
    turned them off."""
    if option == "--no-batch-norm":  # asks for what an MLP has: no refusal as a CNN's setting
        result = run_train(
            tmp_path / "unread.npz",
            "-o",
            tmp_path / "m.safetensors",
            "--model",
            "mlp",
            option,
            "--show-config",
        )
        assert result.exit_code == 0 and json.loads(result.stdout)[name] is False, result.output
    for options, value in (([], True), ([option], False)):
        result = run_train(
            tmp_path / "unread.npz",
            "-o",
            tmp_path / "m.safetensors",
            "--preset",
            preset,
            *options,
            "--show-config",
        )
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)[name] is value


def test_resume_names_a_switch_as_it_was_given() -> None:
    with command_line_terms(), pytest.raises(MnistkitError, match=r"; drop --lr, --no-batch-norm$"):
        check_resume_options({"batch_norm": False, "epochs": 3, "lr": 0.1})


def test_pools_are_read_per_conv_layer_and_follow_a_new_number_of_layers(tmp_path: Path) -> None:
    options = ["--model", "cnn", "--channels", "8,8,16,16", "--kernel-sizes", "3,3,3,3", "--pools", "0,1,0,1"]
    result = run_train(tmp_path / "unread.npz", "-o", tmp_path / "m.safetensors", *options, "--show-config")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["pools"] == [False, True, False, True]
    assert config_from_options("cnn-best", {"channels": (8, 16, 32)}).pools == ()
    assert config_from_options("cnn-best", {"channels": (8, 8, 16, 16)}).pools == (False, True) * 2


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_builds_an_architecture_that_a_checkpoint_may_hold(name: str) -> None:
    architecture = build_architecture(config_from_options(name, {}), 10)
    check_architecture(architecture)
    assert param_shapes(architecture)


def test_switching_a_preset_to_logreg_drops_its_hidden_layers() -> None:
    assert config_from_options("mlp", {"model": "logreg"}).hidden == ()
    assert config_from_options("cnn", {"model": "mlp"}).hidden == (256,)


def test_a_batch_larger_than_the_data_is_capped_with_a_line(tmp_path: Path, small_data) -> None:
    data = _npz(tmp_path, small_data)
    output = tmp_path / "m.safetensors"
    result = run_train(data, "-o", output, "--batch-size", "100000", "--epochs", "1", "--hidden", "8")
    assert result.exit_code == 0, result.output
    assert "--batch-size 100000 is larger than the 50 training images; using 50" in result.stderr
    assert load_checkpoint(output).metadata["config"]["batch_size"] == 50


def test_a_model_of_a_notebooks_arrays_resumes_on_those_arrays_only(tmp_path: Path, synthetic_data) -> None:
    """A checkpoint trained from arrays in memory records their SHA-256: `--resume` on an
    .npz of other images is refused, on one of the same arrays it goes on."""
    import mnistkit

    model = tmp_path / "notebook.safetensors"
    mnistkit.train(synthetic_data, "logreg", epochs=1, output=model, verbose=False)
    same, other = tmp_path / "same.npz", tmp_path / "other.npz"
    np.savez(same, **synthetic_data)
    np.savez(other, **{**synthetic_data, "train_images": synthetic_data["train_images"][:, :, ::-1]})
    refused = run_train(other, "-o", tmp_path / "more.safetensors", "--resume", model, "--epochs", "2")
    assert refused.exit_code == 1
    assert refused.stderr.startswith("Error: --resume checkpoint: it was trained on other arrays (SHA-256 ")
    resumed = run_train(same, "-o", tmp_path / "more.safetensors", "--resume", model, "--epochs", "2")
    assert resumed.exit_code == 0 and "resuming after epoch 1 of 2" in resumed.stderr, resumed.output


def test_sgd_resumes_and_equals_the_uninterrupted_run(tmp_path: Path, synthetic_npz: Path) -> None:
    """Plain SGD has no optimizer state; its checkpoint resumes all the same."""
    one_go, resumed = tmp_path / "one-go.safetensors", tmp_path / "resumed.safetensors"
    options = ["--preset", "seed", "--hidden", "16"]
    assert run_train(synthetic_npz, "-o", one_go, "--epochs", "3", *options).exit_code == 0
    assert run_train(synthetic_npz, "-o", resumed, "--epochs", "2", *options).exit_code == 0
    assert load_checkpoint(resumed).optimizer_state == {}
    result = run_train(synthetic_npz, "-o", resumed, "--resume", resumed, "--epochs", "3")
    assert result.exit_code == 0, result.output
    assert resumed.read_bytes() == one_go.read_bytes()


def _npz(tmp_path: Path, arrays: dict[str, np.ndarray]) -> Path:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return path


BAD_ARRAYS = {
    "missing key": (lambda a: {k: v for k, v in a.items() if k != "train_labels"}, "train_labels"),
    "wrong dtype": (lambda a: {**a, "train_images": a["train_images"].astype(np.float32)}, "dtype"),
    "wrong shape": (lambda a: {**a, "test_images": a["test_images"][:, :27]}, "shape"),
    "label above 9": (
        lambda a: {**a, "train_labels": np.where(a["train_labels"] == 0, 12, a["train_labels"])},
        "12",
    ),
}


@pytest.mark.parametrize("case", BAD_ARRAYS)
def test_bad_npz_is_one_line_and_no_checkpoint(tmp_path: Path, synthetic_data, case: str) -> None:
    corrupt, expected = BAD_ARRAYS[case]
    path = _npz(tmp_path, corrupt({k: v.astype(v.dtype) for k, v in synthetic_data.items()}).copy())
    output = tmp_path / "model.safetensors"
    result = run_train(path, "-o", output, "--hidden", "8")
    assert result.exit_code == 1
    assert (
        result.output.count("\n") == 1 and result.output.startswith("Error: ") and expected in result.output
    )
    assert not output.exists()


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--digits", "3,11"], "--classes: '11' is not a class of mnist (0-9)"),
        (["--digits", "3"], "two or more"),
        (["--classes", "3,x"], "--classes"),
        (["--hidden", "32,0"], "--hidden"),
        (["--val-size", "600"], "--val-size"),
        (["--digits", "3,8", "--resume", "whatever.safetensors"], "--resume"),
    ],
)
def test_bad_options_are_one_line_and_no_checkpoint(
    tmp_path: Path, synthetic_npz: Path, options: list[str], expected: str
) -> None:
    output = tmp_path / "model.safetensors"
    result = run_train(synthetic_npz, "-o", output, *options)
    assert result.exit_code == 1, result.output
    assert (
        result.output.count("\n") == 1 and result.output.startswith("Error: ") and expected in result.output
    )
    assert not output.exists()


@pytest.mark.parametrize(
    "option",
    ["--classes", "--digits", "--seeds", "--channels", "--strides", "--pools", "--adam-betas"],
)
def test_an_empty_list_is_a_usage_error(tmp_path: Path, synthetic_npz: Path, option: str) -> None:
    """`--classes "$DIGITS"` with DIGITS unset trained on every class, `--seeds ""` one model.
    (`--hidden ""` stays: a CNN with no dense head asks for it.)"""
    result = run_train(synthetic_npz, "-o", tmp_path / "model.safetensors", "--model", "cnn", option, " ")
    assert result.exit_code == 2
    assert f"'{option}'" in result.stderr and "empty (an unset shell variable?)" in result.stderr
    assert list(tmp_path.iterdir()) == [synthetic_npz]


@pytest.mark.parametrize("option", ["--preset", "--model"])
def test_an_unknown_preset_or_model_is_the_same_usage_error(
    tmp_path: Path, synthetic_npz: Path, option
) -> None:
    result = run_train(synthetic_npz, "-o", tmp_path / "model.safetensors", option, "huge")
    assert result.exit_code == 2
    assert f"Invalid value for '{option}': 'huge' is not one of" in result.stderr
    assert list(tmp_path.iterdir()) == [synthetic_npz]


def test_digit_absent_from_the_data_is_an_error(tmp_path: Path, synthetic_data) -> None:
    arrays = dict(synthetic_data)
    keep = arrays["train_labels"] != 7
    arrays["train_images"], arrays["train_labels"] = (
        arrays["train_images"][keep],
        arrays["train_labels"][keep],
    )
    with pytest.raises(MnistkitError, match="no training images of digit 7"):
        training.train(arrays, TrainConfig(classes=("3", "7")), tmp_path / "model.safetensors")
    assert not (tmp_path / "model.safetensors").exists()


def test_nan_loss_stops_training_without_a_checkpoint(tmp_path: Path, synthetic_npz: Path) -> None:
    output, history = tmp_path / "model.safetensors", tmp_path / "history.jsonl"
    result = run_train(
        synthetic_npz,
        "-o",
        output,
        "--history",
        history,
        "--optimizer",
        "sgd",
        "--lr",
        "1e30",
        "--hidden",
        "32",
    )
    assert result.exit_code == 1
    assert "NaN" in result.output and "lower --lr" in result.output
    assert not output.exists() and not history.exists()


def test_standard_normalization_is_the_pixels_exact_mean_and_std() -> None:
    """Counted a chunk of pixels at a time: more pixels than one chunk, one chunk's worth of
    them bright, so a chunk counted twice or left out moves the mean."""
    from mnistkit.training_data import HISTOGRAM_CHUNK, normalization_of

    images = np.random.default_rng(0).integers(0, 60, (3 * HISTOGRAM_CHUNK // 784 + 5, 28, 28), np.uint8)
    images.reshape(-1)[HISTOGRAM_CHUNK : 2 * HISTOGRAM_CHUNK] = 255
    pixels = images.astype(np.float64) / 255.0
    normalization = normalization_of("standard", images)
    assert normalization["mean"] == pytest.approx(pixels.mean(), rel=1e-12)
    assert normalization["std"] == pytest.approx(pixels.std(), rel=1e-12)


def test_last_partial_batch_is_trained_and_padding_is_weightless() -> None:
    import jax

    order = np.asarray(jax.random.permutation(jax.random.PRNGKey(0), 300))
    indices, weights = train_state.epoch_batches(order, 128, chunks=2)
    assert indices.shape == weights.shape == (2, 2, 128)
    per_batch = weights.reshape(4, 128).sum(axis=1)
    assert per_batch.tolist() == [128, 128, 44, 0]
    real = indices.reshape(-1)[weights.reshape(-1) > 0]
    np.testing.assert_array_equal(real, order)


@pytest.mark.parametrize("size", [1, 2, 300, 60_000])
def test_the_epochs_permutation_is_jaxs_sorted_by_numpy(size: int) -> None:
    """The shuffle sorts jax's own keys with numpy, for the very order of
    `jax.random.permutation` (the seed trainer's), also at sizes that take 0, 1 or 2 rounds."""
    import jax

    for seed in (0, 7):
        key = jax.random.PRNGKey(seed)
        next_key, sort_keys, augment_key = train_state._epoch_draw(key, size)
        key, epoch_key = jax.random.split(key)
        order = train_state._permutation(np.asarray(sort_keys))
        assert order.dtype == np.int32
        np.testing.assert_array_equal(order, np.asarray(jax.random.permutation(epoch_key, size)))
        np.testing.assert_array_equal(next_key, key)
        np.testing.assert_array_equal(augment_key, jax.random.fold_in(epoch_key, 1))


def test_epochs_follow_the_seed_trainers_key_chain_also_when_resumed() -> None:
    """Epoch k shuffles by `permutation(epoch_key)` after k turns of `key, epoch_key =
    split(key)` from PRNGKey(seed), as the seed trainer; its augmentation key is
    `fold_in(epoch_key, 1)`. A run resumed at epoch 3 draws what epoch 3 drew."""
    import jax

    key, expected = jax.random.PRNGKey(7), []
    for _ in range(3):
        key, epoch_key = jax.random.split(key)
        order = np.asarray(jax.random.permutation(epoch_key, 300))
        expected.append((order, np.asarray(jax.random.fold_in(epoch_key, 1))))

    def drawn(inputs: train_state.EpochInputs, more_to_come: bool) -> tuple[np.ndarray, np.ndarray]:
        indices, weights, keys = inputs.next_epoch(more_to_come)
        return indices[:, 0].reshape(-1)[weights[:, 0].reshape(-1) > 0], keys[0]

    inputs = train_state.EpochInputs(TrainConfig(seed=7, batch_size=128), 300)
    resumed = train_state.EpochInputs(TrainConfig(seed=7, batch_size=128), 300)
    try:
        resumed.start_at(3)
        for epoch, (order, augment_key) in enumerate(expected, start=1):
            real, key_drawn = drawn(inputs, more_to_come=epoch < 3)
            np.testing.assert_array_equal(real, order)
            np.testing.assert_array_equal(key_drawn, augment_key)
        real, key_drawn = drawn(resumed, more_to_come=False)
        np.testing.assert_array_equal(real, expected[2][0])
        np.testing.assert_array_equal(key_drawn, expected[2][1])
    finally:
        inputs.close()
        resumed.close()


def test_presets_fill_what_the_options_leave_out() -> None:
    seed = config_from_options("seed", {})
    assert (seed.model, seed.hidden, seed.optimizer, seed.lr, seed.batch_size, seed.epochs) == (
        "mlp",
        (128,),
        "sgd",
        0.1,
        128,
        5,
    )
    assert config_from_options("seed", {"epochs": 2}).epochs == 2
    assert config_from_options(None, {"model": "cnn"}).model == "cnn"
    assert config_from_options(None, {}) == config_from_options("mlp", {})
    assert config_from_options("mlp", {"hidden": 64}).hidden == (64,)  # from Python: one width


@pytest.mark.slow
def test_sigint_keeps_the_last_complete_epoch(tmp_path: Path, synthetic_npz: Path) -> None:
    """A real Ctrl-C to `mnistkit train`: status 130, and the checkpoint of a complete epoch."""
    output = tmp_path / "model.safetensors"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mnistkit",
            "train",
            str(synthetic_npz),
            "-o",
            str(output),
            "--epochs",
            "100000",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    for line in process.stderr:
        if line.startswith("epoch"):
            break
    process.send_signal(signal.SIGINT)
    remaining = process.stderr.read()
    assert process.wait(timeout=120) == -signal.SIGINT, remaining
    assert "saved the checkpoint of epoch" in remaining
    checkpoint = load_checkpoint(output)
    assert 1 <= checkpoint.metadata["metrics"]["epochs"] == len(checkpoint.metadata["history"])
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_epoch_cycles_anneal_every_epoch() -> None:
    """One learning-rate cycle per epoch: each starts low, peaks at lr x 0.3^epoch 30% into
    the epoch and ends near zero, so the model after every epoch is a finished one."""
    from mnistkit.steps import learning_rate

    schedule = learning_rate(config_from_options("fast", {"epochs": 3, "lr": 0.01}), steps_per_epoch=100)
    rates = np.array([float(schedule(step)) for step in range(300)]).reshape(3, 100)
    np.testing.assert_allclose(rates.max(axis=1), [0.01, 0.003, 0.0009], rtol=1e-3)
    assert rates.argmax(axis=1).tolist() == [30, 30, 30]
    assert (rates[:, 0] < rates.max(axis=1) / 20).all() and (rates[:, -1] < 1e-5).all()


def test_numbers_that_are_not_finite_are_refused_before_any_work(tmp_path: Path, synthetic_npz: Path) -> None:
    """NaN passes every range check (each comparison with it is false): refused by name."""
    for option, value in (("--lr", "inf"), ("--weight-decay", "nan"), ("--label-smoothing", "nan")):
        result = run_train(synthetic_npz, "-o", tmp_path / "m.safetensors", option, value, "--show-config")
        assert (
            result.exit_code == 2
            and f"Invalid value for '{option}': {value} is not a finite number" in result.output
        )
    with pytest.raises(MnistkitError, match=r"^lr must be a positive number, got inf$"):
        TrainConfig(lr=float("inf"))
    with pytest.raises(MnistkitError, match=r"^weight_decay must be a non-negative number, got nan$"):
        TrainConfig(weight_decay=float("nan"))


def test_dataset_names_what_an_npz_without_names_holds(
    tmp_path: Path, synthetic_data, synthetic_npz: Path
) -> None:
    """A part of KMNIST saved with numpy names no dataset: `--dataset kmnist` trains it as
    KMNIST (its classes, its preset settings), and eval takes it as the model's; a file that
    names another dataset is refused, with nothing written."""
    output = tmp_path / "kmnist.safetensors"
    result = run_train(synthetic_npz, "-o", output, "--dataset", "kmnist", "--epochs", "1", *SMALL_MLP)
    assert result.exit_code == 0, result.output
    checkpoint = load_checkpoint(output)
    assert checkpoint.dataset == "kmnist" and checkpoint.class_names[:2] == ["o", "ki"]
    evaluated = CliRunner().invoke(cli, ["eval", str(output), str(synthetic_npz)])
    assert evaluated.exit_code == 0, evaluated.output
    named = tmp_path / "fashion.npz"
    save_arrays(named, named_as(dict(synthetic_data), "fashion-mnist"))
    refused = run_train(named, "-o", tmp_path / "no.safetensors", "--dataset", "kmnist", *SMALL_MLP)
    assert refused.exit_code == 1
    assert refused.output == f"Error: {named}: holds fashion-mnist, not --dataset kmnist\n"
    shown = run_train(named, "-o", tmp_path / "no.safetensors", "--dataset", "kmnist", "--show-config")
    assert shown.exit_code == 1 and shown.output == refused.output
    assert not (tmp_path / "no.safetensors").exists()
    resumed = run_train(
        synthetic_npz, "-o", output, "--resume", output, "--dataset", "fashion-mnist", "--epochs", "2"
    )
    assert resumed.exit_code == 1
    assert resumed.output == f"Error: {output}: trained on kmnist, not --dataset fashion-mnist\n"
    assert load_checkpoint(output).dataset == "kmnist"


def test_dataset_of_more_than_ten_classes_names_an_npz_before_its_labels_are_checked(
    tmp_path: Path, synthetic_data
) -> None:
    """EMNIST balanced's 47 classes: labels up to 46 are MNIST's digits only by default."""
    rng = np.random.default_rng(0)
    arrays = {**synthetic_data}
    for split in ("train", "test"):
        arrays[f"{split}_labels"] = rng.integers(0, 47, len(arrays[f"{split}_labels"])).astype(np.uint8)
        arrays[f"{split}_labels"][:47] = np.arange(47)
    data = tmp_path / "balanced-part.npz"
    np.savez(data, **arrays)
    output = tmp_path / "balanced.safetensors"
    as_digits = run_train(data, "-o", output, "--epochs", "1", *SMALL_MLP)
    assert as_digits.exit_code == 1 and "outside 0-9" in as_digits.output
    result = run_train(data, "-o", output, "--dataset", "emnist-balanced", "--epochs", "1", *SMALL_MLP)
    assert result.exit_code == 0, result.output
    assert load_checkpoint(output).architecture["num_classes"] == 47
    evaluated = CliRunner().invoke(cli, ["eval", str(output), str(data), "--json", "-"])
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout)["count"] == len(arrays["test_labels"])


def test_a_checkpoint_is_written_under_a_safetensors_name_only(tmp_path: Path, synthetic_npz: Path) -> None:
    """`-o model.pt` (a PyTorch habit) or `model.save("digit.png")` would name safetensors as
    what they are not; refused before any training, with the name to give. /dev/null takes it."""
    import mnistkit

    out = tmp_path / "models"
    out.mkdir()
    result = run_train(synthetic_npz, "-o", out / "model.pt", "--preset", "logreg", "--epochs", "1")
    assert result.exit_code == 1
    assert (
        result.stderr
        == f"Error: {out / 'model.pt'}: a checkpoint is safetensors; name it model.safetensors\n"
    )
    assert not list(out.iterdir())
    for stream in ("/dev/null", "-"):  # standard output takes it as it is
        result = run_train(synthetic_npz, "-o", stream, "--preset", "logreg", "--epochs", "1")
        assert result.exit_code == 0, result.output
    (out / "from-stdout.bin").write_bytes(result.stdout_bytes)
    assert load_checkpoint(out / "from-stdout.bin").architecture["model"] == "logreg"
    (out / "from-stdout.bin").unlink()
    model = mnistkit.train(synthetic_npz, "logreg", epochs=1, verbose=False)
    model.save(out / "model.SAFETENSORS")  # as a file system that ignores case names it
    (out / "model.SAFETENSORS").unlink()
    for name in ("digit.png", "model"):
        with pytest.raises(
            MnistkitError, match=rf"^{re.escape(str(out / name))}: a checkpoint is safetensors"
        ):
            model.save(out / name)
        with pytest.raises(MnistkitError, match="a checkpoint is safetensors"):
            mnistkit.train(synthetic_npz, "logreg", epochs=1, output=out / name)
    assert not list(out.iterdir())


def test_history_never_replaces_a_checkpoint_or_another_file(
    tmp_path: Path, synthetic_npz: Path, synthetic_data
) -> None:
    """--history replaced whatever it named: a checkpoint's name given by a slip lost the model,
    in a notebook as in a shell. It replaces only a history, and is refused before training."""
    model = tmp_path / "model.safetensors"
    assert run_train(synthetic_npz, "-o", model, "--epochs", "1", "--model", "logreg").exit_code == 0
    data_copy = tmp_path / "copy.npz"
    data_copy.write_bytes(synthetic_npz.read_bytes())
    metrics = tmp_path / "metrics.json"  # JSON, but no history: a notebook's .ipynb is such a file
    metrics.write_text('{"accuracy": 0.9,\n "count": 10}\n')
    kept = {path: path.read_bytes() for path in (model, data_copy, metrics)}
    other = ("-o", tmp_path / "b.safetensors", "--model", "logreg")
    result = run_train(synthetic_npz, *other, "--history", model)
    assert result.exit_code == 1
    assert f"{model}: --history is JSON lines, not a checkpoint; give another name" in result.stderr
    for target in (data_copy, metrics):
        result = run_train(synthetic_npz, *other, "--history", target)
        assert result.exit_code == 1
        assert f"{target}: holds no training history, and --history would replace it" in result.stderr
    assert not (tmp_path / "b.safetensors").exists()
    import mnistkit

    for target, message in ((model, "history is JSON lines"), (data_copy, "holds no training history")):
        with pytest.raises(MnistkitError, match=message):
            mnistkit.train(synthetic_data, "logreg", epochs=1, history=target, verbose=False)
    assert {path: path.read_bytes() for path in kept} == kept
    history = tmp_path / "history.jsonl"  # an earlier run's history is replaced, as before
    for epochs in (2, 1):
        result = run_train(
            synthetic_npz,
            "-o",
            tmp_path / "c.safetensors",
            "--history",
            history,
            "--model",
            "logreg",
            "--epochs",
            str(epochs),
        )
        assert result.exit_code == 0, result.output
        assert len(history.read_text().splitlines()) == epochs
