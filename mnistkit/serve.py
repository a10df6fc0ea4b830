"""`mnistkit serve`: a local page to draw a digit and watch a model read it, and a JSON API.

The server is the standard library's ThreadingHTTPServer with the bounds a server needs
when any program on the machine (or, with --host, the network) can reach it:

- one thread per connection, at most `max_connections` at once; further clients wait in
  the kernel's listen queue until a thread is free; a machine other than this one holds at
  most `max_connections_per_client` of them (connected or waiting), so that one student's
  script that opens sockets and sends nothing cannot stall a class;
- every request must arrive whole before a deadline (`header_timeout_s` for the request
  line and headers, `request_timeout_s` for all of it), however slowly the bytes trickle,
  or it is answered 408;
- a body size limit, checked against Content-Length before any of the body is read
  (and before the client sends it, when it asks with `Expect: 100-continue` as curl does);
- one request per connection, closed with a bounded "lingering close": the server reads
  what the client still sends for a moment, so that an early answer (a 413 to a client
  still uploading) is not destroyed by a connection reset;
- at most `max_predictions` images decoded at once (the CPU count), each behind
  predict's decompression-bomb guard, and together at most `max_decoding_pixels` (one
  guard's worth), so memory stays bounded under any load, whatever the core count;
- static files are read from the package once, at start, and served from a dict by
  exact path: no path reaches the file system, so there is no traversal and no listing;
- nothing is written to disk.

Images go through the same `load_digit` and numpy inference as `mnistkit predict`, and
bad ones get the same one-line reason, as JSON with a 4xx status.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import io
import ipaddress
import json
import os
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from mnistkit import __version__, worker_pool
from mnistkit.architectures import describe
from mnistkit.checkpoint import Checkpoint, load_checkpoint, unfinished_note
from mnistkit.clients import check_origin, network_addresses, upload_hint
from mnistkit.datasets import DATASETS
from mnistkit.errors import MnistkitError
from mnistkit.images import MAX_IMAGE_PIXELS, declared_pixels, encode_png, load_digit

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_MAX_BODY_BYTES = 8_000_000
UPLOAD_NAME = "upload"
MAX_UPLOAD_NAME_CHARS = 200
_MOST_SIZE_DIGITS = 30  # a larger announced size is told by its count of digits
_READ_CHUNK_BYTES = 1 << 20  # the most one read of a body takes
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
# A closing connection reads (and drops) at most this many bodies' worth of what the client still sends.
LINGER_BODIES = 4
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]"})
STATIC_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class Limits:
    """What one client can cost the server."""

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    header_timeout_s: float = 10.0
    request_timeout_s: float = 30.0
    max_connections: int = 32
    max_connections_per_client: int = 8  # from one other machine; a browser opens six at most
    max_predictions: int = field(default_factory=worker_pool.count)
    max_decoding_pixels: int = MAX_IMAGE_PIXELS  # of the images decoded at once, together
    linger_s: float = 2.0


class _PixelBudget:
    """Images being decoded, counted by their pixels: one near predict's 40-megapixel guard
    takes about half a gigabyte until it is read, so the pixels decoded at once stay within
    one such image's. People-sized pictures go side by side; a huge one waits for room."""

    def __init__(self, pixels: int) -> None:
        self.capacity = self.available = pixels
        self.changed = threading.Condition()

    @contextlib.contextmanager
    def held(self, pixels: int) -> Iterator[None]:
        pixels = min(pixels, self.capacity)  # a larger one goes alone (and is refused by the guard)
        with self.changed:
            self.changed.wait_for(lambda: self.available >= pixels)
            self.available -= pixels
        try:
            yield
        finally:
            with self.changed:
                self.available += pixels
                self.changed.notify_all()


def prediction_json(checkpoint: Checkpoint, content: bytes, name: str = UPLOAD_NAME) -> dict[str, Any]:
    """What the model reads in an image's bytes: the likeliest class (`digit`, its label; `label`,
    its name), its probability, every class's probability and the 28x28 image the model saw
    as a base64 PNG. The image is prepared as the model's dataset made its images.

    Raises MnistkitError("name: reason") for an image predict would refuse.
    """
    image = load_digit(name, content=content, style=checkpoint.preprocessing)
    probabilities = checkpoint.predict_probabilities(image[np.newaxis])[0]
    best = int(np.argmax(probabilities))
    return {
        "digit": int(checkpoint.classes[best]),
        "label": checkpoint.class_names[best],
        "confidence": round(float(probabilities[best]), 6),
        "classes": list(checkpoint.classes),
        "class_names": list(checkpoint.class_names),
        "probabilities": [round(float(p), 6) for p in probabilities],
        "preprocessed_png": base64.b64encode(encode_png(image)).decode("ascii"),
    }


def model_json(checkpoint: Checkpoint, name: str) -> dict[str, Any]:
    """The checkpoint's name, its net in words, parameter count and metadata (no tensors);
    and for the page's words, whether its classes are digits (MNIST's, QMNIST's, EMNIST's
    digits) and whether it knows all of its dataset's (else the page names those it knows)."""
    spec = DATASETS.get(checkpoint.dataset)
    return {
        "name": name,
        "description": describe(checkpoint.architecture),
        "parameters": sum(int(tensor.size) for tensor in checkpoint.params.values()),
        "metadata": checkpoint.metadata,
        "digits": checkpoint.digit_classes,
        "all_classes": spec is None or len(checkpoint.classes) == len(spec.class_names),
    }


def _is_this_machine(address: str) -> bool:
    """A loopback client, IPv4's too as a dual-stack socket (--host ::) sees it, ::ffff:127.0.0.1."""
    parsed = ipaddress.ip_address(address.split("%")[0])
    return (getattr(parsed, "ipv4_mapped", None) or parsed).is_loopback


def _names_this_machine(name: str) -> bool:
    """Whether a Host header's name is this machine: localhost, its host name, or a loopback
    address (127.0.0.2 too). A page elsewhere reaches a loopback server under its own
    domain's name (DNS rebinding), never one of these."""
    name = name.lower().removesuffix(".")  # localhost. : the same name, fully qualified
    if name in LOOPBACK_NAMES or name == socket.gethostname().lower():
        return True
    try:
        return ipaddress.ip_address(name.removeprefix("[").removesuffix("]")).is_loopback
    except ValueError:
        return False


def _host_and_port(host: str, port: int) -> str:
    """HOST:PORT as a URL writes it: an IPv6 address in brackets ([::1]:8000, not ::1:8000)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _static_files() -> dict[str, tuple[bytes, str]]:
    """The page's files, by URL path, read once from the installed package."""
    folder = resources.files("mnistkit") / "web"
    return {url: ((folder / name).read_bytes(), kind) for url, (name, kind) in STATIC_FILES.items()}


class _DeadlineReader(io.RawIOBase):
    """A socket's input that raises TimeoutError once `deadline` (time.monotonic) passes,
    however slowly bytes keep arriving; a plain socket timeout restarts at every byte."""

    def __init__(self, connection: socket.socket, deadline: float) -> None:
        super().__init__()
        self.connection = connection
        self.deadline = deadline
        self.received_bytes = 0
        self.timed_out = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        remaining_s = self.deadline - time.monotonic()
        try:
            if remaining_s <= 0:
                raise TimeoutError("the request did not arrive in time")
            self.connection.settimeout(remaining_s)
            received = self.connection.recv_into(buffer)
        except TimeoutError:
            self.timed_out = True
            raise
        self.received_bytes += received
        return received


class DigitServer(ThreadingHTTPServer):
    """Serves the page and the API for one checkpoint, loaded once."""

    daemon_threads = True
    block_on_close = False  # Ctrl-C stops at once, not after the slowest connection's deadline
    request_queue_size = 128

    def __init__(
        self,
        checkpoint: Checkpoint,
        model_name: str,
        host: str,
        port: int,
        limits: Limits | None = None,
        allow_origins: Sequence[str] = (),
    ) -> None:
        self.checkpoint = checkpoint
        self.limits = limits or Limits()
        self.allow_origins = frozenset(check_origin(origin) for origin in allow_origins)
        self.model_body = json.dumps(model_json(checkpoint, model_name)).encode()
        self.static_files = _static_files()
        self.connection_slots = threading.BoundedSemaphore(self.limits.max_connections)
        self.clients: dict[str, int] = {}  # connections held (served or waiting), by client address
        self.clients_lock = threading.Lock()
        self.prediction_slots = threading.BoundedSemaphore(self.limits.max_predictions)
        self.decoding_pixels = _PixelBudget(self.limits.max_decoding_pixels)
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host  # [::1], as URLs write it
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            super().__init__((host, port), _RequestHandler)
        except OSError as error:
            raise MnistkitError(
                f"cannot listen on {_host_and_port(host, port)}: {error.strerror or error}"
            ) from None
        self.loopback_only = ipaddress.ip_address(self.server_address[0]).is_loopback

    @property
    def url(self) -> str:
        """Where a browser on this machine finds the page."""
        host, port = self.server_address[:2]
        if ipaddress.ip_address(host).is_unspecified:
            host = "127.0.0.1" if self.address_family == socket.AF_INET else "::1"
        return f"http://{_host_and_port(host, port)}/"

    @property
    def network_urls(self) -> list[str]:
        """Where other machines find the page, listening on every address (0.0.0.0, ::): this
        machine's own addresses on its networks, which a teacher had to look up for a class."""
        host, port = self.server_address[:2]
        if not ipaddress.ip_address(host).is_unspecified:
            return []  # the one address, which `url` is
        return [
            f"http://{_host_and_port(address, port)}/" for address in network_addresses(self.address_family)
        ]

    def process_request(self, request: Any, client_address: Any) -> None:
        """Start a thread for the connection once one of `max_connections` slots is free;
        answer 429 at once to another machine that holds its share of them already."""
        if not self._admitted(client_address[0]):
            self._refuse_client(request, client_address[0])
            return
        try:
            self.connection_slots.acquire()
        except BaseException:
            self._leave(client_address[0])
            raise
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.connection_slots.release()
            self._leave(client_address[0])
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.connection_slots.release()
            self._leave(client_address[0])

    def _admitted(self, address: str) -> bool:
        """Count a connection from `address`, unless another machine holds its share already."""
        with self.clients_lock:
            held = self.clients.get(address, 0)
            if held >= self.limits.max_connections_per_client and not _is_this_machine(address):
                return False
            self.clients[address] = held + 1
            return True

    def _leave(self, address: str) -> None:
        with self.clients_lock:
            self.clients[address] -= 1
            if not self.clients[address]:
                del self.clients[address]

    def _refuse_client(self, request: socket.socket, address: str) -> None:
        share = self.limits.max_connections_per_client
        body = json.dumps(
            {"error": f"{address} holds {share} connections already, as many as one machine may"}
        )
        head = (
            f"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
        )
        with contextlib.suppress(OSError):
            request.settimeout(0)  # what the socket takes now, or nothing: the accept loop goes on
            request.send(f"{head}\r\nConnection: close\r\n\r\n{body}".encode())
            request.shutdown(socket.SHUT_WR)
        request.close()  # at once: a lingering close, in the accept loop, held every client 2 s

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up (a closed tab, `curl --max-time`) is nothing to report; a
        failure of the server's own is, with its traceback (socketserver's)."""
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        with contextlib.suppress(OSError):  # a broken stderr takes no traceback
            super().handle_error(request, client_address)

    def shutdown_request(self, request: socket.socket) -> None:
        """Lingering close: send FIN, then drop what the client still sends until it closes
        too (a browser or curl does at once), for at most `linger_s`. Closing with unread
        bytes would reset the connection and could destroy the answer before it is read."""
        try:
            request.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + self.limits.linger_s
            budget = LINGER_BODIES * self.limits.max_body_bytes
            while budget > 0 and (remaining_s := deadline - time.monotonic()) > 0:
                request.settimeout(remaining_s)
                received = request.recv(1 << 16)
                if not received:
                    break
                budget -= len(received)
        except OSError:  # TimeoutError included
            pass
        self.close_request(request)


class _RequestHandler(BaseHTTPRequestHandler):
    """One connection, one request: every response says `Connection: close`."""

    server: DigitServer
    protocol_version = "HTTP/1.1"
    default_request_version = "HTTP/1.0"  # so that even a garbled request line gets a status line
    server_version = f"mnistkit/{__version__}"
    # Headers and body go out as two writes; without TCP_NODELAY the second waits for the
    # client's delayed ACK (40 ms on Linux).
    disable_nagle_algorithm = True

    def setup(self) -> None:
        super().setup()
        self.started = time.monotonic()
        self.reader = _DeadlineReader(self.connection, self.started + self.server.limits.header_timeout_s)
        self.rfile = io.BufferedReader(self.reader)
        self.answered = False
        # What a request cut off before its request line is whole is answered and logged with.
        self.requestline, self.request_version, self.command = "", self.default_request_version, None

    def handle_one_request(self) -> None:
        """http.server's, except that a request whose line and headers stall past their
        deadline is answered 408 rather than dropped without a word. A connection that sent
        nothing (a browser's spare one) is still closed quietly."""
        super().handle_one_request()  # drops the connection on a read that timed out
        if self.reader.timed_out and self.reader.received_bytes and not self.answered:
            self.connection.settimeout(self.server.limits.request_timeout_s)  # for writing the answer
            seconds = self.server.limits.header_timeout_s
            self._send_error_json(
                HTTPStatus.REQUEST_TIMEOUT, f"the request's headers did not arrive within {seconds:g} s"
            )

    def log_error(self, format: str, *args: Any) -> None:
        """http.server's one use of it left is a read or write that timed out: a stalled
        request is logged with its 408 above, an error answer as it is sent, and an idle
        connection is not worth a line."""

    def parse_request(self) -> bool:
        parsed = super().parse_request()  # reads the headers, under the header deadline
        self.close_connection = True
        self.reader.deadline = self.started + self.server.limits.request_timeout_s
        self.connection.settimeout(self.server.limits.request_timeout_s)  # for writing the response
        return parsed

    def handle_expect_100(self) -> bool:
        """Refuse a body that is too large before the client sends it (curl asks above 1 MB)."""
        if self.command == "POST" and self._body_length() is None:
            return False
        return super().handle_expect_100()

    def do_GET(self) -> None:
        path = self._checked_path()
        if path is None:
            return
        if path in self.server.static_files:
            body, content_type = self.server.static_files[path]
            self._send(HTTPStatus.OK, body, content_type)
        elif path == "/api/model":
            self._send(HTTPStatus.OK, self.server.model_body, "application/json")
        elif path == "/healthz":
            self._send_json(HTTPStatus.OK, {"status": "ok"})
        else:
            self._refuse_method(path)

    do_HEAD = do_GET  # `_send` leaves out the body

    def do_POST(self) -> None:
        path = self._checked_path()
        if path is None:
            return
        if path != "/api/predict":
            self._refuse_method(path)
            return
        content = self._read_body()
        if content is None:
            return
        try:
            with self.server.prediction_slots, self.server.decoding_pixels.held(declared_pixels(content)):
                result = prediction_json(self.server.checkpoint, content, self._upload_name())
        except MnistkitError as error:
            message = str(error) + upload_hint(error, content, self.headers.get_content_type())
            self._send_error_json(HTTPStatus.UNPROCESSABLE_ENTITY, message)
            return
        except Exception:
            self._send_error_json(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error; the server logged it")
            raise  # socketserver prints the traceback and keeps serving
        self._send_json(HTTPStatus.OK, result)

    def do_OPTIONS(self) -> None:
        path = self._checked_path()
        allowed = self._allowed_methods(path) if path is not None else None
        origin = self.headers.get("Origin")
        preflight = origin is not None and "Access-Control-Request-Method" in self.headers
        if allowed is not None and preflight and self._cross_origin_headers() == {}:
            # A page elsewhere asks whether it may call: without a word here, its fetch failed
            # in the browser alone ("blocked by CORS policy") and the server's log said nothing.
            page = f"at {origin}" if origin != "null" else "opened from a file (Origin: null)"
            fix = (
                f"--allow-origin {origin}"
                if origin != "null"
                else "--allow-origin '*', or serve the page over http"
            )
            self._send_error_json(
                HTTPStatus.FORBIDDEN, f"a page {page} may not call this server: mnistkit serve {fix}"
            )
        elif allowed is not None:
            headers = {"Allow": allowed}
            if preflight:
                headers |= {
                    "Access-Control-Allow-Methods": allowed,
                    "Access-Control-Allow-Headers": "Content-Type",
                    "Access-Control-Max-Age": "600",
                }
            self._send(HTTPStatus.NO_CONTENT, b"", "text/plain", headers)
        elif path is not None:
            self._send_error_json(HTTPStatus.NOT_FOUND, f"nothing at {path}")

    def _cross_origin_headers(self) -> dict[str, str]:
        """What lets the page at the request's Origin read the answer, where --allow-origin
        names it: none for another (the browser then keeps the answer from that page)."""
        headers = getattr(self, "headers", None)  # none yet where the request line was bad
        origin = headers.get("Origin") if headers is not None else None
        allowed = self.server.allow_origins
        if origin is None or not ({"*", origin} & allowed):
            return {}
        return {"Access-Control-Allow-Origin": "*" if "*" in allowed else origin, "Vary": "Origin"}

    def _other_method(self) -> None:
        path = self._checked_path()
        if path is not None:
            self._refuse_method(path)

    do_PUT = do_DELETE = do_PATCH = _other_method  # methods no path here takes (unknown ones get 501)

    def _allowed_methods(self, path: str) -> str | None:
        if path == "/api/predict":
            return "POST, OPTIONS"
        if path in self.server.static_files or path in ("/api/model", "/healthz"):
            return "GET, HEAD, OPTIONS"
        return None

    def _refuse_method(self, path: str) -> None:
        """405 naming the methods `path` takes, or 404 where nothing is."""
        allowed = self._allowed_methods(path)
        if allowed is None:
            self._send_error_json(HTTPStatus.NOT_FOUND, f"nothing at {path}")
        elif path == "/api/predict":
            self._send_error_json(
                HTTPStatus.METHOD_NOT_ALLOWED, "POST an image's bytes to /api/predict", {"Allow": allowed}
            )
        else:
            self._send_error_json(HTTPStatus.METHOD_NOT_ALLOWED, f"{path} takes GET", {"Allow": allowed})

    def _checked_path(self) -> str | None:
        """The URL's path; None (after answering 403) when the Host header names another site,
        which is how a page elsewhere would reach a loopback server (DNS rebinding), or (after
        a 400) when there are two."""
        hosts = self.headers.get_all("Host") or []
        if len(hosts) > 1:  # RFC 9112: the first and the last would name different sites to different readers
            self._send_error_json(HTTPStatus.BAD_REQUEST, "a request has one Host header")
            return None
        if not hosts and self.request_version == "HTTP/1.1":  # RFC 9112 asks a 400 for these
            self._send_error_json(HTTPStatus.BAD_REQUEST, "an HTTP/1.1 request needs a Host header")
            return None
        host = hosts[0] if hosts else None
        if self.server.loopback_only and host is not None:
            name = host[: host.index("]") + 1] if host.startswith("[") and "]" in host else host.split(":")[0]
            if not _names_this_machine(name):
                self._send_error_json(HTTPStatus.FORBIDDEN, f"Host {host!r} is not this local server")
                return None
        return urllib.parse.urlsplit(self.path).path

    def log_message(self, format: str, *args: Any) -> None:
        with contextlib.suppress(OSError):  # a closed or broken stderr (`2>&1 | head -1`): answers go on
            super().log_message(format, *args)

    def _upload_name(self) -> str:
        """The name errors give the image: `?name=` (the page sends the file's name) or `upload`."""
        names = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query).get("name")
        name = names[0].strip()[:MAX_UPLOAD_NAME_CHARS] if names else ""
        return name if name.isprintable() and name else UPLOAD_NAME

    def _body_length(self) -> int | None:
        """The announced body length, or None after answering why the body cannot be taken."""
        limit = self.server.limits.max_body_bytes
        # Whitespace around a value is no part of it; two values that differ leave the body's
        # end in doubt (a request smuggled in after it), so they are refused (RFC 9112 6.3).
        lengths = {value.strip(" \t") for value in self.headers.get_all("Content-Length", [])}
        if "Transfer-Encoding" in self.headers or not lengths:
            self._send_error_json(
                HTTPStatus.LENGTH_REQUIRED, "send the image's bytes as the body, with a Content-Length"
            )
            return None
        if len(lengths) > 1:
            self._send_error_json(
                HTTPStatus.BAD_REQUEST, f"Content-Length given as {' and '.join(sorted(lengths))}: which?"
            )
            return None
        (length_text,) = lengths
        if not (length_text.isascii() and length_text.isdigit()):
            self._send_error_json(
                HTTPStatus.BAD_REQUEST, f"Content-Length {length_text!r} is not a byte count"
            )
            return None
        digits = length_text.lstrip("0") or "0"
        # Counted before converted: Python converts no more than 4,300 digits to an int.
        if len(digits) > len(str(limit)) or int(digits) > limit:
            size = (
                f"{int(digits):,} bytes"
                if len(digits) <= _MOST_SIZE_DIGITS
                else f"a {len(digits)}-digit size"
            )
            self._send_error_json(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"{self._upload_name()}: {size}, more than the limit of {limit:,} (--max-body-mb)",
            )
            return None
        return int(digits)

    def _read_up_to(self, length: int) -> bytes:
        """The body's `length` bytes, or fewer where the client stopped sending, read a chunk at a
        time: a buffered read of `length` at once takes that much memory before the first byte
        (MemoryError for a body announced as 100 GB under a --max-body-mb that allows it)."""
        chunks, remaining = [], length
        while remaining:
            chunk = self.rfile.read(min(remaining, _READ_CHUNK_BYTES))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)

    def _read_body(self) -> bytes | None:
        """The request body, or None after answering why it cannot be taken."""
        length = self._body_length()
        if length is None:
            return None
        try:
            content = self._read_up_to(length)
        except TimeoutError:
            seconds = self.server.limits.request_timeout_s
            self._send_error_json(
                HTTPStatus.REQUEST_TIMEOUT, f"the request did not arrive within {seconds:g} s"
            )
            return None
        if len(content) < length:  # the client stopped sending; it may still read the answer
            self._send_error_json(
                HTTPStatus.BAD_REQUEST,
                f"the body ended after {len(content)} of the {length} bytes its Content-Length gives",
            )
            return None
        if self.headers.get_content_type() == "multipart/form-data":
            self._send_error_json(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                "send the image's bytes as the body (curl --data-binary @digit.png), not a form",
            )
            return None
        return content

    def _send(
        self, status: HTTPStatus, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.answered = True
        self.send_response(status)
        if status != HTTPStatus.NO_CONTENT:  # which has neither (RFC 9110)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        for name, value in {**SECURITY_HEADERS, **self._cross_origin_headers(), **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(
        self, status: HTTPStatus, payload: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json", headers)

    def _send_error_json(
        self, status: HTTPStatus, message: str, headers: dict[str, str] | None = None
    ) -> None:
        try:
            self._send_json(status, {"error": message}, headers)
        finally:  # answered first, so that a stalled log never holds the answer back
            self.log_message('"%s" %d %s', self.requestline, status, message)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own errors (malformed request line, headers too long, unknown method) as JSON."""
        status = HTTPStatus(code)
        self._send_error_json(status, message or status.phrase)

    def version_string(self) -> str:
        return self.server_version

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Successful requests are not logged: the page predicts several times a second as
        someone draws. Errors are, by `_send_error_json`."""


def make_server(
    checkpoint_path: str | os.PathLike[str],
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    limits: Limits | None = None,
    allow_origins: Sequence[str] = (),
) -> DigitServer:
    """Load the checkpoint and bind the server (port 0: any free port); serve with serve_forever().
    Pages at `allow_origins` (`http://localhost:3000`, or `*` for any) may call the API."""
    checkpoint_path = Path(checkpoint_path)
    return DigitServer(
        load_checkpoint(checkpoint_path), checkpoint_path.name, host, port, limits, allow_origins
    )


def _give_back_freed_memory() -> None:
    """glibc keeps what a thread freed for its next allocations, so each thread that once
    decoded a huge picture would hold on to its half gigabyte: allocations of a megabyte and
    more are mapped on their own instead, and go back to the system when freed."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: its own ways
        ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, 1 << 20)


def serve(
    checkpoint_path: str | os.PathLike[str],
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    limits: Limits | None = None,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
    allow_origins: Sequence[str] = (),
) -> None:
    """Serve the page and the API until interrupted (Ctrl-C raises out of serve_forever)."""
    _give_back_freed_memory()
    with make_server(checkpoint_path, host, port, limits, allow_origins) as server:
        if server.loopback_only:
            reach = f"listening on {server.server_address[0]} only; --host 0.0.0.0 lets other machines in"
        else:
            urls = server.network_urls
            at = f" at {', '.join(urls)}" if urls else ""
            reach = f"listening on {server.server_address[0]}: other machines can reach it{at}"
        log(f"mnistkit serve: {server.url} ({Path(checkpoint_path).name}; {reach})")
        if note := unfinished_note(server.checkpoint, str(checkpoint_path)):
            log(note)
        server.serve_forever()
