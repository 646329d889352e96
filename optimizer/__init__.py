"""sigmastar optimizer: search spaces, searches, ILPs, results and the CLI.

Public names load lazily (optuna, pulp and torch are imported only when a search runs).
"""

from __future__ import annotations

import importlib
from typing import Any

from profilers.quiet import quiet_libraries as _quiet_libraries

_quiet_libraries()  # third-party noise off (profilers.quiet): the Python API is as quiet as the CLI

_EXPORTS = {
    "SearchSpace": ".space",
    "Strategy": ".space",
    "search": ".search",
    "optimize": ".one_call",
    "default_space": ".one_call",
    "EvaluationStopped": ".evaluate",
    "SearchResult": ".result",
    "InfeasibleError": ".result",
    "lazy_search": ".lazy",
    "solve_layerwise": ".layerwise",
    "LayerOption": ".layerwise",
    "LayerwiseResult": ".layerwise",
    "verify_layerwise": ".layerwise_verify",
    "LayerwiseVerifyResult": ".layerwise_verify",
    "VerifyRound": ".layerwise_verify",
    "plan_fleet": ".fleet",
    "FleetPlan": ".fleet",
    "Demand": ".fleet",
    "DeviceOffer": ".fleet",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'optimizer' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
