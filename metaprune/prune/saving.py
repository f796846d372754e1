"""Save a pruned model as safetensors + ``architecture.json`` and rebuild it without pickle.

``architecture.json`` holds the model's registry spec (name and constructor arguments),
the example-input shape and the structured-removal history. Loading builds the dense
architecture, replays the history (:func:`metaprune.prune.groups.replay`) so every shape
matches, then loads the weights. Mask re-parametrisations are baked into plain weights on
save, so a pruned model needs nothing from metaprune to run once loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import Field
from torch import nn

from metaprune.errors import ConfigError, ModelError, WeightsError
from metaprune.inputs import ExampleInputs, describe_inputs, inputs_from_description
from metaprune.prune.plan import PrunePlan
from metaprune.prune.report import PruneReport
from metaprune.rundir import (
    ARCHITECTURE_FILE,
    PLAN_FILE,
    REPORT_FILE,
    WEIGHTS_FILE,
    read_json,
    save_safetensors,
    write_json,
)
from metaprune.schemas import OpenModel, validate
from metaprune.train.checkpoint import read_tensors, state_dict_mismatch
from metaprune.version import __version__

FORMAT_VERSION = 1


def baked_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model.state_dict()`` with ``torch.nn.utils.prune`` masks applied (``w = w_orig * mask``)."""
    state = model.state_dict()
    baked = {}
    for key, tensor in state.items():
        if key.endswith("_mask") and key.removesuffix("_mask") + "_orig" in state:
            continue
        if key.endswith("_orig") and key.removesuffix("_orig") + "_mask" in state:
            baked[key.removesuffix("_orig")] = tensor * state[key.removesuffix("_orig") + "_mask"]
        else:
            baked[key] = tensor
    tensors, storages = {}, set()
    for key, tensor in baked.items():
        tensor = tensor.detach().contiguous().cpu()
        pointer = tensor.untyped_storage().data_ptr()
        # tied weights (an embedding shared with the output layer) are written once per name:
        # safetensors refuses tensors that share memory, and loading ties them again in the model
        tensors[key] = tensor.clone() if pointer in storages and tensor.numel() else tensor
        storages.add(pointer)
    return tensors


def save_run(
    run_dir: str | Path,
    model: nn.Module,
    *,
    example_input: ExampleInputs,
    history: list[dict[str, Any]] | None = None,
    plan: PrunePlan | None = None,
    report: PruneReport | None = None,
) -> Path:
    """Write ``model.safetensors`` and ``architecture.json`` (plus ``plan.json``/``report.json`` if given),
    each atomically (:mod:`metaprune.rundir`)."""
    from metaprune.models import model_spec

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        spec = model_spec(model)
    except Exception:  # a user model outside the registry: load_run then needs the dense instance
        spec = None
    architecture = {
        "format": FORMAT_VERSION,
        "model": spec,
        "input_shape": list(example_input.shape) if isinstance(example_input, torch.Tensor) else None,
        "inputs": describe_inputs(example_input),
        "history": history or [],
        "metaprune_version": __version__,
    }
    write_json(run_dir / ARCHITECTURE_FILE, architecture, indent=None)
    save_safetensors(run_dir / WEIGHTS_FILE, baked_state_dict(model))
    if plan is not None:
        write_json(run_dir / PLAN_FILE, plan.to_dict())
    if report is not None:
        write_json(run_dir / REPORT_FILE, report.to_dict())
    return run_dir


def read_architecture(run_dir: str | Path) -> dict[str, Any]:
    """Parse and check ``architecture.json`` of a run directory."""
    path = Path(run_dir) / ARCHITECTURE_FILE
    if not Path(run_dir).is_dir():
        raise WeightsError(f"run directory not found: {run_dir}")
    architecture = read_json(path, error=WeightsError,
                             missing=f"{path} is missing: is {run_dir} a metaprune run directory?")
    if not isinstance(architecture, dict) or architecture.get("format") != FORMAT_VERSION:
        raise WeightsError(f"{path} has an unknown format; expected format {FORMAT_VERSION}")
    validate(ArchitectureFile, architecture, str(path), WeightsError)
    return architecture


class ModelSpecFile(OpenModel):
    """``model`` of ``architecture.json``: a registry name (or factory reference) and its constructor arguments."""

    name: str
    kwargs: dict[str, Any] = {}


class ArchitectureFile(OpenModel):
    """``architecture.json`` of a run directory (:func:`save_run`): how to rebuild the model around its weights."""

    format: Literal[1]
    model: ModelSpecFile | None
    input_shape: list[Annotated[int, Field(gt=0)]] | None = None
    inputs: dict[str, Any] | None = None
    history: list[dict[str, Any]] = []


def load_run(run_dir: str | Path, model: nn.Module | None = None) -> nn.Module:
    """Rebuild the pruned model of a run directory, in eval mode.

    ``model`` is a dense instance of the architecture, needed only for models outside the
    :mod:`metaprune.models` registry.
    """
    from metaprune.models import create_model_from_spec
    from metaprune.models.minilm import TEXT_RUN_FILE, load_encoder
    from metaprune.prune.groups import replay

    if (Path(run_dir) / TEXT_RUN_FILE).is_file():  # a text encoder run: a transformers model with its own config
        return load_encoder(run_dir).model
    architecture = read_architecture(run_dir)
    if model is None:
        if architecture.get("model") is None:
            raise ModelError(f"{run_dir} holds a model outside the registry: pass a dense instance as model=")
        model = create_model_from_spec(architecture["model"])
    if "inputs" in architecture:
        try:
            example_input = inputs_from_description(architecture["inputs"])
        except ConfigError as error:
            raise WeightsError(f"{run_dir}: architecture.json has a bad 'inputs' entry: {error}") from error
    else:  # written before inputs of any structure were recorded
        example_input = torch.zeros(architecture["input_shape"])
    if architecture["history"]:
        replay(model, example_input, architecture["history"])
    tensors, _ = read_tensors(Path(run_dir) / WEIGHTS_FILE)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as error:
        raise WeightsError(f"weights in {run_dir} do not fit the architecture: {state_dict_mismatch(error)}") from error
    return model.eval()
