"""Knowledge distillation: train a student on the teacher's soft targets.

The student is a user factory's model, a width-scaled fresh copy (the workload's ``scaled_model``)
or the teacher itself, optionally cut to fewer transformer layers (evenly spaced, first and last
kept, initialised from the teacher's: DistilBERT-style). It trains with the shared AdamW loop
(:func:`profilers.techniques.training.train_steps`) on the workload's training batches; the record
says what it cost (optimizer steps, samples, measured seconds) and how big the student is.
"""

from __future__ import annotations

import copy
import importlib
from dataclasses import dataclass, fields, replace
from typing import Any, Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..config import check_positive, invalid, serializable
from ..workload import Workload
from .base import ApplyRecord, Context, Technique, register, scaled_steps

__all__ = ["Distill"]


@serializable("distill")
@dataclass(frozen=True)
class Distill(Technique):
    """Distill the model (the teacher) into a smaller student.

    The student is ``student`` (a ``"module:function"`` factory path returning an nn.Module) or,
    by default, a scaled copy of the teacher: ``width`` scales every hidden width (via the
    workload's ``scaled_model(width)``, freshly initialised) and ``depth`` keeps that fraction of a
    transformer's layers, initialised from evenly spaced teacher layers (DistilBERT-style).
    Loss: ``alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha) * task loss``
    for labeled workloads; ``1 - cosine(student, teacher)`` for embedding models without labels.
    ``lr`` defaults to 1e-3 (a small student from scratch); a student cut from a pretrained
    transformer wants about 1e-4 (MiniLM: ``Distill(depth=0.5, steps=60, batch_size=8, lr=2e-4)``
    keeps fidelity 0.83).
    """

    width: float = 1.0
    depth: float = 1.0
    student: str | None = None
    temperature: float = 4.0
    alpha: float = 0.7
    steps: int = 300
    batch_size: int = 64
    lr: float = 1e-3
    stage: ClassVar[int] = 0

    def __post_init__(self) -> None:
        for f in ("width", "depth"):
            v = getattr(self, f)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 < v <= 1:
                raise invalid("Distill", f, "a fraction in (0, 1]", v)
        if self.student is not None and (not isinstance(self.student, str) or ":" not in self.student):
            raise invalid("Distill", "student", "None or a 'module:function' factory path", self.student)
        if self.student is None and self.width == 1.0 and self.depth == 1.0:
            raise invalid("Distill", "width", "< 1 (or depth < 1, or a student factory): a student the size "
                          "of the teacher saves nothing", self.width)
        check_positive("Distill", "temperature", self.temperature)
        check_positive("Distill", "lr", self.lr)
        if not isinstance(self.alpha, (int, float)) or isinstance(self.alpha, bool) or not 0 <= self.alpha <= 1:
            raise invalid("Distill", "alpha", "a weight in [0, 1]", self.alpha)
        for f in ("steps", "batch_size"):
            v = getattr(self, f)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise invalid("Distill", f, "an integer >= 1", v)

    @property
    def cost_key(self) -> str:
        return "distill"

    @property
    def trains(self) -> bool:
        return True  # steps >= 1

    def missing(self, workload: Workload) -> tuple[str, ...]:
        """Training data, and for ``width < 1`` without a student factory the workload's
        ``scaled_model(width)`` (a smaller copy of the architecture)."""
        need = super().missing(workload)
        if self.width < 1 and self.student is None and workload.scaled_model is None:
            need += ("a student architecture: Workload(scaled_model=...) (width -> a smaller nn.Module), or "
                     "optimize(..., scaled_model=...), or Distill(student='module:function')",)
        return need

    def at_fidelity(self, fidelity: float) -> "Distill":
        super().at_fidelity(fidelity)
        return self if fidelity >= 1 else replace(self, steps=scaled_steps(self.steps, fidelity))

    def short_label(self) -> str:
        """``distill_0.5`` (width 0.5); depth, a student factory and non-default training settings
        are appended (``distill_depth0.5``, ``distill_0.5_steps100``)."""
        parts = ["distill"]
        if self.width < 1:
            parts.append(f"{self.width:g}")
        if self.depth < 1:
            parts.append(f"depth{self.depth:g}")
        if self.student is not None:
            parts.append(f"student={self.student}")
        for f, short in (("temperature", "T"), ("alpha", "alpha"), ("steps", "steps"), ("batch_size", "bs"),
                         ("lr", "lr")):
            v = getattr(self, f)
            if v != _DISTILL_DEFAULTS[f]:
                parts.append(f"{short}{v:g}")
        return "_".join(parts)


_DISTILL_DEFAULTS = {f.name: f.default for f in fields(Distill)}


@register(Distill)
def _apply_distill(model: nn.Module, t: Distill, ctx: Context):
    """Build the student, train it ``t.steps`` AdamW steps against the (frozen) teacher, return it.

    The teacher is ``model`` (the handler's own copy; eval mode, no gradients). Labeled batches
    use ``alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * task loss`` (KL over the
    last dimension, averaged over the other positions); unlabeled batches (embeddings) use
    ``1 - cosine(student, teacher)`` alone: no MSE term, since for L2-normalised embeddings
    ``|s - t|^2 = 2 (1 - cos)`` adds nothing, and T and alpha do not apply.
    """
    from ..flops import call_model
    from .training import _require_data, fidelity_loss, output_tensor, task_loss, train_steps

    wl = _require_data(ctx, "Distill")
    home = _device_of(model)
    teacher = model.to(ctx.device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    cuda = [ctx.device.index if ctx.device.index is not None else torch.cuda.current_device()] \
        if ctx.device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):  # seeded student init and dropout, caller's RNG untouched
        torch.default_generator.manual_seed(ctx.seed)
        for d in cuda:
            with torch.cuda.device(d):
                torch.cuda.manual_seed(ctx.seed)
        student, how = _build_student(teacher, t, ctx)
        student = student.to(ctx.device)
        for p in student.parameters():
            p.requires_grad_(True)

        T, alpha = float(t.temperature), float(t.alpha)
        seen: dict[str, bool] = {}

        def loss_of(m: nn.Module, x: Any, y: Any) -> torch.Tensor:
            s = output_tensor(call_model(m, x))
            with torch.no_grad():
                r = output_tensor(call_model(teacher, x))
            if s.shape != r.shape:
                raise invalid("Distill", "student", f"a model whose output has the teacher's shape {list(r.shape)}",
                              list(s.shape))
            if y is None:
                seen["unlabeled"] = True
                return fidelity_loss(s, r)
            seen["labeled"] = True
            loss = s.new_zeros(())
            if alpha > 0:
                c = s.shape[-1]
                kd = F.kl_div(F.log_softmax(s.float().reshape(-1, c) / T, -1),
                              F.log_softmax(r.float().reshape(-1, c) / T, -1), log_target=True, reduction="batchmean")
                loss = loss + alpha * T * T * kd
            if alpha < 1:
                loss = loss + (1 - alpha) * task_loss(wl, s, y)
            return loss

        steps, samples = train_steps(student, ctx, steps=t.steps, batch_size=t.batch_size, lr=t.lr, who="Distill",
                                     loss_of=loss_of)
    student = student.to(home).eval()
    n_s, n_t = _n_params(student), _n_params(teacher)
    if seen.get("labeled"):
        loss_note = (f"loss: {alpha} * T^2 * KL(teacher/T || student/T) + {1 - alpha:g} * task loss; "
                     f"T={T}, alpha={alpha}")
    else:
        loss_note = f"loss: 1 - cosine(student, teacher) (no labels: temperature {T} and alpha {alpha} unused)"
    notes = (f"student: {n_s:,} parameters vs teacher {n_t:,} ({n_s / max(n_t, 1):.3f}x)", how, loss_note,
             f"{steps} AdamW steps, lr={t.lr}, batch {t.batch_size} from workload {wl.name!r}")
    ctx.log("; ".join(notes))
    return student, ApplyRecord(technique="", seconds=0.0, optimizer_steps=steps, samples=samples, notes=notes)


def _n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _device_of(m: nn.Module) -> torch.device:
    p = next(iter(m.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def _import_factory(path: str) -> Callable[[], Any]:
    mod_name, _, attr = path.partition(":")
    try:
        obj: Any = importlib.import_module(mod_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise invalid("Distill", "student", f"an importable 'module:function' factory path ({type(e).__name__}: {e})",
                      path) from e
    if not callable(obj):
        raise invalid("Distill", "student", "a path to a callable factory", path)
    return obj


def _build_student(teacher: nn.Module, t: Distill, ctx: Context) -> tuple[nn.Module, str]:
    """(student, how it was built): a factory's model, a scaled copy, or the teacher itself; then
    ``depth`` keeps evenly spaced transformer layers."""
    if t.student is not None:
        if t.width != 1:
            raise invalid("Distill", "width", "1.0 when a student factory is given (the factory sets the size)",
                          t.width)
        student = _import_factory(t.student)()
        if not isinstance(student, nn.Module):
            raise invalid("Distill", "student", "a factory returning a torch.nn.Module",
                          f"{t.student} -> {type(student).__name__}")
        how = f"student from factory {t.student}"
    elif t.width < 1:
        wl = ctx.workload
        if wl is None or wl.scaled_model is None:
            raise invalid("Distill", "width", "1.0 for a workload without scaled_model(width) (or give a student "
                          "factory)", t.width)
        student = wl.scaled_model(t.width)
        if not isinstance(student, nn.Module):
            raise invalid(f"Workload[{wl.name!r}]", "scaled_model", "a function returning a torch.nn.Module",
                          type(student).__name__)
        how = f"student: workload {wl.name!r} scaled_model({t.width}), freshly initialised"
    else:
        student = copy.deepcopy(teacher)
        how = "student initialised from the teacher"
    if t.depth < 1:
        total, kept = keep_layers(student, t.depth)
        how += f"; kept layers {kept} of {total}"
    return student.train(), how


def evenly_spaced(total: int, keep: int) -> list[int]:
    """``keep`` of ``range(total)`` spread evenly, first and last included (one keeps the first):
    6 -> 3 gives [0, 3, 5] (DistilBERT-style)."""
    if keep >= total:
        return list(range(total))
    if keep == 1:
        return [0]
    return sorted({int(i * (total - 1) / (keep - 1) + 0.5) for i in range(keep)})


def _find_layer_list(model: nn.Module) -> tuple[str, nn.ModuleList, Any] | None:
    """(path, ModuleList of layers, owner to update) for Hugging Face models (a config with
    ``num_hidden_layers`` and a ModuleList of that length) and ``nn.TransformerEncoder/Decoder``."""
    for name, mod in model.named_modules():
        n = getattr(getattr(mod, "config", None), "num_hidden_layers", None)
        if isinstance(n, int) and n > 0:
            for sub, lst in mod.named_modules():
                if isinstance(lst, nn.ModuleList) and len(lst) == n:
                    return ".".join(p for p in (name, sub) if p), lst, mod.config
    for name, mod in model.named_modules():
        if isinstance(mod, (nn.TransformerEncoder, nn.TransformerDecoder)):
            return ".".join(p for p in (name, "layers") if p), mod.layers, mod
    return None


def keep_layers(model: nn.Module, depth: float) -> tuple[int, list[int]]:
    """Keep ``max(1, round(depth * L))`` evenly spaced layers of ``model``'s transformer layer list,
    in place (updating ``config.num_hidden_layers`` or ``num_layers``); returns (L, kept indices)."""
    found = _find_layer_list(model)
    if found is None:
        raise invalid("Distill", "depth", "1.0 for a model without a transformer layer list (a Hugging Face "
                      "model's encoder layers or an nn.TransformerEncoder); use width or a student factory",
                      depth)
    path, layers, owner = found
    total = len(layers)
    kept = evenly_spaced(total, max(1, round(depth * total)))
    new = nn.ModuleList([layers[i] for i in kept])
    for j, layer in enumerate(new):  # transformers layers know their index (KV-cache bookkeeping)
        for sub in layer.modules():
            if isinstance(getattr(sub, "layer_idx", None), int):
                sub.layer_idx = j
    parent_path, _, attr = path.rpartition(".")
    setattr(model.get_submodule(parent_path) if parent_path else model, attr, new)
    if isinstance(owner, (nn.TransformerEncoder, nn.TransformerDecoder)):
        owner.num_layers = len(kept)
    else:
        owner.num_hidden_layers = len(kept)
        types = getattr(owner, "layer_types", None)
        if isinstance(types, (list, tuple)) and len(types) == total:
            owner.layer_types = [types[i] for i in kept]
    return total, kept
