"""Bytes from a mirror: an http(s) URL, a file:// URL or a folder, within bounds.

A download streams in chunks, is capped at the most bytes any genuine copy can have, and
ends with a `MirrorFailure` (one short reason) for anything a mirror does wrong: an HTTP
error, a redirect to anything but http(s), an untrusted TLS certificate, a connection that
closes early, more bytes than announced or allowed. Each connection and read is bounded by
the timeout, and `ProgressGuard` abandons a download that delivers less than a minimum
rate over a sliding window, so a stalled or dripping mirror costs one timeout.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import http.client
import io
import os
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urljoin, urlsplit

from mnistkit import __version__
from mnistkit.datasets import ExpectedFile
from mnistkit.verify import AnotherDatasetsFile, copy_problem

NO_SUCH_FILE = "no such file"  # a local mirror's failure for a file it lacks

_CHUNK_BYTES = 64 << 10
_REDIRECT_SCHEMES = ("http", "https")
# Connection errors that mean the host could not be reached at all, as when offline.
_UNREACHABLE_ERRNOS = {errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN}

Progress = Callable[[str, int, int | None], None]


class MirrorFailure(Exception):
    """One mirror could not deliver one file; fetch notes why and moves on.

    `retryable`: a second try may succeed and costs little (never after a timeout).
    `unreachable`: no connection was made (no network, unknown host, refused), or a local
    mirror's folder is not there.
    `wrong_file`: the mirror has a file by that name, but not the one (another dataset's).
    """

    def __init__(
        self, reason: str, retryable: bool, unreachable: bool = False, wrong_file: bool = False
    ) -> None:
        super().__init__(reason)
        self.retryable = retryable
        self.unreachable = unreachable
        self.wrong_file = wrong_file


class ProgressGuard:
    """Abandons a download that delivers fewer than `min_bytes_per_s` over a `window_s` window.

    Socket timeouts bound each read, but a mirror that sends a few bytes every second never
    lets one expire. A thread samples the byte count; once a full window has passed with too
    few bytes, it shuts the connection's sockets down, which ends the read blocked on them.
    A `min_bytes_per_s` of 0 turns the guard off.
    """

    def __init__(self, window_s: float, min_bytes_per_s: float) -> None:
        self.window_s = window_s
        self.min_bytes_per_s = min_bytes_per_s
        self.received_bytes = 0
        self.failure: MirrorFailure | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="mnistkit-fetch-guard", daemon=True)

    def __enter__(self) -> ProgressGuard:
        if self.min_bytes_per_s > 0:
            self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def watch(self, sock: socket.socket) -> None:
        """Take charge of a connection the download opened (each redirect opens one)."""
        with self._lock:
            self._sockets.append(sock)
            if self.failure is not None:
                _shut_down(sock)

    def _watch(self) -> None:
        samples = deque([(time.monotonic(), 0)])
        tick_s = min(0.25, self.window_s / 10)
        while not self._stop.wait(tick_s):
            now, received_bytes = time.monotonic(), self.received_bytes
            samples.append((now, received_bytes))
            while samples[1][0] <= now - self.window_s:
                samples.popleft()
            window_start, bytes_at_start = samples[0]
            window_bytes = received_bytes - bytes_at_start
            if now - window_start >= self.window_s and window_bytes < self.min_bytes_per_s * self.window_s:
                self._trip(window_bytes)
                return

    def _trip(self, window_bytes: int) -> None:
        if window_bytes == 0:
            reason = f"timed out (nothing received for {self.window_s:g} s)"
        else:
            reason = (
                f"too slow ({window_bytes} bytes in {self.window_s:g} s, "
                f"below the minimum of {self.min_bytes_per_s:g} bytes/s)"
            )
        with self._lock:
            self.failure = MirrorFailure(reason, retryable=False)
            for sock in self._sockets:
                _shut_down(sock)


def _shut_down(sock: socket.socket) -> None:
    """End both directions of `sock` now, from any thread: a read blocked on it returns.

    socket.socket's own shutdown, not SSLSocket's, which would also drop the TLS state
    under the reading thread's feet.
    """
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


@dataclass(frozen=True)
class Download:
    """What to download and within which bounds."""

    expected: ExpectedFile
    timeout_s: float
    min_bytes_per_s: float
    progress: Progress | None


@contextlib.contextmanager
def open_source(
    source: str, expected: ExpectedFile, opener: urllib.request.OpenerDirector, timeout_s: float
) -> Iterator[tuple[io.BufferedIOBase, int | None]]:
    """Yield the source's byte stream and the size it announces (None when unknown)."""
    remote = urlsplit(source).scheme in ("http", "https")
    stream, announced_bytes = _open_http(source, opener, timeout_s) if remote else _open_local(source)
    with stream:
        if announced_bytes is not None and announced_bytes > expected.max_download_bytes:
            problem = None if remote else _other_datasets(stream, expected)
            if problem is None:
                verb = "announces" if remote else "is"
                problem = (
                    f"{verb} {announced_bytes} bytes, more than the {expected.max_download_bytes} "
                    "any genuine copy may have"
                )
            raise MirrorFailure(problem, retryable=False, wrong_file=True)
        yield stream, announced_bytes


def _other_datasets(handle: BinaryIO, expected: ExpectedFile) -> str | None:
    """What a local file too large to be `expected` holds where it is another dataset's genuine
    file of the same name (Fashion-MNIST's training images in a folder given for MNIST's),
    read at the cost of a local read."""
    problem = copy_problem(handle, expected)
    handle.seek(0)
    return problem if isinstance(problem, AnotherDatasetsFile) else None


def _open_http(
    url: str, opener: urllib.request.OpenerDirector, timeout_s: float
) -> tuple[io.BufferedIOBase, int | None]:
    request = urllib.request.Request(url, headers={"User-Agent": f"mnistkit/{__version__}"})
    try:
        response = opener.open(request, timeout=timeout_s)
    except urllib.error.HTTPError as error:
        error.close()
        if 300 <= error.code < 400:
            raise MirrorFailure("too many redirects (a redirect loop)", retryable=False) from None
        retryable = error.code >= 500 or error.code == 429
        raise MirrorFailure(f"HTTP {error.code} {error.reason}", retryable=retryable) from None
    except urllib.error.URLError as error:
        raise network_failure(error.reason, timeout_s, connecting=True) from None
    except (OSError, http.client.HTTPException) as error:
        raise network_failure(error, timeout_s) from None
    except ValueError as error:
        raise MirrorFailure(f"invalid URL ({error})", retryable=False) from None
    length_text = response.headers.get("Content-Length")
    announced_bytes = int(length_text) if length_text and length_text.strip().isdigit() else None
    return response, announced_bytes


def _open_local(source: str) -> tuple[io.BufferedIOBase, int]:
    parts = urlsplit(source)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise MirrorFailure(f"file:// URL names a remote host '{parts.netloc}'", retryable=False)
        path = Path(urllib.request.url2pathname(parts.path))
    else:
        path = Path(source)
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed by open_source
    except (FileNotFoundError, NotADirectoryError):
        if not path.parent.is_dir():  # the whole mirror is missing, as a host that cannot be reached
            raise MirrorFailure("no such folder", retryable=False, unreachable=True) from None
        raise MirrorFailure(NO_SUCH_FILE, retryable=False) from None
    except OSError as error:
        raise MirrorFailure(f"cannot read ({error.strerror or error})", retryable=False) from None
    return handle, os.fstat(handle.fileno()).st_size


def network_failure(
    error: BaseException | str, timeout_s: float, connecting: bool = False, after: str = ""
) -> MirrorFailure:
    """The failure for a network error; `connecting`: it came before any answer."""
    unreachable = connecting and (
        isinstance(error, (socket.gaierror, TimeoutError))
        or getattr(error, "errno", None) in _UNREACHABLE_ERRNOS
    )
    retryable = not isinstance(error, (TimeoutError, ssl.SSLCertVerificationError))
    return MirrorFailure(_network_reason(error, timeout_s) + after, retryable, unreachable)


def _network_reason(error: BaseException | str, timeout_s: float) -> str:
    if isinstance(error, str):
        return error
    if isinstance(error, TimeoutError):
        return f"timed out (nothing received for {timeout_s:g} s)"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted ({error.verify_message})"
    if isinstance(error, socket.gaierror):
        return f"cannot resolve the host name ({error.strerror})"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


def copy_capped(
    stream: io.BufferedIOBase,
    handle: BinaryIO,
    download: Download,
    announced_bytes: int | None,
    guard: ProgressGuard,
) -> int:
    """Copy to `handle`, never writing more than the file's download cap.

    read1 returns what one read of the socket brings, so the guard counts a dripping
    mirror's bytes as they come.
    """
    expected = download.expected
    received_bytes = 0
    while True:
        try:
            chunk = stream.read1(_CHUNK_BYTES)
        except (OSError, http.client.HTTPException) as error:
            raise network_failure(error, download.timeout_s, after=f" after {received_bytes} bytes") from None
        if not chunk:
            break
        received_bytes += len(chunk)
        guard.received_bytes = received_bytes
        if received_bytes > expected.max_download_bytes:
            raise MirrorFailure(
                f"sent more than {expected.max_download_bytes} bytes, more than any genuine copy; stopped",
                retryable=False,
            )
        handle.write(chunk)
        if download.progress is not None:
            download.progress(expected.name, received_bytes, announced_bytes)
    if announced_bytes is not None and received_bytes != announced_bytes:
        raise MirrorFailure(
            f"connection closed after {received_bytes} of the {announced_bytes} bytes announced",
            retryable=True,
        )
    return received_bytes


class _HttpRedirectsOnly(urllib.request.HTTPRedirectHandler):
    """Follows redirects to http(s) only, so a mirror cannot point fetch at local files.

    Loops and long chains end in urllib's HTTPError after `max_redirections`.
    """

    max_redirections = 5

    def http_error_302(self, req, fp, code, msg, headers):
        location = headers.get("Location") or headers.get("URI")
        if location:
            new_url = urljoin(req.full_url, location)
            if urlsplit(new_url).scheme.lower() not in _REDIRECT_SCHEMES:
                fp.close()
                raise MirrorFailure(
                    f"redirected to {new_url[:200]}, refused (only http and https redirects are followed)",
                    retryable=False,
                )
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


class _ReportsItsSocket:
    """A connection that hands each socket it connects to `on_connect`."""

    def __init__(self, *args, on_connect: Callable[[socket.socket], None], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._on_connect = on_connect

    def connect(self) -> None:
        super().connect()
        self._on_connect(self.sock)


class _WatchedHTTPConnection(_ReportsItsSocket, http.client.HTTPConnection):
    pass


class _WatchedHTTPSConnection(_ReportsItsSocket, http.client.HTTPSConnection):
    pass


class _WatchedConnections(urllib.request.AbstractHTTPHandler):
    """Opens http and https connections whose sockets go to `on_connect` once connected
    (for https, once the TLS handshake is done, which the socket timeout bounds)."""

    def __init__(self, on_connect: Callable[[socket.socket], None]) -> None:
        super().__init__()
        self.on_connect = on_connect

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_WatchedHTTPConnection, req, on_connect=self.on_connect)

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_WatchedHTTPSConnection, req, on_connect=self.on_connect, context=_tls_context())

    http_request = https_request = urllib.request.AbstractHTTPHandler.do_request_


@functools.cache
def _tls_context() -> ssl.SSLContext:
    return ssl.create_default_context()


def opener(on_connect: Callable[[socket.socket], None]) -> urllib.request.OpenerDirector:
    """http and https only, TLS certificates and host names always verified; each socket
    it connects goes to `on_connect`."""
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler(),
        _WatchedConnections(on_connect),
        urllib.request.HTTPDefaultErrorHandler(),
        _HttpRedirectsOnly(),
        urllib.request.HTTPErrorProcessor(),
        urllib.request.UnknownHandler(),
    ):
        opener.add_handler(handler)
    return opener
