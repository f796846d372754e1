"""Sample grids: a batch of ``N x 1 x H x W`` images in ``[0, 1]`` written as one PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from metaprune.errors import ConfigError
from metaprune.rundir import write_with


def image_grid(images: torch.Tensor, columns: int = 8, scale: int = 4, padding: int = 1) -> np.ndarray:
    """``uint8`` grid of ``images`` (row-major, ``columns`` wide), each upscaled ``scale`` times."""
    if images.dim() != 4 or images.shape[1] != 1 or len(images) == 0:
        raise ConfigError(f"need N x 1 x H x W images with N >= 1, got {tuple(images.shape)}")
    count, _, height, width = images.shape
    columns = min(columns, count)
    rows = -(-count // columns)
    cell_h, cell_w = height * scale + padding, width * scale + padding
    grid = np.full((rows * cell_h + padding, columns * cell_w + padding), 128, dtype=np.uint8)
    pixels = (images[:, 0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    for index in range(count):
        row, column = divmod(index, columns)
        tile = np.kron(pixels[index], np.ones((scale, scale), dtype=np.uint8))
        top, left = padding + row * cell_h, padding + column * cell_w
        grid[top:top + height * scale, left:left + width * scale] = tile
    return grid


def save_grid(images: torch.Tensor, path: str | Path, columns: int = 8, scale: int = 4) -> Path:
    """Write :func:`image_grid` of ``images`` to ``path`` as a PNG (atomically, whatever its suffix); returns the path."""
    grid = Image.fromarray(image_grid(images, columns, scale))
    return write_with(Path(path), lambda partial: grid.save(partial, format="PNG"))
