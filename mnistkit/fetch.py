"""Download a dataset's files from the first mirror that serves a verified copy.

A download streams into a temp file in the output folder, is capped at a small multiple
of the genuine file's size, is verified (`verify.py`), and only then renamed to its
canonical name: whatever a mirror answers, the output folder never holds a partial or
wrong file under one of its names, nor any other name. EMNIST's splits come in one zip:
it is fetched once into a cache folder (itself a mirror of EMNIST's host) and each
split's four files are extracted from it (`archives.py`).

A bad mirror costs about one timeout, once: a download that delivers less than a minimum
rate over a sliding window of `timeout_s` seconds is abandoned (a stalled or dripping
mirror, `transport.py`), only quick failures are retried, and a mirror that failed is not
tried for the other files.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from mnistkit.archives import extract_members
from mnistkit.atomic import atomic_write, fitting_name, make_output_folder
from mnistkit.datasets import DEFAULT_DATASET, DatasetSpec, ExpectedFile, dataset_option, dataset_spec
from mnistkit.errors import MnistkitError
from mnistkit.mirrors import DEFAULT_CACHE_DIR, DEFAULT_MIN_RATE_BYTES_PER_S, DEFAULT_TIMEOUT_S, MIRROR_ENV
from mnistkit.terms import on_command_line, setting
from mnistkit.transport import (
    NO_SUCH_FILE,
    Download,
    MirrorFailure,
    Progress,
    ProgressGuard,
    copy_capped,
    open_source,
    opener,
)
from mnistkit.verify import AnotherDatasetsFile, copy_problem, file_problem, verified_by

RETRY_DELAY_S = 0.25
INVALID_SUFFIX = ".invalid"  # an invalid file's name while fetch replaces it
Log = Callable[[str], None]


def local_copy_hint(dataset: DatasetSpec) -> str:
    """The last words of a fetch that reached no mirror: how to use a local copy instead, from
    a shell or from Python (`download`'s and `load_dataset`'s `mirrors=`)."""
    downloads = dataset.downloads
    what = "the four .gz files" if len(downloads) == 4 else " and ".join(entry.name for entry in downloads)
    option = dataset_option(dataset.name)
    offline = "no mirror could be reached (is this machine offline?); to use a local copy, "
    if not on_command_line():
        return f'{offline}give mirrors="/path/to/folder" holding {what}, or point {MIRROR_ENV} at it'
    command = f"{MIRROR_ENV}=/path/to/folder mnistkit fetch{option}"
    if "MAKELEVEL" in os.environ:  # run by make, which is what to run again
        dataset_variable = "" if dataset.name == DEFAULT_DATASET else f" DATASET={dataset.name}"
        command = f"{MIRROR_ENV}=/path/to/folder make all{dataset_variable}"
    return f"{offline}point {MIRROR_ENV} at a folder holding {what}: {command}"


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
    dataset: str = DEFAULT_DATASET,
    cache_dir: str | os.PathLike[str] = DEFAULT_CACHE_DIR,
) -> list[Path]:
    """Make `out_dir` hold a verified copy of each of `dataset`'s files; return their paths.

    A file already present and valid is kept; an invalid one is moved aside (NAME.invalid)
    and fetched again, and `force` fetches every file again: the old copy stays until a new
    one is verified, so a failed fetch loses nothing (a genuine copy that fails the check,
    recompressed, is still there).
    Each file comes from the first mirror that delivers it; a mirror that fails gets one
    retry when the failure may be transient and came quickly, and a remote one, or a local
    folder that is not there, is not tried again for the other files. `timeout_s` bounds the
    connection and each read, and is the window over which a download must average
    `min_bytes_per_s` (0: no minimum). A dataset that comes in an archive (EMNIST) is
    extracted from the archive kept in `cache_dir`, downloaded only when it is not there.
    `files` replaces the dataset's own downloads (tests fetch small files with it).
    Raises MnistkitError when no mirror delivers a file.
    """
    spec = dataset_spec(dataset)
    out_dir = Path(out_dir)
    for mirror in mirrors:
        check_mirror(mirror)
    archive = spec.archive if files is None else None
    folder = out_dir if archive is None else Path(cache_dir) / spec.cache_folder
    with _removed_if_left_empty(folder), _removed_if_left_empty(out_dir):
        make_output_folder(folder)
        downloads = spec.downloads if files is None else files
        bounds = (timeout_s, min_bytes_per_s, progress)
        paths = _fetch_all(folder, downloads, mirrors, force, bounds, local_copy_hint(spec), log)
        if archive is None:
            return paths
        make_output_folder(out_dir)
        return extract_members(paths[0], spec.archive_prefix, list(spec.files.values()), out_dir, force, log)


@contextlib.contextmanager
def _removed_if_left_empty(folder: Path) -> Iterator[None]:
    """The folders a failed fetch made go again while nothing is in them, so a later `make`
    or script does not take an empty data/raw for a fetched one."""
    given, folder = folder, Path(os.path.abspath(folder))  # `missing/../raw` makes `missing`, not `raw`
    try:
        made = [path for path in (folder, *folder.parents) if not path.exists()]  # deepest first
    except OSError as error:  # a name over 255 bytes: File name too long
        raise MnistkitError(f"{given}: cannot create the folder ({error.strerror or error})") from None
    try:
        yield
    except BaseException:
        for path in made:
            try:
                path.rmdir()
            except OSError:
                break
        raise


def _fetch_all(
    folder: Path,
    downloads: Sequence[ExpectedFile],
    mirrors: Sequence[str],
    force: bool,
    bounds: tuple[float, float, Progress | None],
    hint: str,
    log: Log,
) -> list[Path]:
    """Look at every file already there first, then fetch: a folder holding another dataset's
    file is refused before anything is downloaded into it (its other files were fetched first,
    leaving the folder half one dataset's, half the other's)."""
    wanted, unfetchable = [], []  # to fetch; lines that stop the run, told all at the end
    for expected in downloads:
        target = folder / expected.name
        if target.exists() and not force:
            problem = file_problem(target, expected)
            if problem is None:
                log(f"{target}: already present and valid, not downloaded again")
                with contextlib.suppress(OSError):
                    _aside_name(target).unlink(missing_ok=True)  # a copy put in its place since
            elif isinstance(problem, AnotherDatasetsFile):
                unfetchable.append(
                    f"{target}: {problem}, not this dataset's; fetch into another folder "
                    f"(as make all does: data/NAME/raw), or give {setting('force', True)} to replace it"
                )
            elif not mirrors:  # kept: there is nothing to replace it with
                unfetchable.append(f"{target}: present but invalid ({problem}), and no mirror is given")
            else:
                wanted.append((expected, problem))
        elif not mirrors:  # only now: files already here need none (an offline job's cache)
            if target.exists():
                force_option = setting("force", True)
                raise MnistkitError(
                    f"{target}: {force_option} downloads it again, but no mirror is given to fetch it from"
                )
            unfetchable.append(f"{target}: missing, but no mirror is given to fetch it from")
        else:
            wanted.append((expected, None))
    if unfetchable:
        for line in unfetchable[:-1]:
            log(line)
        raise MnistkitError(unfetchable[-1])
    failed_mirrors: set[str] = set()
    for position, (expected, problem) in enumerate(wanted):
        target = folder / expected.name
        if problem is not None:
            moved = f"moved to {_moved_aside(target).name} until a verified copy comes"
            log(f"{target}: present but invalid ({problem}); {moved}")
        download = Download(expected, *bounds)
        _fetch_file(target, download, mirrors, failed_mirrors, position < len(wanted) - 1, hint, log)
        with contextlib.suppress(OSError):
            _aside_name(target).unlink(missing_ok=True)  # replaced by a verified copy
    return [folder / expected.name for expected in downloads]


def _aside_name(target: Path) -> Path:
    return target.with_name(fitting_name(target.name, len(INVALID_SUFFIX)) + INVALID_SUFFIX)


def _moved_aside(target: Path) -> Path:
    """Move an invalid file out of its name until a verified copy takes it: deleted first, a
    genuine copy that fails the check (KMNIST's, recompressed) was lost to a fetch that then
    failed; left in place, make (which fetches only what is missing) parsed it next."""
    if target.is_dir():
        raise MnistkitError(f"{target}: is a directory, expected a file path")
    aside = _aside_name(target)
    try:
        os.replace(target, aside)
    except OSError as error:
        raise MnistkitError(f"{target}: invalid, and cannot be moved aside ({error.strerror})") from None
    return aside


def _fetch_file(
    target: Path,
    download: Download,
    mirrors: Sequence[str],
    failed_mirrors: set[str],
    more_files: bool,
    hint: str,
    log: Log,
) -> None:
    """Fetch from the first mirror that delivers; add each remote one that fails, and each
    local folder that is not there, to `failed_mirrors` (a local folder's other failures cost
    nothing, and may concern one file)."""
    candidates = [mirror for mirror in mirrors if mirror not in failed_mirrors]
    failures = []
    for mirror in candidates:
        source = _source(mirror, download.expected.name)
        try:
            received_bytes = _download_with_retry(source, target, download)
        except MirrorFailure as failure:
            log(f"{target.name}: {source}: {failure}")
            failures.append((mirror, failure))
            continue
        log(f"{target}: fetched from {source} ({received_bytes} bytes, {verified_by(download.expected)})")
        for failed_mirror, failure in failures:
            if _is_remote(failed_mirror) or failure.unreachable:
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
    local_failures = [(mirror, failure) for mirror, failure in failures if not _is_remote(mirror)]
    local_wrong = [mirror for mirror, failure in local_failures if failure.wrong_file]
    # A local mirror given is no word of being offline: what it lacks is said instead.
    if local_wrong:  # the local copy was found, and is not this dataset's
        message += f"; the file of this name in {local_wrong[0]} is not this one (its line above says why)"
    elif local_failures:
        mirror, failure = local_failures[0]
        lacks = str(failure) == NO_SUCH_FILE  # named: EMNIST's folder lacked gzip.zip, not its members
        message += (
            f"; the local mirror {mirror} holds no {target.name}"
            if lacks
            else f"; the local mirror {mirror}: {failure}"
        )
    elif remote_failures and all(failure.unreachable for failure in remote_failures):
        message += f"; {hint}"
    raise MnistkitError(message)


def _source(mirror: str, name: str) -> str:
    if urlsplit(mirror).scheme:
        return mirror.rstrip("/") + "/" + name
    return str(Path(mirror) / name)


def _download_with_retry(source: str, target: Path, download: Download) -> int:
    """One retry for a failure that may be transient and came quickly (within half the
    timeout): a mirror that kept fetch waiting does not get a second wait."""
    started = time.monotonic()
    try:
        return _download(source, target, download)
    except MirrorFailure as failure:
        quick = time.monotonic() - started < download.timeout_s / 2
        if not (failure.retryable and quick):
            raise
        time.sleep(RETRY_DELAY_S)
    try:
        return _download(source, target, download)
    except MirrorFailure as failure:
        raise MirrorFailure(
            f"{failure} (2 attempts)", retryable=False, unreachable=failure.unreachable
        ) from None


def _download(source: str, target: Path, download: Download) -> int:
    """Stream one copy into a temp file beside `target`; rename it only once verified."""
    expected = download.expected
    with ProgressGuard(download.timeout_s, download.min_bytes_per_s) as guard:
        try:
            with (
                open_source(source, expected, opener(guard.watch), download.timeout_s) as (
                    stream,
                    announced_bytes,
                ),
                atomic_write(target, "w+b") as handle,
            ):
                received_bytes = copy_capped(stream, handle, download, announced_bytes, guard)
                handle.seek(0)
                problem = copy_problem(handle, expected)
                if problem is not None:
                    raise MirrorFailure(problem, retryable=False, wrong_file=True)
        except MirrorFailure:
            if guard.failure is not None:
                raise guard.failure from None
            raise
    return received_bytes
