"""Least-squares mask tuning and physical removal for head/FFN pruning (Kwon et al., NeurIPS'22).

**Tuning.** After the search, the kept units of each sub-layer are rescaled so that the pruned
model reproduces the dense one, layer by layer, front to back. A sub-layer (attention or FFN)
adds ``sum_u s_u C_u + b`` to its residual input ``x`` before LayerNorm, where ``C_u`` is unit
``u``'s contribution (a head's context through its columns of the output projection, a neuron's
activation times its output column). With ``T`` the dense model's pre-LayerNorm values on the
same inputs, the scales solve

    min_s || sum_u s_u C_u - (T - x - b) ||^2  (+ ridge ||s - 1||^2),

so the residual drift of earlier layers is corrected as well. The normal equations are small:
``G_uv = sum_t C_u,t . C_v,t``; for neurons ``G = (A^T A) * (W^T W)`` elementwise.

**Removal.** Masks with zeros become smaller layers: a removed head loses its q/k/v rows and
its output-projection columns, a removed neuron its intermediate row and output column; scales
are folded into the output columns. The per-layer shapes go into the model's config, from which
:func:`metaprune.models.minilm.load_encoder` rebuilds the pruned architecture.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from metaprune.errors import PruneError
from metaprune.models.minilm import HEADS_KEY, INTERMEDIATE_KEY
from metaprune.prune.head_ffn import EncoderLayerParts, StructureMasks, applied_masks, encoder_layers

#: Ridge weight of the least-squares scales, relative to the mean diagonal of the normal matrix.
RIDGE = 1e-4
#: Scales are clipped to this range (a badly conditioned layer must not blow up).
SCALE_LIMIT = 10.0


class _Stop(Exception):
    """Raised by a capture hook: nothing after the captured sub-layer needs to run."""


def _capture(module: nn.Module, model: nn.Module, batches: Sequence[dict[str, torch.Tensor]]
             ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The (first, second) positional inputs of ``module`` (a sub-layer called as ``(values, residual)``)
    on each batch; the forward pass stops there."""
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def grab(_module: nn.Module, args: tuple[Any, ...]) -> None:
        seen.append((args[0].detach(), args[1].detach()))
        raise _Stop

    handle = module.register_forward_pre_hook(grab)
    try:
        with torch.no_grad():
            for batch in batches:
                with contextlib.suppress(_Stop):
                    model(**batch)
    finally:
        handle.remove()
    return seen


def _dense_targets(norms: Sequence[nn.Module], model: nn.Module, batches: Sequence[dict[str, torch.Tensor]]
                   ) -> list[list[torch.Tensor]]:
    """The inputs of every LayerNorm in ``norms`` (``dense output + bias + residual``), per norm and batch,
    from one pass of the dense model."""
    seen: list[list[torch.Tensor]] = [[] for _ in norms]
    handles = [norm.register_forward_pre_hook(lambda _m, args, i=i: seen[i].append(args[0].detach()))
               for i, norm in enumerate(norms)]
    try:
        with torch.no_grad():
            for batch in batches:
                model(**batch)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def _solve(gram: torch.Tensor, rhs: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """Scales of the kept units from the normal equations (ridge towards 1), zeros elsewhere."""
    index = torch.nonzero(kept).reshape(-1)
    scales = torch.zeros(kept.numel(), dtype=torch.float64)
    if index.numel() == 0:
        return scales
    system = gram[index][:, index]
    ridge = RIDGE * torch.diagonal(system).mean().clamp_min(1e-12)
    solution = torch.linalg.solve(system + ridge * torch.eye(index.numel(), dtype=torch.float64),
                                  rhs[index] + ridge)
    scales[index] = solution.clamp(-SCALE_LIMIT, SCALE_LIMIT)
    return scales


def _head_system(part: EncoderLayerParts, context: torch.Tensor, target: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    weight = part.attention_output.weight.detach().double()
    per_head = context.double().reshape(context.shape[0], part.heads, part.head_size)
    blocks = weight.reshape(weight.shape[0], part.heads, part.head_size)
    contributions = torch.einsum("thd,ohd->hto", per_head, blocks)
    gram = torch.einsum("hto,gto->hg", contributions, contributions)
    return gram, torch.einsum("hto,to->h", contributions, target.double())


def _neuron_system(part: EncoderLayerParts, activations: torch.Tensor, target: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    weight = part.output.weight.detach().double()
    activations = activations.double()
    gram = (activations.T @ activations) * (weight.T @ weight)
    return gram, ((target.double() @ weight) * activations).sum(0)


def tune_masks(
    model: nn.Module, dense: nn.Module, masks: StructureMasks, batches: Sequence[dict[str, torch.Tensor]],
) -> StructureMasks:
    """Least-squares scales of the kept heads and neurons, sub-layer by sub-layer (see the module docstring).

    ``model`` and ``dense`` are the same architecture (``dense`` unpruned); ``batches`` are tokenized
    calibration batches. Returns new masks (zeros stay zeros).
    """
    layers, dense_layers = encoder_layers(model), encoder_layers(dense)
    tuned = masks.clone()
    norms = [sub.LayerNorm for part in dense_layers for sub in (part.attention_sublayer, part.ffn_sublayer)]
    targets = iter(_dense_targets(norms, dense, batches))

    def tokens(values: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([v[batch["attention_mask"].bool()] for v, batch in zip(values, batches)])

    for index, part in enumerate(layers):
        for kind in ("heads", "neurons"):
            sublayer = part.attention_sublayer if kind == "heads" else part.ffn_sublayer
            with applied_masks(layers, tuned):
                inputs = _capture(sublayer, model, batches)
            values = tokens([v for v, _ in inputs])
            residual = tokens([r for _, r in inputs])
            linear = part.attention_output if kind == "heads" else part.output
            target = tokens(next(targets)) - residual - linear.bias.detach()
            system = _head_system if kind == "heads" else _neuron_system
            gram, rhs = system(part, values, target)
            current = getattr(tuned, kind)[index]
            getattr(tuned, kind)[index] = _solve(gram, rhs, current != 0).to(current.dtype)
    return tuned


def _rows(layer: nn.Linear, keep: torch.Tensor) -> None:
    layer.weight = nn.Parameter(layer.weight.detach()[keep].clone())
    if layer.bias is not None:
        layer.bias = nn.Parameter(layer.bias.detach()[keep].clone())
    layer.out_features = int(keep.numel())


def _columns(layer: nn.Linear, keep: torch.Tensor, scale: torch.Tensor | None = None) -> None:
    weight = layer.weight.detach()[:, keep]
    if scale is not None:
        weight = weight * scale.to(weight.dtype).unsqueeze(0)
    layer.weight = nn.Parameter(weight.clone())
    layer.in_features = int(keep.numel())


def _remove_heads(part: EncoderLayerParts, mask: torch.Tensor) -> None:
    keep_heads = torch.nonzero(mask != 0).reshape(-1)
    if keep_heads.numel() == 0:
        raise PruneError("every layer must keep at least one head")
    channels = (keep_heads[:, None] * part.head_size + torch.arange(part.head_size)[None, :]).reshape(-1)
    for name in ("query", "key", "value"):
        _rows(getattr(part.attention, name), channels)
    _columns(part.attention_output, channels, mask[keep_heads].repeat_interleave(part.head_size))
    part.attention.num_attention_heads = int(keep_heads.numel())
    part.attention.all_head_size = int(channels.numel())


def _remove_neurons(part: EncoderLayerParts, mask: torch.Tensor) -> None:
    keep = torch.nonzero(mask != 0).reshape(-1)
    _rows(part.intermediate, keep)
    _columns(part.output, keep, mask[keep])


def remove_structure(model: nn.Module, masks: StructureMasks) -> dict[str, list[int]]:
    """Physically delete the masked heads and neurons of ``model`` in place, folding the mask values
    into the output projections. Returns the kept heads and neurons per layer, which also go into
    ``model.config`` (:data:`~metaprune.models.minilm.HEADS_KEY`, ``INTERMEDIATE_KEY``) so that
    :func:`~metaprune.models.minilm.load_encoder` rebuilds the shapes."""
    layers = encoder_layers(model)
    with torch.no_grad():
        for part, head_mask, neuron_mask in zip(layers, masks.heads, masks.neurons):
            _remove_heads(part, head_mask)
            _remove_neurons(part, neuron_mask)
    structure = {HEADS_KEY: [int(part.attention.num_attention_heads) for part in layers],
                 INTERMEDIATE_KEY: [part.intermediate.out_features for part in layers]}
    config = getattr(model, "config", None)
    if config is not None:
        for key, value in structure.items():
            setattr(config, key, value)
    return structure
