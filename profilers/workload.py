"""Workload: a model, its example inputs and how to judge it, in one object.

A workload is what sigmastar profiles, compresses and prices. Built-in workloads live in
:mod:`profilers.workloads` (``get("digits")``); users write their own with a factory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from .config import invalid

__all__ = ["Workload", "check_quality_target"]


def check_quality_target(owner: str, field: str, target: float, quality_range: Any, metric: str = "",
                         workload: str = "") -> None:
    """Reject a quality target outside what the workload's metric can reach (``quality_range``;
    None: unknown, anything goes), in the one error format, e.g. ``job.constraints.min_quality must
    be a number in [0, 1] (accuracy of digits; a percentage like 95 is not an accuracy); got 95.``"""
    if quality_range is None:
        return
    lo, hi = quality_range
    if not lo <= target <= hi:
        note = f"{metric or 'quality'} of {workload}" if workload else (metric or "quality")
        if hi <= 1:
            noun = metric or "quality"
            note += f"; a percentage like 95 is not {'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"
        raise invalid(owner, field, f"a number in [{lo:g}, {hi:g}] ({note})", target)


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
    * ``quality_range``: ``(low, high)``, the values ``evaluate`` can return (accuracy: ``(0, 1)``),
      or None when unknown; a quality target outside it is an error before anything runs.
    * ``higher_is_better``: False for a metric to minimize (perplexity, error rate): a search's
      target is then a ceiling (``quality <= target``).
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
    quality_range: tuple[float, float] | None = None
    higher_is_better: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.higher_is_better, bool):
            raise invalid("Workload", "higher_is_better", "True or False", self.higher_is_better)
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
        qr = self.quality_range
        if qr is not None:
            ok = (isinstance(qr, (tuple, list)) and len(qr) == 2
                  and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in qr)
                  and qr[0] < qr[1])
            if not ok:
                raise invalid("Workload", "quality_range", "None or (low, high): two finite numbers, low < high", qr)
            object.__setattr__(self, "quality_range", (float(qr[0]), float(qr[1])))

    @staticmethod
    def from_model(model: Any, evaluate: Callable[[Any], float], **kw: Any) -> "Workload":
        """The workload of your own model, evaluation function and example inputs (keyword
        arguments: those of :func:`profilers.own_model.from_model`)."""
        from .own_model import from_model

        return from_model(model, evaluate, **kw)

    def check_target(self, owner: str, field: str, target: float) -> None:
        """:func:`check_quality_target` with this workload's range, metric and name."""
        check_quality_target(owner, field, target, self.quality_range, self.quality_metric, self.name)

    def build(self) -> Any:
        """A fresh model from the factory (factories may cache trained weights)."""
        return self.model()
