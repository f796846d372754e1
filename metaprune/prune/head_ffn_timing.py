"""Measured CPU time of heads and FFN neurons, for a latency-aware head/FFN mask search.

FLOPs undercount what a head costs on a CPU: its softmax, the reshapes and the small matrix
products of attention take time that the FLOPs of its projections do not show, and every layer
has a fixed part (LayerNorms, residual adds, biases) that no unit removal shrinks. Fitted on
all-MiniLM-L6-v2's layer (batch 32, 128 tokens, one thread, this project's 2-core machine): a
head ~4.7 ms, a neuron ~0.058 ms, the fixed part ~14.5 ms of a ~160 ms layer; per FLOP a head
costs ~1.1x a neuron. A search with a time limit as well as the FLOPs budget gives up heads for
neurons when the time limit binds.

:func:`measure_unit_times` times copies of one encoder layer with a few head and neuron counts
(CPU time of this process, one thread: steady on a shared machine) and fits

    t(h, n) = fixed + head * h + neuron * n      (least squares, in ms),

which :func:`metaprune.prune.head_ffn.search_masks` takes as a second constraint.
"""

from __future__ import annotations

import copy
import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn

from metaprune.errors import ConfigError
from metaprune.prune.head_ffn import EncoderLayerParts, StructureMasks


@dataclass(frozen=True)
class UnitTimes:
    """Milliseconds per layer: ``fixed`` (norms, residuals, biases), one ``head``, one ``neuron``."""

    head: float
    neuron: float
    fixed: float
    layers: int

    def time(self, heads: int, neurons: int) -> float:
        """Predicted time of all layers with ``heads`` heads and ``neurons`` neurons kept in total."""
        return self.layers * self.fixed + heads * self.head + neurons * self.neuron

    def to_dict(self) -> dict[str, float]:
        return {"head_ms": self.head, "neuron_ms": self.neuron, "fixed_ms": self.fixed, "layers": self.layers}


def _shrunk(layer: nn.Module, part: EncoderLayerParts, heads: int, neurons: int) -> nn.Module:
    from metaprune.prune.head_ffn_tuning import remove_structure

    holder = nn.Module()
    holder.encoder = nn.Module()
    holder.encoder.layer = nn.ModuleList([copy.deepcopy(layer)])
    masks = StructureMasks([(torch.arange(part.heads) < heads).float()],
                           [(torch.arange(part.intermediate.out_features) < neurons).float()])
    remove_structure(holder, masks)
    return holder.encoder.layer[0].eval()


def measure_unit_times(model: nn.Module, layers: list[EncoderLayerParts], *, batch: int = 32,
                       sequence_length: int = 128, repeats: int = 3) -> UnitTimes:
    """Fit per-head, per-neuron and fixed CPU times (ms, one thread) on copies of ``model``'s first layer.

    Raises:
        ConfigError: ``batch``, ``sequence_length`` or ``repeats`` below 1.
    """
    if min(batch, sequence_length, repeats) < 1:
        raise ConfigError(f"need batch, sequence length and repeats >= 1, got {batch}, {sequence_length}, {repeats}")
    layer, part = model.encoder.layer[0], layers[0]
    heads, neurons = part.heads, part.intermediate.out_features
    grid = sorted({(h, n) for h in (1, max(1, heads // 2), heads) for n in (max(1, neurons // 8), neurons // 2, neurons)})
    hidden = torch.randn(batch, sequence_length, part.attention_output.out_features,
                         generator=torch.Generator().manual_seed(0))
    modules = {shape: _shrunk(layer, part, *shape) for shape in grid}
    samples: dict[tuple[int, int], list[float]] = {shape: [] for shape in grid}
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            for module in modules.values():
                module(hidden)
            for _ in range(repeats):
                for shape, module in modules.items():
                    start = time.process_time()
                    module(hidden)
                    samples[shape].append((time.process_time() - start) * 1e3)
    finally:
        torch.set_num_threads(previous)
    design = torch.tensor([[1.0, h, n] for h, n in grid], dtype=torch.float64)
    observed = torch.tensor([statistics.median(samples[shape]) for shape in grid], dtype=torch.float64)
    fixed, head, neuron = torch.linalg.lstsq(design, observed.unsqueeze(1)).solution.reshape(-1).tolist()
    return UnitTimes(head=max(head, 1e-9), neuron=max(neuron, 1e-9), fixed=max(fixed, 0.0), layers=len(layers))
