"""Mixed-precision training: autocast bf16 / fp16 (with a GradScaler for fp16).

``apply(model, MixedPrecision("bf16"))`` wraps the model in :class:`AutocastModule`, whose forward
runs under ``torch.autocast``: training steps measured by :func:`profilers.measure` then run in mixed
precision (weights and optimizer state stay fp32, matmuls run in the low-precision dtype), and
inference of the deployed model does too. The effect on step time and memory is measured against
fp32, not assumed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..config import check_choice, serializable
from .base import ApplyRecord, Context, Technique, UnsupportedTechnique, register

__all__ = ["MixedPrecision", "AutocastModule"]

_DTYPES = ("bf16", "fp16")  # names in profilers.measurement.TORCH_DTYPES


@serializable("mixed_precision")
@dataclass(frozen=True)
class MixedPrecision(Technique):
    """Autocast training (and inference) in ``dtype`` ("bf16" or "fp16")."""

    dtype: str = "bf16"
    stage: ClassVar[int] = 3
    changes_weights: ClassVar[bool] = False
    excludes: ClassVar[tuple[str, ...]] = ("Quantize",)

    def __post_init__(self) -> None:
        check_choice("MixedPrecision", "dtype", self.dtype, _DTYPES)

    @property
    def cost_key(self) -> str:
        return "mixed_precision"

    def short_label(self) -> str:
        return f"amp_{self.dtype}"

    def exclusion_reason(self, other: Technique) -> str:
        return f"autocast would override the numerics fixed by {other.label()}"


class AutocastModule(torch.nn.Module):
    """Runs the wrapped module's forward under ``torch.autocast(device, dtype)``."""

    def __init__(self, module: torch.nn.Module, dtype: str) -> None:
        super().__init__()
        self.module = module
        self.amp_dtype = dtype

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        dev = next((p.device.type for p in self.module.parameters()), "cpu")
        from ..measurement import TORCH_DTYPES

        with torch.autocast(dev, dtype=TORCH_DTYPES[self.amp_dtype]):
            return self.module(*args, **kwargs)


@register(MixedPrecision)
def _apply_mixed_precision(model: torch.nn.Module, t: MixedPrecision, ctx: Context):
    if ctx.device.type == "cuda" and t.dtype == "bf16" and not torch.cuda.is_bf16_supported():
        raise UnsupportedTechnique(t, torch.cuda.get_device_name(ctx.device), "no bf16 support on this GPU")
    note = "GradScaler is used when this model is trained in fp16" if t.dtype == "fp16" else ""
    return AutocastModule(model, t.dtype), ApplyRecord(technique="", seconds=0.0, notes=(note,) if note else ())
