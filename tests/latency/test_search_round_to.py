"""``metaprune search --round-to N`` (issue 19): every searched plan keeps multiples of N channels.

A group at least N wide keeps a multiple of N or all of its channels (as ``prune --round-to``); the
budget (FLOPs, or predicted and then measured latency on the mocked clock of
test_search_latency) still holds within its tolerance.
"""

from __future__ import annotations

import json

import pytest
import torch
from cli_helpers import run_cli
from test_search_latency import FAST, TINY, cache, mocked_clock  # noqa: F401  (fixtures)

from metaprune.data import load_digits_splits
from metaprune.errors import BudgetError, ConfigError
from metaprune.latency.budget import LATENCY_TOLERANCE, LatencyBudget
from metaprune.models import create_model
from metaprune.prune.budget import Budget
from metaprune.prune.groups import ModelGroups
from metaprune.prune.spec import PruningSpec
from metaprune.search.space import TOLERANCE, SearchSpace
from metaprune.specs import TaskSpec

TASK = TaskSpec(model="resnet20", image_size=8, model_kwargs={"width": 0.5})


@pytest.fixture(scope="module")
def digits():
    """ResNet-20 at half width (groups of 8, 16 and 32 channels) on 8x8 digits, untrained."""
    splits = load_digits_splits(image_size=8, seed=0)
    return splits, create_model("resnet20", num_classes=10, in_channels=1, image_size=8, width=0.5).eval()


def kept_counts(dense: torch.nn.Module, plan) -> dict[str, tuple[int, int]]:
    """(kept, dense size) of every group of ``plan`` on ``dense``."""
    groups = ModelGroups(dense, torch.zeros(1, 1, 8, 8))
    sizes = {group.name: groups.current_size(group) for group in groups.groups}
    return {name: (round(ratio * sizes[name]), sizes[name]) for name, ratio in plan.keep_ratios.items()}


def assert_multiples(counts: dict[str, tuple[int, int]], multiple: int) -> None:
    for name, (kept, size) in counts.items():
        assert kept % multiple == 0 or kept == size, f"{name} keeps {kept} of {size}"
    assert any(kept < size for kept, size in counts.values())  # something was pruned


@pytest.mark.usefixtures("mocked_clock")  # halp prices channels with the (mocked) latency table
@pytest.mark.parametrize("method, extra", [
    ("uniform", {}), ("global_magnitude", {}), ("halp", {}), ("optuna", {"trials": 2}),
    # the rounding lives in the space, which every method goes through: the others run with -m slow (1-4 s each)
    pytest.param("erk", {}, marks=pytest.mark.slow), pytest.param("lamp", {}, marks=pytest.mark.slow),
    pytest.param("dp", {}, marks=pytest.mark.slow), pytest.param("evolution", {"trials": 2}, marks=pytest.mark.slow),
])
def test_every_space_method_keeps_multiples_within_the_flops_budget(digits, method, extra) -> None:
    from metaprune.workflows.search import SearchOptions, run_search

    splits, dense = digits
    job = SearchOptions(budget=Budget(0.6), method=method, task=TASK, pruning=PruningSpec(round_to=8),
                        progress=False, **extra)
    result, _ = run_search(job, splits=splits, dense=dense)
    assert_multiples(kept_counts(dense, result.best_plan), 8)
    assert result.best_plan.flops_ratio == pytest.approx(0.6, rel=TOLERANCE)


@pytest.mark.usefixtures("mocked_clock")
def test_a_latency_search_keeps_multiples_and_meets_the_measured_speedup(digits) -> None:
    from metaprune.workflows.search import SearchOptions, run_search

    splits, dense = digits
    job = SearchOptions(budget=None, latency_budget=LatencyBudget(speedup=1.5, settings=FAST), method="halp",
                        task=TASK, pruning=PruningSpec(round_to=8), progress=False)
    result, _ = run_search(job, splits=splits, dense=dense)
    assert_multiples(kept_counts(dense, result.best_plan), 8)
    assert result.latency["measured_speedup"] == pytest.approx(1.5, rel=LATENCY_TOLERANCE)
    assert result.latency["predicted_latency_ratio"] == pytest.approx(1 / 1.5, rel=TOLERANCE)


def test_the_space_snaps_counts_to_units_and_leaves_narrow_groups_alone() -> None:
    # a group of 20 channels (>= one unit of 8: keeps 8, 16 or all 20) and one of 4 (narrower than a unit)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 20, 3), torch.nn.ReLU(), torch.nn.Conv2d(20, 4, 3),
                                torch.nn.ReLU(), torch.nn.Conv2d(4, 3, 3))
    space = SearchSpace(model, torch.zeros(1, 1, 9, 9), Budget(0.5), min_keep=0.1, round_to=8)
    order = sorted(range(2), key=lambda index: -float(space.sizes[index]))  # [the 20-wide group, the 4-wide one]

    def by_size(values: torch.Tensor) -> list[float]:
        return [float(values[index]) for index in order]

    def counts(wide: float, narrow: float) -> list[float]:
        ratios = torch.zeros(2, dtype=torch.float64)
        ratios[order[0]], ratios[order[1]] = wide, narrow
        return by_size(space.counts_of(ratios))

    assert by_size(space.steps) == [8.0, 1.0] and space.group_steps.tolist() == [1.0, 1.0]
    assert by_size(space.floor_counts) == [8.0, 1.0]  # the floor of 2 channels rounds up to one unit
    assert counts(0.55, 0.5) == [8.0, 2.0]  # 11 channels -> 8 (nearest unit); the narrow group to the channel
    assert counts(0.95, 1.0) == [20.0, 4.0]  # 19 -> 24 -> all 20
    assert by_size(space.counts_of(space.project(torch.full((2,), 0.5, dtype=torch.float64))))[0] in (8.0, 16.0, 20.0)
    with pytest.raises(BudgetError, match="min_keep=0.1 and --round-to 8 allow .* or --round-to"):
        SearchSpace(model, torch.zeros(1, 1, 9, 9), Budget(0.1), round_to=8)
    with pytest.raises(ConfigError, match="--round-to must be a whole number"):
        SearchSpace(model, torch.zeros(1, 1, 9, 9), Budget(0.5), round_to=0)


@pytest.mark.parametrize("args, message", [
    (["--round-to", "0"], "--round-to must be a whole number in [1, 1024], got 0"),
    (["--round-to", "2000"], "--round-to must be a whole number in [1, 1024], got 2000"),
    (["--round-to", "8", "--method", "tas"], "--round-to does not apply to --method tas"),
])
def test_bad_round_to_is_one_error_line_before_training(tmp_path, capsys, args, message) -> None:
    code, _, err = run_cli(["search", "--speedup", "2", "--out", str(tmp_path / "run"), *TINY, *args], capsys)
    assert code != 0 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_cli_search_writes_a_rounded_plan(tmp_path, capsys) -> None:
    from metaprune.train import save_state

    dense = create_model("resnet20", num_classes=10, in_channels=1, image_size=8, width=0.5)
    weights = save_state(tmp_path / "dense.safetensors", dense)  # no dense training
    out = tmp_path / "run"
    code, _, err = run_cli(["search", "--speedup", "2", "--method", "uniform", "--round-to", "4", "--out", str(out),
                            "--weights", str(weights), *TINY], capsys)
    assert code == 0, err
    plan = json.loads((out / "best_plan.json").read_text())
    assert json.loads((out / "search.json").read_text())["round_to"] == 4
    groups = ModelGroups(dense, torch.zeros(1, 1, 8, 8))
    for group in groups.groups:
        kept = round(plan["keep_ratios"][group.name] * groups.current_size(group))
        assert kept % 4 == 0 or kept == groups.current_size(group)
