"""Embedding distillation after structured pruning: the pruned encoder learns to reproduce the dense
model's sentence embeddings.

The student (the pruned encoder) and the teacher (the dense one) embed the same sentences; the
loss is the cosine distance between their normalised, mean-pooled embeddings,

    L = mean_s ( 1 - cos(e_student(s), e_teacher(s)) ),

so no labels are needed. The teacher's embeddings are computed once, before training. Batches
hold sentences of similar length (sorted, then the batches shuffled) and are padded to their
longest sentence only, which keeps one epoch over the ~10k STS-B train sentences affordable on
one CPU thread. After every epoch a ``select`` callback (dev Spearman) scores the student; the
best state, including the one before training, is kept.
"""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from metaprune.errors import ConfigError
from metaprune.models.minilm import SentenceEncoder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistillOptions:
    """How to distil.

    Attributes:
        epochs: passes over the sentences (0 = no distillation).
        lr: peak AdamW learning rate (linear warm-up over the first 10 % of steps, then linear decay).
        batch_size: sentences per step.
        max_sentences: at most this many sentences (a seeded sample); None = all.
        max_length: tokens per sentence during training (STS-B sentences are far shorter).
        weight_decay: AdamW weight decay.
        seed: shuffling and sampling seed.
    """

    epochs: int = 1
    lr: float = 1e-4
    batch_size: int = 32
    max_sentences: int | None = None
    max_length: int = 64
    weight_decay: float = 0.01
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 0:
            raise ConfigError(f"--distill-epochs must be >= 0, got {self.epochs}")
        if not self.lr > 0 or self.batch_size < 1 or self.max_length < 2:
            raise ConfigError(f"distillation needs lr > 0, batch size >= 1 and max length >= 2; got {self.lr}, "
                              f"{self.batch_size}, {self.max_length}")
        if self.max_sentences is not None and self.max_sentences < 1:
            raise ConfigError(f"distillation sentences must be positive, got {self.max_sentences}")


@dataclass
class DistillResult:
    """What distillation did: per-epoch training loss and selection score, the chosen epoch (0 = the
    undistilled model), and the wall time."""

    losses: list[float] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    best_epoch: int = 0
    sentences: int = 0
    steps: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return {"epoch_losses": self.losses, "epoch_dev_spearman": self.scores, "best_epoch": self.best_epoch,
                "sentences": self.sentences, "steps": self.steps, "seconds": self.seconds}


def length_batches(encoder: SentenceEncoder, sentences: Sequence[str], batch_size: int,
                   rng: random.Random) -> list[list[int]]:
    """Indices of ``sentences`` grouped into batches of similar token length, in shuffled batch order."""
    lengths = [len(encoder.tokenizer.tokenize(sentence)) for sentence in sentences]
    order = sorted(range(len(sentences)), key=lambda index: (lengths[index], index))
    batches = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


def distill_embeddings(student: SentenceEncoder, teacher: SentenceEncoder, sentences: Sequence[str],
                       options: DistillOptions, select: Callable[[], float] | None = None,
                       initial_score: float | None = None) -> DistillResult:
    """Train ``student`` in place so that its embeddings match ``teacher``'s on ``sentences`` (cosine loss).

    ``select()`` scores the current student (higher is better; e.g. dev Spearman); with it, the best
    state over the epochs, the untrained one included (``initial_score``, computed if not given),
    is kept. Without it, the last epoch's state is kept.
    """
    result = DistillResult()
    if options.epochs == 0:
        return result
    sentences = list(dict.fromkeys(sentences))
    if not sentences:
        raise ConfigError("distillation needs at least one sentence")
    rng = random.Random(options.seed)
    if options.max_sentences is not None and len(sentences) > options.max_sentences:
        sentences = rng.sample(sentences, options.max_sentences)
    start = time.perf_counter()
    torch.manual_seed(options.seed)
    lengths = student.max_length, teacher.max_length
    student.max_length = min(options.max_length, lengths[0])
    teacher.max_length = min(options.max_length, lengths[1])
    try:
        targets = teacher.encode(sentences).detach()
        best_state, best_score = None, None
        if select is not None:
            best_score = initial_score if initial_score is not None else select()
            best_state = copy.deepcopy(student.model.state_dict())
        model = student.model
        parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
        optimizer = torch.optim.AdamW(parameters, lr=options.lr, weight_decay=options.weight_decay)
        per_epoch = math.ceil(len(sentences) / options.batch_size)
        total = per_epoch * options.epochs
        warmup = max(1, total // 10)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: min((step + 1) / warmup, max(0.0, (total - step) / max(1, total - warmup))))
        for epoch in range(options.epochs):
            model.eval()  # no dropout: the student follows a deterministic teacher
            running, seen = 0.0, 0
            for index, batch in enumerate(length_batches(student, sentences, options.batch_size, rng)):
                tokens = student.tokenize([sentences[i] for i in batch])
                with torch.enable_grad():
                    embeddings = student.forward(tokens)
                    loss = (1.0 - F.cosine_similarity(embeddings, targets[batch], dim=-1)).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(parameters, 1.0)
                optimizer.step()
                schedule.step()
                running += float(loss.detach()) * len(batch)
                seen += len(batch)
                result.steps += 1
                if (index + 1) % 50 == 0:
                    log.info("distillation epoch %d step %d/%d: loss %.5f", epoch + 1, index + 1, per_epoch,
                             running / seen)
            model.eval()
            result.losses.append(running / max(seen, 1))
            if select is not None:
                score = select()
                result.scores.append(score)
                log.info("distillation epoch %d: loss %.5f, selection score %.2f", epoch + 1, result.losses[-1], score)
                if best_score is None or score > best_score:
                    best_score, best_state = score, copy.deepcopy(model.state_dict())
                    result.best_epoch = epoch + 1
            else:
                result.best_epoch = epoch + 1
        if best_state is not None:
            model.load_state_dict(best_state)
        model.eval()
    finally:
        student.max_length, teacher.max_length = lengths
    result.sentences = len(sentences)
    result.seconds = time.perf_counter() - start
    return result
