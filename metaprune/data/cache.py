"""Decoded image trees cached as uint8 tensors, keyed by what the tree holds.

Decoding 60,000 JPEG files takes seconds on every start; the decoded images of a tree fit in
one ``N x C x H x W`` uint8 tensor (150 MB for CIFAR-10) that loads in well under a second.
The cache file sits under ``$METAPRUNE_CACHE/data`` (default ``~/.cache/metaprune/data``, the
zoo's cache root), named after the tree's resolved path and the decoding options, and records
a *content key* in its safetensors metadata:

    key = sha256(format version, decoding options, [(relative path, size, mtime_ns) of every file])

A cache whose key differs from the tree's current key (files added, removed, rewritten or
touched, another image size, or a file copied over from other data) is rebuilt, never used.
Writes are atomic (:func:`metaprune.rundir.save_safetensors`), so an interrupted build leaves
no half file behind.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from metaprune.rundir import save_safetensors

#: Bump when the decoded layout changes, so that older cache files are rebuilt.
CACHE_FORMAT = "1"
CACHE_SUBDIRECTORY = "data"


def data_cache_dir() -> Path:
    """Where decoded data sets are cached: ``$METAPRUNE_CACHE/data`` or ``~/.cache/metaprune/data``."""
    configured = os.environ.get("METAPRUNE_CACHE")
    root = Path(configured).expanduser() if configured else Path.home() / ".cache" / "metaprune"
    return root / CACHE_SUBDIRECTORY


def content_key(root: Path, files: Sequence[Path], options: dict[str, object]) -> str:
    """The sha256 of the decoding ``options`` and every file's path relative to ``root``, size and mtime."""
    digest = hashlib.sha256(json.dumps({"format": CACHE_FORMAT, **options}, sort_keys=True).encode())
    prefix = len(str(root)) + 1  # files lie under root: their relative path is the rest of the string
    for path in files:
        stat = os.stat(path)
        digest.update(f"{str(path)[prefix:]}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def cache_file(root: Path, options: dict[str, object]) -> Path:
    """The cache file of the tree at ``root`` decoded with ``options`` (one per tree and options)."""
    identity = json.dumps({"root": str(root.resolve()), **options}, sort_keys=True)
    return data_cache_dir() / f"{root.resolve().name}-{hashlib.sha256(identity.encode()).hexdigest()[:16]}.safetensors"


def read_cached(path: Path, key: str) -> dict[str, torch.Tensor] | None:
    """The tensors of cache file ``path`` if its recorded key is ``key``; ``None`` if missing, stale or unreadable."""
    from safetensors import safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as handle:
            if (handle.metadata() or {}).get("key") != key:
                return None
            return {name: handle.get_tensor(name) for name in handle.keys()}
    except Exception:  # a truncated or foreign file is rebuilt, not trusted
        return None


def cached_tensors(root: Path, files: Sequence[Path], options: dict[str, object],
                   build: Callable[[], dict[str, torch.Tensor]], *, use_cache: bool = True) -> dict[str, torch.Tensor]:
    """``build()``'s tensors for the tree at ``root`` holding ``files``, from the cache when it is current.

    ``options`` are everything else the result depends on (image size, colour mode, ...). A
    missing, stale (other content key) or unreadable cache file is rebuilt and replaced.
    ``use_cache=False`` always builds and writes nothing.
    """
    if not use_cache:
        return build()
    key = content_key(root, files, options)
    path = cache_file(root, options)
    cached = read_cached(path, key)
    if cached is not None:
        return cached
    tensors = build()
    save_safetensors(path, tensors, metadata={"key": key, "format": CACHE_FORMAT, "root": str(root.resolve())})
    return tensors
