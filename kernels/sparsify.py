"""``sparsify``: swap the masked ``nn.Linear`` layers of a pruned model for :class:`SparseLinear`."""

from __future__ import annotations

import copy

from torch import nn

from metaprune.errors import KernelError

from .sparse_linear import FORMAT_CHOICES, SparseLinear, effective_weight, sparsity_of


def is_pruned(linear: nn.Linear, min_sparsity: float) -> bool:
    """Whether ``linear`` is pruned: it carries a ``torch.nn.utils.prune`` mask or has >= ``min_sparsity`` zeros.

    The layers :func:`sparsify` swaps. (:func:`metaprune.prune.masks.is_masked` tests only for the mask.)
    """
    if hasattr(linear, "weight_mask") and hasattr(linear, "weight_orig"):
        return True
    return sparsity_of(effective_weight(linear)) >= min_sparsity


def sparsify(
    model: nn.Module, min_sparsity: float = 0.3, *, format: str = "auto", batch: int = 8,
    cpu_backend: str | None = None, inplace: bool = False,
) -> nn.Module:
    """Return ``model`` with every masked ``nn.Linear`` replaced by :meth:`SparseLinear.from_dense`.

    Convert on the device the model will run on: ``format="auto"`` picks Triton
    bitmap / N:M kernels on CUDA and, on CPU, dense or CSR by a timed probe at
    ``batch`` (``cpu_backend="dense"|"csr"`` forces the choice, for reproducible
    tests). Outputs equal the dense masked model's up to float rounding. The
    input model is left untouched unless ``inplace=True``.

    Raises:
        KernelError: bad options, or nothing to convert: no ``nn.Linear`` is masked or at least
            ``min_sparsity`` sparse (convolutions, e.g. of the pruned CNNs ``metaprune prune``
            writes, have no sparse kernel here and stay dense).
    """
    if not isinstance(model, nn.Module):
        raise KernelError(f"expected an nn.Module, got {type(model).__name__}")
    if not 0.0 <= min_sparsity <= 1.0:
        raise KernelError(f"min_sparsity must be in [0, 1], got {min_sparsity}")
    if format not in FORMAT_CHOICES:
        raise KernelError(f"unknown format {format!r}; choose one of {FORMAT_CHOICES}")
    if isinstance(model, nn.Linear):
        raise KernelError("sparsify expects a model containing Linear layers; use SparseLinear.from_dense for one layer")
    # Keyed by id so that a Linear shared by several parents becomes one shared SparseLinear.
    replacements = {
        id(module): SparseLinear.from_dense(module, format, batch=batch, cpu_backend=cpu_backend)
        for module in model.modules()
        if isinstance(module, nn.Linear) and is_pruned(module, min_sparsity)
    }
    if not replacements:
        raise KernelError(_nothing_to_sparsify(model, min_sparsity))
    if not inplace:
        # Pre-seeding the deepcopy memo swaps the layers during the copy, so the pruned Linears (whose
        # ``weight`` is a non-leaf tensor that deepcopy refuses) are never copied themselves.
        try:
            return copy.deepcopy(model, dict(replacements))
        except RuntimeError as error:
            raise KernelError(f"cannot copy the model ({error}); pass inplace=True or call prune.remove first") from error
    for name, module in list(model.named_modules(remove_duplicate=False)):
        if id(module) in replacements:
            parent_name, _, child_name = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child_name, replacements[id(module)])
    return model


def _nothing_to_sparsify(model: nn.Module, min_sparsity: float) -> str:
    """Why :func:`sparsify` would return ``model`` unchanged, naming what it can convert."""
    linears = [module for module in model.modules() if isinstance(module, nn.Linear)]
    masked_convs = sum(isinstance(module, nn.modules.conv._ConvNd) and hasattr(module, "weight_mask")
                       for module in model.modules())
    found = (f"{len(linears)} nn.Linear layer(s), the sparsest {max(sparsity_of(effective_weight(m)) for m in linears):.0%} "
             "zeros" if linears else "no nn.Linear layer")
    convs = (f"; its {masked_convs} pruned convolution(s) have no sparse kernel here and stay dense"
             if masked_convs else "")
    return (f"nothing to sparsify in {type(model).__name__}: sparsify converts masked nn.Linear layers or ones with "
            f">= {min_sparsity:.0%} zero weights, and found {found}{convs}; prune its Linear layers "
            "(--pattern unstructured or n:m) or lower min_sparsity")
