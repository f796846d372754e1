"""Channel-wise interpolation and Gumbel top-2 sampling: the alignment and sampling that TAS sums over."""

from __future__ import annotations

import pytest
import torch

from metaprune.errors import ConfigError
from metaprune.search.nas.gumbel import gumbel_top2, linear_temperature
from metaprune.search.nas.interpolation import align_channels, channel_wise_interpolation, zero_pad_channels


@pytest.mark.parametrize("shape", [(2, 3, 5, 5), (4, 6), (1, 1, 2, 2)])
@pytest.mark.parametrize("width", [1, 4, 9])
def test_interpolation_aligns_the_channel_axis_and_keeps_the_rest(shape, width):
    features = torch.randn(shape)
    aligned = channel_wise_interpolation(features, width)
    assert aligned.shape == (shape[0], width, *shape[2:])


def test_interpolation_is_the_identity_when_widths_match():
    features = torch.randn(2, 7, 3, 3)
    assert channel_wise_interpolation(features, 7) is features
    assert torch.equal(align_channels(features, 7, "pad"), features)


def test_interpolation_resamples_a_linear_ramp_exactly_and_keeps_constants():
    ramp = torch.linspace(0, 1, 5).reshape(1, 5, 1, 1).expand(2, 5, 3, 3)
    assert torch.allclose(channel_wise_interpolation(ramp, 9)[0, :, 0, 0], torch.linspace(0, 1, 9))
    constant = torch.full((2, 4, 3, 3), 2.5)
    assert torch.allclose(channel_wise_interpolation(constant, 11), torch.full((2, 11, 3, 3), 2.5))


def test_interpolation_passes_gradients_to_every_input_channel():
    features = torch.randn(2, 4, 3, 3, requires_grad=True)
    channel_wise_interpolation(features, 8).sum().backward()
    assert (features.grad.abs().sum(dim=(0, 2, 3)) > 0).all()


def test_zero_padding_appends_zero_channels_and_refuses_to_shrink():
    features = torch.randn(2, 3, 4, 4)
    padded = zero_pad_channels(features, 5)
    assert torch.equal(padded[:, :3], features) and not padded[:, 3:].any()
    with pytest.raises(ConfigError, match="cannot zero-pad"):
        zero_pad_channels(features, 2)


@pytest.mark.parametrize("bad", [dict(width=0), dict(width=2.5), dict(mode="nearest")])
def test_bad_alignment_arguments_are_config_errors(bad):
    with pytest.raises(ConfigError):
        align_channels(torch.randn(1, 3, 2, 2), bad.get("width", 4), bad.get("mode", "pad"))


def test_gumbel_top2_picks_two_distinct_candidates_with_weights_summing_to_one():
    logits = torch.randn(6, requires_grad=True)
    indices, weights = gumbel_top2(logits, temperature=1.0)
    assert indices.numel() == 2 and indices[0] != indices[1]
    assert float(weights.detach().sum()) == pytest.approx(1.0)
    (weights * torch.tensor([1.0, 3.0])).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_gumbel_top2_follows_the_logits_at_low_temperature():
    logits = torch.tensor([0.0, 0.0, 8.0, 7.0])
    picks = [set(gumbel_top2(logits, 0.1)[0].tolist()) for _ in range(50)]
    assert sum(pick == {2, 3} for pick in picks) > 40


def test_single_candidate_and_temperature_schedule():
    indices, weights = gumbel_top2(torch.zeros(1), 1.0)
    assert indices.tolist() == [0] and weights.tolist() == [1.0]
    assert linear_temperature(0, 5) == 10.0 and linear_temperature(4, 5) == pytest.approx(0.1)
    with pytest.raises(ConfigError):
        gumbel_top2(torch.zeros(3), 0.0)
