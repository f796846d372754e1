r"""Predicted latency of a model as a function of how many channels each group keeps.

With keep counts :math:`k` (``r_g = n_g - k_g`` removed), every conv/linear layer :math:`\ell`
runs at input and output widths :math:`c^{in}_\ell(k), c^{out}_\ell(k)` (exactly as the FLOPs
cost model :class:`~metaprune.prune.cost.GroupCostModel` tracks them), and

.. math:: T(k) = a \sum_\ell G_\ell\big(c^{in}_\ell, c^{out}_\ell\big) + b\,F_{other}(k) + c\,A(k) + d

where :math:`G_\ell` is the layer's measured grid (:class:`~metaprune.latency.table.LayerGrid`,
bilinear), :math:`F_{other}` the FLOPs of terms without a grid (attention products), :math:`A`
the activation elements the layers write (what batch norms, activations and residual adds
read, per sample) and :math:`a, b, c, d \ge 0` are fitted on whole networks measured by
:func:`~metaprune.latency.profile.profile_model`. Isolated layers miss the cost of the
element-wise glue and the interpreter; the fit puts it back.

:class:`LatencyCostModel` has the interface of the FLOPs cost model (``sizes``, ``group_names``,
``dense_flops``, ``flops(counts)``), so the engine's allocators prune to a latency unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from metaprune.inputs import output_tensors, run_model
from metaprune.latency.table import LatencyTable
from metaprune.prune.cost import GroupCostModel
from metaprune.prune.groups import CONV_LINEAR, ModelGroups, layer_widths

FEATURES = ("layers", "other_gflops", "activations_m", "constant")


def is_depthwise(layer: nn.Module) -> bool:
    """A convolution with one group per input channel: its input width follows its output width."""
    groups = getattr(layer, "groups", 1)
    return isinstance(layer, CONV_LINEAR[:-1]) and groups > 1 and groups == layer_widths(layer)[0]


def _output_numel(model: nn.Module, example_input: torch.Tensor, names: list[str]) -> dict[str, float]:
    """Elements of each named layer's output on ``example_input`` (one eval forward pass)."""
    modules = dict(model.named_modules())
    numel: dict[str, float] = {}

    def record(name: str):
        def hook(_module: nn.Module, _args: tuple, output: object) -> None:
            numel[name] = float(sum(tensor.numel() for tensor in output_tensors(output)))
        return hook

    handles = [modules[name].register_forward_hook(record(name)) for name in names]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            run_model(model, example_input)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return numel


class LatencyCostModel:
    """Predicted latency in ms (:meth:`latency_ms`) as a function of per-group keep counts."""

    def __init__(self, groups: ModelGroups, table: LatencyTable):
        self.table = table
        self.flops_model = GroupCostModel(groups)
        self.group_names = self.flops_model.group_names
        self.sizes = self.flops_model.sizes
        modules = dict(groups.model.named_modules())
        terms = self.flops_model.term_names
        self.layer_terms = [index for index, name in enumerate(terms)
                            if name in table.layers and isinstance(modules.get(name), CONV_LINEAR)
                            and terms.count(name) == 1]
        self.layer_names = [terms[index] for index in self.layer_terms]
        widths = [layer_widths(modules[name]) for name in self.layer_names]
        self.in_widths = torch.tensor([float(width[0]) for width in widths], dtype=torch.float64)
        self.out_widths = torch.tensor([float(width[1]) for width in widths], dtype=torch.float64)
        self.depthwise = [is_depthwise(modules[name]) for name in self.layer_names]
        numel = _output_numel(groups.model, groups.example_input, self.layer_names)
        self.out_numel = torch.tensor([numel.get(name, 0.0) for name in self.layer_names], dtype=torch.float64)
        self.other_terms = [index for index in range(len(terms)) if index not in set(self.layer_terms)]
        self.coefficients = torch.tensor([float(table.coefficients.get(name, 0.0)) for name in FEATURES],
                                         dtype=torch.float64)
        self.dense_flops = self.latency_ms(self.sizes)

    def layer_widths_at(self, keep_counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Input and output widths of every gridded layer when the groups keep ``keep_counts``."""
        removed = self.sizes - keep_counts.to(torch.float64)
        model = self.flops_model
        out_kept = 1.0 - model.term_out[self.layer_terms] @ removed
        in_kept = 1.0 - model.term_in[self.layer_terms] @ removed
        return self.in_widths * in_kept, self.out_widths * out_kept

    def features(self, keep_counts: torch.Tensor) -> torch.Tensor:
        """The predictor's features (:data:`FEATURES`) at ``keep_counts``."""
        counts = keep_counts.to(torch.float64)
        in_width, out_width = self.layer_widths_at(counts)
        layers = 0.0
        for name, cin, cout, depthwise in zip(self.layer_names, in_width.tolist(), out_width.tolist(), self.depthwise):
            grid = self.table.grids[self.table.layers[name]]
            layers += grid.interpolate(cout if depthwise else cin, cout)
        model = self.flops_model
        removed = self.sizes - counts
        out_kept = 1.0 - model.term_out @ removed
        in_kept = 1.0 - model.term_in @ removed
        other = float((model.term_flops * out_kept * in_kept)[self.other_terms].sum()) + model.constant
        activations = float((self.out_numel * out_width / self.out_widths.clamp(min=1.0)).sum())
        return torch.tensor([layers, other / 1e9, activations / 1e6, 1.0], dtype=torch.float64)

    def latency_ms(self, keep_counts: torch.Tensor) -> float:
        """Predicted latency in ms when group ``i`` keeps ``keep_counts[i]`` channels."""
        return float(self.features(keep_counts) @ self.coefficients)

    #: The engine's allocators (:mod:`metaprune.prune.structured`) call every cost model's cost ``flops``.
    flops = latency_ms

    def latency_of_ratios(self, keep_ratios: dict[str, float]) -> float:
        """Predicted latency for keep ratios by group name (missing groups keep everything)."""
        counts = torch.tensor([max(1.0, round(keep_ratios.get(name, 1.0) * float(size)))
                               for name, size in zip(self.group_names, self.sizes.tolist())], dtype=torch.float64)
        return self.latency_ms(counts)
