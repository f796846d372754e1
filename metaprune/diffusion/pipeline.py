"""``PromptRoutedPipeline``: route each prompt to its pruned expert and sample with it.

``pipe(prompts, num_inference_steps=20, guidance_scale=3.0, seed=0)`` encodes the prompts,
asks the predictor for each prompt's code, runs classifier-free-guided DDIM once per expert
on the prompts routed to it and returns the images in the prompts' order with the expert
index of each. Any text is a prompt: the router reads its MiniLM sentence embedding (prompts
outside the cached table are encoded on first use), so ``"a handwritten seven"`` is routed and
drawn like ``"a digit 7"``; only the digits task's own prompts can be judged by its classifier.

The pipeline saves and loads in diffusers' folder conventions (``save_pretrained`` /
``from_pretrained``; ``save``/``load`` are the same)::

    model_index.json                  _class_name, _diffusers_version and the components below
    scheduler/scheduler_config.json   diffusers' own DDIMScheduler config:
                                      DDIMScheduler.from_pretrained(folder, subfolder="scheduler")
    unet/config.json                  diffusers' UNet2DConditionModel config of the dense shape the
                                      experts are sliced from: UNet2DConditionModel.from_config(...)
    config.json                       ours: gates per expert, predictor shape, sampler, prompt table
    predictor.safetensors             ours: the architecture predictor (float32)
    experts.safetensors               ours: every sliced expert, keys "<code>.<parameter>"
    embeddings.safetensors            ours: MiniLM token states and pooled embeddings of the table

diffusers itself can load the scheduler and the dense UNet's config; the sliced experts have
per-block widths a ``UNet2DConditionModel`` config cannot express, so they load through this
class (re-sliced from ``unet/config.json``'s shape by their gates, then filled with their
weights). No pickle anywhere; loading checks ``config.json`` against :class:`PipelineConfig`
and every tensor file against it, so a corrupt or truncated file is one error naming it.
``save_pretrained(folder, dtype="float16")`` stores the experts and the prompt table in half
precision (the packaged zoo entry); they are computed in float32 after loading.
"""

from __future__ import annotations

import json
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
from metaprune.diffusion.teacher import BETA_SCHEDULE, Sampling, UNetConfig, generate, sampling_scheduler
from metaprune.diffusion.text_encoder import NULL_PROMPT, EmbeddingTable, PromptEncoder
from metaprune.errors import ConfigError, MetapruneError, WeightsError
from metaprune.rundir import (
    EMBEDDINGS_FILE,
    EXPERT_WEIGHTS_FILE,
    PIPELINE_CONFIG_FILE,
    PIPELINE_DIFFUSERS_FILES,
    PIPELINE_FILES,
    PREDICTOR_WEIGHTS_FILE,
    read_json,
    save_safetensors,
    write_json,
)
from metaprune.schemas import StrictModel, parse_file
from metaprune.train.checkpoint import read_tensors, state_dict_mismatch

Finite = Annotated[float, Field(ge=-100, le=100)]
MODEL_INDEX_FILE, SCHEDULER_CONFIG_FILE, UNET_CONFIG_FILE = PIPELINE_DIFFUSERS_FILES
#: Storage precisions of experts and prompt table (``save_pretrained(dtype=...)``); computing is float32.
WEIGHT_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


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
    weights_dtype: Literal["float32", "float16", "bfloat16"] = "float32"


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
        self.scheduler = sampling_scheduler(self.sampling.train_timesteps)
        self.weights_dtype = "float32"
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
            images[rows] = generate(self.experts[code], context[rows], null, sampling, generator, self.scheduler)
        return PipelineOutput((images + 1) / 2, codes)

    def config(self) -> dict[str, Any]:
        """The JSON description of the pipeline (architectures, predictor shape, sampler, prompts)."""
        return {"unet": asdict(self.unet_config), "ff_groups": self.ff_groups, "predictor": self.predictor.config,
                "gates": self.gates.int().tolist(), "sampling": asdict(self.sampling), "prompts": self.table.prompts,
                "weights_dtype": self.weights_dtype}

    def model_index(self) -> dict[str, Any]:
        """``model_index.json``: diffusers' pipeline index (its loaders skip the ``_``-keys and our components)."""
        import diffusers

        from metaprune.version import __version__

        return {"_class_name": type(self).__name__, "_diffusers_version": diffusers.__version__,
                "_metaprune_version": __version__, "_metaprune_config": PIPELINE_CONFIG_FILE,
                "_base_unet_config": UNET_CONFIG_FILE,
                "scheduler": ["diffusers", type(self.scheduler).__name__],
                "predictor": ["metaprune", "ArchitecturePredictor"],
                "experts": ["metaprune", "SlicedUNet2DConditionModel"],
                "text_embeddings": ["metaprune", "EmbeddingTable"]}

    def save_pretrained(self, folder: str | Path, dtype: str = "float32") -> Path:
        """Write the folder described in the module docstring (each file atomically, ``config.json`` last).

        ``dtype`` (``"float32"``, ``"float16"`` or ``"bfloat16"``) is the storage precision of the experts
        and the prompt table; the predictor stays float32, so routing is exactly the trained one.
        """
        if dtype not in WEIGHT_DTYPES:
            raise ConfigError(f"dtype must be one of {list(WEIGHT_DTYPES)}, got {dtype!r}")
        folder, storage = Path(folder), WEIGHT_DTYPES[dtype]

        def stored(tensor: torch.Tensor) -> torch.Tensor:
            return tensor.to(storage) if tensor.is_floating_point() else tensor

        save_safetensors(folder / PREDICTOR_WEIGHTS_FILE, self.predictor.state_dict())
        experts = {f"{code}.{key}": stored(value) for code, expert in enumerate(self.experts)
                   for key, value in expert.state_dict().items()}
        save_safetensors(folder / EXPERT_WEIGHTS_FILE, experts)
        save_safetensors(folder / EMBEDDINGS_FILE, {key: stored(value) for key, value in self.table.state_dict().items()})
        write_json(folder / SCHEDULER_CONFIG_FILE, json.loads(self.scheduler.to_json_string()))
        write_json(folder / UNET_CONFIG_FILE, json.loads(self.unet_config.build().to_json_string()))
        write_json(folder / MODEL_INDEX_FILE, self.model_index())
        write_json(folder / PIPELINE_CONFIG_FILE, {**self.config(), "weights_dtype": dtype}, indent=1)
        return folder

    def save(self, folder: str | Path, dtype: str = "float32") -> Path:
        """Same as :meth:`save_pretrained`."""
        return self.save_pretrained(folder, dtype)

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> PromptRoutedPipeline:
        """Same as :meth:`load` (diffusers' name)."""
        return cls.load(folder)

    @classmethod
    def load(cls, folder: str | Path) -> PromptRoutedPipeline:
        """Rebuild a saved pipeline: every expert is re-sliced from its gates, then its weights loaded
        (as float32, whatever the storage precision). A folder saved before ``model_index.json`` existed
        (config, predictor, experts, embeddings only) loads too.

        Raises:
            WeightsError: a missing file, a ``config.json`` that breaks :class:`PipelineConfig` (naming the
                field), or a tensor file that is corrupt or does not fit it (naming the file).
        """
        folder = Path(folder)
        _check_model_index(folder, cls.__name__)
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
        pipe = cls(predictor, experts, gates, table, config.unet, config.sampling, config.ff_groups)
        pipe.weights_dtype = config.weights_dtype
        pipe.scheduler = _scheduler(folder, config) or pipe.scheduler
        return pipe


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


def _check_model_index(folder: Path, class_name: str) -> None:
    """Refuse a ``model_index.json`` that names another pipeline class (a folder without one is an older save)."""
    path = folder / MODEL_INDEX_FILE
    if not path.is_file():
        return
    index = read_json(path)
    name = index.get("_class_name") if isinstance(index, dict) else None
    if name != class_name:
        raise WeightsError(f"{path} describes a {name!r} pipeline, not a {class_name}; load it with diffusers "
                           "(DiffusionPipeline.from_pretrained) instead")


def _scheduler(folder: Path, config: PipelineConfig) -> Any:
    """The DDIM scheduler saved in ``scheduler/`` (None for an older folder), checked against the training schedule."""
    path = folder / SCHEDULER_CONFIG_FILE
    if not path.is_file():
        return None
    from diffusers import DDIMScheduler

    values = read_json(path)
    if not isinstance(values, dict) or values.get("_class_name") != "DDIMScheduler":
        raise WeightsError(f"{path}: field '_class_name' must be 'DDIMScheduler'")
    scheduler = DDIMScheduler.from_config(values)
    if (scheduler.config.num_train_timesteps != config.sampling.train_timesteps
            or scheduler.config.beta_schedule != BETA_SCHEDULE):
        raise WeightsError(f"{path}: the scheduler must use the {config.sampling.train_timesteps} training time steps "
                           f"and {BETA_SCHEDULE!r} betas the experts were trained with")
    return scheduler
