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
embeddings) keep their dtype, and the record says how many layers were quantized. Where the device
lacks the kernels, :class:`~profilers.techniques.UnsupportedTechnique` is raised naming the device
and torchao's reason: never a silent fallback to another mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .._config import check_choice, invalid, serializable
from .base import ApplyRecord, Context, Technique, UnsupportedTechnique, register

__all__ = ["Quantize", "MODES"]

MODES = ("bf16", "fp16", "int8_dynamic", "int8_weight_only", "int4_weight_only", "fp8")
_TORCHAO_CONFIG = {
    "int8_dynamic": "Int8DynamicActivationInt8WeightConfig",
    "int8_weight_only": "Int8WeightOnlyConfig",
    "int4_weight_only": "Int4WeightOnlyConfig",
    "fp8": "Float8DynamicActivationFloat8WeightConfig",
}


@serializable("quantize")
@dataclass(frozen=True)
class Quantize(Technique):
    """Post-training quantization to ``mode`` (see the module docstring); ``compile`` wraps the
    result in ``torch.compile`` (the CPU fast path of int8 dynamic)."""

    mode: str = "int8_dynamic"
    compile: bool = False
    stage: ClassVar[int] = 2

    def __post_init__(self) -> None:
        check_choice("Quantize", "mode", self.mode, MODES)
        if not isinstance(self.compile, bool):
            raise invalid("Quantize", "compile", "True or False", self.compile)

    @property
    def bits(self) -> int:
        return {"bf16": 16, "fp16": 16, "int8_dynamic": 8, "int8_weight_only": 8, "int4_weight_only": 4, "fp8": 8}[self.mode]


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    from ..host import host_device_name

    return host_device_name()


@register(Quantize)
def _apply_quantize(model: torch.nn.Module, t: Quantize, ctx: Context):
    n_linear = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    notes: list[str] = []
    accelerated: bool | None = None
    if t.mode in ("bf16", "fp16"):
        model = model.to(torch.bfloat16 if t.mode == "bf16" else torch.float16)
        notes.append(f"all floating parameters and buffers cast to {t.mode}")
    else:
        if n_linear == 0:
            raise UnsupportedTechnique(t, _device_name(ctx.device), f"{type(model).__name__} has no nn.Linear layer "
                                       "for torchao to quantize")
        try:
            import torchao.quantization as tq
        except ImportError as e:  # pragma: no cover - torchao is a dependency
            raise UnsupportedTechnique(t, _device_name(ctx.device), f"torchao is not importable ({e})") from e
        config = getattr(tq, _TORCHAO_CONFIG[t.mode])()
        model = model.to(ctx.device)
        try:
            tq.quantize_(model, config)
        except (ImportError, AssertionError, RuntimeError, NotImplementedError) as e:
            raise UnsupportedTechnique(t, _device_name(ctx.device), f"{type(e).__name__}: {e}") from e
        notes.append(f"torchao {_TORCHAO_CONFIG[t.mode]} on {n_linear} nn.Linear layer(s); other layers unchanged")
        if ctx.device.type == "cpu" and t.mode == "int8_dynamic":
            accelerated = t.compile
            if not t.compile:
                notes.append("CPU int8 dynamic runs torchao's eager path: fast kernels need compile=True")
    if t.compile:
        model = torch.compile(model)
        notes.append("wrapped in torch.compile")
    return model, ApplyRecord(technique="", seconds=0.0, accelerated=accelerated, notes=tuple(notes))
