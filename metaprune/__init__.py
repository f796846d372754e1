"""metaprune: learned meta-pruning and AutoML for PyTorch.

Public entry points are imported lazily so that ``import metaprune`` stays cheap.
"""

from __future__ import annotations

from typing import Any

from metaprune.errors import MetapruneError

__version__ = "0.1.0"
__all__ = ["MetapruneError", "__version__", "load"]


def load(run_dir: Any, model: Any = None) -> Any:
    """Rebuild a pruned model from a run directory (safetensors + architecture.json, no pickle).

    See :func:`metaprune.prune.saving.load_run`.
    """
    from metaprune.prune.saving import load_run

    return load_run(run_dir, model=model)
