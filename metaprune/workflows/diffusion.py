"""Diffusion jobs: train the teacher, prune it into prompt-routed experts, sample a grid.

Each function is one ``metaprune diffusion ...`` command without its command line::

    train_diffusion_teacher("runs/dd-teacher", TrainConfig(steps=6000))
    report = prune_diffusion_teacher("runs/dd-teacher", "runs/dd-aptp", APTPConfig(budget=0.6))
    experts = sample_grid("runs/dd-aptp", ["a digit 3", "a handwritten seven"], "grid.png", per_prompt=8)

Pruning ends by checking its promise (:func:`~metaprune.diffusion.aptp.check_mac_budget`): every
expert and the routed average keep ``budget ± budget_tolerance`` (relative) of the teacher's MACs,
or the job fails with a PruneError and writes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from metaprune.diffusion.aptp import APTPConfig, check_mac_budget, train_stage1, train_stage2
from metaprune.diffusion.gates import discover_gates
from metaprune.diffusion.images import save_grid
from metaprune.diffusion.macs import MacModel
from metaprune.diffusion.pipeline import PromptRoutedPipeline
from metaprune.diffusion.task import DigitsPromptTask, all_prompts, load_digits_prompt_task
from metaprune.diffusion.teacher import (
    Sampling,
    TrainConfig,
    UNetConfig,
    load_unet,
    teacher_data_seed,
    train_teacher,
)
from metaprune.diffusion.text_encoder import EmbeddingTable, PromptEncoder
from metaprune.errors import ConfigError, WeightsError
from metaprune.rundir import (
    REPORT_FILE,
    RUN_LOG_FILE,
    TEACHER_CONFIG_FILE,
    check_out_dir,
    check_out_file,
    staged_files,
    write_json,
)

#: Most images one grid may hold per prompt.
MAX_PER_PROMPT = 64


def prompt_task_and_table(seed: int) -> tuple[DigitsPromptTask, EmbeddingTable]:
    """The digits text-to-image task split with ``seed``, and the MiniLM embeddings of every task prompt."""
    return load_digits_prompt_task(seed=seed), EmbeddingTable.build(PromptEncoder(), all_prompts())


def train_diffusion_teacher(out: str | Path, config: TrainConfig, unet_config: UNetConfig | None = None) -> Path:
    """Train (or resume) the dense teacher UNet in run directory ``out``; returns ``out``.

    Raises:
        ConfigError: ``config`` holds values no run can use, or ``out`` cannot be written or holds
            files that are not a teacher run.
    """
    config.validate()
    folder = check_out_dir(out, resumable=True)
    # a failed run's run.log alone is no reason to refuse the folder
    holds_files = folder.is_dir() and any(item.name != RUN_LOG_FILE for item in folder.iterdir())
    if holds_files and not (folder / TEACHER_CONFIG_FILE).is_file():
        raise ConfigError(f"--out {folder} holds files but no teacher run ({TEACHER_CONFIG_FILE}); choose another --out")
    task, table = prompt_task_and_table(config.data_seed)
    train_teacher(task.train, table, out, unet_config or UNetConfig(), config)
    return Path(out)


def prune_diffusion_teacher(teacher: str | Path, out: str | Path, config: APTPConfig, *,
                            overwrite: bool = False) -> dict[str, Any]:
    """Train the architecture predictor, slice and fine-tune one expert per code, save the pipeline in ``out``.

    The task is split with the teacher's seed, so its test images stay unseen. ``out`` gets the
    pipeline's files and a ``report.json`` of the training (config, expert MAC ratios, prompts
    per expert, losses), which is returned. The files are written to a temporary sibling first and
    moved into ``out`` when all of them are complete.

    Raises:
        BudgetError, ConfigError: ``config`` holds values no run can use, or ``out`` cannot be written
            or (without ``overwrite``) already holds files.
        WeightsError: ``teacher`` is not a teacher run directory.
        PruneError: after the last step an expert or the routed average misses ``budget`` by more than
            ``budget_tolerance`` (relative); nothing is written.
    """
    config.validate()
    check_out_dir(out, overwrite=overwrite)
    if not Path(teacher).is_dir():
        raise WeightsError(f"teacher directory {teacher} does not exist; train one with "
                           f"`metaprune diffusion teacher --out {teacher}`")
    unet, meta = load_unet(teacher)
    task, table = prompt_task_and_table(teacher_data_seed(meta))
    stage1 = train_stage1(unet, task.train, table, config)
    stage2 = train_stage2(unet, stage1.predictor, task.train, table, config, base=stage1.unet)
    pipe = PromptRoutedPipeline(stage1.predictor, stage2.experts, stage2.gates, table,
                                UNetConfig.from_dict(meta["unet"]), ff_groups=config.ff_groups)
    macs = MacModel(unet, discover_gates(unet, config.ff_groups), table.tokens.shape[1])
    expert_ratios = macs.ratio(stage2.gates)
    shares = torch.bincount(stage1.predictor.route(table.lookup(task.train.prompts)[1]),
                            minlength=config.num_codes).double() / len(task.train)
    average = check_mac_budget(expert_ratios, shares, config.budget, config.budget_tolerance)
    report = {"config": asdict(config), "teacher": str(teacher), "expert_mac_ratio": expert_ratios.tolist(),
              "routed_mac_ratio": average, "expert_share": shares.tolist(),
              "prompts_per_expert": stage2.prompts_per_code, "stage1": stage1.history,
              "stage2_losses": stage2.losses}
    with staged_files(out) as staging:
        pipe.save(staging)
        write_json(staging / REPORT_FILE, report, indent=1)
    return report


def sample_grid(model: str | Path, prompts: Sequence[str], out: str | Path, *, per_prompt: int = 8,
                steps: int = 20, guidance: float = 2.0, seed: int = 0) -> list[int]:
    """Sample ``per_prompt`` images for each prompt with the pipeline in ``model`` and write them as one
    PNG grid (a row per prompt, labelled with the prompt and its expert) to ``out``; returns the expert
    each prompt was routed to.

    Any text is a prompt: the router reads its MiniLM embedding
    (:func:`~metaprune.diffusion.task.is_task_prompt` says which prompts the digits task, and so its
    judge, knows).

    Raises:
        ConfigError: an empty prompt, bad sampling settings or an ``out`` that cannot be written (all
            checked before the pipeline loads).
        WeightsError: ``model`` is not a prompt-routed pipeline, or one of its files is corrupt.
    """
    if not prompts:
        raise ConfigError("give at least one prompt")
    if any(not isinstance(prompt, str) or not prompt.strip() for prompt in prompts):
        raise ConfigError("a prompt is empty; write what to draw, e.g. 'a digit 7' or 'a handwritten seven'")
    if not 1 <= per_prompt <= MAX_PER_PROMPT:
        raise ConfigError(f"--per-prompt must be in [1, {MAX_PER_PROMPT}], got {per_prompt}")
    Sampling(steps, guidance).validate()
    check_out_file(out)
    pipe = PromptRoutedPipeline.load(model)
    result = pipe([prompt for prompt in prompts for _ in range(per_prompt)], num_inference_steps=steps,
                  guidance_scale=guidance, seed=seed)
    experts = [result.experts[index * per_prompt] for index in range(len(prompts))]
    labels = [f"{prompt}  [expert {expert}]" for prompt, expert in zip(prompts, experts, strict=True)]
    save_grid(result.images, out, columns=per_prompt, labels=labels)
    return experts
