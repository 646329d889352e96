"""Pruning: unstructured L1 (made permanent), structured (channels / neurons / heads physically
removed), 2:4 semi-structured; optional regularized fine-tuning before and recovery after.

``layers`` (a :class:`~profilers.techniques.Layers` selector) restricts unstructured and 2:4 pruning
to the selected Linear/Conv layers (the output layer too, when selected); structured pruning removes
coupled channels across layers and takes no selector (restrict it with ``ignore``)."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Callable, ClassVar, Iterable, Sequence

import torch
from torch import nn
from torch.nn.utils import prune

from ..config import check_choice, check_non_negative, invalid, serializable
from ..flops import call_model
from ..measurement import sparse_bytes
from ..workload import Workload
from .base import ApplyRecord, Context, Technique, register, scaled_steps
from .selector import LAYER_TYPES, Layers, layers_of
from .training import _to_device, train_steps

__all__ = ["Prune", "METHODS", "LAYER_TYPES", "output_layer_name", "prunable_layers", "sparsity",
           "sparse_storage_bytes", "two_four_mask", "l1_norm", "group_norm"]

METHODS = ("l1_unstructured", "structured", "semi_structured_2_4")


@serializable("prune")
@dataclass(frozen=True)
class Prune(Technique):
    """Prune ``amount`` of the weights (``method``), then fine-tune ``finetune_steps`` to recover.

    * ``method``: "l1_unstructured" (smallest-|w| weights zeroed, per layer or ``scope="global"``),
      "structured" (``amount`` of the channels / neurons / heads removed: a smaller dense model),
      "semi_structured_2_4" (2 of every 4 weights zeroed; accelerated only on GPUs with sparse
      tensor cores; ``amount`` is fixed at 0.5).
    * ``regularize``: "none", "l1" or "group_lasso" fine-tuning for ``reg_steps`` steps with
      strength ``reg_strength`` before pruning (drives weights / groups towards zero first).
    * ``ignore``: names of modules never pruned (default: the output layer is always kept).
    * ``layers``: None (every prunable layer but the output layer) or a ``Layers`` selector: only
      the selected Linear/Conv layers (not for ``method="structured"``).
    """

    method: str = "l1_unstructured"
    amount: float = 0.5
    scope: str = "layer"
    finetune_steps: int = 0
    regularize: str = "none"
    reg_strength: float = 1e-4
    reg_steps: int = 0
    lr: float = 1e-3
    batch_size: int = 64
    ignore: tuple[str, ...] = ()
    layers: Layers | None = None
    stage: ClassVar[int] = 1
    repeatable: ClassVar[bool] = True

    def __post_init__(self) -> None:
        check_choice("Prune", "method", self.method, METHODS)
        check_choice("Prune", "scope", self.scope, ("layer", "global"))
        check_choice("Prune", "regularize", self.regularize, ("none", "l1", "group_lasso"))
        if not isinstance(self.amount, (int, float)) or isinstance(self.amount, bool) or not 0 < self.amount < 1:
            raise invalid("Prune", "amount", "a fraction in (0, 1)", self.amount)
        if self.method == "semi_structured_2_4" and self.amount != 0.5:
            raise invalid("Prune", "amount", "0.5 for semi_structured_2_4 (2 of every 4 weights)", self.amount)
        for f in ("finetune_steps", "reg_steps", "batch_size"):
            v = getattr(self, f)
            if not isinstance(v, int) or isinstance(v, bool) or v < (1 if f == "batch_size" else 0):
                raise invalid("Prune", f, "an integer >= " + ("1" if f == "batch_size" else "0"), v)
        check_non_negative("Prune", "reg_strength", self.reg_strength)
        if self.regularize != "none" and self.reg_steps == 0:
            raise invalid("Prune", "reg_steps", f"an integer >= 1 with regularize={self.regularize!r}", self.reg_steps)
        if not isinstance(self.lr, (int, float)) or isinstance(self.lr, bool) or self.lr <= 0:
            raise invalid("Prune", "lr", "a number > 0", self.lr)
        object.__setattr__(self, "ignore", tuple(self.ignore))
        if self.layers is not None and not isinstance(self.layers, Layers):
            raise invalid("Prune", "layers", "None (every prunable layer but the output layer) or a Layers selector",
                          self.layers)
        if self.layers is not None and self.method == "structured":
            raise invalid("Prune", "layers", "None for method='structured' (it removes coupled channels across "
                          "layers; restrict it with ignore)", self.layers)

    @property
    def cost_key(self) -> str:
        return "prune"

    @property
    def trains(self) -> bool:
        return self.finetune_steps > 0 or self.reg_steps > 0

    def missing(self, workload: Workload) -> tuple[str, ...]:
        return tuple(f"{need} (or finetune_steps=0 and reg_steps=0: no recovery training)"
                     for need in super().missing(workload))

    def at_fidelity(self, fidelity: float) -> "Prune":
        super().at_fidelity(fidelity)
        return self if fidelity >= 1 else replace(self, finetune_steps=scaled_steps(self.finetune_steps, fidelity))

    def short_label(self) -> str:
        """``prune_l1_0.5`` (L1 unstructured, half the weights), ``prune_structured_0.3``,
        ``prune_2:4``; non-default settings are appended (``_global``, ``_ft100``, ``_l1reg20``,
        ``_lr0.0003``, ...) and a selector after ``@``."""
        method = {"l1_unstructured": "l1", "structured": "structured", "semi_structured_2_4": "2:4"}[self.method]
        parts = ["prune", method] + ([] if self.method == "semi_structured_2_4" else [f"{self.amount:g}"])
        if self.scope != "layer":
            parts.append(self.scope)
        if self.finetune_steps:
            parts.append(f"ft{self.finetune_steps}")
        if self.regularize != "none":
            parts.append(f"{self.regularize}reg{self.reg_steps}")
            if self.reg_strength != _PRUNE_DEFAULTS["reg_strength"]:
                parts.append(f"strength{self.reg_strength:g}")
        for f, short in (("lr", "lr"), ("batch_size", "bs")):
            v = getattr(self, f)
            if v != _PRUNE_DEFAULTS[f]:
                parts.append(f"{short}{v:g}")
        if self.ignore:
            parts.append("ignore(" + ",".join(self.ignore) + ")")
        label = "_".join(parts)
        return label + (f"@{self.layers.short_label()}" if self.layers is not None else "")


_PRUNE_DEFAULTS = {f.name: f.default for f in fields(Prune)}


# --------------------------------------------------------------------------------------------
# which layers are pruned
# --------------------------------------------------------------------------------------------

def output_layer_name(model: nn.Module) -> str | None:
    """The layer that produces the model's output: the last Linear/Conv in definition order
    (a classifier, a pooler); always kept so the output interface stays the same."""
    last = None
    for name, m in model.named_modules():
        if isinstance(m, LAYER_TYPES):
            last = name
    return last


def _under(name: str, prefixes: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def check_ignore(model: nn.Module, t: Prune) -> None:
    names = {n for n, _ in model.named_modules() if n}
    for n in t.ignore:
        if n not in names:
            sample = ", ".join(repr(x) for x in sorted(names)[:6])
            raise invalid("Prune", "ignore", f"names of modules of {type(model).__name__} "
                          f"(from named_modules(), e.g. {sample})", n)


def prunable_layers(model: nn.Module, t: Prune, *, linear_only: bool = False) -> list[tuple[str, nn.Module]]:
    """(name, module) of the Linear/Conv layers ``t`` may prune: those ``t.layers`` selects, or by
    default all but the output layer; never the ``ignore``d modules (and their children) nor the
    :func:`~profilers.techniques.selector.untouchable` ones (inside ``nn.MultiheadAttention``)."""
    kinds = (nn.Linear,) if linear_only else LAYER_TYPES
    if t.layers is None:
        out = output_layer_name(model)
        keep = lambda n: n != out  # noqa: E731
    else:
        chosen = set(t.layers.select(model))
        keep = chosen.__contains__
    return [(n, m) for n, m in layers_of(model, kinds) if keep(n) and not _under(n, t.ignore)]


# --------------------------------------------------------------------------------------------
# regularized fine-tuning before pruning
# --------------------------------------------------------------------------------------------


def l1_norm(layers: Sequence[tuple[str, nn.Module]]) -> torch.Tensor:
    """sum |w| over the layers' weights."""
    return sum((m.weight.abs().sum() for _, m in layers), torch.zeros(()))


def group_norm(layers: Sequence[tuple[str, nn.Module]]) -> torch.Tensor:
    """sum over output channels / neurons of the L2 norm of each one's weights (the groups that
    structured pruning removes); a tiny epsilon keeps the gradient finite at zero."""
    total = torch.zeros(())
    for _, m in layers:
        w = m.weight
        total = total + w.flatten(1).pow(2).sum(1).add(1e-12).sqrt().sum()
    return total


def regularizer(t: Prune, layers: Sequence[tuple[str, nn.Module]]) -> Callable[[nn.Module], torch.Tensor]:
    norm = l1_norm if t.regularize == "l1" else group_norm
    strength = float(t.reg_strength)
    return lambda model: strength * norm(layers).to(layers[0][1].weight.device)


def _regularize(model: nn.Module, t: Prune, ctx: Context, layers, notes: list[str]) -> tuple[int, int]:
    if t.regularize == "none":
        return 0, 0
    if t.reg_steps == 0 or not layers:
        notes.append(f"regularize={t.regularize!r} with reg_steps=0: no regularized training done")
        return 0, 0
    norm = l1_norm if t.regularize == "l1" else group_norm
    with torch.no_grad():
        before = float(norm(layers))
    steps, samples = train_steps(model, ctx, steps=t.reg_steps, batch_size=t.batch_size, lr=t.lr, who="Prune",
                                 extra_loss=regularizer(t, layers))
    with torch.no_grad():
        after = float(norm(layers))
    what = "L1 norm" if t.regularize == "l1" else "sum of channel L2 norms"
    notes.append(f"{t.regularize} regularization: {steps} steps at strength {t.reg_strength:g}; "
                 f"{what} of the prunable weights {before:.4g} -> {after:.4g}")
    return steps, samples


def _finetune(model: nn.Module, t: Prune, ctx: Context, notes: list[str]) -> tuple[int, int]:
    if t.finetune_steps == 0:
        return 0, 0
    steps, samples = train_steps(model, ctx, steps=t.finetune_steps, batch_size=t.batch_size, lr=t.lr, who="Prune")
    notes.append(f"recovery fine-tuning: {steps} steps, {samples} samples")
    return steps, samples


# --------------------------------------------------------------------------------------------
# sparsity figures
# --------------------------------------------------------------------------------------------


def sparsity(model: nn.Module, layers: Sequence[tuple[str, nn.Module]] | None = None) -> dict[str, float]:
    """Share of exactly-zero weights per layer (``layers``, default every Linear/Conv), plus
    ``"pruned layers"`` (their total) and ``"all parameters"``."""
    layers = layers if layers is not None else [(n, m) for n, m in model.named_modules() if isinstance(m, LAYER_TYPES)]
    out: dict[str, float] = {}
    zeros = total = 0
    for name, m in layers:
        w = m.weight.detach()
        z = int((w == 0).sum())
        out[name] = z / w.numel()
        zeros, total = zeros + z, total + w.numel()
    out["pruned layers"] = zeros / total if total else 0.0
    allz = sum(int((p.detach() == 0).sum()) for p in model.parameters())
    alln = sum(p.numel() for p in model.parameters())
    out["all parameters"] = allz / alln if alln else 0.0
    return out


def sparse_storage_bytes(model: nn.Module) -> dict[str, int]:
    """Bytes to store the parameters densely vs. with the one sparse rule,
    :func:`profilers.measurement.sparse_bytes` (a weight stored as its nonzero values plus a 1-bit
    occupancy mask where that is smaller; biases and other 1-D tensors dense): the honest gain of
    unstructured sparsity, storage, not speed."""
    dense = sparse = 0
    for p in model.parameters():
        d = p.detach()
        size = d.numel() * d.element_size()
        dense += size
        s = sparse_bytes(d)
        sparse += size if s is None else s
    return {"dense": dense, "values_plus_bitmask": sparse}


def _sparsity_notes(model: nn.Module, layers) -> list[str]:
    s = sparsity(model, layers)
    per = ", ".join(f"{n} {s[n]:.1%}" for n, _ in layers)
    st = sparse_storage_bytes(model)
    return [f"sparsity {s['pruned layers']:.1%} of the weights in {len(layers)} pruned layers ({per}); "
            f"{s['all parameters']:.1%} of all parameters",
            f"storage: {st['dense']} B dense, {st['values_plus_bitmask']} B as nonzero values + 1-bit mask"]


# --------------------------------------------------------------------------------------------
# the three methods
# --------------------------------------------------------------------------------------------


def _l1_unstructured(model: nn.Module, t: Prune, ctx: Context, layers, notes: list[str]) -> tuple[int, int]:
    params = [(m, "weight") for _, m in layers]
    if t.scope == "global":
        prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=float(t.amount))
    else:
        for m, _ in params:
            prune.l1_unstructured(m, "weight", amount=float(t.amount))
    steps, samples = _finetune(model, t, ctx, notes)  # masks in place: pruned weights stay zero
    for m, _ in params:
        prune.remove(m, "weight")
    notes.extend(_sparsity_notes(model, layers))
    notes.append("dense kernels: no speed-up expected (same FLOPs and latency; only sparse storage shrinks)")
    return steps, samples


def two_four_mask(weight: torch.Tensor) -> torch.Tensor:
    """Keep the 2 largest |w| of every 4 consecutive weights along the input (last) dim."""
    w = weight.detach()
    g = w.abs().reshape(w.shape[0], -1, 4)
    keep = g.topk(2, dim=-1).indices
    return torch.zeros_like(g, dtype=torch.bool).scatter_(-1, keep, True).reshape(w.shape)


def _to_semi_structured(model: nn.Module, layers, ctx: Context, notes: list[str]) -> bool:
    """Swap the 2:4 weights for torch's semi-structured sparse tensors (CUDA, sm >= 8.0)."""
    from torch.sparse import SparseSemiStructuredTensor, to_sparse_semi_structured

    def convert(w: torch.Tensor) -> torch.Tensor:
        try:
            return to_sparse_semi_structured(w)
        except RuntimeError:
            if w.dtype != torch.float32:
                raise
            # cuSPARSELt (the default where present) has no fp32; CUTLASS has
            forced = SparseSemiStructuredTensor._FORCE_CUTLASS
            SparseSemiStructuredTensor._FORCE_CUTLASS = True
            try:
                return to_sparse_semi_structured(w)
            finally:
                SparseSemiStructuredTensor._FORCE_CUTLASS = forced

    dense = {n: m.weight for n, m in layers}
    done, failed = [], []
    for n, m in layers:
        try:
            m.weight = nn.Parameter(convert(m.weight.detach().contiguous()), requires_grad=False)
            done.append(n)
        except (RuntimeError, ValueError, NotImplementedError) as e:
            failed.append(f"{n} ({str(e).splitlines()[0][:120]})")
    if done and ctx.workload is not None:
        try:  # a real forward through the sparse kernels, or back to dense
            with torch.no_grad():
                call_model(model, _to_device(ctx.workload.inputs(2), ctx.device))
        except Exception as e:  # noqa: BLE001 - reported, never hidden
            for n, m in layers:
                m.weight = dense[n]
            notes.append(f"sparse kernels failed on a forward ({type(e).__name__}: {str(e)[:160]}); kept dense")
            return False
    if failed:
        notes.append("kept dense (2:4 pattern applied, no sparse kernel): " + "; ".join(failed))
    if done:
        notes.append(f"2:4 sparse tensor-core kernels (torch.sparse semi-structured) on {len(done)} of "
                     f"{len(layers)} layers")
    return bool(done)


def _semi_structured(model: nn.Module, t: Prune, ctx: Context, layers, notes: list[str]) -> tuple[int, int, bool]:
    usable = [(n, m) for n, m in layers if m.in_features % 4 == 0]
    skipped = [n for n, m in layers if m.in_features % 4]
    if skipped:
        notes.append("not 2:4 pruned (in_features not a multiple of 4): " + ", ".join(skipped))
    for _, m in usable:
        prune.custom_from_mask(m, "weight", two_four_mask(m.weight))
    steps, samples = _finetune(model, t, ctx, notes)  # the 2:4 mask stays in place
    for _, m in usable:
        prune.remove(m, "weight")
    notes.extend(_sparsity_notes(model, usable))
    dev = ctx.device
    accelerated = False
    if dev.type == "cuda" and torch.cuda.get_device_capability(dev) >= (8, 0) and usable:
        accelerated = _to_semi_structured(model, usable, ctx, notes)
    elif dev.type == "cuda":
        notes.append("2:4 pattern applied; this GPU has no sparse tensor cores (needs compute capability >= 8.0), "
                     "dense latency unchanged")
    else:
        notes.append(f"2:4 pattern applied; no sparse kernel on {dev.type.upper()}, dense latency unchanged")
    return steps, samples, accelerated


@register(Prune)
def _apply_prune(model: nn.Module, t: Prune, ctx: Context):
    check_ignore(model, t)
    model = model.to(ctx.device)
    notes: list[str] = []
    if t.method == "structured":
        from .pruning_structured import structured_layers, structured_prune

        layers = structured_layers(model, t)
    else:
        layers = prunable_layers(model, t, linear_only=t.method == "semi_structured_2_4")
    if not layers and t.layers is not None:
        kinds = "Linear" if t.method == "semi_structured_2_4" else "Linear/Conv"
        raise invalid("Prune", "layers", f"a selector matching at least one {kinds} layer of {type(model).__name__} "
                      "outside ignore", t.layers)
    if not layers:
        raise invalid("Prune", "ignore", f"names that leave at least one prunable layer in {type(model).__name__} "
                      f"(the output layer {output_layer_name(model)!r} is always kept)", t.ignore)
    reg_steps, reg_samples = _regularize(model, t, ctx, layers, notes)
    accelerated: bool | None
    if t.method == "l1_unstructured":
        steps, samples = _l1_unstructured(model, t, ctx, layers, notes)
        accelerated = False
    elif t.method == "structured":
        structured_prune(model, t, ctx, notes)
        steps, samples = _finetune(model, t, ctx, notes)
        accelerated = None  # a smaller dense model: fast on any dense kernel
    else:
        steps, samples, accelerated = _semi_structured(model, t, ctx, layers, notes)
    model.eval()
    return model, ApplyRecord(technique="", seconds=0.0, optimizer_steps=reg_steps + steps,
                              samples=reg_samples + samples, accelerated=accelerated, notes=tuple(notes))
