"""Latency, not FLOPs: measured latency tables, a latency predictor and latency budgets.

``profile_model`` / ``load_or_profile`` measure (or reuse) a model's :class:`LatencyTable` on this
machine; :class:`LatencyCostModel` predicts latency from per-group keep counts with the interface of
the FLOPs cost model, so structured pruning can allocate to a latency budget.
"""

from metaprune.latency.predictor import LatencyCostModel
from metaprune.latency.profile import ProfileSettings, load_or_profile, profile_model
from metaprune.latency.table import LatencyTable, TableKey
from metaprune.latency.timing import measure_ms

__all__ = ["LatencyCostModel", "LatencyTable", "ProfileSettings", "TableKey", "load_or_profile", "measure_ms",
           "profile_model"]
