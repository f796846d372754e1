"""Analytic FLOPs of a model as a function of how many channels each group keeps.

Every counted operation is a term :math:`F_t` (its dense FLOPs, measured once with
:func:`metaprune.flops.flops_by_module`) times the kept fractions of the widths it is
bilinear in. A layer's input (or output) width loses, for every group :math:`g` that feeds
it, :math:`w_{g\\ell}` channels per removed group channel (:math:`w > 1` after a flatten;
several groups feed one layer after a concatenation), so with :math:`r_g = n_g - k_g` removed
channels

.. math:: F(k) = \\sum_t F_t \\Big(1 - \\sum_g \\frac{w^{out}_{gt} r_g}{N^{out}_t}\\Big)
                          \\Big(1 - \\sum_g \\frac{w^{in}_{gt} r_g}{N^{in}_t}\\Big) + F_{rest}.

Terms: conv/linear layers (a depthwise convolution is linear in its one width); fused-qkv
attention modules (linear in the heads kept); ``nn.MultiheadAttention`` (its projections
quadratic and its two attention products linear in the embedding width). It is exact for
these and cheap enough for search loops; the rest (norms, activations) counts no FLOPs.
"""

from __future__ import annotations

import torch
from torch import nn

from metaprune.flops import flops_by_module
from metaprune.prune.groups import CONV_LINEAR, ModelGroups, layer_widths


def _attention_products(model: nn.Module, example_input: torch.Tensor) -> dict[str, float]:
    """FLOPs of the two attention products (:math:`4BLSE`) of every ``nn.MultiheadAttention``."""
    products: dict[str, float] = {}

    def record(name: str):
        def hook(module: nn.MultiheadAttention, args: tuple, kwargs: dict) -> None:
            query = kwargs.get("query", args[0] if args else None)
            key = kwargs.get("key", args[1] if len(args) > 1 else query)
            batch_first = getattr(module, "batch_first", False)
            length, source = (query.shape[-2], key.shape[-2]) if batch_first else (query.shape[0], key.shape[0])
            batches = query.numel() // (length * query.shape[-1])
            products[name] = 4.0 * batches * length * source * module.embed_dim
        return hook

    handles = [module.register_forward_pre_hook(record(name), with_kwargs=True)
               for name, module in model.named_modules() if isinstance(module, nn.MultiheadAttention)]
    if handles:
        try:
            with torch.no_grad():
                model(example_input)
        finally:
            for handle in handles:
                handle.remove()
    return products


class GroupCostModel:
    """FLOPs as a function of per-group keep counts, for one dense model."""

    def __init__(self, groups: ModelGroups):
        model, example_input = groups.model, groups.example_input
        own = flops_by_module(model, example_input)
        products = _attention_products(model, example_input)
        self.group_names = [group.name for group in groups.groups]
        self.sizes = torch.tensor([groups.current_size(group) for group in groups.groups], dtype=torch.float64)
        modules = dict(model.named_modules())
        count = len(groups.groups)
        rows_flops: list[float] = []
        rows_out: list[torch.Tensor] = []
        rows_in: list[torch.Tensor] = []
        #: The module of every term, in order (an ``nn.MultiheadAttention`` has two terms).
        self.term_names: list[str] = []

        def term(flops: float, out_row: torch.Tensor, in_row: torch.Tensor) -> None:
            self.term_names.append(name)
            rows_flops.append(flops)
            rows_out.append(out_row)
            rows_in.append(in_row)

        def widths(attribute: str, name: str, total: float) -> torch.Tensor:
            row = torch.zeros(count, dtype=torch.float64)
            for index, group in enumerate(groups.groups):
                row[index] = getattr(group, attribute).get(name, 0) / total
            return row

        self.constant = 0.0
        for name, flops in own.items():
            module = modules.get(name)
            if flops == 0:
                continue
            if name in groups.attention:  # fused qkv: the products scale with the heads kept
                row = torch.zeros(count, dtype=torch.float64)
                row[self.group_names.index(name)] = 1.0 / float(module.num_heads)
                term(float(flops), row, torch.zeros(count, dtype=torch.float64))
            elif isinstance(module, nn.MultiheadAttention):
                embedding = widths("out_width", name, float(module.embed_dim))
                attention = products.get(name, 0.0)
                term(float(flops) - attention, embedding, embedding)
                term(attention, embedding, torch.zeros(count, dtype=torch.float64))
            elif isinstance(module, CONV_LINEAR):
                in_width, out_width = layer_widths(module)
                depthwise = getattr(module, "groups", 1) > 1 and module.groups == in_width
                in_row = torch.zeros(count, dtype=torch.float64) if depthwise else widths("in_width", name, in_width)
                term(float(flops), widths("out_width", name, out_width), in_row)
            else:
                self.constant += float(flops)
        self.term_flops = torch.tensor(rows_flops, dtype=torch.float64)
        self.term_out = torch.stack(rows_out) if rows_out else torch.zeros(0, count, dtype=torch.float64)
        self.term_in = torch.stack(rows_in) if rows_in else torch.zeros(0, count, dtype=torch.float64)
        self.dense_flops = self.flops(self.sizes)

    def removal_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(A_out, A_in)``: the fraction of each term's output / input width that group ``g``
        holds, so that ``kept = 1 - A @ (1 - keep_ratio)`` per term."""
        return self.term_out * self.sizes, self.term_in * self.sizes

    def flops(self, keep_counts: torch.Tensor) -> float:
        """FLOPs when group ``i`` keeps ``keep_counts[i]`` of its ``sizes[i]`` channels."""
        removed = self.sizes - keep_counts.to(torch.float64)
        out_kept = 1.0 - self.term_out @ removed
        in_kept = 1.0 - self.term_in @ removed
        return float((self.term_flops * out_kept * in_kept).sum() + self.constant)

    def flops_of_ratios(self, keep_ratios: dict[str, float]) -> float:
        """FLOPs for keep ratios by group name (missing groups keep everything)."""
        counts = torch.tensor(
            [max(1.0, round(keep_ratios.get(name, 1.0) * float(size))) for name, size in zip(self.group_names, self.sizes)],
            dtype=torch.float64,
        )
        return self.flops(counts)
