"""A prune job that cannot work is refused before its dense model trains (one `error:` line, in seconds)."""

from __future__ import annotations

import time

import pytest
from cli_helpers import run_cli


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if the dense model starts training."""
    import metaprune.workflows.prune as workflow

    def train_dense(*args, **kwargs):
        raise AssertionError("the dense model was trained before the job was refused")

    monkeypatch.setattr(workflow, "train_dense", train_dense)


@pytest.mark.parametrize(("args", "message"), [
    (["--model", "resnet20", "--pattern", "head"], "pattern 'head' needs attention modules with fused qkv"),
    (["--model", "resnet20", "--min-keep", "0.9"], "is below what min_keep=0.9 allows"),
    (["--model", "vit_tiny", "--pattern", "head", "--min-keep", "0.9"], "is below what min_keep=0.9 allows"),
    (["--model", "resnet20", "--criterion", "meta", "--metanet", "no/such/metanet.safetensors"],
     "no/such/metanet.safetensors"),
])
def test_an_infeasible_job_fails_before_training(no_training, tmp_path, capsys, args, message):
    start = time.perf_counter()
    code, _, stderr = run_cli(["prune", *args, "--budget", "0.5", "--epochs", "50", "--out", str(tmp_path / "run")],
                              capsys)
    seconds = time.perf_counter() - start
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert code == 1 and len(errors) == 1 and message in errors[0], stderr
    assert not (tmp_path / "run").exists()
    assert seconds < 60  # 50 epochs of resnet20 would take minutes


def test_a_feasible_job_is_not_changed_by_the_dry_run(tmp_path):
    """The dry run prunes an untrained copy; the job's own model and results are the same without it."""
    import metaprune.workflows.prune as workflow
    from metaprune.prune.budget import Budget
    from metaprune.specs import TaskSpec, TrainingSpec

    def job() -> workflow.PruneOptions:
        return workflow.PruneOptions(budget=Budget(0.5), task=TaskSpec(model="mlp", image_size=8),
                                     training=TrainingSpec.dense(1), finetune=TrainingSpec.finetune(1), latency=False)

    checked = workflow.run_prune(job(), progress=False).report
    original = workflow.check_prune_feasible
    try:
        workflow.check_prune_feasible = lambda *args, **kwargs: None
        unchecked = workflow.run_prune(job(), progress=False).report
    finally:
        workflow.check_prune_feasible = original
    assert checked.pruned.test_accuracy == unchecked.pruned.test_accuracy
    assert checked.layer_keep_ratios == unchecked.layer_keep_ratios
