"""Markers, dtypes, tolerances and weights shared by the kernel tests."""

import pytest
import torch


def gpu(test):
    """Mark ``test`` GPU-only: the ``gpu`` marker, and a clean skip without CUDA."""
    return pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")(pytest.mark.gpu(test))


DTYPES = (torch.float32, torch.float16, torch.bfloat16)

#: Tolerances for comparing a kernel with its float32-accumulating reference, by dtype.
TOLERANCES = {
    torch.float32: {"atol": 1e-4, "rtol": 1e-4},
    torch.float16: {"atol": 1e-2, "rtol": 1e-2},
    torch.bfloat16: {"atol": 5e-2, "rtol": 2e-2},
}


def random_sparse(shape, sparsity, dtype, seed=0):
    """A seeded random weight with about ``sparsity`` exact zeros."""
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(shape, generator=generator)
    weight[torch.rand(shape, generator=generator) < sparsity] = 0
    return weight.to(dtype)
