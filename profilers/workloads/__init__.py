"""Built-in workloads, runnable offline: ``get("digits")`` (sklearn's bundled digits, a small CNN)."""

from __future__ import annotations

from typing import Callable

from .._config import invalid
from ..workload import Workload

__all__ = ["get", "names"]


def _digits() -> Workload:
    from .digits import workload

    return workload()


def _minilm() -> Workload:
    from .minilm import workload

    return workload()


_BUILTIN: dict[str, Callable[[], Workload]] = {"digits": _digits, "minilm": _minilm}


def names() -> list[str]:
    return sorted(_BUILTIN)


def get(name: str) -> Workload:
    if name not in _BUILTIN:
        raise invalid("workloads", "name", "one of " + ", ".join(repr(n) for n in names()), name)
    return _BUILTIN[name]()
