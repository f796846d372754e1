"""Every model can be pruned structurally by torch-pruning's DependencyGraph.

Exactness check: before pruning, the channels to be removed are silenced (their BatchNorm
affine parameters, or the producing Linear rows, set to zero, so they carry exactly 0 after
the activation); removing them must then leave the logits unchanged.
"""

from __future__ import annotations

import pytest
import torch
import torch_pruning as tp
from torch import nn

from metaprune.models import create_model

PRUNED_CHANNELS = [0, 3, 5]


def first_of(model: nn.Module, kind: type[nn.Module]) -> nn.Module:
    return next(module for module in model.modules() if isinstance(module, kind))


# name -> (layer whose output channels are pruned, pruning function of that layer)
PRUNING_TARGETS = {
    "resnet20": (lambda m: m.conv1, tp.prune_conv_out_channels),  # the whole stage-1 residual stream
    "resnet32": (lambda m: m.layer3[2].conv1, tp.prune_conv_out_channels),  # inside one block
    "resnet56": (lambda m: m.layer2[0].conv2, tp.prune_conv_out_channels),  # stage-2 stream incl. projection
    "vgg11": (lambda m: first_of(m, nn.Conv2d), tp.prune_conv_out_channels),
    "vgg16": (lambda m: m.features[-3], tp.prune_conv_out_channels),  # last conv, feeds the head
    "vgg19": (lambda m: first_of(m, nn.Conv2d), tp.prune_conv_out_channels),
    "mlp": (lambda m: first_of(m, nn.Linear), tp.prune_linear_out_channels),
    "vit_tiny": (lambda m: m.blocks[1].mlp.fc1, tp.prune_linear_out_channels),
}


def calibrate_batchnorm(model: nn.Module, x: torch.Tensor) -> None:
    """Set BN running statistics from ``x`` so that activations are alive (about half positive);
    with the default statistics deep nets have dead channels that would make pruning trivially exact."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average: one batch sets the statistics exactly
    model.train()
    with torch.no_grad():
        model(x)
    model.eval()


def silence_channels(group) -> None:
    """Zero what produces the pruned channels, so they are exactly 0 downstream."""
    with torch.no_grad():
        for item in group:
            module, handler = item.dep.target.module, item.dep.handler
            if handler == tp.prune_batchnorm_out_channels or handler == tp.prune_linear_out_channels:
                module.weight[item.idxs] = 0
                module.bias[item.idxs] = 0


@pytest.mark.parametrize("name", sorted(PRUNING_TARGETS))
def test_dependency_graph_prunes_a_group_exactly(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=6, in_channels=3, image_size=16)
    x = torch.randn(4, 3, 16, 16)
    calibrate_batchnorm(model, torch.randn(32, 3, 16, 16))
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=x[:1], verbose=False)
    select_layer, pruning_fn = PRUNING_TARGETS[name]
    layer = select_layer(model)
    channels_before = layer.weight.shape[0]
    group = graph.get_pruning_group(layer, pruning_fn, idxs=PRUNED_CHANNELS)
    silence_channels(group)
    with torch.no_grad():
        expected = model(x)
    parameters_before = sum(p.numel() for p in model.parameters())
    group.prune()
    assert layer.weight.shape[0] == channels_before - len(PRUNED_CHANNELS)
    assert sum(p.numel() for p in model.parameters()) < parameters_before
    with torch.no_grad():
        pruned = model(x)
    assert pruned.shape == (4, 6)
    torch.testing.assert_close(pruned, expected, rtol=1e-5, atol=1e-5)


def qkv_rows(dim: int, num_heads: int, keep) -> list[int]:
    """Indices of the qkv output rows kept when ``keep(head, channel)`` is true."""
    head_dim = dim // num_heads
    return [part * dim + head * head_dim + channel
            for part in range(3) for head in range(num_heads) for channel in range(head_dim)
            if keep(head, channel)]


def shrink_attention(attention, keep, heads_left: int) -> None:
    """Physically keep only the (head, channel) pairs for which ``keep`` is true."""
    dim = attention.proj.in_features
    rows = qkv_rows(dim, attention.num_heads, keep)
    value_rows = [row - 2 * dim for row in rows if row >= 2 * dim]
    with torch.no_grad():
        qkv = nn.Linear(attention.qkv.in_features, len(rows))
        qkv.weight.copy_(attention.qkv.weight[rows])
        qkv.bias.copy_(attention.qkv.bias[rows])
        proj = nn.Linear(len(value_rows), attention.proj.out_features)
        proj.weight.copy_(attention.proj.weight[:, value_rows])
        proj.bias.copy_(attention.proj.bias)
    attention.qkv, attention.proj, attention.num_heads = qkv, proj, heads_left


def zero_qkv_rows(attention, silenced) -> None:
    dim = attention.proj.in_features
    with torch.no_grad():
        for row in qkv_rows(dim, attention.num_heads, silenced):
            attention.qkv.weight[row] = 0
            attention.qkv.bias[row] = 0


@pytest.mark.parametrize(
    ("image_size", "silenced", "heads_left", "attention_dim_left"),
    [
        (16, lambda head, channel: head == 2, 3, 3 * 16),  # a whole head
        (8, lambda head, channel: channel == 0, 4, 4 * 15),  # channel 0 inside every head
    ],
    ids=["whole-head", "channel-in-every-head"],
)
def test_vit_attention_survives_removing_heads_or_head_channels_exactly(image_size, silenced, heads_left,
                                                                        attention_dim_left):
    torch.manual_seed(0)
    model = create_model("vit_tiny", in_channels=1, image_size=image_size).eval()
    attention = model.blocks[1].attn
    # zero q, k and v of the removed (head, channel) pairs: they add nothing to q.k^T (the
    # softmax scale is fixed) nor to the output, so removing them must not change the logits
    zero_qkv_rows(attention, silenced)
    x = torch.randn(3, 1, image_size, image_size)
    with torch.no_grad():
        expected = model(x)
        shrink_attention(attention, lambda head, channel: not silenced(head, channel), heads_left)
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)
    assert attention.qkv.out_features == 3 * attention_dim_left
    assert attention.proj.in_features == attention_dim_left
