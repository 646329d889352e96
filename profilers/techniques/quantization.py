"""Quantization: bf16/fp16 weights, and torchao's int8 dynamic, int8 / int4 weight-only and fp8.

Modes (``Quantize(mode=...)``):

* ``"bf16"``, ``"fp16"``: every floating parameter and buffer cast (floating inputs are cast to
  match by :func:`profilers.measure` and :func:`profilers.count_flops`);
* ``"int8_dynamic"``: torchao ``Int8DynamicActivationInt8WeightConfig`` (int8 weights, activations
  quantized per token at run time); on CPU its fast kernels need ``torch.compile`` (``compile=True``);
* ``"int8_weight_only"``: torchao ``Int8WeightOnlyConfig``;
* ``"int4_weight_only"``: torchao ``Int4WeightOnlyConfig`` (needs its extra int4 kernels);
* ``"fp8"``: torchao ``Float8DynamicActivationFloat8WeightConfig`` (GPUs of compute capability
  >= 8.9, MI300).

torchao quantizes ``nn.Linear`` layers (its default filter); other layers (convolutions,
embeddings) keep their dtype, and the record says how many layers were quantized. With a
``layers`` selector only the selected layers change: a 16-bit cast wraps each one so its inputs are
cast in and its outputs cast back; a torchao mode passes a ``filter_fn`` of the selection to
``quantize_`` (a selected layer that is not an ``nn.Linear`` is unsupported, with the reason).

Each mode is declared once in ``Quantize.SPECS`` (a :class:`QuantMode`: bits, weight dtype, cost-model
key, torchao config), ordered least to most compressed (``Quantize.MODES``). Where the device
lacks the kernels, :class:`~profilers.techniques.UnsupportedTechnique` is raised naming the device
and torchao's reason: never a silent fallback to another mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ..config import check_choice, invalid, serializable
from .base import ApplyRecord, Context, Technique, UnsupportedTechnique, register
from .selector import Layers

__all__ = ["Quantize", "QuantMode", "MODES", "CastLayer"]


@dataclass(frozen=True)
class QuantMode:
    """One mode of :class:`Quantize`, declared once: its bits per weight, the weights' dtype, its
    cost-model key (``cost_models/data/techniques.toml``) and the torchao config class it runs
    (None: a plain cast of the weights)."""

    name: str
    bits: int
    weight_dtype: str
    cost_key: str
    torchao_config: str | None = None


#: least to most compressed; a cast to 16-bit weights is the same engineering work as autocast
_MODES = (
    QuantMode("bf16", 16, "bf16", "mixed_precision"),
    QuantMode("fp16", 16, "fp16", "mixed_precision"),
    QuantMode("int8_weight_only", 8, "int8", "quantize_int8", "Int8WeightOnlyConfig"),
    QuantMode("int8_dynamic", 8, "int8", "quantize_int8", "Int8DynamicActivationInt8WeightConfig"),
    QuantMode("fp8", 8, "fp8", "quantize_fp8", "Float8DynamicActivationFloat8WeightConfig"),
    QuantMode("int4_weight_only", 4, "int4", "quantize_int4", "Int4WeightOnlyConfig"),
)
MODES = tuple(m.name for m in _MODES)
_BY_NAME = {m.name: m for m in _MODES}


@serializable("quantize")
@dataclass(frozen=True)
class Quantize(Technique):
    """Post-training quantization to ``mode`` (see the module docstring); ``compile`` wraps the
    result in ``torch.compile`` (the CPU fast path of int8 dynamic); ``layers`` (a
    :class:`~profilers.techniques.Layers` selector) restricts it to those layers (None: the whole
    model, as the mode does by default)."""

    mode: str = "int8_dynamic"
    compile: bool = False
    layers: Layers | None = None
    stage: ClassVar[int] = 2
    post_training: ClassVar[bool] = True  # deployed numerics are never trained
    excludes: ClassVar[tuple[str, ...]] = ("MixedPrecision",)
    #: the modes, least to most compressed, each declared once as a :class:`QuantMode`
    MODES: ClassVar[tuple[str, ...]] = MODES
    SPECS: ClassVar[tuple[QuantMode, ...]] = _MODES

    def __post_init__(self) -> None:
        check_choice("Quantize", "mode", self.mode, MODES)
        if not isinstance(self.compile, bool):
            raise invalid("Quantize", "compile", "True or False", self.compile)
        if self.layers is not None and not isinstance(self.layers, Layers):
            raise invalid("Quantize", "layers", "None (the whole model) or a Layers selector", self.layers)

    @property
    def spec(self) -> QuantMode:
        return _BY_NAME[self.mode]

    @property
    def bits(self) -> int:
        return self.spec.bits

    @property
    def weight_dtype(self) -> str:
        return self.spec.weight_dtype

    @property
    def cost_key(self) -> str:
        return self.spec.cost_key

    def short_label(self) -> str:
        label = self.mode + ("_compiled" if self.compile else "")
        return label + (f"@{self.layers.short_label()}" if self.layers is not None else "")

    def exclusion_reason(self, other: Technique) -> str:
        return f"a quantized model's numerics are fixed by {self.label()}; autocast would override them"

    def torchao_config(self) -> Any:
        """An instance of the torchao config this mode runs (the one mode -> torchao mapping)."""
        name = self.spec.torchao_config
        if name is None:
            raise invalid("Quantize", "mode", "a torchao mode (" + ", ".join(
                m.name for m in _MODES if m.torchao_config) + ") for torchao_config()", self.mode)
        import torchao.quantization as tq

        return getattr(tq, name)()

    @classmethod
    def for_weight_dtype(cls, dtype: str) -> "Quantize | None":
        """The technique that stores weights in ``dtype`` (an LLM serving format): the least
        compressed mode with that weight dtype ("int8" -> int8_weight_only); None for "fp32"."""
        allowed = ("fp32", *dict.fromkeys(m.weight_dtype for m in _MODES))
        check_choice("Quantize.for_weight_dtype", "dtype", dtype, allowed)
        if dtype == "fp32":
            return None
        return cls(next(m.name for m in _MODES if m.weight_dtype == dtype))


class CastLayer(nn.Module):
    """A layer kept in another floating dtype inside a model that is not: floating inputs are cast
    in, floating outputs cast back to the dtype the layer had (the model around it is unchanged)."""

    def __init__(self, layer: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        first = next((t for t in (*layer.parameters(), *layer.buffers()) if t.is_floating_point()), None)
        self.out_dtype = first.dtype if first is not None else torch.float32
        self.layer = layer.to(dtype)
        self.dtype = dtype

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        from torch.utils._pytree import tree_map

        def cast(dtype: torch.dtype):
            return lambda t: t.to(dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() else t

        args, kwargs = tree_map(cast(self.dtype), (args, kwargs))
        return tree_map(cast(self.out_dtype), self.layer(*args, **kwargs))


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    from ..host import host_device_name

    return host_device_name()


def _outermost(names: list[str]) -> list[str]:
    return [n for n in names if not any(n.startswith(o + ".") for o in names if o != n)]


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def _cast(model: nn.Module, t: Quantize, notes: list[str]) -> nn.Module:
    from ..measurement import TORCH_DTYPES

    dtype = TORCH_DTYPES[t.weight_dtype]
    if t.layers is None:
        notes.append(f"all floating parameters and buffers cast to {t.mode}")
        return model.to(dtype)
    names = [n for n in t.layers.select(model)
             if any(x.is_floating_point() for x in (*model.get_submodule(n).parameters(),
                                                     *model.get_submodule(n).buffers()))]
    names = _outermost(names)
    if not names:
        raise invalid("Quantize", "layers", f"a selector matching at least one module with floating weights "
                      f"in {type(model).__name__}", t.layers)
    for n in names:
        _set_module(model, n, CastLayer(model.get_submodule(n), dtype))
    notes.append(f"cast to {t.mode}: {', '.join(names)} (inputs cast in, outputs cast back); other layers unchanged")
    return model


def _kind(module: nn.Module) -> str:
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return "convolution"
    return type(module).__name__


@register(Quantize)
def _apply_quantize(model: torch.nn.Module, t: Quantize, ctx: Context):
    notes: list[str] = []
    accelerated: bool | None = None
    config_name = t.spec.torchao_config
    if config_name is None:
        model = _cast(model, t, notes)
    else:
        if t.layers is None:
            n_linear = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
            if n_linear == 0:
                raise UnsupportedTechnique(t, _device_name(ctx.device), f"{type(model).__name__} has no nn.Linear "
                                           "layer for torchao to quantize")
            filter_fn, where = None, f"{n_linear} nn.Linear layer(s)"
        else:
            chosen = [n for n in t.layers.select(model)
                      if isinstance(getattr(model.get_submodule(n), "weight", None), torch.Tensor)]
            if not chosen:
                raise invalid("Quantize", "layers", f"a selector matching at least one layer with a weight in "
                              f"{type(model).__name__}", t.layers)
            other = [n for n in chosen if not isinstance(model.get_submodule(n), nn.Linear)]
            if other:
                m = model.get_submodule(other[0])
                raise UnsupportedTechnique(t, _device_name(ctx.device), f"torchao has no {t.mode} kernel for a "
                                           f"{_kind(m)}: {other[0]} is a {type(m).__name__}; {config_name} "
                                           "quantizes nn.Linear weights")
            keep = set(chosen)
            filter_fn, where = (lambda mod, fqn: fqn in keep), f"{len(chosen)} selected nn.Linear layer(s) " \
                f"({', '.join(chosen)})"
        try:
            config = t.torchao_config()
        except ImportError as e:  # pragma: no cover - torchao is a dependency
            raise UnsupportedTechnique(t, _device_name(ctx.device), f"torchao is not importable ({e})") from e
        import torchao.quantization as tq

        model = model.to(ctx.device)
        try:
            tq.quantize_(model, config, **({} if filter_fn is None else {"filter_fn": filter_fn}))
        except (ImportError, AssertionError, RuntimeError, NotImplementedError) as e:
            raise UnsupportedTechnique(t, _device_name(ctx.device), f"{type(e).__name__}: {e}") from e
        notes.append(f"torchao {config_name} on {where}; other layers unchanged")
        if ctx.device.type == "cpu" and t.mode == "int8_dynamic":
            accelerated = t.compile
            if not t.compile:
                notes.append("CPU int8 dynamic runs torchao's eager path: fast kernels need compile=True")
    if t.compile:
        model = torch.compile(model)
        notes.append("wrapped in torch.compile")
    return model, ApplyRecord(technique="", seconds=0.0, accelerated=accelerated, notes=tuple(notes))
