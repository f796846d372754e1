"""Bad input to meta-training is one error line: numbers, output folders, corrupt checkpoints, a diverging loss.

A checkpoint is one file written atomically: a run killed while writing it resumes to the same
result, and a damaged one is refused with the file's name, never resumed into a different run.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from meta_helpers import CONFIG

from metaprune.cli import main
from metaprune.errors import ConfigError, WeightsError
from metaprune.meta import training
from metaprune.meta.checkpoint import OPTIMIZER_PREFIX
from metaprune.meta.population import INDEX, read_population
from metaprune.meta.training import BEST, CHECKPOINT, MetaTrainConfig, MetaTrainer, load_metanet
from metaprune.rundir import save_safetensors
from metaprune.train.checkpoint import read_tensors

NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(("field", "value"), [
    ("epsilon", NAN), ("epsilon", INF), ("epsilon", -0.1), ("lr", NAN), ("lr", 0.0), ("lr", -1e-3), ("lr", INF),
    ("sparsity_weight", NAN), ("sparsity_weight", -1.0), ("target_keep", 0.0), ("target_keep", 1.5),
    ("target_keep", NAN), ("val_speedup", 0.0), ("val_speedup", 0.5), ("val_speedup", INF), ("hidden", 0),
    ("hidden", 10**6), ("layers", 0), ("epochs", 0), ("epochs", 10**9), ("steps_per_epoch", -1),
    ("batch_size", 0), ("weight_decay", NAN), ("important_weight", 2.0),
])
def test_every_numeric_option_is_checked_for_finiteness_and_range(field, value):
    with pytest.raises(ConfigError, match=f"field '{field}'"):
        MetaTrainConfig(**{field: value}).validate()


def run_cli(args, capsys):
    """``metaprune meta ARGS``: (exit status, stderr lines)."""
    with pytest.raises(SystemExit) as stop:
        main(["meta", *args])
    return stop.value.code, capsys.readouterr().err.strip().splitlines()


def assert_one_error_line(code, lines, *needles):
    assert code == 1 and len(lines) == 1 and lines[0].startswith("error: "), lines
    assert all(needle in lines[0] for needle in needles), lines[0]


@pytest.mark.parametrize(("option", "value"), [
    ("--epsilon", "nan"), ("--lr", "inf"), ("--val-speedup", "0"), ("--target-keep", "0"), ("--hidden", "0"),
    ("--epochs", "0"), ("--steps-per-epoch", "-1"), ("--sparsity-weight", "-inf"),
])
def test_train_refuses_bad_numbers_before_anything_is_written(option, value, tmp_path, capsys):
    out = tmp_path / "run"
    code, lines = run_cli(["train", "--population", str(tmp_path / "none"), "--out", str(out), option, value], capsys)
    assert_one_error_line(code, lines, option.removeprefix("--").replace("-", "_"))
    assert not out.exists()


def test_population_refuses_bad_widths(tmp_path, capsys):
    code, lines = run_cli(["population", "--out", str(tmp_path / "p"), "--widths", "0.5,nan"], capsys)
    assert_one_error_line(code, lines, "--widths")


@pytest.mark.parametrize("command", ["train", "population"])
def test_an_out_that_is_a_file_or_under_one_is_one_line_and_left_alone(command, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("keep me")
    for out in (blocker, blocker / "run"):
        code, lines = run_cli([command, "--population", str(tmp_path), "--out", str(out)] if command == "train"
                              else [command, "--out", str(out)], capsys)
        assert_one_error_line(code, lines, str(out))
    assert blocker.read_text() == "keep me"


def test_an_existing_run_is_not_overwritten_without_resume_or_overwrite(trained, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(trained[0], out)
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    code, lines = run_cli(["train", "--population", str(tmp_path), "--out", str(out)], capsys)
    assert_one_error_line(code, lines, "--resume", "--overwrite")
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    code, lines = run_cli(["train", "--population", str(tmp_path), "--out", str(other)], capsys)
    assert_one_error_line(code, lines, str(other))
    assert before == {path.name: path.read_bytes() for path in out.iterdir()}


def test_a_diverging_loss_stops_training_without_writing_a_metanetwork(population, splits, tmp_path, monkeypatch):
    root, networks = population
    monkeypatch.setattr(training, "sparsity_penalty", lambda *args: torch.tensor(NAN))
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match="diverged"):
        MetaTrainer(CONFIG, root, networks, splits, out).fit(progress=False)
    assert not (out / BEST).exists() and not (out / CHECKPOINT).exists()


def test_a_run_killed_while_writing_a_checkpoint_resumes_to_the_same_result(population, splits, trained, tmp_path,
                                                                          monkeypatch):
    """What ``kill -9`` during epoch 1's checkpoint leaves: epoch 0's checkpoint, maybe epoch 1's best weights,
    and a half-written temporary sibling. Resuming repeats epoch 1 exactly."""
    root, networks = population
    out = tmp_path / "killed"
    write = training.write_checkpoint

    def killed_while_writing_epoch_1(path, weights, optimizer, record):
        if record["epoch"] < 1:
            return write(path, weights, optimizer, record)
        whole = write(tmp_path / "whole.safetensors", weights, optimizer, record).read_bytes()
        (path.parent / f".{path.name}.4242.0123abcd.tmp").write_bytes(whole[: len(whole) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "write_checkpoint", killed_while_writing_epoch_1)
    with pytest.raises(KeyboardInterrupt):
        MetaTrainer(CONFIG, root, networks, splits, out).fit(progress=False)
    monkeypatch.undo()
    assert read_tensors(out / CHECKPOINT)[1]["epoch"] == 0  # the previous checkpoint, whole
    trainer = MetaTrainer(CONFIG, root, networks, splits, out)
    assert trainer.resume() and trainer.start_epoch == 1
    resumed = trainer.fit(progress=False)
    reference_dir, reference = trained
    assert resumed.task_loss == pytest.approx(reference.task_loss, rel=1e-5)
    assert resumed.sparsity_loss == pytest.approx(reference.sparsity_loss, rel=1e-5)
    assert resumed.val_pruned_accuracy == reference.val_pruned_accuracy
    expected, got = read_tensors(reference_dir / BEST)[0], read_tensors(out / BEST)[0]
    assert all(torch.allclose(value, got[name], rtol=1e-5, atol=1e-7) for name, value in expected.items())


@pytest.fixture
def copy_of_run(trained, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(trained[0], out)
    return out


def _resume(population, splits, out):
    root, networks = population
    return MetaTrainer(CONFIG, root, networks, splits, out).resume()


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_damaged_checkpoint_is_refused_naming_the_file(damage, population, splits, copy_of_run):
    path = copy_of_run / CHECKPOINT
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 3], "garbage": b"\x00\xff" * 64, "empty": b""}[damage])
    with pytest.raises(WeightsError, match=str(path)):
        _resume(population, splits, copy_of_run)


def test_a_truncated_checkpoint_is_one_error_line_on_resume(population, copy_of_run, capsys):
    path = copy_of_run / CHECKPOINT
    path.write_bytes(path.read_bytes()[:1000])
    code, lines = run_cli(["train", "--population", str(population[0]), "--out", str(copy_of_run), "--resume",
                           "--image-size", "8", "--hidden", "8", "--layers", "1", "--epochs", "2",
                           "--steps-per-epoch", "2", "--val-speedup", "2"], capsys)
    assert_one_error_line(code, lines, str(path))


@pytest.mark.parametrize(("change", "field"), [
    (lambda record: record.update(epoch="one"), "epoch"),
    (lambda record: record["history"].update(task_loss=[1.0, "x"]), "history.task_loss.1"),
    (lambda record: record.pop("best"), "best"),
    (lambda record: record["metanet"].update(hidden=10**9), "metanet.hidden"),
])
def test_a_checkpoint_with_a_bad_field_is_refused_naming_file_and_field(change, field, population, splits,
                                                                       copy_of_run):
    path = copy_of_run / CHECKPOINT
    tensors, record = read_tensors(path)
    change(record)
    save_safetensors(path, tensors, metadata={"metaprune": json.dumps(record)})
    with pytest.raises(WeightsError, match=f"{path}: field '{field}'"):
        _resume(population, splits, copy_of_run)


def test_optimizer_moments_that_do_not_fit_are_refused(population, splits, copy_of_run):
    path = copy_of_run / CHECKPOINT
    tensors, record = read_tensors(path)
    moment = next(name for name in tensors if name.startswith(OPTIMIZER_PREFIX) and tensors[name].dim())
    tensors[moment] = torch.zeros(3, 3, 3)
    save_safetensors(path, tensors, metadata={"metaprune": json.dumps(record)})
    with pytest.raises(WeightsError, match="optimizer entry"):
        _resume(population, splits, copy_of_run)


def test_a_folder_of_the_old_file_by_file_format_is_refused(population, splits, copy_of_run):
    (copy_of_run / "state.json").write_text('{"epoch": 0')  # torn as a kill between files left it
    with pytest.raises(WeightsError, match="state.json"):
        _resume(population, splits, copy_of_run)


def test_a_metanetwork_file_cannot_ask_for_any_size(copy_of_run):
    path = copy_of_run / BEST
    tensors, record = read_tensors(path)
    record["metanet"]["hidden"] = 10**9
    save_safetensors(path, tensors, metadata={"metaprune": json.dumps(record)})
    with pytest.raises(WeightsError, match="field 'metanet.hidden'"):
        load_metanet(path)


def test_a_population_index_with_a_bad_field_names_file_and_field(population, tmp_path):
    entries = json.loads((population[0] / INDEX).read_text())
    entries[0]["name"] = "../../outside"
    (tmp_path / INDEX).write_text(json.dumps(entries))
    with pytest.raises(WeightsError, match=r"population.json: field '0.name'"):
        read_population(tmp_path)
    (tmp_path / INDEX).write_bytes(b"\xff\xfe[")
    with pytest.raises(WeightsError, match="population.json"):
        read_population(tmp_path)
