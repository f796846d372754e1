"""The zoo registry: a JSON index of pruned models, validated against a small schema.

An index file reads::

    {"schema_version": 1,
     "entries": [{"name": "resnet20-digits-channel-50", "task": "image-classification",
                  "architecture": "resnet20", "dataset": "digits", "pattern": "channel",
                  "flops": {"dense": 41000000, "pruned": 20500000},
                  "params": {"dense": 270000, "pruned": 140000},
                  "metrics": {"dense": {"test_accuracy": 0.98, ...}, "pruned": {...}},
                  "files": [{"name": "model.safetensors", "sha256": "<64 hex>", "size": 1234}],
                  "base_url": "resnet20-digits-channel-50/",
                  "recipe": {"plan": {...}, "command": "metaprune prune ..."},
                  "license": "Apache-2.0", "metaprune_version": "0.1.0"}]}

A file's URL is its own ``url`` if present, else ``base_url`` + its name; relative URLs are
resolved against the index's own location.  Every name is checked by :mod:`metaprune.zoo.names`.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metaprune.errors import ZooError
from metaprune.rundir import write_text
from metaprune.zoo.loaders import entry_kind, entry_patterns
from metaprune.zoo.names import check_entry_name, check_file_name
from metaprune.zoo.settings import cache_root, index_location, is_offline
from metaprune.zoo.urls import is_remote, join_url, local_path, location_url

SCHEMA_VERSION = 1
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_INDEX_TIMEOUT_S = 30.0


def _field(data: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    """``data[key]`` checked for presence and type, with an error naming where it sits."""
    if key not in data:
        raise ZooError(f"{where}: missing required field {key!r}")
    value = data[key]
    # bool is an int subclass, but True is never a valid size or FLOPs count.
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
        expected = " or ".join(t.__name__ for t in _as_tuple(kind))
        raise ZooError(f"{where}: field {key!r} must be {expected}, got {type(value).__name__}")
    return value


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _dense_pruned_ints(data: dict[str, Any], key: str, where: str) -> dict[str, int]:
    pair = _field(data, key, dict, where)
    return {side: _non_negative(_field(pair, side, int, f"{where}.{key}"), f"{where}.{key}.{side}") for side in ("dense", "pruned")}


def _non_negative(value: int, where: str) -> int:
    if value < 0:
        raise ZooError(f"{where} must be >= 0, got {value}")
    return value


@dataclass(frozen=True)
class FileRecord:
    """One file of an entry: relative name, sha256 (hex), size in bytes, optional own URL."""

    name: str
    sha256: str
    size: int
    url: str | None = None

    @classmethod
    def from_dict(cls, data: Any, where: str) -> FileRecord:
        """Validate one ``files`` item of the index."""
        if not isinstance(data, dict):
            raise ZooError(f"{where}: each file must be an object with name, sha256 and size")
        name = check_file_name(_field(data, "name", str, where))
        digest = _field(data, "sha256", str, where).lower()
        if not _SHA256.match(digest):
            raise ZooError(f"{where}: sha256 of {name!r} must be 64 hex digits, got {digest!r}")
        size = _non_negative(_field(data, "size", int, where), f"{where}.size")
        url = _field(data, "url", str, where) if "url" in data else None
        return cls(name=name, sha256=digest, size=size, url=url)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form written to an index."""
        data: dict[str, Any] = {"name": self.name, "sha256": self.sha256, "size": self.size}
        if self.url is not None:
            data["url"] = self.url
        return data


@dataclass(frozen=True)
class Entry:
    """One pruned model of the zoo, with its measured metrics, files and reproduction recipe."""

    name: str
    task: str
    architecture: str
    dataset: str
    pattern: str
    flops: dict[str, int]
    params: dict[str, int]
    metrics: dict[str, dict[str, float]]
    files: tuple[FileRecord, ...]
    recipe: dict[str, Any]
    license: str
    metaprune_version: str
    base_url: str | None = None
    index_url: str = field(default="", compare=False)

    @classmethod
    def from_dict(cls, data: Any, index_url: str) -> Entry:
        """Validate one index entry; ``index_url`` is where relative URLs are resolved from."""
        if not isinstance(data, dict):
            raise ZooError("index: each entry must be a JSON object")
        where = f"index entry {data.get('name', '?')!r}"
        name = check_entry_name(_field(data, "name", str, where))
        pattern = _field(data, "pattern", str, where)
        if pattern not in entry_patterns():
            raise ZooError(f"{where}: pattern must be one of {entry_patterns()}, got {pattern!r}")
        files = tuple(FileRecord.from_dict(item, f"{where} file") for item in _field(data, "files", list, where))
        _check_unique([record.name for record in files], f"{where}: duplicate file name")
        base_url = _field(data, "base_url", str, where) if "base_url" in data else None
        if base_url is None and any(record.url is None for record in files):
            raise ZooError(f"{where}: every file needs a 'url' unless the entry has a 'base_url'")
        recipe = _field(data, "recipe", dict, where)
        _field(recipe, "command", str, f"{where}.recipe")
        _field(recipe, "plan", dict, f"{where}.recipe")
        metrics = _field(data, "metrics", dict, where)
        for side in ("dense", "pruned"):
            for metric, value in _field(metrics, side, dict, f"{where}.metrics").items():
                if not isinstance(value, (int, float)) or isinstance(value, bool):
                    raise ZooError(f"{where}.metrics.{side}.{metric} must be a number, got {value!r}")
        return cls(
            name=name,
            task=_field(data, "task", str, where),
            architecture=_field(data, "architecture", str, where),
            dataset=_field(data, "dataset", str, where),
            pattern=pattern,
            flops=_dense_pruned_ints(data, "flops", where),
            params=_dense_pruned_ints(data, "params", where),
            metrics=metrics,
            files=files,
            recipe=recipe,
            license=_field(data, "license", str, where),
            metaprune_version=_field(data, "metaprune_version", str, where),
            base_url=base_url,
            index_url=index_url,
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form written to an index (``index_url`` is where it was read, so it is left out)."""
        data: dict[str, Any] = {
            "name": self.name, "task": self.task, "architecture": self.architecture,
            "dataset": self.dataset, "pattern": self.pattern, "flops": self.flops,
            "params": self.params, "metrics": self.metrics,
            "files": [record.to_dict() for record in self.files],
            "recipe": self.recipe, "license": self.license, "metaprune_version": self.metaprune_version,
        }
        if self.base_url is not None:
            data["base_url"] = self.base_url
        return data

    def url_of(self, record: FileRecord) -> str:
        """Absolute URL of one of this entry's files."""
        relative = record.url if record.url is not None else (self.base_url or "") + record.name
        return join_url(self.index_url, relative)

    def file(self, name: str) -> FileRecord:
        """The record of the file called ``name``."""
        for record in self.files:
            if record.name == name:
                return record
        raise ZooError(f"entry {self.name!r} has no file {name!r}; it has {[r.name for r in self.files]}")


def _check_unique(names: list[str], message: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ZooError(f"{message} {name!r}")
        seen.add(name)


@dataclass(frozen=True)
class Index:
    """A validated registry: its entries and the URL it was read from."""

    entries: tuple[Entry, ...]
    url: str

    def get(self, name: str) -> Entry:
        """The entry called ``name``, or a :class:`ZooError` suggesting close names."""
        check_entry_name(name)
        for entry in self.entries:
            if entry.name == name:
                return entry
        names = [entry.name for entry in self.entries]
        close = difflib.get_close_matches(name, names, n=3)
        hint = f"did you mean {close}?" if close else f"available: {names or 'none'}"
        raise ZooError(f"no zoo entry named {name!r} in index {self.url}; {hint}")


def parse_index(text: str, url: str) -> Index:
    """Parse and validate the JSON text of an index read from ``url``."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ZooError(f"index {url} is not valid JSON: {error}") from error
    if not isinstance(data, dict):
        raise ZooError(f"index {url} must be a JSON object with 'schema_version' and 'entries'")
    version = _field(data, "schema_version", int, f"index {url}")
    if version != SCHEMA_VERSION:
        raise ZooError(f"index {url} has schema_version {version}; this metaprune reads version {SCHEMA_VERSION}")
    entries = tuple(Entry.from_dict(item, url) for item in _field(data, "entries", list, f"index {url}"))
    _check_unique([entry.name for entry in entries], f"index {url}: duplicate entry name")
    return Index(entries=entries, url=url)


def index_to_json(entries: list[Entry] | tuple[Entry, ...]) -> str:
    """Serialise entries as index JSON text (sorted by name so diffs stay small)."""
    ordered = sorted(entries, key=lambda entry: entry.name)
    return json.dumps({"schema_version": SCHEMA_VERSION, "entries": [e.to_dict() for e in ordered]}, indent=2) + "\n"


def write_index(path: Path, entries: list[Entry] | tuple[Entry, ...]) -> None:
    """Write an index file atomically."""
    write_text(path, index_to_json(entries))


def _cached_index_path(url: str) -> Path:
    return cache_root() / "indexes" / f"{hashlib.sha256(url.encode()).hexdigest()[:24]}.json"


def _read_remote_index(url: str, offline: bool) -> str:
    """Text of a remote index: fetched and cached when online, read from the cache when offline."""
    cached = _cached_index_path(url)
    if offline:
        if not cached.exists():
            raise ZooError(f"offline mode: index {url} has never been fetched, so it is not in the cache "
                           f"{cached.parent}; fetch it once online or point METAPRUNE_INDEX to a local file")
        return cached.read_text(encoding="utf-8")
    try:
        with urllib.request.urlopen(url, timeout=_INDEX_TIMEOUT_S) as response:
            text = response.read().decode("utf-8")
    except (urllib.error.URLError, OSError) as error:
        raise ZooError(f"cannot fetch index {url}: {error}; set METAPRUNE_OFFLINE=1 to use the cached copy") from error
    write_text(cached, text)
    return text


def load_index(index: str | Path | None = None, *, offline: bool | None = None) -> Index:
    """Load and validate an index from a path or URL (default: ``$METAPRUNE_INDEX`` or the packaged one)."""
    url = location_url(index_location(index))
    if is_remote(url):
        text = _read_remote_index(url, is_offline(offline))
    else:
        path = local_path(url)
        if not path.is_file():
            raise ZooError(f"index file {path} does not exist; check the path or METAPRUNE_INDEX")
        text = path.read_text(encoding="utf-8")
    return parse_index(text, url)


def list_entries(task: str | None = None, pattern: str | None = None, *, index: str | Path | None = None,
                 offline: bool | None = None) -> list[Entry]:
    """Entries of the index, optionally only those of one ``task`` and/or sparsity ``pattern``."""
    if pattern is not None:
        entry_kind(pattern)  # an unknown pattern is an error, not an empty list
    return [
        entry for entry in load_index(index, offline=offline).entries
        if (task is None or entry.task == task) and (pattern is None or entry.pattern == pattern)
    ]


def info(name: str, *, index: str | Path | None = None, offline: bool | None = None) -> Entry:
    """The index entry called ``name``."""
    return load_index(index, offline=offline).get(name)
