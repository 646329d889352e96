"""The technique registry and the one verb, :func:`apply`.

A technique is a frozen, validated config dataclass (``Prune``, ``Quantize``, ``Distill``,
``MixedPrecision``) that round-trips through JSON. A handler registered for its type turns
``(model, technique, context)`` into a *new* model; the input model is never mutated (handlers get
a deep copy). Each application leaves an :class:`ApplyRecord` (what it cost: optimizer steps,
samples, measured seconds; whether it is accelerated here) on the returned model, readable with
:func:`records`.

In the spirit of torchao's ``quantize_(model, config)``: one verb, configs as dataclasses, a
handler registry keyed by config type. A new technique is one dataclass and one registered function.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Sequence

import torch

from .._config import SigmastarError, invalid, serializable
from ..workload import Workload

__all__ = ["Technique", "ApplyRecord", "Context", "UnsupportedTechnique", "register", "handler_for",
           "apply_one", "records", "check_sequence"]


class UnsupportedTechnique(SigmastarError):
    """The technique cannot run on this device (never silently replaced by something else)."""

    def __init__(self, technique: "Technique", device: str, reason: str) -> None:
        self.technique, self.device, self.reason = technique, device, reason
        super().__init__(f"{technique.label()} is unsupported on {device}: {reason}")


class Technique:
    """Base of every technique config (each subclass is a frozen, @serializable dataclass)."""

    #: position in a composition: 0 builds a new model (distill), 1 changes weights (prune),
    #: 2 changes numerics (quantize), 3 changes how it trains/runs (mixed precision)
    stage: ClassVar[int] = 1
    #: whether the technique changes the model's weights (then quality must be re-measured)
    changes_weights: ClassVar[bool] = True

    def label(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


@serializable("apply_record")
@dataclass(frozen=True)
class ApplyRecord:
    """What applying one technique did and cost (measured wall time on this machine)."""

    technique: str  # label
    seconds: float  # wall time of apply, measured
    optimizer_steps: int = 0  # training steps taken (fine-tuning, distillation)
    samples: int = 0  # training samples consumed
    accelerated: bool | None = None  # None: not applicable; False: applied but no fast kernel here
    notes: tuple[str, ...] = ()


@dataclass
class Context:
    """What a handler may use: the workload (data, loss, quality), the device, a seed, the original."""

    workload: Workload | None
    device: torch.device
    seed: int = 0
    original: torch.nn.Module | None = None  # the model before any technique (fidelity reference)
    log: Callable[[str], None] = lambda msg: None
    #: build the architecture and numerics only, skipping all training (fine-tuning, distillation):
    #: FLOPs, memory and latency do not depend on weight values, so a search prices variants this way
    structure_only: bool = False


_HANDLERS: dict[type, Callable[[torch.nn.Module, Any, Context], tuple[torch.nn.Module, ApplyRecord]]] = {}


def register(config_type: type) -> Callable:
    """Decorator: register ``fn(model, technique, ctx) -> (model, ApplyRecord)`` for ``config_type``."""

    def deco(fn: Callable) -> Callable:
        if config_type in _HANDLERS:
            raise TypeError(f"a handler for {config_type.__name__} is already registered")
        _HANDLERS[config_type] = fn
        return fn

    return deco


def handler_for(technique: Any) -> Callable:
    fn = _HANDLERS.get(type(technique))
    if fn is None:
        raise invalid("apply", "technique", "an instance of one of " + ", ".join(t.__name__ for t in _HANDLERS),
                      type(technique).__name__)
    return fn


def records(model: torch.nn.Module) -> tuple[ApplyRecord, ...]:
    """The records of the techniques applied to produce ``model`` (empty for an untouched model)."""
    return tuple(getattr(model, "_sigmastar_records", ()))


def apply_one(model: torch.nn.Module, technique: Technique, ctx: Context) -> torch.nn.Module:
    """Apply one technique to a copy of ``model``; returns the new model with its records."""
    fn = handler_for(technique)
    prior = records(model)
    work = copy.deepcopy(model)
    t0 = time.perf_counter()
    out, rec = fn(work, technique, ctx)
    seconds = time.perf_counter() - t0
    rec = ApplyRecord(**{**rec.__dict__, "technique": technique.label(), "seconds": seconds})
    out._sigmastar_records = prior + (rec,)  # plain attribute on the module
    return out


def check_sequence(techniques: Sequence[Technique]) -> None:
    """Reject incompatible compositions with a message that says why and what order works."""
    from .mixed_precision import MixedPrecision
    from .quantization import Quantize

    for i, t in enumerate(techniques):
        if not isinstance(t, Technique):
            raise invalid("apply", f"techniques[{i}]", "a Prune, Quantize, Distill or MixedPrecision config",
                          type(t).__name__)
    kinds = [type(t).__name__ for t in techniques]
    for name in ("Quantize", "Distill", "MixedPrecision"):
        if kinds.count(name) > 1:
            raise invalid("apply", "techniques", f"at most one {name}", kinds)
    stages = [t.stage for t in techniques]
    if stages != sorted(stages):
        raise invalid("apply", "techniques", "in the order distill -> prune -> quantize -> mixed precision "
                      "(each step works on the previous step's model)", kinds)
    quant = [t for t in techniques if isinstance(t, Quantize)]
    amp = [t for t in techniques if isinstance(t, MixedPrecision)]
    if quant and amp:
        raise invalid("apply", "techniques", "not both Quantize and MixedPrecision (a quantized model's "
                      f"numerics are fixed by {quant[0].label()}; autocast would override them)", kinds)
