"""MetaNetwork: identity at epsilon=0, small steps at initialisation, masks, equivariance, batching."""

from __future__ import annotations

import pytest
import torch
from small_networks import SmallMLP, SmallResNet, permuted
from torch import nn

from metaprune.errors import ConfigError, GraphError
from metaprune.graph import collate_graphs, graph_to_network, network_to_graph
from metaprune.meta import MetaNetwork, rewrite_network


def active_metanet(**options) -> MetaNetwork:
    """A metanetwork whose rewrite is large enough for permutation mistakes to show."""
    torch.manual_seed(0)
    return MetaNetwork(hidden=16, layers=2, epsilon=1.0, decoder_init_scale=1.0, **options)


def test_epsilon_zero_is_an_exact_identity(resnet, images):
    graph = network_to_graph(resnet, images)
    rewritten = MetaNetwork(hidden=8, layers=2, epsilon=0.0, decoder_init_scale=1.0)(graph)
    assert torch.equal(rewritten.x, graph.x) and torch.equal(rewritten.edge_attr, graph.edge_attr)
    network = rewrite_network(MetaNetwork(hidden=8, layers=2, epsilon=0.0), resnet, images)
    for name, tensor in resnet.state_dict().items():
        assert torch.equal(network.state_dict()[name], tensor), name


def test_initial_rewrite_is_small_but_not_zero(resnet, images):
    torch.manual_seed(0)
    graph = network_to_graph(resnet, images)
    rewritten = MetaNetwork(hidden=16, layers=2)(graph)
    change = (rewritten.edge_attr - graph.edge_attr).abs().max()
    assert 0 < change < 1e-3


def test_masked_entries_and_running_statistics_are_left_untouched(resnet, images):
    graph = network_to_graph(resnet, images)
    rewritten = active_metanet()(graph)
    assert torch.equal(rewritten.x[~graph.node_mask], graph.x[~graph.node_mask])
    assert torch.equal(rewritten.edge_attr[~graph.edge_mask], graph.edge_attr[~graph.edge_mask])
    assert (rewritten.edge_attr[graph.edge_mask] != graph.edge_attr[graph.edge_mask]).all()
    rewritable = graph.node_mask[:, :3]
    assert (rewritten.x[:, :3][rewritable] != graph.x[:, :3][rewritable]).all()
    assert torch.equal(rewritten.x[:, 3:], graph.x[:, 3:])  # running statistics are only read


@pytest.mark.parametrize(("producers", "consumers", "channels"), [
    (["conv_a", "norm_a"], ["conv_b"], 4),  # hidden channels inside the block
    (["stem", "stem_norm", "conv_b", "norm_b"], ["conv_a", "head"], 3),  # the residual-coupled group
])
def test_rewrite_is_equivariant_to_hidden_channel_permutations(resnet, images, producers, consumers, channels):
    permutation = torch.randperm(channels, generator=torch.Generator().manual_seed(3))
    shuffled = permuted(resnet, producers, consumers, permutation)
    assert torch.allclose(shuffled(images), resnet(images), atol=1e-6)
    metanet = active_metanet()
    expected = permuted(rewrite_network(metanet, resnet, images), producers, consumers, permutation)
    actual = rewrite_network(metanet, shuffled, images)
    assert (expected.conv_a.weight - resnet.conv_a.weight).abs().max() > 1e-2  # the rewrite is not trivial
    for name, tensor in expected.state_dict().items():
        assert torch.allclose(actual.state_dict()[name], tensor, atol=1e-5), name


def test_batch_of_two_architectures_matches_single_graphs(resnet, mlp, images):
    graphs = [network_to_graph(resnet, images), network_to_graph(mlp, images)]
    assert graphs[0].edge_attr.shape[1] != graphs[1].edge_attr.shape[1]
    metanet = active_metanet()
    batch_output = metanet(collate_graphs(graphs))
    for index, (graph, model, fresh) in enumerate(zip(graphs, (resnet, mlp), (SmallResNet(), SmallMLP()),
                                                      strict=True)):
        single, from_batch = metanet(graph), batch_output.get_example(index)
        width = graph.edge_attr.shape[1]
        assert torch.allclose(from_batch.x, single.x, atol=1e-5)
        assert torch.allclose(from_batch.edge_attr[:, :width], single.edge_attr, atol=1e-5)
        graph_to_network(from_batch, fresh)
        assert not torch.equal(fresh.state_dict()["head.weight" if index == 0 else "layers.1.weight"],
                               model.state_dict()["head.weight" if index == 0 else "layers.1.weight"])


def test_unsupported_network_and_bad_configuration_raise():
    metanet = MetaNetwork(hidden=8, layers=1)
    with pytest.raises(GraphError, match="LayerNorm"):
        rewrite_network(metanet, nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3)), torch.randn(2, 3))
    with pytest.raises(GraphError, match="edge_feature_size=9"):
        rewrite_network(metanet, nn.Sequential(nn.Conv2d(1, 2, 5)), torch.randn(1, 1, 5, 5))
    with pytest.raises(GraphError, match="network_to_graph"):
        metanet("not a graph")
    with pytest.raises(ConfigError, match="hidden"):
        MetaNetwork(hidden=0)
    with pytest.raises(ConfigError, match="epsilon"):
        MetaNetwork(epsilon=-1.0)
