"""A loss on the rewritten network's output trains every metanetwork parameter."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from metaprune.meta import MetaNetwork, rewrite_parameters


@pytest.mark.parametrize("training", [False, True])
def test_gradient_reaches_every_metanetwork_parameter(resnet, images, training):
    torch.manual_seed(0)
    metanet = MetaNetwork(hidden=8, layers=2)
    resnet.train(training)
    parameters = rewrite_parameters(metanet, resnet, images)
    functional_call(resnet, parameters, (images,)).square().mean().backward()
    for name, parameter in metanet.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_rewritten_parameters_drive_the_model_output(resnet, images):
    torch.manual_seed(0)
    metanet = MetaNetwork(hidden=8, layers=2, epsilon=0.0)
    parameters = rewrite_parameters(metanet, resnet, images)
    assert torch.equal(functional_call(resnet, parameters, (images,)), resnet(images))
    metanet.epsilon = 1.0
    with torch.no_grad():
        metanet.edge_decoder.lins[-1].bias.fill_(0.5)
    shifted = functional_call(resnet, rewrite_parameters(metanet, resnet, images), (images,))
    assert not torch.allclose(shifted, resnet(images), atol=1e-3)
