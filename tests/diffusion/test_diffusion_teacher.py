"""The teacher trains with seeds, checkpoints to safetensors and resumes exactly; sampling is guided DDIM."""

from __future__ import annotations

import pytest
import torch
from diffusion_helpers import TINY

from metaprune.diffusion.teacher import Sampling, TrainConfig, generate, load_unet, train_teacher
from metaprune.errors import ConfigError, WeightsError


def _train(folder, steps, small_split, fake_table):
    config = TrainConfig(steps=steps, batch_size=4, checkpoint_every=1)
    return train_teacher(small_split, fake_table, folder, TINY, config, progress=False)


def test_resumed_training_equals_uninterrupted_training(tmp_path, small_split, fake_table):
    straight = _train(tmp_path / "straight", 3, small_split, fake_table)
    _train(tmp_path / "resumed", 1, small_split, fake_table)
    resumed = _train(tmp_path / "resumed", 3, small_split, fake_table)
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    loaded, meta = load_unet(tmp_path / "resumed")
    assert meta["step"] == 3 and len(meta["losses"]) == 3
    assert all(torch.equal(value, loaded.state_dict()[key]) for key, value in straight.state_dict().items())
    assert not list((tmp_path / "resumed").glob("*.pt"))


def test_guided_sampling_returns_images_in_range(tiny_unet, fake_table):
    context = fake_table.lookup(["a digit 3", "two digits: 1 and 2"])[0]
    images = generate(tiny_unet, context, fake_table.null(), Sampling(3, 2.0), torch.Generator().manual_seed(0))
    assert images.shape == (2, 1, 16, 16) and images.min() >= -1 and images.max() <= 1


def test_bad_training_options_and_missing_runs_raise(tmp_path, small_split, fake_table):
    with pytest.raises(ConfigError):
        train_teacher(small_split, fake_table, tmp_path, TINY, TrainConfig(steps=1, cfg_drop=1.5))
    with pytest.raises(WeightsError, match="not a teacher run directory"):
        load_unet(tmp_path / "missing")
