"""The local cache of pulled entries: offline-first, verified, safe under concurrent pulls.

Layout under :func:`~metaprune.zoo.settings.cache_root`::

    entries/<name>/<file>        verified files (a download in flight is <file>.part)
    locks/<name>.lock            one file lock per entry (and per published zoo folder)
    indexes/<hash>.json          copies of remote indexes, for offline use

Every pull re-checks size and sha256 of the cached files: a file is trusted only after it has
been verified in this call. The cache may be shared with other users or processes, so it is read
without following links: a symlink or a non-file where a cached file, a ``.part`` file or a lock
file should be is refused with a :class:`ZooError` (never followed, truncated or appended to).
"""

from __future__ import annotations

from pathlib import Path

from filelock import FileLock, Timeout

from metaprune.errors import ChecksumError, ZooError
from metaprune.zoo.download import check_regular_or_absent, download_file, file_matches
from metaprune.zoo.loaders import entry_kind
from metaprune.zoo.names import check_entry_name, safe_join
from metaprune.zoo.registry import Entry, load_index
from metaprune.zoo.settings import cache_root, is_offline

LOCK_TIMEOUT_S = 600.0


def entry_cache_dir(name: str) -> Path:
    """The cache folder of entry ``name`` (which need not exist yet)."""
    root = cache_root() / "entries"
    root.mkdir(parents=True, exist_ok=True)
    return safe_join(root, check_entry_name(name))


def cache_lock(key: str) -> FileLock:
    """An inter-process lock named ``key`` (a safe name), kept in the cache so it never litters a zoo folder."""
    lock_path = cache_root() / "locks" / f"{check_entry_name(key)}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    check_regular_or_absent(lock_path)  # filelock opens it with O_NOFOLLOW too; this names the problem
    return FileLock(lock_path, timeout=LOCK_TIMEOUT_S)


def _remove_empty_dirs(directory: Path, stop: Path) -> None:
    """Remove ``directory`` and its empty parents up to (not including) ``stop``."""
    while directory != stop and directory.is_dir() and not any(directory.iterdir()):
        directory.rmdir()
        directory = directory.parent


def _pull_files(entry: Entry, offline: bool, progress: bool | None) -> Path:
    directory = entry_cache_dir(entry.name)
    missing = []
    for record in entry.files:
        dest = safe_join(directory, record.name)
        if check_regular_or_absent(dest):
            if file_matches(dest, record.sha256, record.size):
                continue
            if offline:
                raise ChecksumError(f"cached file {dest} does not match the registry's sha256; "
                                    f"pull {entry.name!r} online to replace it")
            dest.unlink()
        if offline:
            missing.append(record.name)
            continue
        try:
            download_file(entry.url_of(record), dest, sha256=record.sha256, size=record.size, progress=progress)
        except ChecksumError:
            _remove_empty_dirs(dest.parent, directory.parent)
            raise
    if missing:
        raise ZooError(f"offline mode: entry {entry.name!r} is not fully cached in {directory}; missing "
                       f"{missing}. Pull it once with the network (unset METAPRUNE_OFFLINE / offline=False)")
    return directory


def pull_entry(entry: Entry, *, offline: bool | None = None, progress: bool | None = None) -> Path:
    """Make ``entry`` present and verified in the cache; returns its folder.

    Cached files are re-verified; missing or stale ones are downloaded (unless offline), each
    checked against its sha256 before it is moved into place. An entry kind with a ``rebuild``
    step (:mod:`metaprune.zoo.loaders`) then makes its model from the verified files.  A per-entry file lock makes
    concurrent pulls of one entry wait for each other instead of corrupting it.

    Raises:
        ZooError: network failure, or (offline) files missing from the cache.
        ChecksumError: a downloaded file does not match the registry; it is not kept.
    """
    try:
        with cache_lock(entry.name):
            directory = _pull_files(entry, is_offline(offline), progress)
            rebuild = entry_kind(entry.pattern).rebuild
            if rebuild is not None:  # e.g. a base-relative entry: its model is made from the files + a package
                rebuild(directory)
            return directory
    except Timeout as error:
        raise ZooError(f"another process has held the lock on {entry.name!r} for {LOCK_TIMEOUT_S:.0f} s; "
                       f"if none is running, delete {error.lock_file}") from error


def pull(name: str, *, offline: bool | None = None, index: str | Path | None = None,
         progress: bool | None = None) -> Path:
    """Pull entry ``name`` of the index (default: ``$METAPRUNE_INDEX`` or the packaged one); see :func:`pull_entry`.

    Raises:
        ZooError: unknown entry or unsafe name, and everything :func:`pull_entry` raises.
    """
    entry = load_index(index, offline=is_offline(offline)).get(name)
    return pull_entry(entry, offline=offline, progress=progress)


def verify_files(name: str, *, index: str | Path | None = None) -> dict[str, str]:
    """Check the cached files of entry ``name`` against the registry without downloading anything.

    Returns ``{file name: status}`` with status ``"ok"``, ``"missing"`` or ``"mismatch"``
    (wrong size or sha256).  Use :func:`pull` to repair.
    """
    entry = load_index(index, offline=True).get(name)
    directory = entry_cache_dir(entry.name)
    with cache_lock(entry.name):
        status = {}
        for record in entry.files:
            path = safe_join(directory, record.name)
            if not check_regular_or_absent(path):
                status[record.name] = "missing"
            else:
                status[record.name] = "ok" if file_matches(path, record.sha256, record.size) else "mismatch"
    return status
