"""The one training loop that techniques share (recovery fine-tuning, regularized fine-tuning,
distillation): AdamW over the workload's training batches, an optional extra loss term, optional
autocast (GradScaler for fp16). Returns how many optimizer steps and samples it consumed.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

from ..config import invalid
from ..flops import call_model
from ..workload import Workload
from .base import Context

__all__ = ["train_steps", "output_tensor", "fidelity_loss", "task_loss"]


def output_tensor(out: Any) -> torch.Tensor:
    """The main tensor of a model output (logits, an embedding, or the first tensor)."""
    if isinstance(out, torch.Tensor):
        return out
    for key in ("logits", "sentence_embedding", "pooler_output", "last_hidden_state"):
        v = getattr(out, key, None) if not isinstance(out, dict) else out.get(key)
        if isinstance(v, torch.Tensor):
            return v
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise invalid("training", "model output", "a tensor, a tuple of tensors or an output with .logits", type(out).__name__)


def fidelity_loss(student_out: Any, reference_out: Any) -> torch.Tensor:
    """1 - cosine similarity for embeddings (last dim), per sample, averaged; used without labels."""
    s, r = output_tensor(student_out).float(), output_tensor(reference_out).float()
    return (1 - F.cosine_similarity(s.flatten(1), r.flatten(1), dim=-1)).mean()


def task_loss(workload: Workload, out: Any, targets: Any) -> torch.Tensor:
    if workload.loss is None:
        raise invalid(f"Workload[{workload.name!r}]", "loss", "a loss(output, targets) callable for a labeled "
                      "workload", None)
    return workload.loss(output_tensor(out), targets)


def _require_data(ctx: Context, who: str) -> Workload:
    wl = ctx.workload
    if wl is None or wl.train_batch is None:
        raise invalid(who, "workload", "a Workload with train_batch (training data) for a technique that trains",
                      None if wl is None else wl.name)
    return wl


def _to_device(x: Any, device: torch.device) -> Any:
    from torch.utils._pytree import tree_map

    return tree_map(lambda t: t.to(device) if isinstance(t, torch.Tensor) else t, x)


def train_steps(model: torch.nn.Module, ctx: Context, *, steps: int, batch_size: int, lr: float, who: str,
                loss_of: Callable[[torch.nn.Module, Any, Any], torch.Tensor] | None = None,
                extra_loss: Callable[[torch.nn.Module], torch.Tensor] | None = None,
                amp: str | None = None) -> tuple[int, int]:
    """Train ``model`` in place for ``steps`` AdamW steps; returns (steps, samples).

    ``loss_of(model, inputs, targets)`` defaults to the workload's task loss when it has labels,
    else to the fidelity loss against ``ctx.original`` (self-distillation).
    """
    if steps <= 0 or ctx.structure_only:
        return 0, 0
    wl = _require_data(ctx, who)
    gen = torch.Generator().manual_seed(ctx.seed)
    reference = ctx.original
    if loss_of is None:
        def loss_of(m: torch.nn.Module, x: Any, y: Any) -> torch.Tensor:
            out = call_model(m, x)
            if y is not None:
                return task_loss(wl, out, y)
            if reference is None:
                raise invalid(who, "workload", "labels (targets), or an original model to match", None)
            with torch.no_grad():
                ref = call_model(reference, x)
            return fidelity_loss(out, ref)

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    from ..measurement import TORCH_DTYPES

    dtype = None if amp is None else TORCH_DTYPES[amp]
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=amp == "fp16")
    model.train()
    for _ in range(steps):
        x, y = wl.train_batch(batch_size, gen)
        x, y = _to_device(x, ctx.device), _to_device(y, ctx.device)
        opt.zero_grad(set_to_none=True)
        with torch.autocast(ctx.device.type, dtype=dtype, enabled=dtype is not None):
            loss = loss_of(model, x, y)
            if extra_loss is not None:
                loss = loss + extra_loss(model)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    model.eval()
    return steps, steps * batch_size
