"""The STS Benchmark (semantic textual similarity) and plain-text calibration sentences.

STS-B files are tab-separated, UTF-8, without header or quoting::

    genre  file  year  id  score  sentence_1  sentence_2  [source ...]

(``score`` in [0, 5]; trailing source columns are ignored). Lines are split on tabs, never
with a quoting CSV reader: sentences contain quote characters. A sentence encoder is scored by

    Spearman( cos(e(s1), e(s2)), score ) x 100

over the pairs of a split: ``dev`` for every selection decision, ``test`` only for reporting.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from scipy.stats import spearmanr

from metaprune.errors import ConfigError, DataError
from metaprune.registry import Registry

#: File of each split under an STS-B root (the layout of the shared copy and of the SentEval release).
STSB_FILES = {"train": "sts-train.csv", "dev": "sts-dev.csv", "test": "sts-test.csv"}
MAX_SCORE = 5.0
_COLUMNS = 7  # genre, file, year, id, score, sentence 1, sentence 2 (then optional sources)


@dataclass(frozen=True)
class StsSplit:
    """Sentence pairs with gold similarity scores in [0, 5]."""

    first: tuple[str, ...]
    second: tuple[str, ...]
    scores: tuple[float, ...]

    def __post_init__(self) -> None:
        if not len(self.first) == len(self.second) == len(self.scores):
            raise DataError(f"an STS split needs as many second sentences and scores as first sentences, got "
                            f"{len(self.first)}, {len(self.second)} and {len(self.scores)}")

    def __len__(self) -> int:
        return len(self.scores)

    def sentences(self) -> list[str]:
        """Every sentence of the split, first then second of each pair, duplicates dropped (order kept)."""
        return list(dict.fromkeys(s for pair in zip(self.first, self.second) for s in pair))


@dataclass(frozen=True)
class StsSplits:
    """STS-B ``train`` (calibration, Fisher), ``dev`` (selection) and ``test`` (reporting)."""

    train: StsSplit
    dev: StsSplit
    test: StsSplit


def read_sts_file(path: str | Path) -> StsSplit:
    """Read one STS-B TSV file.

    Raises:
        DataError: the file is missing or empty, or a line has fewer than 7 tab-separated fields,
            a score that is not a number in [0, 5], or an empty sentence (the message names the line).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"STS-B file {path} does not exist")
    first, second, scores = [], [], []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) < _COLUMNS:
                raise DataError(f"{path}:{number}: expected at least {_COLUMNS} tab-separated fields (genre, file, "
                                f"year, id, score, sentence 1, sentence 2), got {len(fields)}")
            try:
                score = float(fields[4])
            except ValueError:
                raise DataError(f"{path}:{number}: score {fields[4]!r} is not a number") from None
            if not 0.0 <= score <= MAX_SCORE:
                raise DataError(f"{path}:{number}: score {score} is outside [0, {MAX_SCORE:g}]")
            if not fields[5].strip() or not fields[6].strip():
                raise DataError(f"{path}:{number}: empty sentence")
            first.append(fields[5])
            second.append(fields[6])
            scores.append(score)
    if not scores:
        raise DataError(f"STS-B file {path} holds no sentence pairs")
    return StsSplit(tuple(first), tuple(second), tuple(scores))


def load_stsb(root: str | Path) -> StsSplits:
    """The three STS-B splits under ``root`` (``sts-train.csv``, ``sts-dev.csv``, ``sts-test.csv``).

    Raises:
        DataError: ``root`` is not a folder, a split file is missing, or a file is malformed.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"STS-B root {root} is not a folder")
    missing = [name for name in STSB_FILES.values() if not (root / name).is_file()]
    if missing:
        raise DataError(f"STS-B root {root} lacks {', '.join(missing)}: pass the folder holding "
                        f"{', '.join(STSB_FILES.values())} (e.g. ../shared/data/stsb)")
    return StsSplits(**{split: read_sts_file(root / name) for split, name in STSB_FILES.items()})


#: Text data sets by name: ``loader(root) -> StsSplits``.
TEXT_DATASETS: Registry[Callable[[str | Path], StsSplits]] = Registry("text dataset")
TEXT_DATASETS.add("stsb", load_stsb)


def read_calibration_text(path: str | Path, limit: int | None = None) -> list[str]:
    """Calibration sentences from a plain-text file, one per line (blank lines skipped).

    Raises:
        DataError: the file is missing or holds no sentence.
        ConfigError: ``limit`` is not a positive integer.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"the calibration limit must be a positive integer, got {limit!r}")
    path = Path(path)
    if not path.is_file():
        raise DataError(f"calibration text {path} does not exist")
    sentences = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not sentences:
        raise DataError(f"calibration text {path} is empty: write one sentence per line")
    return sentences[:limit]


def sts_spearman(embed: Callable[[Sequence[str]], torch.Tensor], split: StsSplit) -> float:
    """Spearman x 100 between ``cos(embed(s1), embed(s2))`` and the gold scores of ``split``.

    ``embed`` maps sentences to a ``N x D`` tensor (each sentence is encoded once).
    """
    if len(split) < 2:
        raise DataError("Spearman correlation needs at least two sentence pairs")
    sentences = split.sentences()
    embeddings = embed(sentences)
    row = {sentence: index for index, sentence in enumerate(sentences)}
    first = embeddings[[row[s] for s in split.first]]
    second = embeddings[[row[s] for s in split.second]]
    cosine = torch.nn.functional.cosine_similarity(first.float(), second.float(), dim=-1)
    return float(spearmanr(cosine.numpy(), split.scores).statistic) * 100.0
