"""Scale: data parallel over forced CPU devices, two processes through gloo, ensembles under vmap.

Device counts are fixed when jax starts, so the multi-device and multi-process runs are
`mnistkit train` subprocesses (XLA_FLAGS set before jax starts); each compares with one
plain process on one device.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mnistkit.architectures import check_architecture
from mnistkit.checkpoint import load_checkpoint
from mnistkit.cli import cli
from mnistkit.errors import MnistkitError
from mnistkit.inference import member_params, predict_probabilities

# A small run through every path the devices share: shuffled batches, the last one partial,
# shift augmentation, and the test set evaluated each epoch in split blocks.
TRAIN_OPTIONS = [
    "--hidden",
    "16",
    "--epochs",
    "2",
    "--batch-size",
    "64",
    "--lr",
    "3e-3",
    "--augment",
    "shift",
    "--eval-test-each-epoch",
]
FORCE_4_DEVICES = "--xla_force_host_platform_device_count=4"


def mnistkit_process(*args: str | Path, xla_flags: str = "") -> subprocess.Popen:
    env = {**os.environ, "XLA_FLAGS": xla_flags, "JAX_PLATFORMS": "cpu"}
    return subprocess.Popen(
        [sys.executable, "-m", "mnistkit", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def finish(process: subprocess.Popen) -> str:
    """Wait for a process that must succeed; its stderr."""
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    return stderr


def history(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_same_training(run: Path, reference: Path, test_images: np.ndarray) -> None:
    """Per-epoch losses equal up to float summation order; the checkpoints predict alike."""
    for record, expected in zip(
        history(run.with_suffix(".jsonl")), history(reference.with_suffix(".jsonl")), strict=True
    ):
        for key in ("train_loss", "train_accuracy", "test_loss", "test_accuracy"):
            assert record[key] == pytest.approx(expected[key], rel=1e-5, abs=1e-6), (record["epoch"], key)
    probabilities = load_checkpoint(run).predict_probabilities(test_images)
    expected_probabilities = load_checkpoint(reference).predict_probabilities(test_images)
    np.testing.assert_array_equal(probabilities.argmax(axis=1), expected_probabilities.argmax(axis=1))
    np.testing.assert_allclose(probabilities, expected_probabilities, atol=1e-5)


@pytest.fixture(scope="module")
def scale_npz(tmp_path_factory: pytest.TempPathFactory, synthetic_data) -> Path:
    path = tmp_path_factory.mktemp("scale") / "mnist.npz"
    np.savez(path, **synthetic_data)
    return path


@pytest.fixture(scope="module")
def one_device_run(scale_npz: Path) -> Path:
    """The reference: one plain process on its one CPU device."""
    output = scale_npz.parent / "one-device.safetensors"
    process = mnistkit_process(
        "train", scale_npz, "-o", output, "--history", output.with_suffix(".jsonl"), *TRAIN_OPTIONS
    )
    assert "data parallel" not in finish(process)
    return output


def test_four_devices_train_like_one(tmp_path: Path, scale_npz: Path, one_device_run: Path, synthetic_data):
    output = tmp_path / "four-devices.safetensors"
    process = mnistkit_process(
        "train",
        scale_npz,
        "-o",
        output,
        "--history",
        output.with_suffix(".jsonl"),
        *TRAIN_OPTIONS,
        xla_flags=FORCE_4_DEVICES,
    )
    assert "data parallel over 4 cpu devices" in finish(process)
    assert_same_training(output, one_device_run, synthetic_data["test_images"])
    settings = [
        {
            key: value
            for key, value in load_checkpoint(path).metadata.items()
            if key not in ("metrics", "history")
        }
        for path in (output, one_device_run)
    ]
    assert settings[0] == settings[1]  # the device count is no training setting


def test_devices_that_do_not_divide_the_batch_are_refused(tmp_path: Path, scale_npz: Path) -> None:
    output = tmp_path / "model.safetensors"
    runs = {
        "uneven": mnistkit_process(
            "train",
            scale_npz,
            "-o",
            output,
            "--devices",
            "3",
            "--batch-size",
            "64",
            xla_flags=FORCE_4_DEVICES,
        ),
        "too many": mnistkit_process(
            "train", scale_npz, "-o", output, "--devices", "8", xla_flags=FORCE_4_DEVICES
        ),
    }
    errors = {name: process.communicate(timeout=120)[1] for name, process in runs.items()}
    assert all(process.returncode == 1 for process in runs.values()), errors
    assert errors["uneven"].strip() == (
        "Error: --batch-size 64 does not split evenly over 3 devices (1 process(es) x 3); "
        "use a batch size that is a multiple of 3, or other --devices"
    )
    assert errors["too many"].strip() == "Error: --devices 8: this process has 4 cpu device(s)"
    assert not output.exists()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_processes_train_like_one_and_only_the_first_writes(
    tmp_path: Path, scale_npz: Path, one_device_run: Path, synthetic_data
) -> None:
    outputs = [tmp_path / f"process-{index}.safetensors" for index in range(2)]
    cluster = ["--coordinator", f"127.0.0.1:{free_port()}", "--num-processes", "2"]
    processes = [
        mnistkit_process(
            "train",
            scale_npz,
            "-o",
            output,
            "--history",
            output.with_suffix(".jsonl"),
            *TRAIN_OPTIONS,
            *cluster,
            "--process-id",
            str(index),
        )
        for index, output in enumerate(outputs)
    ]
    first_log, second_log = (finish(process) for process in processes)
    assert "data parallel over 2 cpu devices in 2 processes" in first_log
    assert "epoch 2/2" in first_log and "epoch" not in second_log
    assert not outputs[1].exists() and not outputs[1].with_suffix(".jsonl").exists()
    assert_same_training(outputs[0], one_device_run, synthetic_data["test_images"])


def test_a_process_whose_peers_never_come_gives_up_at_join_timeout(tmp_path: Path, scale_npz: Path) -> None:
    """JAX ends a process that cannot gather its cluster (abort, with its own message): what
    --join-timeout sets is when, instead of JAX's 300 s."""
    output = tmp_path / "lonely.safetensors"
    cluster = ["--coordinator", f"127.0.0.1:{free_port()}", "--num-processes", "2", "--process-id", "0"]
    started = time.perf_counter()
    process = mnistkit_process(
        "train", scale_npz, "-o", output, *TRAIN_OPTIONS, *cluster, "--join-timeout", "2"
    )
    _, stderr = process.communicate(timeout=120)
    assert process.returncode != 0, stderr
    assert time.perf_counter() - started < 60
    assert not output.exists() and list(tmp_path.iterdir()) == []


def train(*args: str | Path) -> None:
    result = CliRunner().invoke(cli, ["train", *map(str, args)])
    assert result.exit_code == 0, result.output


ENSEMBLE_OPTIONS = [option for option in TRAIN_OPTIONS if option != "--eval-test-each-epoch"]


def test_ensemble_members_train_like_single_seeds_and_eval_reports_each(
    tmp_path: Path, synthetic_npz: Path, synthetic_data
) -> None:
    ensemble, single = tmp_path / "ensemble.safetensors", tmp_path / "seed-1.safetensors"
    train(synthetic_npz, "-o", ensemble, "--seeds", "0,1", *ENSEMBLE_OPTIONS)
    train(synthetic_npz, "-o", single, "--seed", "1", *ENSEMBLE_OPTIONS)
    checkpoint, alone = load_checkpoint(ensemble), load_checkpoint(single)
    assert checkpoint.architecture == {
        "model": "ensemble",
        "members": 2,
        "member": alone.architecture,
        "num_classes": 10,
    }
    member = member_params(checkpoint.params, 1)
    for name, tensor in alone.params.items():
        np.testing.assert_allclose(member[name], tensor, atol=1e-6)

    images = synthetic_data["test_images"]
    member_probabilities = [
        predict_probabilities(
            member_params(checkpoint.params, i), alone.architecture, alone.normalization, images
        )
        for i in range(2)
    ]
    np.testing.assert_allclose(
        checkpoint.predict_probabilities(images), np.mean(member_probabilities, axis=0), atol=1e-6
    )

    metrics = tmp_path / "metrics.json"
    result = CliRunner().invoke(cli, ["eval", str(ensemble), str(synthetic_npz), "--json", str(metrics)])
    assert result.exit_code == 0, result.output
    report = json.loads(metrics.read_text())
    labels = synthetic_data["test_labels"]
    member_accuracies = [float(np.mean(p.argmax(axis=1) == labels)) for p in member_probabilities]
    assert [row["accuracy"] for row in report["members"]] == pytest.approx(member_accuracies)
    assert report["accuracy"] == pytest.approx(checkpoint.metadata["metrics"]["test_accuracy"])
    assert report["members"][1]["accuracy"] == pytest.approx(alone.metadata["metrics"]["test_accuracy"])
    assert "ensemble of 2" in result.stdout
    assert f"     1  {report['members'][1]['accuracy']:>8.2%}" in result.stdout


def test_ensemble_resumes_like_training_in_one_go(tmp_path: Path, synthetic_npz: Path) -> None:
    one_go, resumed = tmp_path / "one-go.safetensors", tmp_path / "resumed.safetensors"
    options = ["--ensemble", "2", "--schedule", "constant", *ENSEMBLE_OPTIONS[:2], "--batch-size", "64"]
    train(synthetic_npz, "-o", one_go, "--epochs", "2", *options)
    train(synthetic_npz, "-o", resumed, "--epochs", "1", *options)
    train(synthetic_npz, "-o", resumed, "--resume", resumed, "--epochs", "2")
    assert resumed.read_bytes() == one_go.read_bytes()
    members = load_checkpoint(one_go).metadata["history"][-1]["members"]
    assert [member["seed"] for member in members] == [0, 1]


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--seeds", "1,1"], "--seeds: an ensemble needs 2 to 1024 distinct seeds"),
        (["--seeds", "4"], "--seeds: an ensemble needs 2 to 1024 distinct seeds"),
        (["--ensemble", "1"], "--ensemble: an ensemble needs at least 2 members"),
        (["--ensemble", "2", "--seeds", "0,1"], "give --seeds or --ensemble, not both"),
        (["--coordinator", "nowhere"], "--coordinator: expected HOST:PORT"),
        (["--num-processes", "2", "--process-id", "2"], "--process-id 2 must be below --num-processes 2"),
    ],
)
def test_bad_scale_options_are_one_line(
    tmp_path: Path, synthetic_npz: Path, options: list[str], expected: str
):
    output = tmp_path / "model.safetensors"
    result = CliRunner().invoke(cli, ["train", str(synthetic_npz), "-o", str(output), *options])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and result.output.startswith(f"Error: {expected}"), result.output
    assert not output.exists()


MEMBER = {"model": "mlp", "hidden": [4], "activation": "relu", "num_classes": 10}


@pytest.mark.parametrize(
    "architecture",
    [
        {"model": "ensemble", "members": 1, "member": MEMBER, "num_classes": 10},
        {"model": "ensemble", "members": 10**9, "member": MEMBER, "num_classes": 10},
        {"model": "ensemble", "members": True, "member": MEMBER, "num_classes": 10},
        {"model": "ensemble", "members": 2, "member": {**MEMBER, "num_classes": 3}, "num_classes": 10},
        {
            "model": "ensemble",
            "members": 2,
            "member": {"model": "ensemble", "members": 2, "member": MEMBER, "num_classes": 10},
            "num_classes": 10,
        },
        {"model": "ensemble", "members": 2, "member": "mlp", "num_classes": 10},
    ],
    ids=[
        "one member",
        "a billion members",
        "members true",
        "classes disagree",
        "nested",
        "member not a dict",
    ],
)
def test_impossible_ensembles_are_refused(architecture: dict) -> None:
    with pytest.raises(MnistkitError):
        check_architecture(architecture)
