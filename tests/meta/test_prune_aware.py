"""The prune-aware meta-training term: switching channels off is exactly pruning them, and it trains."""

from __future__ import annotations

import copy

import pytest
import torch
from meta_helpers import CONFIG, interrupt_then_resume
from torch.func import functional_call

from metaprune.errors import ConfigError
from metaprune.meta.checkpoint import CHECKPOINT
from metaprune.meta.pruning import output_sensitive_slices
from metaprune.meta.training import (
    MetaTrainConfig,
    MetaTrainer,
    drop_weak_channels,
    group_norms,
    load_metanet,
)
from metaprune.prune.groups import ModelGroups


@pytest.mark.parametrize("keep_share", [0.3, 0.5, 0.75])
def test_switched_off_channels_give_the_output_of_the_pruned_network(resnet, mlp, images, keep_share):
    for model in (resnet.eval(), mlp.eval()):
        groups = ModelGroups(model, images)
        coupled = [output_sensitive_slices(model, groups.coupled_parameters(group)) for group in groups.groups]
        sizes = [groups.current_size(group) for group in groups.groups]
        parameters = {**dict(model.named_parameters()), **dict(model.named_buffers())}
        norms = group_norms(parameters, coupled, sizes)
        masked = functional_call(model, drop_weak_channels(parameters, coupled, norms, keep_share), (images,))

        pruned = copy.deepcopy(model)
        pruned_groups = ModelGroups(pruned, images)
        removed = 0
        for group, channel_norms in zip(pruned_groups.groups, norms):
            keep = max(1, int(torch.tensor(keep_share * channel_norms.numel()).ceil()))
            weakest = torch.argsort(channel_norms.detach(), descending=True)[keep:].tolist()
            pruned_groups.remove(group, weakest)
            removed += len(weakest)
        assert removed > 0
        assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
        torch.testing.assert_close(masked, pruned(images), atol=1e-5, rtol=1e-4)


def test_gradients_reach_only_the_kept_channels(resnet, images):
    groups = ModelGroups(resnet, images)
    coupled = [output_sensitive_slices(resnet, groups.coupled_parameters(group)) for group in groups.groups]
    sizes = [groups.current_size(group) for group in groups.groups]
    parameters = {name: value.detach().clone().requires_grad_(True) for name, value in resnet.named_parameters()}
    norms = group_norms(parameters, coupled, sizes)
    dropped = drop_weak_channels(parameters, coupled, norms, 0.5)
    functional_call(resnet.eval(), dropped, (images,)).square().sum().backward()
    checked = 0
    for slices, channel_norms, size in zip(coupled, norms, sizes):
        keep = max(1, -(-size // 2))
        off = torch.argsort(channel_norms.detach(), descending=True)[keep:]
        for name, dim, idxs, channels in slices:
            if "norm" in name and name.endswith("weight"):  # a BatchNorm scale: one entry per channel
                gradient = parameters[name].grad.index_select(dim, idxs)
                assert torch.all(gradient[torch.isin(channels, off)] == 0), name
                assert torch.any(gradient[~torch.isin(channels, off)] != 0), name
                checked += 1
    assert checked >= 2


def test_prune_aware_training_changes_the_metanetwork_and_resumes_exactly(population, splits, trained, tmp_path,
                                                                          monkeypatch):
    root, networks = population
    config = MetaTrainConfig(**{**CONFIG.__dict__, "prune_aware_weight": 1.0})
    history = MetaTrainer(config, root, networks, splits, tmp_path / "aware").fit(progress=False)
    assert all(torch.isfinite(torch.tensor(history.task_loss + history.sparsity_loss)))
    aware, plain = load_metanet(tmp_path / "aware" / CHECKPOINT), load_metanet(trained[0] / CHECKPOINT)
    assert any(not torch.equal(a, b) for a, b in zip(aware.state_dict().values(), plain.state_dict().values()))

    resumed = interrupt_then_resume(config, population, splits, tmp_path / "resumed", monkeypatch)
    assert resumed.task_loss == pytest.approx(history.task_loss, rel=1e-5)
    assert resumed.sparsity_loss == pytest.approx(history.sparsity_loss, rel=1e-5)


def test_a_negative_prune_aware_weight_is_refused():
    with pytest.raises(ConfigError, match="prune_aware_weight"):
        MetaTrainConfig(prune_aware_weight=-1.0).validate()
