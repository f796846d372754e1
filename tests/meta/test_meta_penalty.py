"""The meta-training penalty measures exactly what the meta criterion ranks."""

from __future__ import annotations

import torch
from torch import nn

from metaprune.meta.pruning import MetaCriterion, output_sensitive_slices
from metaprune.meta.training import group_norms
from metaprune.prune.groups import ModelGroups
from metaprune.prune.structured import score_groups


def _penalty_norms(model, images):
    groups = ModelGroups(model, images)
    coupled = [output_sensitive_slices(model, groups.coupled_parameters(group)) for group in groups.groups]
    sizes = [groups.current_size(group) for group in groups.groups]
    # the criterion reads weights only; the penalty also counts biases, so compare on weights
    weights = {name: value.detach() for name, value in model.named_parameters()}
    weights.update({name: torch.zeros_like(value) for name, value in weights.items() if name.endswith("bias")})
    return groups, group_norms(weights, coupled, sizes)


def test_penalty_norms_equal_meta_criterion_scores(resnet, mlp, images):
    for model, example in ((resnet, images), (mlp, images)):
        groups, norms = _penalty_norms(model, example)
        scores = score_groups(groups, MetaCriterion())
        for group, channel_norms in zip(groups.groups, norms):
            assert torch.allclose(channel_norms.double(), scores[group.name], atol=1e-5), group.name


def test_rows_feeding_batchnorm_are_left_out_of_the_penalty(resnet, images):
    def module_of(name):
        return resnet.get_submodule(name.rpartition(".")[0])

    groups = ModelGroups(resnet, images)
    for group in groups.groups:
        coupled = groups.coupled_parameters(group)
        kept = output_sensitive_slices(resnet, coupled)
        assert any(isinstance(module_of(name), nn.BatchNorm2d) for name, *_ in coupled), group.name
        dropped = [piece for piece in coupled if not any(piece is other for other in kept)]
        assert dropped and all(isinstance(module_of(name), nn.Conv2d) and dim == 0 for name, dim, *_ in dropped)
        assert all(dim == 1 or isinstance(module_of(name), nn.BatchNorm2d) for name, dim, *_ in kept), group.name
