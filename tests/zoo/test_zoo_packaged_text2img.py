"""The packaged zoo holds a text-to-image entry that a fresh install pulls, loads and samples on a CPU."""

from __future__ import annotations

import json

import pytest
import torch

from metaprune.zoo import list_entries, load_entry, pull
from metaprune.zoo.card import read_card_metadata
from metaprune.zoo.settings import PACKAGED_INDEX

MAX_BYTES = 8 * 2**20


@pytest.fixture(scope="module")
def text2img_entry():
    [entry] = [entry for entry in list_entries(task="text-to-image", index=PACKAGED_INDEX)]
    return entry


def test_the_packaged_text2img_entry_is_small_and_in_diffusers_folder_conventions(text2img_entry):
    assert text2img_entry.pattern == "prompt-routed"
    assert sum(record.size for record in text2img_entry.files) <= MAX_BYTES
    names = {record.name for record in text2img_entry.files}
    assert {"model_index.json", "scheduler/scheduler_config.json", "unet/config.json", "experts.safetensors"} <= names
    assert "metaprune diffusion teacher" in text2img_entry.recipe["command"]


def test_the_packaged_text2img_entry_loads_and_samples_on_cpu(text2img_entry, zoo_cache):
    from diffusers import DDIMScheduler

    from metaprune.diffusion.pipeline import PromptRoutedPipeline
    from metaprune.diffusion.task import is_task_prompt

    folder = pull(text2img_entry.name, index=PACKAGED_INDEX)
    assert json.loads((folder / "config.json").read_text())["weights_dtype"] == "float16"
    assert DDIMScheduler.from_pretrained(folder, subfolder="scheduler").config.num_train_timesteps == 1000
    card = read_card_metadata((folder / "README.md").read_text())
    assert card["pipeline_tag"] == "text-to-image" and card["library_name"] == "metaprune"
    pipe = load_entry(text2img_entry.name, index=PACKAGED_INDEX)
    assert isinstance(pipe, PromptRoutedPipeline)
    prompts = ["a digit 7", "a handwritten seven"]
    assert is_task_prompt(prompts[0]) and not is_task_prompt(prompts[1])
    result = pipe(prompts, num_inference_steps=2, seed=0)
    assert result.images.shape == (2, 1, 16, 16) and torch.isfinite(result.images).all()
    assert all(0 <= expert < len(pipe.experts) for expert in result.experts)
