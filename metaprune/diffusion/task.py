"""An offline text-to-image task built from scikit-learn's real handwritten digits.

Every sample is a 1 x 16 x 16 image in ``[-1, 1]`` (ink bright, background dark) with a
prompt generated from its label and attributes. Prompts differ in how much they ask of a model:

=========== ================================ ============================================
difficulty  prompt                            image
=========== ================================ ============================================
0           ``a digit 3``                     the digit, bilinearly resized from 8 x 8
1           ``a thick digit 3``               strokes dilated (3 x 3 max filter)
1           ``a thin digit 3``                strokes eroded (plus-shaped min filter)
1           ``an inverted digit 3``           ``-image``: dark ink on a bright background
2           ``two digits: 3 and 7``           two digits squeezed to 16 x 8 side by side
=========== ================================ ============================================

The digits are first split (stratified, seeded) into train/val/test, and composite samples
only combine digits of one split, so test images are never seen in training.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from metaprune.data.splits import split_indices
from metaprune.errors import ConfigError, DataError

IMAGE_SIZE = 16
ATTRIBUTES = ("thick", "thin", "inverted")
DIFFICULTY_NAMES = ("single", "attribute", "two-digit")
_SINGLE = re.compile(r"^an? (?:(thick|thin|inverted) )?digit (\d)$")
_PAIR = re.compile(r"^two digits: (\d) and (\d)$")


@dataclass(frozen=True)
class PromptInfo:
    """What a prompt asks for: the digit(s) left to right, an attribute and a difficulty (0, 1, 2)."""

    digits: tuple[int, ...]
    attribute: str | None
    difficulty: int


def make_prompt(digits: tuple[int, ...], attribute: str | None = None) -> str:
    """The prompt text of one or two digits and an optional attribute (one digit only)."""
    if len(digits) == 2 and attribute is None:
        return f"two digits: {digits[0]} and {digits[1]}"
    if len(digits) != 1 or attribute not in (None, *ATTRIBUTES):
        raise ConfigError(f"cannot make a prompt of digits {digits} with attribute {attribute!r}; "
                          f"use one digit with an attribute in {ATTRIBUTES} or None, or two digits")
    article = "an" if attribute == "inverted" else "a"
    return f"{article} {attribute + ' ' if attribute else ''}digit {digits[0]}"


def parse_prompt(prompt: str) -> PromptInfo:
    """Read back what :func:`make_prompt` wrote; raises ConfigError for any other text."""
    text = prompt.strip().lower()
    if match := _SINGLE.match(text):
        attribute = match.group(1)
        return PromptInfo((int(match.group(2)),), attribute, 0 if attribute is None else 1)
    if match := _PAIR.match(text):
        return PromptInfo((int(match.group(1)), int(match.group(2))), None, 2)
    raise ConfigError(f"prompt {prompt!r} is not a digits prompt; write e.g. 'a digit 3', 'a thick digit 3', "
                      f"'an inverted digit 3' or 'two digits: 3 and 7'")


def is_task_prompt(prompt: str) -> bool:
    """True if ``prompt`` is one the task writes (:func:`parse_prompt` reads it), so a digit classifier can
    judge what was drawn; free text such as ``"a handwritten seven"`` is routed and drawn but not judged."""
    try:
        parse_prompt(prompt)
    except ConfigError:
        return False
    return True


def all_prompts() -> list[str]:
    """Every prompt of the task (10 plain, 30 with an attribute, 100 pairs), in a fixed order."""
    prompts = [make_prompt((digit,)) for digit in range(10)]
    prompts += [make_prompt((digit,), attribute) for attribute in ATTRIBUTES for digit in range(10)]
    prompts += [make_prompt((left, right)) for left in range(10) for right in range(10)]
    return prompts


def _resize(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return F.interpolate(images, size=(height, width), mode="bilinear", align_corners=False, antialias=True)


def _dilate(images: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(images, 3, stride=1, padding=1)


def _erode(images: torch.Tensor) -> torch.Tensor:
    # A plus-shaped minimum keeps more of a 2-pixel stroke than a full 3 x 3 one.
    padded = F.pad(images, (1, 1, 1, 1), value=1.0)
    shifts = [padded[..., 1:-1, 1:-1], padded[..., :-2, 1:-1], padded[..., 2:, 1:-1],
              padded[..., 1:-1, :-2], padded[..., 1:-1, 2:]]
    return torch.stack(shifts).amin(dim=0)


def render(info: PromptInfo, digit_images: list[torch.Tensor]) -> torch.Tensor:
    """The ``1 x 16 x 16`` image in ``[-1, 1]`` of ``info`` from native 8 x 8 digits in ``[0, 1]``."""
    if len(digit_images) != len(info.digits):
        raise DataError(f"prompt asks for {len(info.digits)} digit(s) but {len(digit_images)} image(s) were given")
    if len(digit_images) == 2:
        halves = [_resize(image[None], IMAGE_SIZE, IMAGE_SIZE // 2)[0] for image in digit_images]
        ink = torch.cat(halves, dim=-1)
    else:
        ink = _resize(digit_images[0][None], IMAGE_SIZE, IMAGE_SIZE)[0]
        if info.attribute == "thick":
            ink = _dilate(ink[None])[0]
        elif info.attribute == "thin":
            ink = _erode(ink[None])[0]
    image = ink.clamp(0, 1) * 2 - 1
    return -image if info.attribute == "inverted" else image


@dataclass
class PromptImageSplit:
    """Images (``N x 1 x 16 x 16``), their prompts, the digits' labels (``N x 2``, -1 unused) and difficulty."""

    images: torch.Tensor
    prompts: list[str]
    labels: torch.Tensor
    difficulty: torch.Tensor

    def __len__(self) -> int:
        return len(self.prompts)

    def subset(self, indices: torch.Tensor | list[int]) -> PromptImageSplit:
        """The samples at ``indices``, in that order."""
        index = torch.as_tensor(indices, dtype=torch.long)
        return PromptImageSplit(self.images[index], [self.prompts[int(i)] for i in index],
                                self.labels[index], self.difficulty[index])


@dataclass
class DigitsPromptTask:
    """Train, val and test splits of the digits text-to-image task."""

    train: PromptImageSplit
    val: PromptImageSplit
    test: PromptImageSplit

    @property
    def prompts(self) -> list[str]:
        """Every prompt the task can produce (the router and the embedding cache see these)."""
        return all_prompts()


def _compose_split(digit_images: torch.Tensor, digit_labels: np.ndarray, pairs_per_digit: int,
                   rng: np.random.Generator) -> PromptImageSplit:
    images, prompts, labels, difficulty = [], [], [], []

    def add(info: PromptInfo, sources: list[torch.Tensor]) -> None:
        images.append(render(info, sources))
        prompts.append(make_prompt(info.digits, info.attribute))
        labels.append(list(info.digits) + [-1] * (2 - len(info.digits)))
        difficulty.append(info.difficulty)

    count = len(digit_labels)
    for index in range(count):
        digit = int(digit_labels[index])
        add(PromptInfo((digit,), None, 0), [digit_images[index]])
        attribute = ATTRIBUTES[int(rng.integers(len(ATTRIBUTES)))]
        add(PromptInfo((digit,), attribute, 1), [digit_images[index]])
        for partner in rng.integers(count, size=pairs_per_digit):
            pair = (digit, int(digit_labels[partner]))
            add(PromptInfo(pair, None, 2), [digit_images[index], digit_images[int(partner)]])
    return PromptImageSplit(torch.stack(images), prompts, torch.as_tensor(labels), torch.as_tensor(difficulty))


def load_digits_prompt_task(seed: int = 0, pairs_per_digit: int = 1, val_fraction: float = 0.15,
                            test_fraction: float = 0.15) -> DigitsPromptTask:
    """The task: per real digit one plain sample, one with a random attribute and ``pairs_per_digit`` pairs.

    The digit split and every random choice depend only on ``seed`` and the arguments.
    """
    if isinstance(pairs_per_digit, bool) or not isinstance(pairs_per_digit, int) or pairs_per_digit < 0:
        raise ConfigError(f"pairs_per_digit must be a non-negative integer, got {pairs_per_digit!r}")
    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    parts = split_indices(digits.target, val_fraction, test_fraction, seed)
    splits = []
    for offset, part in enumerate(parts):
        rng = np.random.default_rng(seed * 1000 + offset)
        splits.append(_compose_split(images[part], digits.target[part], pairs_per_digit, rng))
    return DigitsPromptTask(*splits)


def real_single_digits(split: PromptImageSplit) -> tuple[torch.Tensor, torch.Tensor]:
    """The plain single-digit samples of a split: images and labels (used to train the judge)."""
    keep = [index for index, prompt in enumerate(split.prompts) if parse_prompt(prompt).difficulty == 0]
    return split.images[keep], split.labels[keep, 0]
