"""Whether a downloaded file is the genuine one.

Mirrors recompress, so a file whose content's SHA-256 is known is verified by its
decompressed content (gzip or xz), streamed, stopping one byte past the expected size.
A file for which only the official host's checksum is published (an MD5 or SHA-256 of
the compressed bytes, as for KMNIST, QMNIST and EMNIST's zip) must be those very bytes.
"""

from __future__ import annotations

import hashlib
import os
from typing import BinaryIO

from mnistkit.datasets import ExpectedFile, Published, dataset_spec, known_content
from mnistkit.decompress import GZIP_MAGIC, XZ_MAGIC, CorruptData, decompressed

_CHUNK_BYTES = 64 << 10
# More than any content whose SHA-256 is published (MNIST's training images, 47,040,016 bytes).
_MOST_KNOWN_CONTENT_BYTES = 48 << 20


def verified_by(expected: ExpectedFile) -> str:
    """What a copy that passes `copy_problem` was checked against, for the log line."""
    if expected.sha256:
        return "content SHA-256 verified"
    return f"{expected.published.algorithm_name} of the official file verified"


def copy_problem(handle: BinaryIO, expected: ExpectedFile) -> str | None:
    """Why the file open in `handle` (at its start) is not `expected`, or None when it is."""
    if expected.sha256:
        return _content_problem(handle, expected)
    problem = _published_problem(handle, expected.published)
    if problem is None:
        return None
    return _another_datasets_file(handle, expected.name) or problem


class AnotherDatasetsFile(str):
    """The problem when the file is another dataset's genuine file of the same name, which
    fetch keeps rather than deletes."""


def file_problem(path: str | os.PathLike[str], expected: ExpectedFile) -> str | None:
    """Why the file at `path` is not a valid copy of `expected`, or None when it is."""
    try:
        with open(path, "rb") as handle:
            return copy_problem(handle, expected)
    except OSError as error:
        return f"cannot read ({error.strerror or error})"


def _content_problem(handle: BinaryIO, expected: ExpectedFile) -> str | None:
    start = handle.read(64)
    handle.seek(0)
    if not start.startswith((GZIP_MAGIC, XZ_MAGIC)):
        lowered = start.lstrip().lower()
        if lowered.startswith((b"<!doctype html", b"<html")):
            return "not gzip data: an HTML page"
        return f"not gzip data (starts with {start[:16]!r})"
    try:
        sha256, size_bytes = _content_digest(handle, expected.size_bytes + 1)
    except CorruptData as error:
        return str(error)
    if size_bytes > expected.size_bytes:
        return f"decompresses to more than the {expected.size_bytes} bytes expected"
    if size_bytes != expected.size_bytes:
        return f"decompresses to {size_bytes} bytes, expected {expected.size_bytes}"
    if sha256 != expected.sha256:
        return _named_alike(sha256, expected.name) or (
            f"content SHA-256 {sha256[:16]}... is not the expected {expected.sha256[:16]}..."
        )
    return None


def _content_digest(handle: BinaryIO, most_bytes: int) -> tuple[str, int]:
    """The SHA-256 of the decompressed content's first `most_bytes` bytes, and how many it
    has of them; CorruptData where the compressed stream is broken."""
    digest = hashlib.sha256()
    size_bytes = 0
    stream = decompressed(handle)
    while size_bytes < most_bytes:
        chunk = stream.read(min(_CHUNK_BYTES, most_bytes - size_bytes))
        if not chunk:
            break
        digest.update(chunk)
        size_bytes += len(chunk)
    return digest.hexdigest(), size_bytes


def _named_alike(sha256: str, name: str) -> AnotherDatasetsFile | None:
    """The problem of a file holding another dataset's genuine content under the same name."""
    datasets = [dataset for dataset, known_name in known_content(sha256) if known_name == name]
    if not datasets:
        return None
    return AnotherDatasetsFile(f"it holds {dataset_spec(datasets[0]).title}'s {name}")


def _another_datasets_file(handle: BinaryIO, name: str) -> AnotherDatasetsFile | None:
    """A file checked by its official bytes (KMNIST's, QMNIST's) that is another dataset's
    genuine one under the same name, told by its decompressed content: MNIST's
    train-images-idx3-ubyte.gz where KMNIST's belongs."""
    handle.seek(0)
    if not handle.read(len(XZ_MAGIC)).startswith((GZIP_MAGIC, XZ_MAGIC)):
        return None
    handle.seek(0)
    try:
        sha256, _ = _content_digest(handle, _MOST_KNOWN_CONTENT_BYTES)
    except CorruptData:
        return None
    return _named_alike(sha256, name)


def _published_problem(handle: BinaryIO, published: Published) -> str | None:
    digest = hashlib.new(published.algorithm)
    size_bytes = 0
    for block in iter(lambda: handle.read(1 << 20), b""):
        digest.update(block)
        size_bytes += len(block)
    if published.size_bytes is not None and size_bytes != published.size_bytes:
        return f"{size_bytes} bytes, not the official file's {published.size_bytes}"
    if digest.hexdigest() != published.digest:
        name = published.algorithm_name
        return (
            f"{name} {digest.hexdigest()[:16]}... is not the official file's {published.digest[:16]}... "
            "(only the official bytes can be verified: no checksum of the content is published)"
        )
    return None
