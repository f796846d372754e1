"""The STS-B reader, the calibration text and the Spearman evaluation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from metaprune.data.stsb import TEXT_DATASETS, load_stsb, read_calibration_text, read_sts_file, sts_spearman
from metaprune.errors import ConfigError, DataError
from tests.text.conftest import SHARED_STSB, sts_line


def test_reader_splits_on_tabs_keeps_quotes_and_ignores_source_columns(tmp_path: Path) -> None:
    path = tmp_path / "sts.csv"
    path.write_text(sts_line(0, 4.2, 'He said "hi".', "She said 'no'.", "\tsource-a\tsource-b")
                    + sts_line(1, 0.0, "A cat.", "A dog."), encoding="utf-8")
    split = read_sts_file(path)
    assert split.first == ('He said "hi".', "A cat.")
    assert split.second == ("She said 'no'.", "A dog.")
    assert split.scores == (4.2, 0.0)
    assert len(split) == 2


@pytest.mark.parametrize(("line", "message"), [
    ("a\tb\tc\td\t3.0\tonly one sentence\n", ":1: expected at least 7 tab-separated fields"),
    (sts_line(0, 1.0, "x", "y").replace("1.000", "high"), ":1: score 'high' is not a number"),
    (sts_line(0, 1.0, "x", "y").replace("1.000", "7.5"), ":1: score 7.5 is outside [0, 5]"),
    (sts_line(0, 1.0, "x", " "), ":1: empty sentence"),
])
def test_a_bad_row_is_a_data_error_naming_the_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "sts.csv"
    path.write_text(line, encoding="utf-8")
    with pytest.raises(DataError, match=re.escape(message)):
        read_sts_file(path)


def test_missing_files_and_folders_are_data_errors(tmp_path: Path, stsb_root: Path) -> None:
    with pytest.raises(DataError, match="is not a folder"):
        load_stsb(tmp_path / "nowhere")
    (stsb_root / "sts-dev.csv").unlink()
    with pytest.raises(DataError, match="lacks sts-dev.csv"):
        load_stsb(stsb_root)
    empty = tmp_path / "empty.csv"
    empty.write_text("\n")
    with pytest.raises(DataError, match="holds no sentence pairs"):
        read_sts_file(empty)


def test_load_stsb_reads_three_splits_and_is_registered(stsb_root: Path) -> None:
    splits = TEXT_DATASETS.get("stsb")(stsb_root)
    assert (len(splits.train), len(splits.dev), len(splits.test)) == (32, 16, 16)
    sentences = splits.train.sentences()
    assert len(sentences) == len(set(sentences))
    assert set(sentences) == set(splits.train.first) | set(splits.train.second)


def test_calibration_text_one_sentence_per_line(tmp_path: Path) -> None:
    path = tmp_path / "calibration.txt"
    path.write_text("First sentence.\n\n  Second one.  \nThird.\n", encoding="utf-8")
    assert read_calibration_text(path) == ["First sentence.", "Second one.", "Third."]
    assert read_calibration_text(path, limit=2) == ["First sentence.", "Second one."]
    path.write_text("\n  \n")
    with pytest.raises(DataError, match="is empty"):
        read_calibration_text(path)
    with pytest.raises(DataError, match="does not exist"):
        read_calibration_text(tmp_path / "missing.txt")
    with pytest.raises(ConfigError, match="positive integer"):
        read_calibration_text(path, limit=0)


def test_spearman_is_rank_correlation_of_cosines_times_100(tmp_path: Path) -> None:
    path = tmp_path / "sts.csv"
    # second sentences at angles 0, 60, 90 and 180 degrees from the first: cosines 1, 0.5, 0, -1
    angles = {"a": 0.0, "b": 60.0, "c": 90.0, "d": 180.0}
    path.write_text("".join(sts_line(i, score, "o", name)
                            for i, (name, score) in enumerate(zip("abcd", (5.0, 3.0, 1.0, 0.0)))))
    split = read_sts_file(path)

    def embed(sentences: list[str]) -> torch.Tensor:
        radians = torch.deg2rad(torch.tensor([angles.get(s, 0.0) for s in sentences]))
        return torch.stack([radians.cos(), radians.sin()], dim=1)

    assert sts_spearman(embed, split) == pytest.approx(100.0)
    reversed_split = read_sts_file(path).__class__(split.first, split.second, tuple(reversed(split.scores)))
    assert sts_spearman(embed, reversed_split) == pytest.approx(-100.0)


@pytest.mark.skipif(not SHARED_STSB.is_dir(), reason="the shared STS-B copy is not here")
def test_shared_stsb_copy_reads_in_full() -> None:
    splits = load_stsb(SHARED_STSB)
    assert (len(splits.train), len(splits.dev), len(splits.test)) == (5749, 1500, 1379)
