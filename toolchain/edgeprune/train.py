"""Training and evaluation on the CPU (or a GPU when asked), seeded and deterministic.

SGD with Nesterov-free momentum 0.9, weight decay 5e-4, a cosine learning-rate schedule, and the
standard CIFAR augmentation for 32×32 images. The same loop fine-tunes pruned models.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgeprune.data import Dataset


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0
    augment: bool = True
    device: str = "cpu"


@dataclass
class EvalResult:
    accuracy: float  # top-1, in [0, 1]
    loss: float
    n: int

    @property
    def error(self) -> float:
        return 1.0 - self.accuracy


# (epoch, total epochs, batch, batches in the epoch, running loss) -> None
ProgressFn = Callable[[int, int, int, int, float], None]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train_from_scratch(arch: str, data: Dataset, config: TrainConfig,
                       progress: ProgressFn | None = None):
    """A new ``arch`` model for ``data``, initialised from ``config.seed`` (the initial weights
    too, so the same call gives the same model) and trained; returns a LoadedModel."""
    from edgeprune.checkpoint import LoadedModel, ModelInfo
    from edgeprune.models import create_model

    seed_everything(config.seed)
    model = create_model(arch, num_classes=data.num_classes, in_channels=data.input_shape[0])
    train(model, data, config, progress)
    return LoadedModel(model, ModelInfo(arch, data.num_classes, data.input_shape, data.mean,
                                        data.std, data.class_names))


def train(model: nn.Module, data: Dataset, config: TrainConfig,
          progress: ProgressFn | None = None) -> list[float]:
    """Train ``model`` in place on the train split; return the mean loss of each epoch."""
    seed_everything(config.seed)
    device = torch.device(config.device)
    model.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                          weight_decay=config.weight_decay)
    n_batches = math.ceil(len(data.train) / config.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, config.epochs * n_batches))
    losses = []
    for epoch in range(config.epochs):
        model.train()
        total, seen = 0.0, 0
        batches = data.batches("train", config.batch_size, shuffle=True, augment=config.augment,
                               seed=config.seed * 100_003 + epoch)
        for b, (x, y) in enumerate(batches):
            x, y = x.to(device), y.to(device)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(y)
            seen += len(y)
            if progress:
                progress(epoch, config.epochs, b + 1, n_batches, total / seen)
        losses.append(total / max(seen, 1))
    model.eval()
    return losses


@torch.no_grad()
def evaluate(model: nn.Module, data: Dataset, split: str = "test", *, batch_size: int = 512,
             device: str = "cpu") -> EvalResult:
    """Top-1 accuracy and mean cross-entropy of ``model`` on a split, in eval mode."""
    model.eval().to(device)
    correct, loss, n = 0, 0.0, 0
    for x, y in data.batches(split, batch_size):
        logits = model(x.to(device))
        y = y.to(device)
        loss += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
        n += len(y)
    return EvalResult(correct / n, loss / n, n)
