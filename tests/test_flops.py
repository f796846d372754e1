"""The cost model against hand-computed FLOPs."""

import pytest
import torch
from torch import nn

from metaprune.errors import ConfigError
from metaprune.flops import (
    count_flops,
    count_nonzero_params,
    count_params,
    effective_flops,
    flops_by_module,
    measure_latency,
)


def test_conv_flops_match_hand_count():
    conv = nn.Conv2d(3, 8, kernel_size=3, padding=1, stride=2)
    x = torch.randn(1, 3, 10, 10)
    # output 5x5; each output element is 3*3*3 MACs; 2 FLOPs per MAC.
    assert count_flops(conv, x) == 2 * 8 * 5 * 5 * 3 * 3 * 3


def test_linear_flops_match_hand_count():
    assert count_flops(nn.Linear(20, 7), torch.randn(4, 20)) == 2 * 4 * 20 * 7


def test_attention_flops_match_hand_count():
    class Attention(nn.Module):
        def forward(self, q, k=None, v=None):
            return torch.nn.functional.scaled_dot_product_attention(q, q, q)

    batch, heads, tokens, dim = 1, 2, 5, 4
    q = torch.randn(batch, heads, tokens, dim)
    # q @ k^T and attn @ v: two products of tokens x tokens x dim per head.
    assert count_flops(Attention(), q) == 2 * 2 * batch * heads * tokens * tokens * dim


def test_flops_by_module_partitions_total():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    x = torch.randn(1, 1, 8, 8)
    own = flops_by_module(model, x)
    assert own["0"] == 2 * 4 * 6 * 6 * 9 and own["3"] == 2 * 144 * 3
    assert sum(own.values()) == count_flops(model, x)


def test_flops_by_module_looks_past_uncalled_module_lists():
    class Cell(nn.Module):
        def __init__(self):
            super().__init__()
            self.ops = nn.ModuleList([nn.Linear(6, 6), nn.Linear(6, 6)])  # a ModuleList is never called

        def forward(self, x):
            return self.ops[1](self.ops[0](x)) @ torch.ones(6, 2)

    model = nn.Sequential(Cell())
    x = torch.randn(3, 6)
    own = flops_by_module(model, x)
    assert own["0.ops.0"] == own["0.ops.1"] == 2 * 3 * 6 * 6
    assert own["0"] == 2 * 3 * 6 * 2  # only the matmul written in the cell's own forward
    assert sum(own.values()) == count_flops(model, x)
    assert effective_flops(model, x) == count_flops(model, x)


def test_params_and_effective_flops_of_sparse_layer():
    layer = nn.Linear(10, 10, bias=False)
    with torch.no_grad():
        layer.weight[:, :5] = 0
    x = torch.randn(1, 10)
    assert count_params(layer) == 100 and count_nonzero_params(layer) <= 50
    assert effective_flops(layer, x) == pytest.approx(count_flops(layer, x) * count_nonzero_params(layer) / 100, abs=1)


def test_latency_is_measured_and_validated():
    stats = measure_latency(nn.Linear(8, 8), torch.randn(2, 8), repeats=5, warmup=1)
    assert stats.median_ms > 0 and stats.p10_ms <= stats.median_ms <= stats.p90_ms and stats.threads == 1
    with pytest.raises(ConfigError):
        measure_latency(nn.Linear(8, 8), torch.randn(2, 8), repeats=0)
