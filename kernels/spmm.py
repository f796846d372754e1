"""One entry point, :func:`spmm`, that runs ``y = x W^T`` for any format on its device.

Dispatch (``x`` is ``[batch, in_features]``):

============  =====================================  ==================================
format        CUDA                                   CPU
============  =====================================  ==================================
``dense``     ``F.linear``                           ``F.linear``
``csr/bsr``   ``torch.sparse.mm``                    ``torch.sparse.mm`` (half dtypes
                                                     computed in float32: MKL lacks them)
``bitmap``    Triton :func:`bitmap_spmm`             decode + matmul reference
``nm``        Triton :func:`nm_spmm`                 decode + matmul reference
============  =====================================  ==================================

Triton modules are imported only on the CUDA path, so CPU use never needs triton.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .cpu_probe import CSR_CPU_DTYPES
from .formats import BitmapWeight, BSRWeight, CSRWeight, DenseWeight, NMWeight, SparseFormat
from .reference import check_activations, spmm_reference


def compressed_spmm(weight: CSRWeight | BSRWeight, x: torch.Tensor) -> torch.Tensor:
    """``y = x W^T`` through ``torch.sparse.mm`` (``W`` rows padded by BSR are cropped)."""
    sparse = weight.to_torch()
    x_t = x.T
    if x.device.type == "cpu" and x.dtype not in CSR_CPU_DTYPES:
        sparse, x_t = sparse.float(), x_t.float()
    if sparse.shape[1] != x_t.shape[0]:
        x_t = F.pad(x_t, (0, 0, 0, sparse.shape[1] - x_t.shape[0]))
    return torch.sparse.mm(sparse, x_t)[: weight.shape[0]].T.to(x.dtype)


def spmm(weight: SparseFormat, x: torch.Tensor) -> torch.Tensor:
    """``y = x W^T`` of shape ``[batch, out_features]`` with the fastest available kernel for the format."""
    check_activations(weight, x)
    if isinstance(weight, DenseWeight):
        return F.linear(x, weight.values)
    if isinstance(weight, (CSRWeight, BSRWeight)):
        return compressed_spmm(weight, x)
    if x.device.type == "cuda" and isinstance(weight, BitmapWeight):
        from .triton_bitmap import bitmap_spmm

        return bitmap_spmm(weight, x)
    if x.device.type == "cuda" and isinstance(weight, NMWeight):
        from .triton_nm import nm_spmm

        return nm_spmm(weight, x)
    return spmm_reference(weight, x)
