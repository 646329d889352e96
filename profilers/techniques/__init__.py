"""Cost-saving techniques, applied for real: each returns a new, deployable model.

    from profilers import workloads
    from profilers.techniques import Distill, Prune, Quantize, apply, quality

    wl = workloads.get("digits")
    small = apply(wl.build(), [Prune("structured", amount=0.5, finetune_steps=100), Quantize("int8_dynamic")], wl)
    quality(small, wl)         # P(M) on held-out data
    records(small)             # what each step cost (steps, samples, measured seconds)

Compositions run in the order distill -> prune -> quantize -> mixed precision; incompatible ones are
rejected with the reason (each technique declares its ``stage``, whether it is ``repeatable`` and what it
``excludes``). ``Prune`` and ``Quantize`` take a ``layers`` selector (:class:`Layers`, or
``Quantize("bf16").on("classifier.1")``) to change only some layers. Results are cached per process (and on disk with ``cache_dir``), keyed by
the base model's content and the technique prefix, so a search never retrains the same student twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from ..config import invalid
from ..workload import Workload
from .base import (ApplyRecord, Context, Technique, UnsupportedTechnique, apply_one, check_sequence, records, register,
                   technique_types)
from .cache import TechniqueCache, default_cache

# registration order (the order error messages list the techniques in): Prune, Quantize, Distill, MixedPrecision
from .pruning import Prune  # noqa: I001
from .quantization import Quantize
from .distillation import Distill
from .mixed_precision import MixedPrecision
from .transform import Transform, register_transform
from .quality import fidelity, quality
from .selector import Layers

__all__ = ["Technique", "Prune", "Quantize", "Distill", "MixedPrecision", "Layers", "apply", "records", "quality",
           "fidelity", "ApplyRecord", "UnsupportedTechnique", "TechniqueCache", "register", "from_json",
           "technique_types", "Transform", "register_transform"]


def from_json(data: dict | str) -> Technique:
    """A technique config from its JSON form (as written by ``profilers.config.dumps``)."""
    from ..config import from_json_dict, loads

    t = loads(data) if isinstance(data, str) else from_json_dict(data)
    if not isinstance(t, Technique):
        raise invalid("techniques.from_json", "type", "a technique config", type(t).__name__)
    return t


def apply(model: torch.nn.Module, technique: Technique | Sequence[Technique], workload: Workload | None = None,
          *, device: Any = None, seed: int = 0, cache: TechniqueCache | bool = True,
          cache_dir: str | Path | None = None, log=None, structure_only: bool = False) -> torch.nn.Module:
    """Apply one technique or a sequence of them to a copy of ``model``; the input is not mutated.

    ``workload`` supplies training data, the loss and the quality function to techniques that need
    them (fine-tuning, distillation). ``cache``: True uses this process's cache, False none, or a
    :class:`TechniqueCache`; ``cache_dir`` adds a content-addressed on-disk cache.
    ``structure_only`` skips every training step: the result has the final architecture and
    numerics (so its FLOPs, memory and latency are the real ones) but untrained weights.
    """
    if not isinstance(model, torch.nn.Module):
        raise invalid("apply", "model", "a torch.nn.Module", type(model).__name__)
    seq = [technique] if isinstance(technique, Technique) else list(technique)
    check_sequence(seq)
    if workload is not None and not isinstance(workload, Workload):
        raise invalid("apply", "workload", "a Workload or None", type(workload).__name__)
    from ..measurement import resolve_device

    dev = resolve_device(device)
    store: TechniqueCache | None
    if cache is True:
        store = default_cache() if cache_dir is None else TechniqueCache(cache_dir)
    elif cache is False:
        store = TechniqueCache(cache_dir) if cache_dir is not None else None
    elif isinstance(cache, TechniqueCache):
        store = cache
    else:
        raise invalid("apply", "cache", "True, False or a TechniqueCache", cache)

    ctx = Context(workload=workload, device=dev, seed=seed, original=model, log=log or (lambda m: None),
                  structure_only=structure_only)
    base = model
    start = 0
    keys: list[str] = []
    if store is not None and seq:
        fp = store.fingerprint(model)
        keys = [store.key(fp, seq[: i + 1], workload, seed, structure_only) for i in range(len(seq))]
        for i in range(len(seq), 0, -1):
            hit = store.get(keys[i - 1])
            if hit is not None:
                base, start = hit, i
                break
    out = base if start == len(seq) else base
    for i in range(start, len(seq)):
        out = apply_one(out, seq[i], ctx)
        if store is not None:
            store.put(keys[i], out)
    if out is model:  # an empty sequence still returns a new model
        import copy

        out = copy.deepcopy(model)
    return out
