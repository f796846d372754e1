"""The meta-training checkpoint: one safetensors file, written atomically, read through a schema.

``checkpoint.safetensors`` holds the metanetwork's weights under their own names, the optimizer's
per-parameter moments under ``optimizer/<parameter index>/<name>`` and, as JSON metadata, the
epoch, the best validation accuracy, the configuration and the curves (:class:`CheckpointRecord`).
It is one file, so a run interrupted at any moment finds either the previous epoch's checkpoint or
the new one, never a mix; no pickle is read. ``metanet.safetensors`` holds the best weights and
the metanetwork's settings only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import torch
from pydantic import ConfigDict, Field

from metaprune.errors import WeightsError
from metaprune.rundir import save_safetensors
from metaprune.schemas import StrictModel, validate
from metaprune.train.checkpoint import read_tensors

CHECKPOINT, BEST = "checkpoint.safetensors", "metanet.safetensors"
#: Files of the checkpoint format before it became one file; a folder holding them cannot be resumed.
LEGACY_FILES = ("state.json", "optimizer.pt")
#: Key prefix of the optimizer's tensors in a checkpoint (never a metanetwork parameter name).
OPTIMIZER_PREFIX = "optimizer/"


def bounded(low: float, high: float, *, low_open: bool = False) -> Any:
    """A number in ``[low, high]`` (``(low, high]`` when ``low_open``) for pydantic validation."""
    return Field(gt=low, le=high) if low_open else Field(ge=low, le=high)


class MetanetSettings(StrictModel):
    """The metanetwork's arguments as a file stores them (bounded: a file cannot ask for any size)."""

    hidden: Annotated[int, bounded(1, 1024)]
    layers: Annotated[int, bounded(1, 16)]
    epsilon: Annotated[float, bounded(0, 10)]


class HistoryRecord(StrictModel):
    """The curves of :class:`~metaprune.meta.training.MetaHistory`, finite numbers only."""

    task_loss: list[float]
    sparsity_loss: list[float]
    val_pruned_accuracy: list[float]
    epoch_seconds: list[float]
    baseline_val_pruned_accuracy: float | None


class CheckpointRecord(StrictModel):
    """The JSON metadata of ``checkpoint.safetensors``."""

    metanet: MetanetSettings
    epoch: Annotated[int, Field(ge=0)]
    best: float
    config: dict[str, Any]
    history: HistoryRecord


class _BestRecord(StrictModel):
    """The JSON metadata of ``metanet.safetensors`` (a checkpoint's, with more fields, is accepted too)."""

    model_config = ConfigDict(extra="ignore")
    metanet: MetanetSettings


def write_checkpoint(path: Path, weights: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
                     record: dict[str, Any]) -> Path:
    """Write weights, optimizer moments and ``record`` (see :class:`CheckpointRecord`) to ``path`` atomically."""
    moments = {f"{OPTIMIZER_PREFIX}{index}/{name}": torch.as_tensor(value).detach().clone()
               for index, state in optimizer.state_dict()["state"].items() for name, value in state.items()}
    return save_safetensors(path, {**weights, **moments}, metadata={"metaprune": json.dumps(record)})


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], CheckpointRecord]:
    """``(weights, optimizer tensors, record)`` of a checkpoint; WeightsError naming the file (and field)."""
    tensors, metadata = read_tensors(path)
    record = validate(CheckpointRecord, metadata, str(path), WeightsError)
    weights = {name: value for name, value in tensors.items() if not name.startswith(OPTIMIZER_PREFIX)}
    moments = {name: value for name, value in tensors.items() if name.startswith(OPTIMIZER_PREFIX)}
    return weights, moments, record


def restore_optimizer(optimizer: torch.optim.Optimizer, moments: dict[str, torch.Tensor], path: Path) -> None:
    """Load the moments :func:`write_checkpoint` stored into ``optimizer``, checked against its parameters.

    The hyper-parameters (``param_groups``) stay ``optimizer``'s own: the run's configuration,
    checked equal before, determines them.

    Raises:
        WeightsError: an entry that names no parameter or has another shape, or moments for only
            some of the parameters.
    """
    parameters = [parameter for group in optimizer.param_groups for parameter in group["params"]]
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in moments.items():
        index_text, _, name = key[len(OPTIMIZER_PREFIX):].partition("/")
        index = int(index_text) if index_text.isdigit() else -1
        if not 0 <= index < len(parameters) or not name or (value.dim() and value.shape != parameters[index].shape):
            raise WeightsError(f"{path}: optimizer entry {key!r} does not fit the metanetwork; "
                               "start again with a new --out")
        state.setdefault(index, {})[name] = value
    if state and len(state) != len(parameters):
        raise WeightsError(f"{path}: the optimizer state covers {len(state)} of {len(parameters)} parameters; "
                           "start again with a new --out")
    optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})


def metanet_settings(path: Path, metadata: Any) -> dict[str, Any]:
    """The :class:`~metaprune.meta.metanetwork.MetaNetwork` arguments in a weights file's ``metadata``."""
    if not isinstance(metadata, dict) or "metanet" not in metadata:
        raise WeightsError(f"{path} is not a metanetwork checkpoint (no metanet settings in its metadata)")
    return validate(_BestRecord, metadata, str(path), WeightsError).metanet.model_dump()
