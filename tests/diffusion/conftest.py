"""Fixtures of the diffusion tests: a tiny seeded UNet with random norms and a fake embedding table."""

from __future__ import annotations

import pytest
import torch
from diffusion_helpers import CONTEXT_LENGTH, build_tiny_unet

from metaprune.diffusion.gates import discover_gates
from metaprune.diffusion.task import all_prompts
from metaprune.diffusion.text_encoder import NULL_PROMPT, EmbeddingTable

torch.set_num_threads(1)


@pytest.fixture
def tiny_unet() -> torch.nn.Module:
    return build_tiny_unet()


@pytest.fixture
def tiny_layout(tiny_unet):
    return discover_gates(tiny_unet, ff_groups=4)


@pytest.fixture(scope="session")
def fake_table() -> EmbeddingTable:
    """Random but fixed embeddings of every task prompt (context 5 x 24, pooled 16), no MiniLM."""
    generator = torch.Generator().manual_seed(0)
    prompts = [NULL_PROMPT, *all_prompts()]
    tokens = torch.randn(len(prompts), CONTEXT_LENGTH, 24, generator=generator)
    pooled = torch.nn.functional.normalize(torch.randn(len(prompts), 16, generator=generator), dim=-1)
    return EmbeddingTable(prompts, tokens, pooled)


@pytest.fixture(scope="session")
def small_split():
    """The first 96 training samples of the digits task (all three difficulties)."""
    from metaprune.diffusion.task import load_digits_prompt_task

    return load_digits_prompt_task(seed=0).train.subset(list(range(96)))
