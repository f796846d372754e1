"""ONNX export (issue 19): every registry model and the conformance-suite CNNs, pruned, give PyTorch's
outputs in ONNX Runtime within 1e-4; masked runs are refused in one line unless asked."""

from __future__ import annotations

import sys
from pathlib import Path

import onnx
import pytest
import torch
from cli_helpers import run_cli

import metaprune
from metaprune.errors import ConfigError, ModelError
from metaprune.export import ONNX_TOLERANCE, export_onnx, export_run, onnx_session
from metaprune.flops import count_flops
from metaprune.models import create_model, list_models
from metaprune.prune.criteria import get_criterion
from metaprune.prune.saving import save_run
from metaprune.prune.structured import prune_to_flops

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "conformance"))
from architectures import BY_NAME  # noqa: E402

#: The conformance suite's convolutional networks (the transformers have their own ONNX story).
CONFORMANCE_CNNS = ("mobilenet_v2", "resnext", "densenet", "senet", "unet", "convnext", "audio_conv1d")


def _pruned(model: torch.nn.Module, example: torch.Tensor) -> tuple[torch.nn.Module, list]:
    """``model`` pruned in place to half its FLOPs by the structured engine, and its removal history."""
    groups, _ = prune_to_flops(model, example, 0.5 * count_flops(model, example), get_criterion("l1"))
    return model, groups.history


@pytest.mark.parametrize("name", list_models())
def test_every_registry_model_exports_after_pruning(name: str, tmp_path: Path) -> None:
    model = create_model(name, num_classes=10, in_channels=3, image_size=16).eval()
    example = torch.zeros(1, 3, 16, 16)
    dense_params = sum(parameter.numel() for parameter in model.parameters())
    pruned, _ = _pruned(model, example)
    result = export_onnx(pruned, example, tmp_path / f"{name}.onnx")
    assert result.max_abs_error <= ONNX_TOLERANCE
    onnx.checker.check_model(str(result.path))
    # the file holds the pruned widths: ONNX Runtime runs the smaller model, not a masked dense one
    initializers = {init.name: list(init.dims) for init in onnx.load(str(result.path)).graph.initializer}
    assert sum(torch.Size(dims).numel() for dims in initializers.values()) < dense_params


@pytest.mark.parametrize("name", CONFORMANCE_CNNS)
def test_conformance_cnns_export_after_pruning(name: str) -> None:
    model, example = BY_NAME[name].build(0)
    pruned, _ = _pruned(model.eval(), example)
    result = export_onnx(pruned, example)
    assert result.outputs >= 1 and result.max_abs_error <= ONNX_TOLERANCE


def test_attention_model_exports_through_the_fast_path() -> None:
    model, example = BY_NAME["vit_mha"].build(0)  # nn.MultiheadAttention's no-grad fast path has no ONNX op
    assert export_onnx(model.eval(), example).max_abs_error <= ONNX_TOLERANCE


def test_a_wrong_runtime_answer_is_an_error_and_nothing_is_written(tmp_path: Path, monkeypatch) -> None:
    import metaprune.export as export_module

    model = create_model("resnet20", num_classes=10, in_channels=3, image_size=8).eval()
    monkeypatch.setattr(export_module, "compare_onnx", lambda *args: (1e-2, 1))
    with pytest.raises(ModelError, match=r"differ from PyTorch's by 0.01 \(> 0.0001\); the file was not written"):
        export_onnx(model, torch.zeros(1, 3, 8, 8), tmp_path / "model.onnx")
    assert not (tmp_path / "model.onnx").exists()


def _run_dir(tmp_path: Path, pattern: str) -> Path:
    from metaprune.prune.plan import PrunePlan

    model = create_model("resnet20", num_classes=10, in_channels=3, image_size=8).eval()
    example = torch.zeros(1, 3, 8, 8)
    history = _pruned(model, example)[1] if pattern == "channel" else []
    run = tmp_path / pattern
    save_run(run, model, example_input=example, history=history,
             plan=PrunePlan(pattern, n_m=(2, 4) if pattern == "n:m" else None))
    return run


def test_export_run_writes_a_verified_file_beside_the_run(tmp_path: Path) -> None:
    run = _run_dir(tmp_path, "channel")
    result = export_run(run, batch=4)
    assert result.path == run / "model.onnx"
    session = onnx_session(result.path)
    assert session.get_inputs()[0].shape == [4, 3, 8, 8]
    reference = metaprune.load_run(run)(torch.ones(4, 3, 8, 8))
    output = session.run(None, {session.get_inputs()[0].name: torch.ones(4, 3, 8, 8).numpy()})[0]
    assert torch.allclose(torch.from_numpy(output), reference.detach(), atol=ONNX_TOLERANCE)


@pytest.mark.parametrize("pattern", ["unstructured", "n:m"])
def test_masked_runs_are_refused_unless_allowed(tmp_path: Path, pattern: str) -> None:
    run = _run_dir(tmp_path, pattern)
    with pytest.raises(ConfigError, match="masked run .* dense cost.*--allow-masked"):
        export_run(run)
    assert export_run(run, allow_masked=True).max_abs_error <= ONNX_TOLERANCE


def test_cli_export_masked_run_is_one_error_line(tmp_path: Path, capsys) -> None:
    run = _run_dir(tmp_path, "unstructured")
    code, out, err = run_cli(["export", str(run)], capsys)
    assert code == 1 and err.startswith("error: ") and err.count("\n") == 1 and "masked run (unstructured)" in err
    code, out, err = run_cli(["export", str(run), "--format", "tflite"], capsys)
    assert code == 1 and "only onnx" in err
    code, out, err = run_cli(["export", str(_run_dir(tmp_path, "channel")), "--out", str(tmp_path / "m.onnx")], capsys)
    assert code == 0 and (tmp_path / "m.onnx").is_file() and "ONNX Runtime matches PyTorch" in out


@pytest.mark.slow  # 7 s at load 3: loads the 22 M-parameter pretrained encoder (the text registry's model)
def test_the_minilm_encoder_exports_after_head_and_ffn_pruning() -> None:
    from metaprune.models.minilm import EXPORT_OUTPUTS, ExportableEncoder, load_minilm
    from metaprune.prune.head_ffn import StructureMasks, encoder_layers
    from metaprune.prune.head_ffn_tuning import remove_structure

    encoder = load_minilm()
    layers = encoder_layers(encoder.model)
    dense_params = sum(parameter.numel() for parameter in encoder.model.parameters())
    masks = StructureMasks([(torch.arange(layer.heads) % 2 == 0).float() for layer in layers],
                           [(torch.arange(layer.intermediate.out_features) % 3 != 0).float() for layer in layers])
    remove_structure(encoder.model, masks)
    assert sum(parameter.numel() for parameter in encoder.model.parameters()) < dense_params
    wrapper = ExportableEncoder(encoder).eval()
    result = export_onnx(wrapper, wrapper.example_inputs(2, 24), output_names=list(EXPORT_OUTPUTS))
    assert result.outputs == 2 and result.max_abs_error <= ONNX_TOLERANCE
