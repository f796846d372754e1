"""Knowledge-distillation loss (Hinton et al., 2015)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from metaprune.errors import ConfigError


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    alpha: float = 0.5,
    temperature: float = 4.0,
) -> torch.Tensor:
    r"""Blend of hard-label cross-entropy and softened teacher matching.

    .. math:: L = (1-\alpha)\,\mathrm{CE}(s, y) + \alpha\,T^2\,\mathrm{KL}(\sigma(t/T)\,\|\,\sigma(s/T))

    The :math:`T^2` factor keeps gradient magnitudes comparable across temperatures.
    """
    if not 0.0 <= alpha <= 1.0 or temperature <= 0:
        raise ConfigError(f"need 0 <= alpha <= 1 and temperature > 0, got alpha={alpha}, temperature={temperature}")
    hard = F.cross_entropy(student_logits, targets)
    soft = F.kl_div(
        F.log_softmax(student_logits / temperature, dim=1),
        F.log_softmax(teacher_logits / temperature, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    return (1.0 - alpha) * hard + alpha * temperature**2 * soft
