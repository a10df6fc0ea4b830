"""Download the four MNIST files from the first mirror that serves a verified copy.

Mirrors recompress the files, so each is verified by the SHA-256 of its decompressed
content, not of the `.gz`. A download streams into a temp file in the output folder,
is capped at a small multiple of the genuine file's size, is verified, and only then
renamed to its canonical name: whatever a mirror answers, the output folder never holds
a partial or wrong file under one of the four names, nor any other name.

A bad mirror costs about one timeout, once: a download that delivers less than a minimum
rate over a sliding window of `timeout_s` seconds is abandoned (a stalled or dripping
mirror), only quick failures are retried, and a mirror that failed is not tried for the
other files.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import http.client
import io
import os
import socket
import ssl
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urljoin, urlsplit

from mnistkit import __version__
from mnistkit.atomic import atomic_write, make_output_folder
from mnistkit.datasets import MNIST_FILES
from mnistkit.errors import MnistkitError
from mnistkit.gunzip import GZIP_MAGIC, CorruptGzip, GunzipStream
from mnistkit.mirrors import DEFAULT_MIN_RATE_BYTES_PER_S, DEFAULT_TIMEOUT_S, MIRROR_ENV


@dataclass(frozen=True)
class ExpectedFile:
    """A file fetch writes: its name in the output folder and what its content must be."""

    name: str
    sha256: str
    size_bytes: int
    max_download_bytes: int

    def __post_init__(self) -> None:
        if Path(self.name).name != self.name or self.name in ("", ".", ".."):
            raise ValueError(f"expected file name {self.name!r} must be a plain file name")


# Decompressed SHA-256 and size; the download cap is twice the canonical `.gz` size.
MNIST_EXPECTED = (
    ExpectedFile(
        MNIST_FILES["train_images"],
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        47_040_016,
        2 * 9_912_422,
    ),
    ExpectedFile(
        MNIST_FILES["train_labels"],
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        60_008,
        2 * 28_881,
    ),
    ExpectedFile(
        MNIST_FILES["test_images"],
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        7_840_016,
        2 * 1_648_877,
    ),
    ExpectedFile(
        MNIST_FILES["test_labels"],
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        10_008,
        2 * 4_542,
    ),
)

RETRY_DELAY_S = 0.25
_CHUNK_BYTES = 64 << 10
_REDIRECT_SCHEMES = ("http", "https")
# Connection errors that mean the host could not be reached at all, as when offline.
_UNREACHABLE_ERRNOS = {errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN}
LOCAL_COPY_HINT = (
    f"no mirror could be reached (is this machine offline?); to use a local copy, point {MIRROR_ENV} "
    f"(or --mirror) at a folder holding the four .gz files: {MIRROR_ENV}=/path/to/folder mnistkit fetch"
)

Log = Callable[[str], None]
Progress = Callable[[str, int, int | None], None]


class _MirrorFailure(Exception):
    """One mirror could not deliver one file; fetch notes why and moves on.

    `retryable`: a second try may succeed and costs little (never after a timeout).
    `unreachable`: no connection was made (no network, unknown host, refused).
    """

    def __init__(self, reason: str, retryable: bool, unreachable: bool = False) -> None:
        super().__init__(reason)
        self.retryable = retryable
        self.unreachable = unreachable


class _ProgressGuard:
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
        self.failure: _MirrorFailure | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="mnistkit-fetch-guard", daemon=True)

    def __enter__(self) -> _ProgressGuard:
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
            self.failure = _MirrorFailure(reason, retryable=False)
            for sock in self._sockets:
                _shut_down(sock)


def _shut_down(sock: socket.socket) -> None:
    """End both directions of `sock` now, from any thread: a read blocked on it returns.

    socket.socket's own shutdown, not SSLSocket's, which would also drop the TLS state
    under the reading thread's feet.
    """
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _log_to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def check_mirror(mirror: str) -> None:
    """Accept http(s):// and file:// URLs and plain directories, nothing else."""
    if not mirror.strip():
        raise MnistkitError("mirror '': an empty mirror names nothing")
    parts = urlsplit(mirror)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https") and not parts.netloc:
        raise MnistkitError(f"mirror {mirror}: the URL names no host")
    if scheme not in ("http", "https", "file", ""):
        raise MnistkitError(
            f"mirror {mirror}: unsupported scheme '{scheme}:'; use http(s):// or file:// or a directory"
        )


def _is_remote(mirror: str) -> bool:
    return urlsplit(mirror).scheme.lower() in ("http", "https")


def fetch(
    out_dir: str | os.PathLike[str],
    mirrors: Sequence[str],
    force: bool = False,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    files: Sequence[ExpectedFile] | None = None,
    log: Log = _log_to_stderr,
    progress: Progress | None = None,
    min_bytes_per_s: float = DEFAULT_MIN_RATE_BYTES_PER_S,
) -> list[Path]:
    """Make `out_dir` hold a verified copy of each of `files`; return their paths.

    A file already present and valid is kept; an invalid one is removed and fetched
    again; `force` fetches every file again (the old copy stays until a new one is
    verified). Each file comes from the first mirror that delivers it; a mirror that
    fails gets one retry when the failure may be transient and came quickly, and a
    remote one is not tried again for the other files. `timeout_s` bounds the
    connection and each read, and is the window over which a download must average
    `min_bytes_per_s` (0: no minimum). `files` defaults to the four MNIST files.
    Raises MnistkitError when no mirror delivers a file.
    """
    out_dir = Path(out_dir)
    files = MNIST_EXPECTED if files is None else files
    if not mirrors:
        raise MnistkitError("no mirror to fetch from")
    for mirror in mirrors:
        check_mirror(mirror)
    make_output_folder(out_dir)
    failed_mirrors: set[str] = set()
    paths = []
    for position, expected in enumerate(files):
        target = out_dir / expected.name
        if target.exists() and not force:
            problem = file_problem(target, expected)
            if problem is None:
                log(f"{target}: already present and valid, not downloaded again")
                paths.append(target)
                continue
            _remove_invalid(target)
            log(f"{target}: present but invalid ({problem}); removed, fetching a new copy")
        more_files = position < len(files) - 1
        download = _Download(expected, timeout_s, min_bytes_per_s, progress)
        _fetch_file(target, download, mirrors, failed_mirrors, more_files, log)
        paths.append(target)
    return paths


def _remove_invalid(target: Path) -> None:
    try:
        target.unlink(missing_ok=True)
    except IsADirectoryError:
        raise MnistkitError(f"{target}: is a directory, expected a file path") from None
    except OSError as error:
        raise MnistkitError(f"{target}: invalid, and cannot be removed ({error.strerror})") from None


@dataclass(frozen=True)
class _Download:
    """What to download and within which bounds."""

    expected: ExpectedFile
    timeout_s: float
    min_bytes_per_s: float
    progress: Progress | None


def _fetch_file(
    target: Path,
    download: _Download,
    mirrors: Sequence[str],
    failed_mirrors: set[str],
    more_files: bool,
    log: Log,
) -> None:
    """Fetch from the first mirror that delivers; add each remote one that fails to
    `failed_mirrors` (a local folder's failure costs nothing, and may concern one file)."""
    candidates = [mirror for mirror in mirrors if mirror not in failed_mirrors]
    failures = []
    for mirror in candidates:
        source = _source(mirror, download.expected.name)
        try:
            received_bytes = _download_with_retry(source, target, download)
        except _MirrorFailure as failure:
            log(f"{target.name}: {source}: {failure}")
            failures.append((mirror, failure))
            continue
        log(f"{target}: fetched from {source} ({received_bytes} bytes, content SHA-256 verified)")
        for failed_mirror, _ in failures:
            if _is_remote(failed_mirror):
                failed_mirrors.add(failed_mirror)
                if more_files:
                    log(f"{failed_mirror}: skipped for the rest of this run")
        return
    tried = f"{len(candidates)} tried, one line each above"
    skipped_count = len(mirrors) - len(candidates)
    if skipped_count:
        tried += f"; {skipped_count} skipped after failing for an earlier file"
    message = f"{target}: every mirror failed ({tried}); nothing was written"
    remote_failures = [failure for mirror, failure in failures if _is_remote(mirror)]
    if remote_failures and all(failure.unreachable for failure in remote_failures):
        message += f"; {LOCAL_COPY_HINT}"
    raise MnistkitError(message)


def _source(mirror: str, name: str) -> str:
    if urlsplit(mirror).scheme:
        return mirror.rstrip("/") + "/" + name
    return str(Path(mirror) / name)


def _download_with_retry(source: str, target: Path, download: _Download) -> int:
    """One retry for a failure that may be transient and came quickly (within half the
    timeout): a mirror that kept fetch waiting does not get a second wait."""
    started = time.monotonic()
    try:
        return _download(source, target, download)
    except _MirrorFailure as failure:
        quick = time.monotonic() - started < download.timeout_s / 2
        if not (failure.retryable and quick):
            raise
        time.sleep(RETRY_DELAY_S)
    try:
        return _download(source, target, download)
    except _MirrorFailure as failure:
        raise _MirrorFailure(
            f"{failure} (2 attempts)", retryable=False, unreachable=failure.unreachable
        ) from None


def _download(source: str, target: Path, download: _Download) -> int:
    """Stream one copy into a temp file beside `target`; rename it only once verified."""
    expected = download.expected
    with _ProgressGuard(download.timeout_s, download.min_bytes_per_s) as guard:
        try:
            with (
                _open_source(source, expected, _opener(guard.watch), download.timeout_s) as (
                    stream,
                    announced_bytes,
                ),
                atomic_write(target, "w+b") as handle,
            ):
                received_bytes = _copy_capped(stream, handle, download, announced_bytes, guard)
                handle.seek(0)
                problem = _content_problem(handle, expected)
                if problem is not None:
                    raise _MirrorFailure(problem, retryable=False)
        except _MirrorFailure:
            if guard.failure is not None:
                raise guard.failure from None
            raise
    return received_bytes


@contextlib.contextmanager
def _open_source(
    source: str, expected: ExpectedFile, opener: urllib.request.OpenerDirector, timeout_s: float
) -> Iterator[tuple[io.BufferedIOBase, int | None]]:
    """Yield the source's byte stream and the size it announces (None when unknown)."""
    parts = urlsplit(source)
    if parts.scheme in ("http", "https"):
        stream, announced_bytes = _open_http(source, opener, timeout_s)
    else:
        stream, announced_bytes = _open_local(source)
    with stream:
        if announced_bytes is not None and announced_bytes > expected.max_download_bytes:
            raise _MirrorFailure(
                f"announces {announced_bytes} bytes, more than the {expected.max_download_bytes} "
                "any genuine copy may have",
                retryable=False,
            )
        yield stream, announced_bytes


def _open_http(
    url: str, opener: urllib.request.OpenerDirector, timeout_s: float
) -> tuple[io.BufferedIOBase, int | None]:
    request = urllib.request.Request(url, headers={"User-Agent": f"mnistkit/{__version__}"})
    try:
        response = opener.open(request, timeout=timeout_s)
    except urllib.error.HTTPError as error:
        error.close()
        if 300 <= error.code < 400:
            raise _MirrorFailure("too many redirects (a redirect loop)", retryable=False) from None
        retryable = error.code >= 500 or error.code == 429
        raise _MirrorFailure(f"HTTP {error.code} {error.reason}", retryable=retryable) from None
    except urllib.error.URLError as error:
        raise _network_failure(error.reason, timeout_s, connecting=True) from None
    except (OSError, http.client.HTTPException) as error:
        raise _network_failure(error, timeout_s) from None
    except ValueError as error:
        raise _MirrorFailure(f"invalid URL ({error})", retryable=False) from None
    length_text = response.headers.get("Content-Length")
    announced_bytes = int(length_text) if length_text and length_text.strip().isdigit() else None
    return response, announced_bytes


def _open_local(source: str) -> tuple[io.BufferedIOBase, int]:
    parts = urlsplit(source)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise _MirrorFailure(f"file:// URL names a remote host '{parts.netloc}'", retryable=False)
        path = Path(urllib.request.url2pathname(parts.path))
    else:
        path = Path(source)
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed by _open_source
    except FileNotFoundError:
        raise _MirrorFailure("no such file", retryable=False) from None
    except OSError as error:
        raise _MirrorFailure(f"cannot read ({error.strerror or error})", retryable=False) from None
    return handle, os.fstat(handle.fileno()).st_size


def _network_failure(
    error: BaseException | str, timeout_s: float, connecting: bool = False, after: str = ""
) -> _MirrorFailure:
    """The failure for a network error; `connecting`: it came before any answer."""
    unreachable = connecting and (
        isinstance(error, (socket.gaierror, TimeoutError))
        or getattr(error, "errno", None) in _UNREACHABLE_ERRNOS
    )
    retryable = not isinstance(error, (TimeoutError, ssl.SSLCertVerificationError))
    return _MirrorFailure(_network_reason(error, timeout_s) + after, retryable, unreachable)


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


def _copy_capped(
    stream: io.BufferedIOBase,
    handle: BinaryIO,
    download: _Download,
    announced_bytes: int | None,
    guard: _ProgressGuard,
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
            raise _network_failure(
                error, download.timeout_s, after=f" after {received_bytes} bytes"
            ) from None
        if not chunk:
            break
        received_bytes += len(chunk)
        guard.received_bytes = received_bytes
        if received_bytes > expected.max_download_bytes:
            raise _MirrorFailure(
                f"sent more than {expected.max_download_bytes} bytes, more than any genuine copy; stopped",
                retryable=False,
            )
        handle.write(chunk)
        if download.progress is not None:
            download.progress(expected.name, received_bytes, announced_bytes)
    if announced_bytes is not None and received_bytes != announced_bytes:
        raise _MirrorFailure(
            f"connection closed after {received_bytes} of the {announced_bytes} bytes announced",
            retryable=True,
        )
    return received_bytes


def _content_problem(handle: BinaryIO, expected: ExpectedFile) -> str | None:
    """Why the gzip data in `handle` is not `expected`, or None when it is.

    Decompresses as a stream and stops one byte past the expected size.
    """
    start = handle.read(64)
    handle.seek(0)
    if start[:2] != GZIP_MAGIC:
        lowered = start.lstrip().lower()
        if lowered.startswith((b"<!doctype html", b"<html")):
            return "not gzip data: an HTML page"
        return f"not gzip data (starts with {start[:16]!r})"
    digest = hashlib.sha256()
    size_bytes = 0
    stream = GunzipStream(handle)
    try:
        while size_bytes <= expected.size_bytes:
            chunk = stream.read(min(_CHUNK_BYTES, expected.size_bytes + 1 - size_bytes))
            if not chunk:
                break
            digest.update(chunk)
            size_bytes += len(chunk)
    except CorruptGzip as error:
        return str(error)
    if size_bytes > expected.size_bytes:
        return f"decompresses to more than the {expected.size_bytes} bytes expected"
    if size_bytes != expected.size_bytes:
        return f"decompresses to {size_bytes} bytes, expected {expected.size_bytes}"
    if digest.hexdigest() != expected.sha256:
        return f"content SHA-256 {digest.hexdigest()[:16]}... is not the expected {expected.sha256[:16]}..."
    return None


def file_problem(path: str | os.PathLike[str], expected: ExpectedFile) -> str | None:
    """Why the file at `path` is not a valid copy of `expected`, or None when it is."""
    try:
        with open(path, "rb") as handle:
            return _content_problem(handle, expected)
    except OSError as error:
        return f"cannot read ({error.strerror or error})"


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
                raise _MirrorFailure(
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


def _opener(on_connect: Callable[[socket.socket], None]) -> urllib.request.OpenerDirector:
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
