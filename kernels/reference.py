"""Plain PyTorch references for the sparse kernels, and the input checks they share.

Convention for every kernel here: activations ``x`` are ``[batch, in_features]``
(the ``nn.Linear`` layout) and the result is ``y = x W^T`` of shape
``[batch, out_features]``, i.e. ``y^T = W x^T``. References decode the weight
and multiply in float32, the precision the kernels accumulate in, then cast
back to ``x.dtype``.
"""

from __future__ import annotations

import torch

from metaprune.errors import KernelError

from .formats import BitmapWeight, NMWeight, SparseFormat


def check_activations(weight: SparseFormat, x: torch.Tensor) -> None:
    """Raise :class:`KernelError` unless ``x`` is ``[batch, in_features]`` with the weight's dtype and device."""
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise KernelError(f"expected activations of shape [batch, in_features], got {shape}")
    if x.shape[1] != weight.shape[1]:
        raise KernelError(f"x has {x.shape[1]} features but the weight expects {weight.shape[1]}")
    if x.dtype != weight.dtype or x.device != weight.device:
        raise KernelError(
            f"x is {x.dtype} on {x.device} but the weight is {weight.dtype} on {weight.device}; convert one of them"
        )


def spmm_reference(weight: SparseFormat, x: torch.Tensor) -> torch.Tensor:
    """``y = x W^T`` for any format, through its dense decoding (float32 accumulation)."""
    check_activations(weight, x)
    return (x.float() @ weight.to_dense().float().T).to(x.dtype)


def bitmap_spmm_reference(weight: BitmapWeight, x: torch.Tensor) -> torch.Tensor:
    """Reference for :func:`metaprune.kernels.triton_bitmap.bitmap_spmm`."""
    if not isinstance(weight, BitmapWeight):
        raise KernelError(f"expected a BitmapWeight, got {type(weight).__name__}")
    return spmm_reference(weight, x)


def nm_spmm_reference(weight: NMWeight, x: torch.Tensor) -> torch.Tensor:
    """Reference for :func:`metaprune.kernels.triton_nm.nm_spmm`."""
    if not isinstance(weight, NMWeight):
        raise KernelError(f"expected an NMWeight, got {type(weight).__name__}")
    return spmm_reference(weight, x)
