"""Verified, resumable, atomic download of one file.

An ``hf://`` file is fetched by ``huggingface_hub`` into the Hub cache (:mod:`metaprune.zoo.hub`:
resumable, revisions, token, endpoint, offline) and copied into place once its size and sha256
match. Our own transfer code below serves only plain mirrors (``file://``, ``http(s)://``):

The bytes go to ``<dest>.part``; an interrupted transfer is resumed with an HTTP ``Range``
request (a server that answers ``200`` instead of ``206`` restarts the file from zero).  Only
when the whole ``.part`` file has the expected size and sha256 is it moved onto ``dest`` with
``os.replace``, so ``dest`` is either absent or verified; a checksum mismatch deletes the
partial file and raises :class:`ChecksumError`.

The cache may be shared, so nothing in it is followed blindly: ``.part`` files are opened with
``O_NOFOLLOW`` and must be regular files, and a ``dest`` that is a symlink or not a regular file
is refused (:func:`check_regular_or_absent`). A planted ``<file>.part -> ~/.bashrc`` therefore
raises :class:`ZooError` instead of truncating or appending to its target.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import stat
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from metaprune.errors import ChecksumError, ZooError
from metaprune.rundir import atomic_path
from metaprune.version import __version__
from metaprune.zoo import hub
from metaprune.zoo.urls import local_path

CHUNK_BYTES = 1 << 16
PROGRESS_MIN_BYTES = 8 << 20
TIMEOUT_S = 30.0
RETRY_DELAY_S = 0.2
# Errors that mean "the transfer broke, the server is there": worth resuming.
_TRANSIENT = (http.client.HTTPException, ConnectionError, TimeoutError)


class _Interrupted(Exception):
    """The stream ended before the expected number of bytes arrived."""


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # opening a planted FIFO must not block


def check_regular_or_absent(path: Path) -> bool:
    """True if ``path`` is a regular file, False if nothing is there; :class:`ZooError` for a symlink or non-file.

    Uses ``lstat``, so a symlink is reported as such and never followed.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(mode):
        raise ZooError(f"{path} is a symlink where the zoo cache expects a plain file; refusing to follow it "
                       "(delete it if you did not put it there)")
    if not stat.S_ISREG(mode):
        raise ZooError(f"{path} is not a regular file where the zoo cache expects one; delete it to pull again")
    return True


def open_regular(path: Path, flags: int) -> BinaryIO:
    """``path`` opened with ``flags`` plus ``O_NOFOLLOW``, checked with ``fstat`` to be a regular file.

    Raises:
        ZooError: ``path`` is a symlink, a FIFO, a folder or another non-file.
    """
    mode = {os.O_RDONLY: "rb", os.O_WRONLY: "wb"}[flags & (os.O_RDONLY | os.O_WRONLY | os.O_RDWR)]
    try:
        descriptor = os.open(path, flags | _NOFOLLOW | _NONBLOCK, 0o644)
    except OSError as error:
        if os.path.islink(path):
            raise ZooError(f"{path} is a symlink where the zoo cache expects a plain file; refusing to follow it "
                           "(delete it if you did not put it there)") from error
        raise
    stream = os.fdopen(descriptor, mode)
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        stream.close()
        raise ZooError(f"{path} is not a regular file where the zoo cache expects one; delete it to pull again")
    return stream


def _sha256_stream(stream: BinaryIO) -> str:
    digest = hashlib.sha256()
    while chunk := stream.read(CHUNK_BYTES):
        digest.update(chunk)
    return digest.hexdigest()


def sha256_file(path: Path, *, follow_symlinks: bool = True) -> str:
    """Hex sha256 of a file, read in chunks (``follow_symlinks=False``: refuse a symlink or non-file)."""
    if not follow_symlinks:
        with open_regular(path, os.O_RDONLY) as stream:
            return _sha256_stream(stream)
    with path.open("rb") as stream:
        return _sha256_stream(stream)


def file_matches(path: Path, sha256: str, size: int) -> bool:
    """True when the regular file ``path`` has exactly ``size`` bytes and the given sha256 (size first: cheap).

    Raises:
        ZooError: ``path`` is a symlink or not a regular file.
    """
    check_regular_or_absent(path)
    return path.stat().st_size == size and sha256_file(path, follow_symlinks=False) == sha256


@contextmanager
def _open_from(url: str, start: int) -> Iterator[tuple[BinaryIO, int]]:
    """Open ``url`` for reading from byte ``start``; yields the stream and the offset it really starts at."""
    if url.startswith("file:"):
        with local_path(url).open("rb") as stream:
            stream.seek(start)
            yield stream, start
        return
    headers = {"User-Agent": f"metaprune/{__version__}"}
    if start:
        headers["Range"] = f"bytes={start}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S)
    except urllib.error.HTTPError as error:
        if error.code == 416 and start:  # the partial file is longer than the resource: start over
            with _open_from(url, 0) as opened:
                yield opened
            return
        raise ZooError(f"download of {url} failed: HTTP {error.code} {error.reason}") from error
    except urllib.error.URLError as error:
        raise ZooError(f"cannot reach {url}: {error.reason}; set METAPRUNE_OFFLINE=1 to use the cache only") from error
    with response:
        content_range = response.headers.get("Content-Range", "")
        if response.status == 206 and not content_range.startswith(f"bytes {start}-"):
            raise ZooError(f"{url} answered a request for bytes {start}- with {content_range!r}; cannot resume")
        # 200 means the server ignored Range and sends the whole file: restart from zero.
        yield response, start if response.status == 206 else 0


@contextmanager
def _progress(label: str, total: int, done: int, enabled: bool) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr for large files; yields ``advance(n_bytes)``."""
    if not enabled:
        yield lambda n_bytes: None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    console = Console(stderr=True)
    # On a terminal the bar vanishes when done; in a log the final line stays as a record.
    with Progress(*columns, console=console, transient=console.is_terminal) as bar:
        task = bar.add_task(label, total=total, completed=done)
        yield lambda n_bytes: bar.advance(task, n_bytes)


def _fetch_into(url: str, part: Path, size: int, show_progress: bool) -> int:
    """Append the rest of ``url`` to ``part``; returns the offset it resumed from (0 = fresh)."""
    start = part.stat().st_size if check_regular_or_absent(part) else 0
    if start > size:
        start = 0
    if start == size and size:
        return start
    with _open_from(url, start) as (stream, offset):
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if offset else os.O_TRUNC)
        with open_regular(part, flags) as out, _progress(part.stem, size, offset, show_progress) as advance:
            written = offset
            while written < size and (chunk := stream.read(min(CHUNK_BYTES, size - written))):
                out.write(chunk)
                written += len(chunk)
                advance(len(chunk))
            # A server sending more than the registry says is as wrong as a short one.
            if written == size and stream.read(1):
                raise ChecksumError(f"{url} is longer than the {size} bytes the registry records")
    if written < size:
        raise _Interrupted(f"got {written} of {size} bytes")
    return offset


def download_file(url: str, dest: Path, *, sha256: str, size: int, retries: int = 3,
                  progress: bool | None = None) -> Path:
    """Download ``url`` to ``dest``, resuming on interruption and verifying before it lands.

    Args:
        url: ``file://``, ``http(s)://`` or ``hf://`` URL (the last through ``huggingface_hub``).
        dest: final path; its parent is created.
        sha256: expected hex digest of the whole file.
        size: expected size in bytes.
        retries: how many times a broken transfer is resumed before giving up.
        progress: show a progress bar (default: only for files of 8 MiB or more).

    Raises:
        ChecksumError: the complete file has another sha256; nothing is left behind.
        ZooError: unreachable URL, HTTP error, or still incomplete after ``retries`` resumes
            (the ``.part`` file is kept so a later call resumes it).
    """
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    check_regular_or_absent(dest)
    check_regular_or_absent(part)
    if hub.is_hf(url):
        return _copy_from_hub(url, dest, sha256=sha256, size=size)
    show_progress = size >= PROGRESS_MIN_BYTES if progress is None else progress
    for attempt in range(retries + 1):
        try:
            resumed_from = _fetch_into(url, part, size, show_progress)
            break
        except (_Interrupted, *_TRANSIENT) as error:
            if attempt == retries:
                raise ZooError(f"download of {url} stopped short {retries + 1} times ({error}); the partial file "
                               f"{part} is kept and the next pull resumes it") from error
            time.sleep(RETRY_DELAY_S * (attempt + 1))
        except ChecksumError:
            part.unlink(missing_ok=True)
            raise
    if sha256_file(part, follow_symlinks=False) != sha256:
        part.unlink()
        if resumed_from:  # the old partial bytes may be what was wrong: one clean attempt
            return download_file(url, dest, sha256=sha256, size=size, retries=retries, progress=progress)
        raise ChecksumError(f"sha256 of {url} does not match the registry (expected {sha256}); "
                            "the file was discarded — the source is corrupt or the index is out of date")
    os.replace(part, dest)
    return dest


def _copy_from_hub(url: str, dest: Path, *, sha256: str, size: int) -> Path:
    """Fetch ``url`` with the Hub client (its cache) and copy it onto ``dest`` if size and sha256 match."""
    cached = hub.fetch(url)
    if cached.stat().st_size != size or sha256_file(cached) != sha256:
        raise ChecksumError(f"sha256 of {url} (Hugging Face cache file {cached}) does not match the registry "
                            f"(expected {sha256}, {size} bytes); the revision changed or the index is out of date — "
                            "pin a revision with hf://owner/repo@REVISION/...")
    with atomic_path(dest) as part:
        shutil.copyfile(cached, part)
    return dest


def copy_verified(source: Path, dest: Path) -> tuple[str, int]:
    """Copy ``source`` to ``dest`` atomically; returns the copy's (sha256, size) as published."""
    with atomic_path(dest) as part:
        shutil.copyfile(source, part)
        digest, size = sha256_file(part), part.stat().st_size
    return digest, size
