"""``--criterion meta_group_l2``: the metanetwork's rewrite ranked by the full group L2 norm."""

from __future__ import annotations

import pytest
import torch

from metaprune.errors import ConfigError
from metaprune.meta.pruning import MetaCriterion, MetaGroupL2Criterion
from metaprune.meta.training import load_metanet
from metaprune.prune.criteria import get_criterion
from metaprune.prune.groups import ModelGroups
from metaprune.prune.structured import score_groups


def test_scores_are_group_l2_and_differ_from_the_output_sensitive_ones(resnet, images):
    groups = ModelGroups(resnet, images)
    full = score_groups(groups, MetaGroupL2Criterion())
    plain = score_groups(groups, get_criterion("group_l2"))
    sensitive = score_groups(groups, MetaCriterion())
    assert full.keys() == plain.keys()
    for name in full:
        torch.testing.assert_close(full[name], plain[name])
    assert any(not torch.allclose(full[name], sensitive[name]) for name in full)


def test_it_rewrites_with_the_metanetwork_like_meta(trained, resnet, images, splits):
    from metaprune.data import make_loaders

    criterion = get_criterion("meta_group_l2", metanet=str(trained[0]))
    assert isinstance(criterion, MetaGroupL2Criterion) and criterion.name == "meta_group_l2"
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(),
                                torch.nn.Linear(8, 10)).eval()
    loaders = make_loaders(splits, batch_size=32, seed=0)
    example = splits.test[0][0].unsqueeze(0)
    rewritten, extra = criterion.prepare(model, example, loaders)
    reference, _ = MetaCriterion(load_metanet(trained[0])).prepare(model, example, loaders)
    assert "rewritten_val_accuracy" in extra
    # the same weights (BatchNorm statistics are re-estimated on shuffled batches, so they are not compared)
    for (name, value), (_, expected) in zip(rewritten.named_parameters(), reference.named_parameters()):
        torch.testing.assert_close(value, expected, msg=name)
    assert any(not torch.equal(value, model.state_dict()[name]) for name, value in rewritten.state_dict().items()
               if name.endswith("weight"))


def test_it_needs_a_metanetwork():
    with pytest.raises(ConfigError, match="meta_group_l2 needs --metanet"):
        get_criterion("meta_group_l2")
