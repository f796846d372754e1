"""Population, meta-training (checkpoints, exact resume) and the ``--criterion meta`` pipeline, on tiny settings."""

from __future__ import annotations

import json

import pytest
import torch
from meta_helpers import CONFIG, interrupt_then_resume

from metaprune.errors import ConfigError, WeightsError
from metaprune.flops import count_flops
from metaprune.meta.population import build_population, read_population
from metaprune.meta.training import (
    BEST,
    CHECKPOINT,
    LEGACY_FILES,
    REPORT,
    MetaTrainConfig,
    MetaTrainer,
    load_metanet,
)
from metaprune.models import create_model
from metaprune.prune.budget import Budget
from metaprune.prune.spec import PruningSpec
from metaprune.specs import TaskSpec, TrainingSpec
from metaprune.train import fit, save_state
from metaprune.train.checkpoint import read_tensors
from metaprune.workflows.prune import PruneOptions, run_prune


def test_population_has_train_and_val_networks_and_is_resumable(population, splits):
    root, networks = population
    assert [network.name for network in read_population(root)] == [network.name for network in networks]
    assert len(networks) == 4 and {network.split for network in networks} == {"train", "val"}
    assert all((root / f"{network.name}.safetensors").is_file() for network in networks)
    stamps = {path.name: path.stat().st_mtime_ns for path in root.glob("*.safetensors")}
    again = build_population(root, splits, architectures=["mlp", "resnet20"], widths=[0.25], seeds_per_spec=2,
                             epochs=1, val_fraction=0.5, progress=False)
    assert [network.name for network in again] == [network.name for network in networks]
    assert stamps == {path.name: path.stat().st_mtime_ns for path in root.glob("*.safetensors")}  # nothing retrained


def test_missing_population_is_a_clear_error(tmp_path):
    with pytest.raises(WeightsError, match="population.json"):
        read_population(tmp_path)


def test_meta_training_checkpoints_every_epoch_and_writes_the_report(trained):
    tmp_path, history = trained
    assert len(history.task_loss) == len(history.val_pruned_accuracy) == CONFIG.epochs
    assert history.baseline_val_pruned_accuracy is not None
    for name in (CHECKPOINT, BEST, REPORT, "meta_report.png"):
        assert (tmp_path / name).is_file(), name
    assert not any((tmp_path / name).exists() for name in LEGACY_FILES)  # one checkpoint file, no pickle
    assert not list(tmp_path.glob(".*.tmp"))
    report = json.loads((tmp_path / REPORT).read_text())
    assert report["history"]["task_loss"] == history.task_loss
    assert read_tensors(tmp_path / CHECKPOINT)[1]["epoch"] == CONFIG.epochs - 1


def test_an_interrupted_run_resumes_to_the_same_result(population, splits, trained, tmp_path, monkeypatch):
    reference = trained[1]
    resumed = interrupt_then_resume(CONFIG, population, splits, tmp_path / "resumed", monkeypatch)
    assert resumed.task_loss == pytest.approx(reference.task_loss, rel=1e-5)
    assert resumed.sparsity_loss == pytest.approx(reference.sparsity_loss, rel=1e-5)


def test_resume_with_other_options_is_refused(population, splits, trained):
    root, networks = population
    other = MetaTrainConfig(**{**CONFIG.__dict__, "lr": 0.5})
    with pytest.raises(ConfigError, match="another configuration"):
        MetaTrainer(other, root, networks, splits, trained[0]).resume()


def test_load_metanet_rejects_other_checkpoints(tmp_path):
    path = tmp_path / "model.safetensors"
    save_state(path, torch.nn.Linear(2, 2))
    with pytest.raises(WeightsError, match="not a metanetwork"):
        load_metanet(path)


def test_meta_criterion_prunes_an_architecture_outside_the_population(splits, trained):
    """The population holds ResNet-20 and MLPs; a ResNet-32 at another width is rewritten and pruned to the budget."""
    torch.manual_seed(0)
    dense = create_model("resnet32", num_classes=10, in_channels=1, image_size=8, width=0.375)
    from metaprune.data import make_loaders

    fit(dense, make_loaders(splits, seed=0)[0], epochs=1, progress=False)
    options = PruneOptions(Budget.from_speedup(2.0),
                           task=TaskSpec(model="resnet32", model_kwargs={"width": 0.375}, image_size=8),
                           finetune=TrainingSpec.finetune(0), latency=False,
                           pruning=PruningSpec(criterion="meta", criterion_options={"metanet": str(trained[0])}))
    result = run_prune(options, splits=splits, dense_model=dense, progress=False)
    assert result.report.criterion == "meta"
    assert "rewritten_val_accuracy" in result.report.extra
    example = splits.test[0][0].unsqueeze(0)
    assert count_flops(result.model, example) == pytest.approx(count_flops(dense, example) / 2, rel=0.02)


def test_meta_criterion_and_metanet_go_together():
    with pytest.raises(ConfigError, match="--metanet"):
        PruneOptions(Budget(0.5), pruning=PruningSpec(criterion="meta"))
    with pytest.raises(ConfigError, match="--criterion meta"):
        PruneOptions(Budget(0.5), pruning=PruningSpec(criterion_options={"metanet": "runs/meta"}))


def test_include_patterns_that_match_nothing_are_one_error_line(population, tmp_path, capsys):
    from metaprune.cli import main

    root, _ = population
    with pytest.raises(SystemExit) as exit_info:
        main(["meta", "train", "--population", str(root), "--out", str(tmp_path / "run"), "--include", "vgg*,vit*"])
    assert exit_info.value.code == 1
    assert "matches no network" in capsys.readouterr().err
