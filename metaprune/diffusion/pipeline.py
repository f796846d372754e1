"""``PromptRoutedPipeline``: route each prompt to its pruned expert and sample with it.

``pipe(prompts, num_inference_steps=20, guidance_scale=3.0, seed=0)`` encodes the prompts,
asks the predictor for each prompt's code, runs classifier-free-guided DDIM once per expert
on the prompts routed to it and returns the images in the prompts' order with the expert
index of each. A pipeline saves to a folder of safetensors files and one ``config.json``
(no pickle) and loads back exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from metaprune.diffusion.gates import discover_gates
from metaprune.diffusion.predictor import ArchitecturePredictor
from metaprune.diffusion.slicing import slice_unet
from metaprune.diffusion.teacher import Sampling, UNetConfig, generate
from metaprune.diffusion.text_encoder import EmbeddingTable, PromptEncoder
from metaprune.errors import ConfigError, WeightsError
from metaprune.rundir import (
    EMBEDDINGS_FILE,
    EXPERT_WEIGHTS_FILE,
    PIPELINE_CONFIG_FILE,
    PIPELINE_FILES,
    PREDICTOR_WEIGHTS_FILE,
    read_json,
    save_safetensors,
    write_json,
)


@dataclass
class PipelineOutput:
    """Images ``B x 1 x H x W`` in ``[0, 1]`` and the expert that drew each."""

    images: torch.Tensor
    experts: list[int]


class PromptRoutedPipeline:
    """Predictor + one sliced UNet per architecture code + cached prompt embeddings."""

    def __init__(self, predictor: ArchitecturePredictor, experts: Sequence[nn.Module], gates: torch.Tensor,
                 table: EmbeddingTable, unet_config: UNetConfig, sampling: Sampling | None = None,
                 ff_groups: int = 8) -> None:
        if len(experts) != predictor.num_codes or len(gates) != predictor.num_codes:
            raise ConfigError(f"{predictor.num_codes} codes need as many experts and gate rows, got "
                              f"{len(experts)} and {len(gates)}")
        self.predictor = predictor.eval()
        self.experts = [expert.eval() for expert in experts]
        self.gates = gates
        self.table = table
        self.unet_config = unet_config
        self.sampling = sampling or Sampling()
        self.ff_groups = ff_groups
        self._encoder: PromptEncoder | None = None

    def encode(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token context and pooled embedding of ``prompts`` (MiniLM runs only for unseen prompts)."""
        if all(prompt in self.table.index for prompt in prompts):
            return self.table.lookup(prompts)
        if self._encoder is None:
            self._encoder = PromptEncoder(max_length=self.table.tokens.shape[1])
        return self._encoder.encode(prompts)

    def route(self, prompts: Sequence[str]) -> list[int]:
        """The expert index of each prompt."""
        return self.predictor.route(self.encode(prompts)[1]).tolist()

    @torch.no_grad()
    def __call__(self, prompts: str | Sequence[str], num_inference_steps: int | None = None,
                 guidance_scale: float | None = None, generator: torch.Generator | None = None,
                 seed: int | None = None) -> PipelineOutput:
        """Sample one image per prompt; ``seed`` (or ``generator``) makes the result reproducible."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts:
            raise ConfigError("give at least one prompt")
        steps = num_inference_steps or self.sampling.num_inference_steps
        scale = self.sampling.guidance_scale if guidance_scale is None else guidance_scale
        if steps < 1 or scale < 0:
            raise ConfigError(f"need num_inference_steps >= 1 and guidance_scale >= 0, got {steps}, {scale}")
        if generator is None:
            generator = torch.Generator().manual_seed(0 if seed is None else seed)
        context, pooled = self.encode(prompts)
        codes = self.predictor.route(pooled).tolist()
        null = self.table.null()
        sampling = Sampling(steps, scale, self.sampling.train_timesteps)
        images = torch.empty(len(prompts), 1, self.unet_config.sample_size, self.unet_config.sample_size)
        for code in sorted(set(codes)):
            rows = [index for index, chosen in enumerate(codes) if chosen == code]
            images[rows] = generate(self.experts[code], context[rows], null, sampling, generator)
        return PipelineOutput((images + 1) / 2, codes)

    def config(self) -> dict[str, Any]:
        """The JSON description of the pipeline (architectures, predictor shape, sampler, prompts)."""
        return {"unet": asdict(self.unet_config), "ff_groups": self.ff_groups, "predictor": self.predictor.config,
                "gates": self.gates.int().tolist(), "sampling": asdict(self.sampling), "prompts": self.table.prompts}

    def save(self, folder: str | Path) -> Path:
        """Write ``config.json``, ``predictor.safetensors``, ``experts.safetensors``, ``embeddings.safetensors``
        (each atomically, the config last)."""
        folder = Path(folder)
        save_safetensors(folder / PREDICTOR_WEIGHTS_FILE, self.predictor.state_dict())
        experts = {f"{code}.{key}": value for code, expert in enumerate(self.experts)
                   for key, value in expert.state_dict().items()}
        save_safetensors(folder / EXPERT_WEIGHTS_FILE, experts)
        save_safetensors(folder / EMBEDDINGS_FILE, self.table.state_dict())
        write_json(folder / PIPELINE_CONFIG_FILE, self.config(), indent=1)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> PromptRoutedPipeline:
        """Rebuild a saved pipeline: every expert is re-sliced from its gates, then its weights loaded."""
        folder = Path(folder)
        missing = [name for name in PIPELINE_FILES if not (folder / name).is_file()]
        if missing:
            raise WeightsError(f"{folder} is not a prompt-routed pipeline (missing {', '.join(missing)}); "
                               f"make one with `metaprune diffusion prune --out {folder}`")
        config = read_json(folder / PIPELINE_CONFIG_FILE, error=WeightsError)
        unet_config = UNetConfig.from_dict(config["unet"])
        base = unet_config.build()
        layout = discover_gates(base, config["ff_groups"])
        gates = torch.as_tensor(config["gates"], dtype=torch.float32)
        predictor = ArchitecturePredictor(**config["predictor"])
        predictor.load_state_dict(load_file(str(folder / PREDICTOR_WEIGHTS_FILE)))
        weights = load_file(str(folder / EXPERT_WEIGHTS_FILE))
        experts = []
        for code in range(len(gates)):
            expert = slice_unet(base, layout, gates[code])
            prefix = f"{code}."
            expert.load_state_dict({key[len(prefix):]: value for key, value in weights.items() if key.startswith(prefix)})
            experts.append(expert)
        embeddings = load_file(str(folder / EMBEDDINGS_FILE))
        table = EmbeddingTable(config["prompts"], embeddings["tokens"], embeddings["pooled"])
        sampling = Sampling(**config["sampling"])
        return cls(predictor, experts, gates, table, unet_config, sampling, config["ff_groups"])
