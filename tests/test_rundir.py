"""The run directory: writes are atomic (a reader sees the old file or the new one), reads fail in one line."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from metaprune.errors import WeightsError, ZooError
from metaprune.rundir import read_json, save_safetensors, write_json, write_text, write_with


def test_write_json_creates_the_folder_and_ends_with_a_newline(tmp_path):
    path = write_json(tmp_path / "run" / "report.json", {"a": 1})
    assert path.read_text() == '{\n  "a": 1\n}\n'
    assert write_json(path, [1, 2], indent=None).read_text() == "[1, 2]\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.json"]  # no temporary left behind


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = write_text(tmp_path / "plan.json", "old")

    def half_then_fail(partial):
        partial.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_with(path, half_then_fail)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["plan.json"]


def test_save_safetensors_round_trips(tmp_path):
    tensors = {"w": torch.arange(6.0).reshape(2, 3).t()}  # not contiguous: saved contiguous
    loaded = load_file(str(save_safetensors(tmp_path / "model.safetensors", tensors)))
    assert torch.equal(loaded["w"], tensors["w"])


def test_read_json_errors_are_one_line_of_the_callers_kind(tmp_path):
    with pytest.raises(WeightsError, match="plan.json does not exist"):
        read_json(tmp_path / "plan.json")
    with pytest.raises(ZooError, match="^no report here$"):
        read_json(tmp_path / "report.json", error=ZooError, missing="no report here")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ZooError, match="bad.json is not valid JSON") as caught:
        read_json(tmp_path / "bad.json", error=ZooError)
    assert "\n" not in str(caught.value)
    (tmp_path / "good.json").write_text(json.dumps({"k": [1]}))
    assert read_json(tmp_path / "good.json") == {"k": [1]}
