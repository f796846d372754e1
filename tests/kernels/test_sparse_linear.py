"""SparseLinear matches the dense masked linear in every format; validation and buffers."""

import pytest
import torch
import torch.nn.utils.prune as prune
from kernel_testing import TOLERANCES, gpu
from torch import nn

from metaprune.errors import KernelError
from metaprune.kernels import SparseLinear, choose_format, effective_weight, prune_to_n_m


def make_linear(in_features=72, out_features=40, sparsity=0.6, bias=True, dtype=torch.float32):
    torch.manual_seed(0)
    linear = nn.Linear(in_features, out_features, bias=bias).to(dtype)
    with torch.no_grad():
        linear.weight.copy_(prune_to_n_m(linear.weight, 2, 4))
        linear.weight[torch.rand(linear.weight.shape) < sparsity - 0.5] = 0
    return linear


@pytest.mark.parametrize("format", ["bitmap", "nm", "bsr", "csr", "dense"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_forward_matches_dense_linear(format, dtype):
    linear = make_linear(dtype=dtype)
    sparse = SparseLinear.from_dense(linear, format)
    x = torch.randn(3, 5, 72).to(dtype)
    assert sparse.format == format
    torch.testing.assert_close(sparse(x), linear(x), **TOLERANCES[dtype])


def test_prune_reparametrised_weight_is_used():
    linear = nn.Linear(16, 8)
    prune.l1_unstructured(linear, "weight", amount=0.75)
    assert torch.equal(effective_weight(linear), linear.weight_orig * linear.weight_mask)
    sparse = SparseLinear.from_dense(linear, "csr")
    assert sparse.values.numel() == 32
    x = torch.randn(4, 16)
    torch.testing.assert_close(sparse(x), linear(x))


def test_no_bias_and_round_trip_to_dense_linear():
    linear = make_linear(bias=False)
    sparse = SparseLinear.from_dense(linear, "bitmap")
    assert sparse.bias is None
    dense = sparse.to_dense_linear()
    assert torch.equal(dense.weight, linear.weight) and dense.bias is None


def test_format_tensors_are_buffers_in_state_dict():
    sparse = SparseLinear.from_dense(make_linear(), "nm")
    assert set(sparse.state_dict()) == {"values", "indices", "bias"}
    assert "n=2, m=4" in repr(sparse)


def test_auto_on_cpu_uses_the_forced_backend():
    linear = make_linear()
    assert SparseLinear.from_dense(linear, "auto", cpu_backend="csr").format == "csr"
    assert SparseLinear.from_dense(linear, "auto", cpu_backend="dense").format == "dense"
    assert choose_format(linear.weight.detach(), cpu_backend="csr") == "csr"
    with pytest.raises(KernelError, match="cpu_backend"):
        choose_format(linear.weight.detach(), cpu_backend="bitmap")


def test_bad_arguments_raise():
    with pytest.raises(KernelError, match="unknown format"):
        SparseLinear.from_dense(make_linear(), "coo")
    with pytest.raises(KernelError, match="nn.Linear"):
        SparseLinear.from_dense(nn.Conv1d(2, 2, 1), "csr")
    with pytest.raises(KernelError, match="prune_to_n_m"):
        SparseLinear.from_dense(nn.Linear(8, 4), "nm")
    with pytest.raises(KernelError, match="features"):
        SparseLinear.from_dense(make_linear(), "csr")(torch.ones(2, 71))


@pytest.mark.parametrize("format", ["bitmap", "nm", "auto"])
@gpu
def test_forward_matches_dense_linear_on_gpu(format):
    linear = make_linear(in_features=256, out_features=128, dtype=torch.float16).cuda()
    sparse = SparseLinear.from_dense(linear, format)
    x = torch.randn(8, 256, device="cuda", dtype=torch.float16)
    torch.testing.assert_close(sparse(x), linear(x), **TOLERANCES[torch.float16])
