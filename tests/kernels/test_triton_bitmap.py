"""Triton bitmap SpMM against its PyTorch reference (interpreted on CPU, native on GPU)."""

import pytest
import torch
from kernel_testing import DTYPES, TOLERANCES, gpu, random_sparse

from metaprune.errors import KernelError
from metaprune.kernels.formats import BitmapWeight
from metaprune.kernels.reference import bitmap_spmm_reference
from metaprune.kernels.triton_bitmap import bitmap_spmm


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("batch", "sparsity", "split_k"), [(1, 0.5, 3), (5, 0.0, 1), (17, 0.9, 2), (64, 1.0, 1)])
def test_matches_reference(dtype, batch, sparsity, split_k):
    weight = BitmapWeight.from_dense(random_sparse((24, 150), sparsity, dtype, seed=batch))
    x = torch.randn(batch, 150, generator=torch.Generator().manual_seed(7)).to(dtype)
    result = bitmap_spmm(weight, x, block_out=16, split_k=split_k)
    assert result.shape == (batch, 24) and result.dtype == dtype
    torch.testing.assert_close(result, bitmap_spmm_reference(weight, x), **TOLERANCES[dtype])


def test_reference_matches_dense_linear_by_hand():
    dense = torch.tensor([[1.0, 0.0, 2.0], [0.0, -1.0, 0.0]])
    x = torch.tensor([[1.0, 2.0, 3.0]])
    expected = torch.tensor([[7.0, -2.0]])
    assert torch.equal(bitmap_spmm_reference(BitmapWeight.from_dense(dense), x), expected)
    assert torch.equal(bitmap_spmm(BitmapWeight.from_dense(dense), x, block_out=16), expected)


def test_mismatched_inputs_raise():
    weight = BitmapWeight.from_dense(torch.eye(8))
    with pytest.raises(KernelError, match="features"):
        bitmap_spmm(weight, torch.ones(1, 9))
    with pytest.raises(KernelError, match="dtype|float16"):
        bitmap_spmm(weight, torch.ones(1, 8, dtype=torch.float16))
    with pytest.raises(KernelError, match="batch"):
        bitmap_spmm(weight, torch.ones(8))


@pytest.mark.parametrize(("block_out", "split_k"), [(8, 1), (24, 1), (16, 0), (16, 3)])
def test_bad_launch_sizes_raise(block_out, split_k):
    weight = BitmapWeight.from_dense(torch.eye(100))  # 2 tiles per row
    with pytest.raises(KernelError, match="power of two|split_k"):
        bitmap_spmm(weight, torch.ones(1, 100), block_out=block_out, split_k=split_k)


def test_cpu_without_interpreter_raises(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(KernelError, match="TRITON_INTERPRET"):
        bitmap_spmm(BitmapWeight.from_dense(torch.eye(8)), torch.ones(1, 8))


@pytest.mark.parametrize("batch", [1, 8, 64])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@gpu
def test_matches_reference_on_gpu(batch, dtype):
    weight = BitmapWeight.from_dense(random_sparse((512, 1000), 0.7, dtype).cuda())
    x = torch.randn(batch, 1000, device="cuda", dtype=dtype)
    torch.testing.assert_close(bitmap_spmm(weight, x), bitmap_spmm_reference(weight, x), **TOLERANCES[dtype])
