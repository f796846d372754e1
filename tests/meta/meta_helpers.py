"""Helpers of the meta-training tests: the tiny configuration every meta-training test uses."""

from __future__ import annotations

from metaprune.meta.training import MetaTrainConfig

#: Two epochs of two steps with a one-layer, eight-wide metanetwork: seconds on a CPU.
CONFIG = MetaTrainConfig(hidden=8, layers=1, epochs=2, steps_per_epoch=2, batch_size=32, val_speedup=2.0)
