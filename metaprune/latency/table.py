"""Latency tables: measured per-layer latency grids plus a whole-network calibration, as JSON.

A table belongs to one model architecture measured on one machine: :class:`TableKey` holds the
CPU model, runtime, threads, batch, input shape, versions and an architecture fingerprint, and
:meth:`LatencyTable.check_key` refuses a table measured under any other key (other hardware or
input size give other latencies; using them silently would make every budget wrong).

Every conv/linear layer has a :class:`LayerGrid`: its latency, measured in isolation, at a few
input widths times a few output widths; :meth:`LayerGrid.interpolate` is bilinear between them.
"""

from __future__ import annotations

import bisect
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from metaprune.errors import ConfigError

TABLE_FORMAT = 1


def cache_dir() -> Path:
    """Where tables are cached: ``$METAPRUNE_CACHE/latency`` (default ``~/.cache/metaprune/latency``),
    the cache folder the zoo uses."""
    configured = os.environ.get("METAPRUNE_CACHE")
    root = Path(configured).expanduser() if configured else Path.home() / ".cache" / "metaprune"
    return root / "latency"


@dataclass(frozen=True)
class TableKey:
    """What a latency table is valid for; any difference makes it invalid."""

    hardware: str
    runtime: str
    threads: int
    batch: int
    input_shape: tuple[int, ...]
    versions: str
    model: str
    statistic: str = "median"

    def differences(self, other: TableKey) -> list[str]:
        """``field: theirs (here: ours)`` for every field where ``other`` differs from this key."""
        mine, theirs = asdict(self), asdict(other)
        return [f"{name} {theirs[name]!r} (here: {mine[name]!r})" for name in mine if mine[name] != theirs[name]]

    def file_name(self) -> str:
        """A cache file name unique to this key."""
        import hashlib

        digest = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]
        return f"{self.model.split('@')[0]}-{self.runtime}-t{self.threads}-b{self.batch}-{digest}.json"


def _segment(points: list[int], value: float) -> tuple[int, int, float]:
    """Indices of the two grid points around ``value`` and the weight of the upper one (clamped to the grid)."""
    if len(points) == 1 or value <= points[0]:
        return 0, 0, 0.0
    if value >= points[-1]:
        return len(points) - 1, len(points) - 1, 0.0
    upper = bisect.bisect_right(points, value)
    lower = upper - 1
    return lower, upper, (value - points[lower]) / (points[upper] - points[lower])


@dataclass
class LayerGrid:
    """Latency (ms) of one layer at ``in_widths`` x ``out_widths`` channels (one width per axis
    when that width does not change; a depthwise layer's input width follows its output width)."""

    in_widths: list[int]
    out_widths: list[int]
    ms: list[list[float]]

    def interpolate(self, in_width: float, out_width: float) -> float:
        """Bilinear interpolation of the grid at (``in_width``, ``out_width``), clamped to its edges."""
        i0, i1, wi = _segment(self.in_widths, in_width)
        o0, o1, wo = _segment(self.out_widths, out_width)
        low = self.ms[i0][o0] * (1 - wo) + self.ms[i0][o1] * wo
        high = self.ms[i1][o0] * (1 - wo) + self.ms[i1][o1] * wo
        return low * (1 - wi) + high * wi


@dataclass
class LatencyTable:
    """The latency model of one architecture under one :class:`TableKey`.

    ``layers`` maps each conv/linear layer to its grid's signature in ``grids`` (layers of one
    shape share a grid); ``coefficients`` weigh the predictor's features (see
    :mod:`metaprune.latency.predictor`); ``calibration`` keeps every whole-network measurement the
    coefficients were fitted on, and ``validation`` the held-out ones that show the prediction error.
    """

    key: TableKey
    layers: dict[str, str]
    grids: dict[str, LayerGrid]
    coefficients: dict[str, float] = field(default_factory=lambda: {"layers": 1.0})
    dense_ms: float = 0.0
    calibration: list[dict[str, Any]] = field(default_factory=list)
    validation: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        data = asdict(self)
        data["key"]["input_shape"] = list(self.key.input_shape)
        return {"format": TABLE_FORMAT, **data}

    @classmethod
    def from_dict(cls, data: Any, source: str = "latency table") -> LatencyTable:
        """Inverse of :meth:`to_dict`; a malformed table is a ConfigError naming ``source``."""
        if not isinstance(data, dict) or data.get("format") != TABLE_FORMAT:
            raise ConfigError(f"{source} is not a metaprune latency table (format {TABLE_FORMAT})")
        try:
            key = dict(data["key"])
            key["input_shape"] = tuple(int(size) for size in key["input_shape"])
            return cls(TableKey(**key), dict(data["layers"]),
                       {name: LayerGrid(**grid) for name, grid in data["grids"].items()},
                       dict(data["coefficients"]), float(data["dense_ms"]), list(data.get("calibration", [])),
                       list(data.get("validation", [])))
        except (KeyError, TypeError, ValueError) as error:
            raise ConfigError(f"{source} is malformed: {type(error).__name__} {error}") from None

    def save(self, path: str | Path) -> Path:
        """Write the table as JSON (atomically)."""
        from metaprune.rundir import write_json

        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        """Read a table written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"latency table not found: {path}")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ConfigError(f"cannot read latency table {path}: {error}") from None
        return cls.from_dict(data, source=f"latency table {path}")

    def check_key(self, expected: TableKey, source: str = "the latency table") -> None:
        """ConfigError unless this table was measured under ``expected`` (same machine, runtime, threads,
        batch, input size, versions and architecture)."""
        differences = expected.differences(self.key)
        if differences:
            raise ConfigError(f"{source} was measured for {'; '.join(differences)}: its latencies do not hold here; "
                              "run `metaprune profile` on this machine with these settings")
