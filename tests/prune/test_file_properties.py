"""Property tests of the parsers of files metaprune reads: any JSON gives a valid object or one MetapruneError."""

from __future__ import annotations

import json
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from metaprune.errors import ConfigError, WeightsError
from metaprune.prune.plan import PATTERNS, PrunePlan
from metaprune.prune.saving import read_architecture

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
plan_fields = st.fixed_dictionaries(
    {"pattern": st.sampled_from(PATTERNS) | st.text(max_size=6)},
    optional={"keep_ratios": st.dictionaries(st.text(min_size=1, max_size=8), json_values, max_size=4),
              "criterion": json_values, "ranking": st.sampled_from(("global", "local")) | json_values,
              "min_keep": json_values, "n_m": json_values, "flops_ratio": json_values},
)


@settings(max_examples=200, deadline=None)
@given(st.one_of(json_values, plan_fields))
def test_any_json_is_a_valid_plan_or_one_config_error(data):
    try:
        plan = PrunePlan.from_dict(data)
    except ConfigError as error:
        assert "\n" not in str(error)
        return
    assert plan.pattern in PATTERNS
    assert all(math.isfinite(ratio) and 0 < ratio <= 1 for ratio in plan.keep_ratios.values())
    assert PrunePlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan


@settings(max_examples=100, deadline=None)
@given(st.fixed_dictionaries({"format": st.just(1)}, optional={"model": json_values, "input_shape": json_values,
                                                               "history": json_values, "inputs": json_values})
       | json_values)
def test_any_architecture_json_is_read_or_refused_in_one_line(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("run")
    (folder / "architecture.json").write_text(json.dumps(data))
    try:
        architecture = read_architecture(folder)
    except WeightsError as error:
        assert "\n" not in str(error) and "architecture.json" in str(error)
        return
    assert architecture["format"] == 1
