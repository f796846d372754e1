"""Gates on stock diffusers modules equal the physically sliced expert; MAC accounting equals FlopCounterMode."""

from __future__ import annotations

import pytest
import torch
from diffusion_helpers import CONTEXT_LENGTH, random_hard_gates

from metaprune.diffusion.gates import GateController
from metaprune.diffusion.macs import MacModel, count_unet_macs
from metaprune.diffusion.slicing import slice_unet
from metaprune.errors import ConfigError, PruneError


def _inputs(batch: int = 2):
    generator = torch.Generator().manual_seed(1)
    sample = torch.randn(batch, 1, 16, 16, generator=generator)
    context = torch.randn(batch, CONTEXT_LENGTH, 24, generator=generator)
    return sample, torch.tensor([10, 700][:batch]), context


def _run(unet, inputs):
    sample, steps, context = inputs
    with torch.no_grad():
        return unet(sample, steps, encoder_hidden_states=context).sample


def test_layout_finds_every_kind_of_gate(tiny_layout):
    counts = tiny_layout.counts()
    assert counts["channel"] == 8 * 4 and counts["ff"] == 4 * 4 and counts["depth"] == 7
    assert counts["head"] == 8 * 4  # 4 transformers x (self + cross) attention x 4 heads


def test_all_ones_gates_reproduce_the_teacher_exactly(tiny_unet, tiny_layout):
    inputs = _run(tiny_unet, _inputs())
    controller = GateController(tiny_unet, tiny_layout)
    with controller.gating(torch.ones(len(tiny_layout))):
        gated = _run(tiny_unet, _inputs())
    controller.remove()
    assert torch.equal(gated, inputs)


@pytest.mark.parametrize("kinds", [("channel",), ("head",), ("ff",), ("depth",), None])
def test_hard_gates_equal_the_sliced_expert(tiny_unet, tiny_layout, kinds):
    gates = random_hard_gates(tiny_layout, kinds=kinds, seed=len(kinds or ()))
    assert gates.sum() < len(tiny_layout)
    controller = GateController(tiny_unet, tiny_layout)
    with controller.gating(gates):
        gated = _run(tiny_unet, _inputs())
    controller.remove()
    expert = slice_unet(tiny_unet, tiny_layout, gates)
    assert (gated - _run(expert, _inputs())).abs().max() <= 1e-5
    assert (gated - _run(tiny_unet, _inputs())).abs().max() > 1e-3  # the gates did change the model
    assert sum(p.numel() for p in expert.parameters()) < sum(p.numel() for p in tiny_unet.parameters())


def test_per_sample_gates_run_different_architectures_in_one_batch(tiny_unet, tiny_layout):
    first, second = random_hard_gates(tiny_layout, seed=3), torch.ones(len(tiny_layout))
    controller = GateController(tiny_unet, tiny_layout)
    with controller.gating(torch.stack([first, second])):
        gated = _run(tiny_unet, _inputs())
    controller.remove()
    assert (gated[:1] - _run(slice_unet(tiny_unet, tiny_layout, first), _inputs())[:1]).abs().max() <= 1e-5
    assert torch.allclose(gated[1:], _run(tiny_unet, _inputs())[1:], atol=1e-6)


def test_analytic_macs_equal_flop_counter_of_the_sliced_expert(tiny_unet, tiny_layout):
    macs = MacModel(tiny_unet, tiny_layout, CONTEXT_LENGTH)
    assert macs.macs(torch.ones(len(tiny_layout))).item() == macs.dense == count_unet_macs(tiny_unet, CONTEXT_LENGTH)
    for seed in range(3):
        gates = random_hard_gates(tiny_layout, keep=0.6, seed=seed)
        expert = slice_unet(tiny_unet, tiny_layout, gates)
        assert macs.macs(gates).item() == count_unet_macs(expert, CONTEXT_LENGTH)


def test_soft_gates_have_mac_gradients(tiny_unet, tiny_layout):
    gates = torch.full((2, len(tiny_layout)), 0.5, requires_grad=True)
    MacModel(tiny_unet, tiny_layout, CONTEXT_LENGTH).ratio(gates).sum().backward()
    assert (gates.grad > 0).all()


def test_slicing_rejects_soft_or_empty_gates(tiny_unet, tiny_layout):
    with pytest.raises(PruneError, match="hard gates"):
        slice_unet(tiny_unet, tiny_layout, torch.full((len(tiny_layout),), 0.5))
    empty = torch.ones(len(tiny_layout))
    group = next(group for group in tiny_layout.groups if group.kind == "channel" and group.parent is None)
    empty[tiny_layout.offsets[group.name]:tiny_layout.offsets[group.name] + group.size] = 0
    with pytest.raises(PruneError, match="keeps nothing"):
        slice_unet(tiny_unet, tiny_layout, empty)
    with pytest.raises(ConfigError, match="shape"):
        slice_unet(tiny_unet, tiny_layout, torch.ones(3))


@pytest.mark.parametrize("criterion", ["magnitude", "group_l2"])
def test_static_baseline_meets_the_mac_target(tiny_unet, tiny_layout, criterion):
    from metaprune.diffusion.static import static_gates

    macs = MacModel(tiny_unet, tiny_layout, CONTEXT_LENGTH)
    gates = static_gates(tiny_unet, tiny_layout, macs, 0.6, criterion)
    ratio = macs.ratio(gates).item()
    assert ratio <= 0.6
    for gate in (gates == 0).nonzero().squeeze(1).tolist():  # filled up: no removed gate fits back in the budget
        assert macs.ratio(gates.index_fill(0, torch.tensor([gate]), 1.0)).item() > 0.6
    assert count_unet_macs(slice_unet(tiny_unet, tiny_layout, gates), CONTEXT_LENGTH) == macs.macs(gates).item()
