"""Channel-wise interpolation (TAS, Dong & Yang 2019): align feature maps of different widths so they can be summed.

A layer whose width is searched produces, for candidate :math:`j`, a feature map
:math:`O_j \\in \\mathbb{R}^{N \\times C_j \\times H \\times W}`. TAS sums candidates of different
widths after resizing each to a common width :math:`C`:

.. math:: \\mathrm{CWI}(O_j, C)_{n,:,h,w} = \\mathrm{interp}_{\\mathrm{linear}}\\big(O_{j,n,:,h,w},\\ C\\big),

a 1-D linear interpolation along the channel axis at every spatial position (the identity
when :math:`C_j = C`). :func:`align_channels` also offers zero padding, which aligns a map of
the :math:`C_j` most important channels with the full map the way physical pruning does (the
removed channels read as zeros).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from metaprune.errors import ConfigError

ALIGNMENTS = ("pad", "interpolate")


def _check(features: torch.Tensor, width: int) -> None:
    if not isinstance(features, torch.Tensor) or features.dim() < 2:
        raise ConfigError("channel alignment needs a tensor with a channel axis (N x C x ...)")
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ConfigError(f"target width must be a positive integer, got {width!r}")


def channel_wise_interpolation(features: torch.Tensor, width: int) -> torch.Tensor:
    """Resize the channel axis (dim 1) of ``features`` to ``width`` by linear interpolation.

    Works for ``N x C`` and ``N x C x H x W`` (any trailing dims); returns ``features``
    itself when it already has ``width`` channels.
    """
    _check(features, width)
    channels = features.shape[1]
    if channels == width:
        return features
    channels_last = features.movedim(1, -1)
    signals = channels_last.reshape(-1, 1, channels)
    resized = F.interpolate(signals, size=width, mode="linear", align_corners=True)
    return resized.reshape(*channels_last.shape[:-1], width).movedim(-1, 1)


def zero_pad_channels(features: torch.Tensor, width: int) -> torch.Tensor:
    """Append zero channels to ``features`` up to ``width`` (which must not be smaller)."""
    _check(features, width)
    missing = width - features.shape[1]
    if missing < 0:
        raise ConfigError(f"cannot zero-pad {features.shape[1]} channels down to {width}")
    if missing == 0:
        return features
    padding = features.new_zeros(features.shape[0], missing, *features.shape[2:])
    return torch.cat([features, padding], dim=1)


def align_channels(features: torch.Tensor, width: int, mode: str = "pad") -> torch.Tensor:
    """``features`` with ``width`` channels: ``"pad"`` (zeros, as pruning) or ``"interpolate"`` (TAS's CWI)."""
    if mode == "pad":
        return zero_pad_channels(features, width)
    if mode == "interpolate":
        return channel_wise_interpolation(features, width)
    raise ConfigError(f"unknown channel alignment {mode!r}; choose one of {', '.join(ALIGNMENTS)}")
