"""Output distortion of pruned variants of a model, measured with input masks on a calibration batch.

Removing channel :math:`c` of a group physically is the same, for every Conv/Linear layer
that reads the group, as zeroing input column :math:`c`: the consumer never sees it. So
instead of pruning copies we mask the consumers' inputs, and evaluate many variants in one
batched forward pass (variant :math:`v` gets its own mask). Which channels a keep count
removes follows the criterion's ranking, exactly as :func:`~metaprune.prune.structured.apply_plan`
chooses them. The distortion of a variant is

.. math:: D = \\frac{1}{n}\\sum_{i=1}^{n} \\lVert f(x_i) - f_{\\mathrm{pruned}}(x_i) \\rVert_2^2 .

BatchNorm layers normalise every variant, the dense reference included, with the statistics
of that variant's own activations on the calibration batch ("adaptive BN", Li et al.,
EagleEye, ECCV'20). Pruning shifts the statistics downstream layers were trained with; kept
stale, they make a heavily pruned network's output collapse towards zero, and a plan that
collapses it scores *better* (:math:`D \\approx \\lVert f(x)\\rVert^2`) than one that keeps
information. Recomputed, the distortion ranks plans as their accuracy after fine-tuning does.

Masking is exact for convolutions and linear layers (with BatchNorm on batch statistics); a
LayerNorm over a pruned residual width (ViT) sees zeros instead of fewer channels, so there
it is an estimate.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn

from metaprune.errors import ConfigError
from metaprune.prune.criteria import get_criterion
from metaprune.prune.structured import score_groups
from metaprune.search.space import SearchSpace


def per_variant_batch_norm(samples: int) -> Callable[[nn.Module, tuple, torch.Tensor], torch.Tensor]:
    """A forward hook making a BatchNorm normalise each run of ``samples`` inputs with its own statistics.

    The batch holds ``variants x samples`` inputs, variant by variant; mean and (biased)
    variance are taken per variant and channel over its samples and spatial positions.
    """
    def normalise(module: nn.Module, args: tuple, _output: torch.Tensor) -> torch.Tensor:
        inputs = args[0]
        grouped = inputs.reshape(-1, samples, *inputs.shape[1:])  # [variants, samples, channels, ...]
        dims = [1, *range(3, grouped.dim())]
        mean = grouped.mean(dim=dims, keepdim=True)
        variance = grouped.var(dim=dims, unbiased=False, keepdim=True)
        normalised = (grouped - mean) / torch.sqrt(variance + module.eps)
        if module.affine:
            shape = [1, 1, -1] + [1] * (grouped.dim() - 3)
            normalised = normalised * module.weight.reshape(shape) + module.bias.reshape(shape)
        return normalised.reshape(inputs.shape)
    return normalise


class MaskedModel:
    """The dense model of a :class:`SearchSpace` with batched per-variant channel masks."""

    def __init__(self, space: SearchSpace, calibration: tuple[torch.Tensor, torch.Tensor], chunk: int = 64):
        if calibration[0].shape[0] < 2:
            raise ConfigError("distortion needs a calibration batch of at least 2 samples (BatchNorm statistics)")
        self.space, self.chunk = space, chunk
        self.inputs = calibration[0]
        model = space.model
        model.eval()
        scores = score_groups(space.groups, get_criterion(space.criterion), calibration)
        # rank[g][c] = position of channel c in ascending score order: a keep count k removes ranks < size - k.
        self.ranks = [torch.argsort(torch.argsort(scores[name], stable=True)) for name in space.names]
        self.columns: dict[str, list[tuple[int, torch.Tensor, torch.Tensor]]] = {}
        for index, group in enumerate(space.groups.groups):
            for parameter, dim, idxs, channels in space.groups.coupled_parameters(group):
                module_name = parameter.rsplit(".", 1)[0]
                if dim == 1 and parameter.endswith("weight") and module_name in group.in_layers:
                    self.columns.setdefault(module_name, []).append((index, idxs, channels))
        self.widths = {name: model.get_submodule(name).weight.shape[1] for name in self.columns}
        with torch.no_grad(), self._hooked({}, self.inputs.shape[0]):
            self.dense_output = model(self.inputs)

    def _masks(self, keep_counts: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per consumer layer, a ``[variants, in_width]`` 0/1 mask of the input columns kept."""
        removed = [self.ranks[g][None, :] < (self.space.sizes[g] - keep_counts[:, g])[:, None] for g in range(len(self.space))]
        masks = {}
        for module_name, parts in self.columns.items():
            mask = torch.ones(keep_counts.shape[0], self.widths[module_name])
            for group_index, idxs, channels in parts:
                mask[:, idxs] *= (~removed[group_index][:, channels]).float()
            masks[module_name] = mask
        return masks

    @contextlib.contextmanager
    def _hooked(self, masks: dict[str, torch.Tensor], samples: int) -> Iterator[None]:
        def hook_for(mask: torch.Tensor):
            def apply(_module: nn.Module, args: tuple) -> tuple:
                inputs = args[0]
                per_sample = mask.repeat_interleave(samples, dim=0)
                if inputs.dim() == 4:  # conv: channels on dim 1
                    return (inputs * per_sample[:, :, None, None],)
                shape = [per_sample.shape[0]] + [1] * (inputs.dim() - 2) + [per_sample.shape[1]]
                return (inputs * per_sample.reshape(shape),)
            return apply

        model = self.space.model
        handles = [model.get_submodule(name).register_forward_pre_hook(hook_for(mask)) for name, mask in masks.items()]
        handles += [module.register_forward_hook(per_variant_batch_norm(samples)) for module in model.modules()
                    if isinstance(module, nn.modules.batchnorm._BatchNorm)]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    @torch.no_grad()
    def distortion(self, keep_counts: torch.Tensor) -> torch.Tensor:
        """Output distortion of each row of ``keep_counts`` (``[variants, groups]``), shape ``[variants]``."""
        keep_counts = torch.as_tensor(keep_counts, dtype=torch.float64).reshape(-1, len(self.space))
        samples = self.inputs.shape[0]
        results = []
        for start in range(0, keep_counts.shape[0], self.chunk):
            counts = keep_counts[start:start + self.chunk]
            variants = counts.shape[0]
            with self._hooked(self._masks(counts), samples):
                output = self.space.model(self.inputs.repeat(variants, *[1] * (self.inputs.dim() - 1)))
            difference = output.reshape(variants, samples, -1) - self.dense_output.reshape(1, samples, -1)
            results.append(difference.pow(2).sum(-1).mean(-1).double())
        return torch.cat(results)
