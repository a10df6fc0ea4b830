"""`-` means standard output for every output, as it means standard input for inputs, and a
picture is written in the format its file name asks for."""

from __future__ import annotations

import io
import json
import os
import pty
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from faults import mnistkit_command
from PIL import Image

from mnistkit.architectures import param_shapes
from mnistkit.checkpoint import load_checkpoint, save_checkpoint
from mnistkit.cli import cli

ARCHITECTURE = {"model": "mlp", "hidden": [16], "activation": "relu", "num_classes": 10}


@pytest.fixture
def model(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    params = {
        name: (0.1 * rng.standard_normal(shape)).astype(np.float32)
        for name, shape in param_shapes(ARCHITECTURE).items()
    }
    path = tmp_path / "model.safetensors"
    save_checkpoint(
        path,
        params,
        {"architecture": ARCHITECTURE, "normalization": {"kind": "unit"}, "classes": list(range(10))},
    )
    return path


@pytest.fixture
def digit(tmp_path: Path, synthetic_data) -> Path:
    """One test digit as a PNG file."""
    path = tmp_path / "digit.png"
    Image.fromarray(synthetic_data["test_images"][0]).save(path)
    return path


@dataclass
class Ran:
    returncode: int
    stdout: bytes
    stderr: bytes


def run(*args: str | Path, stdin: bytes | None = None) -> Ran:
    """The command in this process, its stdout bytes captured (not a terminal)."""
    result = CliRunner().invoke(cli, [str(arg) for arg in args], input=stdin)
    return Ran(result.exit_code, result.stdout_bytes, result.stderr_bytes)


def only_inputs_left(folder: Path, *inputs: Path) -> bool:
    return sorted(folder.iterdir()) == sorted(inputs)


def test_eval_json_to_stdout_pipes_into_render_confusion(
    tmp_path: Path, model: Path, synthetic_npz: Path
) -> None:
    evaluation = run("eval", model, synthetic_npz, "--json", "-")
    assert evaluation.returncode == 0, evaluation.stderr
    metrics = json.loads(evaluation.stdout)
    assert metrics["count"] == 200 and "accuracy" in evaluation.stderr.decode()  # the table moved to stderr
    picture = run("render-confusion", "--metrics", "-", "-o", tmp_path / "c.png", stdin=evaluation.stdout)
    assert picture.returncode == 0, picture.stderr
    with Image.open(tmp_path / "c.png") as image:
        assert image.format == "PNG"
    assert only_inputs_left(tmp_path, model, synthetic_npz, tmp_path / "c.png")
    # Stdin is `-` in every message, as it is given (this one said <stdin>, others -).
    broken = run("render-confusion", "--metrics", "-", "-o", tmp_path / "d.png", stdin=b"{}")
    assert broken.stderr.decode() == (
        "Error: -: no 'classes' and 'confusion_matrix' (expected the JSON of eval --json)\n"
    )


def test_a_picture_to_stdout_is_png_bytes_and_no_file(tmp_path: Path, synthetic_npz: Path) -> None:
    result = run("render-samples", synthetic_npz, "-o", "-", "--count", "8")
    assert result.returncode == 0, result.stderr
    with Image.open(io.BytesIO(result.stdout)) as image:
        assert image.format == "PNG" and image.width > 100
    assert b"-: 8 test digits" in result.stderr
    assert only_inputs_left(tmp_path, synthetic_npz)


def test_predictions_and_arrays_to_stdout(
    tmp_path: Path, model: Path, synthetic_raw_dir: Path, synthetic_data, digit: Path
) -> None:
    predicted = run("predict", model, digit, "-o", "-")
    assert predicted.returncode == 0, predicted.stderr
    path, label, confidence = predicted.stdout.decode().strip().split("\t")
    assert path == str(digit) and 0 <= int(label) <= 9 and 0 < float(confidence) <= 1
    parsed = run("parse-to-npz", synthetic_raw_dir, "-o", "-")
    assert parsed.returncode == 0, parsed.stderr
    with np.load(io.BytesIO(parsed.stdout), allow_pickle=False) as archive:
        np.testing.assert_array_equal(archive["train_images"], synthetic_data["train_images"])
    assert not (tmp_path / "-").exists()


@pytest.mark.slow  # two trainings; the history on stdout alone is in test_train
def test_training_history_and_checkpoint_to_stdout(tmp_path: Path, small_data) -> None:
    data = tmp_path / "small.npz"
    np.savez(data, **small_data)
    history = run(
        "train", data, "-o", tmp_path / "m.safetensors", "--history", "-", "--hidden", "8", "--epochs", "3"
    )
    assert history.returncode == 0, history.stderr
    records = [json.loads(line) for line in history.stdout.decode().splitlines()]
    assert [record["epoch"] for record in records] == [1, 2, 3]
    checkpoint = run("train", data, "-o", "-", "--hidden", "8", "--epochs", "1")
    assert checkpoint.returncode == 0, checkpoint.stderr
    (tmp_path / "from-stdout.safetensors").write_bytes(checkpoint.stdout)
    assert load_checkpoint(tmp_path / "from-stdout.safetensors").architecture["hidden"] == [8]
    assert not (tmp_path / "-").exists()


def test_a_history_to_standard_error_goes_between_the_log_lines(tmp_path: Path, synthetic_npz: Path) -> None:
    """`--history /dev/stderr 2> log` opened the log anew, at an offset of its own: the
    history's lines and the log's overwrote each other."""
    log = tmp_path / "log.txt"
    with open(log, "wb") as stderr:
        process = subprocess.run(
            mnistkit_command(
                "train", synthetic_npz, "-o", tmp_path / "m.safetensors", "--history", "/dev/stderr",
                "--model", "logreg", "--epochs", "3",
            ),
            stdout=subprocess.PIPE, stderr=stderr, timeout=120,
        )  # fmt: skip
    assert process.returncode == 0 and process.stdout == b""
    lines = log.read_text().splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert [record["epoch"] for record in records] == [1, 2, 3]
    assert [line.split()[:2] for line in lines if line.startswith("epoch ")] == [
        ["epoch", "1/3"], ["epoch", "2/3"], ["epoch", "3/3"]
    ]  # fmt: skip
    assert lines[-1].startswith("test accuracy")


def test_binary_output_refuses_a_terminal(tmp_path: Path, synthetic_npz: Path) -> None:
    """`-o -` with stdout a terminal would print PNG bytes onto the screen: refused, one line."""
    leader, follower = pty.openpty()
    process = subprocess.run(
        mnistkit_command("render-samples", synthetic_npz, "-o", "-"),
        stdout=follower,
        stderr=subprocess.PIPE,
        timeout=60,
    )
    os.close(follower)
    os.close(leader)
    assert process.returncode == 1
    assert (
        process.stderr.decode().strip()
        == "Error: -: refusing to write binary data to a terminal; redirect standard output"
    )


def test_picture_format_follows_the_file_name(tmp_path: Path, synthetic_npz: Path) -> None:
    for name, expected in (
        ("samples.jpg", "JPEG"),
        ("samples.JPEG", "JPEG"),
        ("samples.png", "PNG"),
        ("samples", "PNG"),
    ):
        result = CliRunner().invoke(
            cli, ["render-samples", str(synthetic_npz), "-o", str(tmp_path / name), "--count", "4"]
        )
        assert result.exit_code == 0, result.output
        with Image.open(tmp_path / name) as image:
            assert image.format == expected, name
    refused = CliRunner().invoke(cli, ["render-samples", str(synthetic_npz), "-o", str(tmp_path / "s.gif")])
    assert refused.exit_code == 1
    assert refused.stderr == f"Error: {tmp_path / 's.gif'}: pictures are written as .png or .jpg, not .gif\n"
    assert not (tmp_path / "s.gif").exists()


@pytest.mark.parametrize("stdout", ["-", "/dev/stdout"])
def test_export_dir_and_a_picture_on_stdout_cannot_share_it(
    tmp_path: Path, synthetic_npz: Path, stdout: str
) -> None:
    result = CliRunner().invoke(
        cli, ["render-samples", str(synthetic_npz), "-o", stdout, "--export-dir", str(tmp_path / "e")]
    )
    assert result.exit_code == 2 and f"-o {stdout} writes the picture to stdout" in result.output
    assert not (tmp_path / "e").exists()


def test_dev_stdout_is_standard_output_as_dash_is(tmp_path: Path, model: Path, synthetic_npz: Path) -> None:
    """`eval --json /dev/stdout` printed its table ahead of the JSON on standard output (a
    file, here, as a redirect makes it), where `--json -` moves the table to stderr."""
    with open(tmp_path / "metrics.json", "wb") as stdout:
        process = subprocess.run(
            mnistkit_command("eval", model, synthetic_npz, "--json", "/dev/stdout"),
            stdout=stdout,
            stderr=subprocess.PIPE,
            timeout=60,
        )
    assert process.returncode == 0, process.stderr
    assert json.loads((tmp_path / "metrics.json").read_text())["count"] == 200
    assert b"accuracy" in process.stderr


def test_an_output_never_overwrites_an_input_or_another_output(
    tmp_path: Path, model: Path, synthetic_npz: Path, digit: Path
) -> None:
    data_bytes, model_bytes = synthetic_npz.read_bytes(), model.read_bytes()
    digit_bytes = digit.read_bytes()
    data_as_state = tmp_path / "d.safetensors.resume"  # as trained once with -o d.safetensors
    data_as_state.write_bytes(data_bytes)
    for args, line in (
        (("train", synthetic_npz, "-o", synthetic_npz), f"{synthetic_npz}: -o would overwrite an input"),
        (("predict", model, digit, "-o", digit), f"{digit}: -o would overwrite an input"),
        (("eval", model, synthetic_npz, "--json", model), f"{model}: --json would overwrite an input"),
        (
            ("train", synthetic_npz, "-o", "-", "--history", "-"),
            "-: -o and --history would both write to standard output",
        ),
        (  # the run's state beside the checkpoint, written each epoch and deleted at the end
            ("train", data_as_state, "-o", tmp_path / "d.safetensors"),
            f"{data_as_state}: -o's run state would overwrite an input",
        ),
        (
            (
                "train",
                synthetic_npz,
                "-o",
                tmp_path / "m.safetensors",
                "--history",
                tmp_path / "m.safetensors.resume",
            ),
            f"{tmp_path / 'm.safetensors.resume'}: --history and -o's run state would both write to",
        ),
        (  # a folder written into is an output too, not "an input"
            ("render-samples", synthetic_npz, "-o", tmp_path / "s.png", "--export-dir", tmp_path / "s.png"),
            f"{tmp_path / 's.png'}: -o and --export-dir would both write to",
        ),
    ):
        result = run(*args)
        assert result.returncode == 1 and result.stderr.decode().startswith(f"Error: {line}"), args
        assert result.stdout == b""
    assert (synthetic_npz.read_bytes(), model.read_bytes(), digit.read_bytes()) == (
        data_bytes,
        model_bytes,
        digit_bytes,
    )
    assert data_as_state.read_bytes() == data_bytes


def test_an_input_named_through_another_is_never_overwritten(
    tmp_path: Path, model: Path, digit: Path, synthetic_raw_dir: Path
) -> None:
    """A raw folder's file, a labels file's image, a path on stdin: each was overwritten."""
    first_file = synthetic_raw_dir / "train-images-idx3-ubyte.gz"
    labels = tmp_path / "labels.tsv"
    labels.write_text(f"{digit}\t7\n")
    before = {path: path.read_bytes() for path in (first_file, digit)}
    for args, stdin, line in (
        (("parse-to-npz", synthetic_raw_dir, "-o", first_file), None, f"{first_file}: -o would overwrite"),
        (("eval", model, "--labels", labels, "--json", digit), None, f"{digit}: --json would overwrite"),
        (("predict", model, "-", "-o", digit), f"{digit}\n".encode(), f"{digit}: -o would overwrite"),
    ):
        result = run(*args, stdin=stdin)
        assert result.returncode == 1 and result.stderr.decode().startswith(f"Error: {line}"), args
        assert " an input of this command" in result.stderr.decode()
    assert {path: path.read_bytes() for path in before} == before


def test_a_reader_that_stops_early_ends_the_command_quietly_as_sigpipe_ends_other_tools(
    tmp_path: Path, model: Path, digit: Path
) -> None:
    paths = tmp_path / "paths.txt"
    paths.write_text(f"{digit}\n" * 20000)  # far more rows than a pipe holds
    with paths.open("rb") as stdin:
        process = subprocess.Popen(
            mnistkit_command("predict", model, "-"),
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        first = process.stdout.readline()
        process.stdout.close()  # as `| head -1` does
        assert process.wait(timeout=120) == -signal.SIGPIPE  # status 141 to a shell
    assert first.decode().startswith(f"{digit}\t") and process.stderr.read() == b""


def test_xargs_stops_at_a_reader_gone_as_it_stops_for_other_tools(model: Path, digit: Path) -> None:
    """xargs starts its next command after one that exited 141, and stops at one that SIGPIPE
    killed: `xargs -0 mnistkit predict CKPT | head` went on through every batch of the list."""
    reader, writer = os.pipe()
    os.close(reader)  # gone before the first row, as `| head -1` is once it has its line
    try:
        result = subprocess.run(
            ["xargs", "-0", "-n", "1", *mnistkit_command("predict", model)],
            input=f"{digit}\0".encode() * 3,
            stdout=writer,
            stderr=subprocess.PIPE,
            timeout=120,
        )
    finally:
        os.close(writer)
    assert result.returncode == 125, result.stderr  # xargs: a command was killed by a signal
    assert result.stderr.decode().count("terminated by signal 13") == 1, result.stderr


def test_ctrl_c_ends_a_shell_loop_around_the_command(model: Path, digit: Path) -> None:
    """The terminal's Ctrl-C reaches the shell and the command alike, and bash ends its loop
    only where the command died of SIGINT: one that took it and exited 130 left
    `for folder in *; do mnistkit predict ...; done` going on with the next folder."""
    loop = 'for round in 1 2; do "$@"; echo "round $round ended with $?" >&2; done'
    process = subprocess.Popen(
        ["bash", "-c", loop, "bash", *mnistkit_command("predict", model, "-")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # a process group of its own, as a terminal's job is
    )
    process.stdin.write(f"{digit}\n".encode())
    process.stdin.flush()
    assert process.stdout.readline().startswith(f"{digit}\t".encode())  # running, its handlers in
    os.killpg(process.pid, signal.SIGINT)
    process.stdin.close()  # a second round would find no paths, and end
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == -signal.SIGINT, stderr
    assert stderr == "mnistkit: interrupted by SIGINT\n"


def test_a_full_standard_output_is_one_line(model: Path) -> None:
    for args in (("info", model), ("--help",), ("--version",)):  # the group's own options too
        with open("/dev/full", "wb") as full:  # Linux's device that refuses every write: ENOSPC
            process = subprocess.run(mnistkit_command(*args), stdout=full, stderr=subprocess.PIPE, timeout=60)
        assert process.returncode == 1, args
        assert process.stderr.decode() == "Error: -: cannot write: no space left on device\n", args


def test_an_output_file_is_written_only_when_every_image_was_read(
    tmp_path: Path, model: Path, digit: Path
) -> None:
    output = tmp_path / "predictions.tsv"
    result = run("predict", model, digit, tmp_path / "missing.png", "-o", output)
    assert result.returncode == 1 and not output.exists()
    assert (
        result.stderr.decode().splitlines()[-1]
        == f"Error: {output}: not written, since 1 image could not be read; without -o the others' rows go "
        "to stdout"
    )
    streamed = run("predict", model, digit, tmp_path / "missing.png")
    assert streamed.returncode == 1 and streamed.stdout.decode().startswith(f"{digit}\t")
    labels = tmp_path / "labels.tsv"
    labels.write_text("digit.png\t7\nmissing.png\t3\n")
    report = tmp_path / "report.json"
    evaluated = run("eval", model, "--labels", labels, "--json", report)
    assert evaluated.returncode == 1 and not report.exists()
    in_new_folders = tmp_path / "reports" / "today" / "predictions.tsv"
    assert run("predict", model, digit, tmp_path / "missing.png", "-o", in_new_folders).returncode == 1
    assert not (tmp_path / "reports").exists(), "the folders made for the output were left behind"
    assert run("predict", model, digit, "-o", in_new_folders).returncode == 0 and in_new_folders.exists()


def test_outputs_are_compared_as_paths_and_options_that_name_no_file_are_not_inputs(
    tmp_path: Path, synthetic_npz: Path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    spelled_twice = run("train", synthetic_npz, "-o", "./h.jsonl", "--history", "h.jsonl", "--show-config")
    assert spelled_twice.returncode == 1
    assert spelled_twice.stderr.decode() == "Error: h.jsonl: -o and --history would both write to h.jsonl\n"
    keep = tmp_path / "keep.safetensors"
    keep.write_bytes(b"a checkpoint")
    history_over_resume = run(
        "train", synthetic_npz, "--resume", keep, "-o", "out.safetensors", "--history", keep
    )
    assert (
        history_over_resume.returncode == 1
        and "--history would overwrite an input" in history_over_resume.stderr.decode()
    )
    assert keep.read_bytes() == b"a checkpoint"
    Path("logreg").write_text("a file named like the preset")
    named_like_a_preset = run("train", synthetic_npz, "-o", "logreg", "--preset", "logreg", "--show-config")
    assert named_like_a_preset.returncode == 0, named_like_a_preset.stderr


def test_a_history_into_a_pipe_is_refused_since_it_is_written_every_epoch(
    tmp_path: Path, synthetic_npz: Path
) -> None:
    fifo = tmp_path / "history"
    os.mkfifo(fifo)
    result = run("train", synthetic_npz, "-o", tmp_path / "m.safetensors", "--history", fifo, "--hidden", "8")
    assert result.returncode == 1 and not (tmp_path / "m.safetensors").exists()
    assert result.stderr.decode().startswith(f"Error: {fifo}: --history is written after every epoch")


def with_closed(stream: str, *args: str | Path) -> subprocess.CompletedProcess:
    """The command with standard output (`>&-`) or input (`<&-`) closed, as a shell can start it."""
    shell = ["bash", "-c", f'exec "$@" {stream}&-', "bash", *mnistkit_command(*args)]
    return subprocess.run(shell, stderr=subprocess.PIPE, text=True, timeout=120)


def test_a_closed_standard_stream_is_one_line_when_data_would_be_lost(
    tmp_path: Path, model: Path, digit: Path, synthetic_npz: Path
) -> None:
    """As `ls >&-` fails: data that has nowhere to go is an error, never a traceback or exit 0."""
    closed_output = "Error: -: cannot write: it is closed (the command was started with >&-)\n"
    for args in (
        ("info", model),
        ("predict", model, digit),
        ("render-samples", synthetic_npz, "-o", "-"),
        ("--help",),  # the group's own options, which write before its commands run
        ("--version",),
    ):
        process = with_closed(">", *args)
        assert (process.returncode, process.stderr) == (1, closed_output), args
    process = with_closed("<", "predict", model, "-")
    assert process.returncode == 1
    assert (
        process.stderr
        == "Error: -: cannot read: standard input is closed (the command was started with <&-)\n"
    )
    picture = tmp_path / "samples.png"
    quiet = with_closed(">", "render-samples", synthetic_npz, "-o", picture)  # writes nothing on stdout
    assert quiet.returncode == 0 and picture.exists(), quiet.stderr


def test_a_closed_standard_error_leaves_the_work_and_the_exit_status_as_they_are(
    tmp_path: Path, model: Path, synthetic_npz: Path
) -> None:
    """`2>&-`: train wrote nothing and exited 1 (isatty on None), and an error line took the
    place of data on stdout. Messages now go nowhere; data and statuses are as ever."""
    trained = tmp_path / "trained.safetensors"
    process = subprocess.run(
        [
            "bash",
            "-c",
            'exec "$@" 2>&-',
            "bash",
            *mnistkit_command("train", synthetic_npz, "-o", trained, "--hidden", "8", "--epochs", "1"),
        ],
        capture_output=True,
        timeout=300,
    )
    assert process.returncode == 0 and trained.exists() and process.stdout == b""
    failed = subprocess.run(
        ["bash", "-c", 'exec "$@" 2>&-', "bash", *mnistkit_command("eval", model, tmp_path / "nowhere.npz")],
        capture_output=True,
        timeout=120,
    )
    assert failed.returncode == 1 and failed.stdout == b""
