"""EdgeNodeConv: node-permutation equivariance and messages in both edge directions."""

from __future__ import annotations

import torch

from metaprune.meta import EdgeNodeConv


def random_graph(nodes: int = 7, edges: int = 15, hidden: int = 6):
    generator = torch.Generator().manual_seed(0)
    edge_index = torch.randint(nodes, (2, edges), generator=generator)
    return (torch.randn(nodes, hidden, generator=generator), edge_index,
            torch.randn(edges, hidden, generator=generator))


def test_layer_is_equivariant_to_node_and_edge_permutations():
    torch.manual_seed(0)
    layer = EdgeNodeConv(6)
    nodes, edge_index, edges = random_graph()
    node_order = torch.randperm(7, generator=torch.Generator().manual_seed(1))
    edge_order = torch.randperm(15, generator=torch.Generator().manual_seed(2))
    new_id = torch.empty_like(node_order)
    new_id[node_order] = torch.arange(7)  # node node_order[k] becomes node k
    node_out, edge_out = layer(nodes, edge_index, edges)
    permuted_node_out, permuted_edge_out = layer(nodes[node_order], new_id[edge_index][:, edge_order],
                                                 edges[edge_order])
    assert torch.allclose(permuted_node_out, node_out[node_order], atol=1e-6)
    assert torch.allclose(permuted_edge_out, edge_out[edge_order], atol=1e-6)


def test_messages_flow_forward_and_backward_along_edges():
    torch.manual_seed(0)
    layer = EdgeNodeConv(4)
    edge_index = torch.tensor([[0], [1]])  # one edge 0 -> 1
    nodes, edges = torch.randn(2, 4), torch.randn(1, 4)
    baseline, _ = layer(nodes, edge_index, edges)
    changed_target, changed_source = nodes.clone(), nodes.clone()
    changed_target[1] += 1.0
    changed_source[0] += 1.0
    # the source hears about its target (reversed edge) and the target about its source
    assert not torch.allclose(layer(changed_target, edge_index, edges)[0][0], baseline[0])
    assert not torch.allclose(layer(changed_source, edge_index, edges)[0][1], baseline[1])
    # without the edge, neither node hears about the other
    isolated, _ = layer(changed_target, torch.zeros(2, 0, dtype=torch.long), torch.zeros(0, 4))
    assert torch.equal(isolated[0], layer(nodes, torch.zeros(2, 0, dtype=torch.long), torch.zeros(0, 4))[0][0])
