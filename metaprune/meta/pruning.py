"""Meta-pruning a network: metanetwork rewrite, BatchNorm re-estimation, then group-L2 ranking.

``metaprune prune --criterion meta --metanet PATH`` goes through the ordinary pruning
pipeline; the only differences are that the dense copy is rewritten by the metanetwork (see
:func:`prepare_for_pruning`) before it is pruned and that channels are ranked by
:class:`MetaCriterion`, the group L2 norm of the rewritten weights.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from metaprune.meta.metanetwork import MetaNetwork
from metaprune.meta.rewrite import rewrite_network
from metaprune.prune.criteria import GroupL2Criterion
from metaprune.train import recalibrate_batchnorm


class MetaCriterion(GroupL2Criterion):
    """Group L2 norm of channels rewritten by a metanetwork (the rewrite happens before ranking)."""

    name = "meta"


def prepare_for_pruning(metanet: MetaNetwork, model: nn.Module, example_input: torch.Tensor,
                        loader: Iterable) -> nn.Module:
    """A copy of ``model`` rewritten by ``metanet``, with BatchNorm statistics re-estimated on ``loader``.

    The metanetwork edits weights and BatchNorm affine parameters but not the running
    statistics, which no longer match the rewritten weights; a pass over training batches in
    train mode (no gradient) re-estimates them. ``model`` itself is untouched.
    """
    rewritten = rewrite_network(metanet, model, example_input)
    return recalibrate_batchnorm(rewritten, loader).eval()
