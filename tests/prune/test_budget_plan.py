"""Budget validation and PrunePlan round trips."""

import pytest

from metaprune.errors import BudgetError, ConfigError
from metaprune.prune.budget import Budget
from metaprune.prune.plan import PrunePlan


def test_speedup_and_ratio_are_one_conversion():
    assert Budget.from_speedup(4).flops_ratio == 0.25
    assert Budget.from_ratio(0.5).speedup == 2.0
    assert Budget.from_options(speedup=2.0) == Budget.from_options(flops_ratio=0.5)


@pytest.mark.parametrize("ratio", [0.0, -0.5, 1.5, float("nan"), float("inf")])
def test_bad_ratios_are_rejected(ratio):
    with pytest.raises(BudgetError, match="ratio|finite"):
        Budget.from_ratio(ratio)


@pytest.mark.parametrize("speedup", [0.5, 0.0, -2.0])
def test_bad_speedups_are_rejected(speedup):
    with pytest.raises(BudgetError, match="speed-up"):
        Budget.from_speedup(speedup)


def test_exactly_one_budget_spelling():
    with pytest.raises(BudgetError, match="exactly one"):
        Budget.from_options(0.5, 2.0)
    with pytest.raises(BudgetError, match="exactly one"):
        Budget.from_options()


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_plan_round_trips(tmp_path, suffix):
    plan = PrunePlan("n:m", {"layer1.conv": 0.5, "fc": 1.0}, criterion="lamp", ranking="local", n_m=(2, 4), flops_ratio=0.5)
    loaded = PrunePlan.load(plan.save(tmp_path / f"plan{suffix}"))
    assert loaded == plan


def test_plan_validation():
    with pytest.raises(ConfigError, match="pattern"):
        PrunePlan("blocks")
    with pytest.raises(ConfigError, match="keep ratio"):
        PrunePlan("channel", {"a": 0.0})
    with pytest.raises(ConfigError, match="n:m"):
        PrunePlan("n:m", n_m=(4, 2))
    with pytest.raises(ConfigError, match="unknown plan fields"):
        PrunePlan.from_dict({"pattern": "channel", "rates": {}})
