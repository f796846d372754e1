"""Retraining-free structured pruning of attention heads and FFN neurons (Kwon et al., NeurIPS'22,
"A Fast Post-Training Pruning Framework for Transformers").

Every head ``h`` and intermediate neuron ``j`` of layer ``l`` gets a mask variable (1 = kept):
the head's context vector and the neuron's activation are multiplied by it. Removing a set ``R``
of masks changes the loss by about

    dL ~ 1/2 (1 - m)^T F (1 - m),    F = E_x[ g(x) g(x)^T ],   g = dL/dm at m = 1,

the Fisher information of the masks. The pipeline:

1. **Fisher** (:func:`mask_gradients`): per-example mask gradients ``g`` on calibration data.
2. **Search** (:func:`search_masks`): with the diagonal of ``F`` as the importance of each mask,
   keep the most important heads and neurons under a FLOPs constraint: for every number of kept
   heads, fill the rest of the budget with the best neurons and keep the combination that
   retains the most importance (at least one head per layer).
3. **Rearrangement** (:func:`rearrange_masks`): inside each layer, with its count fixed, choose
   the removed set greedily under the layer's full Fisher block (interactions between masks).
4. **Tuning** (:mod:`metaprune.prune.head_ffn_tuning`): per-layer least squares scales of the
   kept masks so that each sub-layer reconstructs the dense model's output.

The gradient of a distillation loss against the dense model is zero at ``m = 1``, so the loss
is one with a non-zero gradient there (:data:`FISHER_LOSSES`): ``sts``, the regression of the
pairs' cosine similarity onto the gold score / 5 (STS-B train pairs, labels needed), or
``embedding``, the Fisher of a Gaussian model around the sentence embedding
(``-log N(y; e(x), I)`` with ``y`` sampled from the model: ``g = J^T eps``, ``eps ~ N(0, I)``,
``E[g g^T] = J^T J``; no labels, any text).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from metaprune.errors import ConfigError, ModelError, PruneError
from metaprune.prune.heads import separate_projections
from metaprune.registry import Registry

if TYPE_CHECKING:
    from metaprune.prune.head_ffn_timing import UnitTimes


@dataclass
class EncoderLayerParts:
    """The parts of one BERT-style encoder layer that head/FFN pruning touches."""

    attention: nn.Module          # owns query/key/value (num_attention_heads, attention_head_size)
    heads: int
    head_size: int
    attention_output: nn.Linear   # context (heads x head_size) -> hidden
    intermediate: nn.Linear       # hidden -> neurons
    output: nn.Linear             # neurons -> hidden
    attention_sublayer: nn.Module  # called as (context, residual); adds and normalises
    ffn_sublayer: nn.Module        # called as (activations, residual)


def encoder_layers(model: nn.Module) -> list[EncoderLayerParts]:
    """The layers of a BERT-style ``transformers`` encoder (``encoder.layer[i].attention.self/output``,
    ``intermediate.dense``, ``output.dense``).

    Raises:
        ModelError: the model has no such layers (e.g. a model without attention).
    """
    layers = getattr(getattr(model, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList) or not layers:
        raise ModelError(f"{type(model).__name__} has no BERT-style encoder layers with attention "
                         "(encoder.layer[i].attention): head/FFN pruning needs a transformer encoder")
    parts = []
    for index, layer in enumerate(layers):
        try:
            attention, self_output = layer.attention.self, layer.attention.output
            intermediate, output = layer.intermediate.dense, layer.output.dense
        except AttributeError as error:
            raise ModelError(f"encoder layer {index} is not BERT-style (attention.self, attention.output, "
                             f"intermediate.dense, output.dense): {error}") from error
        found = separate_projections(attention)
        if found is None or not isinstance(getattr(self_output, "dense", None), nn.Linear):
            raise ModelError(f"encoder layer {index} has no query/key/value attention with a head count")
        heads = int(attention.num_attention_heads)
        parts.append(EncoderLayerParts(attention, heads, found[0][0].out_features // max(heads, 1),
                                       self_output.dense, intermediate, output, self_output, layer.output))
    return parts


@dataclass
class StructureMasks:
    """Head masks (one ``heads`` tensor per layer) and neuron masks (one ``neurons`` tensor per layer).

    A mask is 1-D (shared by the batch) or 2-D ``batch x units`` (per-example, for gradients).
    Values other than 0/1 scale the unit's output (mask tuning).
    """

    heads: list[torch.Tensor]
    neurons: list[torch.Tensor]

    @classmethod
    def ones(cls, layers: Sequence[EncoderLayerParts], batch: int | None = None,
             requires_grad: bool = False) -> StructureMasks:
        """All-ones masks (per-example ``batch x units`` when ``batch`` is given)."""
        def make(size: int) -> torch.Tensor:
            shape = (batch, size) if batch is not None else (size,)
            return torch.ones(shape, requires_grad=requires_grad)

        return cls([make(part.heads) for part in layers], [make(part.intermediate.out_features) for part in layers])

    def clone(self) -> StructureMasks:
        """A detached copy."""
        return StructureMasks([m.detach().clone() for m in self.heads], [m.detach().clone() for m in self.neurons])

    def kept(self) -> tuple[list[int], list[int]]:
        """Kept heads and neurons per layer (non-zero masks)."""
        return ([int((m != 0).sum()) for m in self.heads], [int((m != 0).sum()) for m in self.neurons])


def _scale(values: torch.Tensor, mask: torch.Tensor, groups: int) -> torch.Tensor:
    """``values`` (``B x T x groups*width``) with group ``g`` multiplied by ``mask[..., g]``."""
    shape = values.shape
    grouped = values.reshape(*shape[:-1], groups, shape[-1] // groups)
    factor = mask.reshape(-1, 1, groups, 1) if mask.dim() == 2 else mask.reshape(1, 1, groups, 1)
    return (grouped * factor.to(values.dtype)).reshape(shape)


@contextlib.contextmanager
def applied_masks(layers: Sequence[EncoderLayerParts], masks: StructureMasks) -> Iterator[None]:
    """Multiply heads' contexts and neurons' activations by ``masks`` while the block is open."""
    handles = []
    for part, head_mask, neuron_mask in zip(layers, masks.heads, masks.neurons):
        handles.append(part.attention_output.register_forward_pre_hook(
            lambda module, args, mask=head_mask, heads=part.heads: (_scale(args[0], mask, heads),)))
        handles.append(part.output.register_forward_pre_hook(
            lambda module, args, mask=neuron_mask: (_scale(args[0], mask, mask.shape[-1]),)))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


#: A Fisher loss: ``loss(embed, batch) -> per-example losses`` (``embed`` maps a tokenized batch to embeddings).
FisherLoss = Callable[[Callable[[dict[str, torch.Tensor]], torch.Tensor], "CalibrationBatch"], torch.Tensor]
FISHER_LOSSES: Registry[FisherLoss] = Registry("Fisher loss")


@dataclass
class CalibrationBatch:
    """Tokenized calibration examples: sentences (``first``), or pairs (``first``, ``second``) with gold
    scores in [0, 1]."""

    first: dict[str, torch.Tensor]
    second: dict[str, torch.Tensor] | None = None
    scores: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.first["input_ids"].shape[0])


@FISHER_LOSSES.register("sts")
def sts_loss(embed: Callable[[dict[str, torch.Tensor]], torch.Tensor], batch: CalibrationBatch) -> torch.Tensor:
    """``(cos(e(s1), e(s2)) - score)^2`` per pair (needs labelled pairs)."""
    if batch.second is None or batch.scores is None:
        raise ConfigError("the sts Fisher loss needs sentence pairs with scores (STS-B train)")
    cosine = torch.nn.functional.cosine_similarity(embed(batch.first), embed(batch.second), dim=-1)
    return (cosine - batch.scores) ** 2


@FISHER_LOSSES.register("embedding")
def embedding_loss(embed: Callable[[dict[str, torch.Tensor]], torch.Tensor], batch: CalibrationBatch) -> torch.Tensor:
    """``eps . e(x)`` per sentence with ``eps ~ N(0, I)`` (seeded by the batch): its gradient is a sample of the
    Gaussian-output Fisher's score (no labels needed)."""
    embeddings = embed(batch.first)
    generator = torch.Generator().manual_seed(int(batch.first["input_ids"].sum()))
    noise = torch.randn(embeddings.shape, generator=generator)
    return (noise * embeddings).sum(-1)


@dataclass
class MaskGradients:
    """Per-example mask gradients: ``heads[l]`` is ``N x heads``, ``neurons[l]`` is ``N x neurons``."""

    heads: list[torch.Tensor]
    neurons: list[torch.Tensor]

    def importance(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Diagonal Fisher ``sum_x g^2`` of every head and neuron mask."""
        return [g.pow(2).sum(0) for g in self.heads], [g.pow(2).sum(0) for g in self.neurons]


def mask_gradients(
    model: nn.Module, layers: Sequence[EncoderLayerParts], batches: Sequence[CalibrationBatch],
    embed: Callable[[dict[str, torch.Tensor]], torch.Tensor], loss: str = "sts",
) -> MaskGradients:
    """Per-example gradients of ``loss`` (:data:`FISHER_LOSSES`) with respect to every mask at ``m = 1``.

    Each example has its own copy of the masks, so one backward pass per batch yields per-example
    gradients (the Fisher needs ``E[g g^T]``, not ``E[g] E[g]^T``).
    """
    loss_fn = FISHER_LOSSES.get(loss)
    if not batches:
        raise ConfigError("the Fisher estimate needs at least one calibration batch")
    head_grads: list[list[torch.Tensor]] = [[] for _ in layers]
    neuron_grads: list[list[torch.Tensor]] = [[] for _ in layers]
    was_training = model.training
    model.eval()
    flags = [parameter.requires_grad for parameter in model.parameters()]
    model.requires_grad_(False)
    try:
        for batch in batches:
            masks = StructureMasks.ones(layers, batch=len(batch), requires_grad=True)
            with applied_masks(layers, masks), torch.enable_grad():
                loss_fn(embed, batch).sum().backward()
            for index in range(len(layers)):
                head_grads[index].append(masks.heads[index].grad.detach().clone())
                neuron_grads[index].append(masks.neurons[index].grad.detach().clone())
    finally:
        for parameter, flag in zip(model.parameters(), flags):
            parameter.requires_grad_(flag)
        model.train(was_training)
    return MaskGradients([torch.cat(g).double() for g in head_grads], [torch.cat(g).double() for g in neuron_grads])


@dataclass(frozen=True)
class UnitCosts:
    """FLOPs per sequence of one head and one neuron, and of everything that is not pruned."""

    head: int
    neuron: int
    fixed: int

    @classmethod
    def of(cls, layers: Sequence[EncoderLayerParts], sequence_length: int, dense_flops: int) -> UnitCosts:
        """Analytic costs at ``sequence_length`` tokens (a matrix product ``m x k @ k x n`` is ``2 m k n``):
        a head has 4 projections (q, k, v in; its columns of the output) and 2 attention products,
        a neuron one row in and one column out. ``fixed`` is ``dense_flops`` minus all heads and neurons."""
        part = layers[0]
        hidden = part.attention_output.out_features
        head = 2 * sequence_length * (4 * hidden * part.head_size + 2 * sequence_length * part.head_size)
        neuron = 2 * sequence_length * 2 * hidden
        units = sum(p.heads * head + p.intermediate.out_features * neuron for p in layers)
        if dense_flops < units:
            raise PruneError(f"dense FLOPs {dense_flops:,} are below the heads' and neurons' {units:,}: "
                             "count them at the same sequence length")
        return cls(head, neuron, dense_flops - units)

    def flops(self, heads: int, neurons: int) -> int:
        """Total FLOPs with ``heads`` heads and ``neurons`` neurons kept."""
        return self.fixed + heads * self.head + neurons * self.neuron


def _top_mask(scores: torch.Tensor, keep: int) -> torch.Tensor:
    mask = torch.zeros_like(scores)
    mask[torch.topk(scores, keep).indices] = 1.0
    return mask


def search_masks(
    head_scores: Sequence[torch.Tensor], neuron_scores: Sequence[torch.Tensor], costs: UnitCosts, max_flops: float,
    times: UnitTimes | None = None, max_time: float | None = None,
) -> StructureMasks:
    """Keep the heads and neurons of highest score with total FLOPs at most ``max_flops`` (and, with
    ``times``, a predicted time of at most ``max_time``: :mod:`metaprune.prune.head_ffn_timing`).

    For every total count of kept heads (at least the best head of each layer), the remaining
    budget takes the best neurons; the combination with the highest kept score wins.
    """
    if (times is None) != (max_time is None):
        raise ConfigError("a time limit needs both the unit times and the maximum time")
    layers = len(head_scores)
    forced = [int(torch.argmax(scores)) for scores in head_scores]
    # every layer keeps its best head: those go first, then the other heads by score
    rest = torch.cat([torch.where(torch.arange(len(s)) == forced[i], torch.inf, s.double())
                      for i, s in enumerate(head_scores)])
    head_order = torch.argsort(rest, descending=True)
    head_values = torch.cat([s.double() for s in head_scores])[head_order]
    neuron_all = torch.cat([s.double() for s in neuron_scores])
    neuron_sorted, neuron_order = torch.sort(neuron_all, descending=True)
    head_cumulative = torch.cumsum(head_values, 0)
    neuron_cumulative = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(neuron_sorted, 0)])
    best, best_count = None, None
    for heads in range(layers, len(head_values) + 1):
        room = max_flops - costs.flops(heads, 0)
        if room < 0:
            break
        neurons = min(int(room // costs.neuron), len(neuron_all))
        if times is not None and max_time is not None:
            time_room = max_time - times.time(heads, 0)
            if time_room < 0:
                break
            neurons = min(neurons, int(time_room // times.neuron))
        kept = float(head_cumulative[heads - 1] + neuron_cumulative[neurons])
        if best is None or kept > best:
            best, best_count = kept, (heads, neurons)
    if best_count is None:
        raise PruneError(f"a FLOPs budget of {max_flops:,.0f} cannot keep one head per layer "
                         f"({costs.flops(layers, 0):,} FLOPs)" + ("" if times is None else " within the time limit")
                         + ": raise the budget")
    heads, neurons = best_count
    head_keep = torch.zeros(len(head_values))
    head_keep[head_order[:heads]] = 1.0
    neuron_keep = torch.zeros(len(neuron_all))
    neuron_keep[neuron_order[:neurons]] = 1.0
    return StructureMasks(list(head_keep.split([len(s) for s in head_scores])),
                          list(neuron_keep.split([len(s) for s in neuron_scores])))


def round_neurons(masks: StructureMasks, neuron_scores: Sequence[torch.Tensor], multiple: int, costs: UnitCosts,
                  max_flops: float, times: UnitTimes | None = None, max_time: float | None = None) -> StructureMasks:
    """Kept neurons of every layer rounded to a multiple of ``multiple`` (matrix sizes CPU kernels run
    at full speed): each layer first drops to its multiple below (at least one multiple), then the
    budget left goes, ``multiple`` neurons at a time, to the layer whose next neurons score highest,
    within ``max_flops`` (and ``max_time``). Heads are kept as they are."""
    if multiple < 1:
        raise ConfigError(f"--round-to must be >= 1, got {multiple}")
    if multiple == 1:
        return masks.clone()
    heads = sum(masks.kept()[0])
    order = [torch.argsort(scores.double(), descending=True) for scores in neuron_scores]
    counts = [min(len(scores), max(multiple, k - k % multiple)) for k, scores in zip(masks.kept()[1], neuron_scores)]

    def fits(total: int) -> bool:
        within = costs.flops(heads, total) <= max_flops
        return within and (times is None or max_time is None or times.time(heads, total) <= max_time)

    while True:
        total = sum(counts)
        if not fits(total + multiple):
            break
        gains = [float(scores.double()[rank[c:c + multiple]].sum()) if c + multiple <= len(scores) else -torch.inf
                 for scores, rank, c in zip(neuron_scores, order, counts)]
        best = max(range(len(gains)), key=gains.__getitem__)
        if gains[best] == -torch.inf:
            break
        counts[best] += multiple
    neurons = []
    for scores, rank, count in zip(neuron_scores, order, counts):
        mask = torch.zeros(len(scores))
        mask[rank[:count]] = 1.0
        neurons.append(mask)
    return StructureMasks([m.detach().clone() for m in masks.heads], neurons)


def uniform_masks(head_scores: Sequence[torch.Tensor], neuron_scores: Sequence[torch.Tensor], costs: UnitCosts,
                  max_flops: float) -> StructureMasks:
    """Baseline: the same fraction of heads and of neurons in every layer (highest scores kept), the
    largest fraction within ``max_flops``."""
    heads_total = sum(len(s) for s in head_scores)
    neurons_total = sum(len(s) for s in neuron_scores)
    dense = costs.flops(heads_total, neurons_total)
    ratio = (max_flops - costs.fixed) / (dense - costs.fixed)

    def build(fraction: float) -> StructureMasks:
        return StructureMasks([_top_mask(s, max(1, round(fraction * len(s)))) for s in head_scores],
                              [_top_mask(s, round(fraction * len(s))) for s in neuron_scores])

    fraction = max(0.0, min(1.0, ratio))
    while fraction > 0:
        masks = build(fraction)
        heads, neurons = masks.kept()
        if costs.flops(sum(heads), sum(neurons)) <= max_flops:
            return masks
        fraction -= 1e-3
    raise PruneError(f"a FLOPs budget of {max_flops:,.0f} cannot keep one head per layer")


def _removal_cost(gradients: torch.Tensor, removed: torch.Tensor) -> float:
    return float(gradients[:, removed].sum(1).pow(2).sum())


def rearrange_layer(gradients: torch.Tensor, mask: torch.Tensor, max_swaps: int = 256) -> torch.Tensor:
    """Re-choose which units of one layer are removed, keeping their number, under the layer's full
    Fisher block: the second-order loss of removing set ``R`` is ``sum_x (sum_{j in R} g_xj)^2``.

    The removed set is built greedily (each step adds the unit that raises the loss least), the
    better of it and ``mask`` is kept, then swaps of a removed and a kept unit are made while one
    lowers the loss (at most ``max_swaps``)."""
    remove = int((mask == 0).sum())
    if remove == 0 or remove == mask.numel():
        return mask.clone()
    gradients = gradients.double()
    removed = torch.zeros(mask.numel(), dtype=torch.bool)
    running = torch.zeros(gradients.shape[0], dtype=torch.float64)
    own = gradients.pow(2).sum(0)
    for _ in range(remove):
        cost = 2.0 * (running @ gradients) + own
        cost[removed] = torch.inf
        choice = int(torch.argmin(cost))
        removed[choice] = True
        running += gradients[:, choice]
    if _removal_cost(gradients, mask == 0) < _removal_cost(gradients, removed):
        removed = mask == 0
    gram = gradients.T @ gradients
    for _ in range(max_swaps):
        total = gradients[:, removed].sum(1)
        current = float(total.pow(2).sum())
        along = total @ gradients  # s . g_j
        # || s - g_r + g_k ||^2 for every removed r (rows) and kept k (columns)
        out_index, in_index = torch.nonzero(removed).reshape(-1), torch.nonzero(~removed).reshape(-1)
        swapped = (current + own[out_index, None] + own[None, in_index] - 2 * along[out_index, None]
                   + 2 * along[None, in_index] - 2 * gram[out_index][:, in_index])
        best = int(torch.argmin(swapped))
        row, column = divmod(best, in_index.numel())
        if float(swapped[row, column]) >= current * (1 - 1e-9):
            break
        removed[out_index[row]], removed[in_index[column]] = False, True
    return (~removed).to(mask.dtype)


def rearrange_masks(masks: StructureMasks, gradients: MaskGradients) -> StructureMasks:
    """:func:`rearrange_layer` on every layer's head and neuron masks (the first kept head of a layer
    whose heads would all go stays)."""
    heads = [rearrange_layer(g, m) for g, m in zip(gradients.heads, masks.heads)]
    neurons = [rearrange_layer(g, m) for g, m in zip(gradients.neurons, masks.neurons)]
    return StructureMasks(heads, neurons)


def magnitude_scores(layers: Sequence[EncoderLayerParts]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Baseline importance: L2 norm of each head's q/k/v rows and output columns, of each neuron's
    input row and output column."""
    head_scores, neuron_scores = [], []
    for part in layers:
        (query, key, value), heads = separate_projections(part.attention)  # type: ignore[misc]
        rows = torch.cat([layer.weight.detach().reshape(heads, -1) for layer in (query, key, value)], 1)
        columns = part.attention_output.weight.detach().reshape(-1, heads, part.head_size).permute(1, 0, 2)
        head_scores.append(torch.cat([rows, columns.reshape(heads, -1)], 1).norm(dim=1))
        neuron_scores.append(torch.cat([part.intermediate.weight.detach(), part.output.weight.detach().T], 1)
                             .norm(dim=1))
    return head_scores, neuron_scores
