"""Workload: a model, its example inputs and how to judge it, in one object.

A workload is what sigmastar profiles, compresses and prices. Built-in workloads live in
:mod:`profilers.workloads` (``get("digits")``); users write their own with a factory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ._config import invalid

__all__ = ["Workload"]


@dataclass(frozen=True)
class Workload:
    """A model to profile and optimize.

    * ``model``: factory returning the (trained) ``nn.Module``; called by :meth:`build`.
    * ``inputs(batch_size)``: example inputs (tensor, tuple of positional args, or dict of kwargs).
    * ``targets(batch_size)`` and ``loss(output, targets)``: for a training step (optional).
    * ``evaluate(model) -> float``: quality P(M) on held-out data, higher is better (optional);
      ``quality_metric`` names it.
    * ``batch_size``: the default batch for profiling; ``seq_len`` for sequence models.
    * ``train_batch(batch_size, generator) -> (inputs, targets)``: a random training batch, for
      techniques that train (recovery fine-tuning, distillation). ``targets`` is None for a
      workload without labels (then training matches the original model's outputs).
    * ``scaled_model(width) -> nn.Module``: a freshly initialised copy of the architecture with
      every hidden width multiplied by ``width`` (a distillation student); optional.
    * ``train_samples``: how many distinct training samples ``train_batch`` draws from.
    """

    name: str
    model: Callable[[], Any]
    inputs: Callable[[int], Any]
    targets: Callable[[int], Any] | None = None
    loss: Callable[..., Any] | None = None
    evaluate: Callable[[Any], float] | None = None
    quality_metric: str = ""
    batch_size: int = 32
    seq_len: int | None = None
    description: str = ""
    train_batch: Callable[[int, Any], tuple[Any, Any]] | None = None
    scaled_model: Callable[[float], Any] | None = None
    train_samples: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise invalid("Workload", "name", "a non-empty string", self.name)
        for f in ("model", "inputs"):
            if not callable(getattr(self, f)):
                raise invalid("Workload", f, "a callable", getattr(self, f))
        for f in ("targets", "loss", "evaluate", "train_batch", "scaled_model"):
            v = getattr(self, f)
            if v is not None and not callable(v):
                raise invalid("Workload", f, "a callable or None", v)
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise invalid("Workload", "batch_size", "an integer >= 1", self.batch_size)

    def build(self) -> Any:
        """A fresh model from the factory (factories may cache trained weights)."""
        return self.model()
