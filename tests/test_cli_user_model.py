"""Your own model on the command line: `--model file.py:factory`, `metaprune eval` from a fresh shell,
one error line for every bad input, and a zoo that never imports a downloaded reference."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from cli_helpers import run_cli
from safetensors.torch import save_file

from metaprune.cli import main
from metaprune.errors import ZooError

# A CNN for 1-channel 16x16 digits; its factory names num_classes and in_channels but not image_size.
MYMODELS = """
import torch
from torch import nn


def make_net(num_classes, in_channels):
    return nn.Sequential(
        nn.Conv2d(in_channels, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1, stride=2), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, num_classes))


def make_list(num_classes):
    return [num_classes]
"""




def fresh_shell(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``python args...`` in a new process in ``cwd``: the installed metaprune, no PYTHONPATH."""
    env = {**{key: value for key, value in os.environ.items() if key != "PYTHONPATH"}, "COLUMNS": "200"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def user_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`metaprune prune --model <tmp>/mymodels.py:make_net --data digits --speedup 2` (1 + 1 epochs)."""
    root = tmp_path_factory.mktemp("user")
    (root / "mymodels.py").write_text(textwrap.dedent(MYMODELS))
    out = root / "runs" / "mine"
    main(["prune", "--model", f"{root}/mymodels.py:make_net", "--data", "digits", "--speedup", "2", "--epochs", "1",
          "--finetune-epochs", "1", "--no-latency", "--out", str(out)])
    return out


def test_prune_records_the_factory_and_halves_the_flops(user_run):
    report = json.loads((user_run / "report.json").read_text())
    assert report["pruned"]["flops"] / report["dense"]["flops"] == pytest.approx(0.5, rel=0.02)
    spec = json.loads((user_run / "architecture.json").read_text())["model"]
    assert spec == {"name": f"{user_run.parents[1] / 'mymodels.py'}:make_net",
                    "kwargs": {"num_classes": 10, "in_channels": 1, "image_size": 16}}


def test_eval_and_load_run_work_from_a_fresh_shell_elsewhere(user_run, tmp_path):
    report = json.loads((user_run / "report.json").read_text())
    done = fresh_shell(["-m", "metaprune.cli", "eval", str(user_run)], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    measured = done.stdout.split("measured")[1].splitlines()[0]
    assert f"{report['pruned']['flops']:,}" in measured
    assert f"{report['pruned']['test_accuracy']:.4f}" in measured
    code = (f"import metaprune, torch; m = metaprune.load_run({str(user_run)!r}); "
            "print(tuple(m(torch.zeros(2, 1, 16, 16)).shape))")
    done = fresh_shell(["-c", code], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(2, 10)"


def test_info_takes_a_reference(user_run, capsys):
    code, out, err = run_cli(["info", f"{user_run.parents[1]}/mymodels.py:make_net"], capsys)
    assert code == 0, err
    assert "2 prunable groups" in out


def _bad_weights(root: Path) -> str:
    path = root / "other.safetensors"
    save_file({"0.weight": torch.zeros(3, 1, 3, 3)}, str(path))
    return str(path)


@pytest.mark.parametrize(("model", "extra", "message"), [
    ("{root}/absent.py:make_net", [], "model file .*absent.py not found"),
    ("{root}/mymodels.py:make_nett", [], "has no 'make_nett'; define it there or use one of \\['make_net', 'make_list'\\]"),
    ("{root}/broken.py:make_net", [], "importing model file .*broken.py raised ZeroDivisionError: division by zero"),
    ("no_such_package_xyz.nets:make_net", [], "cannot import module 'no_such_package_xyz.nets'"),
    ("{root}/mymodels.py:make_list", [], "returned a list, not a torch.nn.Module"),
    ("{root}/mymodels.py:make_net", ["--width", "0.5"], "bad arguments for model .*mymodels.py:make_net: .*width.; it takes no options"),
    ("{root}/mymodels.py:make_net", ["--weights", "{weights}"], "weights in .*other.safetensors do not fit"),
])
def test_bad_input_is_one_error_line_and_writes_nothing(tmp_path, capsys, model, extra, message):
    (tmp_path / "mymodels.py").write_text(textwrap.dedent(MYMODELS))
    (tmp_path / "broken.py").write_text("x = 1 / 0\n")
    weights = _bad_weights(tmp_path)
    out = tmp_path / "runs" / "bad"
    args = ["prune", "--model", model.format(root=tmp_path), *(arg.format(weights=weights) for arg in extra),
            "--speedup", "2", "--epochs", "1", "--finetune-epochs", "0", "--no-latency", "--out", str(out)]
    code, _, err = run_cli(args, capsys)
    assert code == 1
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert re.search(message, err), err
    assert not out.exists()


def test_search_checks_the_reference_before_creating_its_run_directory(tmp_path, capsys):
    out = tmp_path / "runs" / "search"
    code, _, err = run_cli(["search", "--model", f"{tmp_path}/absent.py:make_net", "--speedup", "2",
                            "--out", str(out)], capsys)
    assert code == 1 and err.startswith("error: model file")
    assert not out.exists()


def test_the_zoo_refuses_a_factory_reference_without_importing_it(user_run, tmp_path, zoo_cache):
    from metaprune.zoo import load_entry, publish, verify

    marker = tmp_path / "imported"
    evil = tmp_path / "evil.py"
    evil.write_text(f"open({str(marker)!r}, 'w').close()\n\ndef make_net(num_classes, in_channels):\n    pass\n")
    run = shutil.copytree(user_run, tmp_path / "run")
    architecture = json.loads((run / "architecture.json").read_text())
    architecture["model"]["name"] = f"{evil}:make_net"
    (run / "architecture.json").write_text(json.dumps(architecture))
    with pytest.raises(ZooError, match="only registry models can be loaded from the zoo"):
        publish(run, tmp_path / "zoo", "mine")
    # what a malicious zoo would serve anyway: an index naming that run
    from metaprune.zoo.download import sha256_file
    from metaprune.zoo.registry import Entry, FileRecord, write_index

    index = tmp_path / "zoo" / "index.json"
    files = tuple(FileRecord(path.name, sha256_file(path), path.stat().st_size)
                  for path in sorted(run.iterdir()) if path.is_file())
    write_index(index, [Entry(name="mine", task="image-classification", architecture="mine", dataset="digits",
                              pattern="channel", flops={"dense": 2, "pruned": 1}, params={"dense": 2, "pruned": 1},
                              metrics={"dense": {"test_accuracy": 0.5}, "pruned": {"test_accuracy": 0.5}},
                              files=files, recipe={"plan": {}, "command": "metaprune prune"}, license="MIT",
                              metaprune_version="0", base_url=run.as_uri() + "/")])
    with pytest.raises(ZooError, match="only registry models can be loaded from the zoo"):
        load_entry("mine", index=index)
    with pytest.raises(ZooError, match="only registry models can be loaded from the zoo"):
        verify("mine", index=index)
    assert not marker.exists()
