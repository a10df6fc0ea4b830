"""`mnistkit predict` on PNGs the tests draw: rows, formats, stdin, bad inputs, no jax."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import OBEY_PERMISSIONS, draw_large_digit
from PIL import Image

from mnistkit import image_files
from mnistkit.architectures import param_shapes
from mnistkit.checkpoint import save_checkpoint
from mnistkit.cli import cli
from mnistkit.image_files import load_digits
from mnistkit.stdin_inputs import StdinWaits

DIGITS = (3, 0, 7, 1, 9)


@pytest.fixture
def digit_files(tmp_path: Path) -> list[Path]:
    """Dark digits on white paper, one PNG each, named by their digit."""
    paths = []
    for index, digit in enumerate(DIGITS):
        path = tmp_path / f"{index}-digit{digit}.png"
        Image.fromarray(255 - draw_large_digit(digit)).save(path)
        paths.append(path)
    return paths


def run(*args: str, stdin: str | None = None):
    return CliRunner().invoke(cli, [str(arg) for arg in args], input=stdin)


def test_one_row_per_image_in_input_order(large_digit_model: Path, digit_files: list[Path]) -> None:
    result = run("predict", large_digit_model, *digit_files)
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(result.stdout), delimiter="\t"))
    assert [row[0] for row in rows] == [str(path) for path in digit_files]
    assert [int(row[1]) for row in rows] == list(DIGITS)
    assert all(0.5 < float(row[2]) <= 1.0 for row in rows)
    assert result.stderr == ""


def test_tsv_paths_stay_as_they_are_unless_a_reader_needs_quotes(
    large_digit_model: Path, digit_files: list[Path], tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    names = ['say "7".png', '"quoted".png', "tab\there.png"]
    for name in names:
        Path(name).write_bytes(digit_files[0].read_bytes())
    result = run("predict", large_digit_model, *names)
    assert result.exit_code == 0, result.output
    fields = [line.split("\t")[0] for line in result.stdout.splitlines()]
    assert fields[:2] == ['say "7".png', '"""quoted"".png"']  # `cut -f1` gives the first as it is
    rows = list(csv.reader(io.StringIO(result.stdout), delimiter="\t"))
    assert [row[0] for row in rows] == names


@pytest.mark.parametrize("output_format", ["tsv", "csv"])
def test_predicts_rows_read_back_by_csv_and_eval_labels_whatever_the_names(
    large_digit_model: Path, digit_files: list[Path], tmp_path: Path, monkeypatch, output_format: str
) -> None:
    """predict's own output, corrected by hand, is a labels file: every legal name comes back,
    a leading `#` (a comment to eval --labels, which dropped it without a word), a carriage
    return (left bare by Python's csv writer), a line break, and the characters that
    str.splitlines() splits at."""
    monkeypatch.chdir(tmp_path)
    names = [
        "#1.png",
        "cr\r.png",
        "nl\n.png",
        "ls\u2028.png",
        "vt\v.png",
        "nel\x85.png",
        "tab\there.png",
        't\tc,q".png',
    ]
    for name in names:
        Path(name).write_bytes(digit_files[2].read_bytes())  # a 7
    result = run("predict", large_digit_model, *names, "--format", output_format)
    assert result.exit_code == 0, result.output
    rows = list(
        csv.reader(io.StringIO(result.stdout, newline=""), delimiter="\t" if output_format == "tsv" else ",")
    )
    assert [row[0] for row in rows[output_format == "csv" :]] == names
    # A name that is not UTF-8, written as its bytes, comes back too.
    odd = Path(os.fsdecode(b"caf\xe9.png"))
    odd.write_bytes(digit_files[2].read_bytes())
    more = run("predict", large_digit_model, odd, "--format", output_format, "-o", "more")
    assert more.exit_code == 0, more.output
    labels = tmp_path / f"labels.{output_format}"
    labels.write_bytes(
        result.stdout_bytes + Path("more").read_bytes().split(b"\n", output_format == "csv")[-1]
    )
    evaluated = run("eval", large_digit_model, "--labels", labels, "--json", "-")
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout)["count"] == len(names) + 1


def test_a_broken_file_beside_good_ones(
    large_digit_model: Path, digit_files: list[Path], tmp_path: Path
) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(digit_files[0].read_bytes()[:200])
    missing, folder = tmp_path / "missing.png", tmp_path / "folder"
    folder.mkdir()
    result = run("predict", large_digit_model, digit_files[0], broken, missing, folder, digit_files[1])
    assert result.exit_code == 1
    rows = list(csv.reader(io.StringIO(result.stdout), delimiter="\t"))
    assert [row[0] for row in rows] == [str(digit_files[0]), str(digit_files[1])]
    errors = result.stderr.splitlines()
    assert [line.split(": ", 1)[0] for line in errors] == [str(broken), str(missing), str(folder)]
    assert "truncated" in errors[0] and "no such file" in errors[1] and "is a directory" in errors[2]
    assert "Traceback" not in result.output


@pytest.mark.parametrize("output_format", ["tsv", "csv", "jsonl"])
def test_formats_parse_with_the_standard_library(
    large_digit_model: Path, digit_files: list[Path], output_format: str
) -> None:
    result = run("predict", large_digit_model, *digit_files, "--format", output_format, "--top-k", "3")
    assert result.exit_code == 0, result.output
    if output_format == "jsonl":
        records = [json.loads(line) for line in result.stdout.splitlines()]
        assert [r["digit"] for r in records] == list(DIGITS)
        for record in records:
            assert record["top"][0]["digit"] == record["digit"] and len(record["top"]) == 3
            probabilities = [t["probability"] for t in record["top"]]
            assert probabilities == sorted(probabilities, reverse=True)
        return
    reader = csv.reader(io.StringIO(result.stdout), delimiter="," if output_format == "csv" else "\t")
    rows = list(reader)
    if output_format == "csv":
        header, rows = rows[0], rows[1:]
        assert header[:5] == ["path", "digit", "confidence", "top1_digit", "top1_probability"]
        assert len(header) == 9
    assert [int(row[1]) for row in rows] == list(DIGITS)
    assert all(len(row) == 9 and row[3] == row[1] for row in rows)


def test_jsonl_holds_a_file_name_that_is_not_utf8_as_strict_json_readers_take_it(
    large_digit_model: Path, digit_files: list[Path], tmp_path: Path
) -> None:
    odd = tmp_path / os.fsdecode(b"caf\xe9.png")  # Latin-1 bytes, not UTF-8
    odd.write_bytes(digit_files[2].read_bytes())  # a 7
    result = run("predict", large_digit_model, odd, digit_files[3], "--format", "jsonl")
    assert result.exit_code == 0, result.output
    first, second = (json.loads(line) for line in result.stdout.splitlines())
    assert first["path"] == f"{tmp_path}/caf\ufffd.png" and first["digit"] == 7
    first["path"].encode("utf-8")  # no lone surrogate, which a strict reader refuses
    assert base64.b64decode(first["path_bytes"]) == os.fsencode(odd)
    assert second == {"path": str(digit_files[3]), "digit": 1, "confidence": second["confidence"]}


def test_a_bad_image_with_a_name_that_does_not_print_is_still_one_line_a_shell_reads_back(
    large_digit_model: Path, digit_files: list[Path], tmp_path: Path
) -> None:
    """A line break in a bad image's name split its `path: reason` line in two, and a byte that
    is not UTF-8 came out as neither its byte nor jsonl's `path`: a script could not tell
    which inputs failed."""
    names = [b"bad\nline: x.png", b"bad-\xff.png", b"tab\there 'quoted' \\ back.png"]
    bad = [tmp_path / os.fsdecode(name) for name in names]
    for path in bad:
        path.write_bytes(b"not an image at all")
    result = run("predict", large_digit_model, bad[0], digit_files[2], bad[1], bad[2])
    assert result.exit_code == 1 and len(result.stdout.splitlines()) == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 3, result.stderr
    for line, path in zip(lines, bad, strict=True):
        quoted, reason = line.split("': ", 1)
        assert quoted.startswith("$'") and reason.startswith("not an image"), line
        shell = subprocess.run(["bash", "-c", f"printf %s {quoted}'"], capture_output=True, check=True)
        assert shell.stdout == os.fsencode(path)
    plain = run("predict", large_digit_model, tmp_path / "café missing.png")
    assert plain.stderr == f"{tmp_path}/café missing.png: no such file\n"  # as it is where it prints


def test_a_bad_image_is_named_as_given_as_its_row_would_be(
    large_digit_model: Path, digit_files: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`find . -print0 | xargs -0 mnistkit predict` gives every path as `./NAME`: a bad one's
    line named it `NAME` (no script matched it to its input), and one with a line break in
    its name went unquoted, its line split in two."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "not-an-image.png").write_bytes(b"not an image at all")
    (tmp_path / "line\nbreak.png").write_bytes(b"not an image at all")
    good = f"./{digit_files[0].name}"
    given = ["./not-an-image.png", good, ".//line\nbreak.png", "./missing.png", "scans//missing.png"]
    result = run("predict", large_digit_model, *given)
    assert result.exit_code == 1 and result.stdout.split("\t")[0] == good
    assert result.stderr.splitlines() == [
        "./not-an-image.png: not an image (Pillow cannot identify the format)",
        "$'.//line\\nbreak.png': not an image (Pillow cannot identify the format)",
        "./missing.png: no such file",
        "scans//missing.png: no such file",
    ]


def test_a_file_named_as_a_folder_is_refused_as_cat_refuses_it(
    large_digit_model: Path, digit_files: list[Path]
) -> None:
    """`predict digit.png/` read the file: pathlib drops a trailing slash, where the system
    (and cat) refuse a file's name given as a folder's."""
    result = run("predict", large_digit_model, f"{digit_files[0]}/", digit_files[1])
    assert result.exit_code == 1 and result.stdout.split("\t")[0] == str(digit_files[1])
    assert result.stderr.splitlines() == [f"{digit_files[0]}/: cannot read: Not a directory"]


def test_dash_given_twice_is_a_usage_error(large_digit_model: Path, digit_files: list[Path]) -> None:
    """The second `-` found stdin read to its end: the paths it stood for went missing, exit 0."""
    result = run("predict", large_digit_model, "-", digit_files[0], "-", stdin=f"{digit_files[1]}\n")
    assert result.exit_code == 2 and result.stdout == ""
    assert "`-` given twice; standard input can be read only once" in result.stderr


def test_paths_from_stdin_and_output_file(
    large_digit_model: Path, digit_files: list[Path], tmp_path: Path
) -> None:
    output = tmp_path / "predictions.tsv"
    # A byte-order mark first, as a spreadsheet saves a list of paths.
    stdin = "\ufeff" + "".join(f"{path}\n" for path in digit_files[1:]) + "\n"
    result = run("predict", large_digit_model, digit_files[0], "-", "--output", output, stdin=stdin)
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    rows = list(csv.reader(io.StringIO(output.read_text()), delimiter="\t"))
    assert [row[0] for row in rows] == [str(path) for path in digit_files]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".predictions")] == []


def test_an_output_under_a_file_fails_before_any_work(
    large_digit_model: Path, digit_files, tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("")
    output = tmp_path / "a-file" / "dir" / "p.tsv"
    result = run("predict", large_digit_model, *digit_files, "--output", output)
    assert result.exit_code == 1
    assert result.stderr == f"Error: {output}: {tmp_path / 'a-file'} is a file, not a folder\n"


@pytest.mark.parametrize("image_format", ["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"])
@pytest.mark.parametrize("null", [[], ["--null"]])
def test_an_image_piped_in_is_predicted_as_the_image_named_dash(
    large_digit_model: Path, image_format: str, null: list[str]
) -> None:
    """`curl -s URL | mnistkit predict CKPT -`: the image's bytes where paths could be (these
    were refused; BMP and TIFF, a few letters and then a NUL, were taken for `find -print0`'s
    paths)."""
    image = io.BytesIO()
    Image.fromarray(255 - draw_large_digit(3)).save(image, image_format)
    result = CliRunner().invoke(cli, ["predict", str(large_digit_model), *null, "-"], input=image.getvalue())
    assert result.exit_code == 0, result.output
    name, digit, confidence = result.stdout.rstrip("\n").split("\t")
    assert (name, digit) == ("-", "3") and float(confidence) > 0.5
    assert result.stderr == ""


def test_an_image_piped_in_keeps_its_place_among_paths_and_its_name_when_saved(
    large_digit_model: Path, digit_files: list[Path], tmp_path: Path
) -> None:
    saved = tmp_path / "seen"
    result = CliRunner().invoke(
        cli,
        [
            "predict",
            str(large_digit_model),
            *map(str, [digit_files[0], "-", digit_files[1]]),
            "--save-preprocessed",
            str(saved),
        ],
        input=digit_files[2].read_bytes(),  # a 7
    )
    assert result.exit_code == 0, result.output
    rows = [line.split("\t")[:2] for line in result.stdout.splitlines()]
    assert rows == [[str(digit_files[0]), "3"], ["-", "7"], [str(digit_files[1]), "0"]]
    assert sorted(path.name for path in saved.iterdir()) == [
        "000001-0-digit3.png",
        "000002-stdin.png",
        "000003-1-digit0.png",
    ]


@pytest.mark.parametrize(
    "first_bytes, content",
    [(3, "png"), (6, "png"), (8, "webp"), (3, "print0")],  # 6: the PNG's first line, its own
)
def test_what_stdin_holds_is_told_when_its_first_bytes_come_alone(
    large_digit_model: Path, digit_files: list[Path], first_bytes: int, content: str
) -> None:
    """Told from a slow writer's first read, a PNG was read as paths (a line for each of its
    'lines'), a WebP and a `find -print0` list as each other."""
    if content == "print0":
        data = b"".join(os.fsencode(path) + b"\0" for path in digit_files[:2])
    else:
        picture = io.BytesIO()
        Image.open(digit_files[2]).save(picture, content)
        data = picture.getvalue()
    process = subprocess.Popen(
        [sys.executable, "-m", "mnistkit", "predict", str(large_digit_model), "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        process.stdin.write(data[:first_bytes])
        process.stdin.flush()
        time.sleep(0.5)  # predict has read those bytes alone by now
        process.stdin.write(data[first_bytes:])
        process.stdin.close()
        stdout, stderr = process.stdout.read().decode(), process.stderr.read().decode()
        code = process.wait(60)
    finally:
        process.kill()
        process.wait()
    if content == "print0":
        assert code == 1 and stdout == "" and "paths ended by NUL bytes (find -print0)" in stderr
    else:
        assert (code, stdout.split("\t")[:2], stderr) == (0, ["-", "7"], "")


def _netpbm(image: np.ndarray, kind: str) -> bytes:
    """A digit as Netpbm: Pillow's binary PGM or PBM, or a text PGM with a comment."""
    if kind == "text":
        rows = "\n".join(" ".join(map(str, row)) for row in image)
        return f"P2\n# drawn by a test\n{image.shape[1]} {image.shape[0]}\n255\n{rows}\n".encode()
    picture = io.BytesIO()
    Image.fromarray(image).convert("1" if kind == "bits" else "L").save(picture, "PPM")
    return picture.getvalue()


@pytest.mark.parametrize("kind", ["bytes", "bits", "text"])
def test_netpbm_piped_in_is_an_image_however_plain_its_bytes(large_digit_model: Path, kind: str) -> None:
    """A PGM of pixels 0 and 255 holds no control character but NUL, a PBM or a text PGM
    none: they were taken for `find -print0`'s paths or for paths, one a line."""
    digit = np.where(255 - draw_large_digit(3) > 127, 255, 0).astype(np.uint8)
    for null in ([], ["--null"]):
        result = CliRunner().invoke(
            cli, ["predict", str(large_digit_model), *null, "-"], input=_netpbm(digit, kind)
        )
        assert result.exit_code == 0, result.output
        assert result.stdout.split("\t")[:2] == ["-", "3"]


def test_paths_that_look_odd_are_still_paths(large_digit_model: Path, digit_files: list[Path]) -> None:
    """A first path holding a control character, or beginning as a GIF does, is a path; a
    list in UTF-16 (as Notepad saves one) is told so, not taken for `find -print0`'s."""
    escaped = digit_files[0].with_name("a\x1bb.png")
    escaped.write_bytes(digit_files[0].read_bytes())
    gif_like = digit_files[1].with_name("GIF89a-scan.png")
    gif_like.write_bytes(digit_files[1].read_bytes())
    result = run("predict", large_digit_model, "-", stdin=f"{escaped}\n{gif_like}\n")
    assert result.exit_code == 0, result.output
    assert [row.split("\t")[:2] for row in result.stdout.splitlines()] == [
        [str(escaped), "3"],
        [str(gif_like), "0"],
    ]
    listed = f"{digit_files[0]}\n".encode("utf-16")
    result = CliRunner().invoke(cli, ["predict", str(large_digit_model), "-"], input=listed)
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == (
        "Error: -: standard input holds UTF-16 text; `-` reads paths in UTF-8, one per line "
        "(iconv -f UTF-16 -t UTF-8 turns one into the other)\n"
    )


def test_binary_data_piped_in_that_is_no_image_is_one_line_naming_stdin(large_digit_model: Path) -> None:
    """Once read as paths, such bytes gave a line for each 'path' between their line breaks."""
    noise = np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    result = CliRunner().invoke(cli, ["predict", str(large_digit_model), "-"], input=b"Q" + noise)
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == "-: not an image (Pillow cannot identify the format)\n"


def test_an_image_in_a_shells_pipe_given_by_its_path_is_read_once(
    large_digit_model: Path, digit_files: list[Path], tmp_path: Path
) -> None:
    """`predict CKPT <(curl -s URL)` and `... | predict CKPT /dev/stdin` were refused as "not
    a regular file", where `-` and a checkpoint given so are read. Such a pipe is read whole,
    once, in its place among the other images. A named pipe (mkfifo) with no writer stays
    refused at once: opening it would wait for ever."""
    command = [sys.executable, "-m", "mnistkit", "predict", str(large_digit_model)]
    substituted = subprocess.run(
        ["bash", "-c", f'"$@" {digit_files[0]} <(cat {digit_files[1]}) {digit_files[2]}', "bash", *command],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert substituted.returncode == 0, substituted.stderr
    rows = [line.split("\t")[:2] for line in substituted.stdout.splitlines()]
    assert [digit for _, digit in rows] == [str(digit) for digit in DIGITS[:3]]
    assert rows[0][0] == str(digit_files[0]) and rows[1][0].startswith("/dev/fd/")
    piped = subprocess.run(
        [*command, "/dev/stdin"], input=digit_files[1].read_bytes(), capture_output=True, timeout=60
    )
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout.decode().split("\t")[:2] == ["/dev/stdin", str(DIGITS[1])]
    empty = subprocess.run([*command, "/dev/stdin"], input="", capture_output=True, text=True, timeout=60)
    assert empty.returncode == 1 and empty.stderr == "/dev/stdin: empty file\n"
    fifo = tmp_path / "photo"
    os.mkfifo(fifo)
    refused = run("predict", large_digit_model, fifo)
    assert refused.exit_code == 1
    assert refused.stderr == f"{fifo}: not a regular file (a device or a pipe), expected an image file\n"


@pytest.mark.parametrize(
    "content, kind",
    [
        (b"\x1f\x8b\x08\x00" + bytes(40), "a gzip file (such as a downloaded IDX file)"),
        (b"PK\x03\x04" + bytes(40), "a zip archive such as an .npz data file (from parse-to-npz)"),
    ],
)
def test_files_piped_in_by_mistake_are_named(large_digit_model: Path, content: bytes, kind: str) -> None:
    result = CliRunner().invoke(cli, ["predict", str(large_digit_model), "-"], input=content)
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == (
        f"Error: -: standard input holds {kind}, not an image nor image paths; `-` reads an "
        "image's bytes, or paths, one per line\n"
    )


def test_an_image_piped_in_too_large_to_hold_is_refused(
    large_digit_model: Path, digit_files: list[Path], monkeypatch
) -> None:
    from mnistkit import stdin_inputs

    monkeypatch.setattr(stdin_inputs, "MAX_IMAGE_BYTES", 100)
    result = CliRunner().invoke(
        cli, ["predict", str(large_digit_model), "-"], input=digit_files[0].read_bytes()
    )
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == (
        "Error: -: standard input holds more than 100 bytes, too large for one image (give it by its path)\n"
    )


def test_paths_ended_by_nul_on_stdin_get_the_way_that_reads_them(
    large_digit_model: Path, digit_files
) -> None:
    """`find -print0 | mnistkit predict CKPT -` was told its paths were binary data."""
    listed = b"".join(bytes(path) + b"\0" for path in digit_files)
    result = CliRunner().invoke(cli, ["predict", str(large_digit_model), "-"], input=listed)
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == (
        "Error: -: standard input holds paths ended by NUL bytes (find -print0); `-` reads one path "
        "per line, and with --null (-0) paths ended by NUL: mnistkit predict CKPT --null -\n"
    )


def test_null_reads_paths_ended_by_nul_with_line_breaks_and_odd_bytes_in_names(
    large_digit_model: Path, digit_files: list[Path], tmp_path: Path
) -> None:
    """`find -print0 | mnistkit predict CKPT --null -`: each name whole, a line break or a byte
    that is not UTF-8 in it too; the last NUL may be missing, as `xargs -0` allows."""
    broken = tmp_path / "two\nlines.png"
    broken.write_bytes(digit_files[2].read_bytes())  # a 7
    latin = tmp_path / os.fsdecode(b"caf\xe9.png")
    latin.write_bytes(digit_files[3].read_bytes())  # a 1
    names = [digit_files[0], broken, latin, digit_files[1]]
    listed = b"\0".join(os.fsencode(path) for path in names)
    for stdin in (listed + b"\0", listed, b"\0" + listed.replace(b"\0", b"\0\0") + b"\0"):
        output = tmp_path / "predictions.tsv"
        result = CliRunner().invoke(
            cli, ["predict", str(large_digit_model), "-0", "-", "-o", str(output)], input=stdin
        )
        assert result.exit_code == 0, result.output
        rows = list(csv.reader(io.StringIO(os.fsdecode(output.read_bytes()), newline=""), delimiter="\t"))
        assert [row[0] for row in rows] == [str(path) for path in names]
        assert [row[1] for row in rows] == ["3", "7", "1", "0"]


def test_null_told_lines_says_so_and_predicts_nothing(large_digit_model: Path, digit_files) -> None:
    stdin = "".join(f"{path}\n" for path in digit_files)
    result = run("predict", large_digit_model, "--null", "-", stdin=stdin)
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == (
        "Error: -: standard input holds lines, not paths ended by NUL bytes; --null reads what "
        "find -print0 writes (without --null, `-` reads one path per line)\n"
    )
    one = run("predict", large_digit_model, "--null", "-", stdin=f"{digit_files[0]}\n")  # as echo gives it
    assert one.exit_code == 0 and one.stdout.startswith(f"{digit_files[0]}\t3\t"), one.output


def test_no_paths_on_stdin_is_no_rows_and_success(large_digit_model: Path, tmp_path: Path) -> None:
    """`find ... | mnistkit predict CKPT -` that finds nothing: as `xargs -r`, nothing to do."""
    output = tmp_path / "predictions.csv"
    result = run("predict", large_digit_model, "-", "--format", "csv", "-o", output, stdin="")
    assert result.exit_code == 0 and result.stdout == "" and result.stderr == ""
    assert output.read_text() == "path,digit,confidence\n"


def test_an_unreadable_image_is_its_one_line_and_the_others_are_predicted(
    large_digit_model: Path, digit_files: list[Path], tmp_path: Path
) -> None:
    """A file the user may not read is a bad input like a missing one, not a usage error that
    stops the whole run (click's own path check did that)."""
    unreadable = tmp_path / "private.png"
    unreadable.write_bytes(digit_files[0].read_bytes())
    unreadable.chmod(0)
    script = OBEY_PERMISSIONS + ("import sys\nfrom mnistkit.cli import cli\ncli(sys.argv[1:])\n")
    for args, rows, error in [
        (["predict", large_digit_model, unreadable, digit_files[1]], 1, f"{unreadable}: cannot read"),
        (["predict", unreadable, digit_files[1]], 0, f"Error: {unreadable}: cannot read"),
    ]:
        result = subprocess.run(
            [sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 1, result.stderr
        assert len(result.stdout.splitlines()) == rows and result.stderr.startswith(error), result.stderr
        assert len(result.stderr.splitlines()) == 1, result.stderr


def test_long_file_names_are_predicted_saved_and_written(
    large_digit_model: Path, digit_files: list[Path], tmp_path: Path
) -> None:
    """A 251-byte input name gave `NNNNNN-NAME.png` 258 bytes: the run stopped at that image,
    and a 236-byte `-o` name failed ('File name too long'), though both names are legal."""
    long_inputs = []
    for digit_file, last in zip(digit_files[:2], "ab", strict=True):
        long_input = tmp_path / ("d" * 246 + f"{last}.png")
        long_input.write_bytes(digit_file.read_bytes())
        long_inputs.append(long_input)
    saved, output = tmp_path / "seen", tmp_path / ("p" * 236 + ".tsv")
    result = run(
        "predict", large_digit_model, *long_inputs, digit_files[2], "--save-preprocessed", saved, "-o", output
    )
    assert result.exit_code == 0, result.output
    assert [row.split("\t")[0] for row in output.read_text().splitlines()] == [
        *map(str, long_inputs),
        str(digit_files[2]),
    ]
    names = sorted(path.name for path in saved.iterdir())
    assert len(names) == 3 and names[2] == f"000003-{digit_files[2].stem}.png"
    assert all(
        len(os.fsencode(name)) <= 255 and name.startswith(f"00000{place}-ddd")
        for place, name in zip("12", names[:2], strict=True)
    )


def test_save_preprocessed_writes_what_the_model_saw(
    large_digit_model: Path, digit_files: list[Path], tmp_path: Path
) -> None:
    saved = tmp_path / "seen"
    result = run("predict", large_digit_model, *digit_files[:2], "--save-preprocessed", saved)
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in saved.iterdir())
    assert names == ["000001-0-digit3.png", "000002-1-digit0.png"]
    image = np.asarray(Image.open(saved / names[0]))
    assert image.shape == (28, 28) and image.max() == 255 and image[0, 0] == 0


def test_no_preprocess_takes_28x28_and_names_other_sizes(large_digit_model: Path, tmp_path: Path) -> None:
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(small)
    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((40, 28), np.uint8)).save(big)
    result = run("predict", large_digit_model, small, big, "--no-preprocess")
    assert result.exit_code == 1
    assert result.stdout.startswith(f"{small}\t")
    assert result.stderr == f"{big}: image is 28x40 pixels; --no-preprocess needs 28x28 " + (
        "(leave it out to have the picture fitted into 28x28)\n"
    )


def test_no_preprocess_refuses_a_digit_drawn_dark_on_white(large_digit_model: Path, tmp_path: Path) -> None:
    """A person's own 28x28 drawing is black on white: with --no-preprocess it was read as it
    is, inverted to MNIST's eyes, and given a confident wrong digit."""
    drawn = tmp_path / "drawn.png"
    Image.fromarray(255 - draw_large_digit(3, glyph_px=18, canvas_px=(28, 28), stroke_px=2)).save(drawn)
    result = run("predict", large_digit_model, drawn, "--no-preprocess")
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == (
        f"{drawn}: image is dark on light paper (its edge averages 255 of 255), where --no-preprocess "
        "takes pictures light on black, as the model's dataset has them (leave it out to have the picture "
        "prepared)\n"
    )
    assert run("predict", large_digit_model, drawn).stdout.startswith(f"{drawn}\t3\t")


def test_output_digits_are_the_checkpoints_classes(tmp_path: Path, digit_files: list[Path]) -> None:
    architecture = {"model": "logreg", "num_classes": 2}
    params = {name: np.zeros(shape, np.float32) for name, shape in param_shapes(architecture).items()}
    params["dense_0.bias"] = np.array([0.0, 1.0], np.float32)
    path = tmp_path / "3v8.safetensors"
    save_checkpoint(
        path, params, {"architecture": architecture, "normalization": {"kind": "unit"}, "classes": [3, 8]}
    )
    result = run("predict", path, digit_files[0], "--top-k", "5", "--format", "jsonl")
    record = json.loads(result.stdout)
    assert record["digit"] == 8 and [t["digit"] for t in record["top"]] == [8, 3]
    # Fewer columns than asked for, said rather than left to the script that reads them
    assert result.exit_code == 0 and result.stderr == "--top-k 5: the model knows 2 classes; giving all 2\n"


def test_a_bad_checkpoint_is_one_error_line(tmp_path: Path, digit_files: list[Path]) -> None:
    fake = tmp_path / "model.safetensors"
    fake.write_bytes(b"\x80\x04not a checkpoint at all")
    result = run("predict", fake, digit_files[0])
    assert result.exit_code == 1 and result.stderr.startswith(f"Error: {fake}: ")
    assert len(result.stderr.splitlines()) == 1


def test_the_process_pool_keeps_input_order(digit_files: list[Path], tmp_path: Path) -> None:
    paths = [str(p) for p in digit_files] * 5 + [str(tmp_path / "missing.png")]
    serial = [item for chunk in load_digits(paths, workers=1) for item in chunk]
    pooled = [item for chunk in load_digits(paths, workers=2, chunk_size=3) for item in chunk]
    assert [item.path for item in pooled] == paths
    for one, other in zip(serial, pooled, strict=True):
        assert one.error == other.error
        assert (one.image is None and other.image is None) or np.array_equal(one.image, other.image)


def test_a_chunk_before_a_wait_is_yielded_before_the_next_path_is_asked_for(
    digit_files: list[Path],
) -> None:
    """A StdinWaits (stdin has no path now) ends a chunk, and what came before it is answered
    before stdin is waited for: with the pool too, whose chunks in flight are drained first
    while no more paths come."""
    quiet, _ = os.pipe()  # a stdin whose writer is silent
    asked: list[str] = []
    answered: list[str] = []
    asked_before_wait = 0

    def paths():
        nonlocal asked_before_wait
        wait = StdinWaits(quiet)
        for path in [str(p) for p in digit_files] * 3 + [wait, wait] + [str(digit_files[0])] * 2 + [wait]:
            if isinstance(path, StdinWaits):
                asked_before_wait = len(asked)
            else:
                assert len(answered) >= asked_before_wait, "a path was asked for before the wait's answers"
                asked.append(path)
            yield path

    for workers, chunk_size in ((1, 4), (2, 4), (2, 5)):  # 5: a wait right after a full chunk
        asked.clear()
        answered.clear()
        asked_before_wait = 0
        for chunk in load_digits(paths(), workers=workers, chunk_size=chunk_size):
            answered.extend(item.path for item in chunk)
            assert all(item.image is not None for item in chunk)
        assert answered == asked == [str(p) for p in digit_files] * 3 + [str(digit_files[0])] * 2


def test_paths_that_come_while_the_workers_work_are_read_meanwhile(digit_files: list[Path]) -> None:
    """At a wait with chunks in flight, paths that come are read and handed to the workers as
    they work, not after every chunk in flight is done (which left all workers but one idle
    at each wait of a bursty writer)."""
    reader, writer = os.pipe()
    os.write(writer, b"more\n")  # stdin has more by the time it is asked
    asked: list[str] = []

    def paths():
        for path in [*map(str, digit_files * 2), StdinWaits(reader), *map(str, digit_files)]:
            if not isinstance(path, StdinWaits):
                asked.append(path)
            yield path

    asked_at_each_chunk = []
    for chunk in load_digits(paths(), workers=2, chunk_size=5):
        asked_at_each_chunk.append(len(asked))
        assert all(item.image is not None for item in chunk)
    os.close(reader)
    os.close(writer)
    # Two chunks in flight at the wait; the first answered after the last paths were read.
    assert asked_at_each_chunk == [15, 15, 15]


def test_rows_come_while_stdin_is_still_open(large_digit_model: Path, digit_files: list[Path]) -> None:
    """`producer | mnistkit predict CKPT -`: each path's row comes when the path does, not when
    a chunk of 256 is full or the producer ends (a pipe block-buffers Python's stdout)."""
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONUNBUFFERED"}
    for null in (False, True):
        command = [sys.executable, "-m", "mnistkit", "predict", str(large_digit_model), "-"]
        process = subprocess.Popen(
            command + (["--null"] if null else []),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=environment,
        )
        try:
            for path, digit in zip(digit_files[:2], DIGITS, strict=False):
                process.stdin.write(os.fsencode(path) + (b"\0" if null else b"\n"))
                process.stdin.flush()
                ready, _, _ = select.select([process.stdout], [], [], 60)
                assert ready, f"no row for {path} while stdin is open"
                assert process.stdout.readline().startswith(f"{path}\t{digit}\t".encode())
            process.stdin.close()
            assert process.stdout.read() == b"" and process.wait(60) == 0
        finally:
            process.kill()
            process.wait()


def test_a_non_blocking_stdin_is_waited_for_not_taken_as_ended(
    large_digit_model: Path, digit_files: list[Path]
) -> None:
    """A parent may hand over a pipe in non-blocking mode: its empty moments are waits too."""
    reader, writer = os.pipe()
    os.set_blocking(reader, False)
    process = subprocess.Popen(
        [sys.executable, "-m", "mnistkit", "predict", str(large_digit_model), "-"],
        stdin=reader,
        stdout=subprocess.PIPE,
    )
    os.close(reader)
    try:
        for path in digit_files[:2]:
            time.sleep(0.5)  # predict is reading an empty pipe meanwhile
            os.write(writer, os.fsencode(path) + b"\n")
        os.close(writer)
        rows = process.stdout.read().decode().splitlines()
        assert process.wait(60) == 0
    finally:
        process.kill()
        process.wait()
    assert [row.split("\t")[:2] for row in rows] == [
        [str(path), str(digit)] for path, digit in zip(digit_files[:2], DIGITS, strict=False)
    ]


def test_predict_never_imports_jax(large_digit_model: Path, digit_files: list[Path]) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            "-m",
            "mnistkit",
            "predict",
            str(large_digit_model),
            str(digit_files[0]),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert "numpy" in imported and "PIL.Image" in imported
    assert not {name for name in imported if name == "jax" or name.startswith(("jax.", "jaxlib"))}
    assert result.stdout.startswith(f"{digit_files[0]}\t3\t")


def _parts_sent(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of paths in each request sent to load_digits' workers, as they are sent."""
    sizes: list[int] = []
    start = image_files._start_pool

    def spied(*args):
        pool = start(*args)
        submit = pool.submit
        pool.submit = lambda request: sizes.append(request.count(b"\0") + 1) or submit(request)
        return pool

    monkeypatch.setattr(image_files, "_start_pool", spied)
    return sizes


def test_every_worker_gets_a_share_of_the_last_chunk(
    digit_files: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each chunk went to one worker whole: with 300 large pictures, one worker read 256 of them
    while the other read 44."""
    sizes = _parts_sent(monkeypatch)
    paths = [str(digit_files[0])] * 10
    loaded = [item for chunk in load_digits(paths, workers=2, chunk_size=8) for item in chunk]
    assert [item.path for item in loaded] == paths and all(item.image is not None for item in loaded)
    assert sizes == [2, 2, 2, 2, 1, 1]


class _Clock:
    """time.monotonic() for image_files, moved on by hand: reading's time as the test says it,
    whatever a loaded machine adds to the real reading and sleeping."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


READ_S = 0.07  # a large picture's reading: three make a piece (PIECE_S), six stay under HAND_OFF_S


@pytest.fixture
def reading_clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    clock = _Clock()
    monkeypatch.setattr(image_files, "time", clock)
    return clock


@pytest.fixture
def slow_digit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reading_clock: _Clock) -> str:
    """A digit's path that takes as long to read as a large picture's (READ_S), by image_files'
    clock. Slept for real, the reading took longer on a loaded machine (the first one alone
    passed HAND_OFF_S), and how many pictures a piece or a hand-off took changed with it."""
    digit = tmp_path / "digit.png"
    Image.fromarray(255 - draw_large_digit(3)).save(digit)
    read = image_files.load_one

    def slowly(*args, **kwargs):
        loaded = read(*args, **kwargs)
        reading_clock.now += READ_S
        return loaded

    monkeypatch.setattr(image_files, "load_one", slowly)
    return str(digit)


def test_pictures_slow_to_read_here_go_to_the_workers(
    slow_digit: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fewer pictures than a chunk were all read in this process, on one core: 60 large PNGs
    took as long with two cores as with one."""
    monkeypatch.setattr(image_files, "HAND_OFF_S", 0.1)
    sizes = _parts_sent(monkeypatch)
    loaded = [item for chunk in load_digits([slow_digit] * 12, workers=2) for item in chunk]
    assert len(loaded) == 12 and all(item.image is not None for item in loaded)
    # Two read here (0.14 s, past HAND_OFF_S), the other ten in a part for each of 2 x 2.
    assert sizes == [3, 3, 3, 1], sizes


def test_the_callers_time_between_pieces_is_not_reading(
    slow_digit: str, monkeypatch: pytest.MonkeyPatch, reading_clock: _Clock
) -> None:
    """Only reading counts towards handing pictures to the workers: a caller slow between
    pieces (jax compiling at the first) started them for six quick pictures."""
    sizes = _parts_sent(monkeypatch)
    for _ in load_digits([slow_digit] * 6, workers=2):  # 0.42 s of reading, under HAND_OFF_S
        reading_clock.now += 0.3  # the caller's own work between pieces
    assert sizes == []


def test_pictures_read_in_this_process_come_in_pieces_as_they_are_read(slow_digit: str) -> None:
    """Fewer pictures than a chunk are read here, one after another: 200 paths to 3000 px PNGs
    gave their rows all at once, after 11.7 s, where `| head -1` waited for every one."""
    sizes = [len(chunk) for chunk in load_digits([slow_digit] * 12, workers=1)]
    assert sizes == [3, 3, 3, 3], sizes  # a piece each time PIECE_S of reading has passed


BLAS_THREADS_SEEN = """
import os, sys


class NumpyImportWatch:
    \"\"\"Records OPENBLAS_NUM_THREADS as numpy is first imported, when OpenBLAS reads it.\"\"\"

    seen = None

    def find_spec(self, name, path=None, target=None):
        if name == "numpy" and NumpyImportWatch.seen is None:
            NumpyImportWatch.seen = os.environ.get("OPENBLAS_NUM_THREADS", "unset")


sys.meta_path.insert(0, NumpyImportWatch())
from mnistkit.__main__ import main

sys.argv = ["mnistkit", *sys.argv[1:]]
try:
    main()
finally:
    print("OPENBLAS_NUM_THREADS at numpy's import:", NumpyImportWatch.seen, file=sys.stderr)
"""


@pytest.mark.parametrize("command", ["predict", "eval --labels"])
@pytest.mark.parametrize(("given", "seen"), [(None, "1"), ("2", "2")])
def test_commands_reading_images_run_one_blas_thread_unless_told_otherwise(
    large_digit_model: Path, tmp_path: Path, command: str, given: str | None, seen: str
) -> None:
    """OpenBLAS's idle threads spun against the workers reading the pictures: 4,000 PNGs ran
    at 941 images/s, and 1,076 with one BLAS thread (2 cores, `scripts/bench_predict.py`);
    `eval --labels` of 3,000 PNGs beside other jobs took 14.5 to 15.2 s, and 5.7 to 7.3 with one."""
    digit = tmp_path / "seven.png"
    Image.fromarray(255 - draw_large_digit(7)).save(digit)
    (tmp_path / "labels.tsv").write_text("seven.png\t7\n")
    arguments = {
        "predict": ["predict", digit],
        "eval --labels": ["eval", "--labels", tmp_path / "labels.tsv"],
    }
    answer = {"predict": f"{digit}\t7\t", "eval --labels": "accuracy 100.00%"}
    environment = {name: value for name, value in os.environ.items() if name != "OPENBLAS_NUM_THREADS"}
    environment.update({"OPENBLAS_NUM_THREADS": given} if given else {})
    name, *options = arguments[command]
    result = subprocess.run(
        [sys.executable, "-c", BLAS_THREADS_SEEN, name, str(large_digit_model), *map(str, options)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
    )
    assert result.returncode == 0 and answer[command] in result.stdout, result.stderr
    assert result.stderr.endswith(f"OPENBLAS_NUM_THREADS at numpy's import: {seen}\n")
