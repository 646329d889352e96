"""Per-layer sensitivities and costs, measured: the inputs of :func:`optimizer.solve_layerwise`.

For every Linear/Conv layer of a workload's model and every per-layer *choice* (a technique config
applied to that one layer), :func:`profile_layers` measures, with only that layer changed:

* ``sensitivity``: the base model's quality minus the quality of the changed model, both measured
  by the workload's own evaluation on its held-out data (positive = worse);
* ``bytes``: the layer's state-dict tensor bytes in its deployed form (int8 data plus scales for
  torchao weights; a weight stored as its non-zero values plus a 1-bit mask where that is smaller
  than dense: the one rule, :func:`profilers.measurement.sparse_bytes`);
* ``flops``: the layer's forward FLOPs at the workload's batch size (``FlopCounterMode``, per module).

Choices are technique configs that take a layer selector (``Quantize("bf16")``,
``Quantize("int8_weight_only")``, ``Prune("l1_unstructured", amount=0.5)``, ...); each measurement is
``apply(model, choice.on(layer), workload)``, the same ``apply`` as everywhere. A choice is keyed by
its :meth:`~profilers.techniques.Technique.short_label` (``"bf16"``, ``"prune_l1_0.5"``); the layer
as the base model has it is the implicit choice ``"fp32"`` (always included, sensitivity 0). A
choice that does not run on a layer (torchao has no int8 convolution) is recorded in ``skipped``
with the reason, never replaced by something else.

:func:`assemble_layers` builds the model for a whole assignment ``{layer: choice}`` (a config, or a
label looked up in a profile's ``choice_configs``: never parsed); :func:`deployed_bytes` measures
any model's bytes by the same rule, so per-layer bytes add up to the assembled model's. Results
persist in an optional JSON file (``cache_path``), keyed by the model's content, the workload,
layer, the choice's JSON, batch size and library versions.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import from_json_dict, invalid, serializable, to_json_dict
from .measurement import sparse_bytes, tensor_leaves
from .techniques import Prune, Quantize, Technique
from .techniques.selector import layers_of

__all__ = [
    "DEFAULT_CHOICES",
    "KEEP",
    "LayerMeasurement",
    "LayerProfile",
    "assemble_layers",
    "deployed_bytes",
    "eligible_layers",
    "profile_layers",
]

KEEP = "fp32"  # the label of the implicit choice: the layer as the base model has it
DEFAULT_CHOICES: tuple[Technique, ...] = (Quantize("bf16"), Quantize("int8_weight_only"),
                                          Prune("l1_unstructured", amount=0.5), Prune("l1_unstructured", amount=0.8))


def eligible_layers(model: nn.Module) -> list[str]:
    """Names of the Linear/Conv layers a per-layer choice may change
    (:func:`profilers.techniques.selector.layers_of`: those inside ``nn.MultiheadAttention`` excluded)."""
    return [n for n, _ in layers_of(model)]


def _device_of(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def _selectable_names() -> str:
    from .techniques.base import technique_types

    names = [t.__name__ for t in technique_types() if "layers" in getattr(t, "__dataclass_fields__", {})]
    return " or ".join(names)


def _check_config(owner: str, field: str, choice: Any) -> Technique:
    if not isinstance(choice, Technique) or not choice.selectable:
        raise invalid(owner, field, f"a {_selectable_names()} config (a technique that takes a layer selector)",
                      choice if isinstance(choice, str) else type(choice).__name__)
    if getattr(choice, "layers", None) is not None:
        raise invalid(owner, field, "a config without layers (the choice is applied to one layer at a time)",
                      choice.label())
    return choice


def _resolve(layer: str, choice: Any, choices: Mapping[str, Technique]) -> Technique | None:
    """The config of ``choice`` (a config, ``KEEP``, or a label of ``choices``); None for ``KEEP``."""
    field = f"assignment[{layer!r}]"
    if isinstance(choice, str):
        if choice == KEEP:
            return None
        if choice in choices:
            return choices[choice]
        known = ", ".join(repr(c) for c in (KEEP, *choices))
        raise invalid("assemble_layers", field, f"{KEEP!r}, a technique config or a label among the choices "
                      f"({known})", choice)
    return _check_config("assemble_layers", field, choice)


def assemble_layers(model: nn.Module, assignment: Mapping[str, Any], *, choices: Any = None,
                    workload: Any = None) -> nn.Module:
    """A copy of ``model`` with each ``layer`` of ``assignment`` changed to its choice (eval mode).

    A choice is a technique config (applied as ``apply(model, config.on(layer), workload)``),
    ``"fp32"`` (unchanged) or a label resolved through ``choices``: a :class:`LayerProfile` or its
    ``choice_configs`` mapping (label -> config). One ``apply`` of the per-layer techniques (each
    config ``.on`` its one layer), in composition order (prunes before quantizations).
    """
    from .techniques import apply

    if not isinstance(model, nn.Module):
        raise invalid("assemble_layers", "model", "a torch.nn.Module", type(model).__name__)
    configs = getattr(choices, "choice_configs", choices) if choices is not None else {}
    if not isinstance(configs, Mapping):
        raise invalid("assemble_layers", "choices", "None, a LayerProfile or a mapping of label -> technique config",
                      type(choices).__name__)
    names = set(eligible_layers(model))
    if not isinstance(assignment, Mapping):
        raise invalid("assemble_layers", "assignment", "a mapping of layer -> choice", assignment)
    steps: list[Technique] = []
    for layer, choice in assignment.items():
        if layer not in names:
            raise invalid("assemble_layers", "assignment", f"layer names among {sorted(names)}", layer)
        config = _resolve(layer, choice, configs)
        if config is not None:
            steps.append(config.on(layer))
    steps.sort(key=lambda t: t.stage)  # stable: prunes before quantizations, layers in assignment order
    return apply(model, steps, workload, device=_device_of(model), cache=False).eval()


def deployed_bytes(module: nn.Module) -> int:
    """Bytes of ``module``'s state-dict tensors as deployed: quantized tensors by their inner data
    and scales; a weight by :func:`profilers.measurement.sparse_bytes` where that rule stores it
    sparsely (non-zero values plus a 1-bit mask), else dense."""
    total = 0
    for t in module.state_dict().values():
        if not isinstance(t, torch.Tensor):
            continue
        sparse = sparse_bytes(t)
        total += sparse if sparse is not None else sum(leaf.numel() * leaf.element_size() for leaf in tensor_leaves(t))
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
    choices: tuple[str, ...]  # labels, "fp32" first
    choice_configs: dict[str, Technique]  # label -> the technique config of that choice ("fp32" has none)
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


def _measure_one(base: nn.Module, layer: str, choice: Technique | None, workload, x, base_quality: float,
                 root: str):
    from .flops import count_flops
    from .techniques import apply, quality

    try:
        if choice is None:
            model = copy.deepcopy(base).eval()
        else:
            model = apply(base, choice.on(layer), workload, device=_device_of(base), cache=False).eval()
        flops = count_flops(model, x).by_module.get(f"{root}.{layer}", 0)
    except Exception as e:  # noqa: BLE001 - a choice that does not run on this layer is recorded, not hidden
        while e.__cause__ is not None:  # the root cause (count_flops wraps what the forward raised)
            e = e.__cause__
        text = str(e).splitlines()[0] if str(e) else ""
        return f"{type(e).__name__}: {text[:320]}"
    q = quality(model, workload)
    b = deployed_bytes(model.get_submodule(layer))
    return LayerMeasurement(quality=q, sensitivity=base_quality - q, bytes=b, flops=int(flops))


def profile_layers(workload, *, choices: Sequence[Technique] = DEFAULT_CHOICES,
                   layers: Sequence[str] | None = None, cache_path: str | Path | None = None) -> LayerProfile:
    """Measure every (layer, choice) of ``workload``'s model; see the module docstring.

    ``layers``: None (every Linear/Conv layer) or the names to profile. ``choices``: technique
    configs that take a layer selector, without one (``Quantize("bf16")``, ``Prune("l1_unstructured",
    amount=0.5)``); the unchanged layer (``"fp32"``) is always added. ``cache_path``: a JSON file of
    earlier measurements to reuse (and to extend with this call's).
    """
    from .techniques import TechniqueCache, quality
    from .workload import Workload

    owner = "profile_layers"
    if not isinstance(workload, Workload) or workload.evaluate is None:
        raise invalid(owner, "workload", "a Workload with an evaluate(model) function",
                      getattr(workload, "name", type(workload).__name__))
    if isinstance(choices, (str, Technique)) or not isinstance(choices, Sequence) or not choices:
        raise invalid(owner, "choices", f"a non-empty sequence of {_selectable_names()} configs (e.g. "
                      "Quantize('bf16'), Prune('l1_unstructured', amount=0.5))", choices)
    configs: dict[str, Technique] = {}
    for i, c in enumerate(choices):
        _check_config(owner, f"choices[{i}]", c)
        label = c.short_label()
        if configs.get(label, c) != c:
            raise invalid(owner, f"choices[{i}]", f"a config whose label {label!r} no other choice has "
                          f"({configs[label].label()} has it)", c.label())
        configs[label] = c
    chosen = (KEEP, *configs)
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
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]

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
            config = configs.get(choice)
            k = key(layer, KEEP if config is None else to_json_dict(config))
            if k in entries:
                cached += 1
            else:
                m = _measure_one(base, layer, config, workload, x, base_quality, root)
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
                  f"(weights as non-zero values + 1-bit mask where smaller); flops = FlopCounterMode "
                  f"forward FLOPs of the layer at batch {workload.batch_size}")
    return LayerProfile(workload=workload.name, quality_metric=workload.quality_metric, model_fingerprint=fp,
                        base_quality=base_quality, batch_size=workload.batch_size, layers=layers, choices=chosen,
                        choice_configs=configs, measurements=out, skipped=skipped, other_bytes=int(other), provenance=provenance,
                        measure_s=time.perf_counter() - t0, measured=measured, from_cache=cached)
