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


def test_dass_trains_no_dense_model(tmp_path, monkeypatch, capsys):
    """DASS designs its own cell network: the search must not train (nor load) the --model network for it."""
    from metaprune.workflows import search as search_workflow

    def refuse(*args, **kwargs):
        raise AssertionError("DASS never uses the dense model: it must not be trained")

    monkeypatch.setattr(search_workflow, "dense_model", refuse)
    monkeypatch.setattr(search_workflow, "train_dense", refuse)
    tiny = functools.partial(dass_module.DASSConfig, network=CellNetworkConfig(channels=4, layers=3, steps=2),
                             steps_per_epoch=1, train_epochs=1)
    monkeypatch.setattr(dass_module, "DASSConfig", tiny)
    out = tmp_path / "dass"
    main(["search", "--method", "dass", "--budget", "0.1", "--out", str(out), *TINY_RUN])
    assert (out / "sparse_model.safetensors").is_file() and not (out / "dense.safetensors").exists()
    assert "val accuracy of the trained network" in capsys.readouterr().out


@pytest.mark.parametrize("flag", [["--prune"], ["--weights", "dense.safetensors"]])
def test_dass_refuses_options_about_the_dense_model_before_any_work(tmp_path, capsys, flag):
    from cli_helpers import run_cli

    code, _, err = run_cli(["search", "--method", "dass", "--budget", "0.1", *flag, "--out", str(tmp_path / "d"),
                            *TINY_RUN], capsys)
    assert code == 1 and err.strip().splitlines()[-1].startswith(f"error: {flag[0]} does not apply to --method dass")


def test_method_help_lists_every_registered_method():
    import typing

    from metaprune.cli import search as search_cli
    from metaprune.search.methods import METHODS

    help_text = typing.get_type_hints(search_cli.search, include_extras=True)["method"].__metadata__[0].help
    assert all(name in help_text for name in METHODS), help_text
