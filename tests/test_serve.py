"""`mnistkit serve` over real HTTP on 127.0.0.1: the API, the page's files, hostile and slow
clients, the limits, and the real command (its URL line, no jax, nothing on disk, Ctrl-C)."""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import dataclasses
import functools
import http.client
import io
import ipaddress
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import draw_large_digit
from PIL import Image, ImageDraw

from mnistkit.architectures import param_shapes
from mnistkit.checkpoint import load_checkpoint, save_checkpoint
from mnistkit.cli import cli
from mnistkit.clients import check_origin, network_addresses
from mnistkit.images import load_digit
from mnistkit.predict import predict_paths
from mnistkit.serve import DigitServer, Limits, make_server

FAST_LIMITS = Limits(
    header_timeout_s=0.5, request_timeout_s=1.0, max_connections=8, max_predictions=2, linger_s=0.2
)


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def digit_png(digit: int) -> bytes:
    """A dark digit on white paper, as a person's scan or the page's canvas holds one."""
    return png_bytes(255 - draw_large_digit(digit))


@functools.cache
def bomb_png(side_px: int) -> bytes:
    """A complete, valid 8-bit gray PNG of side x side black pixels: a few kB that would
    decode to side² bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(9)
    row = bytes(side_px + 1)  # filter byte 0, then the row's pixels
    pixels = b"".join(compressor.compress(row) for _ in range(side_px)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side_px, side_px, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


@pytest.fixture
def start_server() -> Iterator[Callable[..., DigitServer]]:
    """Starts `make_server(checkpoint, port=0)` in a thread; every server stops after the test."""
    servers: list[tuple[DigitServer, threading.Thread]] = []

    def start(checkpoint: Path, limits: Limits = FAST_LIMITS, host: str = "127.0.0.1") -> DigitServer:
        server = make_server(checkpoint, host, 0, limits)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        servers.append((server, thread))
        return server

    yield start
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join(5)
        connections_done(server)


def connections_done(server: DigitServer, timeout_s: float = 30) -> None:
    """Wait until every connection's thread has ended (each frees its slot last). A thread logs
    its error answer after sending it: one the scheduler left waiting for some tens of
    milliseconds wrote its line into whatever captured stderr next, the capfd of the test that
    ran after, or a CliRunner's output."""
    deadline = time.monotonic() + timeout_s
    for _ in range(server.limits.max_connections):
        free = server.connection_slots.acquire(timeout=max(deadline - time.monotonic(), 0))
        assert free, f"a connection's thread still runs {timeout_s} s after its test"
    for _ in range(server.limits.max_connections):
        server.connection_slots.release()


@pytest.fixture
def server(start_server, large_digit_model: Path) -> DigitServer:
    return start_server(large_digit_model)


def call(
    server: DigitServer, method: str, path: str, body: bytes | None = None, headers: dict | None = None
) -> tuple[int, http.client.HTTPResponse, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
    try:
        connection.request(method, path, body, headers or {})
        response = connection.getresponse()
        return response.status, response, response.read()
    finally:
        connection.close()


def raw_exchange(server: DigitServer, request: bytes) -> bytes:
    """Send bytes as they are (no client normalises the path) and read until the server closes."""
    with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=10) as connection:
        connection.sendall(request)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    return received


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def predict_error(checkpoint: Path, image: Path) -> str:
    """The one-line reason `mnistkit predict` gives for a bad image."""
    [failed] = predict_paths(load_checkpoint(checkpoint), [str(image)], workers=1)
    return failed.error


def test_predict_reads_each_digit_as_predict_does(server: DigitServer, large_digit_model: Path) -> None:
    checkpoint = load_checkpoint(large_digit_model)
    for digit in range(10):
        status, response, body = call(
            server, "POST", "/api/predict", digit_png(digit), {"Content-Type": "image/png"}
        )
        assert status == 200 and response.getheader("Content-Type") == "application/json"
        reading = json.loads(body)
        assert reading["digit"] == digit
        assert reading["classes"] == list(range(10))
        assert len(reading["probabilities"]) == 10 and sum(reading["probabilities"]) == pytest.approx(
            1, abs=1e-4
        )
        assert reading["confidence"] == max(reading["probabilities"])
        seen = np.asarray(Image.open(io.BytesIO(base64.b64decode(reading["preprocessed_png"]))))
        assert seen.shape == (28, 28) and seen.dtype == np.uint8
        assert np.array_equal(seen, load_digit("x", content=digit_png(digit)))
        expected = checkpoint.predict_probabilities(seen[np.newaxis])[0]
        assert reading["probabilities"] == pytest.approx(expected.tolist(), abs=1e-6)


def test_model_health_and_the_page(server: DigitServer, large_digit_model: Path) -> None:
    status, _, body = call(server, "GET", "/api/model")
    model = json.loads(body)
    assert status == 200 and model["name"] == "model.safetensors"
    assert model["metadata"] == load_checkpoint(large_digit_model).metadata
    assert model["parameters"] == 784 * 64 + 64 + 64 * 10 + 10
    assert model["description"] == "MLP 784→64→10, relu"
    assert len(body) < 10_000  # metadata only, no tensors
    assert call(server, "GET", "/healthz")[::2] == (200, b'{"status": "ok"}')
    status, response, page = call(server, "GET", "/")
    assert status == 200 and response.getheader("Content-Type") == "text/html; charset=utf-8"
    assert b'<canvas id="pad"' in page and b'src="/app.js"' in page and b'href="/style.css"' in page
    assert "default-src 'self'" in response.getheader("Content-Security-Policy")
    for path, kind in (("/app.js", "text/javascript"), ("/style.css", "text/css")):
        status, response, text = call(server, "GET", path + "?v=1")
        assert status == 200 and response.getheader("Content-Type").startswith(kind) and len(text) > 1000


def test_the_page_names_each_presets_net_in_words() -> None:
    """The page once read `CNN, undefined×undefined conv 24, 32` for `make all`'s model: it
    looked for one kernel size where the checkpoint records one per conv."""
    from mnistkit.architectures import build_architecture, describe
    from mnistkit.config import config_from_options

    def described(preset: str, **options) -> str:
        return describe(build_architecture(config_from_options(preset, options), 10))

    assert described("fast") == "CNN, conv 24 6×6 stride 2, 32 3×3 pool → dense 256→10"
    assert described("cnn") == "CNN, conv 24 5×5 pool, 32 3×3 pool → dense 256→10"
    assert described("cnn-best", ensemble=5) == (
        "ensemble of 5 × CNN, conv 24 3×3, 24 3×3 pool, 48 3×3, 48 3×3 pool, batch norm → dense 256→10"
    )
    assert described("logreg") == "logistic regression 784→10"
    old_cnn = {"model": "cnn", "channels": [8], "kernel_size": 5, "hidden": [], "num_classes": 2}
    assert describe(old_cnn) == "CNN, conv 8 5×5 pool → dense 2"


def test_a_model_of_two_digits_answers_for_its_classes(start_server, tmp_path: Path) -> None:
    architecture = {"model": "mlp", "hidden": [16], "activation": "relu", "num_classes": 2}
    rng = np.random.default_rng(0)
    params = {
        name: rng.standard_normal(shape).astype(np.float32)
        for name, shape in param_shapes(architecture).items()
    }
    path = tmp_path / "3v8.safetensors"
    save_checkpoint(
        path, params, {"architecture": architecture, "normalization": {"kind": "unit"}, "classes": [3, 8]}
    )
    status, _, body = call(start_server(path), "POST", "/api/predict", digit_png(3))
    reading = json.loads(body)
    assert status == 200 and reading["classes"] == [3, 8] and len(reading["probabilities"]) == 2
    assert reading["digit"] in (3, 8) and reading["confidence"] == max(reading["probabilities"])
    model = json.loads(call(start_server(path), "GET", "/api/model")[2])
    assert model["digits"] is True and model["all_classes"] is False  # the page says "3, 8 only"


@pytest.mark.parametrize(
    ("dataset", "classes", "digits", "all_classes"),
    [
        # QMNIST's and EMNIST's digit splits are digits: the page said "Draw or drop a picture"
        ("qmnist", list(range(10)), True, True),
        ("emnist-digits", list(range(10)), True, True),
        ("fashion-mnist", list(range(10)), False, True),
        # 20 of EMNIST balanced's 47 classes: the page named none, as it did for 10 or more
        ("emnist-balanced", list(range(20)), False, False),
    ],
)
def test_the_page_is_told_whether_the_classes_are_digits_and_all_of_them(
    tmp_path: Path, dataset: str, classes: list[int], digits: bool, all_classes: bool
) -> None:
    from mnistkit.datasets import dataset_spec
    from mnistkit.serve import model_json

    architecture = {"model": "logreg", "num_classes": len(classes)}
    params = {name: np.zeros(shape, np.float32) for name, shape in param_shapes(architecture).items()}
    metadata = {
        "architecture": architecture,
        "normalization": {"kind": "unit"},
        "classes": classes,
        "dataset": dataset,
        "class_names": [dataset_spec(dataset).class_names[label] for label in classes],
    }
    save_checkpoint(tmp_path / "m.safetensors", params, metadata)
    model = model_json(load_checkpoint(tmp_path / "m.safetensors"), "m.safetensors")
    assert (model["digits"], model["all_classes"]) == (digits, all_classes)


BAD_IMAGES = {
    "not-an-image.png": lambda: b"hello, I am text",
    "empty.png": lambda: b"",
    "blank.png": lambda: png_bytes(np.full((80, 60), 240, np.uint8)),
    "truncated.png": lambda: digit_png(4)[:300],
    "strip.png": lambda: png_bytes(np.zeros((1, 5000), np.uint8)),
    "bomb.png": lambda: bomb_png(8000),
}


@pytest.mark.parametrize("name", BAD_IMAGES)
def test_a_bad_image_gets_predicts_reason_as_json(
    server: DigitServer, large_digit_model: Path, tmp_path: Path, name: str
) -> None:
    image = tmp_path / name
    image.write_bytes(BAD_IMAGES[name]())
    status, response, body = call(server, "POST", f"/api/predict?name={image}", image.read_bytes())
    assert status == 422 and response.getheader("Content-Type") == "application/json"
    assert json.loads(body) == {"error": predict_error(large_digit_model, image)}
    assert call(server, "POST", "/api/predict", digit_png(5))[0] == 200


def test_errors_name_the_upload_when_no_name_is_given(server: DigitServer) -> None:
    status, _, body = call(server, "POST", "/api/predict", b"GIF89a?")
    assert status == 422 and json.loads(body)["error"].startswith("upload: ")


@pytest.mark.parametrize(
    ("method", "path", "status", "allow"),
    [
        ("GET", "/api/predict", 405, "POST, OPTIONS"),
        ("POST", "/", 405, "GET, HEAD, OPTIONS"),
        ("POST", "/api/model", 405, "GET, HEAD, OPTIONS"),
        ("GET", "/nothing", 404, None),
        ("POST", "/api/predict/extra", 404, None),
        ("PUT", "/api/predict", 405, "POST, OPTIONS"),
        ("DELETE", "/", 405, "GET, HEAD, OPTIONS"),
        ("PATCH", "/nothing", 404, None),
        ("BREW", "/", 501, None),  # a method HTTP does not have
    ],
)
def test_wrong_methods_and_paths_get_json_errors(
    server: DigitServer, method: str, path: str, status: int, allow: str | None
) -> None:
    got, response, body = call(server, method, path, b"" if method != "GET" else None)
    assert got == status and response.getheader("Allow") == allow
    assert json.loads(body)["error"]


def test_head_and_options_answer_as_http_clients_expect(server: DigitServer) -> None:
    """HEAD (a health check's habit) gets GET's status and headers and no body; OPTIONS names
    the methods a path takes."""
    status, response, body = call(server, "HEAD", "/healthz")
    assert status == 200 and body == b"" and response.getheader("Content-Type") == "application/json"
    assert int(response.getheader("Content-Length")) == len(call(server, "GET", "/healthz")[2])
    assert call(server, "HEAD", "/nothing")[0] == 404
    for path, allow in (("/api/predict", "POST, OPTIONS"), ("/", "GET, HEAD, OPTIONS")):
        status, response, body = call(server, "OPTIONS", path)
        assert (status, response.getheader("Allow"), body) == (204, allow, b"")
        assert response.getheader("Content-Length") is None and response.getheader("Content-Type") is None
    assert call(server, "OPTIONS", "/nothing")[0] == 404


@pytest.mark.parametrize(
    "target",
    [
        "/../../../../etc/passwd",
        "/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/..%2f..%2fmnistkit%2fserve.py",
        "//etc/passwd",
        "/web/",
        "/web/index.html",
        "/mnistkit/",
        "/app.js/../serve.py",
        "/index.html",
        "/./app.js/.",
        "/api/",
        "http://127.0.0.1/../../etc/passwd",
    ],
)
def test_no_path_reaches_the_file_system(server: DigitServer, target: str) -> None:
    answer = raw_exchange(server, f"GET {target} HTTP/1.0\r\n\r\n".encode())
    assert status_of(answer) == 404
    body = answer.split(b"\r\n\r\n", 1)[1]
    assert b"root:" not in body and b"import" not in body and b"<" not in body


def first_answer(server: DigitServer, request: bytes) -> tuple[float, bytes]:
    """Seconds until the server's first bytes, and those bytes; the client keeps its side open."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=10) as connection:
        connection.sendall(request)
        return time.monotonic() - started, connection.recv(65536)


def test_body_limits_and_lengths(start_server, large_digit_model: Path) -> None:
    limits = Limits(max_body_bytes=20_000, header_timeout_s=1, request_timeout_s=1, linger_s=0.2)
    server = start_server(large_digit_model, limits)
    status, _, body = call(server, "POST", "/api/predict", bytes(50_000))
    assert status == 413 and "50,000 bytes, more than the limit of 20,000" in json.loads(body)["error"]
    # A huge announced body is refused at once, before any of it is read or even sent.
    huge = b"POST /api/predict HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10000000000\r\n"
    seconds, answer = first_answer(server, huge + b"\r\n")
    assert status_of(answer) == 413 and seconds < 0.5
    seconds, answer = first_answer(server, huge + b"Expect: 100-continue\r\n\r\n")
    assert status_of(answer) == 413 and seconds < 0.5
    asking = (
        b"POST /api/predict HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
    )
    assert first_answer(server, asking)[1].startswith(b"HTTP/1.1 100 Continue\r\n")
    assert call(server, "POST", "/api/predict", bytes(20_000))[0] == 422  # at the limit: read, not an image
    assert status_of(raw_exchange(server, b"POST /api/predict HTTP/1.0\r\n\r\n")) == 411
    chunked = b"POST /api/predict HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    assert status_of(raw_exchange(server, chunked)) == 411
    # Over 4,300 digits, Python would not convert it: the handler died without an answer.
    zeros_first = b"POST /api/predict HTTP/1.0\r\nContent-Length: " + b"0" * 5000 + b"3\r\n\r\nabc"
    assert status_of(raw_exchange(server, zeros_first)) == 422  # read: 3 bytes, not an image
    nines = b"POST /api/predict HTTP/1.0\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n"
    answer = raw_exchange(server, nines)
    assert status_of(answer) == 413
    assert answer.endswith(
        b'{"error": "upload: a 5000-digit size, more than the limit of 20,000 (--max-body-mb)"}'
    )
    for length in (b"-5", b"1_000", b"abc", b"5\r\nContent-Length: 7"):
        request = b"POST /api/predict HTTP/1.0\r\nContent-Length: " + length + b"\r\n\r\n"
        assert status_of(raw_exchange(server, request)) == 400
    for length in (b"3 ", b"3\r\nContent-Length: 3"):  # space around it, or given twice alike: taken
        request = b"POST /api/predict HTTP/1.0\r\nContent-Length: " + length + b"\r\n\r\nabc"
        assert status_of(raw_exchange(server, request)) == 422  # read: 3 bytes, not an image
    form = call(
        server, "POST", "/api/predict", digit_png(1), {"Content-Type": "multipart/form-data; boundary=x"}
    )
    assert form[0] == 415 and "--data-binary" in json.loads(form[2])["error"]
    # curl -d @FILE sends a form's content type and drops the file's line breaks; --data-binary
    # sends the same content type with the file whole.
    as_form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert call(server, "POST", "/api/predict", digit_png(1), as_form)[0] == 200
    without_line_breaks = digit_png(1).replace(b"\r", b"").replace(b"\n", b"")
    stripped = call(server, "POST", "/api/predict", without_line_breaks, as_form)
    assert stripped[0] == 422 and "use --data-binary @FILE" in json.loads(stripped[2])["error"]
    garbage = call(server, "POST", "/api/predict", b"not an image\n", as_form)
    assert garbage[0] == 422 and "--data-binary" not in json.loads(garbage[2])["error"]
    # What else comes instead of an image's bytes is named, with how to send them: each of
    # these once got the word of curl -d (a one-line SVG sent whole too), or nothing.
    encoded = base64.b64encode(digit_png(1))
    for sent, hint in (
        (b'<svg xmlns="http://www.w3.org/2000/svg"><text>7</text></svg>', ""),
        (
            b"image=" + urllib.parse.quote_from_bytes(encoded).encode(),
            "requests.post(url, data=open(path, 'rb'))",
        ),
        (encoded, "base64 text, as toDataURL() or a data URL gives it"),
        (b"data:image/png;base64," + encoded, "base64.b64decode(text) or canvas.toBlob()"),
    ):
        answer = call(server, "POST", "/api/predict", sent, as_form)
        error = json.loads(answer[2])["error"]
        assert answer[0] == 422 and "--data-binary" not in error and hint in error, (sent[:30], error)
        assert error.startswith("upload: not an image (Pillow cannot identify the format)") and (
            error.endswith(")") if hint else error.endswith("format)")
        )
    blank_gif = io.BytesIO()  # an image that decodes, with no line break in it: no word of curl
    Image.new("L", (40, 40), 255).save(blank_gif, "GIF")
    assert b"\n" not in blank_gif.getvalue() and b"\r" not in blank_gif.getvalue()
    blank = call(server, "POST", "/api/predict", blank_gif.getvalue(), as_form)
    assert blank[0] == 422 and json.loads(blank[2])["error"] == "upload: blank image (no ink found)"
    empty = call(server, "POST", "/api/predict", b"", as_form)
    assert empty[0] == 422 and json.loads(empty[2])["error"] == "upload: empty file"


def _trickle(server: DigitServer, prefix: bytes, trickle: bytes, results: dict, key: str) -> None:
    """Send `prefix`, then `trickle` one byte every 0.05 s until the server answers or closes;
    record when that happened and what it said."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=5) as connection:
        connection.sendall(prefix)
        for byte in trickle:
            if select.select([connection], [], [], 0)[0]:
                break
            connection.sendall(bytes([byte]))
            time.sleep(0.05)
        select.select([connection], [], [], 5)
        ended_s = time.monotonic() - started
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
        results[key] = (ended_s, answer)


def test_slow_clients_are_cut_off_and_others_still_served(server: DigitServer) -> None:
    results: dict[str, tuple[float, bytes]] = {}
    post = b"POST /api/predict HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n"
    clients = {
        "silent": (b"", b""),
        "slow headers": (b"GET / HTTP/1.1\r\n", b"X-Slow: " + b"a" * 400),
        "slow request line": (b"", b"GET /" + b"a" * 400),
        "slow body": (post, b"b" * 1000),
    }
    threads = [
        threading.Thread(target=_trickle, args=(server, prefix, trickle, results, key))
        for key, (prefix, trickle) in clients.items()
    ]
    for thread in threads:
        thread.start()
    time.sleep(0.1)
    assert call(server, "POST", "/api/predict", digit_png(2))[0] == 200
    for thread in threads:
        thread.join(10)
    silent_s, silent_answer = results["silent"]
    assert silent_answer == b"" and 0.4 < silent_s < 1.5
    for key in ("slow headers", "slow request line"):  # cut at the header deadline although bytes kept coming
        slow_headers_s, slow_headers_answer = results[key]
        assert status_of(slow_headers_answer) == 408 and 0.4 < slow_headers_s < 1.5
        assert b"headers did not arrive within 0.5 s" in slow_headers_answer
    slow_body_s, slow_body_answer = results["slow body"]
    assert status_of(slow_body_answer) == 408 and 0.9 < slow_body_s < 2.0


def _handler_threads() -> int:
    return sum("process_request_thread" in thread.name for thread in threading.enumerate())


def test_concurrent_connections_are_bounded(start_server, large_digit_model: Path) -> None:
    server = start_server(large_digit_model, Limits(header_timeout_s=0.5, max_connections=2, linger_s=0.2))
    idle = [socket.create_connection(("127.0.0.1", server.server_address[1])) for _ in range(3)]
    try:
        peak = 0
        waited: list[float] = []

        def wait_for_a_slot() -> None:
            started = time.monotonic()
            assert call(server, "GET", "/healthz")[0] == 200
            waited.append(time.monotonic() - started)

        client = threading.Thread(target=wait_for_a_slot)
        client.start()
        while client.is_alive():
            peak = max(peak, _handler_threads())
            time.sleep(0.01)
        assert peak == 2
        assert waited and waited[0] > 0.4  # it waited for idle connections to time out
    finally:
        for connection in idle:
            connection.close()


def test_many_clients_at_once_each_get_their_own_answer(server: DigitServer) -> None:
    pngs = {digit: digit_png(digit) for digit in range(10)}
    answers: list[tuple[int, int]] = []

    def client(offset: int) -> None:
        for index in range(10):
            digit = (offset + index) % 10
            status, _, body = call(server, "POST", "/api/predict", pngs[digit])
            answers.append((digit, json.loads(body)["digit"] if status == 200 else -1))

    threads = [threading.Thread(target=client, args=(offset,)) for offset in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(answers) == 80 and all(sent == read for sent, read in answers)


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),  # a TLS hello
        (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 200 + b"\r\n", 431),
        (b"GET / HTTP/9.9\r\n\r\n", 505),
        (b"GET / HTTP/1.1\r\nX-Long: " + b"a" * 70_000 + b"\r\n\r\n", 431),
    ],
)
def test_malformed_requests_get_json_errors_and_the_server_goes_on(
    server: DigitServer, request_bytes: bytes, status: int
) -> None:
    answer = raw_exchange(server, request_bytes)
    assert status_of(answer) == status and b'{"error": ' in answer
    assert call(server, "POST", "/api/predict", digit_png(6))[0] == 200


def test_a_foreign_host_header_is_refused(server: DigitServer) -> None:
    port = server.server_address[1]
    assert call(server, "GET", "/api/model", headers={"Host": f"attacker.example:{port}"})[0] == 403
    for host in (
        f"localhost:{port}",
        f"127.0.0.1:{port}",
        f"[::1]:{port}",
        "LOCALHOST",
        "127.0.1.1",
        socket.gethostname(),
        f"localhost.:{port}",
    ):
        assert call(server, "GET", "/healthz", headers={"Host": host})[0] == 200, host
    for hosts in ((f"127.0.0.1:{port}", "attacker.example"), ("attacker.example", f"127.0.0.1:{port}")):
        lines = "".join(f"Host: {host}\r\n" for host in hosts)
        answer = raw_exchange(server, f"GET /healthz HTTP/1.1\r\n{lines}Connection: close\r\n\r\n".encode())
        assert status_of(answer) == 400 and b"one Host header" in answer, answer
    for foreign in ("127.0.0.1.attacker.example", "localhost.example", f"[::2]:{port}", "10.0.0.1"):
        assert call(server, "GET", "/healthz", headers={"Host": foreign})[0] == 403, foreign
    answer = raw_exchange(server, b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert status_of(answer) == 400 and b"an HTTP/1.1 request needs a Host header" in answer, answer
    assert status_of(raw_exchange(server, b"GET /healthz HTTP/1.0\r\n\r\n")) == 200  # 1.0 had none


def test_a_body_shorter_than_its_content_length_is_answered(server: DigitServer) -> None:
    """A client that stopped sending (half-closed) was dropped without a word."""
    with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=10) as connection:
        connection.sendall(b"POST /api/predict HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\nabc")
        connection.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    assert status_of(received) == 400
    assert received.endswith(b'{"error": "the body ended after 3 of the 100 bytes its Content-Length gives"}')


def test_a_huge_body_a_limit_allows_is_read_a_chunk_at_a_time(start_server, large_digit_model: Path) -> None:
    """Read at once, 100 TB announced under --max-body-mb 1000000000 took that much memory
    before the first byte: MemoryError, and no answer."""
    server = start_server(large_digit_model, dataclasses.replace(FAST_LIMITS, max_body_bytes=10**15))
    with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=10) as connection:
        connection.sendall(b"POST /api/predict HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10" + b"0" * 13)
        connection.sendall(b"\r\n\r\nabc")
        connection.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    assert received.endswith(
        b'the body ended after 3 of the 100000000000000 bytes its Content-Length gives"}'
    )


def test_serve_binds_loopback_by_default_and_names_busy_ports(start_server, large_digit_model: Path) -> None:
    server = start_server(large_digit_model)
    assert server.server_address[0] == "127.0.0.1" and server.loopback_only
    assert server.url == f"http://127.0.0.1:{server.server_address[1]}/"
    result = CliRunner().invoke(
        cli, ["serve", str(large_digit_model), "--port", str(server.server_address[1])]
    )
    assert result.exit_code == 1
    assert (
        result.output
        == f"Error: cannot listen on 127.0.0.1:{server.server_address[1]}: Address already in use\n"
    )
    with contextlib.ExitStack() as stack:  # a port taken on ::1; where IPv6 is off, any port fails
        try:
            taken = stack.enter_context(socket.create_server(("::1", 0), family=socket.AF_INET6))
            port = taken.getsockname()[1]
        except OSError:
            port = server.server_address[1]
        result = CliRunner().invoke(
            cli, ["serve", str(large_digit_model), "--host", "::1", "--port", str(port)]
        )
        bracketed = CliRunner().invoke(  # as a URL writes the address
            cli, ["serve", str(large_digit_model), "--host", "[::1]", "--port", str(port)]
        )
    assert result.exit_code == 1 and result.output.startswith(f"Error: cannot listen on [::1]:{port}: ")
    assert bracketed.exit_code == 1 and bracketed.output == result.output
    missing = CliRunner().invoke(cli, ["serve", "missing.safetensors"])
    assert missing.exit_code == 1 and missing.output == "Error: missing.safetensors: no such file\n"


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the server's /proc/PID files")
def test_the_command_prints_its_url_imports_no_jax_writes_nothing_and_stops_on_ctrl_c(
    large_digit_model: Path, tmp_path: Path
) -> None:
    workdir, scratch = tmp_path / "cwd", tmp_path / "tmp"
    workdir.mkdir()
    scratch.mkdir()
    environment = {**os.environ, "TMPDIR": str(scratch), "PYTHONDONTWRITEBYTECODE": "1"}
    command = [sys.executable, "-m", "mnistkit", "serve", str(large_digit_model), "--port", "0"]
    process = subprocess.Popen(command, cwd=workdir, env=environment, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stderr.readline()
        assert line.startswith("mnistkit serve: http://127.0.0.1:") and "127.0.0.1 only" in line
        port = int(line.split("http://127.0.0.1:")[1].split("/")[0])
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("POST", "/api/predict", digit_png(8))
        assert json.loads(connection.getresponse().read())["digit"] == 8
        rss_before_bomb = _peak_rss_mib(process.pid)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("POST", "/api/predict", bomb_png(8000))  # would decode to 61 MiB
        bomb_error = json.loads(connection.getresponse().read())["error"]
        assert bomb_error.startswith("upload: ") and "decompression bomb guard" in bomb_error
        assert _peak_rss_mib(process.pid) < rss_before_bomb + 20
        libraries = Path(f"/proc/{process.pid}/maps").read_text()
        assert "_multiarray_umath" in libraries  # the check sees Python's extension modules...
        assert "jaxlib" not in libraries  # ...and jax's is not among them
        silent = socket.create_connection(("127.0.0.1", port))  # its headers are due in 10 s
        time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        started = time.monotonic()
        assert process.wait(10) == -signal.SIGINT
        assert time.monotonic() - started < 5  # Ctrl-C waits for no connection
        silent.close()
        log = process.stderr.read().splitlines()
        assert log[-1] == "mnistkit: interrupted by SIGINT"
        assert len(log) == 2 and log[0].endswith('"POST /api/predict HTTP/1.1" 422 ' + bomb_error)
    finally:
        process.kill()
        process.wait()
    assert list(workdir.iterdir()) == [] and list(scratch.iterdir()) == []
    assert sorted(path.name for path in large_digit_model.parent.iterdir()) == ["model.safetensors"]


def test_pages_elsewhere_call_the_api_where_allow_origin_names_them(large_digit_model: Path) -> None:
    """A student's page on another port could not call the API (the browser blocked it), and
    the server's log said nothing of why."""
    page = "http://localhost:3000"
    asks = {
        "Origin": page,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    with make_server(large_digit_model, "127.0.0.1", 0, FAST_LIMITS) as closed:
        threading.Thread(target=closed.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        status, response, body = call(closed, "OPTIONS", "/api/predict", headers=asks)
        assert status == 403 and response.getheader("Access-Control-Allow-Origin") is None
        assert json.loads(body)["error"] == (
            f"a page at {page} may not call this server: mnistkit serve --allow-origin {page}"
        )
        from_a_file = call(closed, "OPTIONS", "/api/predict", headers={**asks, "Origin": "null"})
        assert from_a_file[0] == 403 and json.loads(from_a_file[2])["error"] == (
            "a page opened from a file (Origin: null) may not call this server: "
            "mnistkit serve --allow-origin '*', or serve the page over http"
        )  # --allow-origin null, as it said before, is no origin the command takes
        plain = call(closed, "OPTIONS", "/api/predict")  # no page asking: the methods, as before
        assert plain[0] == 204 and plain[1].getheader("Allow") == "POST, OPTIONS"
        closed.shutdown()
        connections_done(closed)  # its 403s logged before the commands below capture stderr
    for allowed, answered in (((page,), page), (("*",), "*")):
        with make_server(large_digit_model, "127.0.0.1", 0, FAST_LIMITS, allow_origins=allowed) as server:
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
            status, response, _ = call(server, "OPTIONS", "/api/predict", headers=asks)
            assert status == 204 and response.getheader("Access-Control-Allow-Origin") == answered
            assert response.getheader("Access-Control-Allow-Methods") == "POST, OPTIONS"
            assert response.getheader("Access-Control-Allow-Headers") == "Content-Type"
            status, response, body = call(server, "POST", "/api/predict", digit_png(1), {"Origin": page})
            assert status == 200 and response.getheader("Access-Control-Allow-Origin") == answered
            assert json.loads(body)["digit"] == 1
            other = call(server, "GET", "/api/model", headers={"Origin": "http://elsewhere.example"})
            assert other[0] == 200 and other[1].getheader("Access-Control-Allow-Origin") == (
                "*" if answered == "*" else None
            )
            server.shutdown()
    # As browsers send it: lower case, no default port (given so, it never matched).
    with make_server(
        large_digit_model, "127.0.0.1", 0, FAST_LIMITS, ("HTTP://LocalHost:3000", "http://x.org:80")
    ) as spelled:
        assert spelled.allow_origins == {"http://localhost:3000", "http://x.org"}
    assert [check_origin(origin) for origin in ("http://[0:0::1]:8080", "http://bücher.example")] == [
        "http://[::1]:8080",
        "http://xn--bcher-kva.example",
    ]
    for origin in (
        "localhost:3000",
        "http://localhost:3000/page",
        "ftp://x",
        "http://*.example.com",
        "http://x:port",
        "http://[::1:80",
        "http://x;y",
        "http://:pw@x",
    ):
        result = CliRunner().invoke(cli, ["serve", str(large_digit_model), "--allow-origin", origin])
        assert result.exit_code == 1 and result.output.startswith(
            f"Error: --allow-origin: {origin!r} is not an origin"
        )


@pytest.mark.skipif(not network_addresses(socket.AF_INET), reason="needs an address other than loopback")
def test_another_machine_holds_its_share_of_connections_and_no_more(
    start_server, large_digit_model: Path
) -> None:
    """One student's script that opened sockets and sent nothing held all 32 threads: a plain
    request then waited 11.7 s (measured). This machine's own clients are never counted."""
    limits = dataclasses.replace(FAST_LIMITS, max_connections_per_client=2, linger_s=3.0)
    server = start_server(large_digit_model, limits, host="0.0.0.0")
    address = network_addresses(socket.AF_INET)[0]
    port = server.server_address[1]
    silent = [socket.create_connection((address, port), timeout=5) for _ in range(2)]
    try:
        time.sleep(0.2)  # both accepted
        with socket.create_connection((address, port), timeout=5) as third:
            answer = b""
            while chunk := third.recv(65536):
                answer += chunk
        assert status_of(answer) == 429
        assert answer.endswith(
            b'{"error": "%s holds 2 connections already, as many as one machine may"}' % address.encode()
        )
        assert call(server, "GET", "/healthz")[0] == 200  # from 127.0.0.1, beside them
        # A refused client that keeps its socket open holds no one up: the refusal lingered
        # 2 s in the loop that accepts every client.
        silent.append(socket.create_connection((address, port), timeout=5))
        started = time.monotonic()
        assert call(server, "GET", "/healthz")[0] == 200 and time.monotonic() - started < 1
    finally:
        for connection in silent:
            connection.close()
    deadline = time.monotonic() + 10
    while server.clients and time.monotonic() < deadline:  # their threads see them close
        time.sleep(0.05)
    connection = http.client.HTTPConnection(address, port, timeout=10)
    connection.request("GET", "/healthz")
    assert connection.getresponse().status == 200  # its share is free again


def _has_default_route() -> bool:
    """Whether the kernel's IPv4 routing table has a default route (Linux's /proc)."""
    try:
        rows = Path("/proc/net/route").read_text().splitlines()[1:]
    except OSError:
        return False
    return any(row.split()[1:2] == ["00000000"] for row in rows)


def test_listening_on_every_address_names_this_machines_own(large_digit_model: Path) -> None:
    """`--host 0.0.0.0` printed the loopback URL alone: a teacher had to find the address the
    class should open. Each one named answers (a machine with no network names none)."""
    command = [
        sys.executable,
        "-m",
        "mnistkit",
        "serve",
        str(large_digit_model),
        "--host",
        "0.0.0.0",
        "--port",
        "0",
    ]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stderr.readline().rstrip("\n")
        port = int(line.split("http://127.0.0.1:")[1].split("/")[0])
        assert line.startswith(
            f"mnistkit serve: http://127.0.0.1:{port}/ (model.safetensors; listening on 0.0.0.0: "
        )
        reach = line.split("listening on 0.0.0.0: ")[1]
        assert reach.startswith("other machines can reach it") and reach.endswith(")")
        urls = reach[len("other machines can reach it at ") : -1].split(", ") if " at " in reach else []
        assert urls or not _has_default_route()  # an address the default route leaves from, at least
        for url in urls:
            address = urllib.parse.urlsplit(url)
            assert address.port == port and not ipaddress.ip_address(address.hostname).is_loopback
            connection = http.client.HTTPConnection(address.hostname, port, timeout=10)
            connection.request("GET", "/healthz")
            assert connection.getresponse().status == 200, url
    finally:
        process.kill()
        process.wait()


def test_a_client_that_hangs_up_leaves_no_traceback(server: DigitServer, capfd) -> None:
    """A closed tab or `curl --max-time` mid-answer printed socketserver's 20-line traceback."""
    body = digit_png(3)
    for _ in range(3):
        with socket.create_connection(server.server_address[:2]) as client:
            client.sendall(
                b"POST /api/predict HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n" % len(body)
                + body
            )
            client.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )  # closes with a reset
    connections_done(server)  # the three connections' threads
    assert call(server, "GET", "/healthz")[0] == 200
    assert capfd.readouterr().err == ""


def test_a_closed_log_reader_holds_back_no_answer(large_digit_model: Path) -> None:
    """`mnistkit serve ... 2>&1 | head -1` keeps the URL and closes the pipe: an error's log
    line was written before its answer, failed, and the client got no answer; Ctrl-C then
    exited 1."""
    command = [sys.executable, "-m", "mnistkit", "serve", str(large_digit_model), "--port", "0"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        port = int(process.stderr.readline().split("http://127.0.0.1:")[1].split("/")[0])
        process.stderr.close()
        for method, path, body, status in (("GET", "/nope", None, 404), ("POST", "/api/predict", b"x", 422)):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            connection.request(method, path, body)
            response = connection.getresponse()
            assert response.status == status and "error" in json.loads(response.read())
        process.send_signal(signal.SIGINT)
        assert process.wait(10) == -signal.SIGINT
    finally:
        process.kill()
        process.wait()


def test_a_failure_of_the_servers_own_is_a_500_and_its_traceback(
    server: DigitServer, capfd, monkeypatch
) -> None:
    """Unlike a client hanging up, a bug is logged whole, and the server goes on. The log is
    read once the traceback is written: capfd loses what a thread writes while it is read."""
    from mnistkit import serve

    def broken(*args, **kwargs):
        raise ValueError("a bug")

    logged_whole = threading.Event()

    def handle_error_then_tell(request, client_address) -> None:
        DigitServer.handle_error(server, request, client_address)
        logged_whole.set()

    real_prediction_json = serve.prediction_json
    monkeypatch.setattr(server, "handle_error", handle_error_then_tell)
    monkeypatch.setattr(serve, "prediction_json", broken)
    status, _, body = call(server, "POST", "/api/predict", digit_png(3))
    assert status == 500 and json.loads(body) == {"error": "internal error; the server logged it"}
    monkeypatch.setattr(serve, "prediction_json", real_prediction_json)
    assert call(server, "POST", "/api/predict", digit_png(3))[0] == 200
    assert logged_whole.wait(10)
    logged = capfd.readouterr().err
    assert "Traceback" in logged and "ValueError: a bug" in logged


def _rss_mib(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field}")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the server's /proc/PID files")
def test_huge_pictures_are_decoded_one_at_a_time_and_their_memory_given_back(
    large_digit_model: Path, tmp_path: Path
) -> None:
    """A 170 KB PNG of 6300x6300 pixels took half a gigabyte to decode: one per core at once,
    and glibc kept each thread's, so eight of them left the server at 1.5 GB (1.0 GB after)."""
    picture = Image.new("RGBA", (4600, 4600), "white")  # two would pass 40 megapixels
    ImageDraw.Draw(picture).line((2000, 600, 2000, 3400), fill="black", width=240)
    huge = io.BytesIO()
    picture.save(huge, "PNG")
    command = [sys.executable, "-m", "mnistkit", "serve", str(large_digit_model), "--port", "0"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)

    def predict(body: bytes) -> int:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        connection.request("POST", "/api/predict", body)
        return connection.getresponse().status

    try:
        port = int(process.stderr.readline().split("http://127.0.0.1:")[1].split("/")[0])
        assert predict(digit_png(1)) == 200
        resting = _rss_mib(process.pid, "VmRSS")
        assert predict(huge.getvalue()) == 200
        one_at_a_time = _rss_mib(process.pid, "VmHWM")
        with concurrent.futures.ThreadPoolExecutor(4) as clients:
            assert list(clients.map(predict, [huge.getvalue()] * 4)) == [200] * 4
        assert _rss_mib(process.pid, "VmHWM") < one_at_a_time + 50
        assert _rss_mib(process.pid, "VmRSS") < resting + 50
        assert one_at_a_time > resting + 150  # the picture does cost what the check is about
    finally:
        process.kill()
        process.wait()


def test_the_page_says_how_each_kind_of_model_prepares_a_drawing() -> None:
    """The page's sentence for each checkpoint `preprocessing`: a style without one left the
    page saying how MNIST's digits were made."""
    import re

    import mnistkit.serve
    from mnistkit.datasets import IMAGE_STYLES

    script = (Path(mnistkit.serve.__file__).parent / "web" / "app.js").read_text()
    table = script.split("const PREPARATION = {", 1)[1].split("};", 1)[0]
    assert set(re.findall(r'^  "?([a-z-]+)"?:', table, re.M)) == set(IMAGE_STYLES)
