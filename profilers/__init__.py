"""sigmastar profilers: FLOPs, measured profiles, meta-device analysis, device specs, projection.

Public names are imported lazily so that the torch-free parts (``Profile``, ``DeviceSpec``,
``hardware``, ``project``) can be used, e.g. by ``cost_models``, without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from .quiet import quiet_libraries as _quiet_libraries

_quiet_libraries()  # third-party noise off (kineto's trace lines, ...) before any profiler runs

_EXPORTS = {
    # name: module that defines it
    "FlopCount": ".flops",
    "count_flops": ".flops",
    "Workload": ".workload",
    "Profile": ".profile",
    "Timing": ".profile",
    "measure": ".measurement",
    "analyze": ".analysis",
    "DeviceSpec": ".hardware",
    "hardware": None,  # the module itself
    "Projection": ".projection",
    "ParallelConfig": ".parallel",
    "TransformerShape": ".parallel",
    "workloads": None,
    "techniques": None,
    "project": ".projection",
    "profile_layers": ".layer_profile",
    "LayerProfile": ".layer_profile",
    "assemble_layers": ".layer_profile",
    "config": None,  # the one error format, JSON round trip and validation layer (torch-free)
    "render": None,  # tables and money, on pandas (torch-free)
    "ConfigError": ".config",
    "SigmastarError": ".config",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'profilers' has no attribute {name!r}")
    mod_name = _EXPORTS[name]
    if mod_name is None:
        value = importlib.import_module(f".{name}", __name__)
    else:
        value = getattr(importlib.import_module(mod_name, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
