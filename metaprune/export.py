"""Export a (pruned) model to ONNX and check that ONNX Runtime gives PyTorch's outputs.

A structured-pruned model is an ordinary, smaller PyTorch model, so any runtime runs it at its
reduced width. :func:`export_onnx` writes the ONNX file (TorchScript exporter, the dynamo
exporter as a fallback), runs it in ONNX Runtime on seeded random inputs of the example's shapes
and compares every output tensor with PyTorch's: a difference above :data:`ONNX_TOLERANCE` is
an error, never a silently wrong file. :func:`export_run` does the same for a run directory and
refuses masked (unstructured, N:M) runs unless asked: their zeros are stored densely, so the
runtime would run them at full cost.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from metaprune.errors import ConfigError, ModelError
from metaprune.inputs import ExampleInputs, inputs_from_description, output_tensors, run_model

#: Largest absolute difference allowed between ONNX Runtime's and PyTorch's outputs.
ONNX_TOLERANCE = 1e-4
#: Patterns whose sparsity lives in zeroed weights of dense tensors: a dense runtime cannot use it.
MASKED_PATTERNS = ("unstructured", "n:m")


@dataclass(frozen=True)
class ExportResult:
    """An exported ONNX file and how well ONNX Runtime reproduces PyTorch on it."""

    path: Path
    max_abs_error: float
    exporter: str  # "torchscript" or "dynamo"
    outputs: int


def random_inputs(example_inputs: ExampleInputs, seed: int = 0) -> ExampleInputs:
    """Inputs of the example's structure and shapes: seeded normal floats; integer tensors (token ids,
    masks) are kept, since only the model knows their valid range."""
    generator = torch.Generator().manual_seed(seed)
    if isinstance(example_inputs, torch.Tensor):
        if example_inputs.is_floating_point():
            return torch.randn(example_inputs.shape, generator=generator, dtype=example_inputs.dtype)
        return example_inputs.clone()
    if isinstance(example_inputs, Mapping):
        return {key: random_inputs(value, seed + index) for index, (key, value) in enumerate(example_inputs.items())}
    if isinstance(example_inputs, (tuple, list)):
        return tuple(random_inputs(value, seed + index) for index, value in enumerate(example_inputs))
    return example_inputs


def _named_inputs(example_inputs: ExampleInputs) -> tuple[tuple, dict[str, Any], dict[str, torch.Tensor]]:
    """``(args, kwargs, feed)``: how to call the exporter, and the input tensors by their ONNX names."""
    if isinstance(example_inputs, Mapping):
        feed = {key: value for key, value in example_inputs.items() if isinstance(value, torch.Tensor)}
        return (), dict(example_inputs), feed
    args = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    feed = {f"input_{index}": value for index, value in enumerate(args) if isinstance(value, torch.Tensor)}
    return args, {}, feed


def to_onnx_bytes(model: nn.Module, example_inputs: ExampleInputs, *, output_names: list[str] | None = None,
                  dynamic_axes: dict[str, dict[int, str]] | None = None) -> tuple[bytes, str]:
    """The serialised ONNX model of ``model`` (eval mode) traced on ``example_inputs``, and the exporter used.

    The TorchScript exporter is tried first (fast, names the inputs ``input_0, ...`` or by their
    keyword; ``output_names`` and ``dynamic_axes`` (name -> {axis: label}) go to it); models it cannot
    trace go through the dynamo exporter.
    """
    args, kwargs, feed = _named_inputs(example_inputs)
    was_training = model.training
    model.eval()
    failures = []
    try:
        for exporter in ("torchscript", "dynamo"):
            buffer = io.BytesIO()
            try:
                # gradients on: nn.MultiheadAttention's no-grad fast path is an op the exporters lack
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    if exporter == "torchscript":
                        torch.onnx.export(model, args, buffer, kwargs=kwargs or None, input_names=list(feed),
                                          output_names=output_names, dynamic_axes=dynamic_axes,
                                          dynamo=False, do_constant_folding=True)
                    else:
                        program = torch.onnx.export(model, args, kwargs=kwargs or None, dynamo=True, verbose=False)
                        program.save(buffer)
                return buffer.getvalue(), exporter
            except Exception as error:  # each exporter raises its own types; report both if both fail
                failures.append(f"{exporter}: {str(error).splitlines()[0] if str(error) else type(error).__name__}")
    finally:
        model.train(was_training)
    raise ModelError(f"cannot export {type(model).__name__} to ONNX ({'; '.join(failures)})")


def onnx_session(model_bytes: bytes | str | Path, threads: int = 1) -> Any:
    """An ONNX Runtime CPU session limited to ``threads`` intra-op threads (and one inter-op thread)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    source = str(model_bytes) if isinstance(model_bytes, Path) else model_bytes
    return onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def session_feed(session: Any, example_inputs: ExampleInputs) -> dict[str, np.ndarray]:
    """The inputs ``session`` expects, as numpy arrays (the exporter drops inputs the model never reads)."""
    _, _, feed = _named_inputs(example_inputs)
    expected = [item.name for item in session.get_inputs()]
    if len(expected) == len(feed) and not set(expected) & set(feed):  # dynamo keeps the Python argument names
        return {name: tensor.numpy() for name, tensor in zip(expected, feed.values())}
    missing = [name for name in expected if name not in feed]
    if missing:
        raise ModelError(f"the ONNX model expects inputs {missing} that the example inputs do not hold")
    return {name: feed[name].numpy() for name in expected}


def compare_onnx(model: nn.Module, session: Any, example_inputs: ExampleInputs) -> tuple[float, int]:
    """Largest absolute difference between PyTorch's and ONNX Runtime's outputs, and how many outputs."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            expected = [tensor.detach() for tensor in output_tensors(run_model(model, example_inputs))]
    finally:
        model.train(was_training)
    found = session.run(None, session_feed(session, example_inputs))
    if len(found) != len(expected):
        raise ModelError(f"ONNX Runtime returns {len(found)} outputs where PyTorch returns {len(expected)}")
    error = 0.0
    for index, (reference, value) in enumerate(zip(expected, found)):
        value = torch.from_numpy(np.asarray(value))
        if tuple(value.shape) != tuple(reference.shape):
            raise ModelError(f"ONNX output {index} has shape {tuple(value.shape)}, PyTorch's {tuple(reference.shape)}")
        if reference.numel():
            error = max(error, float((value.to(torch.float64) - reference.to(torch.float64)).abs().max()))
    return error, len(expected)


def export_onnx(
    model: nn.Module, example_inputs: ExampleInputs, path: str | Path | None = None, *,
    tolerance: float = ONNX_TOLERANCE, seed: int = 0, output_names: list[str] | None = None,
    dynamic_axes: dict[str, dict[int, str]] | None = None, check_inputs: list[ExampleInputs] | None = None,
) -> ExportResult:
    """Export ``model`` to ONNX at ``path`` (none: checked only) and verify it in ONNX Runtime.

    The check runs both on seeded random inputs of the example's shapes (and on every entry of
    ``check_inputs``, e.g. other shapes along ``dynamic_axes``); a largest absolute difference above
    ``tolerance`` is a :class:`~metaprune.errors.ModelError` and nothing is written.
    """
    from metaprune.rundir import atomic_path

    model_bytes, exporter = to_onnx_bytes(model, example_inputs, output_names=output_names,
                                          dynamic_axes=dynamic_axes)
    session = onnx_session(model_bytes)
    error, outputs = compare_onnx(model, session, random_inputs(example_inputs, seed))
    for extra in check_inputs or []:
        error = max(error, compare_onnx(model, session, extra)[0])
    if not error <= tolerance:
        raise ModelError(f"ONNX Runtime's outputs differ from PyTorch's by {error:.3g} (> {tolerance:g}); "
                         "the file was not written")
    target = Path(path) if path is not None else Path()
    if path is not None:
        with atomic_path(target) as partial:
            partial.write_bytes(model_bytes)
    return ExportResult(target, error, exporter, outputs)


def run_pattern(run_dir: str | Path) -> str:
    """The pruning pattern a run directory was made with (its report, else its plan; ``channel`` if neither)."""
    from metaprune.rundir import PLAN_FILE, REPORT_FILE, read_json

    for name in (REPORT_FILE, PLAN_FILE):
        path = Path(run_dir) / name
        if path.is_file():
            data = read_json(path)
            if isinstance(data, dict) and isinstance(data.get("pattern"), str):
                return data["pattern"]
    return "channel"


def export_run(run_dir: str | Path, out: str | Path | None = None, *, allow_masked: bool = False,
               batch: int = 1) -> ExportResult:
    """Export the pruned model of a run directory to ONNX (default ``RUN_DIR/model.onnx``), verified.

    ``batch`` > 1 exports for that batch size (the example input repeated). A masked run is a
    ConfigError unless ``allow_masked``: ONNX Runtime would run its zeros at full cost.
    """
    from metaprune.models.minilm import TEXT_RUN_FILE
    from metaprune.prune.saving import load_run, read_architecture
    from metaprune.rundir import check_out_file

    pattern = run_pattern(run_dir)
    text = (Path(run_dir) / TEXT_RUN_FILE).is_file()
    if pattern in MASKED_PATTERNS and not allow_masked:
        structured = "head-ffn" if text else "channel"
        raise ConfigError(f"{run_dir} is a masked run ({pattern}): its zeros are stored densely and ONNX Runtime "
                          f"would run it at the dense cost; prune with --pattern {structured} for a smaller model, "
                          "or pass --allow-masked to export it anyway")
    if batch < 1:
        raise ConfigError(f"--batch must be >= 1, got {batch}")
    if text:
        return export_text_run(run_dir, out, batch=batch)
    architecture = read_architecture(run_dir)
    model = load_run(run_dir)
    if architecture.get("inputs") is not None:
        example_inputs = inputs_from_description(architecture["inputs"])
    else:
        example_inputs = torch.zeros(architecture["input_shape"])
    if batch > 1:
        example_inputs = _repeat_batch(example_inputs, batch)
    target = check_out_file(out if out is not None else Path(run_dir) / "model.onnx")
    return export_onnx(model, example_inputs, target)


def _repeat_batch(example_inputs: ExampleInputs, batch: int) -> ExampleInputs:
    if isinstance(example_inputs, torch.Tensor):
        return example_inputs[:1].repeat(batch, *[1] * (example_inputs.dim() - 1))
    if isinstance(example_inputs, Mapping):
        return {key: _repeat_batch(value, batch) for key, value in example_inputs.items()}
    if isinstance(example_inputs, (tuple, list)):
        return tuple(_repeat_batch(value, batch) for value in example_inputs)
    return example_inputs


#: Sequence length of a text encoder's export example (the batch and sequence axes stay dynamic).
TEXT_EXPORT_LENGTH = 128


def export_text_run(run_dir: str | Path, out: str | Path | None = None, *, batch: int = 1) -> ExportResult:
    """Export a text-encoder run (:mod:`metaprune.models.minilm`) to ONNX (default ``RUN_DIR/model.onnx``).

    Inputs are the tokenizer's (``input_ids``, ``attention_mask``, ``token_type_ids`` for BERT) and
    outputs ``last_hidden_state`` and ``sentence_embedding`` (mean-pooled, normalised), with dynamic
    batch and sequence axes. ONNX Runtime is checked against PyTorch at ``batch`` x 128 tokens (fewer if
    the model's position table is shorter) and on
    a padded batch of other sentence lengths.
    """
    from metaprune.models.minilm import EXPORT_OUTPUTS, ExportableEncoder, load_encoder
    from metaprune.rundir import check_out_file

    encoder = load_encoder(run_dir)
    wrapper = ExportableEncoder(encoder)
    positions = getattr(encoder.model.config, "max_position_embeddings", TEXT_EXPORT_LENGTH)
    example = wrapper.example_inputs(batch, min(TEXT_EXPORT_LENGTH, positions))
    other = wrapper.example_inputs(3, None)
    axes = {name: {0: "batch", 1: "sequence"} for name in (*example, EXPORT_OUTPUTS[0])}
    axes[EXPORT_OUTPUTS[1]] = {0: "batch"}
    target = check_out_file(out if out is not None else Path(run_dir) / "model.onnx")
    return export_onnx(wrapper, example, target, output_names=list(EXPORT_OUTPUTS), dynamic_axes=axes,
                       check_inputs=[other])
