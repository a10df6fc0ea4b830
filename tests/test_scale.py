"""Scale: data parallel over forced CPU devices, two processes through gloo, ensembles under vmap.

Device counts are fixed when jax starts, so the multi-device and multi-process runs are
`mnistkit train` subprocesses (XLA_FLAGS set before jax starts); each compares with one
plain process on one device.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import loss_and_accuracy
from faults import mnistkit_command

from mnistkit.architectures import check_architecture
from mnistkit.checkpoint import load_checkpoint
from mnistkit.cli import cli
from mnistkit.errors import MnistkitError
from mnistkit.inference import member_params, predict_probabilities
from mnistkit.rendezvous import gather
from mnistkit.run_state import state_path

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


def mnistkit_process(*args: str | Path, xla_flags: str = "", **env_vars: str) -> subprocess.Popen:
    env = {**os.environ, "XLA_FLAGS": xla_flags, "JAX_PLATFORMS": "cpu", **env_vars}
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_evaluation_split_over_three_devices_agrees_with_numpy(
    tmp_path: Path, scale_npz: Path, synthetic_data
) -> None:
    """Evaluation steps of 300 rows, 100 a device; the 200 test digits padded to one block; a
    CNN reading each digit five times."""
    output = tmp_path / "three-devices.safetensors"
    options = ["--model", "cnn", "--channels", "4,8", "--hidden", "16", "--epochs", "1", "--batch-size", "48"]
    process = mnistkit_process(
        "train",
        scale_npz,
        "-o",
        output,
        *options,
        "--shift-average",
        xla_flags="--xla_force_host_platform_device_count=3",
    )
    assert "data parallel over 3 cpu devices" in finish(process)
    checkpoint = load_checkpoint(output)
    labels = synthetic_data["test_labels"]
    probabilities = checkpoint.predict_probabilities(synthetic_data["test_images"])
    metrics = checkpoint.metadata["metrics"]
    loss, accuracy = loss_and_accuracy(probabilities, labels)
    assert metrics["test_accuracy"] == pytest.approx(accuracy, abs=1e-9)
    assert metrics["test_loss"] == pytest.approx(loss, rel=1e-5)


@pytest.mark.slow
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


@pytest.mark.slow
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


# A process of a run that only meets and watches the others (no jax): it joins, says so on
# stdout, and ends cleanly when told "finish" on stdin, or uncleanly when stdin closes.
PARTICIPANT = """
import sys
from mnistkit.rendezvous import gather
membership = gather(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), 10)
membership.watch()
print("joined", flush=True)
if sys.stdin.readline().strip() == "finish":
    membership.finish()
"""


def participant(coordinator: str, num_processes: int, process_id: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", PARTICIPANT, coordinator, str(num_processes), str(process_id)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


class InThread:
    """A participant run by a thread of the test, recording what would end its process."""

    def __init__(self, coordinator: str, num_processes: int, process_id: int, timeout_s: float = 10) -> None:
        self.stops: list[str] = []
        self.error: MnistkitError | None = None
        self.membership = None
        self.thread = threading.Thread(
            target=self._run, args=(coordinator, num_processes, process_id, timeout_s), daemon=True
        )
        self.thread.start()

    def _run(self, coordinator: str, num_processes: int, process_id: int, timeout_s: float) -> None:
        try:
            self.membership = gather(coordinator, num_processes, process_id, timeout_s)
        except MnistkitError as error:
            self.error = error
            return
        self.membership.watch(on_stop=self.stops.append)

    def joined(self) -> InThread:
        self.thread.join(30)
        assert self.error is None and self.membership is not None
        return self


def test_processes_meet_and_a_clean_end_is_not_taken_for_a_death() -> None:
    coordinator = f"127.0.0.1:{free_port()}"
    others = [participant(coordinator, 3, process_id) for process_id in (0, 2)]
    me = InThread(coordinator, 3, 1)
    assert [process.stdout.readline() for process in others] == ["joined\n"] * 2
    me.joined()
    for process in others:
        process.communicate("finish\n", timeout=10)
    assert [process.returncode for process in others] == [0, 0]
    assert not me.membership.wait_for_a_stop(0.5) and me.stops == []


@pytest.mark.parametrize("victim", [2, 0], ids=["process 2 killed", "process 0 killed"])
def test_a_killed_process_ends_the_others_with_one_line(victim: int) -> None:
    """Process 1 runs in a thread; 0 and 2 are processes. Process 0 sees 2 die directly and
    passes it on to 1; a death of 0 is seen by both others directly."""
    coordinator = f"127.0.0.1:{free_port()}"
    processes = {process_id: participant(coordinator, 3, process_id) for process_id in (0, 2)}
    me = InThread(coordinator, 3, 1)
    assert [process.stdout.readline() for process in processes.values()] == ["joined\n"] * 2
    me.joined()
    processes[victim].kill()
    line = f"process {victim} of 3 stopped; stopping this one too, without a final checkpoint"
    assert me.membership.wait_for_a_stop(5) and me.stops == [line]
    survivor = processes[2 - victim]
    assert survivor.wait(timeout=5) == 1  # stdin stays open: only the watcher ends it
    assert survivor.stderr.read() == f"Error: {line}\n"
    processes[victim].communicate(timeout=5)


def test_a_process_that_ends_on_an_error_is_a_stopped_process() -> None:
    coordinator = f"127.0.0.1:{free_port()}"
    other = participant(coordinator, 2, 1)
    me = InThread(coordinator, 2, 0)
    assert other.stdout.readline() == "joined\n"
    me.joined()
    other.communicate("", timeout=5)
    assert me.membership.wait_for_a_stop(5)
    assert me.stops == ["process 1 of 2 stopped; stopping this one too, without a final checkpoint"]


def test_a_process_that_leaves_on_its_own_stop_is_not_ended_by_the_others() -> None:
    """Ctrl-C stops every process of a run: one that has said its line and is leaving is not
    ended again, with exit status 1 and a second line, by another that went first. The others
    still see it go as a stop."""
    coordinator = f"127.0.0.1:{free_port()}"
    other = participant(coordinator, 2, 1)
    me = InThread(coordinator, 2, 0)
    assert other.stdout.readline() == "joined\n"
    me.joined()
    me.membership.leave()
    other.communicate("", timeout=5)  # it goes too, without a "done"
    assert not me.membership.wait_for_a_stop(0.5) and me.stops == []


def test_missing_processes_are_named_within_the_timeout() -> None:
    """Process 0 gives up first and says who is missing; a process that gives up while it
    waits for the start says so; one that finds no process 0 says that."""
    coordinator = f"127.0.0.1:{free_port()}"
    started = time.perf_counter()
    first, second = InThread(coordinator, 3, 0, 0.5), InThread(coordinator, 3, 1, 5)
    first.thread.join(10)
    second.thread.join(10)
    assert time.perf_counter() - started < 3
    assert (
        str(first.error)
        == "process 0: 2 of 3 processes joined within 0.5 s (missing: 2); no checkpoint written"
    )
    assert (
        str(second.error) == "process 1 of 3: process 0 gave up waiting (missing: 2); no checkpoint written"
    )

    first, second = InThread(coordinator, 3, 0, 1), InThread(coordinator, 3, 1, 0.5)
    second.thread.join(10)
    assert str(second.error) == (
        f"process 1 of 3: the coordinator at {coordinator} did not start the run within 0.5 s "
        "(other processes missing); no checkpoint written"
    )
    first.thread.join(10)

    alone = InThread(coordinator, 3, 2, 0.5)
    alone.thread.join(10)
    assert str(alone.error) == (
        f"process 2 of 3: no coordinator at {coordinator} within 0.5 s (connection refused); "
        "no checkpoint written"
    )


def test_two_processes_with_one_id_are_refused() -> None:
    coordinator = f"127.0.0.1:{free_port()}"
    first = InThread(coordinator, 3, 0, 5)
    twins = [InThread(coordinator, 3, 1, 5) for _ in range(2)]
    for participant_thread in (first, *twins):
        participant_thread.thread.join(10)
    expected = "two processes say --process-id 1; no checkpoint written"
    assert str(first.error) == expected
    assert {str(twin.error) for twin in twins} == {f"process 1 of 3: {expected}"}


JOIN_TIMEOUT_S = 2
# jax starts in a few seconds, more on a loaded machine; JAX's own abort came after 300 s.
START_SLACK_S = 20


@pytest.mark.slow
@pytest.mark.parametrize(
    ("process_id", "expected"),
    [
        ("0", "Error: process 0: 1 of 2 processes joined within 2 s (missing: 1); no checkpoint written"),
        (
            "1",
            "Error: process 1 of 2: no coordinator at {coordinator} within 2 s (connection refused); "
            "no checkpoint written",
        ),
    ],
    ids=["process 0", "process 1"],
)
def test_a_lonely_process_gives_up_at_join_timeout_with_one_line(
    tmp_path: Path, scale_npz: Path, process_id: str, expected: str
) -> None:
    output = tmp_path / "lonely.safetensors"
    coordinator = f"127.0.0.1:{free_port()}"
    cluster = ["--coordinator", coordinator, "--num-processes", "2", "--process-id", process_id]
    started = time.perf_counter()
    process = mnistkit_process(
        "train", scale_npz, "-o", output, *TRAIN_OPTIONS, *cluster, "--join-timeout", str(JOIN_TIMEOUT_S)
    )
    _, stderr = process.communicate(timeout=120)
    elapsed_s = time.perf_counter() - started
    assert process.returncode == 1, stderr
    assert stderr.splitlines() == [expected.format(coordinator=coordinator)]
    assert JOIN_TIMEOUT_S <= elapsed_s < JOIN_TIMEOUT_S + START_SLACK_S
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_distributed_takes_the_launchers_settings_and_gives_up_with_one_line(
    tmp_path: Path, scale_npz: Path
) -> None:
    """Under Slurm (its variables set by hand here), --distributed meets the others where JAX
    will: the first node of the step, at $JAX_COORDINATOR_PORT."""
    port = str(free_port())
    slurm = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "localhost", "SLURM_NTASKS": "2"}
    process = mnistkit_process(
        "train",
        scale_npz,
        "-o",
        tmp_path / "model.safetensors",
        "--distributed",
        "--join-timeout",
        str(JOIN_TIMEOUT_S),
        JAX_COORDINATOR_PORT=port,
        SLURM_PROCID="1",
        SLURM_LOCALID="1",
        **slurm,
    )
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 1
    assert stderr.splitlines() == [
        f"Error: process 1 of 2: no coordinator at localhost:{port} within 2 s (connection refused); "
        "no checkpoint written"
    ]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize("victim", [1, 0], ids=["process 1 killed", "process 0 killed"])
def test_a_process_killed_mid_training_ends_the_other_with_one_line(
    tmp_path: Path, scale_npz: Path, victim: int
) -> None:
    outputs = [tmp_path / f"process-{index}.safetensors" for index in range(2)]
    cluster = ["--coordinator", f"127.0.0.1:{free_port()}", "--num-processes", "2"]
    options = [*TRAIN_OPTIONS, "--epochs", "500"]
    processes = [
        mnistkit_process("train", scale_npz, "-o", output, *options, *cluster, "--process-id", str(index))
        for index, output in enumerate(outputs)
    ]
    for line in processes[0].stderr:
        if re.match(r"epoch +2/500", line):
            break
    processes[victim].kill()
    killed = time.perf_counter()
    survivor = processes[1 - victim]
    _, stderr = survivor.communicate(timeout=120)
    elapsed_s = time.perf_counter() - killed
    processes[victim].communicate(timeout=60)
    assert survivor.returncode == 1, stderr
    assert elapsed_s < 10
    line = f"Error: process {victim} of 2 stopped; stopping this one too, without a final checkpoint"
    after_training = [text for text in stderr.splitlines() if not text.startswith("epoch")]
    if victim == 1:
        assert after_training == [line]
    else:
        # When process 0 dies, JAX's client in the other may log the lost coordination
        # service first (an E and an F line, from C++); the watcher's line still ends it.
        assert after_training[-1] == line and "Traceback" not in stderr, stderr
    assert not outputs[0].exists() and not outputs[1].exists()


@pytest.mark.slow
def test_ctrl_c_to_both_processes_ends_each_by_it_with_one_line(tmp_path: Path, scale_npz: Path) -> None:
    """A terminal's Ctrl-C reaches every process of a run started there. Process 1, the first
    to die of it, was taken by process 0 for a death: exit status 1 and an `Error:` line
    after its own interrupt's."""
    output = tmp_path / "model.safetensors"
    cluster = ["--coordinator", f"127.0.0.1:{free_port()}", "--num-processes", "2"]
    processes = [
        mnistkit_process("train", scale_npz, "-o", output, *TRAIN_OPTIONS, "--epochs", "500", *cluster,
                         "--process-id", str(index))
        for index in range(2)
    ]  # fmt: skip
    for line in processes[0].stderr:
        if re.match(r"epoch +2/500", line):
            break
    for process in processes:
        process.send_signal(signal.SIGINT)
    logs = [process.communicate(timeout=120)[1] for process in processes]
    assert [process.returncode for process in processes] == [-signal.SIGINT] * 2, logs
    interrupted = [line for line in logs[0].splitlines() if not line.startswith("epoch")]
    assert interrupted[-1].startswith("mnistkit: interrupted by SIGINT; saved the checkpoint of epoch "), logs
    assert "Error" not in logs[0] and output.exists()


@pytest.mark.slow
@pytest.mark.parametrize("signalled", [1, 0], ids=["SIGTERM to process 1", "SIGINT to process 0"])
def test_a_stop_sent_to_one_process_stops_every_one_at_the_same_step(
    tmp_path: Path, scale_npz: Path, signalled: int
) -> None:
    """`kill -INT` to one process of a run (or Ctrl-C to the one in the foreground): it stopped
    alone, and the others, waiting for it in their next step, were aborted inside gloo
    (SIGABRT, "collective mismatch"). Every process now stops after the same step, process 0
    keeps the last complete epoch, and the same command continues from it."""
    output = tmp_path / "model.safetensors"
    stop = (signal.SIGINT, signal.SIGTERM)[signalled]
    cluster = ["--coordinator", f"127.0.0.1:{free_port()}", "--num-processes", "2"]
    command = ["train", scale_npz, "-o", output, *TRAIN_OPTIONS, "--epochs", "500", *cluster]
    processes = [mnistkit_process(*command, "--process-id", str(index)) for index in range(2)]
    for line in processes[0].stderr:
        if re.match(r"epoch +2/500", line):
            break
    processes[signalled].send_signal(stop)
    logs = [process.communicate(timeout=120)[1] for process in processes]
    assert [process.returncode for process in processes] == [-stop] * 2, logs
    kept = int(load_checkpoint(output).metadata["metrics"]["epochs"])
    assert kept >= 2 and state_path(output).exists()  # what the same command continues from
    last_lines = [log.splitlines()[-1] for log in logs]
    name = signal.Signals(stop).name
    saved = f"saved the checkpoint of epoch {kept} of 500 to {output}"
    assert last_lines[signalled] == f"mnistkit: interrupted by {name}; {saved}", logs
    assert last_lines[1 - signalled] == f"mnistkit: process {signalled} was interrupted by {name}; {saved}", (
        logs
    )
    assert "Error" not in logs[0] + logs[1] and "abort" not in (logs[0] + logs[1]).lower()


def train(*args: str | Path) -> None:
    result = CliRunner().invoke(cli, ["train", *map(str, args)])
    assert result.exit_code == 0, result.output


ENSEMBLE_OPTIONS = [option for option in TRAIN_OPTIONS if option != "--eval-test-each-epoch"]


@pytest.mark.slow  # ensembles also train, resume and save in the fast test_resume
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
        # jax keeps a seed's low 32 bits: these trained as seed 0, and this ensemble's members alike
        (["--seed", "4294967296"], "--seed: seeds lie in 0 to 4294967295, got 4294967296"),
        (["--seed", "-1"], "--seed: seeds lie in 0 to 4294967295, got -1"),
        (["--seeds", "0,4294967296"], "--seeds: seeds lie in 0 to 4294967295, got 4294967296"),
        (["--seed", "99999999999999999999"], "--seed: seeds lie in 0 to 4294967295"),
        (["--seed", "4294967295", "--ensemble", "2"], "--seed 4294967295 and --ensemble 2: the members'"),
        # a model no checkpoint could hold: a traceback from jax, or a checkpoint written and refused
        (["--hidden", "1,99999999999999999999"], "the model would keep 1,200,000,000,000,000,000,"),
        (["--model", "cnn", "--channels", "60000,60000"], "the model would keep"),
        (["--hidden", "500000", "--optimizer", "adam"], "the model would keep 1,192,500,032 numbers"),
        (["--hidden", "512", "--ensemble", "1000"], "the model would keep 1,221,152,000 numbers (its 407,"),
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


def test_a_multi_process_option_alone_names_the_options_missing(tmp_path: Path, synthetic_npz: Path):
    """JAX's own words name its arguments (`coordinator_address should be defined`)."""
    output = tmp_path / "model.safetensors"
    result = subprocess.run(
        mnistkit_command("train", synthetic_npz, "-o", output, "--process-id", "1"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and not output.exists()
    assert result.stderr == (
        "Error: cannot join the multi-process run: give --coordinator and --num-processes as well, "
        "or start it under a cluster launcher that sets them (Slurm, Open MPI)\n"
    )


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


def wait_for(path: Path, processes: list[subprocess.Popen], timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert all(process.poll() is None for process in processes), (
            "the run ended before its state was saved"
        )
        assert time.monotonic() < deadline
        time.sleep(0.01)


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["two devices", "two processes"])
def test_a_killed_parallel_run_resumes_to_the_uninterrupted_bytes(
    tmp_path: Path, scale_npz: Path, layout
) -> None:
    """Two forced devices, or two processes (one SIGKILLed, which ends the other): the same
    commands again continue from the saved epoch and write the uninterrupted run's bytes."""
    options = [*TRAIN_OPTIONS, "--epochs", "4"]

    def start(folder: Path) -> list[subprocess.Popen]:
        folder.mkdir(exist_ok=True)
        args = ["train", scale_npz, "-o", folder / "model.safetensors", "--history", folder / "history.jsonl"]
        if layout == "two devices":
            return [mnistkit_process(*args, *options, "--devices", "2", xla_flags=FORCE_4_DEVICES)]
        cluster = ["--coordinator", f"127.0.0.1:{free_port()}", "--num-processes", "2"]
        return [mnistkit_process(*args, *options, *cluster, "--process-id", str(index)) for index in (0, 1)]

    for process in start(tmp_path / "once"):
        finish(process)
    processes = start(tmp_path / "killed")
    wait_for(tmp_path / "killed" / "model.safetensors.resume", processes)
    processes[-1].kill()
    stderrs = [process.communicate(timeout=120)[1] for process in processes]
    if layout == "two processes":  # the survivor stops at once, with one line and no checkpoint
        assert processes[0].returncode == 1
        assert stderrs[0].splitlines()[-1].startswith("Error: process 1 of 2 stopped"), stderrs[0]
    assert not (tmp_path / "killed" / "model.safetensors").exists()
    logs = [finish(process) for process in start(tmp_path / "killed")]
    assert re.search(r"resuming from .*: epoch [1-3] of 4 was done", logs[0]), logs[0]
    for name in ("model.safetensors",):
        assert (tmp_path / "killed" / name).read_bytes() == (tmp_path / "once" / name).read_bytes()
    assert [
        {k: v for k, v in r.items() if k != "seconds"} for r in history(tmp_path / "killed" / "history.jsonl")
    ] == [
        {k: v for k, v in r.items() if k != "seconds"} for r in history(tmp_path / "once" / "history.jsonl")
    ]
