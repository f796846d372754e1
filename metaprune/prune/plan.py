"""PrunePlan: a re-applicable pruning recipe (JSON/YAML)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from metaprune.errors import ConfigError
from metaprune.schemas import Fraction, StrictModel, validate

PATTERNS = ("channel", "head", "unstructured", "n:m")
RANKINGS = ("global", "local", "knapsack")  # knapsack: importance per unit of cost (HALP, prune/knapsack.py)


class PlanSchema(StrictModel):
    """The fields of a plan file, typed (checked before a :class:`PrunePlan` is built)."""

    pattern: str
    keep_ratios: dict[str, Fraction] = {}
    criterion: str = "group_l2"
    ranking: str = "global"
    min_keep: Fraction = 0.1
    n_m: tuple[int, int] | None = None
    flops_ratio: Fraction | None = None


@dataclass
class PrunePlan:
    """Which group or layer keeps which fraction, and how.

    ``keep_ratios`` maps a prunable group (structured patterns: the group's root layer or
    attention module) or a layer (unstructured patterns) to the fraction of its channels,
    heads or weights that is kept. ``n_m`` is ``(n, m)`` for the ``n:m`` pattern (keep n of
    every m consecutive weights). Applying a plan to a model chooses *which* channels or
    weights to keep with ``criterion``.
    """

    pattern: str
    keep_ratios: dict[str, float] = field(default_factory=dict)
    criterion: str = "group_l2"
    ranking: str = "global"
    min_keep: float = 0.1
    n_m: tuple[int, int] | None = None
    flops_ratio: float | None = None

    def __post_init__(self) -> None:
        if self.pattern not in PATTERNS:
            raise ConfigError(f"unknown pattern {self.pattern!r}; choose one of {', '.join(PATTERNS)}")
        if self.ranking not in RANKINGS:
            raise ConfigError(f"unknown ranking {self.ranking!r}; choose one of {', '.join(RANKINGS)}")
        if not 0.0 < self.min_keep <= 1.0:
            raise ConfigError(f"min_keep must be in (0, 1], got {self.min_keep}")
        for name, ratio in self.keep_ratios.items():
            if not 0.0 < float(ratio) <= 1.0:
                raise ConfigError(f"keep ratio of {name!r} must be in (0, 1], got {ratio}")
        if self.pattern == "n:m":
            if self.n_m is None:
                raise ConfigError("the n:m pattern needs n_m=(n, m), e.g. (2, 4)")
            n, m = (int(value) for value in self.n_m)
            if not 0 < n < m:
                raise ConfigError(f"n:m needs 0 < n < m, got {n}:{m}")
            self.n_m = (n, m)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON/YAML ready)."""
        data = asdict(self)
        data["n_m"] = list(self.n_m) if self.n_m else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "plan") -> PrunePlan:
        """Inverse of :meth:`to_dict`; unknown keys, wrong types and non-finite numbers are an error
        naming ``source`` and the field."""
        if not isinstance(data, dict):
            raise ConfigError(f"a plan must be a mapping, got {type(data).__name__}")
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown plan fields {sorted(unknown)}; known: {sorted(known)}")
        fields = validate(PlanSchema, data, source)
        return cls(pattern=fields.pattern, keep_ratios=dict(fields.keep_ratios), criterion=fields.criterion,
                   ranking=fields.ranking, min_keep=fields.min_keep,
                   n_m=tuple(fields.n_m) if fields.n_m is not None else None, flops_ratio=fields.flops_ratio)

    def save(self, path: str | Path) -> Path:
        """Write as JSON (``.json``) or YAML (``.yaml``/``.yml``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix in (".yaml", ".yml"):
            path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        else:
            path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> PrunePlan:
        """Read a plan written by :meth:`save` (JSON or YAML)."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"plan file not found: {path}")
        try:
            text = path.read_bytes().decode("utf-8")
            data = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
        except UnicodeDecodeError as error:
            raise ConfigError(f"plan file {path} is not UTF-8 text (byte {error.start})") from None
        except (yaml.YAMLError, json.JSONDecodeError, RecursionError) as error:
            first = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise ConfigError(f"plan file {path} is not valid {path.suffix[1:].upper() or 'JSON'}: {first}") from None
        except OSError as error:
            raise ConfigError(f"cannot read plan file {path}: {error.strerror or error}") from None
        return cls.from_dict(data, source=f"plan file {path}")
