"""DASS: Differentiable Architecture Search for Sparse neural networks (Mousavi et al., 2022), as a search method.

The DARTS cell search space is extended with sparse parametric operations
(:data:`~metaprune.search.nas.darts_ops.DASS_OPERATIONS`), whose convolutions are
:class:`~metaprune.search.nas.scored_ops.ScoredConv2d` at the target weight density. The
bilevel problem is solved first-order: the weights and mask scores minimise the training loss
on one half of the training split; the architecture weights minimise the loss of the *masked*
network on the other half, in which every dense convolution and linear layer is also
magnitude-masked to the target density, because that is how the derived network will run.
This sparsity-aware objective is what distinguishes DASS from DARTS followed by pruning.
The genotype is derived as in DARTS; the final network is built from it with every
Conv2d/Linear sparse at the target density and trained (weights and scores).

``metaprune search --method dass`` does not prune the given model (DASS designs a new
network): it reads the FLOPs budget ``r`` as the weight density (``--budget 0.1`` is 90%
sparsity), ``--trials`` as search epochs, and writes ``genotype.json``, ``cell_network.json``,
``sparse_model.safetensors`` (masks applied) and ``dass.json`` to the run directory. Its
``best_plan.json`` is an ``unstructured`` plan over the cell network's layers (per-layer
density), for the record; it cannot be re-applied to the ``--model`` network.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from metaprune.data import DataSplits, make_loaders
from metaprune.errors import ConfigError
from metaprune.flops import count_flops, effective_flops
from metaprune.prune.plan import PrunePlan
from metaprune.search.methods import SearchContext, SearchResult, TrialRecord, register_method
from metaprune.search.nas.bilevel import alternating_batches, bilevel_optimizers, half_loaders
from metaprune.search.nas.darts_network import CellNetwork, CellNetworkConfig, SearchNetwork, derived_network
from metaprune.search.nas.darts_ops import DASS_OPERATIONS
from metaprune.search.nas.genotype import Genotype
from metaprune.search.nas.scored_ops import (
    ScoredWeight,
    keep_count,
    materialize,
    score_layers,
    topk_mask,
    weight_density,
)
from metaprune.train import evaluate, fit, save_state, seed_everything


@dataclass
class DASSConfig:
    """Options of a DASS (or, with ``sparsity_aware=False`` and the DARTS operations, DARTS) search."""

    density: float = 0.1
    network: CellNetworkConfig = field(default_factory=CellNetworkConfig)
    operations: tuple[str, ...] = DASS_OPERATIONS
    sparsity_aware: bool = True
    search_epochs: int = 10
    train_epochs: int = 20
    steps_per_epoch: int | None = None
    batch_size: int = 64
    weight_lr: float = 0.025
    arch_lr: float = 3e-3
    arch_weight_decay: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        keep_count(1, self.density)
        if self.search_epochs < 1 or self.train_epochs < 0 or self.batch_size < 1:
            raise ConfigError("DASS needs search_epochs >= 1, train_epochs >= 0 and batch_size >= 1")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ConfigError(f"steps_per_epoch must be >= 1 or None, got {self.steps_per_epoch}")


@contextlib.contextmanager
def magnitude_masked(model: nn.Module, density: float) -> Iterator[nn.Module]:
    """Temporarily zero all but the largest-magnitude ``density`` of every dense Conv2d/Linear weight."""
    saved = []
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)) and not isinstance(module, ScoredWeight):
                saved.append((module.weight, module.weight.detach().clone()))
                module.weight.mul_(topk_mask(module.weight, density))
    try:
        yield model
    finally:
        with torch.no_grad():
            for weight, original in saved:
                weight.copy_(original)


def network_config(config: DASSConfig, splits: DataSplits) -> CellNetworkConfig:
    """The skeleton of ``config`` with the classes and input channels of ``splits``."""
    return replace(config.network, num_classes=splits.num_classes, in_channels=splits.in_channels)


def search_cells(splits: DataSplits, config: DASSConfig, progress: bool = False) -> tuple[Genotype, list[dict[str, Any]]]:
    """First-order bilevel search of the cell architecture; the derived genotype and one history entry per epoch."""
    seed_everything(config.seed)
    network = SearchNetwork(network_config(config, splits), config.operations, config.density)
    weight_loader, arch_loader = half_loaders(splits.train, config.batch_size, config.seed)
    weight_optimizer, schedule, arch_optimizer = bilevel_optimizers(
        network.weight_parameters(), network.arch_parameters(), epochs=config.search_epochs,
        weight_lr=config.weight_lr, weight_decay=3e-4, arch_lr=config.arch_lr, arch_weight_decay=config.arch_weight_decay)
    masked = (lambda: magnitude_masked(network, config.density)) if config.sparsity_aware else contextlib.nullcontext
    history = []
    network.train()
    for epoch in range(config.search_epochs):
        losses = []
        for (inputs, targets), (arch_inputs, arch_targets) in alternating_batches(weight_loader, arch_loader,
                                                                                  config.steps_per_epoch):
            loss = F.cross_entropy(network(inputs), targets)
            weight_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(network.weight_parameters(), 5.0)
            weight_optimizer.step()
            arch_optimizer.zero_grad(set_to_none=True)
            with masked():
                arch_loss = F.cross_entropy(network(arch_inputs), arch_targets)
                arch_loss.backward()
            arch_optimizer.step()
            losses.append((loss.item(), arch_loss.item()))
        schedule.step()
        history.append({"epoch": epoch, "weight_loss": sum(w for w, _ in losses) / max(1, len(losses)),
                        "arch_loss": sum(a for _, a in losses) / max(1, len(losses)),
                        "genotype": network.genotype().to_dict()})
        if progress:
            print(f"{'dass' if config.sparsity_aware else 'darts'} epoch {epoch + 1}/{config.search_epochs}: "
                  f"weight loss {history[-1]['weight_loss']:.3f}, arch loss {history[-1]['arch_loss']:.3f}", flush=True)
    return network.genotype(), history


def sparse_network(genotype: Genotype, network: CellNetworkConfig, density: float) -> CellNetwork:
    """The derived network of ``genotype`` with every Conv2d/Linear sparse at ``density``."""
    return score_layers(derived_network(network, genotype, density), density)


def train_sparse(model: nn.Module, splits: DataSplits, *, epochs: int, lr: float = 0.05, batch_size: int = 64,
                 seed: int = 0, progress: bool = False) -> float:
    """Train ``model`` (weights and mask scores) in place; its validation accuracy."""
    seed_everything(seed)
    train_loader, val_loader, _ = make_loaders(splits, batch_size=batch_size, seed=seed)
    fit(model, train_loader, epochs=epochs, lr=lr, progress=progress, description="train sparse cells")
    return evaluate(model, val_loader)


def magnitude_prune(model: nn.Module, density: float) -> nn.Module:
    """Baseline: global magnitude pruning of every Conv2d/Linear of a trained model to ``density``, masks frozen.

    One threshold over all layers keeps the ``round(density * total)`` largest-magnitude
    weights (Han et al., 2015, with a global ranking), so small layers (stem, depthwise
    convolutions) keep more than large ones; each layer becomes sparse at its resulting density.
    """
    score_layers(model, 1.0)
    layers = [module for module in model.modules() if isinstance(module, ScoredWeight)]
    magnitudes = torch.cat([layer.weight.detach().abs().flatten() for layer in layers])
    threshold = torch.topk(magnitudes, keep_count(magnitudes.numel(), density)).values.min()
    for layer in layers:
        kept = int((layer.weight.detach().abs() >= threshold).sum())
        layer.density = max(1, kept) / layer.weight.numel()
        with torch.no_grad():
            layer.scores.copy_(layer.weight.abs())
        layer.freeze_mask()
    return model


@dataclass
class DASSResult:
    """The searched genotype and the trained sparse network with its figures."""

    genotype: Genotype
    network: CellNetworkConfig
    model: nn.Module
    density: float
    val_accuracy: float
    test_accuracy: float
    flops_ratio: float
    search_seconds: float
    train_seconds: float
    history: list[dict[str, Any]]

    def summary(self) -> dict[str, Any]:
        """Everything but the model, JSON ready."""
        return {"genotype": self.genotype.to_dict(), "network": asdict(self.network), "density": self.density,
                "val_accuracy": self.val_accuracy, "test_accuracy": self.test_accuracy, "flops_ratio": self.flops_ratio,
                "search_seconds": self.search_seconds, "train_seconds": self.train_seconds, "history": self.history}


def run_dass(splits: DataSplits, config: DASSConfig | None = None, progress: bool = False) -> DASSResult:
    """Search a sparse cell network on ``splits`` and train it at ``config.density``."""
    config = config or DASSConfig()
    start = time.perf_counter()
    genotype, history = search_cells(splits, config, progress)
    searched = time.perf_counter()
    skeleton = network_config(config, splits)
    model = sparse_network(genotype, skeleton, config.density)
    val_accuracy = train_sparse(model, splits, epochs=config.train_epochs, batch_size=config.batch_size,
                                seed=config.seed, progress=progress)
    trained = time.perf_counter()
    model = materialize(model).eval()
    test_accuracy = evaluate(model, make_loaders(splits, batch_size=256)[2])
    flops_ratio = sparse_flops_ratio(model, splits.test[0][0].unsqueeze(0))
    return DASSResult(genotype, skeleton, model, weight_density(model), val_accuracy, test_accuracy, flops_ratio,
                      searched - start, trained - searched, history)


def sparse_flops_ratio(model: nn.Module, example_input: torch.Tensor) -> float:
    """FLOPs a sparse kernel would execute over the dense FLOPs: :func:`metaprune.flops.effective_flops` as a ratio."""
    dense = count_flops(model, example_input)
    if dense == 0:
        raise ConfigError(f"{type(model).__name__} has no Conv2d/Linear FLOPs")
    return effective_flops(model, example_input) / dense


def _layer_plan(model: nn.Module, density: float, flops_ratio: float) -> PrunePlan:
    layers = {name: density for name, module in model.named_modules() if isinstance(module, (nn.Conv2d, nn.Linear))}
    return PrunePlan("unstructured", layers, "l1", "local", min(1.0, density), None, round(flops_ratio, 6))


@register_method("dass", new_network=True)
def dass_method(context: SearchContext) -> SearchResult:
    """DASS through ``metaprune search --method dass``: the budget ratio is the weight density, ``--trials`` epochs.

    Registered with ``new_network=True``: DASS designs its own cell network, so the search
    trains no dense model for it (the context has no search space).

    Search epochs are ``INTERMEDIATE`` trials; the trained sparse network is the one
    ``COMPLETE`` trial, scored by its validation accuracy.
    """
    splits = context.setup.splits
    if splits is None:
        raise ConfigError("DASS trains a new network: the search setup needs the data splits")
    config = DASSConfig(density=context.setup.budget.flops_ratio, search_epochs=context.trials, seed=context.seed)
    result = run_dass(splits, config, progress=context.progress)
    trials = [TrialRecord(entry["epoch"], [], config.density, None, "INTERMEDIATE", "dass") for entry in result.history]
    trials.append(TrialRecord(len(trials), [], result.flops_ratio, result.val_accuracy, source="dass"))
    if context.run_dir:
        result.genotype.save(context.run_dir / "genotype.json")
        (context.run_dir / "cell_network.json").write_text(json.dumps(
            {"network": asdict(result.network), "genotype": result.genotype.to_dict(), "density": config.density},
            indent=2) + "\n")
        save_state(context.run_dir / "sparse_model.safetensors", result.model,
                   {"method": "dass", "density": config.density})
        (context.run_dir / "dass.json").write_text(json.dumps(result.summary(), indent=2) + "\n")
    return SearchResult("dass", _layer_plan(result.model, config.density, result.flops_ratio), result.val_accuracy,
                        trials)
