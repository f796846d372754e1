"""First-order bilevel optimisation: weights on one half of the training split, architecture on the other.

Differentiable searches (DARTS, TAS, DASS) alternate two updates: the network weights
:math:`w` minimise the loss on half :math:`A` of the training split for the current
architecture, and the architecture parameters :math:`\\alpha` minimise the loss on half
:math:`B` for the current weights (the first-order approximation
:math:`\\nabla_\\alpha L_B(w^*(\\alpha), \\alpha) \\approx \\nabla_\\alpha L_B(w, \\alpha)`). The
validation split stays untouched for model selection.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from metaprune.errors import ConfigError

Batch = tuple[torch.Tensor, torch.Tensor]


def half_loaders(dataset: Dataset, batch_size: int, seed: int = 0) -> tuple[DataLoader, DataLoader]:
    """Shuffled loaders over two disjoint random halves of ``dataset`` (weights, architecture)."""
    size = len(dataset)
    if size < 2 or batch_size < 1:
        raise ConfigError(f"a bilevel search needs >= 2 training samples and batch_size >= 1, got {size}, {batch_size}")
    order = torch.randperm(size, generator=torch.Generator().manual_seed(seed)).tolist()
    halves = (order[: size // 2], order[size // 2:])
    return tuple(DataLoader(Subset(dataset, half), batch_size=batch_size, shuffle=True, drop_last=len(half) > batch_size,
                            generator=torch.Generator().manual_seed(seed + part))
                 for part, half in enumerate(halves))  # type: ignore[return-value]


def alternating_batches(weight_loader: DataLoader, arch_loader: DataLoader,
                        max_steps: int | None = None) -> Iterator[tuple[Batch, Batch]]:
    """One epoch of (weight batch, architecture batch) pairs; the architecture loader restarts if shorter."""
    arch_batches = iter(arch_loader)
    for step, weight_batch in enumerate(weight_loader):
        if max_steps is not None and step >= max_steps:
            return
        try:
            arch_batch = next(arch_batches)
        except StopIteration:
            arch_batches = iter(arch_loader)
            arch_batch = next(arch_batches)
        yield weight_batch, arch_batch


def bilevel_optimizers(
    weights: Iterable[torch.nn.Parameter], architecture: Iterable[torch.nn.Parameter], *, epochs: int,
    weight_lr: float, weight_decay: float, arch_lr: float, arch_weight_decay: float, nesterov: bool = False,
) -> tuple[torch.optim.SGD, torch.optim.lr_scheduler.CosineAnnealingLR, torch.optim.Adam]:
    """DARTS's optimisers, shared by TAS and DASS: ``(weight optimiser, its schedule, architecture optimiser)``.

    The weights get SGD (momentum 0.9) with a cosine schedule over ``epochs``; the architecture
    parameters get Adam with betas (0.5, 0.999).
    """
    weight_optimizer = torch.optim.SGD(weights, lr=weight_lr, momentum=0.9, weight_decay=weight_decay, nesterov=nesterov)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(weight_optimizer, epochs)
    arch_optimizer = torch.optim.Adam(architecture, lr=arch_lr, betas=(0.5, 0.999), weight_decay=arch_weight_decay)
    return weight_optimizer, schedule, arch_optimizer
