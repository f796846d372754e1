"""Environment settings of the zoo: cache folder, offline mode and default index.

``METAPRUNE_CACHE`` moves the cache (default ``~/.cache/metaprune``), ``METAPRUNE_OFFLINE=1``
forbids the network, ``METAPRUNE_INDEX`` points to another index file or URL.  They are read on
every call, not at import, so tests and long-lived processes can change them.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGED_INDEX = Path(__file__).with_name("index.json")
_TRUE_WORDS = {"1", "true", "yes", "on"}


def cache_root() -> Path:
    """The zoo cache folder: ``$METAPRUNE_CACHE`` or ``~/.cache/metaprune``."""
    configured = os.environ.get("METAPRUNE_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "metaprune"


def is_offline(offline: bool | None = None) -> bool:
    """An explicit ``offline`` argument wins; otherwise ``$METAPRUNE_OFFLINE`` decides."""
    if offline is not None:
        return bool(offline)
    return os.environ.get("METAPRUNE_OFFLINE", "").strip().lower() in _TRUE_WORDS


def index_location(index: str | Path | None = None) -> str | Path:
    """An explicit index wins; then ``$METAPRUNE_INDEX``; then the index shipped in the package."""
    if index is not None:
        return index
    return os.environ.get("METAPRUNE_INDEX") or PACKAGED_INDEX
