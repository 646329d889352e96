"""Your own knob as a function: :class:`Transform` applies ``fn(model, value)`` (a technique of
your own: low-rank factorization, a resize layer, weight sharing) or ``fn(workload, value)`` (the
input resolution, the sequence length: what the model is fed and evaluated on), registered once
under a name with :func:`register_transform`. A search prices and measures it like any built-in
technique (``optimizer.space.transform_knob`` declares it as a search dimension in one field).

The function is looked up by name when the technique is applied, so a :class:`Transform` saved
in a result names its function (``function``: ``module:qualname``) but does not carry it; a
content key (model cache, evaluations journal) includes that name and the value: after changing a
function's body, use a new output folder (or a new name).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..config import invalid, serializable
from ..workload import Workload
from .base import ApplyRecord, Context, Technique, register

__all__ = ["Transform", "TransformSpec", "register_transform", "transform_spec"]

TARGETS = ("model", "workload")


@dataclass(frozen=True)
class TransformSpec:
    """A registered transform: the function, what it changes (``on``), its cost-model key (engineer
    hours: a name in cost_models/data/techniques.toml or in the scenario's ``PeoplePlan.hours``),
    its composition stage (0 before distillation ... 3 after quantization) and whether it trains."""

    name: str
    fn: Callable[[Any, Any], Any]
    on: str = "model"
    cost_key: str = ""
    stage: int = 1
    trains: bool = False

    @property
    def function(self) -> str:
        return f"{getattr(self.fn, '__module__', '?')}:{getattr(self.fn, '__qualname__', repr(self.fn))}"


_SPECS: dict[str, TransformSpec] = {}


def register_transform(name: str, fn: Callable[[Any, Any], Any], *, on: str = "model", cost_key: str | None = None,
                       stage: int = 1, trains: bool = False) -> TransformSpec:
    """Register ``fn`` as the transform ``name`` (again: replaced). ``on="model"``: ``fn(model, value)``
    returns the new ``nn.Module`` (work on the copy it gets); ``on="workload"``: ``fn(workload, value)``
    returns the new :class:`Workload` (its inputs and evaluation at that value). ``cost_key``
    (default ``name``) prices the engineering work; ``trains``: whether ``fn`` trains (a technique
    that needs training data)."""
    if not isinstance(name, str) or not name.isidentifier():
        raise invalid("register_transform", "name", "a Python identifier (the knob's name)", name)
    if not callable(fn):
        raise invalid("register_transform", "fn", "a function fn(model_or_workload, value)", type(fn).__name__)
    if on not in TARGETS:
        raise invalid("register_transform", "on", "'model' or 'workload'", on)
    if not isinstance(stage, int) or isinstance(stage, bool) or not 0 <= stage <= 3:
        raise invalid("register_transform", "stage", "an integer in [0, 3] (0 distill, 1 prune, 2 quantize, "
                      "3 mixed precision)", stage)
    spec = TransformSpec(name, fn, on, cost_key or name, stage, bool(trains))
    _SPECS[name] = spec
    return spec


def transform_spec(name: str) -> TransformSpec:
    if name not in _SPECS:
        raise invalid("Transform", "name", "a name given to register_transform (or optimizer.space.transform_knob) "
                      "in this process: " + (", ".join(map(repr, sorted(_SPECS))) or "none registered"), name)
    return _SPECS[name]


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, str)) or (isinstance(value, float) and math.isfinite(value))


@serializable("transform")
@dataclass(frozen=True)
class Transform(Technique):
    """The registered transform ``name`` at ``value`` (a number, string or bool); ``function`` is
    the registered function's ``module:qualname`` (part of the content key)."""

    name: str
    value: Any
    function: str = ""
    repeatable = True

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise invalid("Transform", "name", "a registered transform's name", self.name)
        if not _plain(self.value):
            raise invalid(f"Transform[{self.name!r}]", "value", "a number, a string or a bool (saved in results "
                          "and content keys)", self.value)

    @property
    def spec(self) -> TransformSpec:
        return transform_spec(self.name)

    @property
    def stage(self) -> int:  # type: ignore[override]
        return _SPECS[self.name].stage if self.name in _SPECS else 1

    @property
    def cost_key(self) -> str:
        return self.spec.cost_key

    @property
    def trains(self) -> bool:
        return self.spec.trains

    def short_label(self) -> str:
        return f"{self.name}_{self.value}"

    def missing(self, workload: Workload) -> tuple[str, ...]:
        if self.name not in _SPECS:
            return (f"the function of transform {self.name!r}: register_transform({self.name!r}, fn) (or declare "
                    "the knob with optimizer.space.transform_knob) in this process",)
        return super().missing(workload)

    def on_workload(self, workload: Workload) -> Workload:
        """The workload at this value (itself for a model transform)."""
        spec = self.spec
        if spec.on != "workload":
            return workload
        out = spec.fn(workload, self.value)
        if not isinstance(out, Workload):
            raise invalid(f"Transform[{self.name!r}]", "fn", "a function returning a profilers.Workload "
                          "(on='workload')", type(out).__name__)
        return out


@register(Transform)
def _apply_transform(model: torch.nn.Module, t: Transform, ctx: Context):
    spec = t.spec
    if spec.on == "workload":
        return model, ApplyRecord(technique="", seconds=0.0, notes=(f"{t.name}={t.value!r}: changes the workload "
                                                                     f"({spec.function}), not the model",))
    out = spec.fn(model, t.value)
    if not isinstance(out, torch.nn.Module):
        raise invalid(f"Transform[{t.name!r}]", "fn", "a function returning a torch.nn.Module (on='model')",
                      type(out).__name__)
    return out, ApplyRecord(technique="", seconds=0.0, notes=(f"{t.name}={t.value!r} by {spec.function}",))
