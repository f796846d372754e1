r"""Meta-training: teach a metanetwork to rewrite networks so that they prune easily.

For a network :math:`f_\theta` of the population the metanetwork proposes :math:`\theta' = M(\theta)`. The loss is

.. math:: L = \mathrm{CE}\big(f_{\theta'}(x), y\big)
          + \lambda \frac{1}{C} \sum_{g} \sum_{c \in g} a_{g,c}\, \lVert \theta'_{g,c} \rVert_2

where :math:`\theta'_{g,c}` is every weight coupled to channel :math:`c` of prunable group
:math:`g` (:meth:`~metaprune.prune.groups.ModelGroups.coupled_parameters`) that can change the
output (:func:`~metaprune.meta.pruning.output_sensitive_slices`: rows that feed a BatchNorm are
scale-invariant and left out), and the group-lasso
coefficient :math:`a_{g,c}` is 1 for the channels ranked below ``target_keep`` in their group by
their current norm and ``important_weight`` (small) for the rest: less important groups are
pushed harder towards zero. The task loss keeps the rewritten network accurate; the penalty
concentrates it on few channels, so group-norm pruning afterwards removes little that matters.

With ``prune_aware_weight`` :math:`\mu > 0` the loss gains :math:`\mu\,\mathrm{CE}\big(f_{m \odot \theta'}(x), y\big)`:
the same batch through the rewritten network with each group's weakest channels switched off
(:func:`drop_weak_channels`; the kept share is drawn uniformly from ``[target_keep, 1)`` each step).
The penalty alone only asks for small norms; this term asks that what remains after pruning
still classifies, so the metanetwork has to move the function into the channels that stay.

Each epoch ends with a validation pass on held-out networks of the population: rewrite, re-estimate
BatchNorm statistics, prune to ``1 / val_speedup`` of the FLOPs ranking channels with
:class:`~metaprune.meta.pruning.MetaCriterion`, re-estimate BatchNorm statistics again and
measure validation accuracy without fine-tuning. The best epoch by that number is kept.

Every epoch ends with one checkpoint file, ``checkpoint.safetensors``: the metanetwork's weights,
the optimizer's moments (under ``optimizer/<parameter>/<name>``) and, as JSON metadata, the epoch,
the best validation accuracy, the configuration and the curves. It is written to a temporary
sibling and renamed into place, so an interrupted run always finds the previous epoch's complete
checkpoint, and :meth:`MetaTrainer.resume` continues exactly where it stopped (no pickle).
A loss that stops being finite ends training with a :class:`~metaprune.errors.ConfigError`.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Annotated, Any

import torch
import torch.nn.functional as F
from pydantic import ConfigDict, TypeAdapter, ValidationError
from torch.func import functional_call

from metaprune.data import DataSplits, make_loaders
from metaprune.errors import ConfigError, WeightsError
from metaprune.flops import count_flops
from metaprune.graph import network_to_graph
from metaprune.graph.decode import graph_to_parameters
from metaprune.logs import progress_bar
from metaprune.meta.checkpoint import (
    BEST,
    CHECKPOINT,
    LEGACY_FILES,
    OPTIMIZER_PREFIX,
    bounded,
    metanet_settings,
    read_checkpoint,
    restore_optimizer,
    write_checkpoint,
)
from metaprune.meta.metanetwork import MetaNetwork
from metaprune.meta.population import PopulationNetwork, example_input_for
from metaprune.meta.pruning import MetaCriterion, output_sensitive_slices, prepare_for_pruning
from metaprune.prune.criteria import get_criterion
from metaprune.prune.groups import ModelGroups
from metaprune.prune.structured import prune_to_flops
from metaprune.rundir import save_safetensors, write_json, write_with
from metaprune.schemas import describe_error
from metaprune.train import evaluate, recalibrate_batchnorm, seed_everything
from metaprune.train.checkpoint import read_tensors

REPORT, REPORT_PLOT = "meta_report.json", "meta_report.png"


@dataclass
class MetaTrainConfig:
    """Hyper-parameters of the metanetwork and of meta-training (bounds checked by :meth:`validate`)."""

    __pydantic_config__ = ConfigDict(allow_inf_nan=False)

    hidden: Annotated[int, bounded(1, 1024)] = 32
    layers: Annotated[int, bounded(1, 16)] = 3
    epsilon: Annotated[float, bounded(0, 10)] = 0.1
    epochs: Annotated[int, bounded(1, 10_000)] = 10
    steps_per_epoch: Annotated[int, bounded(1, 100_000)] = 40
    lr: Annotated[float, bounded(0, 10, low_open=True)] = 1e-3
    weight_decay: Annotated[float, bounded(0, 10)] = 1e-4
    sparsity_weight: Annotated[float, bounded(0, 1000)] = 0.5
    target_keep: Annotated[float, bounded(0, 1, low_open=True)] = 0.35
    important_weight: Annotated[float, bounded(0, 1)] = 0.05
    prune_aware_weight: Annotated[float, bounded(0, 1000)] = 0.0
    batch_size: Annotated[int, bounded(1, 4096)] = 64
    val_speedup: Annotated[float, bounded(1, 1000)] = 8.0
    seed: Annotated[int, bounded(0, 2**32 - 1)] = 0

    def validate(self) -> MetaTrainConfig:
        """``self`` if every value is finite and in range, else one-line ConfigError naming the field."""
        try:
            _config_adapter().validate_python(asdict(self))
        except ValidationError as problem:
            raise ConfigError(f"bad meta-training option: {describe_error(problem)}") from None
        return self

    def metanet_kwargs(self) -> dict[str, Any]:
        """Arguments that rebuild the :class:`MetaNetwork`."""
        return {"hidden": self.hidden, "layers": self.layers, "epsilon": self.epsilon}


@cache
def _config_adapter() -> TypeAdapter:
    return TypeAdapter(MetaTrainConfig)


@dataclass
class MetaHistory:
    """Per-epoch curves of one meta-training run."""

    task_loss: list[float] = field(default_factory=list)
    sparsity_loss: list[float] = field(default_factory=list)
    val_pruned_accuracy: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    baseline_val_pruned_accuracy: float | None = None


class _Case:
    """A network of the population prepared for meta-training: its graph, coupled parameters and inputs."""

    def __init__(self, network: PopulationNetwork, root: Path, example_input: torch.Tensor):
        self.network = network
        self.model = network.load(root)
        self.graph = network_to_graph(self.model, example_input)
        groups = ModelGroups(self.model, example_input)
        self.coupled = [output_sensitive_slices(self.model, groups.coupled_parameters(group)) for group in groups.groups]
        self.sizes = [groups.current_size(group) for group in groups.groups]
        self.example_input = example_input


def group_norms(parameters: dict[str, torch.Tensor], coupled: list, sizes: list[int]) -> list[torch.Tensor]:
    """Differentiable L2 norm of every channel of every group, from a parameter dict."""
    norms = []
    for slices, size in zip(coupled, sizes):
        squares = torch.zeros(size, dtype=torch.float32)
        for name, dim, idxs, channels in slices:
            values = parameters[name].index_select(dim, idxs).movedim(dim, 0).reshape(len(idxs), -1)
            squares = squares.index_add(0, channels, values.pow(2).sum(1))
        norms.append((squares + 1e-12).sqrt())
    return norms


def sparsity_penalty(norms: list[torch.Tensor], target_keep: float, important_weight: float) -> torch.Tensor:
    """Group lasso with stronger weight on the channels ranked below ``target_keep`` in each group."""
    total, count = norms[0].new_zeros(()), 0
    for channel_norms in norms:
        keep = max(1, math.ceil(target_keep * channel_norms.numel()))
        ranks = torch.argsort(torch.argsort(channel_norms.detach(), descending=True))
        weights = torch.where(ranks < keep, important_weight, 1.0)
        total = total + (weights * channel_norms).sum()
        count += channel_norms.numel()
    return total / max(1, count)


def drop_weak_channels(parameters: dict[str, torch.Tensor], coupled: list, norms: list[torch.Tensor],
                       keep_share: float) -> dict[str, torch.Tensor]:
    """``parameters`` with every group's weakest channels switched off, keeping ``keep_share`` of each group.

    A channel is kept if its norm (``norms``, from :func:`group_norms`) ranks in the top
    ``ceil(keep_share * size)`` of its group; the coupled slices of the others (normalisation
    scale and shift, consumers' input columns, and output rows where no normalisation follows)
    are multiplied by zero, which removes the channel's effect on the output exactly as pruning
    would while gradients still reach the kept weights.
    """
    masks: dict[str, torch.Tensor] = {}
    for slices, channel_norms in zip(coupled, norms):
        keep = max(1, math.ceil(keep_share * channel_norms.numel()))
        dropped = torch.ones(channel_norms.numel(), dtype=torch.bool)
        dropped[torch.topk(channel_norms.detach(), keep).indices] = False
        for name, dim, idxs, channels in slices:
            off = idxs[dropped[channels]]
            if off.numel():
                mask = masks.setdefault(name, torch.ones_like(parameters[name]))
                masks[name] = mask.index_fill(dim, off, 0.0)
    return {name: value * masks[name] if name in masks else value for name, value in parameters.items()}


def _train_mode_parameters(parameters: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # BatchNorm updates its running statistics in place in train mode: give it detached copies.
    return {name: value.detach().clone() if "running_" in name or "num_batches" in name else value
            for name, value in parameters.items()}


def _train_mode_forward(model: torch.nn.Module, parameters: dict[str, torch.Tensor], inputs: torch.Tensor) -> torch.Tensor:
    """``model``'s logits with ``parameters`` in train mode (BatchNorm on batch statistics), left in eval mode."""
    model.train()
    try:
        return functional_call(model, _train_mode_parameters(parameters), (inputs,))
    finally:
        model.eval()


def validate(metanet: MetaNetwork | None, cases: list[_Case], splits: DataSplits, speedup: float) -> float:
    """Mean validation accuracy of held-out networks rewritten, BN-recalibrated and pruned (no fine-tune).

    With ``metanet=None`` the networks are pruned as they are: the plain group-L2 baseline.
    """
    train_loader, val_loader, _ = make_loaders(splits, batch_size=128, seed=0)
    accuracies = []
    for case in cases:
        rewritten = (prepare_for_pruning(metanet, case.model, case.example_input, train_loader) if metanet is not None
                     else copy.deepcopy(case.model))
        target = count_flops(rewritten, case.example_input) / speedup
        prune_to_flops(rewritten, case.example_input, target,
                       MetaCriterion() if metanet is not None else get_criterion("group_l2"))
        recalibrate_batchnorm(rewritten, train_loader).eval()
        accuracies.append(evaluate(rewritten, val_loader))
    return sum(accuracies) / len(accuracies)


class MetaTrainer:
    """Runs meta-training over a population of networks, with checkpoints and resume (see the module docstring)."""

    def __init__(self, config: MetaTrainConfig, population_root: str | Path, networks: list[PopulationNetwork], splits: DataSplits,
                 out: str | Path):
        config.validate()
        train_networks = [network for network in networks if network.split == "train"]
        val_networks = [network for network in networks if network.split == "val"]
        if not train_networks or not val_networks:
            raise ConfigError("the population needs both train and val networks")
        self.config, self.splits, self.out = config, splits, Path(out)
        example_input = example_input_for(splits)
        self.train_cases = [_Case(network, Path(population_root), example_input) for network in train_networks]
        self.val_cases = [_Case(network, Path(population_root), example_input) for network in val_networks]
        seed_everything(config.seed)
        self.metanet = MetaNetwork(**config.metanet_kwargs())
        self.optimizer = torch.optim.AdamW(self.metanet.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.history = MetaHistory()
        self.start_epoch, self.best = 0, -1.0
        self._keep_generator = torch.Generator().manual_seed(config.seed)

    def resume(self) -> bool:
        """Continue from the checkpoint in ``out``; returns False if there is none.

        Raises:
            WeightsError: the checkpoint is corrupt, truncated or of an older format (one line naming it).
            ConfigError: it was written with another configuration.
        """
        path = self.out / CHECKPOINT
        legacy = [name for name in LEGACY_FILES if (self.out / name).exists()]
        if legacy:
            raise WeightsError(f"{self.out} holds a checkpoint of an older metaprune ({', '.join(legacy)}) that "
                               "cannot be resumed safely; start again with a new --out")
        if not path.is_file():
            return False
        weights, moments, record = read_checkpoint(path)
        if record.config != asdict(self.config):
            raise ConfigError(f"{self.out} was trained with another configuration; use a new --out or the same options")
        if record.epoch >= self.config.epochs or any(len(curve) != record.epoch + 1 for curve in (
                record.history.task_loss, record.history.sparsity_loss, record.history.val_pruned_accuracy)):
            raise WeightsError(f"{path}: its epoch {record.epoch} does not match its curves or --epochs; "
                               "start again with a new --out")
        try:
            self.metanet.load_state_dict(weights)
        except RuntimeError as error:
            raise WeightsError(f"{path} does not fit the metanetwork: {str(error).splitlines()[0]}") from None
        restore_optimizer(self.optimizer, moments, path)
        self.history = MetaHistory(**record.history.model_dump())
        self.start_epoch, self.best = record.epoch + 1, record.best
        return True
    def _step(self, case: _Case, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[float, float]:
        parameters = graph_to_parameters(self.metanet(case.graph), case.model)
        task = F.cross_entropy(_train_mode_forward(case.model, parameters, inputs), targets)
        norms = group_norms(parameters, case.coupled, case.sizes)
        sparsity = sparsity_penalty(norms, self.config.target_keep, self.config.important_weight)
        loss = task + self.config.sparsity_weight * sparsity
        if self.config.prune_aware_weight > 0:
            # The same batch through the rewritten network with its weakest channels off: the
            # metanetwork is rewarded for rewrites that keep working once those channels are pruned.
            keep_share = self.config.target_keep + (1 - self.config.target_keep) * float(
                torch.rand((), generator=self._keep_generator))
            dropped = drop_weak_channels(parameters, case.coupled, norms, keep_share)
            pruned_logits = _train_mode_forward(case.model, dropped, inputs)
            loss = loss + self.config.prune_aware_weight * F.cross_entropy(pruned_logits, targets)
        if not torch.isfinite(loss):
            raise ConfigError(f"meta-training diverged: the loss became {loss.item()} (task {task.item()}, sparsity "
                              f"{sparsity.item()}); lower --lr or --epsilon. Nothing was written for this epoch")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.metanet.parameters(), 1.0)
        self.optimizer.step()
        return float(task.detach()), float(sparsity.detach())

    def fit(self, progress: bool = True) -> MetaHistory:
        """Train the remaining epochs; checkpoint after each one."""
        config = self.config
        if self.history.baseline_val_pruned_accuracy is None:
            with torch.no_grad():  # the networks not rewritten, pruned the same way: what meta-training must beat
                self.history.baseline_val_pruned_accuracy = validate(None, self.val_cases, self.splits, config.val_speedup)
        total = config.epochs * config.steps_per_epoch
        with progress_bar("meta-train", total, completed=self.start_epoch * config.steps_per_epoch,
                          enabled=progress) as bar:
            for epoch in range(self.start_epoch, config.epochs):
                start = time.perf_counter()
                # Everything random in an epoch derives from (seed, epoch): a resumed run repeats it exactly.
                epoch_seed = config.seed * 10_007 + epoch
                generator = torch.Generator().manual_seed(epoch_seed)
                self._keep_generator = torch.Generator().manual_seed(epoch_seed + 1)
                train_loader, _, _ = make_loaders(self.splits, batch_size=config.batch_size, seed=epoch_seed)
                if hasattr(train_loader.dataset, "set_epoch"):
                    train_loader.dataset.set_epoch(epoch)
                batches = iter(train_loader)
                task_losses, sparsity_losses = [], []
                for _ in range(config.steps_per_epoch):
                    case = self.train_cases[int(torch.randint(len(self.train_cases), (1,), generator=generator))]
                    try:
                        inputs, targets = next(batches)
                    except StopIteration:
                        batches = iter(train_loader)
                        inputs, targets = next(batches)
                    task_loss, sparsity_loss = self._step(case, inputs, targets)
                    task_losses.append(task_loss)
                    sparsity_losses.append(sparsity_loss)
                    bar.advance(status=f"epoch {epoch} task {task_loss:.3f} sparsity {sparsity_loss:.3f}")
                self.history.task_loss.append(sum(task_losses) / len(task_losses))
                self.history.sparsity_loss.append(sum(sparsity_losses) / len(sparsity_losses))
                self.history.val_pruned_accuracy.append(validate(self.metanet, self.val_cases, self.splits, config.val_speedup))
                self.history.epoch_seconds.append(time.perf_counter() - start)
                self._checkpoint(epoch)
                write_meta_report(self.out, self.config, self.history)
        if self.start_epoch >= config.epochs:  # resumed a finished run: its report may not have been written
            write_meta_report(self.out, self.config, self.history)
        return self.history

    def _checkpoint(self, epoch: int) -> None:
        """Write ``metanet.safetensors`` if this epoch is the best, then the checkpoint (the commit point).

        A crash between the two leaves the previous checkpoint; resuming repeats this epoch exactly
        and writes the same best weights again.
        """
        weights = {name: value.detach() for name, value in self.metanet.state_dict().items()}
        settings = self.config.metanet_kwargs()
        accuracy = self.history.val_pruned_accuracy[-1]
        best = max(self.best, accuracy)
        if accuracy > self.best:
            save_safetensors(self.out / BEST, weights,
                             metadata={"metaprune": json.dumps({"metanet": settings, "epoch": epoch})})
        record = {"metanet": settings, "epoch": epoch, "best": best, "config": asdict(self.config),
                  "history": asdict(self.history)}
        write_checkpoint(self.out / CHECKPOINT, weights, self.optimizer, record)
        self.best = best


def write_meta_report(out: Path, config: MetaTrainConfig, history: MetaHistory) -> None:
    """``meta_report.json`` with the loss curves and ``meta_report.png`` plotting them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    write_json(out / REPORT, {"config": asdict(config), "history": asdict(history)})
    epochs = range(1, len(history.task_loss) + 1)
    figure, (losses, accuracy) = plt.subplots(1, 2, figsize=(11, 4.5))
    losses.plot(epochs, history.task_loss, marker="o", label="task (cross-entropy)")
    losses.plot(epochs, history.sparsity_loss, marker="o", label="group-sparsity penalty")
    losses.set_xlabel("epoch", fontsize=11)
    losses.set_ylabel("training loss (mean over the epoch)", fontsize=11)
    losses.set_title("meta-training losses", fontsize=11)
    losses.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=10, frameon=False)
    accuracy.plot(epochs, [100 * value for value in history.val_pruned_accuracy], marker="o", color="#d8823b",
                  label="rewritten by the metanetwork")
    if history.baseline_val_pruned_accuracy is not None:
        accuracy.axhline(100 * history.baseline_val_pruned_accuracy, color="gray", linestyle="--",
                         label="not rewritten (group L2)")
    accuracy.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=10, frameon=False)
    accuracy.set_xlabel("epoch", fontsize=11)
    accuracy.set_ylabel("val accuracy (%)", fontsize=11)
    accuracy.set_title(f"after {config.val_speedup:g}x pruning, no fine-tune", fontsize=11)
    for axes in (losses, accuracy):
        axes.tick_params(labelsize=10)
        axes.xaxis.get_major_locator().set_params(integer=True)
    figure.tight_layout()
    write_with(out / REPORT_PLOT, lambda partial: figure.savefig(partial, dpi=110, format="png", bbox_inches="tight"))
    plt.close(figure)


def load_metanet(path: str | Path) -> MetaNetwork:
    """A trained metanetwork from a ``metanet.safetensors`` file or a meta-training directory."""
    path = Path(path)
    if path.is_dir():
        path = path / BEST
    tensors, metadata = read_tensors(path)
    metanet = MetaNetwork(**metanet_settings(path, metadata))
    try:
        metanet.load_state_dict({name: value for name, value in tensors.items() if not name.startswith(OPTIMIZER_PREFIX)})
    except RuntimeError as error:
        raise WeightsError(f"{path} does not fit a MetaNetwork: {str(error).splitlines()[0]}") from error
    return metanet.eval()
