"""The engine on architectures outside the registry: channel chunks, exact costs, checked removals."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metaprune.errors import ConfigError, PruneError
from metaprune.flops import count_flops, effective_flops
from metaprune.prune.cost import GroupCostModel
from metaprune.prune.criteria import get_criterion
from metaprune.prune.groups import ModelGroups
from metaprune.prune.masks import MaskPruner, check_n_m
from metaprune.prune.saving import load_run, save_run
from metaprune.prune.structured import StructuredPruner, prune_to_flops

X = torch.randn(2, 3, 16, 16)


class GroupedBlock(nn.Module):
    """A ResNeXt-style bottleneck: 1x1, grouped 3x3 (groups=4), 1x1, residual."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1)
        self.reduce = nn.Conv2d(32, 24, 1)
        self.grouped = nn.Conv2d(24, 24, 3, padding=1, groups=4)
        self.expand = nn.Conv2d(24, 32, 1)
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        x = F.relu(x + self.expand(F.relu(self.grouped(F.relu(self.reduce(x))))))
        return self.head(x.mean((2, 3)))


class ConcatNet(nn.Module):
    """Two DenseNet-style concatenations feeding one 1x1 transition and a transposed conv."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 12, 3, padding=1)
        self.first = nn.Conv2d(12, 8, 3, padding=1)
        self.second = nn.Conv2d(20, 8, 3, padding=1)
        self.transition = nn.Conv2d(28, 16, 1)
        self.up = nn.ConvTranspose2d(16, 8, 2, stride=2)
        self.out = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        x = torch.cat([x, F.relu(self.first(x))], 1)
        x = torch.cat([x, F.relu(self.second(x))], 1)
        return self.out(F.relu(self.up(F.relu(self.transition(x)))))


class AttentionNet(nn.Module):
    def __init__(self, dim: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.embed = nn.Linear(12, dim)
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.head = nn.Linear(dim, 10)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        x = x + self.attention(x, x, x, need_weights=False)[0]
        return self.head(x.mean(1))


class HardCodedReshapeNet(nn.Module):
    """Flattens to a hard-coded width: no dependency graph can know that 4096 means 16 channels."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.head = nn.Linear(16 * 16 * 16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.conv(x)).reshape(x.shape[0], 4096))


class DictNet(nn.Module):
    """Keyword inputs and a dict output, like a Hugging Face model."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(12, 32)
        self.logits = nn.Linear(32, 10)

    def forward(self, features: torch.Tensor, scale: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.logits(F.relu(self.hidden(features))) * scale}


def test_a_grouped_conv_loses_the_same_channels_in_every_group_and_the_budget_holds():
    model = GroupedBlock().eval()
    groups = ModelGroups(model, X)
    assert groups.by_name["reduce"].step == 4
    dense = count_flops(model, X)
    prune_to_flops(model, X, 0.5 * dense, get_criterion("group_l2"))
    assert model.grouped.in_channels % 4 == 0 and model.grouped.out_channels % 4 == 0
    assert model(X).shape == (2, 10)
    assert count_flops(model, X) == pytest.approx(0.5 * dense, rel=0.02)


def test_the_cost_model_is_exact_for_concatenations_and_transposed_convs():
    model = ConcatNet().eval()
    groups = ModelGroups(model, X)
    assert "up" in groups.by_name  # a transposed conv roots a group of its own
    assert set(groups.by_name["stem"].in_layers) >= {"first", "second", "transition"}
    cost = GroupCostModel(groups)
    assert cost.dense_flops == count_flops(model, X)
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        keep = {name: float(torch.rand(1, generator=generator)) * 0.8 + 0.2 for name in groups.by_name}
        pruned = copy.deepcopy(model)
        pruned_groups = ModelGroups(pruned, X)
        counts = {}
        for group in pruned_groups.groups:
            counts[group.name] = max(1, round(keep[group.name] * group.size))
            order = list(range(group.size - counts[group.name]))
            pruned_groups.remove(group, order)
        analytic = cost.flops(torch.tensor([float(counts[name]) for name in cost.group_names]))
        assert analytic == pytest.approx(count_flops(pruned, X), rel=1e-9)


def test_structured_pruning_to_half_meets_the_budget_on_concatenations():
    model = ConcatNet().eval()
    dense = count_flops(model, X)
    pruner = StructuredPruner(model, X, get_criterion("group_l2"))
    pruner.prune_to(model, 0.5)
    assert count_flops(model, X) == pytest.approx(0.5 * dense, rel=0.02)
    assert model(X).shape == (2, 2, 32, 32)


def test_multihead_attention_flops_are_the_same_on_the_fused_and_the_training_path():
    model = AttentionNet()
    tokens = torch.randn(2, 5, 12)
    fused = count_flops(model, tokens)  # eval + no_grad: PyTorch's fused kernel
    embed_and_head = 2 * 2 * 5 * 12 * 32 + 2 * 2 * 32 * 10
    attention = 2 * 2 * 32 * 32 * (2 * 5 + 2 * 5) + 4 * 2 * 5 * 5 * 32
    assert fused == embed_and_head + attention
    model.train()
    from torch.utils.flop_counter import FlopCounterMode

    from metaprune.flops import _CPU_ATTENTION

    with FlopCounterMode(display=False, custom_mapping=_CPU_ATTENTION) as counter:
        model(tokens)
    assert counter.get_total_flops() == fused


def test_multihead_attention_keeps_its_heads_when_the_embedding_shrinks():
    """The embedding shrinks in whole steps of 4 (one per head): 24 keeps 0.59 of the FLOPs, 20 keeps 0.43."""
    model = AttentionNet().eval()
    tokens = torch.randn(2, 5, 12)
    groups = ModelGroups(model, tokens)
    cost = GroupCostModel(groups)
    StructuredPruner(model, tokens, get_criterion("l1")).prune_to(model, 0.5)
    assert model.attention.num_heads == 4 and model.attention.embed_dim in (20, 24)
    assert count_flops(model, tokens) == cost.flops(torch.tensor([float(model.attention.embed_dim)]))
    assert model(tokens).shape == (2, 10)


def test_lstm_flops_are_counted():
    model = nn.LSTM(16, 32, batch_first=True).eval()
    steps = 3 * 7
    assert count_flops(model, torch.randn(3, 7, 16)) == 2 * steps * (128 * 16 + 128 * 32)


def test_a_removal_that_breaks_the_forward_restores_the_model_and_names_the_module():
    model = HardCodedReshapeNet().eval()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    with pytest.raises(PruneError, match=r"fails at the model \(HardCodedReshapeNet\): shape '\[2, 4096\]' is invalid"):
        prune_to_flops(model, X, 0.5 * count_flops(model, X), get_criterion("group_l2"))
    after = model.state_dict()
    assert set(after) == set(before) and all(torch.equal(before[name], after[name]) for name in before)
    assert model(X).shape == (2, 10)


def test_gradient_criteria_need_a_loss_for_dict_outputs_and_accept_one():
    model = DictNet().eval()
    inputs = {"features": torch.randn(4, 12), "scale": torch.ones(1)}
    targets = torch.tensor([0, 1, 2, 3])
    with pytest.raises(ConfigError, match="pass loss_fn"):
        StructuredPruner(model, inputs, get_criterion("taylor"), calibration=(inputs, targets)).prune_to(model, 0.5)

    def loss(output: dict, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output["logits"], labels)

    dense = count_flops(model, inputs)
    StructuredPruner(model, inputs, get_criterion("taylor"), calibration=(inputs, targets, loss)).prune_to(model, 0.5)
    assert count_flops(model, inputs) == pytest.approx(0.5 * dense, rel=0.05)
    assert model(**inputs)["logits"].shape == (4, 10)


def test_keyword_inputs_survive_save_and_load(tmp_path):
    model = DictNet().eval()
    inputs = {"features": torch.randn(4, 12), "scale": torch.ones(1)}
    pruner = StructuredPruner(model, inputs, get_criterion("l2"))
    pruner.prune_to(model, 0.5)
    save_run(tmp_path, model, example_input=inputs, history=pruner.history)
    loaded = load_run(tmp_path, model=DictNet())
    assert torch.equal(loaded(**inputs)["logits"], model(**inputs)["logits"])


class Conv1D(nn.Module):
    """Hugging Face's GPT-2 layer, re-declared: ``y = x W + b`` with ``W`` of shape ``[in, out]``."""

    def __init__(self, nf: int, nx: int) -> None:
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.randn(nx, nf))
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight).view(*x.shape[:-1], self.nf)


def test_masks_cover_hugging_face_conv1d_with_n_m_runs_along_the_inputs():
    model = nn.Sequential(Conv1D(32, 16), nn.ReLU(), nn.Linear(32, 10)).eval()
    x = torch.randn(3, 16)
    pruner = MaskPruner(model, x, get_criterion("l1"), pattern="n:m", n_m=(2, 4))
    pruner.prune_to(model, 0.5)
    assert check_n_m(model[0].weight.t(), 2, 4)
    dense = MaskPruner(copy.deepcopy(nn.Sequential(Conv1D(32, 16), nn.ReLU(), nn.Linear(32, 10))), x,
                       get_criterion("l1")).dense_flops
    assert effective_flops(model, x) < dense


def test_masked_attention_models_keep_training():
    """nn.MultiheadAttention reads out_proj.weight without calling out_proj: that layer stays dense."""
    model = AttentionNet()
    tokens = torch.randn(2, 5, 12)
    pruner = MaskPruner(model, tokens, get_criterion("l1"))
    assert "attention.out_proj" not in pruner.layers
    pruner.prune_to(model, 0.95)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    for _ in range(2):
        optimizer.zero_grad()
        model(tokens).square().mean().backward()
        optimizer.step()
    assert torch.isfinite(model(tokens)).all()
