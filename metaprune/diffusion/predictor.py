"""The architecture predictor: prompt embedding → one of K architecture codes → gate logits.

A router MLP maps the pooled prompt embedding ``p`` to a unit vector ``r(p)``; its scores
against the (unit) codebook ``C`` are ``s_k = r(p)^T C_k / \\tau``. During training a prompt's
architecture embedding is the code that a transport plan ``Q`` (Sinkhorn, uniform code
marginals) assigns it; at inference it is the code with the highest score. A linear decoder turns
``a`` into one logit per gate, and gates are drawn with the Gumbel-sigmoid

.. math:: z = \\sigma\\big((\\ell + \\log u - \\log(1-u)) / t\\big), \\quad u \\sim U(0, 1),

hard-thresholded at 1/2 in the forward pass with the gradient of ``z`` (straight-through).
Training uses the code the transport plan assigns (one-hot), as inference does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from metaprune.errors import ConfigError


def gumbel_sigmoid(logits: torch.Tensor, temperature: float = 1.0, hard: bool = True,
                   generator: torch.Generator | None = None, noise_scale: float = 1.0) -> torch.Tensor:
    """Relaxed Bernoulli gates of ``logits``; ``hard`` gives exact 0/1 values with straight-through gradients.

    ``noise_scale`` multiplies the logistic noise: annealing it to 0 ends training on the
    deterministic gates ``logit > 0`` that inference uses (the temperature only shapes gradients
    of hard gates, never which gates are on).
    """
    if temperature <= 0 or noise_scale < 0:
        raise ConfigError(f"need temperature > 0 and noise_scale >= 0, got {temperature}, {noise_scale}")
    uniform = torch.rand(logits.shape, generator=generator, dtype=logits.dtype).clamp(1e-6, 1 - 1e-6)
    noise = (uniform.log() - (-uniform).log1p()) * noise_scale
    soft = torch.sigmoid((logits + noise) / temperature)
    if not hard:
        return soft
    return (soft > 0.5).to(soft.dtype) + (soft - soft.detach())  # exactly 0 or 1 forward


class ArchitecturePredictor(nn.Module):
    """Router, codebook of ``num_codes`` architecture codes and gate decoder.

    ``init_logit`` starts every gate open with probability ``sigmoid(init_logit)``, i.e. near
    the dense teacher.
    """

    def __init__(self, num_gates: int, num_codes: int = 4, text_dim: int = 384, code_dim: int = 64,
                 hidden_dim: int = 128, temperature: float = 0.1, init_logit: float = 2.0) -> None:
        super().__init__()
        if num_gates < 1 or num_codes < 1 or code_dim < 1:
            raise ConfigError(f"need num_gates, num_codes and code_dim >= 1, got {num_gates}, {num_codes}, {code_dim}")
        self.config = {"num_gates": num_gates, "num_codes": num_codes, "text_dim": text_dim, "code_dim": code_dim,
                       "hidden_dim": hidden_dim, "temperature": temperature, "init_logit": init_logit}
        self.router = nn.Sequential(nn.Linear(text_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, code_dim))
        self.codebook = nn.Parameter(torch.randn(num_codes, code_dim))
        self.decoder = nn.Linear(code_dim, num_gates)
        nn.init.normal_(self.decoder.weight, std=0.1)
        nn.init.constant_(self.decoder.bias, init_logit)
        self.temperature = temperature

    @property
    def num_codes(self) -> int:
        """K, the number of architecture codes (experts)."""
        return self.codebook.shape[0]

    def embed(self, pooled: torch.Tensor) -> torch.Tensor:
        """Unit router embeddings ``B x code_dim`` of pooled prompt embeddings ``B x text_dim``."""
        if pooled.dim() != 2 or pooled.shape[1] != self.config["text_dim"]:
            raise ConfigError(f"pooled prompt embeddings must be (B, {self.config['text_dim']}), got {tuple(pooled.shape)}")
        return F.normalize(self.router(pooled), dim=-1)

    def codes(self) -> torch.Tensor:
        """The unit-norm codebook ``K x code_dim``."""
        return F.normalize(self.codebook, dim=-1)

    def scores(self, pooled: torch.Tensor) -> torch.Tensor:
        """Routing logits ``B x K``."""
        return self.embed(pooled) @ self.codes().T / self.temperature

    def route(self, pooled: torch.Tensor) -> torch.Tensor:
        """The code index of each prompt (``B`` integers)."""
        with torch.no_grad():
            return self.scores(pooled).argmax(-1)

    def gate_logits(self, assignment: torch.Tensor) -> torch.Tensor:
        """Gate logits ``B x G`` of a soft (``B x K`` rows summing to 1) or one-hot code assignment."""
        return self.decoder(assignment @ self.codes())

    def code_logits(self) -> torch.Tensor:
        """Gate logits ``K x G`` of every code."""
        return self.decoder(self.codes())
