"""sklearn's bundled digits (1,797 8x8 images, no download) with a small CNN trained from scratch.

The split is fixed (seed 0, 25 % held out); the baseline trains in a few seconds on 2 CPU cores
and reaches >= 0.95 held-out accuracy (checked in the tests). Trained weights are cached per
process, so every caller of :func:`trained_model` gets a fresh copy of the same baseline.
"""

from __future__ import annotations

import copy
import functools

import numpy as np
import torch
from torch import nn

from ..workload import Workload

SEED = 0


class DigitsCNN(nn.Module):
    """conv3x3(1->c1) relu, conv3x3(c1->c2) relu, maxpool2, fc(c2*16 -> hidden) relu, fc(hidden -> 10)."""

    def __init__(self, c1: int = 16, c2: int = 32, hidden: int = 64) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(c2 * 16, hidden), nn.ReLU(), nn.Linear(hidden, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@functools.lru_cache(maxsize=1)
def data() -> dict[str, torch.Tensor]:
    """Train/test tensors: images scaled to [0, 1], shape [N, 1, 8, 8]; labels int64."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    xtr, xte, ytr, yte = train_test_split(x, d.target, test_size=0.25, random_state=SEED, stratify=d.target)
    return {"x_train": torch.from_numpy(xtr), "y_train": torch.from_numpy(ytr).long(),
            "x_test": torch.from_numpy(xte), "y_test": torch.from_numpy(yte).long()}


def train(model: nn.Module, *, epochs: int = 15, batch_size: int = 64, lr: float = 3e-3, seed: int = SEED) -> nn.Module:
    """Train in place with Adam on the training split; returns the model in eval mode."""
    d = data()
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    n = len(d["x_train"])
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(d["x_train"][idx]), d["y_train"][idx]).backward()
            opt.step()
    return model.eval()


def accuracy(model: nn.Module) -> float:
    """Top-1 accuracy on the held-out split (the workload's P(M))."""
    d = data()
    p = next(iter(model.parameters()), None)
    dev = p.device if p is not None else torch.device("cpu")
    dt = p.dtype if p is not None and p.is_floating_point() else torch.float32
    with torch.no_grad():
        pred = model(d["x_test"].to(dev, dt)).argmax(-1).cpu()
    return float((pred == d["y_test"]).float().mean())


@functools.lru_cache(maxsize=1)
def _baseline_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(SEED)
    return train(DigitsCNN()).state_dict()


def trained_model() -> DigitsCNN:
    """A fresh copy of the trained baseline (trained once per process)."""
    m = DigitsCNN()
    m.load_state_dict(copy.deepcopy(_baseline_state()))
    return m.eval()


def inputs(batch_size: int) -> torch.Tensor:
    x = data()["x_test"]
    reps = -(-batch_size // len(x))
    return x.repeat(reps, 1, 1, 1)[:batch_size].clone()


def targets(batch_size: int) -> torch.Tensor:
    y = data()["y_test"]
    reps = -(-batch_size // len(y))
    return y.repeat(reps)[:batch_size].clone()


def train_batch(batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A random batch of the training split (never the held-out split)."""
    d = data()
    idx = torch.randint(len(d["x_train"]), (batch_size,), generator=generator)
    return d["x_train"][idx], d["y_train"][idx]


def scaled_model(width: float) -> DigitsCNN:
    """A fresh (untrained) DigitsCNN with every hidden width scaled by ``width`` (a student)."""
    return DigitsCNN(max(1, round(16 * width)), max(1, round(32 * width)), max(1, round(64 * width)))


def workload() -> Workload:
    return Workload(
        name="digits-cnn",
        model=trained_model,
        inputs=inputs,
        targets=targets,
        loss=nn.functional.cross_entropy,
        evaluate=accuracy,
        quality_metric="top-1 accuracy (held-out 25 % of sklearn digits)",
        batch_size=64,
        description="sklearn's bundled 8x8 digits, small CNN trained from scratch",
        train_batch=train_batch,
        scaled_model=scaled_model,
        train_samples=len(data()["x_train"]),
    )
