"""Bad input, tried as a careless user and a hostile file would: one `error:` line, exit 1, nothing touched.

Every case runs the real command line in-process (so an uncaught exception fails the test as a
traceback would) and checks that the files present before it — a finished run, a plan, an
unrelated file — are byte-for-byte unchanged afterwards.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from metaprune.cli import main

QUICK = ["--epochs", "0", "--finetune-epochs", "0", "--no-latency"]
SEARCH = ["search", "--budget", "0.5", "--epochs", "0", "--trials", "2", "--no-progress"]


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder with an existing run, plans good and bad, and files that must stay untouched."""
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "runs" / "done"
    run.mkdir(parents=True)
    (run / "report.json").write_text('{"kept": true}\n')
    (run / "model.safetensors").write_bytes(b"not touched")
    (tmp_path / "afile").write_text("a file, not a folder\n")
    (tmp_path / "plan.json").write_text(json.dumps({"pattern": "channel", "keep_ratios": {"conv": 0.5},
                                                    "flops_ratio": 0.5}))
    (tmp_path / "badutf8.json").write_bytes(b'{"pattern": "channel", "keep_ratios": {"\xff\xfe": 0.5}}')
    (tmp_path / "types.json").write_text(json.dumps({"pattern": "channel", "keep_ratios": {"conv": "half"}}))
    (tmp_path / "nanplan.json").write_text('{"pattern": "channel", "keep_ratios": {"conv": NaN}}')
    (tmp_path / "deep.json").write_text("[" * 5000 + "]" * 5000)
    (tmp_path / "notjson.json").write_text("{pattern: channel")
    (tmp_path / "extra.json").write_text(json.dumps({"pattern": "channel", "surprise": 1}))
    (tmp_path / "corrupt.safetensors").write_bytes(os.urandom(64))
    (tmp_path / "empty.safetensors").write_bytes(b"")
    (tmp_path / "arch_run").mkdir()
    (tmp_path / "arch_run" / "architecture.json").write_text('{"format": 1, "model": 5, "input_shape": "x"}')
    (tmp_path / "mymodels.py").write_text("import torch\n\ndef not_a_model(num_classes):\n    return [1, 2]\n")
    return tmp_path


CASES: list[tuple[str, list[str], str]] = [
    # budgets
    ("budget zero", ["prune", "--budget", "0", *QUICK], "0 < ratio <= 1"),
    ("budget above one", ["prune", "--budget", "1.5", *QUICK], "0 < ratio <= 1"),
    ("budget nan", ["prune", "--budget", "nan", *QUICK], "finite"),
    ("budget inf", ["prune", "--budget", "inf", *QUICK], "finite"),
    ("speedup below one", ["prune", "--speedup", "0.5", *QUICK], "speed-up"),
    ("speedup nan", ["prune", "--speedup", "nan", *QUICK], "finite"),
    ("speedup and budget", ["prune", "--speedup", "2", "--budget", "0.5", *QUICK], "exactly one"),
    ("no budget", ["prune", *QUICK], "exactly one"),
    # names
    ("unknown model", ["prune", "--speedup", "2", "--model", "resnet99", *QUICK], "unknown model"),
    ("unknown criterion", ["prune", "--speedup", "2", "--criterion", "snip", *QUICK], "unknown criterion"),
    ("unknown pattern", ["prune", "--speedup", "2", "--pattern", "block", *QUICK], "unknown pattern"),
    ("unknown schedule", ["prune", "--speedup", "2", "--schedule", "cyclic", *QUICK], "unknown schedule"),
    ("unknown ranking", ["prune", "--speedup", "2", "--ranking", "layer", *QUICK], "unknown ranking"),
    ("unknown dataset", ["prune", "--speedup", "2", "--data", "mnist", *QUICK], "unknown dataset"),
    ("unknown optimizer", ["prune", "--speedup", "2", "--optimizer", "adam", *QUICK], "unknown optimizer"),
    ("meta without metanet", ["prune", "--speedup", "2", "--criterion", "meta", *QUICK], "--metanet"),
    ("metanet without meta", ["prune", "--speedup", "2", "--metanet", "runs/x", *QUICK], "--criterion meta"),
    # numbers
    ("n:m zero m", ["prune", "--speedup", "2", "--pattern", "n:m", "--n-m", "2:0", *QUICK], "--n-m"),
    ("n:m n above m", ["prune", "--speedup", "2", "--pattern", "n:m", "--n-m", "4:2", *QUICK], "--n-m"),
    ("n:m words", ["prune", "--speedup", "2", "--pattern", "n:m", "--n-m", "two:four", *QUICK], "--n-m"),
    ("min keep nan", ["prune", "--speedup", "2", "--min-keep", "nan", *QUICK], "--min-keep"),
    ("min keep zero", ["prune", "--speedup", "2", "--min-keep", "0", *QUICK], "--min-keep"),
    ("min keep above one", ["prune", "--speedup", "2", "--min-keep", "1.5", *QUICK], "--min-keep"),
    ("width nan", ["prune", "--speedup", "2", "--width", "nan", *QUICK], "width"),
    ("width negative", ["prune", "--speedup", "2", "--width", "-1", *QUICK], "width"),
    ("lr nan", ["prune", "--speedup", "2", "--lr", "nan", *QUICK], "learning rate"),
    ("lr inf", ["prune", "--speedup", "2", "--lr", "inf", *QUICK], "learning rate"),
    ("finetune lr zero", ["prune", "--speedup", "2", "--finetune-lr", "0", *QUICK], "learning rate"),
    ("negative epochs", ["prune", "--speedup", "2", "--epochs", "-1", "--no-latency"], "--epochs"),
    ("absurd epochs", ["prune", "--speedup", "2", "--epochs", "100000000", "--no-latency"], "--epochs"),
    ("negative finetune", ["prune", "--speedup", "2", "--finetune-epochs", "-3", "--epochs", "0"], "--finetune-epochs"),
    ("steps unbounded", ["prune", "--speedup", "2", "--schedule", "iterative", "--steps", "1000", *QUICK], "--steps"),
    ("steps zero", ["prune", "--speedup", "2", "--schedule", "iterative", "--steps", "0", *QUICK], "--steps"),
    ("batch size zero", ["prune", "--speedup", "2", "--batch-size", "0", *QUICK], "batch size"),
    ("image size zero", ["prune", "--speedup", "2", "--image-size", "0", *QUICK], "image size"),
    # output paths
    ("out empty", ["prune", "--speedup", "2", "--out", "", *QUICK], "--out needs a folder"),
    ("out blank", ["prune", "--speedup", "2", "--out", "  ", *QUICK], "--out needs a folder"),
    ("out is a file", ["prune", "--speedup", "2", "--out", "afile", *QUICK], "is a file"),
    ("out under a file", ["prune", "--speedup", "2", "--out", "afile/run", *QUICK], "which is not a directory"),
    ("out existing run", ["prune", "--speedup", "2", "--out", "runs/done", *QUICK], "--overwrite"),
    ("out name too long", ["prune", "--speedup", "2", "--out", "x" * 300, *QUICK], "255 bytes"),
    # input files
    ("data root missing", ["prune", "--speedup", "2", "--data", "cifar10", "--data-root", "/nonexistent/cifar", *QUICK],
     "/nonexistent/cifar"),
    ("data root for digits", ["prune", "--speedup", "2", "--data-root", "/tmp", *QUICK], "takes no root"),
    ("plan missing", ["prune", "--plan", "absent.json", *QUICK], "not found"),
    ("plan with budget", ["prune", "--plan", "plan.json", "--speedup", "8", *QUICK], "brings its own budget"),
    ("plan bad utf8", ["prune", "--plan", "badutf8.json", *QUICK], "not UTF-8"),
    ("plan wrong types", ["prune", "--plan", "types.json", *QUICK], "keep_ratios.conv"),
    ("plan nan ratio", ["prune", "--plan", "nanplan.json", *QUICK], "keep_ratios.conv"),
    ("plan too deep", ["prune", "--plan", "deep.json", *QUICK], "deep|valid JSON|mapping"),
    ("plan not json", ["prune", "--plan", "notjson.json", *QUICK], "not valid JSON"),
    ("plan unknown field", ["prune", "--plan", "extra.json", *QUICK], "unknown plan fields"),
    ("plan is a folder", ["prune", "--plan", "runs", *QUICK], "not found"),
    ("weights corrupt", ["prune", "--speedup", "2", "--weights", "corrupt.safetensors", *QUICK], "corrupt"),
    ("weights empty", ["prune", "--speedup", "2", "--weights", "empty.safetensors", *QUICK], "corrupt"),
    ("weights missing", ["prune", "--speedup", "2", "--weights", "absent.safetensors", *QUICK], "absent.safetensors"),
    ("factory not a module", ["prune", "--speedup", "2", "--model", "mymodels.py:not_a_model", *QUICK], "nn.Module"),
    ("factory missing", ["prune", "--speedup", "2", "--model", "mymodels.py:make_net", *QUICK], "make_net"),
    ("model file missing", ["prune", "--speedup", "2", "--model", "absent.py:make", *QUICK], "not found"),
    # eval and info
    ("eval missing run", ["eval", "runs/absent"], "runs/absent"),
    ("eval not a run", ["eval", "afile"], "afile"),
    ("eval bad architecture", ["eval", "arch_run"], "architecture.json"),
    ("info unknown model", ["info", "resnet99"], "unknown model"),
    # search
    ("search unknown method", [*SEARCH, "--method", "amc"], "unknown search method"),
    ("search unknown objective", [*SEARCH, "--objective", "loss"], "unknown objective"),
    ("search unknown sampler", [*SEARCH, "--sampler", "random"], "unknown sampler"),
    ("search zero trials", [*SEARCH, "--trials", "0"], "--trials"),
    ("search zero workers", [*SEARCH, "--workers", "0"], "--workers"),
    ("search min keep nan", [*SEARCH, "--min-keep", "nan"], "--min-keep"),
    ("search out is a file", [*SEARCH, "--out", "afile"], "is a file"),
    ("search out empty", [*SEARCH, "--out", ""], "--out needs a folder"),
    ("search prune over a run", [*SEARCH, "--prune", "--out", "runs/done"], "--overwrite"),
    ("search budget nan", ["search", "--budget", "nan", "--epochs", "0"], "finite"),
    ("search lr nan", [*SEARCH, "--lr", "nan"], "learning rate"),
    ("search weights corrupt", [*SEARCH, "--weights", "corrupt.safetensors", "--out", "runs/s"], "corrupt"),
]


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


@pytest.mark.parametrize(("args", "message"), [pytest.param(args, message, id=name) for name, args, message in CASES])
def test_bad_input_is_one_error_line_and_touches_nothing(world: Path, capsys, args: list[str], message: str):
    before = _snapshot(world)
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    assert exit_info.value.code == 1, captured.err
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    assert re.search(message, lines[0]), lines[0]
    assert _snapshot(world) == before, "a bad input changed files"


def test_there_are_at_least_sixty_cases():
    assert len(CASES) >= 60
