"""``metaprune prune --model minilm --data stsb``: runs, run directories, reloading, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.cli_helpers import run_cli
from tests.text.conftest import needs_minilm

pytestmark = needs_minilm


def prune_args(root: Path, out: Path, *extra: str) -> list[str]:
    return ["prune", "--model", "minilm", "--data", "stsb", "--data-root", str(root), "--no-latency",
            "--out", str(out), *extra]


def test_wanda_run_writes_a_report_and_a_model_that_loads_as_transformers(stsb_root: Path, tmp_path: Path,
                                                                         capsys) -> None:
    from transformers import AutoModel

    import metaprune
    from metaprune.models.minilm import load_encoder

    out = tmp_path / "run"
    code, stdout, stderr = run_cli(prune_args(stsb_root, out, "--pattern", "unstructured", "--criterion", "wanda",
                                              "--budget", "0.4"), capsys)
    assert code == 0, stderr
    assert "Spearman" in stdout and "FLOPs speed-up" in stdout
    report = json.loads((out / "report.json").read_text())
    assert report["pattern"] == "unstructured" and report["criterion"] == "wanda"
    assert report["extra"]["target"] == "60%"
    rows = report["extra"]["per_layer"]
    assert len(rows) == 6 * 6 and all(row["sparsity"] == pytest.approx(0.6, abs=0.01) for row in rows)
    assert report["pruned"]["flops"] < 0.5 * report["dense"]["flops"]
    for split in ("dev_spearman", "test_spearman"):
        assert -100 <= report["extra"]["pruned"][split] <= 100
    model = metaprune.load_run(out)
    assert type(model).__name__ == "BertModel"
    query = model.encoder.layer[0].attention.self.query.weight
    assert float((query == 0).float().mean()) == pytest.approx(0.6, abs=0.01)
    same = AutoModel.from_pretrained(out, local_files_only=True)  # the config expresses an unstructured model
    assert torch.equal(same.encoder.layer[0].attention.self.query.weight, query)
    encoder = load_encoder(out)
    assert encoder.encode(["A man is playing a guitar."]).shape == (1, 384)


def test_head_ffn_run_removes_units_and_reloads_the_shapes(stsb_root: Path, tmp_path: Path, capsys) -> None:
    import metaprune
    from metaprune.data.stsb import load_stsb, sts_spearman
    from metaprune.models.minilm import load_encoder

    out = tmp_path / "run"
    code, _, stderr = run_cli(prune_args(stsb_root, out, "--pattern", "head-ffn", "--criterion", "fisher-mask",
                                         "--speedup", "2"), capsys)
    assert code == 0, stderr
    report = json.loads((out / "report.json").read_text())
    assert report["dense"]["flops"] / report["pruned"]["flops"] == pytest.approx(2.0, rel=0.02)
    assert report["extra"]["fisher_loss"] == "sts"
    model = metaprune.load_run(out)
    heads = [layer.attention.self.num_attention_heads for layer in model.encoder.layer]
    assert heads == report["extra"]["heads_per_layer"]
    assert [layer.intermediate.dense.out_features for layer in model.encoder.layer] == \
        report["extra"]["neurons_per_layer"]
    test = load_stsb(stsb_root).test
    assert sts_spearman(load_encoder(out).encode, test) == pytest.approx(report["extra"]["pruned"]["test_spearman"],
                                                                         abs=1e-4)


def test_n_m_with_a_calibration_text(stsb_root: Path, tmp_path: Path, capsys) -> None:
    text = tmp_path / "calibration.txt"
    text.write_text("\n".join(f"Sentence number {i} is about a cat." for i in range(20)))
    out = tmp_path / "run"
    code, _, stderr = run_cli(prune_args(stsb_root, out, "--pattern", "n:m", "--n-m", "2:4", "--criterion",
                                         "wanda", "--calibration-text", str(text)), capsys)
    assert code == 0, stderr
    report = json.loads((out / "report.json").read_text())
    assert report["extra"]["calibration"] == {"sentences": 20, "source": str(text)}
    import metaprune

    weight = metaprune.load_run(out).encoder.layer[3].intermediate.dense.weight
    assert ((weight.reshape(weight.shape[0], -1, 4) != 0).sum(-1) <= 2).all()


@pytest.mark.parametrize(("extra", "message"), [
    (["--pattern", "unstructured", "--budget", "1.5"], "0 < ratio <= 1"),
    (["--pattern", "unstructured", "--budget", "1.0", "--criterion", "wanda"], "sparsity must lie in (0, 1)"),
    (["--pattern", "n:m", "--n-m", "4:4", "--criterion", "wanda"], "0 < N < M"),
    (["--pattern", "n:m", "--n-m", "2:x"], "--n-m must look like 2:4"),
    (["--pattern", "channel", "--budget", "0.5"], "unknown pattern 'channel' for a text model"),
    (["--pattern", "head-ffn", "--criterion", "sparsegpt", "--budget", "0.5"], "does not apply to --pattern head-ffn"),
    (["--pattern", "unstructured"], "needs --budget"),
])
def test_bad_options_are_one_error_line_and_nothing_is_written(stsb_root: Path, tmp_path: Path, capsys,
                                                               extra: list[str], message: str) -> None:
    out = tmp_path / "run"
    code, _, stderr = run_cli(prune_args(stsb_root, out, *extra), capsys)
    assert code == 1
    assert stderr.startswith("error: ") and message in stderr and stderr.count("\n") == 1
    assert not out.exists()


def test_bad_data_and_models_are_one_error_line(stsb_root: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    empty = tmp_path / "empty"
    empty.mkdir()
    text = tmp_path / "empty.txt"
    text.write_text("\n\n")
    cases = [
        (prune_args(empty, out, "--budget", "0.5", "--pattern", "unstructured"), "lacks sts-train.csv"),
        (prune_args(stsb_root, out, "--budget", "0.5", "--pattern", "unstructured", "--calibration-text", str(text)),
         "is empty"),
        (["prune", "--model", "resnet20", "--data", "stsb", "--data-root", str(stsb_root), "--out", str(out)],
         "text models (minilm) go with text data"),
    ]
    for args, message in cases:
        code, _, stderr = run_cli(args, capsys)
        assert code == 1 and stderr.startswith("error: ") and message in stderr, stderr
        assert not out.exists()
