"""A cheap accuracy objective: validation accuracy of a pruned copy right after BatchNorm re-estimation.

No training at all: the plan is applied to a copy of the dense model, its BatchNorm statistics
are re-estimated on a few fixed training batches ("adaptive BN", Li et al., EagleEye, ECCV'20:
pruning shifts every later activation, and with stale statistics a pruned network scores near
chance whatever its plan), and the copy is scored on a fixed, seeded subset of the validation
split. EagleEye shows that this accuracy ranks candidate plans much as their accuracy after
fine-tuning does, at a small fraction of the cost.

The subset is read in ``rounds_count`` growing stages: round :math:`k` (of :math:`R`) scores the
first :math:`n\\,2^{k-R}` images, the last round all :math:`n`. Each round adds only the new
images, so a candidate dropped after the first round cost a quarter of a full evaluation (for
:math:`R = 3`); this is the increasing-sample-size selection of EvoPress (Sieberling et al., ICML'25)
and the rungs of ASHA. Every score is a validation accuracy in ``[0, 1]``, the same batches and
images for every candidate, so equal plans score equally.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import torch
from torch.utils.data import Dataset

from metaprune.data import DataSplits, make_loaders
from metaprune.errors import ConfigError
from metaprune.prune.criteria import get_criterion
from metaprune.prune.structured import apply_plan
from metaprune.search.space import SearchSpace
from metaprune.train import recalibrate_batchnorm

Batch = tuple[torch.Tensor, torch.Tensor]


def dataset_tensors(dataset: Dataset, indices: torch.Tensor) -> Batch:
    """Images and labels of ``indices`` as two tensors (whole batches for uint8 image sets)."""
    if hasattr(dataset, "without_augmentation") and hasattr(dataset, "batch"):
        return dataset.without_augmentation().batch(indices)
    images, labels = zip(*(dataset[int(index)] for index in indices), strict=True)
    return torch.stack(images), torch.as_tensor(labels, dtype=torch.long)


def round_sizes(samples: int, rounds_count: int) -> list[int]:
    """Cumulative images scored after each round: doubling, the last round ``samples``."""
    return [max(1, samples >> (rounds_count - 1 - round_index)) for round_index in range(rounds_count)]


class BNAccuracyObjective:
    """Validation accuracy after BatchNorm re-estimation on fixed training batches, on growing val samples.

    Args:
        space: the search space (its dense model is copied, never changed).
        splits: the data; ``splits.val`` is scored, ``splits.train`` re-estimates BatchNorm.
        calibration: the batch the criterion ranks channels on (as :func:`apply_plan` takes it).
        samples: validation images scored in the last round (at most the whole split).
        rounds_count: growing stages of the evaluation (see the module docstring).
        bn_batches: training batches of ``batch_size`` that re-estimate BatchNorm.
        seed: chooses the validation images and the training batches.
    """

    name = "bn_accuracy"

    def __init__(self, space: SearchSpace, splits: DataSplits, calibration: Batch | None = None, *,
                 samples: int = 2000, rounds_count: int = 3, bn_batches: int = 5, batch_size: int = 128,
                 seed: int = 0):
        for label, value in (("samples", samples), ("rounds_count", rounds_count), ("bn_batches", bn_batches),
                             ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"bn_accuracy {label} must be an integer >= 1, got {value!r}")
        self.space, self.calibration, self.rounds_count = space, calibration, rounds_count
        samples = min(samples, len(splits.val))
        chosen = torch.randperm(len(splits.val), generator=torch.Generator().manual_seed(seed))[:samples]
        self.images, self.labels = dataset_tensors(splits.val, chosen)
        self.sizes = round_sizes(samples, rounds_count)
        train = make_loaders(splits, batch_size=batch_size, seed=seed)[0]
        self.bn_batches: list[Batch] = []
        for batch in train:
            if len(self.bn_batches) == bn_batches:
                break
            self.bn_batches.append(batch)

    def pruned(self, keep_ratios: torch.Tensor) -> torch.nn.Module:
        """A copy of the dense model pruned to ``keep_ratios``, BatchNorm re-estimated, in eval mode."""
        model = copy.deepcopy(self.space.model)
        apply_plan(model, self.space.example_input, self.space.to_plan(keep_ratios), get_criterion(self.space.criterion),
                   self.calibration)
        recalibrate_batchnorm(model, self.bn_batches, batches=len(self.bn_batches))
        return model.eval()

    @torch.no_grad()
    def rounds(self, keep_ratios: torch.Tensor) -> Iterator[float]:
        model = self.pruned(keep_ratios)
        correct, start = 0, 0
        for end in self.sizes:
            for chunk in range(start, end, 500):
                stop = min(end, chunk + 500)
                correct += int((model(self.images[chunk:stop]).argmax(dim=1) == self.labels[chunk:stop]).sum())
            start = end
            yield correct / end
