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


def test_sample_takes_free_text_and_refuses_only_empty_prompts(tmp_path, capsys):
    code, lines = _run_cli(["sample", "a photo of a cat", "--model", str(tmp_path)], capsys)
    assert code == 1 and len(lines) == 1 and "not a prompt-routed pipeline" in lines[0]  # got past the prompt check
    code, lines = _run_cli(["sample", "  ", "--model", str(tmp_path)], capsys)
    assert code == 1 and len(lines) == 1 and "a prompt is empty" in lines[0]


def test_teacher_prune_sample_end_to_end_with_a_missed_budget_failing(tmp_path, capsys):
    from PIL import Image

    teacher, aptp, grid = tmp_path / "teacher", tmp_path / "aptp", tmp_path / "grid.png"
    main(["diffusion", "teacher", "--out", str(teacher), "--steps", "2", "--batch-size", "4"])
    prune = ["diffusion", "prune", "--teacher", str(teacher), "--budget", "0.6", "--out", str(aptp), "--codes", "2",
             "--stage1-steps", "2", "--stage2-steps", "1"]
    # Two predictor steps leave every gate open: experts at MAC ratio 1.0 miss the 0.6 budget, and the command says so.
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main(prune)
    lines = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 1 and lines[-1].startswith("error: the MAC budget 0.6"), lines
    assert "expert 0 at 1.000" in lines[-1] or "expert 1 at 1.000" in lines[-1]
    assert not aptp.exists() or {path.name for path in aptp.iterdir()} <= {"run.log"}  # no pipeline written
    main([*prune, "--tolerance", "1"])  # a tolerance of 100% accepts any ratio up to 1.2
    main(["diffusion", "sample", "two digits: 3 and 7", "a handwritten seven", "--model", str(aptp), "--out",
          str(grid), "--per-prompt", "2", "--steps", "2"])
    output = capsys.readouterr().out
    assert "two digits: 3 and 7' -> expert" in output and "'a handwritten seven' -> expert" in output
    assert "free text" in output.splitlines()[-2] and "free text" not in output.splitlines()[-3]
    assert (aptp / "report.json").is_file() and (aptp / "config.json").is_file() and (aptp / "model_index.json").is_file()
    with Image.open(grid) as image:  # two labelled rows of two 64-pixel tiles: the label margin widens the grid
        assert image.height == 2 * 65 + 1 and image.width > 2 * 65 + 1 + 50
        assert image.crop((0, 0, image.width - 2 * 65 - 1, image.height)).getextrema()[0] < 128  # dark label text
