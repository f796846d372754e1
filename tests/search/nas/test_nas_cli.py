"""``metaprune search --method tas|dass`` end to end on tiny settings, through the same runner as every method."""

from __future__ import annotations

import csv
import functools
import json

import pytest

from metaprune.cli import main
from metaprune.prune.plan import PrunePlan
from metaprune.search.nas import dass as dass_module
from metaprune.search.nas.darts_network import CellNetworkConfig

TINY_RUN = ["--model", "resnet20", "--width", "0.25", "--image-size", "8", "--trials", "1", "--epochs", "1",
            "--no-progress"]


def test_cli_tas_writes_a_plan_within_the_budget(tmp_path, capsys):
    out = tmp_path / "tas"
    main(["search", "--method", "tas", "--speedup", "2", "--out", str(out), *TINY_RUN])
    plan = PrunePlan.load(out / "best_plan.json")
    assert plan.pattern == "channel" and plan.flops_ratio == pytest.approx(0.5, rel=0.02)
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert [row["state"] for row in rows] == ["INTERMEDIATE", "COMPLETE"]
    search = json.loads((out / "tas.json").read_text())
    assert search["plan"] == plan.to_dict() and len(search["history"]) == 1
    assert (out / "pareto.png").is_file() and "tas: 1 complete trials" in capsys.readouterr().out


def test_cli_dass_writes_the_genotype_and_the_sparse_model(tmp_path, monkeypatch, capsys):
    tiny = functools.partial(dass_module.DASSConfig, network=CellNetworkConfig(channels=4, layers=3, steps=2),
                             steps_per_epoch=1, train_epochs=1)
    monkeypatch.setattr(dass_module, "DASSConfig", tiny)
    out = tmp_path / "dass"
    main(["search", "--method", "dass", "--budget", "0.1", "--out", str(out), *TINY_RUN])
    for name in ("genotype.json", "cell_network.json", "sparse_model.safetensors", "dass.json", "best_plan.json"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "dass.json").read_text())
    assert summary["density"] == pytest.approx(0.1, abs=0.005)
    assert PrunePlan.load(out / "best_plan.json").pattern == "unstructured"
    assert "dass: 1 complete trials" in capsys.readouterr().out
