"""Predictor gates and the APTP losses behave as specified."""

from __future__ import annotations

import pytest
import torch

from metaprune.diffusion.losses import (
    budget_loss,
    contrastive_loss,
    distillation_loss,
    guided_distillation_loss,
    sinkhorn,
)
from metaprune.diffusion.predictor import ArchitecturePredictor, gumbel_sigmoid
from metaprune.errors import BudgetError, ConfigError


def test_gumbel_sigmoid_is_hard_with_straight_through_gradient():
    logits = torch.randn(4, 10, requires_grad=True)
    gates = gumbel_sigmoid(logits, temperature=0.5, generator=torch.Generator().manual_seed(0))
    assert set(gates.detach().unique().tolist()) <= {0.0, 1.0}
    (gates * torch.arange(10.0)).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_gumbel_sigmoid_follows_the_logits():
    draws = gumbel_sigmoid(torch.tensor([-3.0, 3.0]).expand(2000, 2), generator=torch.Generator().manual_seed(0))
    assert draws[:, 0].mean() < 0.1 and draws[:, 1].mean() > 0.9


def test_budget_loss_is_zero_at_target_and_rejects_bad_budgets():
    assert budget_loss(torch.tensor([0.5, 0.7]), 0.6).item() == pytest.approx(0.0, abs=1e-7)
    assert budget_loss(torch.tensor([0.9]), 0.6).item() == pytest.approx(abs(torch.log(torch.tensor(1.5)).item()))
    for bad in (0.0, 1.5, -0.2):
        with pytest.raises(BudgetError):
            budget_loss(torch.tensor([0.5]), bad)


def test_sinkhorn_plan_has_uniform_code_marginals():
    scores = torch.randn(12, 4) * 5
    scores[:, 0] += 10  # every prompt prefers code 0: the plan must still spread them
    plan = sinkhorn(scores, epsilon=0.5, iterations=50)
    assert torch.allclose(plan.sum(1), torch.ones(12), atol=1e-4)
    assert torch.allclose(plan.sum(0), torch.full((4,), 3.0), atol=1e-2)
    assert (plan >= 0).all()


def test_contrastive_loss_prefers_matching_similarities():
    prompts = torch.eye(4).repeat_interleave(2, dim=0)
    assert contrastive_loss(prompts, prompts) < contrastive_loss(prompts, torch.randn(8, 4))


def test_distillation_loss_is_zero_for_a_perfect_student():
    noise = torch.randn(2, 1, 4, 4)
    assert distillation_loss(noise, noise, noise).item() == 0.0


def test_guided_distillation_matches_its_definition():
    generator = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(2, 6, 1, 4, 4, generator=generator)
    noise = torch.randn(3, 1, 4, 4, generator=generator)
    (s_c, s_u), (t_c, t_u) = student.chunk(2), teacher.chunk(2)
    guided = ((s_u + 3 * (s_c - s_u)) - (t_u + 3 * (t_c - t_u))).pow(2).mean()
    expected = (student - teacher).pow(2).mean() + 0.7 * guided + 0.2 * (s_c - noise).pow(2).mean()
    actual = guided_distillation_loss(student, teacher, noise, guidance_scale=3.0, guidance_weight=0.7, denoise_weight=0.2)
    assert actual.item() == pytest.approx(expected.item(), rel=1e-6)
    assert guided_distillation_loss(teacher, teacher, t_c).item() == 0.0


def test_guided_distillation_sees_a_wrong_guidance_direction_that_plain_mse_underweights():
    """Same total error, once along the guidance direction and once shared by both halves:
    the guided term amplifies the first by the guidance scale, plain MSE cannot tell them apart."""
    teacher = torch.zeros(4, 1, 4, 4)
    noise = torch.zeros(2, 1, 4, 4)
    error = torch.full((2, 1, 4, 4), 0.1)
    along_direction = teacher + torch.cat([error, -error])  # c - u off by 0.2, mean prediction right
    shared = teacher + torch.cat([error, error])            # both halves off by 0.1, c - u right
    assert distillation_loss(along_direction, teacher, torch.cat([noise, noise]), 0.0) == pytest.approx(
        distillation_loss(shared, teacher, torch.cat([noise, noise]), 0.0).item())
    kwargs = {"guidance_scale": 2.0, "guidance_weight": 1.0, "denoise_weight": 0.0}
    assert guided_distillation_loss(along_direction, teacher, noise, **kwargs) > 4 * guided_distillation_loss(
        shared, teacher, noise, **kwargs)


def test_guided_distillation_rejects_unpaired_predictions():
    with pytest.raises(ConfigError, match="paired"):
        guided_distillation_loss(torch.zeros(4, 1, 2, 2), torch.zeros(4, 1, 2, 2), torch.zeros(4, 1, 2, 2))


def test_predictor_routes_to_codes_and_decodes_gates():
    predictor = ArchitecturePredictor(num_gates=7, num_codes=3, text_dim=16)
    pooled = torch.randn(5, 16)
    assert predictor.scores(pooled).shape == (5, 3)
    assert predictor.route(pooled).max() < 3
    assert predictor.code_logits().shape == (3, 7)
    assert predictor.gate_logits(torch.softmax(predictor.scores(pooled), -1)).shape == (5, 7)


def test_gumbel_sigmoid_without_noise_is_the_inference_threshold():
    logits = torch.randn(3, 20)
    gates = gumbel_sigmoid(logits, temperature=0.3, noise_scale=0.0)
    assert torch.equal(gates, (logits > 0).float())


def test_floor_loss_only_penalises_prompts_below_the_floor():
    from metaprune.diffusion.losses import floor_loss

    assert floor_loss(torch.tensor([0.5, 0.9]), 0.4).item() == 0.0
    assert floor_loss(torch.tensor([0.2, 0.9]), 0.4).item() == pytest.approx(0.5 * torch.log(torch.tensor(2.0)).item())
    assert floor_loss(torch.tensor([0.01]), 0.0).item() == 0.0
