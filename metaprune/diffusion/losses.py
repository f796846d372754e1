"""The training objectives of prompt-routed pruning.

* budget: :math:`|\\log(\\overline{M(g)/M_{dense}} / r)|`, zero exactly at the target ratio ``r``;
* contrastive: prompts that are similar should get similar architectures. With ``P`` the cosine
  similarities of prompt embeddings and ``A`` those of architecture embeddings, each row of
  ``softmax(A / t_a)`` is fitted to the row of ``softmax(P / t_p)`` by cross-entropy;
* Sinkhorn: an entropic optimal-transport plan between a batch of prompts and K codes with
  uniform marginals, so every code receives ``B / K`` prompts and the codebook cannot collapse;
* distillation: noise-prediction MSE to the teacher plus the plain denoising MSE; the guided
  variant also distils what the classifier-free-guidance sampler uses, ``u + w (c - u)``, from
  paired conditional/unconditional predictions of the same noisy input. The guidance direction
  ``c - u`` is about 10x smaller than the prediction itself, so plain MSE barely sees it, yet it
  carries the prompt: pruned experts distilled without it keep the image statistics and lose
  the digit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from metaprune.errors import BudgetError, ConfigError


def check_budget(target: float) -> float:
    """``target`` if it is a MAC ratio in ``(0, 1]``, else BudgetError."""
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 < target <= 1:
        raise BudgetError(f"budget must be a MAC ratio in (0, 1], got {target!r}")
    return float(target)


def budget_loss(mac_ratio: torch.Tensor, target: float) -> torch.Tensor:
    """``|log(mean(mac_ratio) / target)|`` for per-sample MAC ratios."""
    target = check_budget(target)
    return (mac_ratio.mean().log() - torch.log(torch.tensor(target, dtype=mac_ratio.dtype))).abs()


def floor_loss(mac_ratio: torch.Tensor, minimum: float) -> torch.Tensor:
    """``mean(relu(log(minimum) - log(mac_ratio)))``: penalises only prompts whose expert falls below ``minimum``.

    The budget loss constrains the mean alone; a floor keeps a cheap-to-distil prompt class from
    being given an expert too small to fine-tune back (``minimum = 0`` disables it).
    """
    if minimum <= 0:
        return torch.zeros((), dtype=mac_ratio.dtype)
    return torch.relu(torch.log(torch.tensor(minimum, dtype=mac_ratio.dtype)) - mac_ratio.log()).mean()


def contrastive_loss(prompt_embeddings: torch.Tensor, architecture_embeddings: torch.Tensor,
                     prompt_temperature: float = 0.05, architecture_temperature: float = 0.1) -> torch.Tensor:
    """Cross-entropy between prompt-similarity and architecture-similarity row distributions."""
    if len(prompt_embeddings) != len(architecture_embeddings):
        raise ConfigError(f"{len(prompt_embeddings)} prompt but {len(architecture_embeddings)} architecture embeddings")
    prompts = F.normalize(prompt_embeddings, dim=-1)
    architectures = F.normalize(architecture_embeddings, dim=-1)
    target = torch.softmax(prompts @ prompts.T / prompt_temperature, dim=-1)
    log_predicted = torch.log_softmax(architectures @ architectures.T / architecture_temperature, dim=-1)
    return -(target * log_predicted).sum(-1).mean()


@torch.no_grad()
def sinkhorn(scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 5) -> torch.Tensor:
    """Transport plan ``B x K`` of ``scores`` with every row summing to 1 and every column to ``B / K``.

    Runs Sinkhorn-Knopp on ``exp(scores / epsilon)`` in log space (stable for sharp scores).
    """
    if scores.dim() != 2 or epsilon <= 0 or iterations < 1:
        raise ConfigError(f"need B x K scores, epsilon > 0 and iterations >= 1; got {tuple(scores.shape)}, "
                          f"{epsilon}, {iterations}")
    batch, codes = scores.shape
    log_plan = scores / epsilon
    for _ in range(iterations):
        log_plan = log_plan - log_plan.logsumexp(dim=0, keepdim=True) - torch.log(torch.tensor(float(codes)))
        log_plan = log_plan - log_plan.logsumexp(dim=1, keepdim=True) - torch.log(torch.tensor(float(batch)))
    return log_plan.exp() * batch


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, noise: torch.Tensor,
                      denoise_weight: float = 0.5) -> torch.Tensor:
    """``MSE(student, teacher) + denoise_weight * MSE(student, noise)`` of noise predictions."""
    return F.mse_loss(student, teacher) + denoise_weight * F.mse_loss(student, noise)


def guided_distillation_loss(student: torch.Tensor, teacher: torch.Tensor, noise: torch.Tensor,
                             guidance_scale: float = 2.0, guidance_weight: float = 1.0,
                             denoise_weight: float = 0.5) -> torch.Tensor:
    """Distillation of paired predictions ``[conditional; unconditional]`` (``2B`` rows, one noisy input each).

    ``MSE(student, teacher) + guidance_weight * MSE(guided(student), guided(teacher))
    + denoise_weight * MSE(conditional student, noise)`` with ``guided(p) = u + w (c - u)``;
    ``noise`` holds the ``B`` true noises.
    """
    if student.shape != teacher.shape or len(student) != 2 * len(noise):
        raise ConfigError(f"need 2B paired predictions for B noises; got {tuple(student.shape)}, "
                          f"{tuple(teacher.shape)} and {tuple(noise.shape)}")
    student_cond, student_uncond = student.chunk(2)
    teacher_cond, teacher_uncond = teacher.chunk(2)
    guided_student = student_uncond + guidance_scale * (student_cond - student_uncond)
    guided_teacher = teacher_uncond + guidance_scale * (teacher_cond - teacher_uncond)
    return (F.mse_loss(student, teacher) + guidance_weight * F.mse_loss(guided_student, guided_teacher)
            + denoise_weight * F.mse_loss(student_cond, noise))
