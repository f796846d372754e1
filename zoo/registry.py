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

from pydantic import field_validator, model_validator

from metaprune.errors import ZooError
from metaprune.rundir import write_text
from metaprune.zoo import hub
from metaprune.zoo.loaders import entry_kind, entry_patterns
from metaprune.zoo.names import check_entry_name, check_file_name
from metaprune.zoo.schemas import NonNegativeInt, Strict, parse_json_bytes, read_regular_file, validate
from metaprune.zoo.settings import cache_root, index_location, is_offline
from metaprune.zoo.urls import check_file_source, is_remote, join_url, local_path, location_url

SCHEMA_VERSION = 1
MAX_INDEX_BYTES = 16 << 20
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_INDEX_TIMEOUT_S = 30.0
_READ_CHUNK = 1 << 16


class FileSchema(Strict):
    """One ``files`` item of an index entry."""

    name: str
    sha256: str
    size: NonNegativeInt
    url: str | None = None

    @field_validator("name")
    @classmethod
    def _safe_name(cls, name: str) -> str:
        return _as_value_error(check_file_name, name)

    @field_validator("sha256")
    @classmethod
    def _hex_digest(cls, digest: str) -> str:
        digest = digest.lower()
        if not _SHA256.match(digest):
            raise ValueError("must be 64 hex digits")
        return digest


class DensePruned(Strict):
    """A ``{"dense": n, "pruned": n}`` pair of counts."""

    dense: NonNegativeInt
    pruned: NonNegativeInt


class RecipeSchema(Strict):
    """How the entry was made: the plan and the command."""

    plan: dict[str, Any]
    command: str


class EntrySchema(Strict):
    """One entry of an index."""

    name: str
    task: str
    architecture: str
    dataset: str
    pattern: str
    flops: DensePruned
    params: DensePruned
    metrics: dict[str, dict[str, float]]
    files: list[FileSchema]
    recipe: RecipeSchema
    license: str
    metaprune_version: str
    base_url: str | None = None

    @field_validator("name")
    @classmethod
    def _safe_name(cls, name: str) -> str:
        return _as_value_error(check_entry_name, name)

    @field_validator("pattern")
    @classmethod
    def _known_pattern(cls, pattern: str) -> str:
        if pattern not in entry_patterns():
            raise ValueError(f"pattern must be one of {entry_patterns()}, got {pattern!r}")
        return pattern

    @model_validator(mode="after")
    def _consistent(self) -> EntrySchema:
        missing = [side for side in ("dense", "pruned") if side not in self.metrics]
        if missing:
            raise ValueError(f"metrics lacks {missing}")
        _check_unique([record.name for record in self.files], "duplicate file name")
        if self.base_url is None and any(record.url is None for record in self.files):
            raise ValueError("every file needs a 'url' unless the entry has a 'base_url'")
        if entry_kind(self.pattern).verifiable:
            accuracy = self.metrics["pruned"].get("test_accuracy")
            if accuracy is None:
                raise ValueError("metrics.pruned lacks test_accuracy, which `zoo verify` checks")
            if not 0.0 <= accuracy <= 1.0:
                raise ValueError(f"metrics.pruned.test_accuracy must be in [0, 1], got {accuracy}")
        return self


class IndexHeader(Strict):
    """The top level of an index, checked before its entries (so a newer schema gets a clear message)."""

    schema_version: int
    entries: list[Any]


def _as_value_error(check: Any, value: str) -> str:
    """Run a name check that raises ZooError, as a pydantic validator (which wants ValueError)."""
    try:
        return check(value)
    except ZooError as error:
        raise ValueError(str(error)) from None


def _check_unique(names: list[str], message: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"{message} {name!r}")
        seen.add(name)


@dataclass(frozen=True)
class FileRecord:
    """One file of an entry: relative name, sha256 (hex), size in bytes, optional own URL."""

    name: str
    sha256: str
    size: int
    url: str | None = None

    @classmethod
    def from_schema(cls, data: FileSchema) -> FileRecord:
        """The record of a validated ``files`` item."""
        return cls(name=data.name, sha256=data.sha256, size=data.size, url=data.url)

    @classmethod
    def from_dict(cls, data: Any, where: str) -> FileRecord:
        """Validate one ``files`` item of an index (``where`` names it in errors)."""
        return cls.from_schema(validate(FileSchema, data, where))

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
    def from_schema(cls, data: EntrySchema, raw: dict[str, Any], index_url: str) -> Entry:
        """The entry of a validated index item (``raw`` is the same item as parsed, for the free-form parts)."""
        entry = cls(
            name=data.name, task=data.task, architecture=data.architecture, dataset=data.dataset,
            pattern=data.pattern, flops=data.flops.model_dump(), params=data.params.model_dump(),
            metrics={side: dict(figures) for side, figures in data.metrics.items()},
            files=tuple(FileRecord.from_schema(record) for record in data.files),
            recipe=raw["recipe"], license=data.license, metaprune_version=data.metaprune_version,
            base_url=data.base_url, index_url=index_url,
        )
        for record in entry.files:  # an index may only name files where it is allowed to (see urls.check_file_source)
            entry.url_of(record)
        return entry

    @classmethod
    def from_dict(cls, data: Any, index_url: str) -> Entry:
        """Validate one index entry; ``index_url`` is where relative URLs are resolved from."""
        name = data.get("name", "?") if isinstance(data, dict) else "?"
        schema = validate(EntrySchema, data, f"index entry {name!r}")
        return cls.from_schema(schema, data, index_url)

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
        """Absolute URL of one of this entry's files (refused if the index may not name it: see :mod:`urls`)."""
        relative = record.url if record.url is not None else (self.base_url or "") + record.name
        url = join_url(self.index_url, relative)
        check_file_source(self.index_url, url, f"entry {self.name!r} file {record.name!r}")
        return url

    def file(self, name: str) -> FileRecord:
        """The record of the file called ``name``."""
        for record in self.files:
            if record.name == name:
                return record
        raise ZooError(f"entry {self.name!r} has no file {name!r}; it has {[r.name for r in self.files]}")


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


def parse_index(text: str | bytes, url: str) -> Index:
    """Parse and validate the JSON text (or bytes) of an index read from ``url``.

    Raises:
        ZooError: over :data:`MAX_INDEX_BYTES`, not JSON (bad UTF-8, too deeply nested), another
            schema version, or an entry that breaks the schema (one line naming the field).
    """
    source = f"index {url}"
    if len(text) > MAX_INDEX_BYTES:
        raise ZooError(f"{source} is over the limit of {MAX_INDEX_BYTES:,} bytes")
    data = parse_json_bytes(text, source)
    header = validate(IndexHeader, data, source)
    if header.schema_version != SCHEMA_VERSION:
        raise ZooError(f"{source} has schema_version {header.schema_version}; "
                       f"this metaprune reads version {SCHEMA_VERSION}")
    entries = []
    for position, item in enumerate(header.entries):
        name = item.get("name") if isinstance(item, dict) else None
        where = f"{source}: entries[{position}]" + (f" ({name!r})" if isinstance(name, str) else "")
        entries.append(Entry.from_schema(validate(EntrySchema, item, where), item, url))
    names = [entry.name for entry in entries]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ZooError(f"{source}: duplicate entry name {duplicates[0]!r}")
    return Index(entries=tuple(entries), url=url)


def index_to_json(entries: list[Entry] | tuple[Entry, ...]) -> str:
    """Serialise entries as index JSON text (sorted by name so diffs stay small)."""
    ordered = sorted(entries, key=lambda entry: entry.name)
    return json.dumps({"schema_version": SCHEMA_VERSION, "entries": [e.to_dict() for e in ordered]}, indent=2) + "\n"


def write_index(path: Path, entries: list[Entry] | tuple[Entry, ...]) -> None:
    """Write an index file atomically."""
    write_text(path, index_to_json(entries))


def _cached_index_path(url: str) -> Path:
    return cache_root() / "indexes" / f"{hashlib.sha256(url.encode()).hexdigest()[:24]}.json"


def _bounded_read(response: Any, url: str, limit: int) -> bytes:
    """At most ``limit`` bytes of ``response``, read in chunks; a longer answer is refused, never buffered."""
    declared = response.headers.get("Content-Length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ZooError(f"index {url} is {int(declared):,} bytes, over the limit of {limit:,}")
    chunks, total = [], 0
    while chunk := response.read(min(_READ_CHUNK, limit + 1 - total)):
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:
            raise ZooError(f"index {url} is over the limit of {limit:,} bytes")
    return b"".join(chunks)


def _read_remote_index(url: str, offline: bool) -> bytes:
    """Bytes of a remote index: fetched (bounded) and cached when online, read from the cache when offline."""
    if hub.is_hf(url):  # the Hub client caches it (and reads only its cache when offline)
        path = hub.fetch(url, offline=offline)
        return read_regular_file(path.resolve(), MAX_INDEX_BYTES, "index")
    cached = _cached_index_path(url)
    if offline:
        if not cached.exists() and not cached.is_symlink():
            raise ZooError(f"offline mode: index {url} has never been fetched, so it is not in the cache "
                           f"{cached.parent}; fetch it once online or point METAPRUNE_INDEX to a local file")
        return read_regular_file(cached, MAX_INDEX_BYTES, "cached index")
    try:
        with urllib.request.urlopen(url, timeout=_INDEX_TIMEOUT_S) as response:
            raw = _bounded_read(response, url, MAX_INDEX_BYTES)
    except (urllib.error.URLError, OSError) as error:
        raise ZooError(f"cannot fetch index {url}: {error}; set METAPRUNE_OFFLINE=1 to use the cached copy") from error
    parse_index(raw, url)  # only a valid index is cached for offline use
    write_text(cached, raw.decode("utf-8"))
    return raw


def load_index(index: str | Path | None = None, *, offline: bool | None = None) -> Index:
    """Load and validate an index from a path or URL (default: ``$METAPRUNE_INDEX`` or the packaged one)."""
    url = location_url(index_location(index))
    if is_remote(url):
        raw = _read_remote_index(url, is_offline(offline))
    else:
        path = local_path(url)
        if not path.is_file():
            raise ZooError(f"index file {path} does not exist; check the path or METAPRUNE_INDEX")
        # A local index is the user's own choice (unlike files in the cache): a symlink to it is followed.
        raw = read_regular_file(path.resolve(), MAX_INDEX_BYTES, "index file")
    return parse_index(raw, url)


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
