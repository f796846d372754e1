"""The real MiniLM prompt encoder loads offline and caches; the CLI turns bad input into one-line errors."""

from __future__ import annotations

import pytest
import torch

from metaprune.cli import main
from metaprune.diffusion.text_encoder import EmbeddingTable, PromptEncoder


def test_minilm_encoder_is_offline_cached_and_sentence_normalised():
    encoder = PromptEncoder(max_length=16)
    tokens, pooled = encoder.encode(["a digit 3", "two digits: 3 and 7"])
    assert tokens.shape == (2, 16, 384) and pooled.shape == (2, 384)
    assert torch.allclose(pooled.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert not torch.allclose(pooled[0], pooled[1])
    encoder.model = None  # a cached prompt must not run the transformer again
    assert torch.equal(encoder.encode(["a digit 3"])[1][0], pooled[0])
    table = EmbeddingTable.build(PromptEncoder(), ["a digit 3"])
    assert torch.allclose(table.lookup(["a digit 3"])[1][0], pooled[0], atol=1e-6)
    assert table.null().shape == (16, 384)


def _run_cli(args, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["diffusion", *args])
    return stop.value.code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("budget", ["0", "1.5", "-0.3"])
def test_prune_rejects_budgets_outside_zero_one(budget, tmp_path, capsys):
    code, lines = _run_cli(["prune", "--teacher", str(tmp_path), "--budget", budget], capsys)
    assert code == 1 and len(lines) == 1 and "budget must be a MAC ratio in (0, 1]" in lines[0]


def test_prune_and_sample_report_missing_directories(tmp_path, capsys):
    code, lines = _run_cli(["prune", "--teacher", str(tmp_path / "nope"), "--out", str(tmp_path / "o")], capsys)
    assert code == 1 and len(lines) == 1 and "does not exist" in lines[0]
    code, lines = _run_cli(["sample", "a digit 3", "--model", str(tmp_path / "nope")], capsys)
    assert code == 1 and len(lines) == 1 and "not a prompt-routed pipeline" in lines[0]


def test_sample_rejects_prompts_outside_the_task(tmp_path, capsys):
    code, lines = _run_cli(["sample", "a photo of a cat", "--model", str(tmp_path)], capsys)
    assert code == 1 and "not a digits prompt" in lines[0]


def test_teacher_prune_sample_end_to_end(tmp_path, capsys):
    teacher, aptp, grid = tmp_path / "teacher", tmp_path / "aptp", tmp_path / "grid.png"
    main(["diffusion", "teacher", "--out", str(teacher), "--steps", "2", "--batch-size", "4"])
    main(["diffusion", "prune", "--teacher", str(teacher), "--budget", "0.6", "--out", str(aptp), "--codes", "2",
          "--stage1-steps", "2", "--stage2-steps", "1"])
    main(["diffusion", "sample", "two digits: 3 and 7", "a digit 1", "--model", str(aptp), "--out", str(grid),
          "--per-prompt", "2", "--steps", "2"])
    output = capsys.readouterr().out
    assert "two digits: 3 and 7' -> expert" in output and grid.is_file()
    assert (aptp / "report.json").is_file() and (aptp / "config.json").is_file()
