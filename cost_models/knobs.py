"""Knobs: named inputs the analyses vary (prices and scenario assumptions).

A knob reads a value from a :class:`CostModel` and returns a copy with the value changed.
"value" knobs read and set one number (traffic, horizon, utilization, ...) and can be the
variable of a break-even; "factor" knobs scale a family of numbers (every GPU-hour price, every
technique's hours) and read as 1.0. :func:`apply_factor` multiplies any knob by a factor.

Price knobs ("price:<kind>") scale every row of that kind in the PriceBook, and the matching
scenario override where there is one (purchase_usd, usd_per_kwh).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

from profilers.config import invalid

from .model import CostModel
from .prices import KINDS

__all__ = ["Knob", "KNOBS", "knob_names", "get_knob", "apply_factor"]


@dataclass(frozen=True)
class Knob:
    name: str
    kind: str  # "value" or "factor"
    get: Callable[[CostModel], float]
    set: Callable[[CostModel, float], CostModel]
    lo: float = 0.0
    hi: float = float("inf")
    description: str = ""

    def clip(self, v: float) -> float:
        return min(max(v, self.lo), self.hi)


def _plan_knob(name: str, plan: str, attr: str, lo: float = 0.0, hi: float = float("inf"), desc: str = "") -> Knob:
    def get(m: CostModel) -> float:
        return getattr(getattr(m.scenario, plan), attr)

    def set_(m: CostModel, v: float) -> CostModel:
        return m.with_scenario(**{f"{plan}__{attr}": v})

    return Knob(name, "value", get, set_, lo, hi, desc or f"Scenario.{plan}.{attr}")


def _traffic_set(m: CostModel, v: float) -> CostModel:
    s = m.scenario.serving
    peak = s.peak_requests_per_s
    if peak is not None:
        peak = peak * v / s.avg_requests_per_s if s.avg_requests_per_s > 0 else max(peak, v)
    return m.with_scenario(serving=dataclasses.replace(s, avg_requests_per_s=v, peak_requests_per_s=peak))


def _hours_set(m: CostModel, f: float) -> CostModel:
    sc = m.scenario
    hours = {t: sc.engineer_hours(t) * f for t in sc.techniques}
    maint = {t: sc.maintenance_hours_per_month(t) * f for t in sc.techniques}
    return m.with_scenario(people=dataclasses.replace(sc.people, hours=hours, maintenance_hours_per_month=maint))


def _labels_set(m: CostModel, f: float) -> CostModel:
    d = m.scenario.data
    return m.with_scenario(data=dataclasses.replace(d, labeled_samples={k: v * f for k, v in d.labeled_samples.items()}))


def _price_knob(kind: str) -> Knob:
    def set_(m: CostModel, f: float) -> CostModel:
        out = m.with_prices(m.prices.scaled(kind, f))
        own = out.scenario.ownership
        if kind == "purchase" and own.purchase_usd is not None:
            out = out.with_scenario(ownership__purchase_usd=own.purchase_usd * f)
        if kind == "electricity" and own.usd_per_kwh is not None:
            out = out.with_scenario(ownership__usd_per_kwh=own.usd_per_kwh * f)
        return out

    return Knob(f"price:{kind}", "factor", lambda m: 1.0, set_, 0.0, float("inf"), f"every {kind} price")


_LIST = [
    Knob("traffic_requests_per_s", "value", lambda m: m.scenario.serving.avg_requests_per_s, _traffic_set,
         description="average requests/s (peak scaled with it)"),
    _plan_knob("horizon_months", "serving", "horizon_months", 1e-9),
    _plan_knob("samples_per_request", "serving", "samples_per_request", 1e-9),
    _plan_knob("response_bytes", "serving", "response_bytes"),
    _plan_knob("samples_per_epoch", "training", "samples_per_epoch"),
    _plan_knob("epochs", "training", "epochs"),
    _plan_knob("scaling_efficiency", "training", "scaling_efficiency", 1e-9, 1.0),
    _plan_knob("usd_per_label", "data", "usd_per_label"),
    _plan_knob("dataset_gb", "data", "dataset_gb"),
    Knob("labeled_samples", "factor", lambda m: 1.0, _labels_set, description="every technique's labeled samples"),
    _plan_knob("engineer_usd_per_hour", "people", "usd_per_hour"),
    Knob("engineer_hours", "factor", lambda m: 1.0, _hours_set, description="every technique's engineer hours"),
    _plan_knob("utilization", "ownership", "utilization", 1e-9, 1.0),
    _plan_knob("lifetime_years", "ownership", "lifetime_years", 1e-9),
    _plan_knob("maintenance_fraction_per_year", "ownership", "maintenance_fraction_per_year"),
    _plan_knob("pue", "ownership", "pue", 1.0),
] + [_price_knob(k) for k in KINDS]

KNOBS: dict[str, Knob] = {k.name: k for k in _LIST}


def knob_names() -> list[str]:
    """Names accepted by :func:`~cost_models.sensitivity`, ``uncertainty`` and ``break_even``."""
    return list(KNOBS)


def get_knob(name: str) -> Knob:
    if name not in KNOBS:
        raise invalid("knob", "name", "one of " + ", ".join(KNOBS), name)
    return KNOBS[name]


def apply_factor(model: CostModel, name: str, factor: float) -> CostModel:
    """``model`` with knob ``name`` multiplied by ``factor`` (clipped to the knob's range)."""
    k = get_knob(name)
    return k.set(model, k.clip(k.get(model) * factor))
