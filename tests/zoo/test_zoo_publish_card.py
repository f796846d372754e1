"""Publishing a run directory and the model card it gets."""

from __future__ import annotations

import hashlib
import json

import pytest
from matplotlib.image import imread
from zoo_helpers import write_fake_run_dir

from metaprune.errors import ZooError
from metaprune.zoo import info, load_index, make_card, publish, pull
from metaprune.zoo.card import render_keep_ratio_chart


def test_card_of_a_run_dir_has_metrics_recipe_license_and_checksums(tmp_path):
    run_dir = write_fake_run_dir(tmp_path / "run")
    card = make_card(run_dir, name="mlp-demo", license="MIT")
    assert card.startswith("---\n") and "\n---\n\n# mlp-demo\n" in card
    assert "pruned with the **channel** pattern (criterion `l1`, schedule `one-shot`) to a budget of 50% of the dense FLOPs" in card
    assert "| FLOPs | 2.000 M | 1.000 M |" in card
    assert "| test accuracy | 95.00 % | 93.75 % |" in card
    assert "| latency (ms) | 2.000 | 1.250 |" in card
    assert "Speed-up: 2.00x in FLOPs, 1.60x in measured latency." in card
    assert "metaprune prune --model mlp --budget 0.5 --seed 3" in card
    assert "## License\n\nMIT" in card
    weights = (run_dir / "model.safetensors").read_bytes()
    assert f"| `model.safetensors` | {len(weights)} | `{hashlib.sha256(weights).hexdigest()}` |" in card
    assert "![per-layer keep ratios](keep_ratios.png)" in card
    assert (run_dir / "keep_ratios.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_chart_is_a_png_sized_by_the_number_of_layers(tmp_path):
    few = imread(render_keep_ratio_chart({"a": 0.5}, tmp_path / "few.png"))
    many = imread(render_keep_ratio_chart({f"layer{i}": i / 20 for i in range(20)}, tmp_path / "many.png"))
    assert few.shape[1] == many.shape[1] == 600  # 6 inches at 100 dpi
    assert many.shape[0] > few.shape[0]
    with pytest.raises(ZooError, match="no layer_keep_ratios"):
        render_keep_ratio_chart({}, tmp_path / "none.png")


def test_card_of_an_incomplete_run_dir_says_what_is_missing(tmp_path):
    run_dir = write_fake_run_dir(tmp_path / "run")
    (run_dir / "model.safetensors").unlink()
    with pytest.raises(ZooError, match=r"lacks \['model.safetensors'\]"):
        make_card(run_dir)
    report = json.loads((run_dir / "report.json").read_text())
    del report["command"]
    (run_dir / "model.safetensors").write_bytes(b"w")
    (run_dir / "report.json").write_text(json.dumps(report))
    with pytest.raises(ZooError, match=r"lacks keys \['command'\]"):
        make_card(run_dir)


def test_publish_then_pull_gives_back_the_same_files(tmp_path, zoo_cache):
    run_dir = write_fake_run_dir(tmp_path / "run")
    entry = publish(run_dir, tmp_path / "zoo")
    assert entry.name == "mlp-digits-channel-f50"
    assert sorted(path.name for path in (tmp_path / "zoo").iterdir()) == ["index.json", "mlp-digits-channel-f50"]
    assert [record.name for record in entry.files] == [
        "report.json", "model.safetensors", "architecture.json", "plan.json", "keep_ratios.png", "README.md"]
    assert entry.base_url == "mlp-digits-channel-f50/"
    assert entry.recipe == {"plan": {"pattern": "channel", "keep_ratios": {"layers.0": 0.5}},
                            "command": "metaprune prune --model mlp --budget 0.5 --seed 3"}
    assert entry.flops == {"dense": 2_000_000, "pruned": 1_000_000}
    assert entry.metrics["pruned"]["test_accuracy"] == 0.9375
    folder = pull(entry.name, index=tmp_path / "zoo" / "index.json")
    for name in ("report.json", "model.safetensors", "architecture.json", "plan.json"):
        assert (folder / name).read_bytes() == (run_dir / name).read_bytes()
    card = (folder / "README.md").read_text()
    assert hashlib.sha256((folder / "keep_ratios.png").read_bytes()).hexdigest() in card


def test_published_entry_card_from_the_registry(tmp_path):
    entry = publish(write_fake_run_dir(tmp_path / "run"), tmp_path / "zoo", "demo", license="CC-BY-4.0")
    card = make_card(entry)
    assert "\n---\n\n# demo\n" in card and "## License\n\nCC-BY-4.0" in card
    assert "![per-layer keep ratios](keep_ratios.png)" in card
    assert entry.file("README.md").sha256 in card  # listed from the index, card included


def test_publish_updates_the_index_and_replaces_a_republished_entry(tmp_path):
    zoo = tmp_path / "zoo"
    publish(write_fake_run_dir(tmp_path / "a"), zoo, "first")
    publish(write_fake_run_dir(tmp_path / "b", pattern="n:m"), zoo)
    republished = publish(write_fake_run_dir(tmp_path / "c", seed=7), zoo, "first")
    assert [e.name for e in load_index(zoo / "index.json").entries] == ["first", "mlp-digits-nm-f50"]
    assert json.loads((zoo / "first" / "report.json").read_text())["seed"] == 7
    assert info("first", index=zoo / "index.json") == republished


def test_publish_with_a_hosting_url(tmp_path):
    entry = publish(write_fake_run_dir(tmp_path / "run"), tmp_path / "zoo", "demo", base_url="hf://me/zoo/")
    assert entry.url_of(entry.file("model.safetensors")) == "hf://me/zoo/demo/model.safetensors"


def test_publish_refuses_to_overwrite_a_folder_it_did_not_publish(tmp_path):
    (tmp_path / "zoo" / "demo").mkdir(parents=True)
    with pytest.raises(ZooError, match="is not an entry"):
        publish(write_fake_run_dir(tmp_path / "run"), tmp_path / "zoo", "demo")
    with pytest.raises(ZooError, match="invalid zoo entry name"):
        publish(write_fake_run_dir(tmp_path / "run"), tmp_path / "zoo", "../demo")


def test_publish_into_a_subfolder_like_the_packaged_zoo(tmp_path, zoo_cache):
    run_dir = write_fake_run_dir(tmp_path / "run")
    entry = publish(run_dir, tmp_path / "zoo", "demo", subfolder="entries")
    assert entry.base_url == "entries/demo/"
    assert (tmp_path / "zoo" / "entries" / "demo" / "model.safetensors").is_file()
    folder = pull("demo", index=tmp_path / "zoo" / "index.json")
    assert (folder / "model.safetensors").read_bytes() == (run_dir / "model.safetensors").read_bytes()
    with pytest.raises(ZooError, match="invalid zoo file name"):
        publish(run_dir, tmp_path / "zoo", "demo", subfolder="../out")


def test_a_failed_publish_leaves_no_half_written_entry(tmp_path):
    run_dir = write_fake_run_dir(tmp_path / "run")
    (run_dir / "plan.json").write_text("{not json")
    with pytest.raises(ZooError, match="plan.json is not valid JSON"):
        publish(run_dir, tmp_path / "zoo", "demo")
    assert list((tmp_path / "zoo").iterdir()) == []
    (run_dir / "plan.json").write_text("{}")
    assert publish(run_dir, tmp_path / "zoo", "demo").recipe["plan"] == {}


def test_a_report_with_an_unknown_pattern_is_rejected(tmp_path):
    with pytest.raises(ZooError, match="pattern 'diagonal' is not one of"):
        publish(write_fake_run_dir(tmp_path / "run", pattern="diagonal"), tmp_path / "zoo")


def test_card_opens_with_the_hub_yaml_metadata(tmp_path):
    import yaml

    from metaprune.zoo.card import read_card_metadata

    run_dir = write_fake_run_dir(tmp_path / "run")
    card = make_card(run_dir, name="mlp-demo", license="Apache-2.0")
    metadata = yaml.safe_load(card.split("---\n")[1])
    assert metadata == read_card_metadata(card)
    assert metadata["library_name"] == "metaprune" and metadata["license"] == "apache-2.0"
    assert metadata["pipeline_tag"] == "image-classification"
    assert {"metaprune", "pruning", "channel", "mlp", "digits"} <= set(metadata["tags"])
    [result] = metadata["model-index"][0]["results"]
    assert metadata["model-index"][0]["name"] == "mlp-demo" and result["dataset"]["name"] == "digits"
    assert {"type": "accuracy", "name": "test accuracy", "value": 0.9375} in result["metrics"]
    custom = read_card_metadata(make_card(run_dir, name="x", license="My Own License v2", task="text-to-image"))
    assert custom["license"] == "other" and custom["license_name"] == "my-own-license-v2"
    assert custom["pipeline_tag"] == "text-to-image"


@pytest.mark.parametrize(("pattern", "reason"), [("unstructured", "dense CPU kernels"), ("n:m", "sparse tensor cores"),
                                                 ("channel", "remeasure on a quiet machine")])
def test_a_card_showing_a_slower_pruned_model_says_why(tmp_path, pattern, reason):
    run_dir = write_fake_run_dir(tmp_path / "run", pattern=pattern, speedup={"flops": 2.0, "latency": 0.69})
    card = make_card(run_dir, name="slow")
    assert "Measured latency 0.69x (slower than dense):" in card and reason in card
    assert "slower than dense" not in make_card(write_fake_run_dir(tmp_path / "fast"), name="fast")
