"""Helpers of the meta-training tests: the tiny configuration every meta-training test uses."""

from __future__ import annotations

import pytest

from metaprune.meta.training import MetaHistory, MetaTrainConfig, MetaTrainer

#: Two epochs of two steps with a one-layer, eight-wide metanetwork: seconds on a CPU.
CONFIG = MetaTrainConfig(hidden=8, layers=1, epochs=2, steps_per_epoch=2, batch_size=32, val_speedup=2.0)


def interrupt_then_resume(config: MetaTrainConfig, population: tuple, splits, out, monkeypatch) -> MetaHistory:
    """Meta-train in ``out``, stop it right after the first epoch's checkpoint, resume it, and return the history."""
    root, networks = population
    original = MetaTrainer._checkpoint

    def crash_after_first_epoch(self, epoch):
        original(self, epoch)
        if epoch == 0:
            raise KeyboardInterrupt

    monkeypatch.setattr(MetaTrainer, "_checkpoint", crash_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        MetaTrainer(config, root, networks, splits, out).fit(progress=False)
    monkeypatch.setattr(MetaTrainer, "_checkpoint", original)
    trainer = MetaTrainer(config, root, networks, splits, out)
    assert trainer.resume() and trainer.start_epoch == 1
    return trainer.fit(progress=False)
