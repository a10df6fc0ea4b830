"""Each way a mirror can misbehave: fetch notes it in one line, keeps nothing wrong,
writes no more than the cap, and moves on to the next mirror; a stalled or dripping
mirror costs about one timeout, once per run."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import SLOW_PACE, MirrorServer, fetch_table, use_fetch_table

from mnistkit.cli import cli
from mnistkit.datasets import dataset_spec
from mnistkit.errors import MnistkitError
from mnistkit.fetch import ExpectedFile, fetch, local_copy_hint
from mnistkit.mirrors import DEFAULT_MIRRORS

NAME = "t10k-labels-idx1-ubyte.gz"
TIMEOUT_S = 0.5

# (server behaviour, or "refused" for a port where nothing listens; what the line says)
FAULTS = [
    ("refused", "connection refused (2 attempts)"),
    ("e404", "HTTP 404"),
    ("e500", "HTTP 500 Internal Server Error (2 attempts)"),
    ("stall", "timed out (nothing received for 0.5 s)"),
    ("close_mid", "connection closed after"),
    ("long_length", "connection closed after"),
    ("short_length", "truncated gzip data"),
    ("html", "not gzip data: an HTML page"),
    ("loop", "too many redirects"),
    ("to_file", "refused (only http and https redirects are followed)"),
    ("endless", "sent more than"),
    ("huge_length", "announces 1000000000000 bytes"),
]


@pytest.fixture
def one_file(fetch_files: dict[str, bytes], mirror_server: MirrorServer) -> tuple[ExpectedFile, ...]:
    """One small file, and a valid copy where the `to_file` redirect points: following
    that redirect would succeed, so only refusing it fails the mirror."""
    mirror_server.redirect_dir.mkdir()
    (mirror_server.redirect_dir / NAME).write_bytes(fetch_files[NAME])
    return tuple(entry for entry in fetch_table(fetch_files) if entry.name == NAME)


def _fault_url(behaviour: str, mirror_server: MirrorServer, refused_url: str) -> str:
    return refused_url if behaviour == "refused" else mirror_server.url(behaviour)


class _Recorder:
    """Collects fetch's log lines and the largest byte count it reported writing."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.most_bytes_written = 0

    def progress(self, name: str, received_bytes: int, announced_bytes: int | None) -> None:
        self.most_bytes_written = max(self.most_bytes_written, received_bytes)


@pytest.mark.parametrize("behaviour, reason", FAULTS, ids=[fault[0] for fault in FAULTS])
def test_a_faulty_mirror_is_skipped_for_the_next(
    tmp_path: Path,
    mirror_server: MirrorServer,
    refused_url: str,
    one_file: tuple[ExpectedFile, ...],
    fetch_files: dict[str, bytes],
    behaviour: str,
    reason: str,
) -> None:
    out_dir = tmp_path / "raw"
    fault_url = _fault_url(behaviour, mirror_server, refused_url)
    record = _Recorder()
    mirrors = [fault_url, mirror_server.url("good")]
    fetch(
        out_dir,
        mirrors,
        timeout_s=TIMEOUT_S,
        files=one_file,
        log=record.lines.append,
        progress=record.progress,
    )
    assert record.lines[0].startswith(f"{NAME}: {fault_url}{NAME}: ")
    assert reason in record.lines[0]
    assert f"fetched from {mirror_server.url('good')}{NAME}" in record.lines[1]
    assert len(record.lines) == 2
    assert [path.name for path in out_dir.iterdir()] == [NAME]
    assert (out_dir / NAME).read_bytes() == fetch_files[NAME]
    assert record.most_bytes_written <= one_file[0].max_download_bytes


@pytest.mark.parametrize("behaviour, reason", FAULTS, ids=[fault[0] for fault in FAULTS])
def test_a_faulty_mirror_alone_leaves_nothing(
    tmp_path: Path,
    mirror_server: MirrorServer,
    refused_url: str,
    one_file: tuple[ExpectedFile, ...],
    behaviour: str,
    reason: str,
) -> None:
    out_dir = tmp_path / "raw"
    record = _Recorder()
    with pytest.raises(MnistkitError, match=r"every mirror failed \(1 tried"):
        fetch(
            out_dir,
            [_fault_url(behaviour, mirror_server, refused_url)],
            timeout_s=TIMEOUT_S,
            files=one_file,
            log=record.lines.append,
            progress=record.progress,
        )
    assert len(record.lines) == 1 and reason in record.lines[0]
    assert not out_dir.exists()
    assert record.most_bytes_written <= one_file[0].max_download_bytes
    if behaviour == "stall":
        assert not mirror_server.stall_ended.is_set(), (
            "fetch waited for the stalled server instead of timing out"
        )


def test_cli_timeout_option_moves_past_a_stalled_mirror(
    tmp_path: Path,
    mirror_server: MirrorServer,
    fetch_files: dict[str, bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use_fetch_table(monkeypatch, fetch_table(fetch_files))
    out_dir = tmp_path / "raw"
    args = ["fetch", "--out", str(out_dir), "--no-default-mirrors", "--timeout", "0.2"]
    args += ["--mirror", mirror_server.url("stall"), "--mirror", mirror_server.url("good")]
    result = CliRunner().invoke(cli, args, env={"MNISTKIT_MIRROR": None})
    assert result.exit_code == 0, result.output
    stalled = [
        line for line in result.stderr.splitlines() if "timed out (nothing received for 0.2 s)" in line
    ]
    assert len(stalled) == 1
    assert f"{mirror_server.url('stall')}: skipped for the rest of this run" in result.stderr
    assert sorted(path.name for path in out_dir.iterdir()) == sorted(fetch_files)
    assert not mirror_server.stall_ended.is_set()


# A stalled or dripping mirror must be abandoned after about one timeout, once for all four
# files: the tests allow TIMEOUT_S plus SLACK_S for the whole fetch (the same fetch took
# 4 x 2 timeouts for a stalled mirror, and no end for a dripping one, before).
SLACK_S = 2.5
BAD_PACES = [
    ("silent", "timed out (nothing received for 0.5 s)"),
    ("stall", "timed out (nothing received for 0.5 s)"),
    ("drip_headers", "timed out (nothing received for 0.5 s)"),
    ("drip", "too slow ("),
]


@pytest.mark.parametrize("behaviour, reason", BAD_PACES, ids=[pace[0] for pace in BAD_PACES])
def test_a_stalled_or_dripping_mirror_costs_one_timeout_per_run(
    tmp_path: Path, mirror_server: MirrorServer, fetch_files: dict[str, bytes], behaviour: str, reason: str
) -> None:
    out_dir = tmp_path / "raw"
    lines: list[str] = []
    bad, good = mirror_server.url(behaviour), mirror_server.url("good")
    started = time.monotonic()
    fetch(out_dir, [bad, good], timeout_s=TIMEOUT_S, files=fetch_table(fetch_files), log=lines.append)
    elapsed_s = time.monotonic() - started
    assert TIMEOUT_S <= elapsed_s < TIMEOUT_S + SLACK_S
    first, *others = fetch_files
    assert lines[0].startswith(f"{first}: {bad}{first}: ") and reason in lines[0], lines[0]
    assert "(2 attempts)" not in lines[0]
    assert f"fetched from {good}{first}" in lines[1]
    assert lines[2] == f"{bad}: skipped for the rest of this run"
    assert len(lines) == 3 + len(others)
    for name, line in zip(others, lines[3:], strict=True):
        assert f"fetched from {good}{name}" in line
    assert mirror_server.hits[behaviour] == 1
    assert sorted(path.name for path in out_dir.iterdir()) == sorted(fetch_files)
    assert all((out_dir / name).read_bytes() == data for name, data in fetch_files.items())


def test_a_dripping_mirror_alone_leaves_nothing(
    tmp_path: Path, mirror_server: MirrorServer, fetch_files: dict[str, bytes]
) -> None:
    out_dir = tmp_path / "raw"
    lines: list[str] = []
    with pytest.raises(MnistkitError, match=r"every mirror failed \(1 tried"):
        fetch(
            out_dir,
            [mirror_server.url("drip")],
            timeout_s=TIMEOUT_S,
            files=fetch_table(fetch_files),
            log=lines.append,
        )
    assert len(lines) == 1 and "below the minimum of 1000 bytes/s" in lines[0]
    assert not out_dir.exists()


def test_a_slow_but_steady_mirror_is_not_cut(
    tmp_path: Path, mirror_server: MirrorServer, fetch_files: dict[str, bytes]
) -> None:
    """A download lasting several timeout windows, each well above the minimum rate, is kept."""
    name = "t10k-images-idx3-ubyte.gz"
    chunk_bytes, interval_s = SLOW_PACE
    timeout_s = 0.3
    assert len(fetch_files[name]) > 3 * timeout_s * chunk_bytes / interval_s
    table = [entry for entry in fetch_table(fetch_files) if entry.name == name]
    out_dir = tmp_path / "raw"
    lines: list[str] = []
    slow = mirror_server.url("slow")
    fetch(out_dir, [slow, mirror_server.url("good")], timeout_s=timeout_s, files=table, log=lines.append)
    assert len(lines) == 1 and f"fetched from {slow}{name}" in lines[0]
    assert (out_dir / name).read_bytes() == fetch_files[name]
    assert mirror_server.hits["good"] == 0


def test_cli_min_rate_option_abandons_a_mirror_below_it(
    tmp_path: Path,
    mirror_server: MirrorServer,
    fetch_files: dict[str, bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use_fetch_table(monkeypatch, fetch_table(fetch_files))
    out_dir = tmp_path / "raw"
    args = ["fetch", "--out", str(out_dir), "--no-default-mirrors", "--timeout", "0.3"]
    args += [
        "--min-rate",
        "20000",
        "--mirror",
        mirror_server.url("slow"),
        "--mirror",
        mirror_server.url("good"),
    ]
    result = CliRunner().invoke(cli, args, env={"MNISTKIT_MIRROR": None})
    assert result.exit_code == 0, result.output
    assert "below the minimum of 20000 bytes/s)" in result.stderr.splitlines()[0]
    assert mirror_server.hits == {"slow": 1, "good": 4}
    assert sorted(path.name for path in out_dir.iterdir()) == sorted(fetch_files)


def test_without_a_network_the_last_line_says_how_to_use_a_local_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_name_resolves(*args: object, **kwargs: object) -> None:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_name_resolves)
    out_dir = tmp_path / "raw"
    result = CliRunner().invoke(
        cli, ["fetch", "--out", str(out_dir)], env={"MNISTKIT_MIRROR": None, "MAKELEVEL": None}
    )
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert len(lines) == len(DEFAULT_MIRRORS) + 1
    assert all("cannot resolve the host name (Name or service not known)" in line for line in lines[:-1])
    assert lines[-1].startswith("Error: ") and lines[-1].endswith(
        "point MNISTKIT_MIRROR at a folder holding the four .gz files: "
        "MNISTKIT_MIRROR=/path/to/folder mnistkit fetch"
    )
    assert not out_dir.exists()


@pytest.mark.parametrize(
    "kinds, hint",
    [
        (["refused"], True),
        (["empty folder", "refused"], False),
        (["refused", "e404"], False),
        (["wrong file", "refused"], False),
    ],
    ids=[
        "refused everywhere",
        "the local copy lacks it",
        "one mirror answered",
        "the local copy is another file",
    ],
)
def test_the_local_copy_hint_comes_only_when_no_mirror_was_reached(
    tmp_path: Path,
    mirror_server: MirrorServer,
    refused_url: str,
    one_file: tuple[ExpectedFile, ...],
    kinds: list[str],
    hint: bool,
) -> None:
    """A folder that holds another file under the name (another dataset's), or none, was
    found: the hint to point MNISTKIT_MIRROR at a local copy, as if offline, misled."""
    urls = {
        "empty folder": str(tmp_path / "empty"),
        "wrong file": str(tmp_path / "wrong"),
        "refused": refused_url,
        "e404": mirror_server.url("e404"),
    }
    (tmp_path / "empty").mkdir()
    (tmp_path / "wrong").mkdir()
    (tmp_path / "wrong" / one_file[0].name).write_bytes(b"another file altogether")
    with pytest.raises(MnistkitError) as error:
        fetch(tmp_path / "raw", [urls[kind] for kind in kinds], files=one_file, log=lambda line: None)
    wrong_folder = f"the file of this name in {tmp_path / 'wrong'} is not this one (its line above says why)"
    assert str(error.value).endswith(wrong_folder) is ("wrong file" in kinds)
    lacking = f"the local mirror {tmp_path / 'empty'} holds no {one_file[0].name}"
    assert str(error.value).endswith(lacking) is ("empty folder" in kinds)
    assert str(error.value).endswith(local_copy_hint(dataset_spec("mnist"))) is hint


@pytest.mark.parametrize(("dataset", "made_by_make", "command"), [
    ("kmnist", True, "MNISTKIT_MIRROR=/path/to/folder make all DATASET=kmnist"),
    ("mnist", True, "MNISTKIT_MIRROR=/path/to/folder make all"),
    ("kmnist", False, "MNISTKIT_MIRROR=/path/to/folder mnistkit fetch --dataset kmnist"),
])  # fmt: skip
def test_offline_under_make_the_hint_is_to_run_make_again(
    tmp_path: Path, refused_url: str, dataset: str, made_by_make: bool, command: str
) -> None:
    """`make all DATASET=kmnist` offline was told to run `mnistkit fetch`, not make."""
    args = ["fetch", "--dataset", dataset, "--out", str(tmp_path / "raw"), "--no-default-mirrors"]
    environment = {"MNISTKIT_MIRROR": None, "MAKELEVEL": "1" if made_by_make else None}
    result = CliRunner().invoke(cli, [*args, "--mirror", refused_url], env=environment)
    assert result.exit_code == 1 and result.stderr.splitlines()[-1].endswith(
        f"holding the four .gz files: {command}"
    )
