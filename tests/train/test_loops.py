"""Training, distillation, evaluation and safetensors checkpoints."""

import pytest
import torch
from torch import nn

from metaprune.data import make_loaders
from metaprune.errors import ConfigError, WeightsError
from metaprune.models import create_model
from metaprune.train import distillation_loss, evaluate, fit, load_state, save_state, seed_everything


def test_training_mlp_on_digits_beats_a_floor_and_is_reproducible(digits8):
    train, val, test = make_loaders(digits8, batch_size=64, seed=0)
    accuracies = []
    for _ in range(2):
        seed_everything(0)
        model = create_model("mlp", num_classes=10, in_channels=1, image_size=8)
        result = fit(model, train, epochs=4, lr=0.05, val_loader=val, progress=False)
        accuracies.append(evaluate(model, test))
    assert accuracies[0] == accuracies[1]
    assert accuracies[0] > 0.93
    assert len(result.val_accuracy) == 4 and result.train_loss[-1] < result.train_loss[0]


def test_distillation_loss_matches_its_definition():
    student, teacher = torch.randn(4, 3), torch.randn(4, 3)
    targets = torch.tensor([0, 1, 2, 0])
    temperature = 2.0
    p_teacher = torch.softmax(teacher / temperature, 1)
    kl = (p_teacher * (p_teacher.log() - torch.log_softmax(student / temperature, 1))).sum(1).mean()
    expected = 0.7 * nn.functional.cross_entropy(student, targets) + 0.3 * temperature**2 * kl
    assert torch.allclose(distillation_loss(student, teacher, targets, alpha=0.3, temperature=temperature), expected)
    with pytest.raises(ConfigError):
        distillation_loss(student, teacher, targets, alpha=1.5)


def test_fit_with_teacher_and_step_hook(digits8):
    train, _, _ = make_loaders(digits8, batch_size=128, seed=0)
    teacher = create_model("mlp", num_classes=10, in_channels=1, image_size=8)
    student = create_model("mlp", num_classes=10, in_channels=1, image_size=8, hidden_sizes=(32,))
    calls = []
    fit(student, train, epochs=1, teacher=teacher, on_step=lambda m, step, total: calls.append((step, total)), progress=False)
    assert calls[-1] == (len(train), len(train))
    with pytest.raises(ConfigError, match="optimizer"):
        fit(student, train, epochs=1, optimizer="lbfgs")


def test_checkpoint_round_trip_and_errors(tmp_path):
    model = create_model("mlp", num_classes=10, in_channels=1, image_size=8)
    path = save_state(tmp_path / "w.safetensors", model, metadata={"epoch": 3})
    other = create_model("mlp", num_classes=10, in_channels=1, image_size=8)
    assert load_state(path, other) == {"epoch": 3}
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))
    with pytest.raises(WeightsError, match="do not fit"):
        load_state(path, create_model("mlp", num_classes=5, in_channels=1, image_size=8))
    path.write_bytes(b"garbage")
    with pytest.raises(WeightsError, match="corrupt"):
        load_state(path, other)
