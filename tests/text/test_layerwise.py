"""Layer-wise pruning without retraining: magnitude, Wanda, SparseGPT and the sequential driver."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from metaprune.errors import ConfigError, PruneError
from metaprune.prune.layerwise import (
    LAYERWISE_METHODS,
    InputStats,
    SparsityTarget,
    lowest_mask,
    prune_blocks,
    relative_error,
)
from metaprune.prune.sparsegpt import sparsegpt
from metaprune.prune.wanda import wanda


def correlated_inputs(tokens: int = 512, features: int = 16, seed: int = 0) -> torch.Tensor:
    """Inputs with very different feature scales and strong correlations (where OBS updates pay off)."""
    generator = torch.Generator().manual_seed(seed)
    base = torch.randn(tokens, features, generator=generator)
    mixing = torch.randn(features, features, generator=generator) * 0.5 + torch.eye(features)
    return (base @ mixing) * torch.logspace(-1, 1, features)


def stats_of(inputs: torch.Tensor) -> InputStats:
    stats = InputStats(inputs.shape[1])
    stats.add(inputs)
    return stats


@pytest.mark.parametrize(("sparsity", "n_m"), [(0.0, None), (1.0, None), (-0.1, None), (None, (4, 4)),
                                               (None, (5, 4)), (None, (0, 4)), (0.5, (2, 4)), (None, None)])
def test_a_target_needs_a_sparsity_in_0_1_or_n_below_m(sparsity, n_m) -> None:
    with pytest.raises(ConfigError):
        SparsityTarget(sparsity=sparsity, n_m=n_m)


def test_lowest_mask_per_row_per_layer_and_n_m() -> None:
    scores = torch.tensor([[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0]])
    half = SparsityTarget(sparsity=0.5)
    assert lowest_mask(scores, half, per_row=True).tolist() == [[True, True, False, False]] * 2
    assert lowest_mask(scores, half, per_row=False).tolist() == [[True, True, True, True], [False] * 4]
    one_of_two = SparsityTarget(n_m=(1, 2))
    assert lowest_mask(scores, one_of_two, per_row=True).tolist() == [[True, False, True, False]] * 2
    with pytest.raises(PruneError, match="divisible by 3"):
        lowest_mask(scores, SparsityTarget(n_m=(1, 3)), per_row=True)


def test_wanda_scales_magnitudes_by_input_norms_per_row() -> None:
    weight = torch.tensor([[1.0, 1.0, 1.0, 1.0], [4.0, 3.0, 2.0, 1.0]])
    inputs = torch.tensor([[1.0, 2.0, 3.0, 4.0]])  # ||X_j|| = 1, 2, 3, 4
    pruned = wanda(weight, stats_of(inputs), SparsityTarget(sparsity=0.5))
    # row 0 scores 1, 2, 3, 4; row 1 scores 4, 6, 6, 4 (ties broken by position)
    assert (pruned[0] == 0).tolist() == [True, True, False, False]
    assert int((pruned[1] == 0).sum()) == 2 and pruned[1, 1] == 3.0 and pruned[1, 2] == 2.0


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
@pytest.mark.parametrize("target", [SparsityTarget(sparsity=0.6), SparsityTarget(n_m=(2, 4)),
                                    SparsityTarget(n_m=(4, 8))])
def test_every_method_meets_its_target(method: str, target: SparsityTarget) -> None:
    weight = torch.randn(8, 40)
    pruned = LAYERWISE_METHODS.get(method)(weight, stats_of(correlated_inputs(features=40)), target)
    assert pruned.shape == weight.shape
    assert float((pruned == 0).float().mean()) == pytest.approx(target.fraction, abs=0.01)
    if target.n_m is not None:
        n, m = target.n_m
        assert ((pruned.reshape(8, -1, m) != 0).sum(-1) <= n).all()


@pytest.mark.parametrize("target", [SparsityTarget(sparsity=0.7), SparsityTarget(n_m=(2, 4))])
def test_sparsegpt_reconstructs_outputs_better_than_wanda_and_magnitude(target: SparsityTarget) -> None:
    torch.manual_seed(0)
    weight, inputs = torch.randn(32, 16), correlated_inputs()
    stats = stats_of(inputs)
    errors = {name: relative_error(weight, LAYERWISE_METHODS.get(name)(weight, stats, target), stats)
              for name in ("magnitude", "wanda", "sparsegpt")}
    assert errors["sparsegpt"] < errors["wanda"] < errors["magnitude"]


def test_sparsegpt_updates_kept_weights_and_matches_the_closed_form_for_one_pruned_column() -> None:
    # two features; pruning column 0 of a one-row layer: the OBS update moves column 1 by
    # -w0 * [H^-1]_01 / [H^-1]_00 = w0 * H_01 / H_11 (least squares of w0 x0 + w1 x1 on x1)
    inputs = torch.tensor([[1.0, 1.0], [1.0, -0.5], [2.0, 1.5], [0.5, 0.0]], dtype=torch.float64)
    weight = torch.tensor([[0.1, 3.0]], dtype=torch.float64)
    stats = stats_of(inputs)
    pruned = sparsegpt(weight, stats, SparsityTarget(sparsity=0.5), dampening=0.0)
    hessian = inputs.T @ inputs
    expected = 3.0 + 0.1 * hessian[0, 1] / hessian[1, 1]
    assert pruned[0, 0] == 0.0
    assert float(pruned[0, 1]) == pytest.approx(float(expected), rel=1e-9)


class Block(nn.Module):
    """A residual MLP block called as ``block(hidden, attention_mask=...)``."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.up, self.down = nn.Linear(width, 2 * width), nn.Linear(2 * width, width)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return hidden + self.down(torch.relu(self.up(hidden)))


class Stack(nn.Module):
    def __init__(self, width: int = 8, depth: int = 3) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, width)
        self.blocks = nn.ModuleList(Block(width) for _ in range(depth))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.embed(input_ids)
        for block in self.blocks:
            hidden = block(hidden, attention_mask=attention_mask)
        return hidden


def test_prune_blocks_prunes_every_linear_in_order_and_counts_only_real_tokens() -> None:
    torch.manual_seed(0)
    model = Stack()
    batches = [{"input_ids": torch.randint(0, 20, (4, 6)),
                "attention_mask": torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [1] * 3 + [0] * 3, [1] * 6])}
               for _ in range(2)]
    reports = prune_blocks(model, model.blocks, batches, "sparsegpt", SparsityTarget(sparsity=0.5), prefix="blocks.")
    assert [r.name for r in reports] == [f"blocks.{i}.{layer}" for i in range(3) for layer in ("up", "down")]
    assert all(r.tokens == 2 * (6 + 4 + 3 + 6) for r in reports)
    assert all(r.sparsity == pytest.approx(0.5) for r in reports)
    for block in model.blocks:
        assert float((block.up.weight == 0).float().mean()) == pytest.approx(0.5)
    with pytest.raises(ConfigError, match="at least one calibration batch"):
        prune_blocks(model, model.blocks, [], "wanda", SparsityTarget(sparsity=0.5))
    with pytest.raises(ConfigError, match="unknown layer-wise method"):
        prune_blocks(model, model.blocks, batches, "obs", SparsityTarget(sparsity=0.5))
