"""Entry kinds: the pattern of an entry picks its files, its loader and whether it can be verified."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from zoo_helpers import write_fake_run_dir

from metaprune.errors import ZooError
from metaprune.zoo import ENTRY_KINDS, EntryKind, entry_kind, list_entries, load_entry, publish, verify
from metaprune.zoo.loaders import DEFAULT_KIND, entry_patterns


@pytest.mark.parametrize("pattern", ["channel", "head", "unstructured", "n:m"])
def test_engine_patterns_are_pruned_models_that_verify(pattern):
    kind = entry_kind(pattern)
    assert kind is ENTRY_KINDS.get(DEFAULT_KIND) and kind.verifiable
    assert kind.required_files == ("report.json", "model.safetensors", "architecture.json")
    assert kind.optional_files == ("plan.json", "report.png")


def test_prompt_routed_pipelines_are_their_own_kind_that_refuses_verify():
    kind = entry_kind("prompt-routed")
    assert kind.required_files == ("report.json", "config.json", "predictor.safetensors", "experts.safetensors",
                                   "embeddings.safetensors")
    assert not kind.verifiable
    with pytest.raises(ZooError, match="digits-aptp is a prompt-routed text-to-image entry"):
        kind.check_verifiable("digits-aptp")


def test_unknown_patterns_name_the_known_ones_or_fall_back_to_a_default():
    with pytest.raises(ZooError, match=r"unknown pattern 'diagonal'; use one of \('channel'"):
        entry_kind("diagonal")
    assert entry_kind("diagonal", default=DEFAULT_KIND) is ENTRY_KINDS.get(DEFAULT_KIND)
    assert entry_patterns() == ("channel", "head", "unstructured", "n:m", "prompt-routed", "relative-n:m",
                                "relative-unstructured", "relative-head-ffn")


def _load_toy(folder: Path) -> str:
    return (folder / "toy.txt").read_text()


@pytest.fixture
def toy_kind(monkeypatch):
    """A third kind, registered only for one test (the registry is global)."""
    kind = EntryKind(patterns=("toy",), required_files=("report.json", "toy.txt"), load=_load_toy,
                     verify_refusal="{name} is a toy")
    monkeypatch.setitem(ENTRY_KINDS._entries, "toy", kind)
    return kind


def test_a_registered_kind_publishes_lists_loads_and_refuses_verify(toy_kind, tmp_path, zoo_cache):
    run_dir = write_fake_run_dir(tmp_path / "run", pattern="toy")
    for name in ("model.safetensors", "architecture.json", "plan.json"):
        (run_dir / name).unlink()
    with pytest.raises(ZooError, match=r"lacks \['toy.txt'\]; it must hold \['report.json', 'toy.txt'\]"):
        publish(run_dir, tmp_path / "zoo", "toy-entry")
    (run_dir / "toy.txt").write_text("hello")
    entry = publish(run_dir, tmp_path / "zoo", "toy-entry")
    assert {record.name for record in entry.files} >= {"report.json", "toy.txt"}
    index = tmp_path / "zoo" / "index.json"
    assert [e.name for e in list_entries(pattern="toy", index=index)] == ["toy-entry"]
    assert json.loads(index.read_text())["entries"][0]["pattern"] == "toy"
    assert load_entry("toy-entry", index=index) == "hello"
    with pytest.raises(ZooError, match="toy-entry is a toy"):
        verify("toy-entry", index=index)
