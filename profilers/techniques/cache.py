"""Cache of technique results, keyed by the base model's content and the technique prefix.

In memory per process (returns deep copies, so callers cannot corrupt an entry), and optionally
on disk: ``<dir>/<sha256>.pt`` written atomically with ``torch.save`` (whole module, so compressed
and quantized models come back as they were). The key hashes the base model's state_dict bytes,
the techniques' JSON, the workload's name and the seed.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, Sequence

import torch

from ..config import to_json_dict
from ..measurement import tensor_leaves

__all__ = ["TechniqueCache", "default_cache"]


class TechniqueCache:
    def __init__(self, directory: str | Path | None = None, *, max_entries: int = 64) -> None:
        self.directory = Path(directory) if directory is not None else None
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
        self.max_entries = max_entries
        self._memory: dict[str, torch.nn.Module] = {}
        self.hits = self.misses = 0

    @staticmethod
    def fingerprint(model: torch.nn.Module) -> str:
        h = hashlib.sha256(type(model).__qualname__.encode())
        for name, t in model.state_dict().items():
            h.update(name.encode())
            if isinstance(t, torch.Tensor):
                h.update(f"{t.dtype}{tuple(t.shape)}".encode())
                if t.is_meta:
                    continue
                for leaf in tensor_leaves(t):  # quantized tensors: their int8 data and scales
                    h.update(leaf.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()

    @staticmethod
    def key(fingerprint: str, techniques: Sequence[Any], workload: Any, seed: int, structure_only: bool = False) -> str:
        payload = {"model": fingerprint, "techniques": [to_json_dict(t) for t in techniques],
                   "workload": getattr(workload, "name", None), "seed": seed, "structure_only": structure_only}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def get(self, key: str) -> torch.nn.Module | None:
        if key in self._memory:
            self.hits += 1
            return copy.deepcopy(self._memory[key])
        if self.directory is not None:
            path = self.directory / f"{key}.pt"
            if path.is_file():
                model = torch.load(path, weights_only=False)  # our own cache files
                self._remember(key, model)
                self.hits += 1
                return copy.deepcopy(model)
        self.misses += 1
        return None

    def put(self, key: str, model: torch.nn.Module) -> None:
        self._remember(key, copy.deepcopy(model))
        if self.directory is not None:
            fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
            os.close(fd)
            try:
                try:
                    torch.save(model, tmp)
                except (AttributeError, TypeError, pickle.PicklingError):
                    # torchao sets an instance-level extra_repr (a functools.partial, which pickle
                    # cannot name) on the Linear layers it quantizes; it only affects repr()
                    torch.save(_without_instance_extra_repr(model), tmp)
                os.replace(tmp, self.directory / f"{key}.pt")
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)

    def _remember(self, key: str, model: torch.nn.Module) -> None:
        self._memory[key] = model
        while len(self._memory) > self.max_entries:
            self._memory.pop(next(iter(self._memory)))

    def clear(self) -> None:
        self._memory.clear()


def _without_instance_extra_repr(model: torch.nn.Module) -> torch.nn.Module:
    m = copy.deepcopy(model)
    for mod in m.modules():
        mod.__dict__.pop("extra_repr", None)
    return m


_DEFAULT: TechniqueCache | None = None


def default_cache() -> TechniqueCache:
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = TechniqueCache()
    return _DEFAULT
