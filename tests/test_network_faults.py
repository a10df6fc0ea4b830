"""Each way a mirror can misbehave: fetch notes it in one line, keeps nothing wrong,
writes no more than the cap, and moves on to the next mirror."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import MirrorServer, fetch_table

from mnistkit.cli import cli
from mnistkit.errors import MnistkitError
from mnistkit.fetch import ExpectedFile, fetch

NAME = "t10k-labels-idx1-ubyte.gz"
TIMEOUT_S = 0.3

# (server behaviour, or "refused" for a port where nothing listens; what the line says)
FAULTS = [
    ("refused", "connection refused (2 attempts)"),
    ("e404", "HTTP 404"),
    ("e500", "HTTP 500 Internal Server Error (2 attempts)"),
    ("stall", "timed out (nothing received for 0.3 s)"),
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
    assert list(out_dir.iterdir()) == []
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
    monkeypatch.setattr("mnistkit.fetch.MNIST_EXPECTED", fetch_table(fetch_files))
    out_dir = tmp_path / "raw"
    args = ["fetch", "--out", str(out_dir), "--no-default-mirrors", "--timeout", "0.2"]
    args += ["--mirror", mirror_server.url("stall"), "--mirror", mirror_server.url("good")]
    result = CliRunner().invoke(cli, args, env={"MNISTKIT_MIRROR": None})
    assert result.exit_code == 0, result.output
    stalled = [
        line for line in result.stderr.splitlines() if "timed out (nothing received for 0.2 s)" in line
    ]
    assert len(stalled) == 4
    assert sorted(path.name for path in out_dir.iterdir()) == sorted(fetch_files)
    assert not mirror_server.stall_ended.is_set()
