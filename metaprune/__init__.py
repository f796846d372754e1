"""metaprune: learned meta-pruning and AutoML for PyTorch.

The front door, in a few lines::

    import metaprune
    pruned, report = metaprune.prune_model(model, example_inputs, speedup=2, train_data=loader, finetune_epochs=2)
    model = metaprune.load_run("runs/quickstart")          # a run directory written by `metaprune prune`

Entry points are imported lazily so that ``import metaprune`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from metaprune.errors import MetapruneError
from metaprune.version import __version__

if TYPE_CHECKING:
    from torch import nn

    from metaprune.prune.report import PruneReport

__all__ = ["MetapruneError", "__version__", "load_run", "prune_model"]


def load_run(run_dir: Any, model: Any = None) -> nn.Module:
    """Rebuild the pruned model of a run directory (safetensors + architecture.json, no pickle).

    ``model`` is a dense instance, needed only for architectures outside the model registry.
    See :func:`metaprune.prune.saving.load_run`.
    """
    from metaprune.prune.saving import load_run as load

    return load(run_dir, model=model)


def prune_model(model: nn.Module, example_inputs: Any, **options: Any) -> tuple[nn.Module, PruneReport]:
    """Prune a copy of ``model`` to a FLOPs budget; returns ``(pruned_model, report)``.

    See :func:`metaprune.workflows.api.prune_model` for every option (``budget``/``speedup``,
    ``pattern``, ``criterion``, ``train_data``, ``finetune_epochs``, ...).
    """
    from metaprune.workflows.api import prune_model as prune

    return prune(model, example_inputs, **options)
