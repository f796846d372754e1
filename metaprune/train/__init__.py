"""Training, fine-tuning, knowledge distillation and evaluation loops."""

from metaprune.train.batchnorm import recalibrate_batchnorm
from metaprune.train.checkpoint import load_state, save_state
from metaprune.train.distill import distillation_loss
from metaprune.train.loops import FitResult, evaluate, fit, seed_everything

__all__ = ["FitResult", "distillation_loss", "evaluate", "fit", "load_state", "recalibrate_batchnorm", "save_state", "seed_everything"]
