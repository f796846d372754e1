"""The graph layout, checked by hand on tiny networks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from metaprune.graph import EdgeType, NodeType, network_to_graph


class ConvBnFlattenLinear(nn.Module):
    """conv(2->3, 3x3, bias) -> BN -> ReLU -> flatten (3 channels x 2x2) -> linear(12->4)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3)
        self.norm = nn.BatchNorm2d(3)
        self.linear = nn.Linear(12, 4, bias=False)

    def forward(self, x):
        return self.linear(torch.flatten(F.relu(self.norm(self.conv(x))), 1))


class ResidualBlock(nn.Module):
    """relu(bn(conv2(relu(conv1(x)))) + x) on 2 channels, then a linear head on the mean."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 2, 3, padding=1)
        self.conv2 = nn.Conv2d(2, 2, 3, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(2)
        self.head = nn.Linear(2, 3)

    def forward(self, x):
        out = self.norm(self.conv2(F.relu(self.conv1(x))))
        return self.head(F.relu(out + x).mean((2, 3)))


def test_conv_flatten_linear_layout():
    torch.manual_seed(0)
    model = ConvBnFlattenLinear().eval()
    with torch.no_grad():
        model.norm.running_mean.normal_()
        model.norm.running_var.uniform_(1, 2)
    graph = network_to_graph(model, torch.randn(1, 2, 4, 4))
    # nodes: 2 input channels, 3 conv channels, 4 outputs
    assert graph.node_type.tolist() == [NodeType.INPUT] * 2 + [NodeType.HIDDEN] * 3 + [NodeType.OUTPUT] * 4
    assert graph.node_position.tolist() == [0, 1, -1, -1, -1, 0, 1, 2, 3]
    assert graph.channel_group.tolist() == [-1, -1, 0, 1, 2, -1, -1, -1, -1]
    assert graph.layer_names == ["conv", "norm", "linear"]
    # edges: 3x2 conv edges (out-major), then 4x3 linear edges channel -> neuron
    assert graph.edge_index[:, :6].tolist() == [[0, 1, 0, 1, 0, 1], [2, 2, 3, 3, 4, 4]]
    assert graph.edge_index[:, 6:].tolist() == [[2, 3, 4] * 4, [5] * 3 + [6] * 3 + [7] * 3 + [8] * 3]
    assert graph.edge_type.tolist() == [EdgeType.CONV] * 6 + [EdgeType.LINEAR] * 12
    assert graph.edge_layer.tolist() == [0] * 6 + [2] * 12
    assert graph.edge_attr.shape == (18, 9)
    # conv edge (in 1 -> out 2) holds kernel W[2, 1]; linear edge (channel 2 -> neuron 3) the 2x2 positions
    assert torch.equal(graph.edge_attr[5], model.conv.weight[2, 1].flatten())
    assert torch.equal(graph.edge_attr[6 + 3 * 3 + 2, :4], model.linear.weight[3, 8:12])
    assert graph.edge_mask.sum(dim=1).tolist() == [9] * 6 + [4] * 12
    assert not graph.edge_attr[6:, 4:].any()
    # node features of conv channels: bias and all four BN tensors; nothing elsewhere
    expected = torch.stack([model.conv.bias, model.norm.weight, model.norm.bias,
                            model.norm.running_mean, model.norm.running_var], dim=1)
    assert torch.equal(graph.x[2:5], expected)
    assert graph.node_mask[2:5].all() and not graph.node_mask[[0, 1, 5, 6, 7, 8]].any()
    assert graph.node_bias_layer.tolist() == [-1, -1, 0, 0, 0, -1, -1, -1, -1]
    assert graph.node_norm_layer.tolist() == [-1, -1, 1, 1, 1, -1, -1, -1, -1]


def test_residual_add_creates_sum_nodes_in_one_group_per_channel():
    graph = network_to_graph(ResidualBlock().eval(), torch.randn(1, 2, 4, 4))
    # 0-1 inputs, 2-3 conv1, 4-5 conv2, 6-7 sums, 8-10 outputs
    assert graph.node_type.tolist() == [NodeType.INPUT] * 2 + [NodeType.HIDDEN] * 4 + [
        NodeType.RESIDUAL_SUM] * 2 + [NodeType.OUTPUT] * 3
    residual = graph.edge_type == EdgeType.RESIDUAL
    assert graph.edge_index[:, residual].tolist() == [[4, 5, 0, 1], [6, 7, 6, 7]]
    assert not graph.edge_mask[residual].any() and (graph.edge_layer[residual] == -1).all()
    # the skip connection couples the network input with conv2 and the sums: not prunable;
    # conv1 channels are free
    assert graph.channel_group.tolist() == [-1, -1, 0, 1, -1, -1, -1, -1, -1, -1, -1]


def test_residual_groups_couple_hidden_channels_across_blocks():
    class TwoBlocks(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem, self.body, self.head = nn.Conv2d(1, 2, 1), nn.Conv2d(2, 2, 1), nn.Linear(2, 1)

        def forward(self, x):
            x = self.stem(x)
            return self.head(torch.flatten(F.adaptive_avg_pool2d(self.body(x) + x, 1), 1))

    graph = network_to_graph(TwoBlocks(), torch.randn(1, 1, 3, 3))
    # 0 input, 1-2 stem, 3-4 body, 5-6 sums, 7 output: channel c of stem, body and sum is one group
    assert graph.channel_group.tolist() == [-1, 0, 1, 0, 1, 0, 1, -1]


def test_input_that_is_only_flattened_gets_one_node_per_feature():
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 3 * 3, 4), nn.ReLU(), nn.Linear(4, 2))
    graph = network_to_graph(model, torch.randn(1, 2, 3, 3))
    assert (graph.node_type == NodeType.INPUT).sum() == 18
    assert graph.edge_attr.shape == (18 * 4 + 4 * 2, 1)
    assert torch.equal(graph.edge_attr[:18, 0], model[1].weight[0])


def test_depthwise_conv_couples_input_and_output_channels():
    model = nn.Sequential(nn.Conv2d(1, 3, 1), nn.Conv2d(3, 3, 3, groups=3), nn.Conv2d(3, 2, 1))
    graph = network_to_graph(model, torch.randn(1, 1, 5, 5))
    depthwise = graph.edge_layer == 1
    assert graph.edge_index[:, depthwise].tolist() == [[1, 2, 3], [4, 5, 6]]
    assert graph.channel_group.tolist() == [-1, 0, 1, 2, 0, 1, 2, -1, -1]


def test_edge_feature_size_pads_with_masked_zeros():
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.Flatten(), nn.Linear(2 * 2 * 2, 1))
    graph = network_to_graph(model, torch.randn(1, 1, 2, 2), edge_feature_size=25)
    assert graph.edge_attr.shape == (4, 25)
    assert graph.edge_mask.sum(dim=1).tolist() == [1, 1, 4, 4]
    assert not graph.edge_attr[~graph.edge_mask].any()
