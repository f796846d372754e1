"""Model state in safetensors files, with string metadata; never pickle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from metaprune.errors import WeightsError


def save_state(path: str | Path, model: nn.Module, metadata: dict[str, Any] | None = None) -> Path:
    """Write ``model.state_dict()`` to a safetensors file; ``metadata`` is stored as JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: tensor.detach().contiguous().cpu() for name, tensor in model.state_dict().items()}
    save_file(tensors, str(path), metadata={"metaprune": json.dumps(metadata or {})})
    return path


def read_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a safetensors file written by :func:`save_state`: (tensors, metadata)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            raw = (handle.metadata() or {}).get("metaprune", "{}")
        return tensors, json.loads(raw)
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise WeightsError(f"cannot read weights file {path}: it is corrupt or not a safetensors file ({error})") from error


def state_dict_mismatch(error: RuntimeError) -> str:
    """The first concrete mismatch (a size mismatch, missing or unexpected keys) of a ``load_state_dict`` error."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    details = [line for line in lines[1:] if not line.startswith("Error(s)")]
    return (details or lines or ["unknown mismatch"])[0][:300]


def load_state(path: str | Path, model: nn.Module) -> dict[str, Any]:
    """Load weights from ``path`` into ``model`` (strict); returns the stored metadata."""
    tensors, metadata = read_tensors(path)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as error:
        raise WeightsError(f"weights in {path} do not fit the {type(model).__name__} model: "
                           f"{state_dict_mismatch(error)}; save them from this architecture or drop --weights") from error
    return metadata
