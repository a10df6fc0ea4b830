"""Gzip and xz decompression that inflates no more than asked for.

`gzip.GzipFile` and `lzma.LZMAFile` read through a buffer and inflate ahead of the caller;
the IDX reader and fetch's verifier need to stop exactly one byte past the data they
expect, so that a decompression bomb or an endless tail costs nothing. Standard library only.
"""

from __future__ import annotations

import lzma
import zlib
from typing import BinaryIO

GZIP_MAGIC = b"\x1f\x8b"
XZ_MAGIC = b"\xfd7zXZ\x00"
_INPUT_BYTES = 64 << 10
_GZIP_WBITS = 16 + zlib.MAX_WBITS
# Zero bytes after the last gzip member (a tape block's or a `dd conv=sync` padding) are read
# as gunzip and Python's gzip read them, as nothing; more than this is a tail, refused.
MAX_GZIP_ZERO_PADDING = 1 << 20
# xz's decoder allocates the dictionary its header declares (8 MiB for `xz -6`, 64 MiB for
# `xz -9`); a hostile header may declare 1.5 GiB. Files needing more than this are refused.
XZ_MEMORY_LIMIT_BYTES = 128 << 20


class CorruptData(Exception):
    """The compression layer of a file is broken; the message says how, in a few words."""


class GunzipStream:
    """A gzip stream whose `read(n)` inflates at most n bytes.

    Each member is checked (CRC-32 and length) as it ends; several members in a row
    read as one stream, as gunzip reads them, and zero padding after the last is skipped.
    """

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self._inflater = zlib.decompressobj(wbits=_GZIP_WBITS)
        self._input = b""
        self._in_member = False
        self._members_read = 0

    def read(self, size: int) -> bytes:
        if size <= 0:
            return b""
        while True:
            if not self._input:
                self._input = self._handle.read(_INPUT_BYTES)
                if not self._input:
                    if self._in_member:
                        raise CorruptData("truncated gzip data (the stream ends before its end marker)")
                    return b""
            if not self._in_member and self._members_read and self._input[0] == 0:
                self._skip_zero_padding()
                return b""
            starting_member, self._in_member = not self._in_member, True
            try:
                output = self._inflater.decompress(self._input, size)
            except zlib.error as error:
                if starting_member and self._members_read:
                    raise CorruptData("trailing bytes after the gzip stream") from None
                raise CorruptData(_zlib_reason(error)) from None
            if self._inflater.eof:
                self._input = self._inflater.unused_data
                self._inflater = zlib.decompressobj(wbits=_GZIP_WBITS)
                self._in_member = False
                self._members_read += 1
            else:
                self._input = self._inflater.unconsumed_tail
            if output:
                return output

    def _skip_zero_padding(self) -> None:
        padding = 0
        while self._input:
            if self._input.count(0) != len(self._input):
                raise CorruptData("trailing bytes after the gzip stream's zero padding")
            padding += len(self._input)
            if padding > MAX_GZIP_ZERO_PADDING:
                raise CorruptData(
                    f"more than {MAX_GZIP_ZERO_PADDING >> 20} MiB of zero bytes after the gzip stream"
                )
            self._input = self._handle.read(_INPUT_BYTES)


def _zlib_reason(error: zlib.error) -> str:
    message = str(error)
    if "incorrect data check" in message:
        return "corrupt gzip data (CRC check failed)"
    if "incorrect length check" in message:
        return "corrupt gzip data (length check failed)"
    return f"corrupt gzip data ({message.split(': ', 1)[-1]})"


class UnxzStream:
    """An xz stream whose `read(n)` decompresses at most n bytes; its integrity check is
    verified as it ends, and any byte after it is an error."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self._decompressor = lzma.LZMADecompressor(lzma.FORMAT_XZ, memlimit=XZ_MEMORY_LIMIT_BYTES)

    def read(self, size: int) -> bytes:
        if size <= 0:
            return b""
        while True:
            if self._decompressor.eof:
                if self._decompressor.unused_data or self._handle.read(1):
                    raise CorruptData("trailing bytes after the xz stream")
                return b""
            data = b""
            if self._decompressor.needs_input:
                data = self._handle.read(_INPUT_BYTES)
                if not data:
                    raise CorruptData("truncated xz data (the stream ends before its end marker)")
            try:
                output = self._decompressor.decompress(data, size)
            except lzma.LZMAError as error:
                if "memory usage limit" in str(error).lower():
                    limit_mib = XZ_MEMORY_LIMIT_BYTES >> 20
                    raise CorruptData(f"xz data that needs more than {limit_mib} MiB to decompress") from None
                raise CorruptData(f"corrupt xz data ({str(error).lower()})") from None
            if output:
                return output


def decompressed(handle: BinaryIO) -> BinaryIO | GunzipStream | UnxzStream:
    """`handle` read through gzip or xz when its first bytes say it is compressed, else as it is.
    The handle must be seekable; it is left at its start."""
    start = handle.read(len(XZ_MAGIC))
    handle.seek(0)
    if start.startswith(GZIP_MAGIC):
        return GunzipStream(handle)
    if start == XZ_MAGIC:
        return UnxzStream(handle)
    return handle
