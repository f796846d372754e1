"""The dense teacher: a tiny stock ``diffusers.UNet2DConditionModel`` trained on the digits task.

Training is the usual noise prediction (``DDPMScheduler`` with cosine betas, epsilon target,
an exponential moving average of the weights, kept by ``diffusers.training_utils.EMAModel``,
as the model to use); the prompt is
replaced by the null context with probability ``cfg_drop`` so that sampling can use
classifier-free guidance,

.. math:: \\hat\\epsilon = \\epsilon(x_t, \\varnothing) + w\\,(\\epsilon(x_t, c) - \\epsilon(x_t, \\varnothing)),

with a ``DDIMScheduler`` over ``num_inference_steps`` steps. Every batch, noise and time step
is drawn from a generator seeded by ``(seed, step)``, so an interrupted run resumed from its
checkpoint continues exactly as if never stopped.

A teacher run directory holds ``unet.json`` (shape, settings, step, losses), ``unet.safetensors``
(the EMA weights: the model to use), and, only to resume, ``unet.train.safetensors`` (the raw
weights) and ``unet.optimizer.safetensors`` (AdamW's moments), all safetensors (no pickle).
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Annotated, Any, TypeVar

import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from diffusers.training_utils import EMAModel
from pydantic import ConfigDict, Field, TypeAdapter, ValidationError

from metaprune.diffusion.task import PromptImageSplit
from metaprune.diffusion.text_encoder import EMBEDDING_DIM, EmbeddingTable
from metaprune.errors import ConfigError, MetapruneError, WeightsError
from metaprune.logs import progress_bar
from metaprune.rundir import (
    TEACHER_CONFIG_FILE,
    TEACHER_OPTIMIZER_FILE,
    TEACHER_TRAINING_WEIGHTS_FILE,
    TEACHER_WEIGHTS_FILE,
    save_safetensors,
    write_json,
)
from metaprune.schemas import StrictModel, describe_error, parse_file
from metaprune.train.checkpoint import load_state, read_tensors

BETA_SCHEDULE = "squaredcos_cap_v2"
#: Bounds of the settings (pydantic ``Field``\ s): finite numbers in the range a run can use.
SEED = Field(ge=0, le=2**32 - 1)
STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)
Settings = TypeVar("Settings")


@cache
def _adapter(cls: type) -> TypeAdapter:
    return TypeAdapter(cls)


def parse_settings(cls: type[Settings], values: Any, source: str, error: type[MetapruneError] = ConfigError
                   ) -> Settings:
    """``values`` (a dict) as a ``cls`` dataclass, checked against its field bounds; ``error`` naming
    ``source`` and the first bad field otherwise."""
    try:
        return _adapter(cls).validate_python(values)
    except ValidationError as problem:
        raise error(f"{source}: {describe_error(problem)}") from None


@dataclass
class UNetConfig:
    """Shape of the tiny UNet (plain values, stored in ``config.json``; bounded, so a file cannot ask for any size).

    As in diffusers, ``attention_head_dim`` is passed on as the number of heads per attention
    (8 heads of 4 channels at 32 channels, of 8 at 64).
    """

    __pydantic_config__ = STRICT

    sample_size: Annotated[int, Field(ge=4, le=128)] = 16
    block_out_channels: Annotated[tuple[Annotated[int, Field(ge=1, le=1024)], ...], Field(min_length=1, max_length=4)
                                  ] = (32, 64)
    layers_per_block: Annotated[int, Field(ge=1, le=4)] = 1
    attention_head_dim: Annotated[int, Field(ge=1, le=64)] = 8
    norm_num_groups: Annotated[int, Field(ge=1, le=64)] = 8
    cross_attention_dim: Annotated[int, Field(ge=1, le=4096)] = EMBEDDING_DIM

    def build(self) -> UNet2DConditionModel:
        """A freshly initialised UNet (use ``torch.manual_seed`` first for reproducible weights)."""
        if any(channels % self.norm_num_groups or channels % self.attention_head_dim
               for channels in self.block_out_channels):
            raise ConfigError(f"block_out_channels {self.block_out_channels} must be multiples of "
                              f"norm_num_groups={self.norm_num_groups} and attention_head_dim={self.attention_head_dim}")
        depth = len(self.block_out_channels)
        if self.sample_size % 2 ** (depth - 1):
            raise ConfigError(f"sample_size {self.sample_size} must be a multiple of {2 ** (depth - 1)} "
                              f"for {depth} resolutions")
        return UNet2DConditionModel(
            sample_size=self.sample_size, in_channels=1, out_channels=1,
            block_out_channels=tuple(self.block_out_channels), layers_per_block=self.layers_per_block,
            down_block_types=("CrossAttnDownBlock2D",) + ("DownBlock2D",) * (depth - 1),
            up_block_types=("UpBlock2D",) * (depth - 1) + ("CrossAttnUpBlock2D",),
            cross_attention_dim=self.cross_attention_dim, attention_head_dim=self.attention_head_dim,
            norm_num_groups=self.norm_num_groups,
        )

    @classmethod
    def from_dict(cls, values: Any, source: str = "UNet settings") -> UNetConfig:
        """Inverse of ``asdict`` (lists become tuples); WeightsError naming ``source`` and the field."""
        return parse_settings(cls, values, source, WeightsError)


@dataclass
class TrainConfig:
    """Hyper-parameters of a diffusion training or fine-tuning run (bounds checked by :meth:`validate`)."""

    __pydantic_config__ = STRICT

    steps: Annotated[int, Field(ge=0, le=1_000_000)] = 1500
    batch_size: Annotated[int, Field(ge=1, le=1024)] = 32
    lr: Annotated[float, Field(gt=0, le=10)] = 1e-3
    cfg_drop: Annotated[float, Field(ge=0, lt=1)] = 0.1
    seed: Annotated[int, SEED] = 0
    #: Seed of the digits task split the teacher is trained on; students and benchmarks must reuse
    #: that split (:func:`teacher_data_seed`), or the teacher has seen their test images.
    data_seed: Annotated[int, SEED] = 0
    checkpoint_every: Annotated[int, Field(ge=1, le=1_000_000)] = 250
    train_timesteps: Annotated[int, Field(ge=1, le=10_000)] = 1000
    ema_decay: Annotated[float, Field(ge=0, lt=1)] = 0.995

    def validate(self) -> None:
        """Raise ConfigError (naming the field) for values no run can use: non-finite or out of range."""
        parse_settings(TrainConfig, asdict(self), "bad training option")


@dataclass
class Sampling:
    """Sampler settings shared by the teacher, the experts and the pipeline (see :meth:`validate`)."""

    __pydantic_config__ = STRICT

    num_inference_steps: Annotated[int, Field(ge=1, le=1000)] = 20
    guidance_scale: Annotated[float, Field(ge=0, le=100)] = 2.0
    train_timesteps: Annotated[int, Field(ge=1, le=10_000)] = 1000

    def validate(self) -> Sampling:
        """``self`` if the steps are in ``[1, min(1000, train_timesteps)]`` and the guidance scale is a finite
        number in ``[0, 100]``; ConfigError naming the field otherwise."""
        parse_settings(Sampling, asdict(self), "bad sampling option")
        if self.num_inference_steps > self.train_timesteps:
            raise ConfigError(f"bad sampling option: {self.num_inference_steps} steps exceed the "
                              f"{self.train_timesteps} training time steps")
        return self


def train_scheduler(train_timesteps: int = 1000) -> DDPMScheduler:
    """The training noise schedule: cosine betas (better than linear ones at 16 x 16), epsilon prediction."""
    return DDPMScheduler(num_train_timesteps=train_timesteps, beta_schedule=BETA_SCHEDULE)


def noisy_batch(scheduler: DDPMScheduler, images: torch.Tensor, generator: torch.Generator
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x_t, epsilon, t)`` for clean ``images`` with random time steps."""
    noise = torch.randn(images.shape, generator=generator)
    steps = torch.randint(0, scheduler.config.num_train_timesteps, (len(images),), generator=generator)
    return scheduler.add_noise(images, noise, steps), noise, steps


def drop_prompts(context: torch.Tensor, null_context: torch.Tensor, probability: float,
                 generator: torch.Generator) -> torch.Tensor:
    """Replace each row of ``context`` by the null context with ``probability`` (classifier-free guidance)."""
    drop = torch.rand(len(context), generator=generator) < probability
    return torch.where(drop[:, None, None], null_context.expand_as(context), context)


def draw_batch(split: PromptImageSplit, table: EmbeddingTable, batch_size: int, generator: torch.Generator
               ) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Random ``(images, token context, prompts)`` from ``split``."""
    rows = torch.randint(0, len(split), (batch_size,), generator=generator)
    prompts = [split.prompts[int(row)] for row in rows]
    return split.images[rows], table.lookup(prompts)[0], prompts


def sampling_scheduler(train_timesteps: int = 1000) -> DDIMScheduler:
    """The sampler of every model here: DDIM over the training schedule's cosine betas."""
    return DDIMScheduler(num_train_timesteps=train_timesteps, beta_schedule=BETA_SCHEDULE)


@torch.no_grad()
def generate(unet: torch.nn.Module, context: torch.Tensor, null_context: torch.Tensor, sampling: Sampling,
             generator: torch.Generator, scheduler: DDIMScheduler | None = None) -> torch.Tensor:
    """DDIM sampling with classifier-free guidance; returns ``B x 1 x H x W`` images in ``[-1, 1]``.

    ``scheduler`` (e.g. one loaded from a pipeline folder) is copied, never changed; default
    :func:`sampling_scheduler`.
    """
    scheduler = (DDIMScheduler.from_config(scheduler.config) if scheduler is not None
                 else sampling_scheduler(sampling.train_timesteps))
    scheduler.set_timesteps(sampling.num_inference_steps)
    size = unet.config.sample_size
    latents = torch.randn((len(context), 1, size, size), generator=generator)
    guided = sampling.guidance_scale != 1.0
    both = torch.cat([null_context.expand_as(context), context]) if guided else context
    for step in scheduler.timesteps:
        model_input = torch.cat([latents, latents]) if guided else latents
        noise = unet(model_input, step, encoder_hidden_states=both, return_dict=False)[0]
        if guided:
            unconditional, conditional = noise.chunk(2)
            noise = unconditional + sampling.guidance_scale * (conditional - unconditional)
        latents = scheduler.step(noise, step, latents).prev_sample
    return latents.clamp(-1, 1)


def save_checkpoint(folder: Path, unet: torch.nn.Module, meta: dict[str, Any], training: torch.nn.Module | None = None,
                    optimizer: torch.optim.Optimizer | None = None) -> None:
    """``unet.safetensors`` (the model to use: EMA weights), ``unet.json`` and, for resuming, the raw
    training weights and optimizer moments; no pickle, files replaced atomically."""
    save_safetensors(folder / TEACHER_WEIGHTS_FILE, unet.state_dict())
    if training is not None:
        save_safetensors(folder / TEACHER_TRAINING_WEIGHTS_FILE, training.state_dict())
    if optimizer is not None:
        save_safetensors(folder / TEACHER_OPTIMIZER_FILE, _optimizer_tensors(optimizer))
    write_json(folder / TEACHER_CONFIG_FILE, meta)


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    tensors = {}
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            tensors[f"{index}.{key}"] = torch.as_tensor(value).contiguous()
    return tensors


def load_optimizer(optimizer: torch.optim.Optimizer, path: Path) -> None:
    """Restore the moments written by :func:`save_checkpoint` into ``optimizer``.

    Raises:
        WeightsError: the file is corrupt or its entries do not fit ``optimizer``'s parameters.
    """
    parameters = [parameter for group in optimizer.param_groups for parameter in group["params"]]
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in read_tensors(path)[0].items():
        index, _, name = key.partition(".")
        if not (index.isdigit() and int(index) < len(parameters) and name) or (
                value.dim() and value.shape != parameters[int(index)].shape):
            raise WeightsError(f"{path}: optimizer entry {key!r} does not fit the UNet; delete the file to "
                               "resume with fresh optimizer moments")
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})


class TeacherRecord(StrictModel):
    """``unet.json`` of a teacher run: the UNet's shape, the training settings, the step reached, the losses."""

    unet: UNetConfig
    train: dict[str, Any] = {}
    step: Annotated[int, Field(ge=0)] = 0
    losses: list[float] = []


def load_unet(folder: str | Path, weights_name: str = "unet") -> tuple[UNet2DConditionModel, dict[str, Any]]:
    """The UNet (EMA weights; ``weights_name="unet.train"`` for the raw ones) and metadata of a teacher run."""
    folder = Path(folder)
    meta_path, weights = folder / TEACHER_CONFIG_FILE, folder / f"{weights_name}.safetensors"
    if not meta_path.is_file() or not weights.is_file():
        raise WeightsError(f"{folder} is not a teacher run directory (needs unet.json and {weights.name}); "
                           f"train one with `metaprune diffusion teacher --out {folder}`")
    record = parse_file(TeacherRecord, meta_path, WeightsError)
    unet = record.unet.build()
    load_state(weights, unet)
    return unet.eval(), {**record.model_dump(), "unet": asdict(record.unet)}


def teacher_data_seed(meta: dict[str, Any]) -> int:
    """The task-split seed of a teacher run (its ``unet.json``); runs made before it was recorded used ``seed``."""
    train = meta.get("train", {})
    seed = train.get("data_seed", train.get("seed", 0))
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise WeightsError(f"the teacher's {TEACHER_CONFIG_FILE}: field 'train.data_seed' must be an integer in "
                           f"[0, 2**32), got {seed!r}")
    return seed


def train_teacher(split: PromptImageSplit, table: EmbeddingTable, out: str | Path, unet_config: UNetConfig,
                  train: TrainConfig, progress: bool = True) -> UNet2DConditionModel:
    """Train (or resume) the teacher in ``out``; returns the EMA UNet that ``unet.safetensors`` holds."""
    train.validate()
    folder = Path(out)
    torch.manual_seed(train.seed)
    unet = unet_config.build()
    start, losses = 0, []
    if (folder / TEACHER_CONFIG_FILE).is_file() and (folder / TEACHER_TRAINING_WEIGHTS_FILE).is_file():
        unet, meta = load_unet(folder, "unet.train")
        start, losses = int(meta["step"]), list(meta.get("losses", []))
    ema = load_unet(folder)[0] if start else copy.deepcopy(unet)
    ema.requires_grad_(False)
    # diffusers' EMA: decay min(ema_decay, (1 + n) / (10 + n)) after n updates; resumes from the saved average
    averager = EMAModel(ema.parameters(), decay=train.ema_decay, foreach=True)
    averager.optimization_step = start
    optimizer = torch.optim.AdamW(unet.parameters(), lr=train.lr, weight_decay=0.0)
    if start and (folder / TEACHER_OPTIMIZER_FILE).is_file():
        load_optimizer(optimizer, folder / TEACHER_OPTIMIZER_FILE)
    scheduler = train_scheduler(train.train_timesteps)
    null = table.null()
    meta = {"unet": asdict(unet_config), "train": asdict(train), "step": start, "losses": losses}
    unet.train()
    with progress_bar("teacher", train.steps, completed=start, enabled=progress) as bar:
        for step in range(start, train.steps):
            loss = _teacher_step(unet, optimizer, scheduler, split, table, null, train, step)
            averager.step(unet.parameters())
            bar.advance(status=f"loss {loss:.4f}")
            losses.append(round(loss, 5))
            if (step + 1) % train.checkpoint_every == 0 or step + 1 == train.steps:
                meta["step"] = step + 1
                averager.copy_to(ema.parameters())
                save_checkpoint(folder, ema, meta, unet, optimizer)
    averager.copy_to(ema.parameters())
    if not (folder / TEACHER_CONFIG_FILE).is_file():
        save_checkpoint(folder, ema, meta, unet, optimizer)
    return ema.eval()


def _teacher_step(unet: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: DDPMScheduler,
                  split: PromptImageSplit, table: EmbeddingTable, null: torch.Tensor, train: TrainConfig,
                  step: int) -> float:
    """One noise-prediction step of the teacher (batch, noise and time steps seeded by ``(seed, step)``)."""
    generator = torch.Generator().manual_seed(train.seed * 1_000_003 + step)
    for group in optimizer.param_groups:  # cosine decay keeps late samples sharp
        group["lr"] = train.lr * 0.5 * (1 + math.cos(math.pi * step / max(train.steps, 1)))
    images, context, _ = draw_batch(split, table, train.batch_size, generator)
    noisy, noise, steps = noisy_batch(scheduler, images, generator)
    context = drop_prompts(context, null, train.cfg_drop, generator)
    loss = torch.nn.functional.mse_loss(unet(noisy, steps, encoder_hidden_states=context).sample, noise)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()
