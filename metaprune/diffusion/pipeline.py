"""``PromptRoutedPipeline``: route each prompt to its pruned expert and sample with it.

``pipe(prompts, num_inference_steps=20, guidance_scale=3.0, seed=0)`` encodes the prompts,
asks the predictor for each prompt's code, runs classifier-free-guided DDIM once per expert
on the prompts routed to it and returns the images in the prompts' order with the expert
index of each. A pipeline saves to a folder of safetensors files and one ``config.json``
(no pickle) and loads back exactly; loading checks ``config.json`` against :class:`PipelineConfig`
and every tensor file against it, so a corrupt or truncated file is one error naming it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import Field
from torch import nn

from metaprune.diffusion.gates import discover_gates
from metaprune.diffusion.predictor import ArchitecturePredictor
from metaprune.diffusion.slicing import slice_unet
from metaprune.diffusion.teacher import Sampling, UNetConfig, generate
from metaprune.diffusion.text_encoder import NULL_PROMPT, EmbeddingTable, PromptEncoder
from metaprune.errors import ConfigError, MetapruneError, WeightsError
from metaprune.rundir import (
    EMBEDDINGS_FILE,
    EXPERT_WEIGHTS_FILE,
    PIPELINE_CONFIG_FILE,
    PIPELINE_FILES,
    PREDICTOR_WEIGHTS_FILE,
    save_safetensors,
    write_json,
)
from metaprune.schemas import StrictModel, parse_file
from metaprune.train.checkpoint import read_tensors, state_dict_mismatch

Finite = Annotated[float, Field(ge=-100, le=100)]


class PredictorSettings(StrictModel):
    """The :class:`ArchitecturePredictor` arguments in ``config.json`` (bounded)."""

    num_gates: Annotated[int, Field(ge=1, le=100_000)]
    num_codes: Annotated[int, Field(ge=1, le=64)]
    text_dim: Annotated[int, Field(ge=1, le=4096)]
    code_dim: Annotated[int, Field(ge=1, le=1024)]
    hidden_dim: Annotated[int, Field(ge=1, le=4096)]
    temperature: Annotated[float, Field(gt=0, le=100)]
    init_logit: Finite


class PipelineConfig(StrictModel):
    """``config.json`` of a prompt-routed pipeline."""

    unet: UNetConfig
    ff_groups: Annotated[int, Field(ge=1, le=64)]
    predictor: PredictorSettings
    gates: Annotated[list[list[Literal[0, 1]]], Field(min_length=1, max_length=64)]
    sampling: Sampling
    prompts: Annotated[list[str], Field(min_length=1, max_length=100_000)]


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    return read_tensors(path)[0]


def _load_into(module: nn.Module, tensors: dict[str, torch.Tensor], path: Path, what: str) -> None:
    """``module.load_state_dict(tensors)``, or WeightsError naming ``path`` and the first mismatch."""
    try:
        module.load_state_dict(tensors)
    except RuntimeError as error:
        raise WeightsError(f"{path} does not fit {what} that config.json describes: "
                           f"{state_dict_mismatch(error)}") from None


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
        steps = self.sampling.num_inference_steps if num_inference_steps is None else num_inference_steps
        scale = self.sampling.guidance_scale if guidance_scale is None else guidance_scale
        sampling = Sampling(steps, scale, self.sampling.train_timesteps).validate()
        if seed is not None and not 0 <= seed < 2**63:
            raise ConfigError(f"seed must be an integer in [0, 2**63), got {seed}")
        if generator is None:
            generator = torch.Generator().manual_seed(0 if seed is None else seed)
        context, pooled = self.encode(prompts)
        codes = self.predictor.route(pooled).tolist()
        null = self.table.null()
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
        """Rebuild a saved pipeline: every expert is re-sliced from its gates, then its weights loaded.

        Raises:
            WeightsError: a missing file, a ``config.json`` that breaks :class:`PipelineConfig` (naming the
                field), or a tensor file that is corrupt or does not fit it (naming the file).
        """
        folder = Path(folder)
        missing = [name for name in PIPELINE_FILES if not (folder / name).is_file()]
        if missing:
            raise WeightsError(f"{folder} is not a prompt-routed pipeline (missing {', '.join(missing)}); "
                               f"make one with `metaprune diffusion prune --out {folder}`")
        config_path = folder / PIPELINE_CONFIG_FILE
        config = parse_file(PipelineConfig, config_path, WeightsError)
        try:
            base = config.unet.build()
            layout = discover_gates(base, config.ff_groups)
            predictor = ArchitecturePredictor(**config.predictor.model_dump())
        except MetapruneError as error:
            raise WeightsError(f"{config_path} describes no buildable pipeline: {error}") from None
        gates = torch.as_tensor(config.gates, dtype=torch.float32)
        if gates.shape != (predictor.num_codes, len(layout)) or predictor.config["num_gates"] != len(layout):
            raise WeightsError(f"{config_path}: field 'gates' must hold {predictor.num_codes} rows of {len(layout)} "
                               f"gates, got {list(gates.shape)}")
        _load_into(predictor, _tensors(folder / PREDICTOR_WEIGHTS_FILE), folder / PREDICTOR_WEIGHTS_FILE,
                   "the predictor")
        weights = _tensors(folder / EXPERT_WEIGHTS_FILE)
        experts = []
        for code in range(len(gates)):
            try:
                expert = slice_unet(base, layout, gates[code])
            except MetapruneError as error:
                raise WeightsError(f"{config_path}: field 'gates.{code}' gives no expert: {error}") from None
            prefix = f"{code}."
            _load_into(expert, {key[len(prefix):]: value for key, value in weights.items() if key.startswith(prefix)},
                       folder / EXPERT_WEIGHTS_FILE, f"expert {code}")
            experts.append(expert)
        table = _embedding_table(folder / EMBEDDINGS_FILE, config, predictor)
        return cls(predictor, experts, gates, table, config.unet, config.sampling, config.ff_groups)


def _embedding_table(path: Path, config: PipelineConfig, predictor: ArchitecturePredictor) -> EmbeddingTable:
    """The embeddings file as a table of ``config.prompts``, its widths checked against the UNet and predictor."""
    embeddings = _tensors(path)
    tokens, pooled = embeddings.get("tokens"), embeddings.get("pooled")
    count = len(config.prompts)
    if NULL_PROMPT not in config.prompts:
        raise WeightsError(f"{path.parent / PIPELINE_CONFIG_FILE}: field 'prompts' lacks the null prompt {NULL_PROMPT!r}")
    if (tokens is None or pooled is None or tokens.dim() != 3 or pooled.dim() != 2 or len(tokens) != count
            or len(pooled) != count or tokens.shape[2] != config.unet.cross_attention_dim
            or pooled.shape[1] != predictor.config["text_dim"]):
        raise WeightsError(f"{path} must hold 'tokens' ({count} x L x {config.unet.cross_attention_dim}) and 'pooled' "
                           f"({count} x {predictor.config['text_dim']}) for the prompts of config.json")
    return EmbeddingTable(config.prompts, tokens.float(), pooled.float())
