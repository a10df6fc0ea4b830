"""Gzip decompression that inflates no more than asked for.

`gzip.GzipFile` reads through a buffer and inflates ahead of the caller; the IDX reader
and fetch's verifier need to stop exactly one byte past the data they expect, so that a
gzip bomb or an endless tail costs nothing. Standard library only.
"""

from __future__ import annotations

import zlib
from typing import BinaryIO

GZIP_MAGIC = b"\x1f\x8b"
_INPUT_BYTES = 64 << 10
_GZIP_WBITS = 16 + zlib.MAX_WBITS


class CorruptGzip(Exception):
    """The gzip layer of a file is broken; the message says how, in a few words."""


class GunzipStream:
    """A gzip stream whose `read(n)` inflates at most n bytes.

    Each member is checked (CRC-32 and length) as it ends; several members in a row
    read as one stream, as gunzip reads them.
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
                        raise CorruptGzip("truncated gzip data (the stream ends before its end marker)")
                    return b""
            starting_member, self._in_member = not self._in_member, True
            try:
                output = self._inflater.decompress(self._input, size)
            except zlib.error as error:
                if starting_member and self._members_read:
                    raise CorruptGzip("trailing bytes after the gzip stream") from None
                raise CorruptGzip(_zlib_reason(error)) from None
            if self._inflater.eof:
                self._input = self._inflater.unused_data
                self._inflater = zlib.decompressobj(wbits=_GZIP_WBITS)
                self._in_member = False
                self._members_read += 1
            else:
                self._input = self._inflater.unconsumed_tail
            if output:
                return output


def _zlib_reason(error: zlib.error) -> str:
    message = str(error)
    if "incorrect data check" in message:
        return "corrupt gzip data (CRC check failed)"
    if "incorrect length check" in message:
        return "corrupt gzip data (length check failed)"
    return f"corrupt gzip data ({message.split(': ', 1)[-1]})"
