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
import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Sequence

import torch

from ..config import SigmastarError, invalid, serializable
from ..workload import Workload

__all__ = ["Technique", "ApplyRecord", "Context", "UnsupportedTechnique", "register", "handler_for",
           "technique_types", "apply_one", "records", "check_sequence", "scaled_steps"]


class UnsupportedTechnique(SigmastarError):
    """The technique cannot run on this device (never silently replaced by something else)."""

    def __init__(self, technique: "Technique", device: str, reason: str) -> None:
        self.technique, self.device, self.reason = technique, device, reason
        super().__init__(f"{technique.label()} is unsupported on {device}: {reason}")


class Technique:
    """Base of every technique config (each subclass is a frozen, @serializable dataclass).

    A technique declares on itself what the rest of sigmastar needs: its cost-model key
    (:attr:`cost_key`), its composition rules (:attr:`stage`, :attr:`repeatable`, :attr:`excludes`,
    read by :func:`check_sequence`), whether it trains (:attr:`trains`, :meth:`at_fidelity`), a
    compact name (:meth:`short_label`) and, where it has a ``layers`` field, the layers it applies
    to (:meth:`on`).
    """

    #: position in a composition: 0 builds a new model (distill), 1 changes weights (prune),
    #: 2 changes numerics (quantize), 3 changes how it trains/runs (mixed precision)
    stage: ClassVar[int] = 1
    #: whether the technique changes the model's weights (then quality must be re-measured)
    changes_weights: ClassVar[bool] = True
    #: whether it is applied after training, so the deployed numerics are never trained (quantization):
    #: a cost model then prices training on the model before it
    post_training: ClassVar[bool] = False
    #: whether a composition may hold more than one of it
    repeatable: ClassVar[bool] = False
    #: names of the technique classes it cannot be combined with (checked both ways)
    excludes: ClassVar[tuple[str, ...]] = ()

    def label(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items()
                           if not k.startswith("_") and not (k == "layers" and v is None))
        return f"{type(self).__name__}({fields})"

    @property
    def cost_key(self) -> str:
        """The technique's name in ``cost_models/data/techniques.toml``."""
        raise NotImplementedError(f"{type(self).__name__} declares no cost_key")

    @property
    def trains(self) -> bool:
        """Whether applying it runs training steps (so a lower fidelity is cheaper)."""
        return False

    def missing(self, workload: Workload) -> tuple[str, ...]:
        """What ``workload`` lacks for this technique to run, each item saying how to supply it
        (() when nothing): checked for a whole search space before anything is evaluated. A
        technique that trains needs training data (``Workload.train_batch``); subclasses add theirs."""
        if self.trains and workload.train_batch is None:
            return ("training data: Workload(train_batch=...), or optimize(..., train_data=a DataLoader)",)
        return ()

    def at_fidelity(self, fidelity: float) -> "Technique":
        """A copy with its training steps scaled by ``fidelity`` in (0, 1] (``max(1, round(steps *
        fidelity))`` for steps > 0; 0 stays 0); ``fidelity >= 1`` returns ``self``."""
        _check_fidelity(type(self).__name__, fidelity)
        return self

    def short_label(self) -> str:
        """A compact, stable name (a column or dict key, a report entry); derived, never parsed."""
        raise NotImplementedError(f"{type(self).__name__} declares no short_label")

    def exclusion_reason(self, other: "Technique") -> str:
        """Why ``self`` and ``other`` (a class named in :attr:`excludes`) cannot be combined."""
        return "they cannot be combined"

    @property
    def selectable(self) -> bool:
        """Whether the technique takes a layer selector (has a ``layers`` field)."""
        return "layers" in {f.name for f in dataclasses.fields(self)} if dataclasses.is_dataclass(self) else False

    def on(self, *names: str) -> "Technique":
        """A copy restricted to the layers ``names`` (``layers=Layers(names=names)``)."""
        from .selector import Layers

        if not self.selectable:
            raise invalid(type(self).__name__, "layers", "not set: it applies to the whole model (only techniques "
                          "with a layers field take a selector)", names)
        return dataclasses.replace(self, layers=Layers(names=names))


def _check_fidelity(owner: str, fidelity: float) -> None:
    if isinstance(fidelity, bool) or not isinstance(fidelity, (int, float)) or not math.isfinite(fidelity) \
            or fidelity <= 0:
        raise invalid(f"{owner}.at_fidelity", "fidelity", "a number in (0, 1] (>= 1 keeps the full training)",
                      fidelity)


def scaled_steps(steps: int, fidelity: float) -> int:
    """``steps`` at ``fidelity``: ``max(1, round(steps * fidelity))`` for steps > 0; 0 stays 0;
    unchanged at ``fidelity >= 1``."""
    return steps if fidelity >= 1 or steps == 0 else max(1, round(steps * fidelity))


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


def technique_types() -> tuple[type, ...]:
    """The registered technique config classes, in registration order."""
    return tuple(_HANDLERS)


def _one_of(names: Sequence[str]) -> str:
    names = list(names)
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else "".join(names)


def check_sequence(techniques: Sequence[Technique]) -> None:
    """Reject incompatible compositions with a message that says why and what order works.

    Read from each technique's declarations: :attr:`~Technique.repeatable` (else at most one, or
    several that are each restricted to layers by a selector: a per-layer assignment),
    :attr:`~Technique.stage` (compositions run in stage order) and :attr:`~Technique.excludes`.
    """
    for i, t in enumerate(techniques):
        if not isinstance(t, Technique):
            names = [c.__name__ for c in technique_types()]
            raise invalid("apply", f"techniques[{i}]", f"a {_one_of(names)} config", type(t).__name__)
    kinds = [type(t).__name__ for t in techniques]
    for name in dict.fromkeys(kinds):
        group = [t for t in techniques if type(t).__name__ == name]
        # several restricted to their own layers (a per-layer assignment) are fine
        per_layer = all(getattr(t, "layers", None) is not None for t in group)
        if len(group) > 1 and not group[0].repeatable and not per_layer:
            raise invalid("apply", "techniques", f"at most one {name}", kinds)
    stages = [t.stage for t in techniques]
    if stages != sorted(stages):
        raise invalid("apply", "techniques", "in the order distill -> prune -> quantize -> mixed precision "
                      "(each step works on the previous step's model)", kinds)
    for i, a in enumerate(techniques):
        for b in techniques[i + 1:]:
            if type(b).__name__ in a.excludes:
                reason = a.exclusion_reason(b)
            elif type(a).__name__ in b.excludes:
                reason = b.exclusion_reason(a)
            else:
                continue
            raise invalid("apply", "techniques", f"not both {type(a).__name__} and {type(b).__name__} ({reason})",
                          kinds)
