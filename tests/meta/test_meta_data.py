"""``--data`` for the meta population and meta-training: CIFAR-like JPEG trees, subsets, and bad input.

A tiny ``train/`` + ``test/`` JPEG tree stands in for CIFAR-10 (the real one is not needed).
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from metaprune.cli import main
from metaprune.errors import ConfigError, DataError, WeightsError
from metaprune.meta.population import read_population
from metaprune.meta.training import MetaTrainConfig
from metaprune.workflows.meta_training import population_splits, prepare_meta_training, train_population


@pytest.fixture
def jpeg_tree(tmp_path, monkeypatch):
    """``tree/{train,test}/{cat,dog}/*.jpg``: 12 + 3 noise images per class at 32 x 32 (decoding cached under tmp)."""
    monkeypatch.setenv("METAPRUNE_CACHE", str(tmp_path / "cache"))
    generator = torch.Generator().manual_seed(0)
    root = tmp_path / "tree"
    for split, count in (("train", 12), ("test", 3)):
        for label, name in enumerate(("cat", "dog")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for index in range(count):
                pixels = torch.randint(0, 128, (32, 32, 3), generator=generator, dtype=torch.uint8) + 127 * label
                Image.fromarray(pixels.numpy()).save(folder / f"{index:04d}.jpg", quality=90)
    return root


def test_cifar_tree_population_records_its_data_and_meta_training_reads_it(jpeg_tree, tmp_path):
    splits = population_splits(None, 0, data="cifar10-jpeg", data_root=jpeg_tree, train_images=10, val_images=2)
    assert (splits.image_size, splits.in_channels, len(splits.train), len(splits.val), len(splits.test)) == (32, 3, 10, 2, 6)

    out = tmp_path / "population"
    networks = train_population(out, architectures=["mlp"], widths=[1.0], seeds_per_spec=4, epochs=1,
                                data="cifar10-jpeg", data_root=jpeg_tree, train_images=10, progress=False)
    assert [network.data for network in read_population(out)] == ["cifar10-jpeg"] * 4
    assert [network.split for network in networks] == ["train", "train", "train", "val"]
    assert networks[0].spec["kwargs"]["image_size"] == 32 and networks[0].spec["kwargs"]["in_channels"] == 3

    config = MetaTrainConfig(hidden=4, layers=1, epochs=1, steps_per_epoch=1, batch_size=4)
    trainer = prepare_meta_training(out, tmp_path / "meta", config, data_root=jpeg_tree, val_images=2)  # data inferred
    assert trainer.splits.name.startswith("cifar10-jpeg") and len(trainer.splits.val) == 2
    with pytest.raises(ConfigError, match="trained on cifar10-jpeg, not --data digits"):
        prepare_meta_training(out, tmp_path / "meta2", config, data="digits")
    with pytest.raises(ConfigError, match="holds networks trained on cifar10-jpeg, not digits"):
        train_population(out, architectures=["mlp"], widths=[1.0], seeds_per_spec=1, epochs=1, progress=False)


@pytest.mark.parametrize(("options", "error", "needle"), [
    ({"data": "cifar10-jpeg"}, ConfigError, "pass --data-root"),
    ({"data": "digits", "data_root": "."}, ConfigError, "takes no --data-root"),
    ({"data": "cifar-10"}, ConfigError, "unknown dataset 'cifar-10'"),
    ({"data": "digits", "train_images": 0}, ConfigError, "--train-images must be a positive integer"),
    ({"data": "digits", "val_images": -3}, ConfigError, "--val-images must be a positive integer"),
])
def test_bad_data_options_are_refused_before_anything_loads(options, error, needle):
    with pytest.raises(error, match=needle):
        population_splits(None, 0, **options)


def test_a_folder_without_train_and_test_is_one_error_line_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "flat").mkdir()
    out = tmp_path / "population"
    with pytest.raises(SystemExit) as stop:
        main(["meta", "population", "--out", str(out), "--data", "cifar10-jpeg", "--data-root", str(tmp_path / "flat")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 1 and len(lines) == 1, lines
    assert lines[0].startswith("error: ") and "no train/ and no test/" in lines[0], lines[0]
    assert not (out / "population.json").exists()
    with pytest.raises(DataError, match="does not exist"):
        population_splits(None, 0, data="cifar10-jpeg", data_root=tmp_path / "missing")


def test_population_of_siblings_starts_from_given_weights_and_refuses_weights_that_do_not_fit(tmp_path):
    from metaprune.models import create_model
    from metaprune.train import save_state

    torch.manual_seed(0)
    parent = create_model("mlp", num_classes=10, in_channels=1, image_size=8)
    save_state(tmp_path / "parent.safetensors", parent)
    out = tmp_path / "siblings"
    networks = train_population(out, architectures=["mlp"], widths=[1.0], seeds_per_spec=2, epochs=1, image_size=8,
                                weights=tmp_path / "parent.safetensors", lr=1e-6, progress=False)
    for network in networks:  # a tiny learning rate: still the parent's weights, not a fresh initialisation
        child = network.load(out)
        assert all(torch.allclose(a, b, atol=1e-3) for a, b in zip(child.state_dict().values(),
                                                                  parent.state_dict().values(), strict=True))
    with pytest.raises(WeightsError, match="do not fit"):
        train_population(tmp_path / "other", architectures=["resnet20"], widths=[0.5], seeds_per_spec=1, epochs=1,
                         image_size=8, weights=tmp_path / "parent.safetensors", progress=False)
    assert not (tmp_path / "other" / "population.json").exists()
