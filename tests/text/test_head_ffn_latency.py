"""Latency-aware head/FFN search: measured unit times, a time limit in the search, rounded FFN sizes."""

from __future__ import annotations

import pytest
import torch

from metaprune.errors import ConfigError
from metaprune.prune import head_ffn
from metaprune.prune.head_ffn_timing import UnitTimes, measure_unit_times


def test_a_time_limit_trades_expensive_heads_for_neurons() -> None:
    costs = head_ffn.UnitCosts(head=10, neuron=1, fixed=0)
    heads = [torch.tensor([5.0, 4.0]), torch.tensor([5.0, 4.0])]
    neurons = [torch.full((10,), 0.3)] * 2
    by_flops = head_ffn.search_masks(heads, neurons, costs, max_flops=40)
    assert by_flops.kept() == ([2, 2], [0, 0])  # heads score more per FLOP
    times = UnitTimes(head=30.0, neuron=1.0, fixed=5.0, layers=2)  # a head costs 3x its FLOPs in time
    by_time = head_ffn.search_masks(heads, neurons, costs, max_flops=40, times=times, max_time=10 + 60 + 20)
    kept_heads, kept_neurons = by_time.kept()
    assert kept_heads == [1, 1] and sum(kept_neurons) == 20
    assert times.time(sum(kept_heads), sum(kept_neurons)) <= 90 and costs.flops(2, 20) <= 40
    with pytest.raises(ConfigError, match="needs both"):
        head_ffn.search_masks(heads, neurons, costs, max_flops=40, times=times)


def test_rounding_keeps_multiples_within_the_budget_and_gives_the_rest_to_the_best_layer() -> None:
    costs = head_ffn.UnitCosts(head=10, neuron=1, fixed=0)
    scores = [torch.linspace(2.0, 1.0, 16), torch.linspace(1.0, 0.0, 16)]
    masks = head_ffn.StructureMasks([torch.ones(1), torch.ones(1)],
                                    [(torch.arange(16) < 7).float(), (torch.arange(16) < 6).float()])
    rounded = head_ffn.round_neurons(masks, scores, 4, costs, max_flops=20 + 13)
    assert rounded.kept() == ([1, 1], [8, 4])  # 4 + 4, then the best next block (layer 0) while 13 fits
    assert rounded.neurons[0][:8].tolist() == [1.0] * 8
    assert head_ffn.round_neurons(masks, scores, 1, costs, 33).kept() == masks.kept()
    with pytest.raises(ConfigError, match="--round-to"):
        head_ffn.round_neurons(masks, scores, 0, costs, 33)


def test_measured_unit_times_are_positive_and_predict_the_dense_layer(tiny_bert) -> None:
    layers = head_ffn.encoder_layers(tiny_bert)
    times = measure_unit_times(tiny_bert, layers, batch=2, sequence_length=16, repeats=1)
    assert times.head > 0 and times.neuron > 0 and times.fixed >= 0 and times.layers == 2
    assert times.time(8, 128) == pytest.approx(2 * times.fixed + 8 * times.head + 128 * times.neuron)
    assert set(times.to_dict()) == {"head_ms", "neuron_ms", "fixed_ms", "layers"}
    with pytest.raises(ConfigError):
        measure_unit_times(tiny_bert, layers, repeats=0)
