"""Unstructured and N:M pruning with weight masks (:mod:`torch.nn.utils.prune`).

A pruned layer holds ``weight_orig`` (the trainable parameter) and a ``weight_mask``
buffer; every forward recomputes ``weight = weight_orig * weight_mask``, so masked
weights stay exactly zero whatever the optimizer does to ``weight_orig``.

Cost model: shapes do not shrink, so the cost of a masked model is
:func:`metaprune.flops.effective_flops`, i.e. :math:`F = F_\\text{fixed} + \\sum_l F_l d_l`
with :math:`F_l` the dense FLOPs of prunable layer :math:`l` and :math:`d_l` its weight
density. :class:`MaskPruner` allocates densities against that formula.

Scores for global ranking are the criterion's raw element-wise scores, compared across
layers without normalisation: for magnitude criteria that is standard global magnitude
pruning (raw :math:`|w|`), LAMP scores are layer-normalised by design, Taylor scores
:math:`|w \\, \\partial L / \\partial w|` estimate the same quantity (loss change) in every
layer, and random scores are uniform.

N:M: a layer's weight is viewed as ``[out, in * kh * kw]`` (PyTorch's own flattening, the
reduction dimension of the layer's GEMM) and every run of ``m`` consecutive weights keeps
its ``n`` highest-scoring ones. ``m`` must divide ``in * kh * kw`` of every prunable layer.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils import prune

from metaprune.errors import BudgetError, ConfigError
from metaprune.flops import flops_by_module
from metaprune.prune.budget import Budget
from metaprune.prune.criteria import Criterion
from metaprune.prune.groups import output_layers, trace_forward
from metaprune.prune.plan import RANKINGS, PrunePlan
from metaprune.prune.structured import Calibration, calibration_loss

MASK_PATTERNS = ("unstructured", "n:m")
MASKABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def is_maskable(module: nn.Module) -> bool:
    """Conv/Linear layers and Hugging Face's ``Conv1D`` (a linear layer with a transposed weight, GPT-2)."""
    return isinstance(module, MASKABLE) or is_transposed_linear(module)


def is_transposed_linear(module: nn.Module) -> bool:
    """Hugging Face's ``Conv1D``: ``y = x W + b`` with ``W`` of shape ``[in, out]`` (recognised without importing it)."""
    weight = getattr(module, "weight", None)
    return (type(module).__name__ == "Conv1D" and isinstance(getattr(module, "nf", None), int)
            and isinstance(weight, torch.Tensor) and weight.dim() == 2)


def gemm_view(module: nn.Module, tensor: torch.Tensor) -> torch.Tensor:
    """A weight-shaped tensor as ``[out, reduction]`` (transposed for Hugging Face's ``Conv1D``)."""
    return tensor.t() if is_transposed_linear(module) else tensor


def is_masked(module: nn.Module) -> bool:
    """Whether ``module.weight`` is re-parametrised by a :mod:`torch.nn.utils.prune` mask."""
    return hasattr(module, "weight_mask") and hasattr(module, "weight_orig")


def _masked_modules(model: nn.Module) -> dict[str, nn.Module]:
    return {name: module for name, module in model.named_modules() if is_masked(module)}


def get_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the boolean masks of every masked layer, by module name."""
    return {name: module.weight_mask.detach().bool().clone() for name, module in _masked_modules(model).items()}


def set_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Install ``masks`` (module name → 0/1 tensor shaped like its weight), replacing existing ones.

    Unmasked layers get a mask through :func:`torch.nn.utils.prune.custom_from_mask`; masked
    layers have their ``weight_mask`` buffer overwritten in place, so repeated calls never
    stack pruning containers.
    """
    modules = dict(model.named_modules())
    for name, mask in masks.items():
        module = modules.get(name)
        if module is None or not is_maskable(module):
            raise ConfigError(f"cannot mask {name!r}: not a Conv2d/Linear (or Conv1d, Conv3d, Conv1D) layer of this model")
        weight = module.weight_orig if is_masked(module) else module.weight
        if tuple(mask.shape) != tuple(weight.shape):
            raise ConfigError(f"mask for {name!r} has shape {tuple(mask.shape)}, the weight {tuple(weight.shape)}")
        mask = mask.to(device=weight.device, dtype=weight.dtype)
        if is_masked(module):
            with torch.no_grad():
                module.weight_mask.copy_(mask)
            # keep the attribute current before the next forward (the pre-hook refreshes it there too)
            module.weight = module.weight_orig * module.weight_mask
        else:
            prune.custom_from_mask(module, "weight", mask)


def remove_masks(model: nn.Module) -> nn.Module:
    """Bake every mask into a plain ``weight`` parameter (zeros stay zeros) and drop the masks."""
    for module in _masked_modules(model).values():
        prune.remove(module, "weight")
    return model


def layer_densities(model: nn.Module) -> dict[str, float]:
    """Weight density of every Conv2d/Linear layer: the mask's density if masked, else the non-zero fraction."""
    densities = {}
    for name, module in model.named_modules():
        if isinstance(module, MASKABLE):
            kept = module.weight_mask if is_masked(module) else module.weight.detach() != 0
            densities[name] = float(torch.count_nonzero(kept)) / kept.numel()
    return densities


def _runs_of_m(tensor: torch.Tensor, m: int) -> torch.Tensor:
    """``tensor`` viewed as ``[out, runs, m]``: consecutive ``m`` weights of the flattened input dimension."""
    return tensor.reshape(tensor.shape[0], -1, m)


def check_n_m(weight: torch.Tensor, n: int, m: int) -> bool:
    """Whether every run of ``m`` consecutive weights of ``weight.reshape(out, -1)`` has at most ``n`` non-zeros."""
    if weight.dim() < 2 or weight[0].numel() % m:
        return False
    return bool(((_runs_of_m(weight, m) != 0).sum(-1) <= n).all())


def n_m_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Boolean mask keeping the ``n`` highest scores of every run of ``m`` (see :func:`check_n_m`)."""
    runs = _runs_of_m(scores, m)
    keep = torch.zeros_like(runs, dtype=torch.bool).scatter_(-1, runs.topk(n, dim=-1).indices, True)
    return keep.reshape(scores.shape)


def weight_gradients(model: nn.Module, layer_names: list[str], calibration: Calibration | None) -> dict[str, torch.Tensor]:
    r"""Dense gradients :math:`\partial L / \partial W` of the cross-entropy on ``calibration`` per layer.

    Taken with respect to the *effective* weight ``weight_orig * weight_mask``, so masked
    positions get a gradient too (``weight_orig.grad`` is zero there); regrowth needs
    exactly those. The model runs in eval mode and no ``.grad`` is touched.
    """
    if calibration is None:
        raise ConfigError("gradients are needed here: pass a calibration batch (inputs, targets)")
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            loss = calibration_loss(model, calibration)
            # after this forward each module's ``weight`` is the tensor that produced ``loss``
            weights = [model.get_submodule(name).weight for name in layer_names]
            grads = torch.autograd.grad(loss, weights, allow_unused=True)
    finally:
        model.train(was_training)
    return {name: (torch.zeros_like(w) if g is None else g) for name, w, g in zip(layer_names, weights, grads)}


def n_m_incompatible_layers(model: nn.Module, m: int) -> list[str]:
    """Conv/Linear layers whose reduction size (``in_channels * kh * kw``) is not a multiple of ``m``.

    Such layers (typically a first conv on a 1-channel image: 1x3x3 = 9 weights per output)
    cannot hold an N:M pattern; the pipeline leaves them dense and says so in the report.
    """
    return [name for name, module in model.named_modules()
            if is_maskable(module) and gemm_view(module, module.weight)[0].numel() % m]


class MaskPruner:
    """Unstructured or N:M pruning to a FLOPs budget; the mask counterpart of ``StructuredPruner``.

    Prunable layers are every Conv2d/Linear except the output layer(s) and ``ignored_layers``.
    ``prune_to(model, flops_ratio)`` chooses masks whose :func:`~metaprune.flops.effective_flops`
    is closest to ``flops_ratio`` times the dense FLOPs:

    * ``ranking="global"``: one threshold on the scores of all layers (weights are removed
      lowest-score first until the cost, fixed + per-layer FLOPs × density, meets the target);
    * ``ranking="local"``: one density shared by every layer.

    Every layer keeps at least ``ceil(min_density * numel)`` weights. Masks only shrink across
    calls: masked weights score :math:`-\\infty` and are never revived. ``pattern="n:m"``
    ignores ``flops_ratio``: its cost is whatever ``n/m`` density of the prunable layers gives.
    """

    uses_masks = True

    def __init__(
        self,
        model: nn.Module,
        example_input: torch.Tensor,
        criterion: Criterion,
        *,
        pattern: str = "unstructured",
        ranking: str = "global",
        min_density: float = 0.02,
        n_m: tuple[int, int] = (2, 4),
        calibration: Calibration | None = None,
        ignored_layers: list[str] | None = None,
    ):
        if pattern not in MASK_PATTERNS:
            raise ConfigError(f"MaskPruner handles patterns {MASK_PATTERNS}, got {pattern!r}; use StructuredPruner for channels/heads")
        if ranking not in RANKINGS:
            raise ConfigError(f"unknown ranking {ranking!r}; choose one of {', '.join(RANKINGS)}")
        if not 0.0 < min_density <= 1.0:
            raise ConfigError(f"min_density must be in (0, 1], got {min_density}")
        if criterion.needs_gradients and calibration is None:
            raise ConfigError(f"the {criterion.name} criterion needs gradients: pass a calibration batch (inputs, targets)")
        self.criterion, self.pattern, self.ranking, self.min_density = criterion, pattern, ranking, min_density
        self.calibration = calibration
        self.n_m = PrunePlan("n:m", n_m=n_m).n_m if pattern == "n:m" else None
        self.layers = self._prunable_layers(model, example_input, ignored_layers)
        own_flops = flops_by_module(model, example_input)
        self.layer_flops = {name: float(own_flops.get(name, 0)) for name in self.layers}
        self.layer_numel = {name: model.get_submodule(name).weight.numel() for name in self.layers}
        self.dense_flops = float(sum(own_flops.values()))
        self.fixed_flops = self.dense_flops - sum(self.layer_flops.values())
        self.keep_ratios = dict.fromkeys(self.layers, 1.0)

    def _prunable_layers(self, model: nn.Module, example_input: torch.Tensor, ignored: list[str] | None) -> list[str]:
        modules = dict(model.named_modules())
        unknown = set(ignored or []) - set(modules)
        if unknown:
            raise ConfigError(f"ignored layers not found in the model: {sorted(unknown)}")
        trace = trace_forward(model, example_input)
        skipped = set(ignored or []) | set(output_layers(model, trace))
        # a layer whose forward never runs (nn.MultiheadAttention reads out_proj.weight itself) would
        # keep a stale masked weight that breaks the second backward: such layers stay dense
        layers = [name for name, module in modules.items()
                  if is_maskable(module) and name not in skipped and name in trace.called]
        if not layers:
            raise ConfigError(f"{type(model).__name__} has no prunable Conv/Linear layer besides its outputs")
        if self.n_m is not None:
            m = self.n_m[1]
            misfits = [name for name in layers if gemm_view(modules[name], modules[name].weight)[0].numel() % m]
            if misfits:
                raise ConfigError(
                    f"n:m with m={m} needs m to divide in_channels*kh*kw of every pruned layer; {misfits} do not: "
                    "pass them as ignored_layers or choose another m"
                )
        return layers

    def promised_flops_ratio(self, flops_ratio: float) -> float:
        """The FLOPs ratio a finished pruning owes: ``flops_ratio``, or for N:M the fixed cost of
        ``n/m`` density in every prunable layer, whatever ``flops_ratio`` says."""
        if self.n_m is None:
            return flops_ratio
        n, m = self.n_m
        return (self.fixed_flops + sum(self.layer_flops.values()) * n / m) / self.dense_flops

    def mask_flops(self, model: nn.Module) -> float:
        """Analytic cost of the current masks: fixed FLOPs + sum of layer FLOPs × mask density."""
        densities = layer_densities(model)
        return self.fixed_flops + sum(self.layer_flops[name] * densities[name] for name in self.layers)

    def scores(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Criterion scores of every prunable layer's effective weights; masked weights score ``-inf``."""
        modules = {name: model.get_submodule(name) for name in self.layers}
        grads = weight_gradients(model, self.layers, self.calibration) if self.criterion.needs_gradients else {}
        scores = {}
        for name, module in modules.items():
            weight = module.weight_orig * module.weight_mask if is_masked(module) else module.weight
            score = self.criterion.weight_scores(weight.detach(), grads.get(name)).to(torch.float64)
            if is_masked(module):
                score = score.masked_fill(module.weight_mask == 0, -math.inf)
            scores[name] = score
        return scores

    def prune_to(self, model: nn.Module, flops_ratio: float) -> None:
        """Shrink the masks of ``model`` in place to ``flops_ratio`` of the dense FLOPs (no-op if already below)."""
        target = Budget.from_ratio(flops_ratio).target_flops(self.dense_flops)
        scores = self.scores(model)
        alive = {name: int(torch.isfinite(score).sum()) for name, score in scores.items()}
        if self.n_m is not None:
            n, m = self.n_m
            modules = {name: model.get_submodule(name) for name in self.layers}
            masks = {name: gemm_view(modules[name], n_m_mask(gemm_view(modules[name], score), n, m))
                     & torch.isfinite(score) for name, score in scores.items()}
        else:
            if self._cost(alive) <= target:
                return
            keep = self._allocate(scores, alive, target)
            masks = {name: self._top(scores[name], keep[name]) for name in self.layers}
        set_masks(model, masks)
        self.keep_ratios = {name: float(mask.sum()) / mask.numel() for name, mask in masks.items()}

    def _cost(self, counts: dict[str, int]) -> float:
        return self.fixed_flops + sum(self.layer_flops[name] * counts[name] / self.layer_numel[name] for name in self.layers)

    def _allocate(self, scores: dict[str, torch.Tensor], alive: dict[str, int], target: float) -> dict[str, int]:
        floor = {name: min(alive[name], math.ceil(self.min_density * self.layer_numel[name])) for name in self.layers}
        if self._cost(floor) > target * 1.02:
            raise BudgetError(
                f"budget of {target:.4g} FLOPs is below what min_density={self.min_density} allows "
                f"({self._cost(floor):.4g}); raise the budget or lower min_density"
            )
        if self.ranking == "global":
            return self._allocate_global(scores, alive, floor, target)
        return self._allocate_local(alive, floor, target)

    def _allocate_global(self, scores: dict, alive: dict[str, int], floor: dict[str, int], target: float) -> dict[str, int]:
        """Remove the globally lowest scores first; each removal saves its layer's FLOPs per weight."""
        lowest, owners = [], []
        for index, name in enumerate(self.layers):
            removable = alive[name] - floor[name]
            lowest.append(torch.sort(scores[name].flatten()[torch.isfinite(scores[name].flatten())]).values[:removable])
            owners.append(torch.full((removable,), index, dtype=torch.long))
        order = torch.argsort(torch.cat(lowest), stable=True)
        owners_sorted = torch.cat(owners)[order]
        saving = torch.tensor([self.layer_flops[name] / self.layer_numel[name] for name in self.layers], dtype=torch.float64)
        # cost after removing the first j candidates = cost(alive) - cumulative saving of those j
        cost_after = self._cost(alive) - torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(saving[owners_sorted], 0)])
        first_below = int(torch.searchsorted(-cost_after, torch.tensor(-target, dtype=torch.float64)))
        candidates = [j for j in (first_below - 1, first_below) if 0 <= j < len(cost_after)]
        removed = min(candidates, key=lambda j: abs(float(cost_after[j]) - target))
        drops = torch.bincount(owners_sorted[:removed], minlength=len(self.layers))
        return {name: alive[name] - int(drops[index]) for index, name in enumerate(self.layers)}

    def _allocate_local(self, alive: dict[str, int], floor: dict[str, int], target: float) -> dict[str, int]:
        """Bisection on one density shared by every layer."""

        def counts_at(density: float) -> dict[str, int]:
            return {name: min(alive[name], max(floor[name], round(density * self.layer_numel[name]))) for name in self.layers}

        low, high = 0.0, 1.0
        for _ in range(50):
            middle = (low + high) / 2
            low, high = (middle, high) if self._cost(counts_at(middle)) <= target else (low, middle)
        return min((counts_at(low), counts_at(high)), key=lambda counts: abs(self._cost(counts) - target))

    @staticmethod
    def _top(score: torch.Tensor, keep: int) -> torch.Tensor:
        mask = torch.zeros(score.numel(), dtype=torch.bool)
        mask[torch.topk(score.flatten(), keep, sorted=False).indices] = True
        return mask.reshape(score.shape)

    def plan(self, flops_ratio: float | None = None) -> PrunePlan:
        """The current per-layer densities as a plan (pattern ``unstructured`` or ``n:m``)."""
        return PrunePlan(self.pattern, dict(self.keep_ratios), self.criterion.name, self.ranking,
                         self.min_density, self.n_m, flops_ratio)
