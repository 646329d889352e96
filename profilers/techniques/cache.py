"""Cache of technique results, keyed by the base model's content and the technique prefix.

In memory per process (returns deep copies, so callers cannot corrupt an entry), and optionally
on disk: ``<dir>/<key>.pt`` written atomically (temporary file, fsync, rename) with ``torch.save``
(whole module, so compressed and quantized models come back as they were), beside
``<dir>/<key>.sha256`` holding the file's SHA-256. The key hashes the base model's state_dict
bytes, the techniques' JSON, the workload's name, the seed and the versions of torch, torchao and
sigmastar (:func:`library_versions`: a model pickled by another version is never reused).

A file is validated on load: its checksum must match and ``torch.load`` must succeed. A zeroed,
truncated or foreign file (or one without its checksum, as a kill between the two renames leaves
it) is never evidence: it is deleted, the reason is kept in :attr:`TechniqueCache.problems`, and
the model is rebuilt.
"""

from __future__ import annotations

import copy
import functools
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

__all__ = ["TechniqueCache", "default_cache", "library_versions"]


@functools.cache
def library_versions() -> dict[str, str]:
    """The versions a cached model or measurement depends on: torch, torchao and sigmastar itself
    ("absent" for torchao when it is not installed; "source" for sigmastar run from a source tree)."""
    from importlib import metadata

    out = {"torch": torch.__version__}
    for dist, name in (("torchao", "torchao"), ("sigmastar", "sigmastar")):
        try:
            out[name] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[name] = "absent" if name == "torchao" else "source"
    return out


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


class TechniqueCache:
    def __init__(self, directory: str | Path | None = None, *, max_entries: int = 64) -> None:
        self.directory = Path(directory) if directory is not None else None
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
        self.max_entries = max_entries
        self._memory: dict[str, torch.nn.Module] = {}
        self.hits = self.misses = 0
        self.problems: list[str] = []  # cache files found corrupt (and deleted) in this process

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
                   "workload": getattr(workload, "name", None), "seed": seed, "structure_only": structure_only,
                   "versions": library_versions()}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def get(self, key: str) -> torch.nn.Module | None:
        if key in self._memory:
            self.hits += 1
            return copy.deepcopy(self._memory[key])
        if self.directory is not None:
            path = self.directory / f"{key}.pt"
            if path.is_file():
                model = self._load(path)
                if model is not None:
                    self._remember(key, model)
                    self.hits += 1
                    return copy.deepcopy(model)
        self.misses += 1
        return None

    def _load(self, path: Path) -> torch.nn.Module | None:
        """The model in ``path`` when its checksum matches and it loads; else None, the files deleted
        and the reason kept in :attr:`problems`."""
        import io

        sums = path.with_suffix(".sha256")
        data = path.read_bytes()
        want = sums.read_text().strip() if sums.is_file() else None
        got = hashlib.sha256(data).hexdigest()
        reason = ""
        if want is None:
            reason = "no checksum file (an interrupted write)"
        elif want != got:
            reason = f"checksum mismatch ({len(data):,} bytes, sha256 {got[:12]}... expected {want[:12]}...)"
        else:
            try:
                model = torch.load(io.BytesIO(data), weights_only=False)  # our own, checksummed files
                if isinstance(model, torch.nn.Module):
                    return model
                reason = f"holds a {type(model).__name__}, not a model"
            except Exception as e:  # noqa: BLE001 - an unloadable file is rebuilt, never used
                reason = f"does not load ({type(e).__name__}: {e})"
        self.problems.append(f"cached model {path.name}: {reason}; deleted, the model is rebuilt")
        for p in (path, sums):
            try:
                p.unlink()
            except FileNotFoundError:
                pass
        return None

    def put(self, key: str, model: torch.nn.Module) -> None:
        self._remember(key, copy.deepcopy(model))
        if self.directory is not None:
            import io

            buf = io.BytesIO()
            try:
                torch.save(model, buf)
            except (AttributeError, TypeError, pickle.PicklingError):
                # torchao sets an instance-level extra_repr (a functools.partial, which pickle
                # cannot name) on the Linear layers it quantizes; it only affects repr()
                buf = io.BytesIO()
                torch.save(_without_instance_extra_repr(model), buf)
            data = buf.getvalue()
            # the model first, then its checksum: a kill in between leaves a file without one (rebuilt)
            _write_atomic(self.directory / f"{key}.pt", data)
            _write_atomic(self.directory / f"{key}.sha256", hashlib.sha256(data).hexdigest().encode())

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
