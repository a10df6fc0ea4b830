"""XLA's compiled training programs kept on disk between runs.

A rerun with the same settings and data shapes then loads its programs instead of compiling
them again: 2 to 3 s of the `fast` preset's first epoch on a 2-core CPU, and 1.6 s down to
0.65 s on an H200 (fresh processes). The programs are jax's persistent compilation cache; they
change no result. `MNISTKIT_COMPILE_CACHE` names another folder, or `off` (or empty) turns the
cache off; a `JAX_COMPILATION_CACHE_DIR` of your own takes precedence. mnistkit's folder is
kept under LIMIT_BYTES (jax never deletes a program, and its own bound needs the filelock
package): a run that finds it larger first deletes the programs used longest ago.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import jax
from jax.experimental.compilation_cache import compilation_cache

CACHE_ENV = "MNISTKIT_COMPILE_CACHE"
OFF = ("", "0", "off", "no", "false")
# A preset's programs take 0.1 to 1 MB, so this keeps hundreds of settings' worth.
LIMIT_BYTES = 256 << 20
PROGRAM_SUFFIX = "-cache"  # how jax names the files it writes; no other file is deleted


def cache_folder() -> Path | None:
    """Where the programs go: $MNISTKIT_COMPILE_CACHE, else mnistkit/xla under
    $XDG_CACHE_HOME or ~/.cache; None when the cache is off or there is no home to put it in."""
    setting = os.environ.get(CACHE_ENV)
    if setting is not None:
        return None if setting.strip().lower() in OFF else Path(setting).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME", ""))
    if not base.is_absolute():  # unset, or relative, which the XDG spec says to ignore
        try:
            base = Path.home() / ".cache"
        except RuntimeError:
            return None
    return base / "mnistkit" / "xla" if base.is_absolute() else None


@contextlib.contextmanager
def compile_cache(log: Callable[[str], None]) -> Iterator[Path | None]:
    """The cache on while the block runs (yielding its folder, or None), and jax's settings
    as they were after it, so a notebook's own programs are not kept in mnistkit's folder.

    The folder must be the user's own and closed to others, since jax runs what it loads
    from it; a refused folder, or one that cannot be made, is one line through `log` and
    training compiles every time, as it would without the cache.
    """
    if jax.config.jax_compilation_cache_dir is not None:  # the user's own setting
        yield Path(jax.config.jax_compilation_cache_dir)
        return
    folder = cache_folder()
    problem = None if folder is None else _problem(folder)
    if folder is None or problem is not None:
        if problem is not None:
            log(f"compile cache {folder}: {problem}; compiling every time (set {CACHE_ENV})")
        yield None
        return
    folder = folder.resolve()
    removed = _trim(folder, LIMIT_BYTES)
    if removed:
        log(
            f"compile cache {folder}: deleted {removed} programs used longest ago, to keep it under "
            f"{LIMIT_BYTES >> 20} MB"
        )
    minimum_seconds = jax.config.jax_persistent_cache_min_compile_time_secs
    compilation_cache.reset_cache()  # an earlier compile in this process decided "no cache"
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    try:
        yield folder
    finally:
        compilation_cache.reset_cache()
        jax.config.update("jax_compilation_cache_dir", None)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", minimum_seconds)


def _problem(folder: Path) -> str | None:
    """Why `folder` (made if missing) will not do, or None. Checked where it really is, so a
    link that someone else owns cannot point jax elsewhere later, and so are the folders above
    it: another user who may rename entries in one of them could swap the cache for a folder
    of their own while a run uses it (a folder anyone writes to with its sticky bit set, as
    /tmp, lets each rename only their own). Those that exist are checked before any is made,
    so a refused place is left as it was."""
    nearest = next(path for path in (folder, *folder.parents) if os.path.lexists(path))
    try:
        if nearest != folder and hasattr(os, "getuid"):
            nearest_real = nearest.resolve(strict=True)
            problem = _open_to_others((nearest_real, *nearest_real.parents))
            if problem is not None:
                return problem
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        real = folder.resolve(strict=True)
        status = real.stat()
    except OSError as error:
        return f"cannot be made ({error.strerror})"
    if not hasattr(os, "getuid"):
        return None
    if status.st_uid != os.getuid():
        return "belongs to another user"
    if status.st_mode & 0o022:
        return f"others may write to it (chmod go-w {real})"
    return _open_to_others(real.parents)


def _open_to_others(folders_above: Iterable[Path]) -> str | None:
    """Why a cache under these folders could be swapped by another user, or None."""
    for above in folders_above:
        status = above.stat()
        if status.st_uid not in (0, os.getuid()):
            return f"the folder above it, {above}, belongs to another user"
        # (Group-writable passes: with a umask of 002, as Fedora gives, a user's folders are
        # writable by the group of that user alone.)
        if status.st_mode & stat.S_IWOTH and not status.st_mode & stat.S_ISVTX:
            return f"others may rename what the folder above it, {above}, holds (chmod o-w {above})"
    return None


def _trim(folder: Path, limit: int) -> int:
    """Delete jax's programs in `folder`, used longest ago first, from over `limit` bytes down
    to three quarters of it; how many went. "Used" is a file's last read or write, whichever
    came later (most Linux mounts note reads about once a day). A program deleted while
    another run reads it costs that run a warning from jax and a compile."""
    programs = []
    try:
        with os.scandir(folder) as found:
            for entry in found:
                if entry.name.endswith(PROGRAM_SUFFIX) and entry.is_file(follow_symlinks=False):
                    with contextlib.suppress(OSError):
                        status = entry.stat(follow_symlinks=False)
                        programs.append(
                            (max(status.st_atime_ns, status.st_mtime_ns), status.st_size, entry.path)
                        )
    except OSError:  # gone or unreadable since it was checked: jax will say so if it matters
        return 0
    total = sum(size for _, size, _ in programs)
    if total <= limit:
        return 0
    removed = 0
    for _, size, path in sorted(programs):
        if total <= limit * 3 // 4:
            break
        with contextlib.suppress(OSError):
            os.unlink(path)
            removed += 1
        total -= size
    return removed
