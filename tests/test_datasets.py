"""MNIST's siblings: `mnistkit datasets`, make's file names for each, and fetch for each
format against real HTTP mirrors on 127.0.0.1, with synthetic files built byte by byte:
Fashion-MNIST (content hashes), KMNIST (only the official bytes' SHA-256), QMNIST (MD5,
int32 label columns) and EMNIST (one zip holding every split)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import threading
import tracemalloc
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import REPO_ROOT, MirrorServer, fetch_table, idx_bytes, use_fetch_table

from mnistkit.arrays import load_arrays
from mnistkit.cli import cli
from mnistkit.datasets import DATASETS, ExpectedFile, Published
from mnistkit.errors import MnistkitError
from mnistkit.fetch import fetch

EMNIST_SPLITS = ("letters", "digits")


def run(*args: object, env: dict[str, str | None] | None = None):
    return CliRunner().invoke(cli, [str(arg) for arg in args], env={"MNISTKIT_MIRROR": None, **(env or {})})


@pytest.fixture
def serve_files(tmp_path: Path) -> Iterator:
    """Start a MirrorServer (the fault-injecting mirror of conftest) over given files."""
    servers = []

    def start(files: dict[str, bytes]) -> MirrorServer:
        server = MirrorServer(files, tmp_path / "redirect-target")
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        servers.append((server, thread))
        return server

    yield start
    for server, thread in servers:
        server.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def _idx_files(names: dict[str, str], labels_table: bool = False, seed: int = 0) -> dict[str, bytes]:
    """A dataset's four files, small: 12 training and 5 test images, gzip-compressed."""
    rng = np.random.default_rng(seed)
    files = {}
    for split, count in (("train", 12), ("test", 5)):
        labels = rng.integers(0, 10, count)
        if labels_table:
            labels = np.column_stack([labels, rng.integers(0, 1000, (count, 7))]).astype(np.int32)
        files[names[f"{split}_images"]] = gzip.compress(
            idx_bytes(rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)), mtime=0
        )
        files[names[f"{split}_labels"]] = gzip.compress(idx_bytes(labels), mtime=0)
    return files


def _official_only(files: dict[str, bytes], algorithm: str = "sha256", sized: bool = True) -> tuple:
    """What fetch expects of files whose content hash nobody published: the official bytes'."""
    return tuple(
        ExpectedFile(
            name,
            "",
            len(gzip.decompress(data)),
            2 * len(data),
            Published(algorithm, hashlib.new(algorithm, data).hexdigest(), len(data) if sized else None),
        )
        for name, data in files.items()
    )


def test_datasets_lists_every_dataset_and_imports_no_numpy() -> None:
    table = run("datasets")
    assert table.exit_code == 0
    rows = {line.split()[0]: line.split() for line in table.stdout.splitlines()[1:]}
    assert list(rows) == list(DATASETS)
    assert rows["emnist-balanced"][1:4] == ["47", "112,800", "18,800"]
    assert rows["fashion-mnist"][-1] == "fashion-mnist.s3-website.eu-central-1.amazonaws.com"
    facts = json.loads(run("datasets", "--json").stdout)
    assert [fact["name"] for fact in facts] == list(DATASETS)
    one = json.loads(run("datasets", "fashion-mnist", "--json").stdout)  # an object, for jq .class_names
    assert one == facts[list(DATASETS).index("fashion-mnist")]
    content_sums = {fact["name"]: {entry["sha256"] for entry in fact["downloads"]} for fact in facts}
    assert content_sums["qmnist"] == {None}  # no one has published them: null, not ""
    assert all(len(digest) == 64 for digest in content_sums["fashion-mnist"])
    assert "Ankle boot" in run("datasets", "fashion-mnist").stdout
    details = run("datasets", "emnist-balanced").stdout.splitlines()
    archive = DATASETS["emnist-balanced"].downloads[0]
    assert f"checksum    {archive.name}: official SHA-256 {archive.published.digest}" in details
    mnist_labels = next(
        entry for entry in DATASETS["mnist"].downloads if entry.name.startswith("t10k-labels")
    )
    assert any(
        line.startswith(f"checksum    {mnist_labels.name}: content SHA-256 {mnist_labels.sha256}")
        for line in run("datasets", "mnist").stdout.splitlines()
    )
    code = (
        "import sys\nfrom mnistkit.cli import cli\n"
        "cli.main(args=['datasets'], prog_name='mnistkit', standalone_mode=False)\n"
        "print('numpy' in sys.modules, file=sys.stderr)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stderr.splitlines()[-1] == "False"


def _make_values(dataset: str, expression: str) -> list[str]:
    """What `expression` (make variables) expands to in the project's Makefile for `dataset`."""
    make = ["make", "-s", "--no-print-directory", "-f", str(REPO_ROOT / "Makefile")]
    rule = f"print-value: ; @echo {expression}"
    result = subprocess.run(
        [*make, "--eval", rule, "print-value", f"DATASET={dataset}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.split()


@pytest.mark.parametrize(
    ("variables", "environment", "expected"),
    [
        ([], {}, "--preset fast"),
        (["MODEL=cnn"], {}, "--model cnn"),  # the preset named cnn, as --model alone gives
        (["MODEL=logreg", "PRESET=cnn"], {}, "--model logreg --preset cnn"),  # PRESET was dropped
        (["MODEL=cnn"], {"PRESET": "mlp"}, "--model cnn --preset mlp"),
        (["MODEL=mlp", "PRESET="], {}, "--model mlp"),  # an empty PRESET is none
    ],
)
def test_make_passes_model_and_preset_as_the_command_takes_them(
    variables: list[str], environment: dict[str, str], expected: str
) -> None:
    make = ["make", "-s", "--no-print-directory", "-f", str(REPO_ROOT / "Makefile")]
    result = subprocess.run(
        [*make, "--eval", "print-value: ; @echo $(train_args)", "print-value", *variables],
        capture_output=True,
        text=True,
        check=True,
        env={**{k: v for k, v in os.environ.items() if k not in ("PRESET", "MODEL")}, **environment},
    )
    assert " ".join(result.stdout.split()).startswith(f"{expected} --seed 0")


def test_make_gives_each_dataset_its_own_files() -> None:
    """make's idea of each dataset's raw files is the registry's; MNIST's files are where make
    all has always put them; no two datasets share a file."""
    every_file = []
    for dataset, spec in DATASETS.items():
        raw, (npz, checkpoint, reports) = (
            _make_values(dataset, "$(RAW)"),
            _make_values(dataset, "$(NPZ) $(CKPT) $(REPORTS)"),
        )
        folder = "data/raw" if dataset == "mnist" else f"data/{dataset}/raw"
        assert raw == [f"{folder}/{name}" for name in spec.files.values()]
        if dataset == "mnist":
            assert (npz, checkpoint, reports) == ("data/mnist.npz", "models/model.safetensors", "reports")
        else:
            assert (npz, checkpoint, reports) == (
                f"data/{dataset}/{dataset}.npz",
                f"models/{dataset}/model.safetensors",
                f"reports/{dataset}",
            )
        every_file += [*raw, npz, checkpoint]
    assert len(set(every_file)) == len(every_file)


@pytest.mark.parametrize(
    "target, says",
    [("bench", "measures MNIST"), ("docs", "draws the README's MNIST pictures")],
)
def test_make_bench_and_docs_refuse_another_dataset_before_making_anything(
    tmp_path: Path, target: str, says: str
) -> None:
    """The bench's aims and the README's pictures are MNIST's: with DATASET=fashion-mnist each
    says so at once, instead of fetching Fashion-MNIST and then measuring MNIST, or drawing
    clothes over the README's digits (and copying MNIST's reports beside them)."""
    make = ["make", "-s", "--no-print-directory", "-f", str(REPO_ROOT / "Makefile"), "-C", str(tmp_path)]
    result = subprocess.run([*make, target, "DATASET=fashion-mnist"], capture_output=True, text=True)
    assert result.returncode == 2
    assert f"make {target}: {says}, not DATASET=fashion-mnist; run it without DATASET" in result.stderr
    assert list(tmp_path.iterdir()) == []
    planned = subprocess.run(
        ["make", "-s", "--no-print-directory", "-n", "bench"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert ".venv/bin/python scripts/bench_train.py data/mnist.npz --raw data/raw" in planned


@pytest.mark.parametrize("dataset", ["mnist", "fashion-mnist"])
def test_make_help_lists_every_commented_target_by_its_files(dataset: str) -> None:
    """`make help` names every target the Makefile describes, grouped recipes too, by the
    files that target builds for the dataset."""
    described = [
        line for line in (REPO_ROOT / "Makefile").read_text().splitlines() if re.match(r"^\S.*:.*## ", line)
    ]
    result = subprocess.run(
        ["make", "-s", "--no-print-directory", "help", f"DATASET={dataset}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    targets = [line.split()[0] for line in result.stdout.splitlines()]
    assert len(targets) == len(described)
    raw, npz, checkpoint = (
        _make_values(dataset, "$(RAW_DIR)"),
        _make_values(dataset, "$(NPZ)"),
        _make_values(dataset, "$(CKPT)"),
    )
    assert {f"{raw[0]}/*.gz", npz[0], checkpoint[0], "all", "test"} <= set(targets)
    assert not any("$" in target or "&" in target for target in targets)
    assert f"run the whole pipeline (DATASET={dataset})" in result.stdout  # it said mnist for each


def test_fashion_mnist_from_a_mirror_that_serves_mnist_under_the_same_names(
    tmp_path: Path, serve_files, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The incident the issue recalls: a mirror answered with MNIST's files for Fashion-MNIST's
    names. Fetch verifies each by content, refuses them, and takes the next mirror's."""
    fashion = _idx_files(DATASETS["fashion-mnist"].files, seed=1)
    use_fetch_table(monkeypatch, fetch_table(fashion), "fashion-mnist")
    wrong, right = serve_files(_idx_files(DATASETS["mnist"].files, seed=2)), serve_files(fashion)
    out = tmp_path / "raw"
    result = run(
        "fetch", "--dataset", "fashion-mnist", "--out", out, "--no-default-mirrors",
        "--mirror", wrong.url("good"), "--mirror", right.url("good"),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "content SHA-256" in result.stderr.splitlines()[0] and "is not the expected" in result.stderr
    assert {path.name: path.read_bytes() for path in out.iterdir()} == fashion
    assert right.hits["good"] == 4 and wrong.hits["good"] == 1  # not tried again after failing once


@pytest.mark.parametrize("algorithm, sized", [("sha256", True), ("md5", False)], ids=["kmnist", "qmnist"])
def test_official_checksums_take_the_official_bytes_only(
    tmp_path: Path, serve_files, algorithm: str, sized: bool
) -> None:
    """KMNIST (SHA-256 and size) and QMNIST (MD5) publish no content hash: a mirror that
    recompressed the files cannot be verified, so it is refused and the official copy taken."""
    official = _idx_files(DATASETS["qmnist"].files, labels_table=True)
    recompressed = {
        name: gzip.compress(gzip.decompress(data), compresslevel=1) for name, data in official.items()
    }
    table = _official_only(official, algorithm, sized)
    lines: list[str] = []
    mirrors = [serve_files(recompressed).url("good"), serve_files(official).url("good")]
    fetch(tmp_path / "raw", mirrors, files=table, log=lines.append)
    assert "(only the official bytes can be verified" in lines[0]
    name = "SHA-256" if algorithm == "sha256" else "MD5"
    assert lines[-1].endswith(f"{name} of the official file verified)")
    assert {path.name: path.read_bytes() for path in (tmp_path / "raw").iterdir()} == official


def test_qmnist_through_the_cli_keeps_its_label_columns(
    tmp_path: Path, serve_files, monkeypatch: pytest.MonkeyPatch
) -> None:
    official = _idx_files(DATASETS["qmnist"].files, labels_table=True)
    use_fetch_table(monkeypatch, _official_only(official, "md5", sized=False), "qmnist")
    mirror = serve_files(official)
    result = run(
        "fetch", "--dataset", "qmnist", "--out", tmp_path / "raw", "--no-default-mirrors",
        env={"MNISTKIT_MIRROR": mirror.url("{dataset}")},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert mirror.hits["qmnist"] == 4  # {dataset} became the dataset's name
    npz = tmp_path / "qmnist.npz"
    parsed = run("parse-to-npz", tmp_path / "raw", "--dataset", "qmnist", "--label-columns", "-o", npz)
    assert parsed.exit_code == 0, parsed.output
    arrays = load_arrays(npz)
    table = np.frombuffer(gzip.decompress(official["qmnist-train-labels-idx2-int.gz"])[12:], ">i4").reshape(
        -1, 8
    )
    np.testing.assert_array_equal(arrays["train_label_columns"], table)
    np.testing.assert_array_equal(arrays["train_labels"], table[:, 0])
    assert str(arrays["dataset"]) == "qmnist" and list(arrays["class_names"]) == [str(d) for d in range(10)]


def test_a_dataset_placeholder_in_the_mirror_names_each_dataset_s_folder(tmp_path: Path, monkeypatch) -> None:
    fashion = _idx_files(DATASETS["fashion-mnist"].files, seed=4)
    use_fetch_table(monkeypatch, fetch_table(fashion), "fashion-mnist")
    (tmp_path / "mirrors" / "fashion-mnist").mkdir(parents=True)
    for name, data in fashion.items():
        (tmp_path / "mirrors" / "fashion-mnist" / name).write_bytes(data)
    env = {"MNISTKIT_MIRROR": str(tmp_path / "mirrors" / "{dataset}")}
    result = run(
        "fetch", "--dataset", "fashion-mnist", "--out", tmp_path / "raw", "--no-default-mirrors", env=env
    )
    assert result.exit_code == 0, result.output
    assert f"fetched from {tmp_path / 'mirrors' / 'fashion-mnist'}" in result.stderr


# EMNIST: one zip -------------------------------------------------------------------------


def _emnist_zip(stored: bool = False, member_bytes: int = 0) -> tuple[bytes, dict[str, dict[str, bytes]]]:
    """A gzip.zip laid out as NIST's: gzip/emnist-{split}-{train,test}-{images-idx3,labels-idx1}-ubyte.gz
    for two splits, and the members each split must get. `member_bytes` pads the letters'
    training images with incompressible pixels."""
    members = {}
    for index, split in enumerate(EMNIST_SPLITS):
        members[split] = _idx_files(DATASETS[f"emnist-{split}"].files, seed=10 + index)
        if split == "letters":
            for key in ("train_labels", "test_labels"):
                name = DATASETS["emnist-letters"].files[key]
                labels = np.frombuffer(gzip.decompress(members[split][name])[8:], np.uint8) + 1
                members[split][name] = gzip.compress(idx_bytes(labels), mtime=0)
    if member_bytes:
        count = member_bytes // 784 + 1
        name = DATASETS["emnist-letters"].files["train_images"]
        images = np.random.default_rng(0).integers(0, 256, (count, 28, 28), dtype=np.uint8)
        members["letters"][name] = gzip.compress(idx_bytes(images), compresslevel=1, mtime=0)
        labels_name = DATASETS["emnist-letters"].files["train_labels"]
        members["letters"][labels_name] = gzip.compress(idx_bytes(np.ones(count, np.uint8)), mtime=0)
    buffer = io.BytesIO()
    method = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for split_members in members.values():
            for name, data in split_members.items():
                archive.writestr(zipfile.ZipInfo(f"gzip/{name}", (2017, 1, 1, 0, 0, 0)), data, method)
        archive.writestr("gzip/emnist-letters-mapping.txt", "1 65 97\n")
    return buffer.getvalue(), members


def _use_emnist_zip(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    """Make every EMNIST split expect this zip, by its SHA-256 and size as NIST's is published."""
    archive = ExpectedFile(
        "gzip.zip", "", len(data), len(data), Published("sha256", hashlib.sha256(data).hexdigest(), len(data))
    )
    for split in EMNIST_SPLITS:
        use_fetch_table(monkeypatch, (archive,), f"emnist-{split}")


def test_emnist_splits_come_from_one_download_of_the_zip(tmp_path: Path, serve_files, monkeypatch) -> None:
    data, members = _emnist_zip()
    _use_emnist_zip(monkeypatch, data)
    mirror = serve_files({"gzip.zip": data})
    cache = tmp_path / "cache"
    for split in EMNIST_SPLITS:
        out = tmp_path / split
        result = run(
            "fetch", "--dataset", f"emnist-{split}", "--out", out, "--cache", cache,
            "--no-default-mirrors", "--mirror", mirror.url("good"),
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert result.stdout.splitlines() == [
            str(out / name) for name in DATASETS[f"emnist-{split}"].files.values()
        ]
        assert {path.name: path.read_bytes() for path in out.iterdir()} == members[split]
    assert mirror.hits["good"] == 1
    assert sorted(path.name for path in (cache / "emnist").iterdir()) == ["gzip.zip"]
    again = run("fetch", "--dataset", "emnist-letters", "--out", tmp_path / "letters", "--cache", cache,
                "--no-default-mirrors", "--mirror", mirror.url("good"))  # fmt: skip
    assert again.exit_code == 0 and mirror.hits["good"] == 1
    assert again.stderr.count("already extracted and valid") == 4


def test_emnist_letters_parse_upright_with_their_names(tmp_path: Path, monkeypatch) -> None:
    data, members = _emnist_zip()
    _use_emnist_zip(monkeypatch, data)
    (tmp_path / "mirror").mkdir()
    (tmp_path / "mirror" / "gzip.zip").write_bytes(data)
    mirrors = [str(tmp_path / "mirror")]
    fetch(tmp_path / "raw", mirrors, dataset="emnist-letters", cache_dir=tmp_path / "cache", log=print)
    npz = tmp_path / "letters.npz"
    assert run("parse-to-npz", tmp_path / "raw", "--dataset", "emnist-letters", "-o", npz).exit_code == 0
    arrays = load_arrays(npz)
    stored = np.frombuffer(
        gzip.decompress(members["letters"]["emnist-letters-test-images-idx3-ubyte.gz"])[16:], np.uint8
    )
    np.testing.assert_array_equal(arrays["test_images"], stored.reshape(-1, 28, 28).transpose(0, 2, 1))
    assert int(arrays["train_labels"].min()) >= 0 and list(arrays["class_names"])[:3] == ["a", "b", "c"]


def test_the_zip_is_streamed_never_held_in_memory(tmp_path: Path, monkeypatch) -> None:
    """A 6 MB zip (its letters' training images incompressible) fetched from a folder and
    extracted: the peak of Python's allocations stays a fraction of it."""
    data, members = _emnist_zip(stored=True, member_bytes=6 << 20)
    assert len(data) > 6 << 20
    _use_emnist_zip(monkeypatch, data)
    (tmp_path / "mirror").mkdir()
    (tmp_path / "mirror" / "gzip.zip").write_bytes(data)
    tracemalloc.start()
    try:
        fetch(tmp_path / "raw", [str(tmp_path / "mirror")], dataset="emnist-letters",
              cache_dir=tmp_path / "cache", log=lambda line: None)  # fmt: skip
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 3 << 20, peak
    name = DATASETS["emnist-letters"].files["train_images"]
    assert (tmp_path / "raw" / name).read_bytes() == members["letters"][name]


def test_a_stalled_mirror_of_the_zip_costs_one_timeout(tmp_path: Path, serve_files, monkeypatch) -> None:
    data, members = _emnist_zip()
    _use_emnist_zip(monkeypatch, data)
    server = serve_files({"gzip.zip": data})
    lines: list[str] = []
    fetch(tmp_path / "raw", [server.url("stall"), server.url("good")], timeout_s=0.5,
          dataset="emnist-digits", cache_dir=tmp_path / "cache", log=lines.append)  # fmt: skip
    assert "timed out (nothing received for 0.5 s)" in lines[0]
    assert {path.name: path.read_bytes() for path in (tmp_path / "raw").iterdir()} == members["digits"]


def test_a_damaged_member_is_one_line_and_leaves_no_file(tmp_path: Path, monkeypatch) -> None:
    data, _ = _emnist_zip(stored=True)
    name = "gzip/" + DATASETS["emnist-digits"].files["test_images"]
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        info = archive.getinfo(name)
    start = info.header_offset + 30 + len(info.filename) + 40  # inside the stored member's bytes
    damaged = data[:start] + bytes([data[start] ^ 0xFF]) + data[start + 1 :]
    _use_emnist_zip(monkeypatch, damaged)
    (tmp_path / "mirror").mkdir()
    (tmp_path / "mirror" / "gzip.zip").write_bytes(damaged)
    with pytest.raises(MnistkitError) as error:
        fetch(tmp_path / "raw", [str(tmp_path / "mirror")], dataset="emnist-digits",
              cache_dir=tmp_path / "cache", log=lambda line: None)  # fmt: skip
    assert "damaged archive (Bad CRC-32" in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "raw" / Path(name).name).exists()
    assert not [path for path in (tmp_path / "raw").iterdir() if path.name.endswith(".tmp")]


def test_load_dataset_keeps_each_dataset_where_make_does(tmp_path: Path, monkeypatch) -> None:
    import mnistkit

    fashion = _idx_files(DATASETS["fashion-mnist"].files, seed=6)
    use_fetch_table(monkeypatch, fetch_table(fashion), "fashion-mnist")
    (tmp_path / "mirror").mkdir()
    for name, data in fashion.items():
        (tmp_path / "mirror" / name).write_bytes(data)
    monkeypatch.setenv("MNISTKIT_MIRROR", str(tmp_path / "mirror"))
    arrays = mnistkit.load_dataset("fashion-mnist", tmp_path / "data")
    assert sorted(path.name for path in (tmp_path / "data" / "fashion-mnist").iterdir()) == [
        "fashion-mnist.npz",
        "raw",
    ]
    assert str(arrays["dataset"]) == "fashion-mnist" and list(arrays["class_names"])[9] == "Ankle boot"
