"""fetch against real HTTP mirrors on 127.0.0.1, local mirrors, and the real MNIST mirror."""

from __future__ import annotations

import gzip
import hashlib
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import REAL_MNIST_DIR, MirrorServer, fetch_table, requires_real_mnist, use_fetch_table

from mnistkit.cli import cli
from mnistkit.datasets import KMNIST, MNIST
from mnistkit.errors import MnistkitError
from mnistkit.fetch import fetch, file_problem
from mnistkit.mirrors import DEFAULT_MIRRORS, mirror_list

NAMES = sorted(
    [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ]
)
# The decompressed SHA-256 of each real file, as issue 2 gives them.
REAL_SHA256 = {
    "train-images-idx3-ubyte.gz": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte.gz": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte.gz": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte.gz": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}


def _assert_holds_exactly(out_dir: Path, fetch_files: dict[str, bytes]) -> None:
    """Only the canonical names, each with the served content (no temp files left)."""
    assert sorted(path.name for path in out_dir.iterdir()) == sorted(fetch_files)
    for name, gz_bytes in fetch_files.items():
        assert gzip.decompress((out_dir / name).read_bytes()) == gzip.decompress(gz_bytes)


def _lines_naming(lines: list[str], text: str) -> list[str]:
    return [line for line in lines if text in line]


def test_moves_past_a_failing_and_a_corrupt_mirror_and_skips_them_for_the_other_files(
    tmp_path: Path, mirror_server: MirrorServer, fetch_files: dict[str, bytes]
) -> None:
    out_dir = tmp_path / "raw"
    lines: list[str] = []
    mirrors = [mirror_server.url("e500"), mirror_server.url("corrupt"), mirror_server.url("good")]
    paths = fetch(out_dir, mirrors, files=fetch_table(fetch_files), log=lines.append)
    assert [path.name for path in paths] == list(fetch_files)
    _assert_holds_exactly(out_dir, fetch_files)
    first, *others = fetch_files
    assert "e500" in lines[0] and "HTTP 500" in lines[0] and "(2 attempts)" in lines[0]
    assert "corrupt" in lines[1] and "corrupt gzip data" in lines[1]
    assert f"fetched from {mirror_server.url('good')}{first}" in lines[2]
    assert lines[3:5] == [
        f"{mirrors[0]}: skipped for the rest of this run",
        f"{mirrors[1]}: skipped for the rest of this run",
    ]
    for name, line in zip(others, lines[5:], strict=True):
        assert f"fetched from {mirror_server.url('good')}{name}" in line
    assert mirror_server.hits == {"e500": 2, "corrupt": 1, "good": 4}


def test_a_second_run_downloads_nothing(
    tmp_path: Path, mirror_server: MirrorServer, fetch_files: dict[str, bytes]
) -> None:
    out_dir = tmp_path / "raw"
    table = fetch_table(fetch_files)
    fetch(out_dir, [mirror_server.url("good")], files=table, log=lambda line: None)
    before = {name: (out_dir / name).stat().st_mtime_ns for name in fetch_files}
    lines: list[str] = []
    fetch(out_dir, [mirror_server.url("good")], files=table, log=lines.append)
    assert mirror_server.hits["good"] == 4
    assert len(lines) == 4 and all("already present and valid" in line for line in lines)
    assert {name: (out_dir / name).stat().st_mtime_ns for name in fetch_files} == before


def test_an_invalid_file_is_replaced_and_force_downloads_again(
    tmp_path: Path, mirror_server: MirrorServer, fetch_files: dict[str, bytes]
) -> None:
    out_dir = tmp_path / "raw"
    out_dir.mkdir()
    (out_dir / "t10k-labels-idx1-ubyte.gz").write_bytes(b"half a download")
    table = fetch_table(fetch_files)
    lines: list[str] = []
    fetch(out_dir, [mirror_server.url("good")], files=table, log=lines.append)
    _assert_holds_exactly(out_dir, fetch_files)
    assert any("t10k-labels-idx1-ubyte.gz: present but invalid (not gzip data" in line for line in lines)
    fetch(out_dir, [mirror_server.url("good")], files=table, force=True, log=lambda line: None)
    assert mirror_server.hits["good"] == 8


def test_every_mirror_failing_writes_nothing_keeps_the_file_there_and_says_one_line_per_mirror(
    tmp_path: Path, mirror_server: MirrorServer, fetch_files: dict[str, bytes]
) -> None:
    """The invalid file is kept aside: it was deleted before any mirror had delivered, and a
    genuine copy that fails the check (KMNIST's, recompressed) was lost so. Not under its
    name: make, which fetches only what is missing, would parse it."""
    out_dir = tmp_path / "raw"
    out_dir.mkdir()
    invalid = out_dir / "train-images-idx3-ubyte.gz"
    invalid.write_bytes(gzip.compress(b"not mnist"))
    lines: list[str] = []
    mirrors = [mirror_server.url("e500"), mirror_server.url("e404"), mirror_server.url("corrupt")]
    with pytest.raises(MnistkitError, match=r"every mirror failed \(3 tried") as error:
        fetch(out_dir, mirrors, files=fetch_table(fetch_files), log=lines.append)
    assert "\n" not in str(error.value)
    aside = out_dir / "train-images-idx3-ubyte.gz.invalid"
    assert list(out_dir.iterdir()) == [aside]
    assert gzip.decompress(aside.read_bytes()) == b"not mnist"
    assert lines[0].endswith("; moved to train-images-idx3-ubyte.gz.invalid until a verified copy comes")
    fetch(out_dir, [mirror_server.url("good")], files=fetch_table(fetch_files), log=lambda line: None)
    _assert_holds_exactly(out_dir, fetch_files)  # the copy aside went with the verified one
    mirror_lines = [line for line in lines if "127.0.0.1" in line]
    assert [mirror in line for mirror, line in zip(mirrors, mirror_lines, strict=True)] == [True] * 3
    assert "HTTP 404" in mirror_lines[1]


def test_directory_and_file_url_mirrors(tmp_path: Path, fetch_files: dict[str, bytes]) -> None:
    mirror_dir = tmp_path / "mirror"
    mirror_dir.mkdir()
    for name, gz_bytes in fetch_files.items():
        (mirror_dir / name).write_bytes(gz_bytes)
    (tmp_path / "empty").mkdir()
    table = fetch_table(fetch_files)
    lines: list[str] = []
    fetch(tmp_path / "a", [str(tmp_path / "empty"), str(mirror_dir)], files=table, log=lines.append)
    _assert_holds_exactly(tmp_path / "a", fetch_files)
    assert len(_lines_naming(lines, "no such file")) == 4  # a folder may lack one file: tried for each
    fetch(tmp_path / "b", [mirror_dir.as_uri()], files=table, log=lines.append)
    _assert_holds_exactly(tmp_path / "b", fetch_files)


def test_a_local_mirror_that_is_not_there_is_skipped_for_the_other_files(
    tmp_path: Path, fetch_files: dict[str, bytes]
) -> None:
    """A missing folder was tried again for each file, against what --help says of a mirror
    that failed."""
    mirror_dir = tmp_path / "mirror"
    mirror_dir.mkdir()
    for name, gz_bytes in fetch_files.items():
        (mirror_dir / name).write_bytes(gz_bytes)
    missing = str(tmp_path / "nowhere")
    lines: list[str] = []
    fetch(tmp_path / "a", [missing, str(mirror_dir)], files=fetch_table(fetch_files), log=lines.append)
    _assert_holds_exactly(tmp_path / "a", fetch_files)
    first = next(iter(fetch_files))
    assert lines[:3] == [
        f"{first}: {missing}/{first}: no such folder",
        *_lines_naming(lines[1:2], "fetched from"),
        f"{missing}: skipped for the rest of this run",
    ]
    assert len(_lines_naming(lines, missing)) == 2
    a_file = tmp_path / "a-file"  # a path mistyped for a folder: a file stands there
    a_file.write_bytes(b"")
    lines.clear()
    fetch(tmp_path / "b", [str(a_file), str(mirror_dir)], files=fetch_table(fetch_files), log=lines.append)
    assert lines[0] == f"{first}: {a_file}/{first}: no such folder"
    assert f"{a_file}: skipped for the rest of this run" in lines


def test_a_local_mirror_lacking_a_file_is_named_not_taken_for_being_offline(
    tmp_path: Path, fetch_files: dict[str, bytes]
) -> None:
    """fetch said "no mirror could be reached (is this machine offline?)" when the folder given
    had served the other files and lacked only this one."""
    mirror_dir = tmp_path / "mirror"
    mirror_dir.mkdir()
    for name in list(fetch_files)[:-1]:
        (mirror_dir / name).write_bytes(fetch_files[name])
    with pytest.raises(MnistkitError) as error:
        fetch(tmp_path / "a", [str(mirror_dir)], files=fetch_table(fetch_files), log=lambda line: None)
    message = str(error.value)
    lacking = list(fetch_files)[-1]
    assert message.endswith(f"nothing was written; the local mirror {mirror_dir} holds no {lacking}"), message
    assert "offline" not in message
    with pytest.raises(MnistkitError, match=r"; the local mirror \S+/nowhere: no such folder$"):
        fetch(tmp_path / "b", [str(tmp_path / "nowhere")], files=fetch_table(fetch_files), log=print)


def test_a_local_file_over_the_cap_is_refused(tmp_path: Path, fetch_files: dict[str, bytes]) -> None:
    name = "t10k-labels-idx1-ubyte.gz"
    table = [entry for entry in fetch_table(fetch_files) if entry.name == name]
    mirror_dir = tmp_path / "mirror"
    mirror_dir.mkdir()
    (mirror_dir / name).write_bytes(fetch_files[name] + bytes(2 * len(fetch_files[name])))
    lines: list[str] = []
    with pytest.raises(MnistkitError):
        fetch(tmp_path / "out", [str(mirror_dir)], files=table, log=lines.append)
    assert f"{name}: {mirror_dir / name}: is {3 * len(fetch_files[name])} bytes, more than the" in lines[0]
    assert not (tmp_path / "out").exists()


def test_unsupported_mirror_schemes_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    for mirror in ("ftp://example.org/mnist/", "javascript:alert(1)", "https:///no-host", ""):
        with pytest.raises(MnistkitError, match="mirror"):
            fetch(tmp_path / "out", [mirror])
    assert not (tmp_path / "out").exists()


def test_a_failed_fetch_takes_away_the_folders_it_made(tmp_path: Path, fetch_files, refused_url) -> None:
    table = fetch_table(fetch_files)
    with pytest.raises(MnistkitError):
        fetch(tmp_path / "new" / "raw", [refused_url], files=table, timeout_s=2)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "mine").mkdir()
    with pytest.raises(MnistkitError):
        fetch(tmp_path / "mine" / "raw", [refused_url], files=table, timeout_s=2)
    assert list(tmp_path.iterdir()) == [tmp_path / "mine"]  # a folder that was there stays
    with pytest.raises(MnistkitError):
        fetch(tmp_path / "missing" / ".." / "mine", [refused_url], files=table, timeout_s=2)
    assert (tmp_path / "mine").is_dir()


def test_mirror_order_options_then_variable_then_defaults() -> None:
    mirrors = mirror_list(["http://a/"], " file:///b, /c ,http://a/ ")
    assert mirrors == ["http://a/", "file:///b", "/c", *DEFAULT_MIRRORS]
    assert mirror_list([], "http://x/", use_defaults=False) == ["http://x/"]


def test_cli_uses_the_mirror_variable(
    tmp_path: Path,
    mirror_server: MirrorServer,
    fetch_files: dict[str, bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use_fetch_table(monkeypatch, fetch_table(fetch_files))
    env = {"MNISTKIT_MIRROR": f"{mirror_server.url('e404')},{mirror_server.url('good')}"}
    out_dir = tmp_path / "raw"
    args = ["fetch", "--out", str(out_dir), "--no-default-mirrors"]
    result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [str(out_dir / name) for name in fetch_files]
    assert len(_lines_naming(result.stderr.splitlines(), "HTTP 404")) == 1
    _assert_holds_exactly(out_dir, fetch_files)


def test_the_mirror_variable_takes_a_folder_whose_name_holds_a_space(
    tmp_path: Path, fetch_files: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`MNISTKIT_MIRROR="/srv/my data/mnist"` was cut at its space into two folders that are
    not there, and fetch failed with "the local mirror /srv/my: no such folder"."""
    use_fetch_table(monkeypatch, fetch_table(fetch_files))
    folder = tmp_path / "my data, ü"
    folder.mkdir()
    for name, gz_bytes in fetch_files.items():
        (folder / name).write_bytes(gz_bytes)
    out_dir = tmp_path / "raw"
    args = ["fetch", "--out", str(out_dir), "--no-default-mirrors"]
    result = CliRunner().invoke(cli, args, env={"MNISTKIT_MIRROR": f" {folder} "})
    assert result.exit_code == 0, result.output
    _assert_holds_exactly(out_dir, fetch_files)
    assert mirror_list([], f"{tmp_path} http://x/", use_defaults=False) == [str(tmp_path), "http://x/"]
    too_long = "x" * 300  # asking whether the whole is a folder fails (ENAMETOOLONG): no folder
    assert mirror_list([], f"{too_long} http://x/", use_defaults=False) == [too_long, "http://x/"]


def test_no_mirror_is_needed_for_files_already_there(
    tmp_path: Path,
    mirror_server: MirrorServer,
    fetch_files: dict[str, bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An offline CI job restores its files and fetches with --no-default-mirrors and no
    mirror: it was refused ("no mirror to fetch from") with all four valid files there."""
    use_fetch_table(monkeypatch, fetch_table(fetch_files))
    monkeypatch.delenv("MNISTKIT_MIRROR", raising=False)
    out_dir = tmp_path / "raw"
    args = ["fetch", "--out", str(out_dir), "--no-default-mirrors"]
    fetched = CliRunner().invoke(cli, [*args, "--mirror", mirror_server.url("good")])
    assert fetched.exit_code == 0, fetched.output
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [str(out_dir / name) for name in fetch_files]
    forced = CliRunner().invoke(cli, [*args, "--force"])
    first = out_dir / next(iter(fetch_files))
    assert forced.stderr.splitlines()[-1] == (
        f"Error: {first}: --force downloads it again, but no mirror is given to fetch it from"
    )
    last = out_dir / list(fetch_files)[-1]
    for damaged in (first, last):  # kept, since nothing could replace them; each one named
        damaged.write_bytes(damaged.read_bytes()[:-10])
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1 and first.exists() and last.exists()
    refusal = r"{}: present but invalid \(.*\), and no mirror is given"
    lines = result.stderr.splitlines()
    assert any(re.fullmatch(refusal.format(re.escape(str(first))), line) for line in lines)
    assert re.fullmatch("Error: " + refusal.format(re.escape(str(last))), lines[-1])
    first.write_bytes(next(iter(fetch_files.values())))
    last.unlink()
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert (
        result.stderr.splitlines()[-1] == f"Error: {last}: missing, but no mirror is given to fetch it from"
    )


def test_cli_all_mirrors_failing_exits_non_zero(
    tmp_path: Path,
    mirror_server: MirrorServer,
    fetch_files: dict[str, bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use_fetch_table(monkeypatch, fetch_table(fetch_files))
    out_dir = tmp_path / "raw"
    args = ["fetch", "--out", str(out_dir), "--no-default-mirrors", "--mirror", mirror_server.url("html")]
    result = CliRunner().invoke(cli, args, env={"MNISTKIT_MIRROR": mirror_server.url("e404")})
    assert result.exit_code == 1
    stderr_lines = result.stderr.splitlines()
    assert stderr_lines[0].endswith("not gzip data: an HTML page")
    assert "HTTP 404" in stderr_lines[1]
    assert stderr_lines[2].startswith("Error: ") and "every mirror failed (2 tried" in stderr_lines[2]
    assert result.stdout == "" and not out_dir.exists()


@requires_real_mnist
def test_mnists_files_where_kmnists_belong_are_named_and_kept(tmp_path: Path) -> None:
    """KMNIST's files are checked by their official bytes alone; MNIST's genuine files under
    the same names failed that, were deleted, and no mirror (KMNIST's host is down) gave them
    back."""
    raw = tmp_path / "raw"
    shutil.copytree(REAL_MNIST_DIR, raw)
    before = {path.name: path.read_bytes() for path in raw.iterdir()}
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(
        cli,
        ["fetch", "--dataset", "kmnist", "--out", str(raw), "--no-default-mirrors"],
        env={"MNISTKIT_MIRROR": str(tmp_path / "empty")},
    )
    assert result.exit_code == 1
    named = [
        line.removeprefix("Error: ") for line in result.stderr.splitlines() if "it holds MNIST's" in line
    ]
    assert named == [  # each of the four, one line each (the first alone was named before)
        f"{raw / entry.name}: it holds MNIST's {entry.name}, not this dataset's; fetch into another folder "
        "(as make all does: data/NAME/raw), or give --force to replace it"
        for entry in KMNIST.downloads
    ]
    assert result.stderr.splitlines()[-1].startswith("Error: ")
    assert {path.name: path.read_bytes() for path in raw.iterdir()} == before


@pytest.mark.slow
@requires_real_mnist
def test_fetch_from_the_real_mirror_directory(tmp_path: Path) -> None:
    out_dir = tmp_path / "raw"
    args = ["fetch", "--out", str(out_dir), "--no-default-mirrors", "--mirror", REAL_MNIST_DIR.as_uri()]
    result = CliRunner().invoke(cli, args, env={"MNISTKIT_MIRROR": None})
    assert result.exit_code == 0, result.output
    assert sorted(path.name for path in out_dir.iterdir()) == NAMES
    for name, sha256 in REAL_SHA256.items():
        assert hashlib.sha256(gzip.decompress((out_dir / name).read_bytes())).hexdigest() == sha256
    assert [file_problem(out_dir / entry.name, entry) for entry in MNIST.downloads] == [None] * 4
    again = CliRunner().invoke(cli, args, env={"MNISTKIT_MIRROR": None})
    assert again.exit_code == 0 and again.stderr.count("already present and valid") == 4
