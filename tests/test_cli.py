"""The metaprune command line: end to end on digits, and one clear error line for every bad input."""

import json

import pytest
from cli_helpers import run_cli

from metaprune.cli import main


@pytest.fixture(scope="module")
def pruned_run(tmp_path_factory):
    """One real `metaprune prune` run on digits (ResNet-20, 2x), shared by the tests below."""
    out = tmp_path_factory.mktemp("run") / "resnet"
    main(["prune", "--model", "resnet20", "--data", "digits", "--speedup", "2", "--criterion", "group_l2",
          "--schedule", "iterative", "--steps", "2", "--epochs", "8", "--finetune-epochs", "2", "--out", str(out)])
    return out


def test_prune_end_to_end_writes_the_run_directory(pruned_run):
    out = pruned_run
    for name in ("plan.json", "report.json", "model.safetensors", "report.png", "architecture.json"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    assert report["speedup"]["flops"] == pytest.approx(2.0, rel=0.02)
    assert report["dense"]["test_accuracy"] > 0.95
    assert report["pruned"]["test_accuracy"] > 0.9
    assert report["command"].startswith("metaprune prune")


def test_eval_reproduces_the_report(pruned_run, capsys):
    out = pruned_run
    code, stdout, _ = run_cli(["eval", str(out)], capsys)
    report = json.loads((out / "report.json").read_text())
    assert code == 0
    assert f"{report['pruned']['test_accuracy']:.4f}" in stdout.split("measured")[1]


def test_plan_reapplies_through_the_cli(pruned_run, tmp_path, capsys):
    out = pruned_run
    code, _, err = run_cli(["prune", "--plan", str(out / "plan.json"), "--epochs", "1", "--finetune-epochs", "0",
                            "--no-latency", "--out", str(tmp_path / "again")], capsys)
    assert code == 0, err
    first, again = (json.loads((d / "report.json").read_text()) for d in (out, tmp_path / "again"))
    assert again["pruned"]["flops"] == first["pruned"]["flops"]


@pytest.mark.parametrize("pattern", ["unstructured", "n:m"])
def test_mask_patterns_end_to_end(tmp_path, capsys, pattern):
    code, _, err = run_cli(["prune", "--model", "mlp", "--image-size", "8", "--budget", "0.5", "--pattern", pattern,
                            "--criterion", "l1", "--epochs", "2", "--finetune-epochs", "1", "--no-latency",
                            "--out", str(tmp_path / "run")], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["pattern"] == pattern and report["pruned"]["nonzero_params"] < report["dense"]["nonzero_params"]


def test_info_lists_groups(capsys):
    code, stdout, _ = run_cli(["info", "resnet20"], capsys)
    assert code == 0 and "prunable groups" in stdout and "layer1.0.conv1" in stdout


def _assert_one_error_line(code, err, expected):
    assert code != 0
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert expected in lines[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["prune", "--budget", "0"], "0 < ratio <= 1"),
        (["prune", "--budget", "1.5"], "0 < ratio <= 1"),
        (["prune", "--speedup", "0.5"], "speed-up"),
        (["prune", "--budget", "0.5", "--speedup", "2"], "exactly one"),
        (["prune", "--speedup", "2", "--model", "resnet99"], "unknown model"),
        (["prune", "--speedup", "2", "--criterion", "snip", "--epochs", "0"], "unknown criterion"),
        (["prune", "--speedup", "2", "--data", "cifar10", "--data-root", "/nonexistent/cifar"], "/nonexistent/cifar"),
        (["prune", "--speedup", "2", "--n-m", "two:four"], "--n-m"),
        (["eval", "/nonexistent/run"], "not found"),
        (["info", "resnet99"], "unknown model"),
    ],
)
def test_bad_input_gets_one_clear_error_line(args, expected, capsys):
    code, _, err = run_cli(args, capsys)
    _assert_one_error_line(code, err, expected)


def test_corrupt_weights_file_gets_one_clear_error_line(tmp_path, capsys):
    weights = tmp_path / "dense.safetensors"
    weights.write_bytes(b"\x00" * 64)
    code, _, err = run_cli(["prune", "--speedup", "2", "--weights", str(weights)], capsys)
    _assert_one_error_line(code, err, "corrupt")


def test_a_run_keeps_its_dense_model_and_weights_run_dir_starts_from_it(pruned_run, tmp_path, capsys):
    """`--weights RUN_DIR` loads the dense model the run saved (not its pruned model) and skips training."""
    import json

    out = pruned_run
    assert (out / "dense.safetensors").is_file()
    again = tmp_path / "again"
    code, _, err = run_cli(["prune", "--speedup", "4", "--weights", str(out), "--finetune-epochs", "0",
                            "--no-latency", "--out", str(again)], capsys)
    assert code == 0, err
    first = json.loads((out / "report.json").read_text())
    second = json.loads((again / "report.json").read_text())
    assert second["dense"]["test_accuracy"] == first["dense"]["test_accuracy"]
    assert second["dense"]["flops"] == first["dense"]["flops"]


def test_weights_from_a_folder_without_dense_weights_is_one_error(tmp_path, capsys):
    code, _, err = run_cli(["prune", "--speedup", "2", "--weights", str(tmp_path), "--epochs", "0",
                            "--out", str(tmp_path / "out")], capsys)
    assert code == 1 and "holds no dense.safetensors" in err
