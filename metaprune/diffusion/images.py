"""Sample grids: a batch of ``N x 1 x H x W`` images in ``[0, 1]`` written as one PNG, rows labelled.

``save_grid(images, "grid.png", columns=8, labels=["a digit 7", "a handwritten seven"])`` puts each
label (e.g. the row's prompt and expert) in a white margin left of its row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

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


#: Label text size in pixels, and the widest label margin (longer labels are cut with an ellipsis).
LABEL_SIZE = 12
MAX_LABEL_WIDTH = 360


def _fit(text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, width: int) -> str:
    """``text``, shortened with an ellipsis until it is at most ``width`` pixels wide."""
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "…") > width:
        text = text[:-1]
    return text + "…"


def label_rows(grid: np.ndarray, labels: list[str], rows: int) -> Image.Image:
    """``grid`` (``rows`` equal rows) with ``labels[i]`` written in a white margin left of row ``i``."""
    if len(labels) != rows:
        raise ConfigError(f"{rows} grid rows need as many labels, got {len(labels)}")
    font = ImageFont.load_default(size=LABEL_SIZE)
    margin = min(MAX_LABEL_WIDTH, int(max(font.getlength(label) for label in labels))) + 2 * LABEL_SIZE // 2
    height, width = grid.shape
    canvas = Image.new("L", (margin + width, height), 255)
    canvas.paste(Image.fromarray(grid), (margin, 0))
    draw = ImageDraw.Draw(canvas)
    row_height = height / rows
    for row, label in enumerate(labels):
        draw.text((LABEL_SIZE // 2, (row + 0.5) * row_height), _fit(label, font, margin - LABEL_SIZE), fill=0,
                  font=font, anchor="lm")
    return canvas


def save_grid(images: torch.Tensor, path: str | Path, columns: int = 8, scale: int = 4,
              labels: list[str] | None = None) -> Path:
    """Write :func:`image_grid` of ``images`` to ``path`` as a PNG (atomically, whatever its suffix); returns the path.

    ``labels``: one text per grid row (e.g. its prompt), written left of the row.
    """
    array = image_grid(images, columns, scale)
    if labels is None:
        grid = Image.fromarray(array)
    else:
        grid = label_rows(array, list(labels), -(-len(images) // min(columns, len(images))))
    return write_with(Path(path), lambda partial: grid.save(partial, format="PNG"))
