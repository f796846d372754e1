"""Bad input to the diffusion commands is one error line: numbers, output paths, corrupt pipeline and teacher files."""

from __future__ import annotations

import json

import pytest
import torch
from diffusion_helpers import TINY, build_tiny_unet, random_hard_gates

from metaprune.cli import main
from metaprune.diffusion.aptp import APTPConfig
from metaprune.diffusion.gates import discover_gates
from metaprune.diffusion.pipeline import PromptRoutedPipeline
from metaprune.diffusion.predictor import ArchitecturePredictor
from metaprune.diffusion.slicing import slice_unet
from metaprune.diffusion.teacher import Sampling, TrainConfig, load_unet, save_checkpoint
from metaprune.errors import BudgetError, ConfigError, WeightsError
from metaprune.rundir import (
    EMBEDDINGS_FILE,
    EXPERT_WEIGHTS_FILE,
    PIPELINE_CONFIG_FILE,
    PREDICTOR_WEIGHTS_FILE,
    TEACHER_CONFIG_FILE,
    save_safetensors,
)

NAN, INF = float("nan"), float("inf")
PROMPT = "a digit 3"


@pytest.fixture
def saved_pipeline(fake_table, tmp_path):
    """A two-expert pipeline of the tiny UNet (untrained predictor), saved: its folder."""
    unet = build_tiny_unet()
    layout = discover_gates(unet, ff_groups=4)
    gates = torch.stack([random_hard_gates(layout, keep=0.6, seed=seed) for seed in (1, 2)])
    torch.manual_seed(0)
    predictor = ArchitecturePredictor(len(layout), num_codes=2, text_dim=fake_table.pooled.shape[1])
    experts = [slice_unet(unet, layout, row) for row in gates]
    return PromptRoutedPipeline(predictor, experts, gates, fake_table, TINY, ff_groups=4).save(tmp_path / "aptp")


def run_cli(args, capsys):
    """``metaprune diffusion ARGS``: (exit status, stderr lines)."""
    with pytest.raises(SystemExit) as stop:
        main(["diffusion", *args])
    return stop.value.code, capsys.readouterr().err.strip().splitlines()


def assert_one_error_line(code, lines, *needles):
    assert code == 1 and len(lines) == 1 and lines[0].startswith("error: "), lines
    assert all(needle in lines[0] for needle in needles), lines[0]


@pytest.mark.parametrize(("settings", "field"), [
    (Sampling(0, 2.0), "num_inference_steps"), (Sampling(10**6, 2.0), "num_inference_steps"),
    (Sampling(5, NAN), "guidance_scale"), (Sampling(5, INF), "guidance_scale"), (Sampling(5, -1.0), "guidance_scale"),
    (Sampling(20, 2.0, train_timesteps=10), "training time steps"),
    (TrainConfig(lr=NAN), "lr"), (TrainConfig(batch_size=0), "batch_size"), (TrainConfig(steps=-1), "steps"),
    (TrainConfig(ema_decay=INF), "ema_decay"), (TrainConfig(cfg_drop=NAN), "cfg_drop"),
    (APTPConfig(num_codes=0), "num_codes"), (APTPConfig(stage1_steps=-1), "stage1_steps"),
    (APTPConfig(predictor_lr=NAN), "predictor_lr"), (APTPConfig(guidance_weight=INF), "guidance_weight"),
    (APTPConfig(min_mac_ratio=NAN), "min_mac_ratio"), (APTPConfig(gumbel_end=0.0), "gumbel_end"),
])
def test_every_numeric_setting_is_checked_for_finiteness_and_range(settings, field):
    with pytest.raises(ConfigError, match=field):
        settings.validate()


@pytest.mark.parametrize("budget", [NAN, INF, 0.0])
def test_a_non_finite_budget_is_a_budget_error(budget):
    with pytest.raises(BudgetError):
        APTPConfig(budget=budget).validate()


def test_zero_steps_no_longer_mean_the_default(saved_pipeline):
    pipe = PromptRoutedPipeline.load(saved_pipeline)
    with pytest.raises(ConfigError, match="num_inference_steps"):
        pipe([PROMPT], num_inference_steps=0)
    with pytest.raises(ConfigError, match="guidance_scale"):
        pipe([PROMPT], num_inference_steps=2, guidance_scale=NAN)


@pytest.mark.parametrize(("option", "value"), [
    ("--steps", "0"), ("--steps", "100000"), ("--guidance", "nan"), ("--guidance", "inf"), ("--guidance", "-1"),
    ("--per-prompt", "0"), ("--per-prompt", "100000"),
])
def test_sample_refuses_bad_numbers_before_loading_or_writing(option, value, tmp_path, capsys):
    grid = tmp_path / "grid.png"
    code, lines = run_cli(["sample", PROMPT, "--model", str(tmp_path / "none"), "--out", str(grid), option, value],
                          capsys)
    assert_one_error_line(code, lines)
    assert "not a prompt-routed pipeline" not in lines[0] and not grid.exists()


@pytest.mark.parametrize("args", [
    ["prune", "--budget", "nan"], ["prune", "--codes", "0"], ["prune", "--stage1-steps", "-1"],
    ["prune", "--min-mac-ratio", "nan"], ["prune", "--guidance-weight", "inf"],
    ["teacher", "--lr", "nan"], ["teacher", "--batch-size", "0"], ["teacher", "--steps", "-1"],
    ["teacher", "--lr", "inf"],
])
def test_prune_and_teacher_refuse_bad_numbers_before_writing(args, tmp_path, capsys):
    out = tmp_path / "out"
    code, lines = run_cli([*args, "--out", str(out)], capsys)
    assert_one_error_line(code, lines)
    assert not out.exists()


def test_sample_refuses_output_paths_that_cannot_be_written(saved_pipeline, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("keep me")
    for out in (tmp_path, blocker / "grid.png", ""):
        code, lines = run_cli(["sample", PROMPT, "--model", str(saved_pipeline), "--out", str(out), "--steps", "1"],
                              capsys)
        assert_one_error_line(code, lines, "--out")
    assert blocker.read_text() == "keep me"


def test_sample_writes_a_png_whatever_the_suffix(saved_pipeline, tmp_path, capsys):
    grid = tmp_path / "grid.out"
    main(["diffusion", "sample", PROMPT, "--model", str(saved_pipeline), "--out", str(grid), "--steps", "1",
          "--per-prompt", "1"])
    assert grid.read_bytes().startswith(b"\x89PNG") and not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("command", ["prune", "teacher"])
def test_prune_and_teacher_refuse_an_out_that_is_a_file_or_a_foreign_folder(command, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("keep me")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    for out in (blocker, blocker / "run", foreign):
        code, lines = run_cli([command, "--teacher", str(tmp_path), "--out", str(out)] if command == "prune"
                              else [command, "--out", str(out)], capsys)
        assert_one_error_line(code, lines, str(out))
    assert blocker.read_text() == "keep me" and (foreign / "notes.txt").read_text() == "mine"


def _truncate(path):
    path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 3)])


def _set_config(field, value):
    def change(folder):
        config = json.loads((folder / PIPELINE_CONFIG_FILE).read_text())
        parent, _, name = field.rpartition(".")
        (config[parent] if parent else config)[name] = value
        (folder / PIPELINE_CONFIG_FILE).write_text(json.dumps(config))
    return change


def _swap_embeddings(folder):
    save_safetensors(folder / EMBEDDINGS_FILE, {"tokens": torch.zeros(2, 5, 24), "pooled": torch.zeros(2, 16)})


@pytest.mark.parametrize(("damage", "needle"), [
    (lambda folder: _truncate(folder / PIPELINE_CONFIG_FILE), "config.json is not valid JSON"),
    (lambda folder: (folder / PIPELINE_CONFIG_FILE).write_bytes(b"\xff\xfe{}"), "config.json is not UTF-8"),
    (_set_config("ff_groups", "four"), "config.json: field 'ff_groups'"),
    (_set_config("unet.block_out_channels", [4096, 4096]), "config.json: field 'unet.block_out_channels.0'"),
    (_set_config("sampling.guidance_scale", 1e9), "config.json: field 'sampling.guidance_scale'"),
    (_set_config("gates", [[1, 0]]), "config.json: field 'gates'"),
    (_set_config("predictor.temperature", 0), "config.json: field 'predictor.temperature'"),
    (lambda folder: _truncate(folder / EXPERT_WEIGHTS_FILE), EXPERT_WEIGHTS_FILE),
    (lambda folder: (folder / PREDICTOR_WEIGHTS_FILE).write_bytes(b"\x00" * 64), PREDICTOR_WEIGHTS_FILE),
    (lambda folder: _truncate(folder / EMBEDDINGS_FILE), EMBEDDINGS_FILE),
    (_swap_embeddings, EMBEDDINGS_FILE),
    (lambda folder: save_safetensors(folder / EXPERT_WEIGHTS_FILE, {"0.nothing": torch.zeros(1)}), EXPERT_WEIGHTS_FILE),
])
def test_a_damaged_pipeline_file_is_one_error_naming_it(damage, needle, saved_pipeline, tmp_path, capsys):
    damage(saved_pipeline)
    with pytest.raises(WeightsError, match=needle.replace(".", r"\.")):
        PromptRoutedPipeline.load(saved_pipeline)
    code, lines = run_cli(["sample", PROMPT, "--model", str(saved_pipeline), "--out", str(tmp_path / "g.png"),
                           "--steps", "1"], capsys)
    assert_one_error_line(code, lines, needle)
    assert not (tmp_path / "g.png").exists()


def test_a_damaged_teacher_run_is_one_error_naming_the_file(tmp_path):
    unet = build_tiny_unet()
    save_checkpoint(tmp_path, unet, {"unet": {**TINY.__dict__, "block_out_channels": [16, 32]}, "step": 0})
    assert load_unet(tmp_path)[1]["step"] == 0
    config = tmp_path / TEACHER_CONFIG_FILE
    config.write_text(json.dumps({"unet": {"sample_size": "big"}}))
    with pytest.raises(WeightsError, match=r"unet\.json: field 'unet\.sample_size'"):
        load_unet(tmp_path)
    config.write_text('{"unet": ')
    with pytest.raises(WeightsError, match=r"unet\.json"):
        load_unet(tmp_path)
