"""The digits text-to-image task: prompts, labels and difficulty agree; splits are seeded and disjoint."""

from __future__ import annotations

import pytest
import torch

from metaprune.diffusion.task import all_prompts, load_digits_prompt_task, make_prompt, parse_prompt
from metaprune.errors import ConfigError


@pytest.fixture(scope="module")
def task():
    return load_digits_prompt_task(seed=0)


def test_prompts_labels_and_difficulty_are_consistent(task):
    for split in (task.train, task.val, task.test):
        assert split.images.shape == (len(split), 1, 16, 16)
        assert split.images.min() >= -1 and split.images.max() <= 1
        for prompt, labels, difficulty in zip(split.prompts, split.labels.tolist(), split.difficulty.tolist()):
            info = parse_prompt(prompt)
            assert list(info.digits) == [label for label in labels if label >= 0]
            assert info.difficulty == difficulty


def test_every_difficulty_and_attribute_occurs(task):
    assert set(task.train.difficulty.tolist()) == {0, 1, 2}
    attributes = {parse_prompt(prompt).attribute for prompt in task.train.prompts}
    assert attributes == {None, "thick", "thin", "inverted"}


def test_attributes_change_the_image_as_described(task):
    def ink(attribute):
        rows = [i for i, p in enumerate(task.train.prompts) if parse_prompt(p).attribute == attribute
                and parse_prompt(p).difficulty < 2]
        return ((task.train.images[rows] + 1) / 2).mean().item()

    assert ink("thin") < ink(None) < ink("thick")
    assert ink("inverted") > 0.5  # bright background


def test_split_is_seeded(task):
    again = load_digits_prompt_task(seed=0)
    assert torch.equal(again.test.images, task.test.images) and again.test.prompts == task.test.prompts
    other = load_digits_prompt_task(seed=1)
    assert not torch.equal(other.test.images[:50], task.test.images[:50])


def test_prompt_round_trip_and_bad_prompts():
    assert len(all_prompts()) == len(set(all_prompts())) == 140
    for prompt in all_prompts():
        info = parse_prompt(prompt)
        assert make_prompt(info.digits, info.attribute) == prompt
    with pytest.raises(ConfigError, match="not a digits prompt"):
        parse_prompt("a photo of a cat")
    with pytest.raises(ConfigError):
        make_prompt((1, 2), "thick")
