"""A dataset's files out of the zip archive that holds several (EMNIST's 562 MB `gzip.zip`).

Each member is streamed from the archive on disk into its own file, in chunks: the zip's
central directory is read, never the whole archive. zipfile checks each member's CRC-32
as it ends. A member already extracted is kept when its size and CRC-32 match the
archive's directory, so a second fetch extracts nothing.
"""

from __future__ import annotations

import shutil
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

from mnistkit.atomic import atomic_write
from mnistkit.errors import MnistkitError
from mnistkit.terms import setting

_CHUNK_BYTES = 1 << 20


def _crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK_BYTES), b""):
            crc = zlib.crc32(block, crc)
    return crc


def _matches(path: Path, info: zipfile.ZipInfo) -> bool:
    try:
        return path.is_file() and path.stat().st_size == info.file_size and _crc32(path) == info.CRC
    except OSError:
        return False


def extract_members(
    archive_path: Path,
    prefix: str,
    names: list[str],
    out_dir: Path,
    force: bool,
    log: Callable[[str], None],
) -> list[Path]:
    """Extract `prefix/name` for each of `names` from the (verified) archive into `out_dir/name`."""
    paths = []
    try:
        with zipfile.ZipFile(archive_path) as archive:
            for name in names:
                member = f"{prefix}/{name}" if prefix else name
                try:
                    info = archive.getinfo(member)
                except KeyError:
                    raise MnistkitError(f"{archive_path}: the archive holds no {member}") from None
                target = out_dir / name
                paths.append(target)
                if not force and _matches(target, info):
                    log(f"{target}: already extracted and valid, not extracted again")
                    continue
                with archive.open(info) as source, atomic_write(target, "wb") as handle:
                    shutil.copyfileobj(source, handle, _CHUNK_BYTES)
                log(f"{target}: extracted from {archive_path} ({info.file_size} bytes, CRC-32 verified)")
    except (zipfile.BadZipFile, zlib.error, NotImplementedError, EOFError) as error:
        raise MnistkitError(
            f"{archive_path}: damaged archive ({error}); fetching with {setting('force', True)} "
            "downloads it again"
        ) from None
    return paths
