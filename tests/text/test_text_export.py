"""ONNX export of text-encoder runs (structured heads + FFN) and the refusal of masked ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from metaprune.export import ONNX_TOLERANCE, export_run, onnx_session
from metaprune.models.minilm import TEXT_RUN_FILE, SentenceEncoder, load_encoder, save_encoder
from metaprune.prune import head_ffn
from metaprune.prune.head_ffn_tuning import remove_structure
from tests.cli_helpers import run_cli
from tests.text.conftest import OBJECTS, SUBJECTS, VERBS


def tiny_tokenizer(folder: Path):
    """A BERT word-piece tokenizer over the generated sentences' words (no download)."""
    from transformers import BertTokenizer

    words = sorted({w.lower().strip(".") for text in SUBJECTS + VERBS + OBJECTS for w in text.split()})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", *words]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return BertTokenizer.from_pretrained(folder)


def text_run(tmp_path: Path, model, pattern: str) -> Path:
    """A text-encoder run directory around ``model`` (as `metaprune prune --model minilm` writes it)."""
    run = tmp_path / pattern.replace(":", "")
    encoder = SentenceEncoder(model, tiny_tokenizer(tmp_path / "vocab"), max_length=32)
    save_encoder(encoder, run)
    (run / TEXT_RUN_FILE).write_text(json.dumps({"model": "minilm", "pattern": pattern}))
    (run / "report.json").write_text(json.dumps({"pattern": pattern}))
    return run


def structured(model):
    layers = head_ffn.encoder_layers(model)
    masks = head_ffn.StructureMasks.ones(layers)
    masks.heads[0][torch.tensor([1, 2])] = 0.0
    masks.heads[1][0] = 0.0
    masks.neurons[0][:24] = 0.0
    masks.neurons[1][1::2] = 0.0
    remove_structure(model, masks)
    return model


def test_a_structured_text_run_exports_with_named_dynamic_inputs(tmp_path: Path, tiny_bert, capsys) -> None:
    run = text_run(tmp_path, structured(tiny_bert), "head-ffn")
    code, stdout, stderr = run_cli(["export", str(run)], capsys)
    assert code == 0, stderr
    assert "torchscript exporter" in stdout
    session = onnx_session(run / "model.onnx")
    inputs = {item.name: item.shape for item in session.get_inputs()}
    assert inputs == {name: ["batch", "sequence"] for name in ("input_ids", "attention_mask", "token_type_ids")}
    assert [item.name for item in session.get_outputs()] == ["last_hidden_state", "sentence_embedding"]
    encoder = load_encoder(run)
    assert [layer.attention.self.num_attention_heads for layer in encoder.model.encoder.layer] == [2, 3]
    # another batch and length than the export example, with padding
    tokens = encoder.tokenize(["A man is playing a guitar.", "The dog.", "Two people is eating an apple."])
    states, embeddings = session.run(None, {name: tensor.numpy() for name, tensor in tokens.items()})
    with torch.no_grad():
        expected_states = encoder.model(**tokens).last_hidden_state
    assert states.shape == (3, tokens["input_ids"].shape[1], 32)
    assert torch.allclose(torch.from_numpy(states), expected_states, atol=ONNX_TOLERANCE)
    assert torch.allclose(torch.from_numpy(embeddings), encoder.forward(tokens).detach(), atol=ONNX_TOLERANCE)


@pytest.mark.parametrize("pattern", ["unstructured", "n:m"])
def test_a_masked_text_run_is_refused_unless_allowed(tmp_path: Path, tiny_bert, capsys, pattern: str) -> None:
    run = text_run(tmp_path, tiny_bert, pattern)
    capsys.readouterr()
    code, _, stderr = run_cli(["export", str(run)], capsys)
    assert code == 1 and stderr.startswith("error: ") and "--allow-masked" in stderr and stderr.count("\n") == 1
    assert "--pattern head-ffn" in stderr
    assert not (run / "model.onnx").exists()
    result = export_run(run, tmp_path / "masked.onnx", allow_masked=True, batch=2)
    assert result.max_abs_error <= ONNX_TOLERANCE and result.path.is_file()


def test_eval_re_measures_a_text_run_on_sts_b(tmp_path: Path, tiny_bert, stsb_root: Path, capsys) -> None:
    from metaprune.data.stsb import load_stsb, sts_spearman
    from metaprune.prune.report import ModelFigures, PruneReport

    run = text_run(tmp_path, structured(tiny_bert), "head-ffn")
    encoder = load_encoder(run)
    test = sts_spearman(encoder.encode, load_stsb(stsb_root).test)
    assert test == test  # the words are in the vocabulary: not every cosine is the same
    figures = ModelFigures(flops=1000, params=10, nonzero_params=10, latency_ms=1.0)
    report = PruneReport(model="minilm", dataset="stsb", pattern="head-ffn", criterion="fisher-mask",
                         schedule="oneshot", budget={"flops_ratio": 0.5}, dense=figures, pruned=figures,
                         layer_keep_ratios={}, wall_time_s=0.0, seed=0,
                         extra={"pruned": {"dev_spearman": 1.0, "test_spearman": test}})
    report.save(run / "report.json")
    capsys.readouterr()
    code, stdout, stderr = run_cli(["eval", str(run), "--data-root", str(stsb_root)], capsys)
    assert code == 0, stderr
    measured = next(line for line in stdout.splitlines() if "measured" in line)
    assert f"{test:.2f}" in measured
    code, _, stderr = run_cli(["eval", str(run)], capsys)
    assert code == 1 and stderr.startswith("error: ") and "--data-root" in stderr and stderr.count("\n") == 1
