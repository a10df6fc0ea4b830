"""The Makefile's own rules, where they keep or refuse files: run against a stand-in for
`mnistkit` that records its arguments, so each test takes a second."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import REPO_ROOT

from mnistkit.datasets import MNIST_FILES

# Fetches two of the four files whole, as fetch writes them, then fails as a mirror that lacks
# the third would (or as a Ctrl-C would stop it); any other command is recorded, and writes
# the file its -o names.
# STAND_IN_WRITES gives other bytes to write; STAND_IN_STOPS "before" or "after" writing
# stops it there as a Ctrl-C would.
STAND_IN = """
import os
import sys
from pathlib import Path
with open("calls.txt", "a") as calls:
    calls.write(" ".join(sys.argv[1:]) + "\\n")
if os.environ.get("STAND_IN_STOPS") == "before":
    sys.exit(130)
if "-o" in sys.argv:
    Path(sys.argv[sys.argv.index("-o") + 1]).write_bytes(os.environ.get("STAND_IN_WRITES", "made").encode())
if os.environ.get("STAND_IN_STOPS") == "after":
    sys.exit(130)
if os.environ.get("STAND_IN_WAITS"):  # written, and still running: for a signal to stop it
    Path(os.environ["STAND_IN_WAITS"]).touch()
    import time
    time.sleep(60)
if sys.argv[1] == "fetch":
    from mnistkit.datasets import MNIST_FILES
    out = Path(sys.argv[sys.argv.index("--out") + 1])
    out.mkdir(parents=True, exist_ok=True)
    for name in list(MNIST_FILES.values())[:2]:
        (out / name).write_bytes(b"verified")
    sys.exit(1)
"""


def run_make(folder: Path, *arguments: str, **environment: str) -> subprocess.CompletedProcess[str]:
    stand_in = folder / "stand_in.py"
    stand_in.write_text(STAND_IN)
    (folder / "pyproject.toml").write_text("")  # older than the venv's mark: nothing to install
    os.utime(folder / "pyproject.toml", (0, 0))
    installed = folder / "installed"
    installed.touch()
    make = ["make", "--no-print-directory", "-f", str(REPO_ROOT / "Makefile"), "-C", str(folder)]
    variables = [f"INSTALLED={installed}", f"MNISTKIT={sys.executable} {stand_in}"]
    return subprocess.run(
        [*make, *variables, *arguments],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **environment},
    )


def test_a_failed_fetch_keeps_the_files_it_verified(tmp_path: Path) -> None:
    """make's .DELETE_ON_ERROR deleted the files fetch had verified when a later one failed,
    and the next run downloaded them all again."""
    result = run_make(tmp_path, "data/mnist.npz")
    assert result.returncode != 0 and result.stdout.count("fetch --dataset mnist") == 1, result.stdout
    assert "Deleting" not in result.stderr, result.stderr
    kept = sorted(path.name for path in (tmp_path / "data/raw").iterdir())
    assert kept == sorted(list(MNIST_FILES.values())[:2])


def test_make_trains_no_checkpoint_but_its_own(tmp_path: Path) -> None:
    """`make models/cnn.safetensors` trained models/model.safetensors, again on each run;
    a model of another dataset's folder, without DATASET, was MNIST's."""
    (tmp_path / "data/raw").mkdir(parents=True)
    for name in MNIST_FILES.values():
        (tmp_path / "data/raw" / name).write_bytes(b"fetched")
        os.utime(tmp_path / "data/raw" / name, (0, 0))
    (tmp_path / "data/mnist.npz").write_bytes(b"parsed")
    (tmp_path / "models").mkdir()
    for other in ("models/cnn.safetensors", "models/fashion-mnist/model.safetensors"):
        result = run_make(tmp_path, other)
        assert result.returncode != 0
        assert f"make trains models/model.safetensors for DATASET=mnist, not {other}; " in result.stderr
        assert "for another dataset: make all DATASET=NAME; for another file: " in result.stderr
        assert not (tmp_path / "calls.txt").exists()
    # -o or --history in TRAIN_ARGS came after make's own and won: make trained again each time.
    for given in (
        "-o ../mine.safetensors",
        "--output=m.safetensors",
        "--history h.jsonl",
        "--history=h.jsonl",
    ):
        result = run_make(tmp_path, "models/model.safetensors", f"TRAIN_ARGS=--epochs 1 {given}")
        assert result.returncode != 0 and not (tmp_path / "calls.txt").exists()
        dropped = given.split()[0]
        assert (
            "TRAIN_ARGS: make names the checkpoint (models/model.safetensors) and its history "
            f"itself, drop {dropped}; " in result.stderr
        )
    assert (
        run_make(tmp_path, "models/model.safetensors", "TRAIN_ARGS=--optimizer sgd --hidden 64").returncode
        == 0
    )
    assert (
        (tmp_path / "calls.txt").read_text().startswith("train data/mnist.npz -o models/model.safetensors ")
    )


def test_exported_samples_that_are_gone_are_exported_again(tmp_path: Path) -> None:
    """predictions.tsv reads reports/samples/*.png, made with samples.png: with them deleted,
    make found everything up to date, and a later predict was given the literal `*.png`; with
    one deleted, the rows of the rest stood beside the row of an image no longer there."""
    made = [f"data/raw/{name}" for name in MNIST_FILES.values()] + ["data/mnist.npz"]
    made += ["models/model.safetensors", "models/model.history.jsonl", "reports/samples.png"]
    made += ["reports/samples/0.png", "reports/samples/1.png", "reports/predictions.tsv"]
    for age, name in enumerate(made):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"made")
        os.utime(tmp_path / name, (age, age))
    (tmp_path / "reports/predictions.tsv").write_text(
        "reports/samples/0.png\t7\t0.9\nreports/samples/1.png\t2\t0.8\n"
    )
    os.utime(tmp_path / "reports/predictions.tsv", (len(made), len(made)))
    train_args = run_make(tmp_path, "--eval", "train-args: ; @echo $(new_args)", "train-args").stdout
    (tmp_path / "models/train-args.txt").write_text(train_args)  # the model was trained so
    assert run_make(tmp_path, "reports/predictions.tsv").returncode == 0
    assert not (tmp_path / "calls.txt").exists()  # all up to date
    (tmp_path / "reports/samples/0.png").unlink()  # one of them: its row would stand
    assert run_make(tmp_path, "reports/predictions.tsv").returncode == 0
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    assert [call.split()[0] for call in calls] == ["render-samples", "predict"], calls
    # All of them gone while predictions.tsv still names them (a Ctrl-C in render-samples,
    # after the recipe emptied the folder): both reasons at once were a target FORCEFORCE,
    # "No rule to make target", and every later make failed.
    (tmp_path / "calls.txt").unlink()
    for png in (tmp_path / "reports/samples").glob("*.png"):
        png.unlink()
    (tmp_path / "reports/predictions.tsv").write_text("reports/samples/0.png\t7\t0.9\n")
    for arguments in (["-n"], []):
        result = run_make(tmp_path, *arguments, "reports/predictions.tsv")
        assert result.returncode == 0, result.stderr
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    assert [call.split()[0] for call in calls] == ["render-samples", "predict"], calls


def test_a_checkpoint_trained_by_hand_in_makes_place_stops_make(tmp_path: Path) -> None:
    """`mnistkit train data/mnist.npz -o models/model.safetensors`, then `make all`: make took
    the newer checkpoint as its own, and the reports described a model it never trained.
    Training over it would lose it: make stops and says what to do."""
    _with_data(tmp_path)
    (tmp_path / "models").mkdir()
    assert run_make(tmp_path, "models/model.safetensors").returncode == 0
    assert (tmp_path / "calls.txt").read_text().startswith("train ")
    (tmp_path / "calls.txt").unlink()
    (tmp_path / "models/model.history.jsonl").write_bytes(b"made")
    assert run_make(tmp_path, "models/model.safetensors").returncode == 0
    assert not (tmp_path / "calls.txt").exists()  # make's own: up to date
    (tmp_path / "models/model.safetensors").write_bytes(b"trained by hand")
    stopped = run_make(tmp_path, "models/model.safetensors")
    assert stopped.returncode != 0 and not (tmp_path / "calls.txt").exists()
    assert stopped.stderr.startswith(
        "make: models/model.safetensors is not the model make trained (its checksum is not the one in "
        "models/train-args.txt); move it elsewhere to keep it, or delete it and make trains its own\n"
    )
    assert (tmp_path / "models/model.safetensors").read_bytes() == b"trained by hand"
    (tmp_path / "models/model.safetensors").unlink()
    assert run_make(tmp_path, "help").stderr == ""  # no checksum of a file that is gone
    assert run_make(tmp_path, "models/model.safetensors").returncode == 0
    assert (
        (tmp_path / "calls.txt").read_text().startswith("train data/mnist.npz -o models/model.safetensors ")
    )


def _with_data(folder: Path) -> None:
    """The four files fetch writes and the .npz made from them, each older than the next."""
    made = [f"data/raw/{name}" for name in MNIST_FILES.values()] + ["data/mnist.npz"]
    for age, name in enumerate(made):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"made")
        os.utime(folder / name, (age, age))


def _trained_by_make(folder: Path) -> None:
    """The data, and a model make trained from it and recorded."""
    _with_data(folder)
    assert run_make(folder, "models/model.safetensors").returncode == 0
    (folder / "models/model.history.jsonl").write_bytes(b"made")  # train's, which the stand-in is not
    (folder / "calls.txt").unlink()


def test_a_run_stopped_between_its_checkpoint_and_its_record_is_makes_own(tmp_path: Path) -> None:
    """Ctrl-C as train exits, or make itself killed, left the new checkpoint beside the old
    checksum: every later make refused it as one trained by hand, for ever."""
    _trained_by_make(tmp_path)
    stopped = run_make(
        tmp_path, "models/model.safetensors", "EPOCHS=3", STAND_IN_STOPS="after", STAND_IN_WRITES="3"
    )
    assert stopped.returncode != 0 and (tmp_path / "models/model.safetensors").read_bytes() == b"3"
    (tmp_path / "calls.txt").unlink()
    again = run_make(tmp_path, "models/model.safetensors", "EPOCHS=3")
    assert again.returncode == 0, again.stderr
    assert not (tmp_path / "calls.txt").exists()  # up to date: the model of that run
    assert run_make(tmp_path, "models/model.safetensors", "EPOCHS=4").returncode == 0
    assert "--epochs 4" in (tmp_path / "calls.txt").read_text()  # other settings train again


def test_a_run_stopped_before_it_wrote_a_checkpoint_trains_again(tmp_path: Path) -> None:
    """Its settings are recorded as it starts: the model of the settings before is not taken
    for the one it never wrote."""
    _trained_by_make(tmp_path)
    stopped = run_make(tmp_path, "models/model.safetensors", "EPOCHS=3", STAND_IN_STOPS="before")
    assert stopped.returncode != 0 and (tmp_path / "models/model.safetensors").read_bytes() == b"made"
    (tmp_path / "calls.txt").unlink()
    assert run_make(tmp_path, "models/model.safetensors", "EPOCHS=3").returncode == 0
    assert "--epochs 3" in (tmp_path / "calls.txt").read_text()


def test_a_checkpoint_trained_by_hand_and_stopped_midway_stops_make_too(tmp_path: Path) -> None:
    """Its .resume beside it switched the check off: make took the run for its own, and
    trained over both."""
    _trained_by_make(tmp_path)
    (tmp_path / "models/model.safetensors").write_bytes(b"epoch 65 of 300, by hand")
    (tmp_path / "models/model.safetensors.resume").write_bytes(b"its state")
    stopped = run_make(tmp_path, "models/model.safetensors")
    assert stopped.returncode != 0 and not (tmp_path / "calls.txt").exists()
    assert stopped.stderr.startswith("make: models/model.safetensors is not the model make trained")
    assert (tmp_path / "models/model.safetensors.resume").read_bytes() == b"its state"


def test_a_run_that_wrote_nothing_leaves_the_model_before_as_it_was(tmp_path: Path) -> None:
    """`make all EPOCHS=3` refused or stopped before its first checkpoint, then `make all`:
    the settings of the model there had been overwritten by the run's, and it trained again."""
    _trained_by_make(tmp_path)
    stopped = run_make(tmp_path, "models/model.safetensors", "EPOCHS=3", STAND_IN_STOPS="before")
    assert stopped.returncode != 0
    (tmp_path / "calls.txt").unlink()
    assert run_make(tmp_path, "models/model.safetensors").returncode == 0
    assert not (tmp_path / "calls.txt").exists()  # up to date: the model of the settings before


def test_the_record_of_a_stopped_run_is_written_so_a_later_hand_made_model_is_still_refused(
    tmp_path: Path,
) -> None:
    """The mark of a run in progress stayed in the file: a model trained by hand later was
    taken for that run's."""
    _trained_by_make(tmp_path)
    run_make(tmp_path, "models/model.safetensors", "EPOCHS=3", STAND_IN_STOPS="after", STAND_IN_WRITES="3")
    assert run_make(tmp_path, "models/model.safetensors", "EPOCHS=3").returncode == 0
    assert len((tmp_path / "models/train-args.txt").read_text().splitlines()) == 2  # a record again
    (tmp_path / "calls.txt").unlink()
    (tmp_path / "models/model.safetensors").write_bytes(b"trained by hand")
    stopped = run_make(tmp_path, "models/model.safetensors", "EPOCHS=4")
    assert stopped.returncode != 0 and not (tmp_path / "calls.txt").exists()
    assert stopped.stderr.startswith("make: models/model.safetensors is not the model make trained")


def test_a_run_of_makes_stopped_midway_twice_still_resumes(tmp_path: Path) -> None:
    """Resumed, and stopped again before its next epoch, make's own run was refused as a
    checkpoint trained by hand."""
    _trained_by_make(tmp_path)
    run_make(
        tmp_path, "models/model.safetensors", "EPOCHS=3", STAND_IN_STOPS="after", STAND_IN_WRITES="epoch 1"
    )
    (tmp_path / "models/model.safetensors.resume").write_bytes(b"its state")  # stopped midway
    again = run_make(tmp_path, "models/model.safetensors", "EPOCHS=3", STAND_IN_STOPS="before")
    assert "not the model make trained" not in again.stderr
    (tmp_path / "calls.txt").unlink()
    resumed = run_make(tmp_path, "models/model.safetensors", "EPOCHS=3")
    assert resumed.returncode == 0, resumed.stderr
    assert "--epochs 3" in (tmp_path / "calls.txt").read_text()


def test_a_model_made_by_hand_after_a_run_that_wrote_nothing_is_refused(tmp_path: Path) -> None:
    """The mark of a run that wrote nothing stayed in the file, and any checkpoint later found
    there, one trained by hand, was taken for that run's, reported on and trained over."""
    _trained_by_make(tmp_path)
    run_make(tmp_path, "models/model.safetensors", "EPOCHS=3", STAND_IN_STOPS="before")
    (tmp_path / "calls.txt").unlink(missing_ok=True)
    (tmp_path / "models/model.safetensors").write_bytes(b"trained by hand")  # no make in between
    stopped = run_make(tmp_path, "models/model.safetensors", "EPOCHS=3")
    assert stopped.returncode != 0 and not (tmp_path / "calls.txt").exists()
    assert stopped.stderr.startswith("make: models/model.safetensors is not the model make trained")


def test_a_model_made_by_hand_before_make_ever_trained_is_refused(tmp_path: Path) -> None:
    """The README's train example run first, then `make all`: with no record at all, make
    trained over the model in silence."""
    _with_data(tmp_path)
    (tmp_path / "models").mkdir()
    (tmp_path / "models/model.safetensors").write_bytes(b"trained by hand")
    stopped = run_make(tmp_path, "models/model.safetensors")
    assert stopped.returncode != 0 and not (tmp_path / "calls.txt").exists()
    assert stopped.stderr.startswith(
        "make: models/model.safetensors is not the model make trained (there is no models/train-args.txt); "
    )


def test_ctrl_c_to_the_whole_of_make_leaves_the_record_of_what_train_wrote(tmp_path: Path) -> None:
    """A terminal's Ctrl-C reaches make, its shell and train: the record was written by make's
    next recipe line, which never ran, so the model train had written was refused as made by
    hand (or, before the record was kept by make, taken for its own)."""
    _trained_by_make(tmp_path)
    waiting = tmp_path / "waiting"
    stand_in = tmp_path / "stand_in.py"
    stand_in.write_text(STAND_IN)
    make = ["make", "--no-print-directory", "-f", str(REPO_ROOT / "Makefile"), "-C", str(tmp_path)]
    variables = [f"INSTALLED={tmp_path / 'installed'}", f"MNISTKIT={sys.executable} {stand_in}", "EPOCHS=3"]
    environment = {**os.environ, "STAND_IN_WAITS": str(waiting), "STAND_IN_WRITES": "epoch 3 of 3"}
    process = subprocess.Popen(
        [*make, *variables, "models/model.safetensors"],
        env=environment, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 120  # a margin for the heaviest load: it takes 2 s alone
    while not waiting.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    # Sent before train started, the Ctrl-C would stop the shell's trap instead, and train run on.
    assert waiting.exists(), "train never started"
    os.killpg(process.pid, signal.SIGINT)
    process.communicate(timeout=120)
    record = (tmp_path / "models/train-args.txt").read_text().splitlines()
    assert len(record) == 2 and record[0].endswith("--epochs 3"), record
    with open(tmp_path / "models/model.safetensors", "rb") as written:
        assert (
            record[1]
            == subprocess.run(["cksum"], stdin=written, capture_output=True, text=True).stdout.strip()
        )
    (tmp_path / "calls.txt").unlink()
    assert run_make(tmp_path, "models/model.safetensors", "EPOCHS=3").returncode == 0
    assert not (tmp_path / "calls.txt").exists()  # its own model, up to date


def test_an_old_one_line_record_outlives_a_run_that_wrote_nothing(tmp_path: Path) -> None:
    """An earlier make's record has the arguments alone: a run stopped before writing deleted
    it, and make then refused its own model as one with no record."""
    _trained_by_make(tmp_path)
    record = tmp_path / "models/train-args.txt"
    record.write_text(record.read_text().splitlines()[0] + "\n")  # as make wrote it before
    run_make(tmp_path, "models/model.safetensors", "EPOCHS=3", STAND_IN_STOPS="before")
    assert len(record.read_text().splitlines()) == 1
    (tmp_path / "calls.txt").unlink()
    assert run_make(tmp_path, "models/model.safetensors").returncode == 0
    assert not (tmp_path / "calls.txt").exists()
