"""Embedding distillation after structured pruning, and its options."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from metaprune.errors import ConfigError
from metaprune.models.minilm import SentenceEncoder
from metaprune.prune.embedding_distill import DistillOptions, distill_embeddings
from tests.cli_helpers import run_cli
from tests.text.conftest import OBJECTS, SUBJECTS, VERBS
from tests.text.test_text_export import structured, tiny_tokenizer

SENTENCES = [f"{s} {v} {o}." for s in SUBJECTS for v in VERBS for o in OBJECTS[:2]]


def encoders(tmp_path: Path, tiny_bert) -> tuple[SentenceEncoder, SentenceEncoder]:
    tokenizer = tiny_tokenizer(tmp_path / "vocab")
    torch.manual_seed(0)
    with torch.no_grad():  # spread the random embeddings apart (a fresh tiny BERT maps every sentence alike)
        tiny_bert.embeddings.word_embeddings.weight.normal_(0.0, 1.0)
    teacher = SentenceEncoder(tiny_bert, tokenizer, max_length=32)
    student = SentenceEncoder(structured(copy.deepcopy(tiny_bert)), tokenizer, max_length=32)
    return student, teacher


def distance(student: SentenceEncoder, teacher: SentenceEncoder) -> float:
    return float(1 - (student.encode(SENTENCES) * teacher.encode(SENTENCES)).sum(-1).mean())


def test_distillation_brings_the_student_closer_to_the_teacher(tmp_path: Path, tiny_bert) -> None:
    torch.manual_seed(0)
    student, teacher = encoders(tmp_path, tiny_bert)
    before = distance(student, teacher)
    teacher_state = copy.deepcopy(teacher.model.state_dict())
    result = distill_embeddings(student, teacher, SENTENCES, DistillOptions(epochs=3, lr=1e-3, batch_size=8))
    assert distance(student, teacher) < 0.5 * before
    assert result.losses[-1] < result.losses[0] and result.best_epoch == 3 and result.sentences == len(SENTENCES)
    assert result.steps == 3 * 8 and student.max_length == 32
    assert all(torch.equal(value, teacher.model.state_dict()[key]) for key, value in teacher_state.items())


def test_the_selection_keeps_the_best_epoch_including_none(tmp_path: Path, tiny_bert) -> None:
    student, teacher = encoders(tmp_path, tiny_bert)
    state = copy.deepcopy(student.model.state_dict())
    result = distill_embeddings(student, teacher, SENTENCES, DistillOptions(epochs=2, lr=1e-3, batch_size=16),
                                select=lambda: -distance(student, teacher) - 10.0, initial_score=0.0)
    assert result.best_epoch == 0 and len(result.scores) == 2
    assert all(torch.equal(value, student.model.state_dict()[key]) for key, value in state.items())
    assert distill_embeddings(student, teacher, SENTENCES, DistillOptions(epochs=0)).steps == 0


@pytest.mark.parametrize("settings", [{"epochs": -1}, {"lr": 0.0}, {"batch_size": 0}, {"max_sentences": 0}])
def test_bad_distillation_settings_are_config_errors(settings: dict) -> None:
    with pytest.raises(ConfigError):
        DistillOptions(**settings)


def test_distillation_of_a_masked_pattern_is_one_error_line(stsb_root: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    code, _, stderr = run_cli(["prune", "--model", "minilm", "--data", "stsb", "--data-root", str(stsb_root),
                               "--pattern", "unstructured", "--budget", "0.5", "--distill-epochs", "1",
                               "--out", str(out)], capsys)
    assert code == 1 and stderr.startswith("error: ") and stderr.count("\n") == 1
    assert "--distill-epochs applies to --pattern head-ffn only" in stderr
    assert not out.exists()


def test_dev_sample_is_seeded_and_keeps_pairs_together(stsb_root: Path) -> None:
    from metaprune.data.stsb import load_stsb
    from metaprune.workflows.text import dev_sample

    dev = load_stsb(stsb_root).dev
    sample = dev_sample(dev, 5, seed=3)
    assert len(sample) == 5 and sample == dev_sample(dev, 5, seed=3)
    pairs = set(zip(dev.first, dev.second, dev.scores))
    assert set(zip(sample.first, sample.second, sample.scores)) <= pairs
    assert dev_sample(dev, None, 0) is dev and dev_sample(dev, 100, 0) is dev


def test_the_workflow_distils_on_sts_b_train_and_records_the_retraining_free_figures(
        tmp_path: Path, tiny_bert, stsb_root: Path) -> None:
    from metaprune.data.stsb import load_stsb
    from metaprune.prune.budget import Budget
    from metaprune.workflows.text import TextPruneOptions, distill_run

    student, teacher = encoders(tmp_path, tiny_bert)
    options = TextPruneOptions(data_root=str(stsb_root), budget=Budget.from_speedup(2.0), pattern="head-ffn",
                               criterion="fisher-mask", distill_epochs=2, distill_lr=1e-3)
    entry = distill_run(student, teacher, options, load_stsb(stsb_root))
    assert set(entry["before"]) == {"dev_spearman", "test_spearman"}
    assert len(entry["epoch_dev_spearman"]) == 2 and entry["best_epoch"] in (0, 1, 2)
    assert entry["sentences"] == len(load_stsb(stsb_root).train.sentences()) and entry["lr"] == 1e-3
