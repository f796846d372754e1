"""Triton N:M SpMM against its PyTorch reference (interpreted on CPU, native on GPU)."""

import pytest
import torch
from kernel_testing import DTYPES, TOLERANCES, gpu, random_sparse

from metaprune.errors import KernelError
from metaprune.kernels.formats import NMWeight, prune_to_n_m
from metaprune.kernels.reference import nm_spmm_reference
from metaprune.kernels.triton_nm import nm_spmm


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("n", "m", "batch", "sparsity", "split_k"), [(2, 4, 1, 0.0, 2), (1, 4, 9, 0.5, 1), (3, 6, 33, 1.0, 3)]
)
def test_matches_reference(dtype, n, m, batch, sparsity, split_k):
    weight = NMWeight.from_dense(prune_to_n_m(random_sparse((20, 96), sparsity, dtype, seed=batch), n, m), n, m)
    x = torch.randn(batch, 96, generator=torch.Generator().manual_seed(3)).to(dtype)
    result = nm_spmm(weight, x, block_out=16, block_k=32, split_k=split_k)
    assert result.shape == (batch, 20) and result.dtype == dtype
    torch.testing.assert_close(result, nm_spmm_reference(weight, x), **TOLERANCES[dtype])


def test_matches_hand_computation():
    dense = torch.tensor([[0.0, 2.0, 0.0, 1.0], [3.0, 0.0, 0.0, 0.0]])
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    assert torch.equal(nm_spmm(NMWeight.from_dense(dense, 2, 4), x, block_out=16, block_k=16), torch.tensor([[8.0, 3.0]]))


def test_reference_rejects_other_formats():
    from metaprune.kernels.formats import BitmapWeight

    with pytest.raises(KernelError, match="NMWeight"):
        nm_spmm_reference(BitmapWeight.from_dense(torch.eye(4)), torch.ones(1, 4))


@pytest.mark.parametrize(("block_out", "block_k"), [(8, 16), (16, 48)])
def test_bad_tile_sizes_raise(block_out, block_k):
    weight = NMWeight.from_dense(torch.zeros(4, 8), 2, 4)
    with pytest.raises(KernelError, match="power of two"):
        nm_spmm(weight, torch.ones(1, 8), block_out=block_out, block_k=block_k)


@pytest.mark.parametrize("batch", [1, 8, 64])
@gpu
def test_matches_reference_on_gpu(batch):
    weight = NMWeight.from_dense(prune_to_n_m(torch.randn(512, 1024, dtype=torch.float16), 2, 4).cuda())
    x = torch.randn(batch, 1024, device="cuda", dtype=torch.float16)
    torch.testing.assert_close(nm_spmm(weight, x), nm_spmm_reference(weight, x), **TOLERANCES[torch.float16])
