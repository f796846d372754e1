"""Pruning schedules by name: ``oneshot``, ``iterative``, ``gradual``, ``lottery``, ``regrow``.

Every schedule is a :class:`~metaprune.prune.schedule_base.Schedule`:
``schedule.run(model, pruner, train, flops_ratio, epochs)`` returns the pruned, fine-tuned model.

=============  =====================================================  ==========================
name           what it does                                           pruner
=============  =====================================================  ==========================
``oneshot``    prune to the target, fine-tune all epochs              any
``iterative``  ``steps`` rounds to :math:`r^{i/k}`, epochs split      any
``gradual``    cubic ratio schedule during fine-tuning                any
``lottery``    iterative + rewinding survivors to an early state      masks (unstructured, n:m)
``regrow``     gradual + prune-and-regrow of single weights           masks (unstructured, n:m)
=============  =====================================================  ==========================
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from metaprune.errors import ConfigError
from metaprune.prune.schedule_base import Pruner, Schedule, TrainFn, split_epochs
from metaprune.prune.schedule_gradual import Gradual, Regrow, drop_and_regrow, gradual_ratio
from metaprune.prune.schedule_steps import Iterative, Lottery, OneShot, rewind_weights
from metaprune.registry import Registry

#: Every schedule by name; a new one is added with ``SCHEDULES.register(name)`` on its class.
SCHEDULES: Registry[type[Schedule]] = Registry("schedule")
for _schedule in (OneShot, Iterative, Gradual, Lottery, Regrow):
    SCHEDULES.add(_schedule.name, _schedule)


def get_schedule(name: str, **options: Any) -> Schedule:
    """Build the schedule ``name`` (one of :data:`SCHEDULES`) with its ``options``.

    Options that only other schedules define (e.g. ``steps`` for ``gradual``) are ignored,
    so one set of command-line options serves every schedule; options no schedule defines
    are an error.
    """
    cls = SCHEDULES.get(name)
    known = {field.name for _, schedule in SCHEDULES.items() for field in fields(schedule)}
    unknown = set(options) - known
    if unknown:
        raise ConfigError(f"unknown schedule options {sorted(unknown)}; known: {sorted(known)}")
    own = {field.name for field in fields(cls)}
    return cls(**{key: value for key, value in options.items() if key in own})


__all__ = [
    "SCHEDULES", "Gradual", "Iterative", "Lottery", "OneShot", "Pruner", "Regrow", "Schedule", "TrainFn",
    "drop_and_regrow", "get_schedule", "gradual_ratio", "rewind_weights", "split_epochs",
]
