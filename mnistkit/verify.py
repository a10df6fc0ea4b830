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


def verified_by(expected: ExpectedFile) -> str:
    """What a copy that passes `copy_problem` was checked against, for the log line."""
    if expected.sha256:
        return "content SHA-256 verified"
    return f"{expected.published.algorithm_name} of the official file verified"


def copy_problem(handle: BinaryIO, expected: ExpectedFile) -> str | None:
    """Why the file open in `handle` (at its start) is not `expected`, or None when it is."""
    if expected.sha256:
        return _content_problem(handle, expected)
    return _published_problem(handle, expected.published)


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
    digest = hashlib.sha256()
    size_bytes = 0
    stream = decompressed(handle)
    try:
        while size_bytes <= expected.size_bytes:
            chunk = stream.read(min(_CHUNK_BYTES, expected.size_bytes + 1 - size_bytes))
            if not chunk:
                break
            digest.update(chunk)
            size_bytes += len(chunk)
    except CorruptData as error:
        return str(error)
    if size_bytes > expected.size_bytes:
        return f"decompresses to more than the {expected.size_bytes} bytes expected"
    if size_bytes != expected.size_bytes:
        return f"decompresses to {size_bytes} bytes, expected {expected.size_bytes}"
    if digest.hexdigest() != expected.sha256:
        named_alike = [
            (dataset, name) for dataset, name in known_content(digest.hexdigest()) if name == expected.name
        ]
        if named_alike:  # another dataset's genuine file of the same name
            dataset, name = named_alike[0]
            return AnotherDatasetsFile(f"it holds {dataset_spec(dataset).title}'s {name}")
        return f"content SHA-256 {digest.hexdigest()[:16]}... is not the expected {expected.sha256[:16]}..."
    return None


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
