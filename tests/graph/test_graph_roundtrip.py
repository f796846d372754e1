"""network_to_graph / graph_to_network round trips are exact, on random and reference architectures."""

from __future__ import annotations

import time

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from random_networks import build_network, example_input, network_specs
from torch import nn

from metaprune.graph import collate_graphs, graph_to_network, graph_to_parameters, network_to_graph


def assert_same_state(expected: nn.Module, actual: nn.Module) -> None:
    expected_state, actual_state = expected.state_dict(), actual.state_dict()
    assert expected_state.keys() == actual_state.keys()
    for name, tensor in expected_state.items():
        assert torch.equal(tensor, actual_state[name]), name


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=network_specs(), seed=st.integers(0, 2**16))
def test_round_trip_is_exact_on_random_architectures(spec, seed):
    original, target = build_network(spec, seed), build_network(spec, seed + 1)
    inputs = example_input(spec)
    graph = network_to_graph(original, inputs)
    assert not torch.equal(original(inputs), target(inputs))
    graph_to_network(graph, target)
    assert_same_state(original, target)
    assert torch.equal(original(inputs), target(inputs))


@settings(max_examples=10, deadline=None)
@given(spec=network_specs())
def test_functional_call_with_decoded_parameters_matches_model(spec):
    model = build_network(spec, seed=0)
    inputs = example_input(spec)
    parameters = graph_to_parameters(network_to_graph(model, inputs), model)
    assert torch.equal(torch.func.functional_call(model, parameters, (inputs,)), model(inputs))


def test_conversion_leaves_model_untouched():
    from random_networks import BlockSpec, NetworkSpec

    spec = NetworkSpec(2, 4, (BlockSpec(3, 3, True, True, True, True),), False, 3, True, 2)
    model = build_network(spec, seed=0).train()
    state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    network_to_graph(model, example_input(spec))
    assert model.training and all(module.training for module in model.modules())
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, state[name]), name


def test_decoding_is_differentiable():
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(12, 2)).eval()
    graph = network_to_graph(model, torch.randn(1, 2, 4, 4))
    graph.x.requires_grad_(True)
    graph.edge_attr.requires_grad_(True)
    parameters = graph_to_parameters(graph, model)
    sum(tensor.sum() for tensor in parameters.values()).backward()
    # every real weight and BN parameter is used exactly once, padding never; running statistics
    # come back detached (batch_norm takes no gradient through them)
    assert torch.equal(graph.edge_attr.grad, graph.edge_mask.float())
    assert torch.equal(graph.x.grad[:, :3], graph.node_mask[:, :3].float())
    assert not graph.x.grad[:, 3:].any() and graph.node_mask[:, 3:].any()


def test_batch_of_different_architectures_decodes_per_graph():
    models = [nn.Sequential(nn.Conv2d(1, 4, 5), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3)),
              nn.Sequential(nn.Conv2d(1, 2, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3))]
    inputs = torch.randn(1, 1, 8, 8)
    graphs = [network_to_graph(model, inputs) for model in models]
    batch = collate_graphs(graphs)
    assert batch.num_graphs == 2
    assert batch.edge_attr.shape[1] == max(graph.edge_attr.shape[1] for graph in graphs) == 25
    assert batch.num_nodes == sum(graph.num_nodes for graph in graphs)
    for index, model in enumerate(models):
        copy = type(model)(*[type(layer)(*_constructor_args(layer)) for layer in model])
        graph_to_network(batch.get_example(index), copy)
        assert_same_state(model, copy)


def _constructor_args(layer: nn.Module) -> tuple:
    if isinstance(layer, nn.Conv2d):
        return layer.in_channels, layer.out_channels, layer.kernel_size
    if isinstance(layer, nn.Linear):
        return layer.in_features, layer.out_features
    if isinstance(layer, nn.AdaptiveAvgPool2d):
        return (layer.output_size,)
    return ()


@pytest.mark.parametrize("name", ["resnet20", "vgg11", "mlp"])
def test_round_trip_on_reference_models(name):
    models = pytest.importorskip("metaprune.models")
    torch.manual_seed(0)
    original, target = models.create_model(name).eval(), models.create_model(name).eval()
    inputs = torch.randn(2, 1, 16, 16)
    graph_to_network(network_to_graph(original, inputs), target)
    assert_same_state(original, target)
    assert torch.equal(original(inputs), target(inputs))


def test_resnet20_sized_network_converts_fast():
    models = pytest.importorskip("metaprune.models")
    model = models.create_model("resnet20")
    inputs = torch.randn(1, 1, 16, 16)
    network_to_graph(model, inputs)  # warm-up: first fx trace imports and caches
    start = time.process_time()  # CPU time: robust to a busy machine
    graph = network_to_graph(model, inputs)
    assert time.process_time() - start < 1.0
    assert int(graph.edge_mask.sum()) == sum(
        module.weight.numel() for module in model.modules() if isinstance(module, nn.Conv2d | nn.Linear))
