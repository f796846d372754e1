"""Small helpers shared by the model families."""

from __future__ import annotations

from metaprune.errors import ConfigError


def scaled_channels(base_channels: int, width: float) -> int:
    """Channels of a layer whose reference width is ``base_channels``, scaled by ``width``.

    Rounded to the nearest integer and never below one channel.

    Raises:
        ConfigError: ``width`` is not a positive number.
    """
    if isinstance(width, bool) or not isinstance(width, (int, float)) or width <= 0:
        raise ConfigError(f"width multiplier must be a positive number, got {width!r}")
    return max(1, round(base_channels * width))
