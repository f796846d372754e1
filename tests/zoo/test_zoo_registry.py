"""The index schema: valid entries round-trip, invalid ones fail with messages that say what is wrong."""

from __future__ import annotations

import json

import pytest
from zoo_helpers import entry_dict, write_index

from metaprune.errors import ZooError
from metaprune.zoo import info, list_entries, load_index
from metaprune.zoo.registry import Entry, index_to_json, parse_index
from metaprune.zoo.settings import PACKAGED_INDEX

BASE = "https://example.org/zoo/"


def _index_text(*entries):
    return json.dumps({"schema_version": 1, "entries": list(entries)})


def test_entries_round_trip_through_json():
    entries = parse_index(_index_text(entry_dict("a", {"m.bin": b"1"}, "a/"), entry_dict("b", {"m.bin": b"2"}, "b/")), BASE)
    again = parse_index(index_to_json(entries.entries), BASE)
    assert again.entries == entries.entries
    assert again.get("a").url_of(again.get("a").files[0]) == "https://example.org/zoo/a/m.bin"


def test_a_file_url_overrides_the_base_url():
    entry = entry_dict("a", {"m.bin": b"1"}, "a/")
    entry["files"][0]["url"] = "hf://me/zoo/weights/m.bin"
    loaded = parse_index(_index_text(entry), BASE).get("a")
    assert loaded.url_of(loaded.files[0]) == "hf://me/zoo/weights/m.bin"


@pytest.mark.parametrize(("change", "message"), [
    (lambda e: e.pop("license"), r"entries\[0\] \('a'\): missing required field license$"),
    (lambda e: e.update(pattern="diagonal"), r"field pattern: pattern must be one of"),
    (lambda e: e["files"][0].update(sha256="abc"), r"field files\[0\]\.sha256: must be 64 hex digits"),
    (lambda e: e["files"][0].update(size=-1), r"field files\[0\]\.size: Input should be greater than or equal to 0"),
    (lambda e: e["files"][0].update(size=True), r"field files\[0\]\.size: Input should be a valid integer"),
    (lambda e: e["flops"].update(pruned="many"), r"field flops\.pruned: Input should be a valid integer"),
    (lambda e: e.pop("base_url"), "needs a 'url' unless the entry has a 'base_url'"),
    (lambda e: e["recipe"].pop("command"), r"missing required field recipe\.command"),
    (lambda e: e["metrics"]["pruned"].update(test_accuracy="high"), r"metrics\.pruned\.test_accuracy: .*valid number"),
    (lambda e: e["files"].append(dict(e["files"][0])), "duplicate file name 'm.bin'"),
    (lambda e: e["metrics"]["pruned"].pop("test_accuracy"), "metrics.pruned lacks test_accuracy"),
    (lambda e: e["metrics"]["pruned"].update(test_accuracy=1.5), r"test_accuracy must be in \[0, 1\]"),
    (lambda e: e["metrics"].pop("dense"), r"metrics lacks \['dense'\]"),
    (lambda e: e.update(files={"m.bin": 1}), r"field files: Input should be a valid list"),
    (lambda e: e.update(name="../etc"), "invalid zoo entry name"),
])
def test_invalid_entries_fail_with_a_clear_message(change, message):
    entry = entry_dict("a", {"m.bin": b"1"}, "a/")
    change(entry)
    with pytest.raises(ZooError, match=message):
        parse_index(_index_text(entry), BASE)


def test_index_level_errors():
    with pytest.raises(ZooError, match="not valid JSON"):
        parse_index("{", BASE)
    with pytest.raises(ZooError, match="schema_version 2"):
        parse_index(json.dumps({"schema_version": 2, "entries": []}), BASE)
    entry = entry_dict("a", {"m.bin": b"1"}, "a/")
    with pytest.raises(ZooError, match="duplicate entry name 'a'"):
        parse_index(_index_text(entry, entry), BASE)


def test_list_filters_by_task_and_pattern(tmp_path):
    index = write_index(tmp_path / "index.json",
                        entry_dict("conv", {"m.bin": b"1"}, "conv/"),
                        entry_dict("sparse", {"m.bin": b"1"}, "sparse/", pattern="n:m"),
                        entry_dict("sd", {"m.bin": b"1"}, "sd/", pattern="prompt-routed", task="text-to-image"))
    assert [e.name for e in list_entries(index=index)] == ["conv", "sparse", "sd"]
    assert [e.name for e in list_entries(pattern="n:m", index=index)] == ["sparse"]
    assert [e.name for e in list_entries(task="text-to-image", index=index)] == ["sd"]
    with pytest.raises(ZooError, match="unknown pattern"):
        list_entries(pattern="2:4", index=index)


def test_info_suggests_close_names(tmp_path):
    index = write_index(tmp_path / "index.json", entry_dict("resnet20-digits", {"m.bin": b"1"}, "r/"))
    assert isinstance(info("resnet20-digits", index=index), Entry)
    with pytest.raises(ZooError, match=r"did you mean \['resnet20-digits'\]"):
        info("resnet20-digit", index=index)


def test_index_comes_from_the_environment_variable(tmp_path, monkeypatch):
    index = write_index(tmp_path / "index.json", entry_dict("from-env", {"m.bin": b"1"}, "e/"))
    monkeypatch.setenv("METAPRUNE_INDEX", str(index))
    assert [e.name for e in list_entries()] == ["from-env"]
    assert load_index().url == index.as_uri()


def test_missing_index_file_is_a_clear_error(tmp_path):
    with pytest.raises(ZooError, match="does not exist"):
        load_index(tmp_path / "nope.json")


def test_packaged_index_is_valid():
    index = load_index(PACKAGED_INDEX)
    assert index.url == PACKAGED_INDEX.resolve().as_uri()
    for entry in index.entries:
        assert entry.base_url == f"entries/{entry.name}/"
