"""Reference architectures: output shapes, parameter counts, tracing and layer structure."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from metaprune.models import create_model, list_models

IMAGE_SIZES = (8, 16, 32)
FX_TRACEABLE = ["mlp", "resnet20", "resnet32", "resnet56", "vgg11", "vgg16", "vgg19"]


def parameter_count(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


@pytest.mark.parametrize("image_size", IMAGE_SIZES)
@pytest.mark.parametrize("in_channels", (1, 3))
@pytest.mark.parametrize("name", list_models())
def test_output_shape_for_every_model_channels_and_size(name, in_channels, image_size):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, in_channels=in_channels, image_size=image_size).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, in_channels, image_size, image_size))
    assert logits.shape == (2, 7)
    assert torch.isfinite(logits).all()


def test_resnet20_parameter_count_matches_hand_count():
    # ResNet-20, 3 input channels, 10 classes, width 1, 1x1-conv+BN projection shortcuts.
    #   stem:   conv 3*16*9 = 432, BN 2*16 = 32                                   ->    464
    #   stage1: 3 blocks x 2 x (conv 16*16*9 = 2304 + BN 32)                       ->  14016
    #   stage2: block1: conv 16*32*9 = 4608 + BN 64, conv 32*32*9 = 9216 + BN 64,
    #           shortcut 16*32 = 512 + BN 64 = 14528; blocks 2-3: 2 x 2 x (9216 + 64) = 37120
    #                                                                              ->  51648
    #   stage3: block1: 32*64*9 = 18432 + 128, 64*64*9 = 36864 + 128, 32*64 = 2048 + 128
    #           = 57728; blocks 2-3: 2 x 2 x (36864 + 128) = 147968                -> 205696
    #   head:   64*10 + 10                                                         ->    650
    #   total = 464 + 14016 + 51648 + 205696 + 650 = 272474
    #   (= the 269,722 of the option-A ResNet-20 plus 2,752 for the two projections)
    assert parameter_count(create_model("resnet20", in_channels=3)) == 272474


def test_resnet_depths_and_width_multiplier():
    def convs(model):
        # 3x3 convs only: the layers counted by the depth (the stem and two per block)
        return sum(1 for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3))

    for name, depth in (("resnet20", 20), ("resnet32", 32), ("resnet56", 56)):
        assert convs(create_model(name)) + 1 == depth  # + the linear head
    half = create_model("resnet20", width=0.5)
    assert [half.conv1.out_channels, half.layer2[0].conv1.out_channels, half.fc.in_features] == [8, 16, 32]


def test_vgg_conv_counts_and_pool_skipping():
    def layers(model, kind):
        return sum(1 for m in model.modules() if isinstance(m, kind))

    for name, conv_count in (("vgg11", 8), ("vgg16", 13), ("vgg19", 16)):
        assert layers(create_model(name), nn.Conv2d) == conv_count
    # five pools at 32x32 reach 1x1; at 16 and 8 the pools that would go below 1x1 are dropped
    assert [layers(create_model("vgg16", image_size=size), nn.MaxPool2d) for size in (32, 16, 8)] == [5, 4, 3]
    assert create_model("vgg11", width=0.25).classifier.in_features == 128


def test_mlp_layer_sizes():
    model = create_model("mlp", num_classes=4, in_channels=3, image_size=8, hidden_sizes=(32,))
    linear_shapes = [tuple(m.weight.shape) for m in model.modules() if isinstance(m, nn.Linear)]
    assert linear_shapes == [(32, 3 * 8 * 8), (4, 32)]


def test_vit_tiny_defaults():
    model = create_model("vit_tiny", image_size=32)
    assert len(model.blocks) == 4
    attention = model.blocks[0].attn
    assert attention.num_heads == 4
    assert tuple(attention.qkv.weight.shape) == (3 * 64, 64)
    assert tuple(model.pos_embed.shape) == (1, (32 // 4) ** 2 + 1, 64)


@pytest.mark.parametrize("name", FX_TRACEABLE)
def test_symbolic_trace_matches_eager(name):
    torch.manual_seed(0)
    model = create_model(name, in_channels=3, image_size=16).eval()
    traced = torch.fx.symbolic_trace(model)
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(traced(x), model(x), rtol=0, atol=0)
