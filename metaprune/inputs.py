"""Example inputs and outputs of any structure: how metaprune calls a model and compares what it returns.

A model takes one tensor (``model(x)``), a tuple or list of positional inputs
(``model(*inputs)``) or a dict of keyword inputs (``model(**inputs)``, e.g. a tokenizer's
``input_ids`` and ``attention_mask``). It returns a tensor, a tuple/list, a dict or a
``ModelOutput`` (a dict subclass). :func:`output_signature` reduces an output to its
structure and shapes, so a pruned model can be checked against the dense one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from metaprune.errors import ConfigError

ExampleInputs = Any  # torch.Tensor | tuple | list | Mapping[str, Any]


def check_example_inputs(example_inputs: ExampleInputs) -> None:
    """ConfigError unless ``example_inputs`` is a tensor, a tuple/list or a dict holding at least one tensor."""
    if isinstance(example_inputs, torch.Tensor):
        return
    values = list(example_inputs.values()) if isinstance(example_inputs, Mapping) else example_inputs
    if not isinstance(values, (tuple, list)) or not any(isinstance(value, torch.Tensor) for value in values):
        raise ConfigError("example inputs must be a tensor, a tuple/list of inputs or a dict of keyword inputs "
                          f"holding at least one tensor, got {type(example_inputs).__name__}")


def run_model(model: nn.Module, example_inputs: ExampleInputs) -> Any:
    """``model`` called on ``example_inputs`` (a tensor, positional tuple/list or keyword dict)."""
    if isinstance(example_inputs, Mapping):
        return model(**example_inputs)
    if isinstance(example_inputs, (tuple, list)):
        return model(*example_inputs)
    return model(example_inputs)


def output_signature(output: Any) -> Any:
    """The structure of ``output`` with every tensor replaced by its shape (dicts keep their keys)."""
    if isinstance(output, torch.Tensor):
        return tuple(output.shape)
    if isinstance(output, Mapping):
        return {key: output_signature(value) for key, value in output.items()}
    if isinstance(output, (tuple, list)):
        return [output_signature(value) for value in output]
    return type(output).__name__


def output_tensors(output: Any) -> list[torch.Tensor]:
    """Every tensor in ``output``, depth first (dict order)."""
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, Mapping):
        return [tensor for value in output.values() for tensor in output_tensors(value)]
    if isinstance(output, (tuple, list)):
        return [tensor for value in output for tensor in output_tensors(value)]
    return []


def describe_inputs(example_inputs: ExampleInputs) -> Any:
    """A JSON-friendly description of ``example_inputs``: shapes and dtypes of its tensors, its structure.

    :func:`inputs_from_description` rebuilds zero inputs of that description (zeros are valid
    token ids and masks, enough to trace a model again).
    """
    if isinstance(example_inputs, torch.Tensor):
        return {"shape": list(example_inputs.shape), "dtype": str(example_inputs.dtype).removeprefix("torch.")}
    if isinstance(example_inputs, Mapping):
        return {"kwargs": {key: describe_inputs(value) for key, value in example_inputs.items()}}
    if isinstance(example_inputs, (tuple, list)):
        return {"args": [describe_inputs(value) for value in example_inputs]}
    if example_inputs is None or isinstance(example_inputs, (bool, int, float, str)):
        return {"value": example_inputs}
    raise ConfigError(f"cannot describe an example input of type {type(example_inputs).__name__}")


def inputs_from_description(description: Any) -> ExampleInputs:
    """Zero example inputs of a :func:`describe_inputs` description."""
    if not isinstance(description, Mapping):
        raise ConfigError(f"not an input description: {description!r}")
    if "shape" in description:
        dtype = getattr(torch, str(description.get("dtype", "float32")), None)
        if not isinstance(dtype, torch.dtype):
            raise ConfigError(f"unknown dtype {description.get('dtype')!r} in an input description")
        return torch.zeros([int(size) for size in description["shape"]], dtype=dtype)
    if "kwargs" in description:
        return {key: inputs_from_description(value) for key, value in description["kwargs"].items()}
    if "args" in description:
        return tuple(inputs_from_description(value) for value in description["args"])
    if "value" in description:
        return description["value"]
    raise ConfigError(f"not an input description: {description!r}")
