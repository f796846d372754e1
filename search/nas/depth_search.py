"""TAS depth search: per residual stage, logits over how many of its blocks are kept.

A residual stage is an ``nn.Sequential`` of at least two blocks (modules holding a
convolution) in which every block after the first maps its input to an output of the same
shape, so that dropping the tail of the stage leaves a valid network. With
:math:`h_d` the stage's output after its first :math:`d` blocks and the two depths :math:`I`
sampled by :func:`~metaprune.search.nas.gumbel.gumbel_top2` with weights :math:`w`, the
stage returns :math:`\\sum_{i \\in I} w_i h_{d_i}`. Block :math:`b` (1-based) runs in the derived
network with probability :math:`P(D \\ge b)`, which weighs its FLOPs in the expected cost.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from metaprune.errors import ConfigError
from metaprune.search.nas.gumbel import CandidateLogits


def _is_block(module: nn.Module) -> bool:
    return any(isinstance(child, nn.Conv2d) for child in module.modules()) and not isinstance(module, nn.Conv2d)


def residual_stages(model: nn.Module, example_input: torch.Tensor) -> list[str]:
    """Names of the stages of ``model`` whose tail blocks are shape-preserving (so depth can be searched)."""
    candidates = {name: module for name, module in model.named_modules()
                  if isinstance(module, nn.Sequential) and len(module) >= 2 and all(_is_block(b) for b in module)}
    shapes: dict[str, list[tuple[torch.Size, torch.Size]]] = {name: [] for name in candidates}

    def record(name: str):
        return lambda _module, args, output: shapes[name].append((args[0].shape, output.shape))

    handles = [block.register_forward_hook(record(name)) for name, stage in candidates.items() for block in stage]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example_input)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return [name for name, seen in shapes.items()
            if len(seen) == len(candidates[name]) and all(before == after for before, after in seen[1:])]


class DepthSearch(CandidateLogits):
    """Depth logits of the residual stages of a model (candidates: depths ``1..len(stage)``) and the mixing hooks."""

    def __init__(self, model: nn.Module, example_input: torch.Tensor):
        stages = residual_stages(model, example_input)
        if not stages:
            raise ConfigError(f"{type(model).__name__} has no residual stage whose depth can be searched")
        super().__init__([len(model.get_submodule(name)) for name in stages])
        self.stages = stages

    def block_probabilities(self) -> dict[str, torch.Tensor]:
        """Probability that each block runs, by block name (``stage.index``): :math:`P(D \\ge b)`."""
        running = {}
        for name, probabilities in zip(self.stages, self.probabilities()):
            at_least = torch.flip(torch.cumsum(torch.flip(probabilities, [0]), 0), [0])
            running.update({f"{name}.{block}": at_least[block] for block in range(len(probabilities))})
        return running

    def argmax_depths(self) -> dict[str, int]:
        """The most probable depth of every stage."""
        return {name: int(logits.argmax()) + 1 for name, logits in zip(self.stages, self.logits)}

    @contextlib.contextmanager
    def attached(self, model: nn.Module) -> Iterator[nn.Module]:
        """Make every stage of ``model`` return the weighted sum of its outputs at the sampled depths."""
        outputs: dict[str, list[torch.Tensor]] = {name: [] for name in self.stages}

        def keep(name: str):
            return lambda _module, _args, output: outputs[name].append(output)

        def mix(stage_index: int):
            name = self.stages[stage_index]

            def apply(_module: nn.Module, _args: tuple, _output: torch.Tensor) -> torch.Tensor:
                depths, weights = self.selection[stage_index]
                seen, outputs[name] = outputs[name], []
                return sum(weight * seen[depth] for depth, weight in zip(depths.tolist(), weights))
            return apply

        handles = []
        for index, name in enumerate(self.stages):
            stage = model.get_submodule(name)
            handles += [block.register_forward_hook(keep(name)) for block in stage]
            handles.append(stage.register_forward_hook(mix(index)))
        try:
            yield model
        finally:
            for handle in handles:
                handle.remove()


def drop_blocks(model: nn.Module, depths: dict[str, int]) -> nn.Module:
    """Keep only the first ``depths[stage]`` blocks of each stage of ``model`` (in place; names are unchanged)."""
    for name, depth in depths.items():
        stage = model.get_submodule(name)
        if not 1 <= depth <= len(stage):
            raise ConfigError(f"depth of stage {name!r} must be in 1..{len(stage)}, got {depth}")
        parent_name, _, attribute = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attribute, nn.Sequential(*list(stage)[:depth]))
    return model
