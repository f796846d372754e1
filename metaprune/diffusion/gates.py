"""Gates on a stock ``diffusers.UNet2DConditionModel``, applied with forward hooks.

Four kinds of gate, each placed where zeroing it is *exactly* what removing the matching
tensor slices does (:mod:`metaprune.diffusion.slicing`):

* ``channel``: groups of a ``ResnetBlock2D``'s inner channels, one gate per ``norm2`` group.
  The mask multiplies the input of ``conv2``, i.e. after ``norm2`` and the activation: a zeroed
  group of ``conv1`` outputs would still emit ``norm2``'s bias, while removing whole norm groups
  leaves the statistics of the others unchanged.
* ``head``: attention heads of each ``Attention`` (self and cross); the mask multiplies the
  concatenated head outputs before ``to_out[0]``. Heads are independent until then.
* ``ff``: groups of GEGLU hidden units of a ``FeedForward``; the mask multiplies the input of
  its output projection ``net[2]``.
* ``depth``: a whole shape-preserving block (every ``Transformer2DModel``, which is residual,
  and each ``ResnetBlock2D`` without a shortcut); its output becomes ``g * block(x) + (1 - g) * x``,
  which for ``g`` in ``{0, 1}`` is exactly the block or the identity.

Gates are per sample (``B x G``), so one forward pass can run a different architecture per
prompt; a batch that is a multiple of the gates' (classifier-free guidance) reuses them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from torch import nn

from metaprune.errors import ConfigError, PruneError

GATE_KINDS = ("channel", "head", "ff", "depth")


@dataclass(frozen=True)
class GateGroup:
    """The gates of one module: ``size`` gates of ``unit`` channels/features each.

    ``parent`` names the depth gate of the block that contains the module, if any.
    """

    name: str
    kind: str
    module: str
    size: int
    unit: int
    parent: str | None = None


class GateLayout:
    """The ordered gate groups of a UNet and their offsets in a flat ``B x G`` gate tensor."""

    def __init__(self, groups: list[GateGroup]) -> None:
        if not groups:
            raise ConfigError("a gate layout needs at least one gate group")
        self.groups = list(groups)
        self.offsets: dict[str, int] = {}
        total = 0
        for group in self.groups:
            self.offsets[group.name] = total
            total += group.size
        self.num_gates = total

    def __len__(self) -> int:
        return self.num_gates

    def group(self, name: str) -> GateGroup:
        """The group called ``name``."""
        for group in self.groups:
            if group.name == name:
                return group
        raise ConfigError(f"no gate group named {name!r}")

    def slice_of(self, gates: torch.Tensor, name: str) -> torch.Tensor:
        """The columns of ``gates`` (``... x G``) that belong to group ``name``."""
        start = self.offsets[name]
        return gates[..., start:start + self.group(name).size]

    def check(self, gates: torch.Tensor) -> torch.Tensor:
        """``gates`` as ``B x G`` (a 1-D vector becomes one row); ConfigError on a size mismatch."""
        gates = gates.unsqueeze(0) if gates.dim() == 1 else gates
        if gates.dim() != 2 or gates.shape[1] != self.num_gates:
            raise ConfigError(f"gates must have shape (B, {self.num_gates}), got {tuple(gates.shape)}")
        return gates

    def counts(self) -> dict[str, int]:
        """Number of gates of each kind."""
        return {kind: sum(group.size for group in self.groups if group.kind == kind) for kind in GATE_KINDS}

    def ensure_nonempty(self, hard: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """Hard gates where every channel/head/ff group keeps at least its highest-scoring gate.

        A group with nothing left could not be sliced (e.g. a GroupNorm of zero groups); a
        whole block is removed with its depth gate instead.
        """
        hard, scores = self.check(hard).clone(), self.check(scores)
        for group in self.groups:
            if group.kind == "depth":
                continue
            block = self.slice_of(hard, group.name)
            empty = block.sum(-1) == 0
            if empty.any():
                best = self.slice_of(scores, group.name)[empty].argmax(-1)
                block[empty.nonzero().squeeze(-1), best] = 1.0
        return hard


def _is_skippable_resnet(module: nn.Module) -> bool:
    return isinstance(module, ResnetBlock2D) and module.conv_shortcut is None and module.in_channels == module.out_channels


def discover_gates(unet: nn.Module, ff_groups: int = 8) -> GateLayout:
    """Every gate group of ``unet``, in module order (a depth gate precedes what it contains)."""
    groups: list[GateGroup] = []
    depth_of: dict[str, str] = {}
    for name, module in unet.named_modules():
        parent = next((gate for prefix, gate in depth_of.items() if name.startswith(prefix + ".")), None)
        if isinstance(module, Transformer2DModel) or _is_skippable_resnet(module):
            depth_of[name] = f"{name}:depth"
            groups.append(GateGroup(f"{name}:depth", "depth", name, 1, 1))
        if isinstance(module, ResnetBlock2D):
            norm = module.norm2
            groups.append(GateGroup(f"{name}:channel", "channel", name, norm.num_groups,
                                    norm.num_channels // norm.num_groups, depth_of.get(name, parent)))
        elif isinstance(module, Attention):
            unit = module.to_q.out_features // module.heads
            groups.append(GateGroup(f"{name}:head", "head", name, module.heads, unit, parent))
        elif isinstance(module, FeedForward):
            hidden = module.net[2].in_features
            if hidden % ff_groups:
                raise ConfigError(f"{name}: {hidden} feed-forward units do not split into {ff_groups} groups")
            groups.append(GateGroup(f"{name}:ff", "ff", name, ff_groups, hidden // ff_groups, parent))
    return GateLayout(groups)


def mask_target(group: GateGroup, module: nn.Module) -> nn.Module:
    """The layer whose *input* a channel/head/ff gate multiplies (see the module docstring)."""
    if group.kind == "channel":
        return module.conv2
    if group.kind == "head":
        return module.to_out[0]
    return module.net[2]


def _expand(mask: torch.Tensor, batch: int, unit: int) -> torch.Tensor:
    """``B x size`` gates to ``batch x (size * unit)`` feature masks (batch a multiple of B)."""
    if batch % mask.shape[0]:
        raise ConfigError(f"a batch of {batch} cannot use gates for {mask.shape[0]} samples")
    return mask.repeat(batch // mask.shape[0], 1).repeat_interleave(unit, dim=1)


class GateController:
    """Hooks that apply the gates set with :meth:`gating` to a UNet; inactive otherwise.

    ``with controller.gating(gates): unet(...)`` runs the gated model; outside the block the
    UNet is untouched. :meth:`remove` detaches the hooks.
    """

    def __init__(self, unet: nn.Module, layout: GateLayout) -> None:
        self.layout = layout
        self.gates: torch.Tensor | None = None
        self._handles: list[Any] = []
        modules = dict(unet.named_modules())
        for group in layout.groups:
            if group.module not in modules:
                raise ConfigError(f"the UNet has no module {group.module!r}; the layout belongs to another model")
            self._attach(group, modules[group.module])

    def _attach(self, group: GateGroup, module: nn.Module) -> None:
        if group.kind == "depth":
            self._handles.append(module.register_forward_hook(self._depth_hook(group), with_kwargs=True))
            return
        feature_dim = 1 if group.kind == "channel" else -1
        self._handles.append(mask_target(group, module).register_forward_pre_hook(self._mask_hook(group, feature_dim)))

    def _mask_hook(self, group: GateGroup, feature_dim: int):
        def hook(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...] | None:
            if self.gates is None:
                return None
            hidden = args[0]
            mask = _expand(self.layout.slice_of(self.gates, group.name), hidden.shape[0], group.unit)
            shape = [hidden.shape[0]] + [1] * (hidden.dim() - 1)
            shape[feature_dim] = mask.shape[1]
            return (hidden * mask.to(hidden.dtype).reshape(shape), *args[1:])

        return hook

    def _depth_hook(self, group: GateGroup):
        def hook(_module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
            if self.gates is None:
                return None
            hidden = args[0] if args else kwargs["hidden_states"]
            result = output[0] if isinstance(output, tuple) else getattr(output, "sample", output)
            gate = _expand(self.layout.slice_of(self.gates, group.name), hidden.shape[0], 1)
            gate = gate.to(hidden.dtype).reshape([hidden.shape[0]] + [1] * (hidden.dim() - 1))
            blended = gate * result + (1 - gate) * hidden
            return (blended, *output[1:]) if isinstance(output, tuple) else blended

        return hook

    @contextmanager
    def gating(self, gates: torch.Tensor) -> Iterator[None]:
        """Run the UNet under ``gates`` (``B x G`` or ``G``, soft or hard) inside the block."""
        previous, self.gates = self.gates, self.layout.check(gates)
        try:
            yield
        finally:
            self.gates = previous

    def remove(self) -> None:
        """Detach every hook (the UNet is then exactly the stock module again)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def check_hard(gates: torch.Tensor) -> torch.Tensor:
    """``gates`` if every value is exactly 0 or 1, else PruneError."""
    if not bool(((gates == 0) | (gates == 1)).all()):
        raise PruneError("an expert needs hard gates (every value 0 or 1); threshold the gate probabilities first")
    return gates
