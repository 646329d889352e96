"""Built-in workloads, runnable offline: ``get("digits")`` (sklearn's bundled digits, a small CNN).

Each declares the range its quality metric can take (:func:`quality_range`), readable without
building the workload or its model, so a job's ``min_quality`` is checked before anything trains.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

from ..config import invalid
from ..workload import Workload

__all__ = ["get", "names", "quality_metric", "quality_range"]


def _digits() -> Workload:
    from .digits import workload

    return workload()


def _minilm() -> Workload:
    from .minilm import workload

    return workload()


def _tinylm() -> Workload:
    from .tinylm import workload

    return workload()


class _Entry(NamedTuple):
    factory: Callable[[], Workload]
    quality_range: tuple[float, float]  # what the metric can take
    metric: str  # a short name of the metric, for messages


_BUILTIN: dict[str, _Entry] = {
    # top-1 accuracy on the held-out digits: a fraction
    "digits": _Entry(_digits, (0.0, 1.0), "accuracy"),
    # mean cosine similarity of embeddings: in [-1, 1]
    "minilm": _Entry(_minilm, (-1.0, 1.0), "cosine fidelity"),
    # held-out byte perplexity: 1 (perfect) to 256 (uniform guessing); LOWER is better
    "tinylm": _Entry(_tinylm, (1.0, 256.0), "perplexity"),
}


def names() -> list[str]:
    return sorted(_BUILTIN)


def _entry(name: str) -> _Entry:
    if name not in _BUILTIN:
        raise invalid("workloads", "name", "one of " + ", ".join(repr(n) for n in names()), name)
    return _BUILTIN[name]


def get(name: str) -> Workload:
    e = _entry(name)
    wl = e.factory()
    if wl.quality_range is None:
        wl = dataclasses.replace(wl, quality_range=e.quality_range)
    return wl


def quality_range(name: str) -> tuple[float, float]:
    """The range the built-in workload's quality metric can take (no model is built)."""
    return _entry(name).quality_range


def quality_metric(name: str) -> str:
    """A short name of the built-in workload's quality metric ("accuracy", ...), for messages."""
    return _entry(name).metric
