"""Per-layer sensitivities and costs, measured: the inputs of :func:`optimizer.solve_layerwise`.

For every Linear/Conv layer of a workload's model and every per-layer *choice* (how that one layer
is deployed), :func:`profile_layers` measures, with only that layer changed:

* ``sensitivity``: the base model's quality minus the quality of the changed model, both measured
  by the workload's own evaluation on its held-out data (positive = worse);
* ``bytes``: the layer's state-dict tensor bytes in its deployed form (int8 data plus scales for
  torchao weights; a pruned weight stored as its non-zero values plus a 1-bit mask where that is
  smaller than dense, the rule :attr:`Profile.sparse_serialized_bytes` uses);
* ``flops``: the layer's forward FLOPs at the workload's batch size (``FlopCounterMode``, per module).

Choices (``CHOICES`` and ``"prune_l1_<amount>"``): ``"fp32"`` (the layer as the base model has it;
always included, sensitivity 0), ``"bf16"``/``"fp16"`` (the layer's weights cast, its inputs cast
in and its outputs back), the torchao modes of :class:`~profilers.techniques.Quantize`
(``quantize_`` with a ``filter_fn`` selecting the one layer) and ``"prune_l1_0.5"`` etc. (L1
unstructured pruning of the layer's weight with ``torch.nn.utils.prune``, made permanent). A choice
that does not run on a layer (torchao has no int8 convolution) is recorded in ``skipped`` with the
reason, never replaced by something else.

:func:`assemble_layers` builds the model for a whole assignment ``{layer: choice}``;
:func:`deployed_bytes` measures any model's bytes by the same rule, so per-layer bytes add up to the
assembled model's. Results persist in an optional JSON file (``cache_path``), keyed by the model's
content, the workload, layer, choice, batch size and library versions.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._config import from_json_dict, invalid, serializable, to_json_dict
from .measurement import tensor_leaves

__all__ = [
    "CHOICES",
    "KEEP",
    "LayerMeasurement",
    "LayerProfile",
    "assemble_layers",
    "check_choice_name",
    "deployed_bytes",
    "eligible_layers",
    "profile_layers",
]

KEEP = "fp32"
_CASTS = {"bf16": torch.bfloat16, "fp16": torch.float16}
_TORCHAO = ("int8_weight_only", "int8_dynamic", "int4_weight_only", "fp8")
CHOICES = (KEEP, *_CASTS, *_TORCHAO)
_PRUNE = "prune_l1_"
_ALLOWED = "names among " + ", ".join(repr(c) for c in CHOICES) + " or 'prune_l1_<amount in (0, 1)>'"


def check_choice_name(owner: str, field: str, name: Any) -> tuple[str, Any]:
    """(kind, argument) of a choice name: ("keep", None), ("cast", dtype), ("torchao", mode) or
    ("prune", amount); raises the one error format for anything else."""
    if name == KEEP:
        return "keep", None
    if name in _CASTS:
        return "cast", _CASTS[name]
    if name in _TORCHAO:
        return "torchao", name
    if isinstance(name, str) and name.startswith(_PRUNE):
        try:
            amount = float(name[len(_PRUNE):])
        except ValueError:
            amount = math.nan
        if 0 < amount < 1:
            return "prune", amount
    raise invalid(owner, field, _ALLOWED, name)


class _Cast(nn.Module):
    """A layer kept in ``dtype``: inputs cast in, outputs cast back to the layer's original dtype
    (the model around it is unchanged)."""

    def __init__(self, layer: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.out_dtype = layer.weight.dtype
        self.layer = layer.to(dtype)
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x.to(self.dtype)).to(self.out_dtype)


def eligible_layers(model: nn.Module) -> list[str]:
    """Names of the Linear/Conv layers (those inside ``nn.MultiheadAttention`` excluded: its fused
    kernel reads the raw projection weights)."""
    from .techniques.pruning import LAYER_TYPES

    mha = [n for n, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)]
    return [n for n, m in model.named_modules() if n and isinstance(m, LAYER_TYPES)
            and not any(n.startswith(p + ".") for p in mha)]


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def _apply_choice(model: nn.Module, layer: str, choice: str) -> None:
    """Change ``layer`` of ``model`` (in place) to ``choice``."""
    kind, arg = check_choice_name("assemble_layers", "assignment", choice)
    module = model.get_submodule(layer)
    if kind == "cast":
        _set_module(model, layer, _Cast(module, arg))
    elif kind == "torchao":
        import torchao.quantization as tq

        from .techniques.quantization import _TORCHAO_CONFIG

        tq.quantize_(model, getattr(tq, _TORCHAO_CONFIG[arg])(), filter_fn=lambda m, fqn: fqn == layer)
    elif kind == "prune":
        nn.utils.prune.l1_unstructured(module, "weight", amount=arg)
        nn.utils.prune.remove(module, "weight")


def assemble_layers(model: nn.Module, assignment: Mapping[str, str]) -> nn.Module:
    """A copy of ``model`` with each ``layer`` of ``assignment`` changed to its choice (eval mode)."""
    if not isinstance(model, nn.Module):
        raise invalid("assemble_layers", "model", "a torch.nn.Module", type(model).__name__)
    names = set(eligible_layers(model))
    if not isinstance(assignment, Mapping):
        raise invalid("assemble_layers", "assignment", "a mapping of layer -> choice", assignment)
    for layer, choice in assignment.items():
        if layer not in names:
            raise invalid("assemble_layers", "assignment", f"layer names among {sorted(names)}", layer)
        check_choice_name("assemble_layers", f"assignment[{layer!r}]", choice)
    out = copy.deepcopy(model)
    with torch.no_grad():
        for layer, choice in assignment.items():
            _apply_choice(out, layer, choice)
    return out.eval()


def deployed_bytes(module: nn.Module) -> int:
    """Bytes of ``module``'s state-dict tensors as deployed: quantized tensors by their inner data
    and scales; a floating weight (2-D or more) with zeros as non-zero values plus a 1-bit mask when
    that is smaller than dense."""
    total = 0
    for t in module.state_dict().values():
        if not isinstance(t, torch.Tensor):
            continue
        dense = sum(leaf.numel() * leaf.element_size() for leaf in tensor_leaves(t))
        if type(t) is torch.Tensor and t.is_floating_point() and t.dim() >= 2:
            sparse = int((t != 0).sum()) * t.element_size() + -(-t.numel() // 8)
            dense = min(dense, sparse)
        total += dense
    return int(total)


@serializable("layer_measurement")
@dataclass(frozen=True)
class LayerMeasurement:
    """One (layer, choice): the model's quality with only that layer changed, and the layer's costs."""

    quality: float
    sensitivity: float  # base quality - quality
    bytes: int
    flops: int


@serializable("layer_profile")
@dataclass(frozen=True)
class LayerProfile:
    """What :func:`profile_layers` measured. :meth:`options` is the ``options`` of ``solve_layerwise``."""

    workload: str
    quality_metric: str
    model_fingerprint: str
    base_quality: float
    batch_size: int
    layers: tuple[str, ...]
    choices: tuple[str, ...]
    measurements: dict[str, dict[str, LayerMeasurement]]  # layer -> choice -> measurement
    skipped: dict[str, dict[str, str]]  # layer -> choice -> why it does not run
    other_bytes: int  # the model's bytes outside the profiled layers (added to every assignment)
    provenance: str
    measure_s: float  # wall time of the profile_layers call
    measured: int  # (layer, choice) pairs measured in that call
    from_cache: int  # pairs read from cache_path instead

    def options(self) -> dict[str, dict[str, dict[str, float]]]:
        """``{layer: {choice: {"sensitivity": s, "bytes": b, "flops": f}}}`` for ``solve_layerwise``."""
        return {layer: {c: {"sensitivity": m.sensitivity, "bytes": float(m.bytes), "flops": float(m.flops)}
                        for c, m in by_choice.items()} for layer, by_choice in self.measurements.items()}

    def fp32_bytes(self) -> int:
        """Bytes of the unchanged model (every layer ``"fp32"``)."""
        return self.other_bytes + sum(m[KEEP].bytes for m in self.measurements.values())


def _versions() -> str:
    import torchao

    return f"torch {torch.__version__}, torchao {torchao.__version__}"


def _load(path: Path | None) -> dict[str, Any]:
    if path is None or not path.exists():
        return {}
    data = json.loads(path.read_text())
    return data.get("entries", {}) if isinstance(data, dict) and data.get("version") == 1 else {}


def _save(path: Path | None, entries: Mapping[str, Any]) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"type": "layer_profile_cache", "version": 1, "entries": entries}, sort_keys=True))
    tmp.replace(path)


def _measure_one(base: nn.Module, layer: str, choice: str, workload, x, base_quality: float, root: str):
    from .flops import count_flops
    from .techniques import quality

    try:
        model = assemble_layers(base, {layer: choice})
        flops = count_flops(model, x).by_module.get(f"{root}.{layer}", 0)
    except Exception as e:  # noqa: BLE001 - a choice that does not run on this layer is recorded, not hidden
        while e.__cause__ is not None:  # the root cause (count_flops wraps what the forward raised)
            e = e.__cause__
        text = str(e).splitlines()[0] if str(e) else ""
        return f"{type(e).__name__}: {text[:240]}"
    q = quality(model, workload)
    b = deployed_bytes(model.get_submodule(layer))
    return LayerMeasurement(quality=q, sensitivity=base_quality - q, bytes=b, flops=int(flops))


def profile_layers(workload, *, choices: Sequence[str] = (KEEP, "bf16", "int8_weight_only", "prune_l1_0.5",
                                                           "prune_l1_0.8"),
                   layers: Sequence[str] | None = None, cache_path: str | Path | None = None) -> LayerProfile:
    """Measure every (layer, choice) of ``workload``'s model; see the module docstring.

    ``layers``: None (every Linear/Conv layer) or the names to profile. ``choices``: choice names;
    ``"fp32"`` is always added. ``cache_path``: a JSON file of earlier measurements to reuse (and to
    extend with this call's).
    """
    from .techniques import TechniqueCache, quality
    from .workload import Workload

    owner = "profile_layers"
    if not isinstance(workload, Workload) or workload.evaluate is None:
        raise invalid(owner, "workload", "a Workload with an evaluate(model) function",
                      getattr(workload, "name", type(workload).__name__))
    if isinstance(choices, str) or not isinstance(choices, Sequence) or not choices:
        raise invalid(owner, "choices", "a non-empty sequence of choice " + _ALLOWED, choices)
    for i, c in enumerate(choices):
        check_choice_name(owner, f"choices[{i}]", c)
    chosen = tuple(dict.fromkeys((KEEP, *choices)))
    t0 = time.perf_counter()
    base = workload.build().eval()
    names = eligible_layers(base)
    if layers is None:
        layers = names
    elif isinstance(layers, str) or not isinstance(layers, Sequence) or not layers:
        raise invalid(owner, "layers", f"None (every Linear/Conv layer) or a non-empty sequence of names among "
                      f"{names}", layers)
    for layer in layers:
        if layer not in names:
            raise invalid(owner, "layers", f"names of Linear/Conv layers of {type(base).__name__} ({names})", layer)
    layers = tuple(dict.fromkeys(layers))
    path = Path(cache_path) if cache_path is not None else None
    entries = _load(path)
    fp = TechniqueCache.fingerprint(base)
    versions = _versions()

    def key(*parts: Any) -> str:
        payload = [fp, workload.name, workload.batch_size, versions, *parts]
        return hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:32]

    base_key = key("base quality")
    if base_key not in entries:
        entries[base_key] = {"quality": quality(copy.deepcopy(base), workload)}
    base_quality = float(entries[base_key]["quality"])
    x = workload.inputs(workload.batch_size)
    root = type(base).__name__
    measured = cached = 0
    out: dict[str, dict[str, LayerMeasurement]] = {}
    skipped: dict[str, dict[str, str]] = {}
    for layer in layers:
        for choice in chosen:
            k = key(layer, choice)
            if k in entries:
                cached += 1
            else:
                m = _measure_one(base, layer, choice, workload, x, base_quality, root)
                entries[k] = {"skipped": m} if isinstance(m, str) else to_json_dict(m)
                measured += 1
            e = entries[k]
            if "skipped" in e:
                skipped.setdefault(layer, {})[choice] = e["skipped"]
            else:
                out.setdefault(layer, {})[choice] = from_json_dict(e)
    _save(path, entries)
    from .host import host_device_name

    other = deployed_bytes(base) - sum(deployed_bytes(base.get_submodule(n)) for n in layers)
    provenance = (f"measured on {host_device_name()}, {versions}: quality = {workload.quality_metric or 'evaluate()'} "
                  f"of {workload.name} on its held-out data with only that layer changed (sensitivity = base "
                  f"{base_quality:.6g} - quality); bytes = the layer's state-dict tensor bytes as deployed "
                  f"(pruned weights as non-zero values + 1-bit mask where smaller); flops = FlopCounterMode "
                  f"forward FLOPs of the layer at batch {workload.batch_size}")
    return LayerProfile(workload=workload.name, quality_metric=workload.quality_metric, model_fingerprint=fp,
                        base_quality=base_quality, batch_size=workload.batch_size, layers=layers, choices=chosen,
                        measurements=out, skipped=skipped, other_bytes=int(other), provenance=provenance,
                        measure_s=time.perf_counter() - t0, measured=measured, from_cache=cached)
