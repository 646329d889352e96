"""Which layers a technique applies to: the :class:`Layers` selector, and the one rule of which
layers no technique ever touches.

In the spirit of torchao's ``quantize_(model, config, filter_fn=...)``: a selector is a small frozen
config (module class names, ``fnmatch`` patterns on qualified names, exact names); a module is
selected when *any* given criterion matches it::

    Layers(types=("Linear",))                 # every nn.Linear (and subclasses)
    Layers(patterns=("features.*",))          # every module under features
    Layers(names=("classifier.1",))           # exactly that layer
    Quantize("int8_weight_only").on("classifier.1")   # the same as layers=Layers(names=(...,))

Never touched (:func:`untouchable`): the modules inside ``nn.MultiheadAttention``, whose fused
kernel reads the raw projection weights; :meth:`Layers.select`, the pruning defaults and the
layer-wise profile all go through that one function.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Callable

from torch import nn

from ..config import invalid, serializable

__all__ = ["Layers", "LAYER_TYPES", "untouchable", "layers_of"]

#: the layers with a weight matrix that pruning and the layer-wise profile change
LAYER_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def untouchable(model: nn.Module) -> set[str]:
    """Qualified names of the modules no technique changes: everything inside an
    ``nn.MultiheadAttention`` (its fused kernel reads the raw ``in_proj_weight`` and
    ``out_proj.weight``, so a wrapped, pruned or quantized projection would be bypassed or break it)."""
    out: set[str] = set()
    for name, m in model.named_modules():
        if isinstance(m, nn.MultiheadAttention):
            out.update(f"{name}.{sub}" if name else sub for sub, _ in m.named_modules() if sub)
    return out


def layers_of(model: nn.Module, kinds: tuple[type, ...] = LAYER_TYPES) -> list[tuple[str, nn.Module]]:
    """(name, module) of ``model``'s layers of ``kinds`` that a technique may change (definition
    order; :func:`untouchable` ones left out)."""
    skip = untouchable(model)
    return [(n, m) for n, m in model.named_modules() if n and isinstance(m, kinds) and n not in skip]


def _strings(owner: str, field: str, value, allowed: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (tuple, list)):
        raise invalid(owner, field, allowed, value)
    for v in value:
        if not isinstance(v, str) or not v:
            raise invalid(owner, field, allowed, value)
    return tuple(value)


@serializable("layers")
@dataclass(frozen=True, repr=False)
class Layers:
    """A layer selector: ``types`` (module class names, matched against the class and its bases),
    ``patterns`` (``fnmatch`` patterns on qualified names) and ``names`` (exact qualified names).
    A module is selected when any given criterion matches; at least one criterion is required."""

    types: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        t = _strings("Layers", "types", self.types, "a tuple of module class names such as ('Linear', 'Conv2d')")
        for name in t:
            if not name.isidentifier():
                raise invalid("Layers", "types", "a tuple of module class names such as ('Linear', 'Conv2d')", name)
        p = _strings("Layers", "patterns", self.patterns, "a tuple of fnmatch patterns on qualified layer names "
                     "such as ('features.*',)")
        n = _strings("Layers", "names", self.names, "a tuple of qualified layer names such as ('classifier.1',)")
        object.__setattr__(self, "types", t)
        object.__setattr__(self, "patterns", p)
        object.__setattr__(self, "names", n)
        if not (t or p or n):
            raise invalid("Layers", "names", "non-empty, or types or patterns given (a selector of nothing "
                          "changes nothing: use layers=None for the technique's default)", n)

    def __repr__(self) -> str:
        given = ", ".join(f"{f}={getattr(self, f)!r}" for f in ("types", "patterns", "names") if getattr(self, f))
        return f"Layers({given})"

    def short_label(self) -> str:
        """Compact and stable: the names, patterns and types joined by '+' (``"fc1"``, ``"features.*"``)."""
        return "+".join((*self.names, *self.patterns, *self.types))

    def matches(self, name: str, module: nn.Module) -> bool:
        """Whether the module ``name`` (its qualified name) meets any criterion (ignores :func:`untouchable`)."""
        if name in self.names:
            return True
        if any(fnmatch.fnmatchcase(name, p) for p in self.patterns):
            return True
        return bool(self.types) and any(c.__name__ in self.types for c in type(module).__mro__)

    @property
    def filter_fn(self) -> Callable[[nn.Module, str], bool]:
        """``fn(module, fqn) -> bool`` in torchao's ``filter_fn`` form: the criteria alone. To also
        honour :func:`untouchable`, select first: ``sel = set(layers.select(model))`` and pass
        ``lambda m, fqn: fqn in sel`` (what :class:`~profilers.techniques.Quantize` does)."""
        return lambda module, fqn: self.matches(fqn, module)

    def select(self, model: nn.Module) -> list[str]:
        """Qualified names of ``model``'s modules this selector picks (definition order, the root
        module and :func:`untouchable` ones excluded). A name in ``names`` that ``model`` lacks, or
        that is untouchable, is an error, never ignored."""
        modules = dict(model.named_modules())
        skip = untouchable(model)
        for n in self.names:
            if n not in modules or not n:
                sample = ", ".join(repr(x) for x in [x for x in modules if x][:6])
                raise invalid("Layers", "names", f"names of modules of {type(model).__name__} "
                              f"(from named_modules(), e.g. {sample})", n)
            if n in skip:
                raise invalid("Layers", "names", "layers outside nn.MultiheadAttention (its fused kernel reads the "
                              "raw projection weights)", n)
        return [n for n, m in modules.items() if n and n not in skip and self.matches(n, m)]
