"""Shared fixtures: exact synthetic IDX files, digit images drawn with a real font, and
the real MNIST mirror when it is present beside the checkout."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import http.server
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from PIL import Image, ImageDraw, ImageFont

from mnistkit.datasets import DATASETS, MNIST_FILES, ExpectedFile

REPO_ROOT = Path(__file__).resolve().parent.parent

# The tests train the same small models again and again, in this process and in the
# subprocesses they start: JAX's persistent compilation cache compiles each program once
# (identical programs give identical executables, so results are unchanged).
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(REPO_ROOT / "build" / "jax-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

# The commands take SIGINT, SIGTERM and SIGHUP unless they come ignored (nohup's SIGHUP, a
# shell script's background job's SIGINT): the tests that send them start their commands with
# them at their default, whether or not the tests run under nohup or in the background.
signal.signal(signal.SIGHUP, signal.SIG_DFL)
signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C stops pytest; SIG_DFL at exec
if signal.getsignal(signal.SIGTERM) is signal.SIG_IGN:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)

# Python run first in a subprocess whose writes must obey file permissions: root writes into
# read-only folders anyway, through CAP_DAC_OVERRIDE. Dropping that capability (and its two
# siblings) keeps root's uid, so a private checkout (mode 0700) stays importable, which it is
# not to another user such as `nobody`. An ordinary user needs nothing dropped.
OBEY_PERMISSIONS = """
import ctypes, os
if os.geteuid() == 0:
    _libc = ctypes.CDLL(None, use_errno=True)
    _header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this thread
    _sets = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable; two 32-bit words each
    if _libc.capget(_header, _sets) != 0:
        raise OSError(ctypes.get_errno(), "capget")
    for _index in (0, 1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER are bits 1-3
        _sets[_index] &= ~0b1110 & 0xFFFFFFFF
    if _libc.capset(_header, _sets) != 0:
        raise OSError(ctypes.get_errno(), "capset")
"""
# scripts/people_style.py draws people-style photos; the tests build theirs with it too.
sys.path.insert(0, str(REPO_ROOT / "scripts"))
REAL_MNIST_DIR = Path(os.environ.get("MNISTKIT_REAL_MNIST", REPO_ROOT.parent / "shared" / "mnist"))
REAL_MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

requires_real_mnist = pytest.mark.skipif(
    not all((REAL_MNIST_DIR / name).is_file() for name in REAL_MNIST_FILES),
    reason=f"real MNIST mirror not found at {REAL_MNIST_DIR} (set MNISTKIT_REAL_MNIST)",
)


# IDX type codes by dtype; any other array is written as uint8.
IDX_CODES = {np.dtype(np.int8): 0x09, np.dtype(np.int16): 0x0B, np.dtype(np.int32): 0x0C}
IDX_CODES |= {np.dtype(np.float32): 0x0D, np.dtype(np.float64): 0x0E}


def run_script(script: str, *args: object, timeout: float = 60) -> subprocess.CompletedProcess:
    """`script` run by a fresh interpreter (its own signal handlers and exit), with `args` as
    its argv, output captured as text."""
    return subprocess.run(
        [sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True, timeout=timeout
    )


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """The IDX encoding of an array: magic, big-endian dimensions, big-endian data. int8,
    int16, int32, float32 and float64 arrays keep their type; anything else becomes uint8."""
    array = np.asarray(array)
    code = IDX_CODES.get(array.dtype, 0x08)
    array = array.astype(array.dtype.newbyteorder(">")) if code != 0x08 else array.astype(np.uint8)
    if magic is None:
        magic = code << 8 | array.ndim
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.tobytes()


def write_idx(path: Path, array: np.ndarray, compress: bool = True, magic: int | None = None) -> Path:
    data = idx_bytes(array, magic)
    path.write_bytes(gzip.compress(data, mtime=0) if compress else data)
    return path


_FONT_CACHE: dict[int, ImageFont.FreeTypeFont] = {}


def _font(size: int) -> ImageFont.FreeTypeFont:
    if size not in _FONT_CACHE:
        _FONT_CACHE[size] = ImageFont.load_default(size=size)
    return _FONT_CACHE[size]


def draw_digit(digit: int, rng: np.random.Generator, canvas: int = 28, jitter: bool = True) -> np.ndarray:
    """A digit glyph drawn MNIST-style: bright ink on black, about 20 px tall, centred."""
    size = int(rng.integers(20, 26)) if jitter else 23
    stroke = int(rng.integers(1, 3)) if jitter else 1
    image = Image.new("L", (canvas, canvas), 0)
    draw = ImageDraw.Draw(image)
    font = _font(size)
    left, top, right, bottom = draw.textbbox((0, 0), str(digit), font=font, stroke_width=stroke)
    dx = int(rng.integers(-2, 3)) if jitter else 0
    dy = int(rng.integers(-2, 3)) if jitter else 0
    x = (canvas - (right - left)) // 2 - left + dx
    y = (canvas - (bottom - top)) // 2 - top + dy
    draw.text((x, y), str(digit), fill=255, font=font, stroke_width=stroke, stroke_fill=255)
    return np.asarray(image, dtype=np.uint8)


def loss_and_accuracy(probabilities: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Mean negative log-likelihood and accuracy of predicted probabilities, as training reports them."""
    loss = -np.mean(np.log(probabilities[np.arange(len(labels)), labels]))
    return float(loss), float(np.mean(probabilities.argmax(axis=1) == labels))


def synthetic_arrays(n_train: int = 600, n_test: int = 200, seed: int = 0) -> dict[str, np.ndarray]:
    """A small learnable MNIST look-alike with the real `.npz` keys and dtypes."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in (("train", n_train), ("test", n_test)):
        labels = (np.arange(count) % 10).astype(np.uint8)
        rng.shuffle(labels)
        arrays[f"{split}_images"] = np.stack([draw_digit(int(d), rng) for d in labels])
        arrays[f"{split}_labels"] = labels
    return arrays


@pytest.fixture(scope="session")
def synthetic_data() -> dict[str, np.ndarray]:
    return synthetic_arrays()


@pytest.fixture
def synthetic_npz(tmp_path: Path, synthetic_data: dict[str, np.ndarray]) -> Path:
    path = tmp_path / "mnist.npz"
    np.savez(path, **synthetic_data)
    return path


@pytest.fixture
def synthetic_raw_dir(tmp_path: Path, synthetic_data: dict[str, np.ndarray]) -> Path:
    """The four canonical IDX .gz files holding the synthetic dataset."""
    raw = tmp_path / "raw"
    raw.mkdir()
    write_idx(raw / "train-images-idx3-ubyte.gz", synthetic_data["train_images"])
    write_idx(raw / "train-labels-idx1-ubyte.gz", synthetic_data["train_labels"])
    write_idx(raw / "t10k-images-idx3-ubyte.gz", synthetic_data["test_images"])
    write_idx(raw / "t10k-labels-idx1-ubyte.gz", synthetic_data["test_labels"])
    return raw


# Hypothesis: a short run in `make test`; `make fuzz` sets HYPOTHESIS_PROFILE=fuzz.
settings.register_profile("dev", max_examples=100, deadline=None)
settings.register_profile(
    "fuzz", max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def fetch_table(files: dict[str, bytes]) -> tuple[ExpectedFile, ...]:
    """What fetch expects of synthetic `.gz` files: their content hash, size and a 2x cap."""
    table = []
    for name, gz_bytes in files.items():
        content = gzip.decompress(gz_bytes)
        table.append(ExpectedFile(name, hashlib.sha256(content).hexdigest(), len(content), 2 * len(gz_bytes)))
    return tuple(table)


def use_fetch_table(
    monkeypatch: pytest.MonkeyPatch, table: tuple[ExpectedFile, ...], dataset: str = "mnist"
) -> None:
    """Make fetch expect `table` for `dataset` (its real checksums would refuse synthetic files)."""
    monkeypatch.setitem(DATASETS, dataset, dataclasses.replace(DATASETS[dataset], downloads=table))


@pytest.fixture(scope="session")
def fetch_files() -> dict[str, bytes]:
    """The four canonical names holding small synthetic IDX `.gz` files."""
    rng = np.random.default_rng(7)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (30, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": rng.integers(0, 10, 30, dtype=np.uint8),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, 10, dtype=np.uint8),
    }
    return {name: gzip.compress(idx_bytes(array), mtime=0) for name, array in arrays.items()}


# (bytes, seconds): `drip` sends 50 bytes/s, far below fetch's minimum rate; `slow` sends
# 8,000 bytes/s, a slow but honest link that must not be cut.
DRIP_PACE = (5, 0.1)
SLOW_PACE = (400, 0.05)


class _MirrorHandler(http.server.BaseHTTPRequestHandler):
    """Serves /BEHAVIOUR/NAME: `good` sends the file, `slow` sends it slowly; every other
    behaviour is a fault (`silent` sends nothing, `drip` and `drip_headers` a few bytes at
    a time)."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        server: MirrorServer = self.server
        behaviour, _, name = self.path.lstrip("/").partition("/")
        server.hits[behaviour] += 1
        body = server.files.get(name)
        if body is None or behaviour == "e404":
            self.send_error(404)
        elif behaviour == "e500":
            self.send_error(500)
        elif behaviour == "loop":
            self._headers(302, {"Location": self.path})
        elif behaviour == "to_file":
            self._headers(302, {"Location": f"file://{server.redirect_dir}/{name}"})
        elif behaviour == "html":
            page = b"<!DOCTYPE html><html><body>Please log in</body></html>"
            self._headers(200, {"Content-Type": "text/html", "Content-Length": str(len(page))})
            self.wfile.write(page)
        elif behaviour == "endless":
            self._headers(200, {})
            self._stream_forever()
        elif behaviour == "silent":
            self.server.release.wait()
        elif behaviour == "drip_headers":
            head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            self._pace(head + body, *DRIP_PACE)
        elif behaviour in ("drip", "slow"):
            self._headers(200, {"Content-Length": str(len(body))})
            self._pace(body, *(DRIP_PACE if behaviour == "drip" else SLOW_PACE))
        else:
            self._send_file(behaviour, body)

    def _headers(self, status: int, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.flush()

    def _send_file(self, behaviour: str, body: bytes) -> None:
        announced = {"long_length": len(body) + 10, "short_length": len(body) // 2, "huge_length": 10**12}
        self._headers(200, {"Content-Length": str(announced.get(behaviour, len(body)))})
        if behaviour == "stall":
            self.server.release.wait(30)
            self.server.stall_ended.set()
        elif behaviour == "close_mid":
            self.wfile.write(body[: len(body) // 2])
        elif behaviour == "corrupt":
            middle = len(body) // 2
            self.wfile.write(body[:middle] + bytes([body[middle] ^ 0xFF]) + body[middle + 1 :])
        else:
            self.wfile.write(body)

    def _pace(self, data: bytes, chunk_bytes: int, interval_s: float) -> None:
        """Send `data` `chunk_bytes` at a time, one chunk per interval, until the client leaves."""
        try:
            for start in range(0, len(data), chunk_bytes):
                if self.server.release.wait(interval_s):
                    return
                self.wfile.write(data[start : start + chunk_bytes])
                self.wfile.flush()
        except OSError:
            pass

    def _stream_forever(self) -> None:
        chunk = bytes(64 << 10)
        try:
            while not self.server.release.is_set():
                self.wfile.write(chunk)
                self.server.sent_bytes += len(chunk)
        except OSError:
            pass


class MirrorServer(http.server.ThreadingHTTPServer):
    """A real HTTP mirror on 127.0.0.1 whose behaviour is chosen by the URL."""

    daemon_threads = True

    def __init__(self, files: dict[str, bytes], redirect_dir: Path) -> None:
        super().__init__(("127.0.0.1", 0), _MirrorHandler)
        self.files = files
        self.redirect_dir = redirect_dir
        self.hits: Counter[str] = Counter()
        self.sent_bytes = 0
        self.release = threading.Event()
        self.stall_ended = threading.Event()

    def url(self, behaviour: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{behaviour}/"


@pytest.fixture
def mirror_server(fetch_files: dict[str, bytes], tmp_path: Path) -> Iterator[MirrorServer]:
    server = MirrorServer(fetch_files, tmp_path / "redirect-target")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def refused_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def draw_large_digit(
    digit: int,
    glyph_px: int = 90,
    canvas_px: tuple[int, int] = (160, 160),
    offset_px: tuple[int, int] = (0, 0),
    stroke_px: int = 4,
) -> np.ndarray:
    """A digit drawn big the way a person's image holds one: bright ink 255 on black 0,
    anywhere on a larger canvas (callers invert, shade or make it transparent)."""
    width, height = canvas_px
    image = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(image)
    font = _font(glyph_px)
    left, top, right, bottom = draw.textbbox((0, 0), str(digit), font=font, stroke_width=stroke_px)
    x = (width - (right - left)) // 2 - left + offset_px[0]
    y = (height - (bottom - top)) // 2 - top + offset_px[1]
    draw.text((x, y), str(digit), fill=255, font=font, stroke_width=stroke_px, stroke_fill=255)
    return np.asarray(image, dtype=np.uint8)


@pytest.fixture(scope="session")
def large_digit_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small MLP checkpoint trained (by mnistkit.training) on large drawn digits, turned up
    to 8 degrees, that went through predict's preprocessing, so it recognises what
    preprocessing produces; trained on shifted copies, since a digit's centre of mass can
    round to the next pixel when a shadow or a photo's blur moves it a little."""
    from mnistkit.config import TrainConfig
    from mnistkit.preprocess import preprocess_digit
    from mnistkit.training import train

    rng = np.random.default_rng(7)
    arrays = {}
    for split, per_digit in (("train", 30), ("test", 5)):
        labels = np.repeat(np.arange(10, dtype=np.uint8), per_digit)
        images = []
        for digit in labels:
            drawn = draw_large_digit(
                int(digit),
                glyph_px=int(rng.integers(50, 120)),
                offset_px=(int(rng.integers(-15, 16)), int(rng.integers(-15, 16))),
                stroke_px=int(rng.integers(2, 7)),
            )
            # Turned a little, as the digits in photos of a page lying askew are.
            turned = Image.fromarray(drawn).rotate(float(rng.uniform(-8, 8)), Image.Resampling.BILINEAR)
            drawn = np.asarray(turned)
            images.append(preprocess_digit(drawn.astype(np.float32) / 255, "drawn"))
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = np.stack(images), labels
    path = tmp_path_factory.mktemp("large-digit-model") / "model.safetensors"
    config = TrainConfig(
        hidden=(64,), epochs=20, batch_size=32, lr=3e-3, schedule="constant", augment="shift"
    )
    train(arrays, config, path, log=lambda message: None)
    return path


@pytest.fixture(scope="session")
def small_data(synthetic_data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The first 50 training and 20 test digits: quick to write, spoil and parse."""
    return {
        key: array[:50] if key.startswith("train") else array[:20] for key, array in synthetic_data.items()
    }


@pytest.fixture
def small_raw_dir(tmp_path: Path, small_data: dict[str, np.ndarray]) -> Path:
    """The four canonical IDX .gz files holding `small_data`."""
    raw = tmp_path / "small-raw"
    raw.mkdir()
    for key, name in MNIST_FILES.items():
        write_idx(raw / name, small_data[key])
    return raw


# Figures a test measured (kills survived, epochs lost, ...), printed after the run's summary.
_FIGURES: list[str] = []


@pytest.fixture
def report_figure():
    return _FIGURES.append


def pytest_terminal_summary(terminalreporter) -> None:
    if _FIGURES:
        terminalreporter.section("figures measured")
        for line in _FIGURES:
            terminalreporter.write_line(line)
