"""Both APTP stages run end to end on a tiny UNet; the routed pipeline samples, saves and loads exactly."""

from __future__ import annotations

import pytest
import torch
from diffusion_helpers import TINY, build_tiny_unet

from metaprune.diffusion.aptp import APTPConfig, train_stage1, train_stage2
from metaprune.diffusion.gates import discover_gates
from metaprune.diffusion.macs import MacModel
from metaprune.diffusion.pipeline import PromptRoutedPipeline
from metaprune.errors import ConfigError, WeightsError

CONFIG = APTPConfig(budget=0.6, num_codes=2, ff_groups=4, stage1_steps=3, stage2_steps=2, batch_size=4)
PROMPTS = ["a digit 3", "two digits: 3 and 7", "an inverted digit 1"]


@pytest.fixture(scope="module")
def trained(small_split, fake_table):
    teacher = build_tiny_unet()
    before = {key: value.clone() for key, value in teacher.state_dict().items()}
    stage1 = train_stage1(teacher, small_split, fake_table, CONFIG, progress=False)
    stage2 = train_stage2(teacher, stage1.predictor, small_split, fake_table, CONFIG, progress=False)
    return teacher, before, stage1, stage2


def test_stages_train_the_predictor_and_slice_smaller_experts(trained, fake_table, small_split):
    teacher, before, stage1, stage2 = trained
    assert all(torch.equal(value, teacher.state_dict()[key]) for key, value in before.items())  # frozen teacher
    assert len(stage1.history) == CONFIG.stage1_steps and {"budget", "distill", "route"} <= set(stage1.history[0])
    assert len(stage2.experts) == CONFIG.num_codes and stage2.gates.shape[0] == CONFIG.num_codes
    dense = sum(p.numel() for p in teacher.parameters())
    macs = MacModel(teacher, _layout(teacher), fake_table.tokens.shape[1])
    for expert, gates in zip(stage2.experts, stage2.gates):
        assert sum(p.numel() for p in expert.parameters()) <= dense
        assert macs.ratio(gates).item() <= 1.0
    routed = [prompt for prompts in stage2.prompts_per_code for prompt in prompts]
    assert sorted(routed) == sorted(set(small_split.prompts))  # every training prompt goes to one expert


def _layout(unet):
    return discover_gates(unet, CONFIG.ff_groups)


@pytest.fixture(scope="module")
def pipe(trained, fake_table):
    _, _, stage1, stage2 = trained
    return PromptRoutedPipeline(stage1.predictor, stage2.experts, stage2.gates, fake_table, TINY, ff_groups=4)


def test_pipeline_returns_images_and_the_expert_of_each_prompt(pipe):
    result = pipe(PROMPTS, num_inference_steps=2, guidance_scale=2.0, seed=0)
    assert result.images.shape == (3, 1, 16, 16)
    assert result.images.min() >= 0 and result.images.max() <= 1
    assert result.experts == pipe.route(PROMPTS) and all(0 <= e < CONFIG.num_codes for e in result.experts)
    again = pipe(PROMPTS, num_inference_steps=2, guidance_scale=2.0, seed=0)
    assert torch.equal(result.images, again.images)


def test_pipeline_images_come_from_the_routed_expert(pipe, fake_table):
    from metaprune.diffusion.teacher import Sampling, generate

    result = pipe(PROMPTS[:1], num_inference_steps=2, guidance_scale=2.0, seed=5)
    expert = pipe.experts[result.experts[0]]
    direct = generate(expert, fake_table.lookup(PROMPTS[:1])[0], fake_table.null(), Sampling(2, 2.0),
                      torch.Generator().manual_seed(5))
    assert torch.allclose(result.images, (direct + 1) / 2)


def test_save_load_round_trip_is_exact(pipe, tmp_path):
    folder = pipe.save(tmp_path / "aptp")
    assert not list(folder.glob("*.pt")) and not list(folder.glob("*.pkl"))
    loaded = PromptRoutedPipeline.load(folder)
    for original, restored in zip(pipe.experts, loaded.experts):
        state = restored.state_dict()
        assert all(torch.equal(value, state[key]) for key, value in original.state_dict().items())
    first = pipe(PROMPTS, num_inference_steps=2, seed=1)
    second = loaded(PROMPTS, num_inference_steps=2, seed=1)
    assert first.experts == second.experts and torch.equal(first.images, second.images)


def test_bad_inputs_raise_clear_errors(pipe, tmp_path):
    with pytest.raises(ConfigError, match="at least one prompt"):
        pipe([])
    with pytest.raises(ConfigError, match="num_inference_steps"):
        pipe(PROMPTS, num_inference_steps=-1)
    with pytest.raises(WeightsError, match="not a prompt-routed pipeline"):
        PromptRoutedPipeline.load(tmp_path / "missing")


def test_joint_stage1_fine_tunes_a_copy_and_leaves_the_teacher(small_split, fake_table):
    from dataclasses import replace

    teacher = build_tiny_unet()
    before = {key: value.clone() for key, value in teacher.state_dict().items()}
    stage1 = train_stage1(teacher, small_split, fake_table, replace(CONFIG, joint_finetune=True, stage1_steps=2),
                          progress=False)
    assert all(torch.equal(value, teacher.state_dict()[key]) for key, value in before.items())
    assert any(not torch.equal(value, stage1.unet.state_dict()[key]) for key, value in before.items())


def test_bad_aptp_config_is_rejected():
    from dataclasses import replace

    from metaprune.errors import BudgetError

    with pytest.raises(BudgetError):
        replace(CONFIG, budget=1.2).validate()
    with pytest.raises(ConfigError, match="min_mac_ratio"):
        replace(CONFIG, min_mac_ratio=0.9).validate()


def _benchmark_results(pipe) -> dict:
    """What benchmarks/aptp.py records, with made-up quality figures."""
    experts = [{"code": code, "mac_ratio": 0.5 + 0.1 * code, "params": sum(p.numel() for p in expert.parameters())}
               for code, expert in enumerate(pipe.experts)]
    return {"budget": 0.6, "dense_macs": 1000, "config": {"seed": 0},
            "teacher": {"accuracy": 0.5, "fd": 20.0}, "aptp": {"accuracy": 0.4, "fd": 15.0, "mac_ratio": 0.55,
                                                               "usage": [0.5, 0.5], "experts": experts}}


def test_a_routed_pipeline_is_a_zoo_entry_that_loads_back(pipe, tmp_path, zoo_cache):
    from metaprune.diffusion.report import write_pipeline_report
    from metaprune.errors import ZooError
    from metaprune.zoo import list_entries, load_entry, publish, verify

    run = pipe.save(tmp_path / "run")
    write_pipeline_report(run, _benchmark_results(pipe))
    publish(run, tmp_path / "zoo", "digits-aptp-tiny", task="text-to-image")
    index = tmp_path / "zoo" / "index.json"
    [entry] = list_entries(pattern="prompt-routed", index=index)
    assert entry.task == "text-to-image" and entry.flops == {"dense": 2000, "pruned": 1100}
    loaded = load_entry("digits-aptp-tiny", index=index)
    assert isinstance(loaded, PromptRoutedPipeline)
    first, second = pipe(PROMPTS, num_inference_steps=2, seed=3), loaded(PROMPTS, num_inference_steps=2, seed=3)
    assert first.experts == second.experts and torch.equal(first.images, second.images)
    with pytest.raises(ZooError, match="prompt-routed"):
        verify("digits-aptp-tiny", index=index)


def test_benchmark_results_must_match_the_pipeline(pipe, tmp_path):
    from metaprune.diffusion.report import pipeline_report

    run = pipe.save(tmp_path / "run")
    results = _benchmark_results(pipe)
    results["aptp"]["experts"] = results["aptp"]["experts"][:1]
    with pytest.raises(ConfigError, match="1 experts"):
        pipeline_report(run, results)
    with pytest.raises(ConfigError, match="lack"):
        pipeline_report(run, {"budget": 0.6})


def test_guided_distillation_batches_pair_each_noisy_image_with_the_null_prompt(small_split, fake_table):
    from metaprune.diffusion.aptp import distillation_batch
    from metaprune.diffusion.teacher import train_scheduler

    config = APTPConfig(batch_size=8, guidance_weight=1.0)
    noisy, steps, context, noise, prompts = distillation_batch(small_split, fake_table, config, train_scheduler(),
                                                               torch.Generator().manual_seed(0))
    assert len(prompts) == 4 and noise.shape[0] == 4 and noisy.shape[0] == 8  # same UNet rows as unpaired
    assert torch.equal(noisy[:4], noisy[4:]) and torch.equal(steps[:4], steps[4:])
    assert torch.equal(context[:4], fake_table.lookup(prompts)[0])
    assert torch.equal(context[4:], fake_table.null().expand(4, -1, -1))
    plain = distillation_batch(small_split, fake_table, APTPConfig(batch_size=8, guidance_weight=0.0), train_scheduler(),
                               torch.Generator().manual_seed(0))
    assert plain[0].shape[0] == 8 and len(plain[4]) == 8


def test_guided_stages_run_and_reject_bad_guidance(small_split, fake_table):
    config = APTPConfig(budget=0.6, num_codes=2, ff_groups=4, stage1_steps=2, stage2_steps=1, batch_size=4,
                        guidance_weight=1.0)
    teacher = build_tiny_unet()
    stage1 = train_stage1(teacher, small_split, fake_table, config, progress=False)
    stage2 = train_stage2(teacher, stage1.predictor, small_split, fake_table, config, progress=False)
    assert all(torch.isfinite(torch.tensor(row["distill"])) for row in stage1.history)
    assert all(len(losses) in (0, 1) for losses in stage2.losses)
    for bad in ({"guidance_weight": -1.0}, {"guidance_scale": 0.5}):
        with pytest.raises(ConfigError, match="guidance"):
            APTPConfig(**bad).validate()


def test_pipeline_folder_follows_diffusers_conventions(pipe, tmp_path):
    import json

    from diffusers import DDIMScheduler, UNet2DConditionModel

    folder = pipe.save_pretrained(tmp_path / "aptp")
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "PromptRoutedPipeline" and index["scheduler"] == ["diffusers", "DDIMScheduler"]
    assert index["_diffusers_version"] and index["experts"][0] == "metaprune"
    # diffusers reads the parts it knows on its own: the sampler, and the dense UNet the experts are sliced from
    scheduler = DDIMScheduler.from_pretrained(folder, subfolder="scheduler")
    assert scheduler.config.num_train_timesteps == 1000 and scheduler.config.beta_schedule == "squaredcos_cap_v2"
    dense = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder, subfolder="unet"))
    assert sum(p.numel() for p in dense.parameters()) == sum(p.numel() for p in TINY.build().parameters())
    loaded = PromptRoutedPipeline.from_pretrained(folder)
    assert torch.equal(loaded(PROMPTS, num_inference_steps=2, seed=4).images, pipe(PROMPTS, num_inference_steps=2,
                                                                                    seed=4).images)
    index["_class_name"] = "StableDiffusionPipeline"
    (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(WeightsError, match="StableDiffusionPipeline"):
        PromptRoutedPipeline.from_pretrained(folder)


def test_an_older_folder_without_diffusers_files_still_loads(pipe, tmp_path):
    import shutil

    folder = pipe.save_pretrained(tmp_path / "old")
    for name in ("model_index.json",):
        (folder / name).unlink()
    shutil.rmtree(folder / "scheduler")
    shutil.rmtree(folder / "unet")
    loaded = PromptRoutedPipeline.load(folder)
    assert torch.equal(loaded(PROMPTS, num_inference_steps=2, seed=4).images, pipe(PROMPTS, num_inference_steps=2,
                                                                                   seed=4).images)


def test_half_precision_storage_halves_the_experts_and_draws_alike(pipe, tmp_path):
    full = pipe.save_pretrained(tmp_path / "fp32")
    half = pipe.save_pretrained(tmp_path / "fp16", dtype="float16")
    ratio = (half / "experts.safetensors").stat().st_size / (full / "experts.safetensors").stat().st_size
    assert 0.49 < ratio < 0.52
    loaded = PromptRoutedPipeline.from_pretrained(half)
    assert loaded.weights_dtype == "float16"
    assert all(p.dtype == torch.float32 for expert in loaded.experts for p in expert.parameters())
    first, second = pipe(PROMPTS, num_inference_steps=2, seed=6), loaded(PROMPTS, num_inference_steps=2, seed=6)
    assert first.experts == second.experts
    assert (first.images - second.images).abs().max() < 0.02
    assert PromptRoutedPipeline.from_pretrained(half).weights_dtype == "float16"  # recorded, so a re-save keeps it
    with pytest.raises(ConfigError, match="dtype"):
        pipe.save_pretrained(tmp_path / "bad", dtype="int8")


def test_mac_budget_check_passes_a_met_promise_and_names_each_miss():
    from metaprune.diffusion.aptp import check_mac_budget
    from metaprune.errors import PruneError

    shares = torch.tensor([0.5, 0.25, 0.25, 0.0])
    assert check_mac_budget(torch.tensor([0.6, 0.58, 0.62, 0.65]), shares, 0.6, 0.1) == pytest.approx(0.6)
    with pytest.raises(PruneError, match=r"expert 3 at 1\.000"):  # unused by training prompts, still shipped
        check_mac_budget(torch.tensor([0.6, 0.58, 0.62, 1.0]), shares, 0.6, 0.1)
    with pytest.raises(PruneError, match=r"expert 1 at 1\.000") as missed:
        check_mac_budget(torch.tensor([0.6, 1.0, 0.62, 0.6]), shares, 0.6, 0.1)
    assert "routed average 0.705" in str(missed.value) and "expert 0" not in str(missed.value)
