"""CostBreakdown: the result of pricing one model under one scenario.

Data only; rendering (text table, HTML, DataFrame) lives in :mod:`cost_models.render` and is
reached through the convenience methods here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from profilers.config import ConfigError, check_choice, dumps, loads, serializable

from .components import COMPONENTS, LineItem

__all__ = ["CostBreakdown", "InfeasibleCostError"]


class InfeasibleCostError(ConfigError):
    """The plan cannot run as specified (latency SLO, memory). The message says how to fix it."""


@serializable("cost_models.cost_breakdown")
@dataclass(frozen=True)
class CostBreakdown:
    """Line items grouped in the four components, totals, and unit costs.

    ``status`` is "ok" or "infeasible" (then ``message`` explains and says how to fix it, and
    the totals are infinite so that any feasible plan compares cheaper).
    """

    scenario_name: str
    model_name: str
    serve_device: str
    train_device: str
    items: tuple[LineItem, ...] = ()
    requests: float = 0.0
    training_runs: int = 0
    replicas: int = 0
    status: str = "ok"
    message: str = ""
    provenance: tuple[str, ...] = field(default_factory=tuple)
    #: totals with every projected time at the low / high end of its calibration band (None: the
    #: figures carry no band, e.g. measured on this machine); high is inf when the slow end misses the SLO
    low_usd: float | None = None
    high_usd: float | None = None

    def __post_init__(self) -> None:
        check_choice("CostBreakdown", "status", self.status, ("ok", "infeasible"))
        object.__setattr__(self, "items", tuple(self.items))
        object.__setattr__(self, "provenance", tuple(self.provenance))

    # ---- totals ------------------------------------------------------------------------------
    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def components(self) -> dict[str, float]:
        """USD per component, all four present (0.0 where nothing applies)."""
        if not self.ok:
            return {c: math.inf for c in COMPONENTS}
        out = {c: 0.0 for c in COMPONENTS}
        for it in self.items:
            out[it.component] += it.cost_usd
        return out

    @property
    def total_usd(self) -> float:
        return math.inf if not self.ok else sum(it.cost_usd for it in self.items)

    @property
    def band_usd(self) -> tuple[float, float, float]:
        """(low, expected, high) totals; low = high = expected when the figures carry no band."""
        t = self.total_usd
        if not self.ok:
            return t, t, t
        return (t if self.low_usd is None else min(self.low_usd, t), t,
                t if self.high_usd is None else max(self.high_usd, t))

    @property
    def usd_per_1000_requests(self) -> float | None:
        """Total over the horizon / (requests over the horizon / 1000); None without traffic."""
        if not self.ok:
            return math.inf
        return self.total_usd / (self.requests / 1000.0) if self.requests > 0 else None

    @property
    def usd_per_training_run(self) -> float | None:
        """Training items (compute or energy, their hardware share, gradient traffic) per run."""
        if not self.ok:
            return math.inf
        if self.training_runs <= 0:
            return None
        return sum(it.cost_usd for it in self.items if it.activity == "training") / self.training_runs

    def by_activity(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for it in self.items:
            out[it.activity] = out.get(it.activity, 0.0) + it.cost_usd
        return out

    def items_of(self, component: str) -> list[LineItem]:
        check_choice("CostBreakdown.items_of", "component", component, COMPONENTS)
        return [it for it in self.items if it.component == component]

    def raise_for_status(self) -> "CostBreakdown":
        if not self.ok:
            raise InfeasibleCostError(self.message)
        return self

    # ---- output ------------------------------------------------------------------------------
    def to_json(self, **kwargs) -> str:
        return dumps(self, **kwargs)

    @staticmethod
    def from_json(text: str) -> "CostBreakdown":
        obj = loads(text)
        if not isinstance(obj, CostBreakdown):
            raise ConfigError(f"CostBreakdown.from_json must get a cost breakdown; got {type(obj).__name__}.")
        return obj

    def to_table(self) -> str:
        from .render import breakdown_table

        return breakdown_table(self)

    def to_dataframe(self):
        from .render import breakdown_dataframe

        return breakdown_dataframe(self)

    def _repr_html_(self) -> str:
        from .render import breakdown_html

        return breakdown_html(self)

    def __str__(self) -> str:
        return self.to_table()
