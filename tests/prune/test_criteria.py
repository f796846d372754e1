"""Criteria against hand-computed scores."""

import pytest
import torch

from metaprune.errors import ConfigError
from metaprune.prune.criteria import CRITERIA, get_criterion, lamp_scores
from metaprune.prune.groups import ParamRows


def _rows():
    out = ParamRows("out", "conv", torch.tensor([[3.0, 4.0], [1.0, 0.0]]), torch.tensor([[1.0, 1.0], [2.0, 2.0]]), torch.tensor([0, 1]))
    consumer = ParamRows("in", "next", torch.tensor([[0.0], [2.0]]), torch.tensor([[5.0], [1.0]]), torch.tensor([0, 1]))
    norm = ParamRows("norm", "bn", torch.tensor([[0.5], [-2.0]]), None, torch.tensor([0, 1]))
    return [out, consumer, norm]


def test_channel_scores_by_hand():
    rows = _rows()
    assert torch.allclose(get_criterion("l1").channel_scores(rows, 2), torch.tensor([7.0, 1.0], dtype=torch.float64))
    assert torch.allclose(get_criterion("l2").channel_scores(rows, 2), torch.tensor([5.0, 1.0], dtype=torch.float64))
    group = torch.tensor([25 + 0 + 0.25, 1 + 4 + 4], dtype=torch.float64).sqrt()
    assert torch.allclose(get_criterion("group_l2").channel_scores(rows, 2), group)
    assert torch.allclose(get_criterion("bn_scale").channel_scores(rows, 2), torch.tensor([0.5, 2.0], dtype=torch.float64))
    # the producer rows feed a BatchNorm (scale-invariant): only the consumer and the norm count
    output = torch.tensor([0 + 0.25, 4 + 4], dtype=torch.float64).sqrt()
    assert torch.allclose(get_criterion("output_group_l2").channel_scores(rows, 2), output)
    # without a normalisation layer every row counts, as in group_l2
    without_norm = torch.tensor([25 + 0, 1 + 4], dtype=torch.float64).sqrt()
    assert torch.allclose(get_criterion("output_group_l2").channel_scores(rows[:2], 2), without_norm)
    with pytest.raises(ConfigError, match="gradients"):
        get_criterion("taylor").channel_scores(rows, 2)  # the norm row has no gradient
    taylor = get_criterion("taylor").channel_scores(rows[:2], 2)
    assert torch.allclose(taylor, torch.tensor([3 + 4 + 0, 2 + 0 + 2], dtype=torch.float64))


def test_lamp_scores_by_hand():
    squared = torch.tensor([1.0, 4.0, 9.0])
    # sorted ascending 1, 4, 9: 1/(1+4+9), 4/(4+9), 9/9
    assert torch.allclose(lamp_scores(squared), torch.tensor([1 / 14, 4 / 13, 1.0], dtype=torch.float64))


def test_random_criterion_is_seeded():
    assert torch.equal(get_criterion("random", seed=3).channel_scores([], 5), get_criterion("random", seed=3).channel_scores([], 5))


def test_unknown_criterion_lists_the_known_ones():
    with pytest.raises(ConfigError, match="group_l2"):
        get_criterion("snip")
    assert {"random", "l1", "l2", "group_l2", "output_group_l2", "taylor", "bn_scale", "lamp"} <= set(CRITERIA)
