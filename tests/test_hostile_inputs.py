"""Hostile and broken files through the commands that read them, and fuzzing of the loaders.

The loaders' own tests (test_checkpoint, test_arrays, test_images, test_idx) hold each
fault at the library level; here every hostile checkpoint, array file and image goes
through each command that reads it: one `path: problem` line, exit 1, no traceback,
nothing written, nothing unpickled, and (for predict) the other images still predicted.
The fuzz properties (`test_fuzz_*`, deep under `make fuzz`) mutate real files of every
image format and real `.npz` files: they load or raise MnistkitError, never anything else.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import pickle
import signal
import struct
import subprocess
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import draw_large_digit
from faults import mnistkit_command
from hypothesis import given
from hypothesis import strategies as st
from numpy.lib import format as npy_format
from PIL import Image
from safetensors.numpy import save as save_safetensors

from mnistkit.architectures import param_shapes
from mnistkit.arrays import load_arrays
from mnistkit.checkpoint import FORMAT_VERSION, METADATA_KEY, canonical_json, save_checkpoint
from mnistkit.cli import cli
from mnistkit.errors import MnistkitError
from mnistkit.images import load_digit

ARCHITECTURE = {"model": "mlp", "hidden": [8], "activation": "relu", "num_classes": 10}
METADATA = {"architecture": ARCHITECTURE, "normalization": {"kind": "unit"}, "classes": list(range(10))}
FULL_METADATA = {**METADATA, "format": "mnistkit-checkpoint", "format_version": FORMAT_VERSION}


def run(*args: object, stdin: str | None = None):
    return CliRunner().invoke(cli, [str(arg) for arg in args], input=stdin)


def assert_one_error_line(result, path: Path | str, problem: str) -> None:
    assert result.exit_code == 1, result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), (
        result.exception
    )
    assert result.stderr.startswith(f"Error: {path}: "), result.stderr
    assert problem in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr


def params(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        name: (rng.standard_normal(shape) * 0.1).astype(np.float32)
        for name, shape in param_shapes(ARCHITECTURE).items()
    }


def safetensors_bytes(tensors: dict[str, np.ndarray], metadata: object = FULL_METADATA) -> bytes:
    """A checkpoint written around mnistkit's own checks, to say what a hostile one can."""
    text = canonical_json(metadata) if isinstance(metadata, dict) else metadata
    return save_safetensors(tensors, metadata={METADATA_KEY: text})


def with_header(data: bytes, edit: Callable[[dict], None]) -> bytes:
    length = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + length])
    edit(header)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data[8 + length :]


class PickleBomb:
    """Unpickling this writes a marker file: proof that something unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "unpickled"))


def poisoned(name: str, value: float) -> bytes:
    tensors = params()
    tensors[name] = tensors[name].copy()
    tensors[name].flat[0] = value
    return safetensors_bytes(tensors)


CHECKPOINTS: dict[str, tuple[Callable[[Path], bytes], str]] = {
    "empty": (lambda m: b"", "not a safetensors checkpoint"),
    "pickle renamed": (lambda m: pickle.dumps(PickleBomb(m)), "not a safetensors checkpoint"),
    "truncated": (lambda m: safetensors_bytes(params())[:-100], "truncated or corrupted"),
    "header length beyond the file": (
        lambda m: struct.pack("<Q", 2**63) + safetensors_bytes(params())[8:],
        "exceeds the file",
    ),
    "header not JSON": (lambda m: struct.pack("<Q", 8) + b"\x80\x04\x95not" + b"\0" * 64, "not JSON"),
    "metadata missing": (lambda m: save_safetensors(params()), "not an mnistkit checkpoint"),
    "metadata not JSON": (lambda m: safetensors_bytes(params(), "{'python': 1}"), "not valid JSON"),
    "newer format version": (
        lambda m: safetensors_bytes(params(), {**FULL_METADATA, "format_version": FORMAT_VERSION + 1}),
        "newer than this mnistkit reads",
    ),
    "shape disagrees": (
        lambda m: safetensors_bytes({**params(), "dense_0.bias": np.zeros(9, np.float32)}),
        "the architecture needs float32[8]",
    ),
    "dtype disagrees": (
        lambda m: safetensors_bytes({**params(), "dense_0.bias": np.zeros(8, np.float64)}),
        "dense_0.bias is float64[8]",
    ),
    "float16 tensor": (
        lambda m: safetensors_bytes({**params(), "dense_0.bias": np.zeros(8, np.float16)}),
        "malformed header entry",
    ),
    "shape of 2**62 elements": (
        lambda m: with_header(
            safetensors_bytes(params()), lambda h: h["dense_0.bias"].update(shape=[2**31, 2**31])
        ),
        "disagrees with its shape",
    ),
    "NaN weight": (lambda m: poisoned("dense_0.kernel", np.nan), "holds NaN or infinite values"),
    "infinite weight": (lambda m: poisoned("dense_1.bias", np.inf), "holds NaN or infinite values"),
    "missing tensor": (
        lambda m: safetensors_bytes({k: v for k, v in params().items() if k != "dense_1.bias"}),
        "missing: dense_1.bias",
    ),
}

# Each command that reads a checkpoint; {ckpt}, {npz}, {png}, {out} are filled in.
CHECKPOINT_READERS = {
    "predict": ("predict", "{ckpt}", "{png}"),
    "eval": ("eval", "{ckpt}", "{npz}", "--json", "{out}"),
    "info": ("info", "{ckpt}"),
    "render-samples --model": ("render-samples", "{npz}", "-o", "{out}", "--model", "{ckpt}"),
    "render-confusion --model": ("render-confusion", "--model", "{ckpt}", "--data", "{npz}", "-o", "{out}"),
    "train --resume": ("train", "{npz}", "-o", "{out}", "--resume", "{ckpt}"),
}


@pytest.fixture
def readable_inputs(tmp_path: Path, small_data: dict[str, np.ndarray]) -> dict[str, Path]:
    npz = tmp_path / "mnist.npz"
    np.savez(npz, **small_data)
    png = tmp_path / "digit.png"
    Image.fromarray(small_data["test_images"][0]).save(png)
    good = tmp_path / "good.safetensors"
    save_checkpoint(good, params(), METADATA)
    return {"npz": npz, "png": png, "ckpt": good}


def fill(args: tuple[str, ...], **paths: Path) -> list[str]:
    return [arg.format(**paths) for arg in args]


@pytest.mark.parametrize("case", CHECKPOINTS)
def test_each_hostile_checkpoint_is_one_line_in_every_command(
    case: str, tmp_path: Path, readable_inputs: dict[str, Path]
) -> None:
    marker = tmp_path / "unpickled"
    make, problem = CHECKPOINTS[case]
    hostile = tmp_path / "hostile.safetensors"
    hostile.write_bytes(make(marker))
    out = tmp_path / "out" / "written"
    out.parent.mkdir()
    for command, args in CHECKPOINT_READERS.items():
        result = run(*fill(args, **{**readable_inputs, "ckpt": hostile, "out": out}))
        assert_one_error_line(result, hostile, problem)
        assert list(out.parent.iterdir()) == [], command
    assert not marker.exists()


def npy_member(header_shape: tuple[int, ...], payload: bytes) -> bytes:
    buffer = io.BytesIO()
    npy_format.write_array_header_1_0(buffer, {"descr": "|u1", "fortran_order": False, "shape": header_shape})
    return buffer.getvalue() + payload


def npz_with(small_data: dict[str, np.ndarray], path: Path, replace: dict[str, bytes | None]) -> None:
    """An .npz of `small_data` with some members replaced by raw bytes or left out."""
    with zipfile.ZipFile(path, "w") as archive:
        for key, array in small_data.items():
            if key in replace:
                if replace[key] is not None:
                    archive.writestr(f"{key}.npy", replace[key])
                continue
            buffer = io.BytesIO()
            np.save(buffer, array)
            archive.writestr(f"{key}.npy", buffer.getvalue())


def object_array_member(marker: Path) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.array([PickleBomb(marker)], dtype=object), allow_pickle=True)
    return buffer.getvalue()


# Each fault lies in the test arrays, which every command below reads (eval and the pictures
# read only the split they show).
ARRAY_FILES: dict[str, tuple[Callable[[dict, Path], dict[str, bytes | None]] | bytes, str]] = {
    "object array": (lambda d, m: {"test_labels": object_array_member(m)}, "object arrays"),
    "missing key": (lambda d, m: {"test_labels": None}, "missing arrays test_labels"),
    "wrong shape": (
        lambda d, m: {"test_images": npy_member((20, 784), d["test_images"].tobytes())},
        "expected (N, 28, 28)",
    ),
    "header declares 713 TiB": (
        lambda d, m: {"test_images": npy_member((10**12, 28, 28), d["test_images"].tobytes())},
        "declares more data than fits in memory",
    ),
    "header declares more than the member holds": (
        lambda d, m: {"test_images": npy_member((60000, 28, 28), d["test_images"].tobytes())},
        "not a valid .npz",
    ),
    "not a zip": (b"\x93NUMPY not really", "not a valid .npz"),
    # numpy takes what is no zip for a pickle: it was said to hold object arrays
    "PK, then no zip": (
        b"PK garbage",
        "not a valid .npz file (it starts as a zip archive does, but is none)",
    ),
    "empty": (b"", "not a valid .npz"),
}
ARRAY_READERS = {
    "train": ("train", "{npz}", "-o", "{out}", "--epochs", "1"),
    "eval": ("eval", "{ckpt}", "{npz}"),
    "render-samples": ("render-samples", "{npz}", "-o", "{out}"),
    "render-embedding": ("render-embedding", "{ckpt2d}", "{npz}", "-o", "{out}"),
}


@pytest.mark.parametrize("case", ARRAY_FILES)
def test_each_broken_array_file_is_one_line_in_every_command(
    case: str, tmp_path: Path, small_data: dict[str, np.ndarray], readable_inputs: dict[str, Path]
) -> None:
    marker = tmp_path / "unpickled"
    make, problem = ARRAY_FILES[case]
    hostile = tmp_path / "hostile.npz"
    if isinstance(make, bytes):
        hostile.write_bytes(make)
    else:
        npz_with(small_data, hostile, make(small_data, marker))
    two_unit = tmp_path / "2d.safetensors"
    architecture = {**ARCHITECTURE, "hidden": [8, 2]}
    weights = {name: np.full(shape, 0.01, np.float32) for name, shape in param_shapes(architecture).items()}
    save_checkpoint(two_unit, weights, {**METADATA, "architecture": architecture})
    out = tmp_path / "out" / "written"
    out.parent.mkdir()
    for command, args in ARRAY_READERS.items():
        result = run(*fill(args, **{**readable_inputs, "npz": hostile, "out": out, "ckpt2d": two_unit}))
        assert_one_error_line(result, hostile, problem)
        assert list(out.parent.iterdir()) == [], command
    assert not marker.exists()


def png_header(width: int, height: int) -> bytes:
    """A PNG declaring width x height that holds almost nothing: a decompression bomb's header."""
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def bmp_header(width: int, height: int) -> bytes:
    """A BMP declaring width x height, 8 bits per pixel, with no pixels after its header."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info), 0, 0, 14 + len(info)) + info


def gif_header(width: int, height: int) -> bytes:
    """A GIF whose screen and one frame declare width x height, with one byte of pixel data."""
    screen = b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0)
    frame = b"," + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x08\x01\x00\x00"
    return screen + frame + b";"


def digit_image(digit: int) -> Image.Image:
    return Image.fromarray(255 - draw_large_digit(digit))


def save_image(image: Image.Image, path: Path, **options) -> Path:
    image.save(path, **options)
    return path


def palette_with_transparency(path: Path) -> Path:
    """A palette image whose background entry is transparent and whose ink is opaque."""
    image = Image.fromarray(draw_large_digit(4)).convert("P")
    image.info["transparency"] = 0
    return save_image(image, path, transparency=0)


def animated_gif(path: Path) -> Path:
    frames = [digit_image(digit) for digit in (6, 1, 1)]
    return save_image(frames[0], path, save_all=True, append_images=frames[1:], duration=100)


def sixteen_bit(path: Path) -> Path:
    return save_image(Image.fromarray((255 - draw_large_digit(9)).astype(np.uint16) * 257), path)


# Odd but genuine images: predicted. Hostile ones: one line each, naming the problem.
ODD_IMAGES: dict[str, Callable[[Path], Path]] = {
    "16-bit.png": sixteen_bit,
    "cmyk.tif": lambda p: save_image(digit_image(2).convert("CMYK"), p),
    "palette-transparent.png": palette_with_transparency,
    "animated.gif": animated_gif,
    "plain.png": lambda p: save_image(digit_image(7), p),
}
HOSTILE_IMAGES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "bomb.png": (lambda p: p.write_bytes(png_header(100_000, 100_000)) and p, "decompression bomb"),
    "bomb.bmp": (lambda p: p.write_bytes(bmp_header(30_000, 30_000)) and p, "decompression bomb"),
    "bomb.gif": (lambda p: p.write_bytes(gif_header(65_535, 65_535)) and p, "decompression bomb"),
    "zero-bytes.png": (lambda p: p.write_bytes(b"") or p, "empty file"),
    "truncated.png": (
        lambda p: p.write_bytes(save_image(digit_image(3), p).read_bytes()[:300]) and p,
        "truncated or corrupted",
    ),
    "a-directory.png": (lambda p: p.mkdir() or p, "is a directory"),
    "loop.png": (lambda p: os.symlink(p, p) or p, "cannot read"),
    "not-an-image.png": (lambda p: p.write_text("#!/bin/sh\nrm -rf /\n") and p, "not an image"),
    "strip.png": (lambda p: save_image(Image.new("L", (100_000, 1), 255), p), "too elongated"),
    "missing.png": (lambda p: p, "no such file"),
}


@pytest.fixture
def mixed_images(tmp_path: Path) -> tuple[list[Path], dict[Path, str]]:
    """Odd and hostile images interleaved, in one folder."""
    folder = tmp_path / "images"
    folder.mkdir()
    paths, problems = [], {}
    odd = list(ODD_IMAGES.items())
    for index, (name, (make, problem)) in enumerate(HOSTILE_IMAGES.items()):
        path = make(folder / name)
        paths.append(path)
        problems[path] = problem
        if index < len(odd):
            paths.append(odd[index][1](folder / odd[index][0]))
    return paths, problems


@pytest.mark.parametrize("via", ["arguments", "stdin"])
def test_predict_reports_each_hostile_image_and_predicts_the_others(
    large_digit_model: Path, mixed_images: tuple[list[Path], dict[Path, str]], via: str
) -> None:
    paths, problems = mixed_images
    if via == "stdin":
        result = run("predict", large_digit_model, "-", stdin="".join(f"{p}\n" for p in paths))
    else:
        result = run("predict", large_digit_model, *paths)
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    rows = list(csv.reader(io.StringIO(result.stdout), delimiter="\t"))
    assert [row[0] for row in rows] == [str(p) for p in paths if p not in problems]
    predicted = {Path(row[0]).name: int(row[1]) for row in rows}
    assert predicted == {
        "16-bit.png": 9,
        "cmyk.tif": 2,
        "palette-transparent.png": 4,
        "animated.gif": 6,
        "plain.png": 7,
    }
    errors = result.stderr.splitlines()
    assert [line.split(": ", 1)[0] for line in errors] == [str(p) for p in problems]
    for line, problem in zip(errors, problems.values(), strict=True):
        assert problem in line, line
    assert "Traceback" not in result.output


IMAGE_FORMATS = {
    "PNG": {},
    "GIF": {},
    "JPEG": {"quality": 80},
    "BMP": {},
    "TIFF": {},
    "WEBP": {"quality": 80},
    "PNG-RGBA": {},
    "ICO": {},
}


def encoded_digit(image_format: str) -> bytes:
    image = Image.fromarray(draw_large_digit(5, glyph_px=40, canvas_px=(48, 40), stroke_px=2))
    if image_format == "PNG-RGBA":
        image, image_format = image.convert("RGBA"), "PNG"
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **IMAGE_FORMATS.get(image_format, {}))
    return buffer.getvalue()


ENCODED = {name: encoded_digit(name) for name in IMAGE_FORMATS}


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow's notes on the corrupt EXIF it skips
@given(
    image_format=st.sampled_from(sorted(ENCODED)),
    flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8),
    cut=st.one_of(st.none(), st.integers(0, 10**6)),
)
def test_fuzz_image_loader_mutated_files_load_or_raise_mnistkit_error(
    tmp_path_factory: pytest.TempPathFactory, image_format: str, flips: list[tuple[int, int]], cut: int | None
) -> None:
    """Byte flips and cuts inside real files of each format reach the decoders' deep paths."""
    data = bytearray(ENCODED[image_format])
    for position, value in flips:
        data[position % len(data)] = value
    if cut is not None:
        data = data[: cut % (len(data) + 1)]
    path = tmp_path_factory.mktemp("image-fuzz") / "input"
    path.write_bytes(bytes(data))
    for preprocess in (True, False):
        try:
            image = load_digit(path, preprocess=preprocess)
        except MnistkitError as error:
            assert str(error).startswith(f"{path}: ") and "\n" not in str(error)
        else:
            assert image.shape == (28, 28) and image.dtype == np.uint8


@given(
    width=st.integers(1, 2**16 - 1),
    height=st.integers(1, 2**16 - 1),
    kind=st.sampled_from(["png", "bmp", "gif"]),
)
def test_fuzz_image_headers_never_decode_past_the_pixel_limit(
    tmp_path_factory: pytest.TempPathFactory, width: int, height: int, kind: str
) -> None:
    """Any declared size either loads (within the limit) or is refused from the header alone."""
    header = {"png": png_header, "bmp": bmp_header, "gif": gif_header}[kind](width, height)
    path = tmp_path_factory.mktemp("header-fuzz") / f"input.{kind}"
    path.write_bytes(header)
    try:
        load_digit(path)
    except MnistkitError as error:
        if width * height > 40_000_000:
            assert "decompression bomb" in str(error)


@pytest.fixture(scope="module")
def npz_bytes() -> bytes:
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    np.savez(
        buffer,
        train_images=rng.integers(0, 256, (3, 28, 28), dtype=np.uint8),
        train_labels=np.array([1, 2, 3], np.uint8),
        test_images=rng.integers(0, 256, (2, 28, 28), dtype=np.uint8),
        test_labels=np.array([4, 5], np.uint8),
    )
    return buffer.getvalue()


@given(data=st.data())
def test_fuzz_npz_loader_mutated_files_load_or_raise_mnistkit_error(
    tmp_path_factory: pytest.TempPathFactory, npz_bytes: bytes, data: st.DataObject
) -> None:
    """Flips in the zip directory, the .npy headers (shape, dtype) and the data."""
    mutated = bytearray(npz_bytes)
    for _ in range(data.draw(st.integers(1, 6))):
        position = data.draw(st.integers(0, len(mutated) - 1))
        mutated[position] = data.draw(st.integers(0, 255))
    path = tmp_path_factory.mktemp("npz-fuzz") / "input.npz"
    path.write_bytes(bytes(mutated))
    with contextlib.suppress(MnistkitError):
        arrays = load_arrays(path)
        assert all(array.dtype == np.uint8 for array in arrays.values())


def test_an_endless_input_is_refused_from_its_first_bytes(tmp_path: Path, synthetic_npz: Path) -> None:
    """A device or a pipe has no size to check: `mnistkit info /dev/zero` read until the
    kernel killed it (24 GB), and the text inputs had no limit at all."""
    checkpoint, utf16 = tmp_path / "model.safetensors", tmp_path / "labels.tsv"
    utf16.write_bytes("digit.png\t7\n".encode("utf-16"))  # Windows Notepad's "Unicode"
    result = CliRunner().invoke(
        cli, ["train", str(synthetic_npz), "-o", str(checkpoint), "--model", "logreg", "--epochs", "1"]
    )
    assert result.exit_code == 0, result.output
    for args, line in (
        (["info", "/dev/zero"], "/dev/zero: not a safetensors checkpoint"),
        (
            ["render-curves", "/dev/zero", "-o", str(tmp_path / "c.png")],
            "/dev/zero: not a history file (it is binary data)",
        ),
        (
            ["render-confusion", "--metrics", "/dev/zero", "-o", str(tmp_path / "c.png")],
            "/dev/zero: not a metrics file",
        ),
        (["eval", str(checkpoint), "--labels", "/dev/zero"], "/dev/zero: not labels (it is binary data)"),
        (
            ["eval", str(checkpoint), "--labels", str(utf16)],
            f"{utf16}: not labels in UTF-8 (it is UTF-16 text",
        ),
    ):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 1 and result.stderr.startswith(f"Error: {line}"), (args, result.stderr)
    assert not (tmp_path / "c.png").exists()


@pytest.mark.parametrize("command", ["train", "eval"])
def test_a_pipe_given_as_the_npz_is_refused_before_it_is_opened(
    command: str, synthetic_npz: Path, large_digit_model: Path, tmp_path: Path
) -> None:
    """`mnistkit train FIFO` opened the FIFO where signals are held: with nothing writing to
    it yet, it waited for ever, deaf to Ctrl-C and SIGTERM. eval said "not a valid .npz file
    (File or stream is not seekable.)" of valid data."""
    fifo = tmp_path / "data.npz"
    os.mkfifo(fifo)
    first = (
        ["train", fifo, "-o", tmp_path / "m.safetensors"]
        if command == "train"
        else ["eval", large_digit_model, fifo]
    )
    result = subprocess.run(mnistkit_command(*first), capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and result.stderr == (
        f"Error: {fifo}: not a regular file (a pipe or a device), expected an .npz file, which is read "
        "in place; save it to a file first\n"
    )


def test_ctrl_c_stops_train_waiting_for_a_resume_checkpoint_from_a_pipe(
    synthetic_npz: Path, tmp_path: Path
) -> None:
    """The checkpoint to resume was opened where signals are held: a FIFO no one wrote to yet
    kept train waiting, deaf to Ctrl-C."""
    fifo = tmp_path / "model.safetensors"
    os.mkfifo(fifo)
    command = mnistkit_command("train", synthetic_npz, "-o", tmp_path / "m.safetensors", "--resume", fifo)
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        wchan = Path(f"/proc/{process.pid}/wchan")
        deadline = time.monotonic() + 30
        seen = set()
        while "partner" not in wchan.read_text() and time.monotonic() < deadline:  # fifo_open's wait
            seen.add(wchan.read_text())
            time.sleep(0.05)
        waiting = "partner" in wchan.read_text()
        if not waiting and seen <= {"0", ""}:  # gVisor and other sandboxed kernels name no wait
            pytest.skip("this kernel does not say where a process waits (/proc/PID/wchan)")
        assert waiting, "train never came to open the pipe"
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == -signal.SIGINT
        assert process.stderr.read() == "mnistkit: interrupted by SIGINT\n"
    finally:
        process.kill()
        process.wait()
