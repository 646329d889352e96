"""Quality P(M): the workload's own evaluation on held-out data, or fidelity to the original.

``quality(model, workload)`` calls ``workload.evaluate(model)`` (higher is better; e.g. top-1
accuracy on the held-out split). For models without labels, :func:`fidelity` compares outputs with
the original model's on the same inputs: top-1 agreement for classifiers, mean cosine similarity
for embeddings.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch
import torch.nn.functional as F

from ..config import SigmastarError, invalid
from ..flops import call_model
from ..workload import Workload
from .training import output_tensor

__all__ = ["quality", "fidelity", "check_quality", "BadQuality", "EvaluateError"]


class EvaluateError(SigmastarError):
    """The workload's own ``evaluate(model)`` raised (its exception is the ``__cause__``): a bug or
    fault in the user's code, not of the variant; a search stops on it unless told to skip."""


class BadQuality(ValueError):
    """An evaluation returned something that is not a finite number: a fault, never a measurement."""


def check_quality(value: Any, where: str) -> float:
    """``value`` as a float when it is a finite real number (a Python or NumPy number, or a one-element
    tensor); otherwise :class:`BadQuality` naming ``where`` and the value. Strings are not coerced
    ("0.9" is a bug in the evaluation, not a quality), nor are booleans; NaN and infinities are refused."""
    v = value
    if isinstance(v, torch.Tensor) and v.numel() == 1 and not v.dtype.is_complex and v.dtype != torch.bool:
        v = v.item()
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise BadQuality(f"{where} returned {value!r} ({type(value).__name__}); allowed: a finite real number")
    f = float(v)
    if not math.isfinite(f):
        raise BadQuality(f"{where} returned {f!r}; allowed: a finite real number (NaN and infinities are faults "
                         "of the evaluation, never a quality)")
    return f


def quality(model: torch.nn.Module, workload: Workload) -> float:
    """P(M) of ``model`` on ``workload``'s held-out data (measured, not estimated)."""
    if not isinstance(workload, Workload) or workload.evaluate is None:
        raise invalid("quality", "workload", "a Workload with an evaluate(model) function",
                      getattr(workload, "name", type(workload).__name__))
    model.eval()
    with torch.no_grad():
        try:
            value = workload.evaluate(model)
        except Exception as e:
            raise EvaluateError(f"workload {workload.name!r}: evaluate(model) raised {type(e).__name__}: {e}") from e
        return check_quality(value, f"workload {workload.name!r}: evaluate(model)")


def fidelity(model: torch.nn.Module, reference: torch.nn.Module, inputs: Any, *, kind: str = "cosine") -> float:
    """Agreement of ``model`` with ``reference`` on ``inputs``: ``"top1"`` (share of equal argmax)
    or ``"cosine"`` (mean cosine similarity of the flattened outputs per sample)."""
    if kind not in ("top1", "cosine"):
        raise invalid("fidelity", "kind", "'top1' or 'cosine'", kind)
    from ..measurement import cast_inputs, model_dtype

    model.eval()
    reference.eval()

    def run(m: torch.nn.Module) -> torch.Tensor:  # each model gets inputs in its own dtype
        p = next(iter(m.parameters()), None)
        dev = p.device if p is not None else torch.device("cpu")
        return output_tensor(call_model(m, cast_inputs(inputs, dev, model_dtype(m)[1]))).float()

    with torch.no_grad():
        a, b = run(model), run(reference)
    if kind == "top1":
        return float((a.argmax(-1) == b.argmax(-1)).float().mean())
    return float(F.cosine_similarity(a.flatten(1), b.flatten(1), dim=-1).mean())
