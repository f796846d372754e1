"""Prompt-routed pruning (APTP) of a diffusion UNet, in two stages.

Stage 1 trains the :class:`ArchitecturePredictor` against the frozen (or jointly fine-tuned)
teacher: gated student noise predictions are distilled from the teacher, the mean MAC ratio
is pulled to the budget, prompts are spread over the codes by Sinkhorn and architecture
similarities follow prompt similarities.

Stage 2 routes every training prompt to its code, slices one physical expert per code
(:func:`~metaprune.diffusion.slicing.slice_unet`) and fine-tunes each expert by distillation on its own prompts.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from typing import Annotated

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from pydantic import Field
from torch import nn

from metaprune.diffusion.gates import GateController, GateLayout, discover_gates
from metaprune.diffusion.losses import (
    budget_loss,
    check_budget,
    contrastive_loss,
    distillation_loss,
    floor_loss,
    guided_distillation_loss,
    sinkhorn,
)
from metaprune.diffusion.macs import MacModel
from metaprune.diffusion.predictor import ArchitecturePredictor, gumbel_sigmoid
from metaprune.diffusion.slicing import slice_unet
from metaprune.diffusion.task import PromptImageSplit
from metaprune.diffusion.teacher import (
    SEED,
    STRICT,
    draw_batch,
    drop_prompts,
    noisy_batch,
    parse_settings,
    train_scheduler,
)
from metaprune.diffusion.text_encoder import EmbeddingTable
from metaprune.errors import ConfigError, PruneError
from metaprune.logs import track

Weight = Annotated[float, Field(ge=0, le=1000)]
LearningRate = Annotated[float, Field(gt=0, le=10)]
Steps = Annotated[int, Field(ge=0, le=1_000_000)]


@dataclass
class APTPConfig:
    """Hyper-parameters of both stages (bounds checked by :meth:`validate`)."""

    __pydantic_config__ = STRICT

    budget: float = 0.6
    min_mac_ratio: Annotated[float, Field(ge=0, le=1)] = 0.0
    num_codes: Annotated[int, Field(ge=1, le=64)] = 4
    ff_groups: Annotated[int, Field(ge=1, le=64)] = 8
    stage1_steps: Steps = 300
    stage2_steps: Steps = 150
    batch_size: Annotated[int, Field(ge=2, le=1024)] = 32
    predictor_lr: LearningRate = 1e-2
    unet_lr: LearningRate = 2e-4
    joint_finetune: bool = False
    budget_weight: Weight = 2.0
    contrastive_weight: Weight = 0.1
    route_weight: Weight = 0.5
    denoise_weight: Weight = 0.5
    guidance_weight: Weight = 4.0  # guided distillation (0: plain distillation with prompt dropout)
    guidance_scale: Annotated[float, Field(ge=1, le=100)] = 2.0
    gumbel_start: Annotated[float, Field(gt=0, le=100)] = 1.0
    gumbel_end: Annotated[float, Field(gt=0, le=100)] = 0.3
    noise_fraction: Annotated[float, Field(ge=0, le=1)] = 0.6
    cfg_drop: Annotated[float, Field(ge=0, lt=1)] = 0.1
    seed: Annotated[int, SEED] = 0
    #: Relative tolerance of the promise checked after the last step (:func:`check_mac_budget`): every
    #: expert's MAC ratio and the routed average must lie within ``budget * (1 ± budget_tolerance)``.
    budget_tolerance: Annotated[float, Field(gt=0, le=1)] = 0.1

    def validate(self) -> None:
        """BudgetError for a budget outside (0, 1]; ConfigError naming the field for any other value no run
        can use (non-finite, out of range, a MAC floor above the budget)."""
        check_budget(self.budget)
        parse_settings(APTPConfig, asdict(self), "bad APTP option")
        if self.min_mac_ratio > self.budget:
            raise ConfigError(f"min_mac_ratio must be in [0, budget={self.budget}], got {self.min_mac_ratio}")


@dataclass
class Stage1Result:
    """The trained predictor, the UNet that experts are sliced from (the teacher itself unless
    ``joint_finetune``) and the per-step history of losses and MAC ratios."""

    predictor: ArchitecturePredictor
    unet: nn.Module
    history: list[dict[str, float]]


def code_gates(predictor: ArchitecturePredictor, layout: GateLayout) -> torch.Tensor:
    """Deterministic hard gates ``K x G`` of every code (logit > 0), no group left empty."""
    with torch.no_grad():
        logits = predictor.code_logits()
    return layout.ensure_nonempty((logits > 0).float(), logits)


def distillation_batch(split: PromptImageSplit, table: EmbeddingTable, config: APTPConfig, scheduler: DDPMScheduler,
                       generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """``(noisy, steps, context, noise, prompts)``: one batch of ``batch_size`` UNet rows.

    With ``guidance_weight > 0`` it holds ``batch_size // 2`` images, each noised once and seen
    with its prompt and with the null prompt (rows ``[conditional; unconditional]``, the layout
    :func:`guided_distillation_loss` expects); otherwise ``batch_size`` images whose prompts are
    dropped with probability ``cfg_drop``. Either way a step costs the same UNet compute.
    """
    paired = config.guidance_weight > 0
    images, context, prompts = draw_batch(split, table, max(config.batch_size // 2, 1) if paired else config.batch_size,
                                          generator)
    noisy, noise, steps = noisy_batch(scheduler, images, generator)
    null = table.null()
    if paired:
        return (torch.cat([noisy, noisy]), torch.cat([steps, steps]), torch.cat([context, null.expand_as(context)]),
                noise, prompts)
    return noisy, steps, drop_prompts(context, null, config.cfg_drop, generator), noise, prompts


def distill(prediction: torch.Tensor, target: torch.Tensor, noise: torch.Tensor, config: APTPConfig) -> torch.Tensor:
    """The distillation loss of a :func:`distillation_batch` (guided when ``guidance_weight > 0``)."""
    if config.guidance_weight > 0:
        return guided_distillation_loss(prediction, target, noise, config.guidance_scale, config.guidance_weight,
                                        config.denoise_weight)
    return distillation_loss(prediction, target, noise, config.denoise_weight)


def _gumbel_temperature(config: APTPConfig, step: int) -> float:
    progress = step / max(config.stage1_steps - 1, 1)
    return config.gumbel_start * (config.gumbel_end / config.gumbel_start) ** progress


def _noise_scale(config: APTPConfig, step: int) -> float:
    """Gumbel noise fades out over the first ``noise_fraction`` of stage 1; the rest trains the
    deterministic gates that the experts will have."""
    return max(0.0, 1.0 - step / max(config.noise_fraction * config.stage1_steps, 1))


def train_stage1(teacher: nn.Module, split: PromptImageSplit, table: EmbeddingTable, config: APTPConfig,
                 progress: bool = True) -> Stage1Result:
    """Train the predictor (and, with ``joint_finetune``, a copy of the UNet) for ``stage1_steps``."""
    config.validate()
    torch.manual_seed(config.seed)
    student = copy.deepcopy(teacher) if config.joint_finetune else teacher
    teacher.eval().requires_grad_(False)
    student.requires_grad_(config.joint_finetune)
    layout = discover_gates(teacher, config.ff_groups)
    macs = MacModel(teacher, layout, table.tokens.shape[1])
    predictor = ArchitecturePredictor(len(layout), config.num_codes, table.pooled.shape[1])
    parameters = [{"params": predictor.parameters(), "lr": config.predictor_lr}]
    if config.joint_finetune:
        parameters.append({"params": student.parameters(), "lr": config.unet_lr})
    optimizer = torch.optim.Adam(parameters)
    decay = torch.optim.lr_scheduler.LambdaLR(  # cosine: late steps settle the deterministic gates
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / max(config.stage1_steps, 1))))
    controller = GateController(student, layout)
    scheduler, history = train_scheduler(), []
    try:
        for step in track(range(config.stage1_steps), "aptp stage 1", enabled=progress):
            generator = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
            noisy, steps, context, noise, prompts = distillation_batch(split, table, config, scheduler, generator)
            pooled = table.lookup(prompts)[1]
            with torch.no_grad():
                target = teacher(noisy, steps, encoder_hidden_states=context).sample
            scores = predictor.scores(pooled)
            plan = sinkhorn(scores.detach())
            logits = predictor.gate_logits(F.one_hot(plan.argmax(-1), predictor.num_codes).to(plan.dtype))
            gates = gumbel_sigmoid(logits, _gumbel_temperature(config, step), generator=generator,
                                   noise_scale=_noise_scale(config, step))
            with controller.gating(gates):
                prediction = student(noisy, steps, encoder_hidden_states=context).sample
            ratio = macs.ratio(gates)
            losses = {
                "distill": distill(prediction, target, noise, config),
                "budget": (budget_loss(ratio, config.budget) + floor_loss(ratio, config.min_mac_ratio)).float(),
                "contrastive": contrastive_loss(pooled, predictor.embed(pooled)),
                "route": -(plan * F.log_softmax(scores, dim=-1)).sum(-1).mean(),
            }
            total = (losses["distill"] + config.budget_weight * losses["budget"]
                     + config.contrastive_weight * losses["contrastive"] + config.route_weight * losses["route"])
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            decay.step()
            history.append({**{key: round(value.item(), 5) for key, value in losses.items()},
                            "mac_ratio": round(ratio.mean().item(), 4)})
    finally:
        controller.remove()
    return Stage1Result(predictor.eval(), student.eval().requires_grad_(False), history)


def finetune_expert(expert: nn.Module, teacher: nn.Module, split: PromptImageSplit, table: EmbeddingTable,
                    steps: int, config: APTPConfig, seed: int, desc: str = "expert", progress: bool = True
                    ) -> list[float]:
    """Distil ``teacher`` into ``expert`` on ``split`` for ``steps`` Adam steps; returns the losses."""
    if len(split) == 0 or steps == 0:
        return []
    teacher.eval().requires_grad_(False)
    expert.train().requires_grad_(True)
    optimizer = torch.optim.Adam(expert.parameters(), lr=config.unet_lr)
    scheduler, losses = train_scheduler(), []
    for step in track(range(steps), desc, enabled=progress):
        generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
        noisy, steps_t, context, noise, _ = distillation_batch(split, table, config, scheduler, generator)
        with torch.no_grad():
            target = teacher(noisy, steps_t, encoder_hidden_states=context).sample
        loss = distill(expert(noisy, steps_t, encoder_hidden_states=context).sample, target, noise, config)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(round(loss.item(), 5))
    expert.eval().requires_grad_(False)
    return losses


@dataclass
class Stage2Result:
    """Experts (one per code), their hard gates ``K x G``, training prompts per code and fine-tune losses."""

    experts: list[nn.Module]
    gates: torch.Tensor
    prompts_per_code: list[list[str]]
    losses: list[list[float]]


def train_stage2(teacher: nn.Module, predictor: ArchitecturePredictor, split: PromptImageSplit,
                 table: EmbeddingTable, config: APTPConfig, progress: bool = True,
                 base: nn.Module | None = None) -> Stage2Result:
    """Route the training prompts, slice an expert per code from ``base`` (stage 1's UNet; the
    teacher by default) and fine-tune each on its prompts by distillation from ``teacher``."""
    layout = discover_gates(teacher, config.ff_groups)
    gates = code_gates(predictor, layout)
    unique = sorted(set(split.prompts))
    codes = predictor.route(table.lookup(unique)[1])
    code_of = dict(zip(unique, codes.tolist()))
    experts, prompts_per_code, losses = [], [], []
    for code in range(predictor.num_codes):
        expert = slice_unet(teacher if base is None else base, layout, gates[code])
        own = [index for index, prompt in enumerate(split.prompts) if code_of[prompt] == code]
        prompts_per_code.append([prompt for prompt in unique if code_of[prompt] == code])
        losses.append(finetune_expert(expert, teacher, split.subset(own), table, config.stage2_steps, config,
                                      seed=config.seed + 17 * (code + 1), desc=f"expert {code}", progress=progress))
        experts.append(expert.eval())
    return Stage2Result(experts, gates, prompts_per_code, losses)


def check_mac_budget(expert_ratios: torch.Tensor, shares: torch.Tensor, budget: float, tolerance: float) -> float:
    """The routed average MAC ratio ``sum(shares * expert_ratios)``, if it and every expert lie within
    ``budget * (1 ± tolerance)``; PruneError naming the misses otherwise.

    ``shares`` is the fraction of prompts (training samples) routed to each expert. An expert no
    training prompt reaches is checked too: unseen prompts may be routed to it.
    """
    low, high = budget * (1 - tolerance), budget * (1 + tolerance)
    average = float((shares.double() * expert_ratios.double()).sum() / shares.double().sum().clamp(min=1e-12))
    misses = [f"expert {code} at {ratio:.3f}" for code, ratio in enumerate(expert_ratios.tolist())
              if not low <= ratio <= high]
    if not low <= average <= high:
        misses.insert(0, f"routed average {average:.3f}")
    if misses:
        raise PruneError(f"the MAC budget {budget:g} (±{tolerance:.0%}: {low:.3f} to {high:.3f}) is missed: "
                         f"{', '.join(misses)}; train stage 1 longer (--stage1-steps), raise --budget-weight, "
                         "or widen --tolerance")
    return average
