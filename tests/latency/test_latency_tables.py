"""Latency tables, the predictor and the profile cache (issue 19), mostly on a mocked clock.

The mocked machine runs a conv/linear layer in ``cin * cout / 1000`` ms and adds a fixed 0.5 ms per
network: a layer grid interpolates that bilinear law exactly, so the fitted predictor must be exact
on networks it never saw. One test measures for real (a tiny model, few widths).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from cli_helpers import run_cli

import metaprune.latency.profile as profile_module
from metaprune.errors import ConfigError
from metaprune.latency import LatencyCostModel, LatencyTable, ProfileSettings, load_or_profile, profile_model
from metaprune.latency.table import LayerGrid, TableKey
from metaprune.models import create_model
from metaprune.prune.groups import CONV_LINEAR, ModelGroups, layer_widths

OVERHEAD_MS = 0.5
FAST = ProfileSettings(points=3, plans=6, validation=3, warmup=0, repeats=1)


def _layer_ms(in_width: float, out_width: float) -> float:
    return in_width * out_width / 1000.0


def _network_ms(model: torch.nn.Module) -> float:
    return OVERHEAD_MS + sum(_layer_ms(*layer_widths(module)) for module in model.modules()
                             if isinstance(module, CONV_LINEAR))


@pytest.fixture
def mocked_clock(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace every timing of the profiler by the mocked machine; returns a log of what was timed."""
    timed: list[str] = []

    def time_layer(layer, shape, in_width, out_width, settings):
        timed.append("layer")
        return _layer_ms(in_width, out_width)

    def measure(model, inputs, **options):
        timed.append("network")
        return _network_ms(model)

    monkeypatch.setattr(profile_module, "_time_layer", time_layer)
    monkeypatch.setattr(profile_module, "measure_ms", measure)
    return timed


@pytest.fixture
def resnet() -> tuple[torch.nn.Module, torch.Tensor]:
    return create_model("resnet20", num_classes=10, in_channels=3, image_size=8, width=0.5).eval(), torch.zeros(1, 3, 8, 8)


def test_layer_grid_interpolates_bilinearly_and_clamps() -> None:
    grid = LayerGrid(in_widths=[2, 4], out_widths=[10, 20], ms=[[1.0, 2.0], [3.0, 6.0]])
    assert grid.interpolate(2, 10) == 1.0
    assert grid.interpolate(3, 15) == pytest.approx((1.0 + 2.0 + 3.0 + 6.0) / 4)
    assert grid.interpolate(4, 12.5) == pytest.approx(3.0 * 0.75 + 6.0 * 0.25)
    assert grid.interpolate(1, 5) == 1.0 and grid.interpolate(9, 99) == 6.0  # clamped to the measured edges
    assert LayerGrid([7], [1, 3], [[1.0, 5.0]]).interpolate(123, 2) == pytest.approx(3.0)  # one width: that axis is flat


def test_fitted_predictor_is_exact_on_unseen_networks_of_a_bilinear_machine(mocked_clock, resnet) -> None:
    model, example = resnet
    table = profile_model(model, example, FAST)
    assert table.coefficients["layers"] == pytest.approx(1.0, rel=1e-6)
    assert table.coefficients["constant"] == pytest.approx(OVERHEAD_MS, rel=1e-6)
    assert len(table.validation) == 3
    for row in table.validation:
        assert row["predicted_ms"] == pytest.approx(row["measured_ms"], rel=1e-6)
    # layers of one shape share a grid: ResNet-20 has 22 conv/linear layers but 9 distinct shapes
    assert len(table.layers) == 22 and len(table.grids) == 9
    assert table.dense_ms == pytest.approx(_network_ms(model))


def test_predictor_follows_the_engine_cost_interface(mocked_clock, resnet) -> None:
    model, example = resnet
    table = profile_model(model, example, FAST)
    predictor = LatencyCostModel(ModelGroups(model, example), table)
    assert predictor.dense_flops == pytest.approx(_network_ms(model))
    half = torch.ceil(predictor.sizes / 2)
    assert predictor.flops(half) == predictor.latency_ms(half) < predictor.dense_flops
    assert predictor.latency_of_ratios({}) == pytest.approx(predictor.dense_flops)


def test_structured_pruning_to_a_predicted_latency(mocked_clock, resnet) -> None:
    from metaprune.prune.criteria import get_criterion
    from metaprune.prune.structured import prune_to_flops

    model, example = resnet
    table = profile_model(model, example, FAST)
    target = 0.5 * table.dense_ms
    prune_to_flops(model, example, target, get_criterion("l1"), cost_factory=lambda groups: LatencyCostModel(groups, table))
    assert _network_ms(model) == pytest.approx(target, rel=0.02)  # the mocked clock agrees with the plan


def test_table_round_trip_and_key_checks(mocked_clock, resnet, tmp_path: Path) -> None:
    model, example = resnet
    table = profile_model(model, example, FAST)
    path = table.save(tmp_path / "table.json")
    loaded = LatencyTable.load(path)
    assert loaded.to_dict() == table.to_dict()
    loaded.check_key(table.key)
    elsewhere = dataclasses.replace(table.key, hardware="Some Other CPU")
    with pytest.raises(ConfigError, match="hardware 'Some Other CPU'.*run `metaprune profile` on this machine"):
        LatencyTable(elsewhere, table.layers, table.grids).check_key(table.key)
    bigger = dataclasses.replace(table.key, input_shape=(1, 3, 32, 32))
    with pytest.raises(ConfigError, match=r"input_shape \(1, 3, 32, 32\) \(here: \(1, 3, 8, 8\)\)"):
        LatencyTable(bigger, table.layers, table.grids).check_key(table.key)
    with pytest.raises(ConfigError, match="not a metaprune latency table"):
        LatencyTable.from_dict({"format": 99})


def test_cache_is_reused_and_a_foreign_table_file_is_refused(mocked_clock, resnet, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("METAPRUNE_CACHE", str(tmp_path / "cache"))
    model, example = resnet
    table, path, measured = load_or_profile(model, example, FAST)
    assert measured and path.parent == tmp_path / "cache" / "latency" and path.is_file()
    count = len(mocked_clock)
    again, same_path, measured = load_or_profile(model, example, FAST)
    assert not measured and same_path == path and len(mocked_clock) == count  # nothing timed the second time
    assert again.to_dict() == table.to_dict()
    other_batch = dataclasses.replace(FAST, batch=8)
    with pytest.raises(ConfigError, match="batch 1 \\(here: 8\\)"):
        load_or_profile(model, example, other_batch, table_path=path)


def test_table_key_names_this_machine_and_settings(resnet) -> None:
    model, example = resnet
    key = profile_module.table_key(model, example, ProfileSettings(batch=4, threads=2, runtime="onnxruntime"))
    assert isinstance(key, TableKey)
    assert (key.batch, key.threads, key.runtime, key.input_shape) == (4, 2, "onnxruntime", (4, 3, 8, 8))
    assert key.model.startswith("resnet20@") and "onnxruntime" in key.versions and key.hardware


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_real_measurement_round_trip(runtime: str, tmp_path: Path) -> None:
    model = create_model("resnet20", num_classes=10, in_channels=3, image_size=8, width=0.25).eval()
    settings = ProfileSettings(runtime=runtime, points=2, plans=3, validation=1, warmup=1, repeats=3, rounds=1,
                               statistic="min")
    table = profile_model(model, torch.zeros(1, 3, 8, 8), settings)
    assert table.dense_ms > 0 and all(value >= 0 for value in table.coefficients.values())
    assert all(row["measured_ms"] > 0 and row["predicted_ms"] > 0 for row in table.calibration + table.validation)
    assert LatencyTable.load(table.save(tmp_path / "t.json")).key == table.key


def test_cli_profile_measures_then_reuses(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("METAPRUNE_CACHE", str(tmp_path))
    args = ["profile", "--model", "resnet20", "--input-size", "3x8x8", "--points", "2", "--rounds", "1",
            "--statistic", "min",
            "--out", str(tmp_path / "table.json")]
    code, out, err = run_cli(args, capsys)
    assert code == 0 and "measured table" in out and "held-out prediction error" in out, err
    assert (tmp_path / "table.json").is_file()
    code, out, _ = run_cli(args, capsys)
    assert code == 0 and "cached table" in out
    code, _, err = run_cli(["profile", "--device", "cuda"], capsys)
    assert code == 1 and err.startswith("error: --device cuda") and err.count("\n") == 1
    code, _, err = run_cli(["profile", "--input-size", "3xbig"], capsys)
    assert code == 1 and "--input-size" in err


def test_statistics_and_their_limits() -> None:
    from metaprune.latency.timing import median_ms

    calls = []
    for statistic in ("median", "min", "cpu"):
        assert median_ms(lambda: calls.append(sum(range(20_000))), warmup=1, repeats=3, statistic=statistic) > 0
    assert len(calls) == 12
    with pytest.raises(ConfigError, match="--statistic cpu adds up the CPU time of every thread"):
        ProfileSettings(statistic="cpu", threads=2)
    with pytest.raises(ConfigError, match="unknown statistic 'mean'; choose one of median, min, cpu"):
        ProfileSettings(statistic="mean")


def test_kernel_block_grid_brackets_every_multiple_of_8() -> None:
    from metaprune.latency.profile import grid_axis

    assert grid_axis(16, 2) == list(range(2, 17))  # narrow axes: every width
    assert grid_axis(64, 7) == [*range(7, 18), 24, 25, 32, 33, 40, 41, 48, 49, 56, 57, 64]
    assert grid_axis(64, 8, multiple=4) == [8, 12, 16, 24, 32, 40, 48, 56, 64]  # grouped: multiples of the groups
    from metaprune.latency.profile import MAX_AXIS_POINTS

    wide = grid_axis(2048, 208)  # a ResNet-50-wide axis: evenly spread boundary pairs, not all 231 of them
    assert len(wide) <= MAX_AXIS_POINTS and wide[0] == 208 and wide[-1] == 2048
    assert all(step % 8 == 0 and step + 1 in wide for step in wide[:-1:2])
    assert ProfileSettings().points == 0
    with pytest.raises(ConfigError, match="points 0 \\(kernel blocks\\) or >= 2"):
        ProfileSettings(points=1)


def _staircase_ms(in_width: float, out_width: float) -> float:
    """A CPU kernel's time: whole blocks of 16 channels on either side, and a slow path past 16 x 16."""
    blocks = math.ceil(in_width / 16) * math.ceil(out_width / 16)
    return blocks * (4.0 if in_width > 16 and out_width > 16 else 1.0)


def test_the_block_grid_predicts_a_staircase_machine_exactly(monkeypatch, resnet) -> None:
    # on a machine whose layers cost whole kernel blocks the evenly spread grid (multiples of 8) interpolates
    # across the steps, the kernel-block grid puts them where they are
    def network(model, *_args, **_options) -> float:
        return OVERHEAD_MS + sum(_staircase_ms(*layer_widths(module)) for module in model.modules()
                                 if isinstance(module, CONV_LINEAR))

    monkeypatch.setattr(profile_module, "_time_layer", lambda layer, shape, cin, cout, settings: _staircase_ms(cin, cout))
    monkeypatch.setattr(profile_module, "measure_ms", network)
    model = create_model("resnet20", num_classes=10, in_channels=3, image_size=8).eval()  # groups of 16, 32, 64
    example = torch.zeros(1, 3, 8, 8)
    errors = {}
    for points in (5, 0):
        table = profile_model(model, example, dataclasses.replace(FAST, points=points))
        errors[points] = max(abs(row["error"]) for row in table.validation)
    assert errors[0] < 1e-6 < 0.05 < errors[5]


def test_calibration_cancels_a_machine_that_slows_down(monkeypatch, resnet) -> None:
    # every timing is 2% slower than the one before (other jobs arriving): networks are fitted on their ratio to
    # the dense timings around them, so the predicted ratios stay exact on networks the fit never saw
    calls = []

    def drifting(model, *_args, **_options) -> float:
        calls.append(1)
        return _network_ms(model) * (1.0 + 0.02 * len(calls))

    monkeypatch.setattr(profile_module, "_time_layer", lambda layer, shape, cin, cout, settings: _layer_ms(cin, cout))
    monkeypatch.setattr(profile_module, "measure_ms", drifting)
    model, example = resnet
    table = profile_model(model, example, FAST)
    for row in table.validation:
        assert row["error"] == pytest.approx(0.0, abs=1e-6)
        assert abs(row["raw_ms"] / table.dense_ms / row["dense_ratio"] - 1) > 0.1  # a lone timing is far off
