"""``load_entry`` and ``verify``: a pulled model must match its card.

The run directories are written by the pruning engine itself (``run_prune``, as
``metaprune prune --out`` does) on a small MLP, published, and served over HTTP.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from metaprune.cli.zoo import app
from metaprune.data import load_dataset, make_loaders
from metaprune.prune.budget import Budget
from metaprune.prune.spec import PruningSpec
from metaprune.specs import TaskSpec, TrainingSpec
from metaprune.train import evaluate
from metaprune.workflows.prune import PruneOptions, run_prune
from metaprune.zoo import Tolerance, VerifyResult, ZooError, list_entries, load_entry, publish, verify

IMAGE_SIZE = 8


def _prune_run(out: Path, pattern: str) -> Path:
    """A real run directory: MLP trained 3 epochs on 8x8 digits, pruned to half its FLOPs, fine-tuned 1 epoch."""
    options = PruneOptions(budget=Budget(0.5),
                           task=TaskSpec(model="mlp", model_kwargs={"hidden_sizes": [32, 16]}, image_size=IMAGE_SIZE),
                           training=TrainingSpec.dense(3), finetune=TrainingSpec.finetune(1),
                           pruning=PruningSpec(pattern=pattern), latency=False,
                           out=str(out), command=f"metaprune prune --model mlp --pattern {pattern}")
    return run_prune(options, progress=False).run_dir


@pytest.fixture(scope="module")
def published_zoo(tmp_path_factory) -> tuple[Path, dict]:
    """A zoo folder with one channel-pruned MLP entry; returns (folder, the run's report)."""
    run_dir = _prune_run(tmp_path_factory.mktemp("run"), "channel")
    zoo = tmp_path_factory.mktemp("zoo")
    publish(run_dir, zoo, "mlp-digits")
    return zoo, json.loads((run_dir / "report.json").read_text())


@pytest.fixture
def served_index(published_zoo, http_server) -> str:
    """The published zoo served by the local HTTP server; returns the index URL."""
    base, state = http_server
    zoo = published_zoo[0]
    state.files = {f"/{path.relative_to(zoo).as_posix()}": path.read_bytes() for path in zoo.rglob("*") if path.is_file()}
    return f"{base}/index.json"


def test_load_returns_the_model_whose_accuracy_is_on_the_card(published_zoo, served_index):
    model = load_entry("mlp-digits", index=served_index)
    splits = load_dataset("digits", image_size=IMAGE_SIZE, seed=0)
    card_accuracy = published_zoo[1]["pruned"]["test_accuracy"]
    assert isinstance(model, torch.nn.Module) and not model.training
    assert evaluate(model, make_loaders(splits)[2]) == card_accuracy
    assert card_accuracy > 0.5  # a trained model, so a wrong rebuild could not match by chance
    assert model.layers[1].out_features < 32  # channels were physically removed and the shapes replayed


def test_verify_confirms_the_card(published_zoo, served_index):
    result = verify("mlp-digits", index=served_index)
    pruned = published_zoo[1]["pruned"]
    assert result.passed
    assert result.measured_accuracy == result.card_accuracy == pruned["test_accuracy"]
    assert result.measured_flops == result.card_flops == pruned["flops"]


def test_verify_of_an_unstructured_entry_counts_effective_flops(tmp_path):
    run_dir = _prune_run(tmp_path / "run", "unstructured")
    entry = publish(run_dir, tmp_path / "zoo", "mlp-sparse")
    result = verify(entry.name, index=tmp_path / "zoo" / "index.json")
    assert result.passed
    assert result.measured_flops == entry.flops["pruned"] <= 0.55 * entry.flops["dense"]


def _served_with_card(http_server, served_index, **pruned_changes) -> None:
    """Rewrite the served index so the card claims different pruned figures."""
    state = http_server[1]
    index = json.loads(state.files["/index.json"])
    entry = index["entries"][0]
    for key, scale in pruned_changes.items():
        if key == "flops":
            entry["flops"]["pruned"] = round(entry["flops"]["pruned"] * scale)
        else:
            entry["metrics"]["pruned"][key] += scale
    state.files["/index.json"] = json.dumps(index).encode()


def test_verify_flags_an_overstated_accuracy(http_server, served_index):
    _served_with_card(http_server, served_index, test_accuracy=0.02)
    result = verify("mlp-digits", index=served_index)
    assert not result.accuracy_ok and result.flops_ok and not result.passed
    assert verify("mlp-digits", index=served_index, tolerance=Tolerance(accuracy_points=2.5)).passed


def test_verify_flags_wrong_flops_and_the_cli_exits_1(http_server, served_index):
    _served_with_card(http_server, served_index, flops=1.02)
    result = CliRunner().invoke(app, ["verify", "mlp-digits", "--index", served_index])
    assert result.exit_code == 1
    assert result.stdout.splitlines()[1].endswith("(±1 %) MISMATCH")
    assert CliRunner().invoke(app, ["verify", "mlp-digits", "--index", served_index, "--flops-fraction", "0.03"]).exit_code == 0


@pytest.mark.parametrize(("measured", "card", "flops", "accuracy_ok", "flops_ok"), [
    (0.90, 0.91, 1010, True, True),    # exactly 1 point and exactly 1 %: inside
    (0.90, 0.9101, 1000, False, True),
    (0.90, 0.90, 1011, True, False),
])
def test_tolerance_boundaries(measured, card, flops, accuracy_ok, flops_ok):
    result = VerifyResult("x", card_accuracy=card, measured_accuracy=measured, card_flops=1000,
                          measured_flops=flops, tolerance=Tolerance())
    assert (result.accuracy_ok, result.flops_ok) == (accuracy_ok, flops_ok)


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), float("-inf")])
def test_negative_or_non_finite_tolerance_is_rejected(bad):
    with pytest.raises(ZooError, match=r"tolerance accuracy_points must be a finite number >= 0"):
        Tolerance(accuracy_points=bad)
    with pytest.raises(ZooError, match=r"tolerance flops_fraction must be a finite number >= 0"):
        Tolerance(flops_fraction=bad)


@pytest.mark.parametrize(("option", "value"), [("--accuracy-points", "nan"), ("--accuracy-points", "inf"),
                                               ("--flops-fraction", "nan"), ("--flops-fraction", "-0.5")])
def test_verify_cli_refuses_non_finite_tolerances_in_one_line(option, value):
    result = CliRunner().invoke(app, ["verify", "mlp-digits", option, value, "--offline"])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith("error: tolerance ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.output


def test_packaged_entries_match_their_cards():
    from metaprune.zoo import entry_kind

    # the classifiers; the text-to-image entry is judged by build_zoo.py and checked in test_zoo_packaged_text2img
    entries = [entry for entry in list_entries() if entry_kind(entry.pattern).verifiable]
    assert entries, "the packaged index ships at least one entry"
    for entry in entries:
        result = verify(entry.name)
        assert result.passed, result.summary()
        assert result.measured_accuracy == result.card_accuracy  # same weights, same split: exact
