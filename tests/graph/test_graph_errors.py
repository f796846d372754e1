"""Unsupported networks and mismatched graphs raise GraphError saying what and where."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.data import Batch

from metaprune.errors import GraphError
from metaprune.graph import graph_to_network, graph_to_parameters, network_to_graph


class Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)

    def forward(self, x):
        return torch.cat([self.conv(x), x], dim=1)


class SharedConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1)

    def forward(self, x):
        return self.conv(self.conv(x))


class FunctionalConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(2, 1, 1, 1))

    def forward(self, x):
        return F.conv2d(x, self.weight)


class LooseParameter(nn.Module):
    def __init__(self):
        super().__init__()
        self.offset = nn.Parameter(torch.randn(1, 1, 3, 3))

    def forward(self, x):
        return x + self.offset


class BroadcastAdd(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)
        self.pooled = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        out = self.conv(x)
        return out + self.pooled(out)


class DoubleNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.first, self.second = nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2), nn.BatchNorm2d(2)

    def forward(self, x):
        return self.second(self.first(self.conv(x)))


@pytest.mark.parametrize(("model", "in_channels", "words"), [
    (nn.Sequential(nn.Conv2d(1, 2, 1), nn.LayerNorm([2, 3, 3])), 1, ["LayerNorm", "'1'", "fx node '_1'"]),
    (nn.Sequential(nn.Conv2d(1, 2, 1), nn.Softmax(dim=1)), 1, ["Softmax"]),
    (Concat(), 1, ["cat", "fx node 'cat'"]),
    (SharedConv(), 2, ["'conv'", "more than once"]),
    (FunctionalConv(), 1, ["conv2d", "fx node 'conv2d'"]),
    (LooseParameter(), 1, ["parameter/buffer 'offset'"]),
    (BroadcastAdd(), 1, ["broadcasting", "fx node 'add'"]),
    (DoubleNorm(), 1, ["norm_weight", "fx node 'second'"]),
    (nn.Sequential(nn.Conv2d(2, 4, 1, groups=2)), 2, ["groups=2"]),
    (nn.Sequential(nn.Conv2d(1, 2, 1), nn.Linear(3, 2)), 1, ["Linear expects"]),
])
def test_unsupported_networks_name_the_op_and_fx_node(model, in_channels, words):
    with pytest.raises(GraphError) as error:
        network_to_graph(model, torch.randn(1, in_channels, 3, 3))
    for word in words:
        assert word in str(error.value)


def test_bad_arguments():
    with pytest.raises(GraphError, match="torch.nn.Module"):
        network_to_graph("resnet", torch.randn(1, 1, 3, 3))
    with pytest.raises(GraphError, match="example_input"):
        network_to_graph(nn.Linear(2, 2), torch.randn(2))
    with pytest.raises(GraphError, match="edge_feature_size=4"):
        network_to_graph(nn.Sequential(nn.Conv2d(1, 1, 3)), torch.randn(1, 1, 3, 3), edge_feature_size=4)
    with pytest.raises(GraphError, match="no Conv2d or Linear"):
        network_to_graph(nn.Sequential(nn.ReLU()), torch.randn(1, 2))


def test_decoding_into_a_different_architecture_fails():
    graph = network_to_graph(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)), torch.randn(1, 3))
    with pytest.raises(GraphError, match="different architecture"):
        graph_to_network(graph, nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2)))
    with pytest.raises(GraphError, match="does not have"):
        graph_to_network(graph, nn.Sequential(nn.Linear(3, 4)))
    with pytest.raises(GraphError, match="get_example"):
        graph_to_parameters(Batch.from_data_list([graph, graph]), nn.Sequential(nn.Linear(3, 4)))
