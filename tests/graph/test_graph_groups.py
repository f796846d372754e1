"""Channel groups: the graph's node-level coupling is the engine's layer-level coupling."""

from __future__ import annotations

import pytest
import torch

from metaprune.graph import network_to_graph
from metaprune.graph.groups import connected_components
from metaprune.models import create_model
from metaprune.prune.groups import ModelGroups


def test_connected_components_label_each_node_with_its_smallest_neighbour_id():
    pairs = torch.tensor([[4, 1, 6, 3], [2, 4, 3, 5]])  # components {0}, {1, 2, 4}, {3, 5, 6}
    assert connected_components(7, pairs).tolist() == [0, 1, 1, 3, 1, 3, 3]
    assert connected_components(3, torch.zeros(2, 0, dtype=torch.long)).tolist() == [0, 1, 2]


def _layer_nodes(graph, layer: str) -> torch.Tensor:
    # the output nodes of a layer, in channel order (edges are row-major in (out, in))
    return torch.unique_consecutive(graph.edge_index[1, graph.edge_layer == graph.layer_names.index(layer)])


@pytest.mark.parametrize("name", ["resnet20", "vgg11", "mlp"])
def test_graph_channel_groups_are_the_pruning_engine_groups(name):
    model = create_model(name, num_classes=10, in_channels=1, image_size=16).eval()
    example_input = torch.randn(1, 1, 16, 16)
    graph = network_to_graph(model, example_input)
    engine_groups = ModelGroups(model, example_input).groups
    ids = []
    for group in engine_groups:
        per_layer = torch.stack([graph.channel_group[_layer_nodes(graph, layer)] for layer in group.out_layers])
        assert (per_layer == per_layer[0]).all() and (per_layer[0] >= 0).all(), group.name
        ids.append(per_layer[0])
    # one graph group per channel of every engine group, and no other prunable graph group
    ids = torch.cat(ids)
    assert ids.unique().numel() == ids.numel() == int(graph.channel_group.max()) + 1
