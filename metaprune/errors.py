"""The exception hierarchy of metaprune.

Every public function validates its inputs and raises a subclass of
:class:`MetapruneError` whose message says what was wrong and what to do.
The CLI prints such errors as one line and exits non-zero.
"""

from __future__ import annotations


class MetapruneError(Exception):
    """Base class of every error metaprune raises on purpose."""


class BudgetError(MetapruneError, ValueError):
    """A FLOPs budget or speed-up outside its valid range."""


class ConfigError(MetapruneError, ValueError):
    """An unknown name (model, criterion, method, pattern) or a bad option value."""


class DataError(MetapruneError):
    """A missing or malformed dataset path or file."""


class ModelError(MetapruneError):
    """A model that cannot be built, traced or rebuilt."""


class WeightsError(MetapruneError):
    """A weights or run-directory file that is missing, corrupt or mismatched."""


class PruneError(MetapruneError):
    """A pruning plan that cannot be applied to a model."""


class GraphError(MetapruneError):
    """A network that cannot be converted to or from a graph (e.g. unsupported op)."""


class SearchError(MetapruneError):
    """A search that cannot run or resume."""


class ZooError(MetapruneError):
    """A zoo registry, cache or download problem."""


class ChecksumError(ZooError):
    """A downloaded or cached file whose sha256 does not match the registry."""


class KernelError(MetapruneError):
    """A sparse format or kernel that cannot handle its input."""
