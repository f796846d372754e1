"""DASS: genotype derivation, the derived sparse network, the sparsity-aware search step."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metaprune.errors import ConfigError
from metaprune.search.nas.darts_network import CellNetworkConfig, SearchNetwork, derived_network
from metaprune.search.nas.darts_ops import DARTS_OPERATIONS, DASS_OPERATIONS
from metaprune.search.nas.dass import (
    DASSConfig,
    magnitude_masked,
    magnitude_prune,
    search_cells,
    sparse_network,
)
from metaprune.search.nas.genotype import Genotype, derive_genotype
from metaprune.search.nas.scored_ops import ScoredWeight, keep_count, weight_density

TINY_CELLS = CellNetworkConfig(channels=4, layers=3, steps=2)
GENOTYPE = Genotype(normal=(("sparse_conv_3x3", 0), ("sep_conv_3x3", 1), ("skip_connect", 0), ("sparse_dil_conv_3x3", 2)),
                    reduce=(("max_pool_3x3", 0), ("sparse_conv_3x3", 1), ("conv_3x3", 2), ("avg_pool_3x3", 1)))


def test_genotype_keeps_the_two_strongest_non_none_edges_per_node():
    operations = ("none", "skip_connect", "conv_3x3")
    alphas = torch.zeros(5, 3)  # node 0: edges 0-1; node 1: edges 2-4
    alphas[0] = torch.tensor([9.0, 1.0, 0.0])  # strongest is none: judged by skip_connect
    alphas[1] = torch.tensor([0.0, 0.0, 3.0])
    alphas[2, 2], alphas[3, 1], alphas[4, 2] = 0.5, 4.0, 2.0
    genotype = derive_genotype(alphas, alphas, operations, steps=2)
    assert genotype.normal == (("skip_connect", 0), ("conv_3x3", 1), ("skip_connect", 1), ("conv_3x3", 2))


def test_genotype_round_trips_through_json_and_rejects_bad_edges(tmp_path):
    assert Genotype.load(GENOTYPE.save(tmp_path / "genotype.json")) == GENOTYPE
    with pytest.raises(ConfigError, match="not computed"):
        Genotype(normal=(("conv_3x3", 0), ("conv_3x3", 2)), reduce=GENOTYPE.reduce)
    with pytest.raises(ConfigError, match="operation"):
        Genotype(normal=(("none", 0), ("conv_3x3", 1)), reduce=GENOTYPE.reduce)


def test_derived_genotype_builds_and_trains_one_step():
    torch.manual_seed(0)
    model = sparse_network(GENOTYPE, TINY_CELLS, density=0.1)
    layers = [module for module in model.modules() if isinstance(module, (nn.Conv2d, nn.Linear))]
    assert layers and all(isinstance(layer, ScoredWeight) for layer in layers)
    assert all(int(layer.mask().sum()) == keep_count(layer.weight.numel(), 0.1) for layer in layers)
    inputs, targets = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [parameter.detach().clone() for parameter in model.parameters()]
    loss = F.cross_entropy(model(inputs), targets)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert sum(not torch.equal(old, new) for old, new in zip(before, model.parameters())) > len(before) // 2


def test_search_network_routes_architecture_gradients_and_derives_a_genotype():
    torch.manual_seed(0)
    network = SearchNetwork(TINY_CELLS, DASS_OPERATIONS, density=0.1)
    inputs, targets = torch.randn(4, 1, 8, 8), torch.randint(0, 10, (4,))
    with magnitude_masked(network, 0.1):
        F.cross_entropy(network(inputs), targets).backward()
    assert all(alpha.grad is not None and alpha.grad.abs().sum() > 0 for alpha in network.arch_parameters())
    derived = derived_network(TINY_CELLS, network.genotype())
    assert derived(inputs).shape == (4, 10)


def test_magnitude_masking_is_temporary_and_exact():
    layer = nn.Linear(10, 10)
    original = layer.weight.detach().clone()
    with magnitude_masked(layer, 0.2):
        assert int(layer.weight.count_nonzero()) == 20
        assert set(layer.weight[layer.weight != 0].tolist()) <= set(original.flatten().tolist())
    assert torch.equal(layer.weight, original)


def test_one_search_step_runs_and_records_the_genotype(digits8):
    config = DASSConfig(density=0.05, network=TINY_CELLS, search_epochs=1, steps_per_epoch=1, batch_size=8)
    genotype, history = search_cells(digits8, config)
    assert genotype.steps == 2 and history[0]["genotype"] == genotype.to_dict()


def test_magnitude_baseline_prunes_globally_to_the_target_density():
    model = derived_network(TINY_CELLS, GENOTYPE)
    magnitude_prune(model, 0.05)
    layers = [m for m in model.modules() if isinstance(m, ScoredWeight)]
    assert layers and all(not layer.scores.requires_grad for layer in layers)
    assert weight_density(model) == pytest.approx(0.05, abs=2e-3)
    assert len({round(layer.density, 3) for layer in layers}) > 1  # one global threshold, per-layer densities differ


@pytest.mark.parametrize("bad", [dict(density=0.0), dict(search_epochs=0), dict(operations=("none",))])
def test_bad_dass_options_are_config_errors(bad, digits8):
    with pytest.raises(ConfigError):
        search_cells(digits8, DASSConfig(network=TINY_CELLS, steps_per_epoch=1, **bad))


def test_darts_operations_are_the_dense_subset():
    assert set(DARTS_OPERATIONS) < set(DASS_OPERATIONS)
    assert not any(name.startswith("sparse") for name in DARTS_OPERATIONS)
