"""The metaprune model zoo: a registry of pruned models, verified downloads, cache and publishing.

Offline-first and never trusting an unverified file::

    from metaprune import zoo
    zoo.list_entries(pattern="channel")
    folder = zoo.pull("resnet20-digits-channel-f50")      # sha256-checked, cached, resumable
    model = zoo.load_entry("resnet20-digits-channel-f50") # nn.Module, no pickle
    zoo.verify("resnet20-digits-channel-f50").passed      # accuracy and FLOPs match the card
    zoo.publish("runs/my-run", "my-zoo/")                 # files + checksums + card + index

Environment: ``METAPRUNE_CACHE`` (cache folder), ``METAPRUNE_OFFLINE=1`` (no network),
``METAPRUNE_INDEX`` (another index file or URL).

Each entry's ``pattern`` picks its kind (:mod:`metaprune.zoo.loaders`): the files it holds, how it
loads and whether it can be verified; a new kind is one ``ENTRY_KINDS.add(name, EntryKind(...))``.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from metaprune.errors import ChecksumError, ZooError

if TYPE_CHECKING:
    from metaprune.zoo.cache import entry_cache_dir, pull, pull_entry, verify_files
    from metaprune.zoo.card import make_card
    from metaprune.zoo.download import download_file, sha256_file
    from metaprune.zoo.loaders import ENTRY_KINDS, EntryKind, entry_kind
    from metaprune.zoo.publish import publish
    from metaprune.zoo.registry import Entry, FileRecord, Index, info, list_entries, load_index
    from metaprune.zoo.verify import Tolerance, VerifyResult, load_entry, verify

# The names load on first use: ``metaprune --help`` and ``metaprune zoo list`` need neither torch nor matplotlib.
_MODULE_OF = {
    **dict.fromkeys(("entry_cache_dir", "pull", "pull_entry", "verify_files"), "cache"),
    "make_card": "card", "download_file": "download", "sha256_file": "download",
    **dict.fromkeys(("ENTRY_KINDS", "EntryKind", "entry_kind"), "loaders"),
    "publish": "publish",
    **dict.fromkeys(("Entry", "FileRecord", "Index", "info", "list_entries", "load_index"), "registry"),
    **dict.fromkeys(("Tolerance", "VerifyResult", "load_entry", "verify"), "verify"),
}

__all__ = [
    "ENTRY_KINDS", "ChecksumError", "Entry", "EntryKind", "FileRecord", "Index", "Tolerance", "VerifyResult",
    "ZooError", "download_file", "entry_cache_dir", "entry_kind", "info", "list_entries", "load_entry",
    "load_index", "make_card", "publish", "pull", "pull_entry", "sha256_file", "verify", "verify_files",
]


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)


class _ZooPackage(types.ModuleType):
    """``zoo.publish`` and ``zoo.verify`` are the functions, not their modules: importing a submodule
    sets it as an attribute of this package, and the function of the same name takes its place."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _MODULE_OF.get(name) == name:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _ZooPackage
