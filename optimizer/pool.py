"""Serving on a pool of device types: :func:`optimizer.plan_fleet` inside the search's serving stage.

Pricing a variant finds, on every device type of the space, the cheapest batch size that meets the
SLO and the memory, and the replicas that one type needs for the peak traffic. With ``pool=True``
the search also asks :func:`~optimizer.fleet.plan_fleet` (an exact ILP) for the cheapest *mix* of
device types that serves the same peak:

* each type's throughput is the variant's own projection on it (``batch / latency`` at that
  batch, which meets the SLO), in requests per second (``/ samples_per_request``);
* each type's $/hour is the serving line item's rate, which comes from the PriceBook at the
  scenario's rent tier and provider (the row is cited in the provenance);
* the demand is the scenario's peak requests per second ("dedicated" sharing: one model, every
  device serves it).

The pool's serving cost (its $/hour x the horizon's hours) replaces the single type's serving
compute; every other line item (training, egress, storage) does not depend on the serving device
and stays. A pool is used only when it is strictly cheaper than the best single type, which is
exactly when integer replicas leave capacity idle (Mélange's observation); the saving is
reported. Owned hardware is not pooled (its cost is purchase, not a rate; the search prices owned
devices one type at a time).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["ServingPool", "serving_pool"]


@dataclass(frozen=True)
class ServingPool:
    """The cheapest mix of device types for one variant's serving, and what it saves."""

    devices: dict[str, int]  # device type -> devices (only types used)
    usd_per_hour: float
    serving_usd: float  # pool $/hour x horizon hours
    single_device: str  # the best single device type
    single_serving_usd: float  # its serving compute over the horizon
    single_total_usd: float
    total_usd: float  # the variant's total with the pool serving
    offers: tuple[tuple[str, int, float, float], ...]  # (device, batch, req/s per device, $/hour) offered
    provenance: str
    message: str

    @property
    def saving_usd(self) -> float:
        return max(0.0, self.single_total_usd - self.total_usd)

    def describe(self) -> str:
        return " + ".join(f"{n}x {d}" for d, n in sorted(self.devices.items(), key=lambda kv: -kv[1]))


def _serving_item(breakdown: Any) -> Any:
    items = [i for i in breakdown.items if i.activity == "serving" and i.unit == "device-hour"]
    return items[0] if len(items) == 1 else None


def serving_pool(model: str, dep: Any, scenario: Any) -> ServingPool | None:
    """The cheapest pool for ``dep`` (an :class:`optimizer.evaluate.Deployment` with its
    ``per_device`` cheapest options), or None when pooling does not apply (owned hardware, no
    traffic, fewer than two device types, or a breakdown without one serving compute item)."""
    from .fleet import Demand, DeviceOffer, plan_fleet

    s = scenario.serving
    if scenario.ownership.owns or s.peak_rps <= 0 or len(dep.per_device) < 2 or dep.breakdown is None:
        return None
    single = _serving_item(dep.breakdown)
    if single is None:
        return None
    offers, rows = [], []
    for device, (batch, br, proj, _usd) in sorted(dep.per_device.items()):
        item = _serving_item(br)
        if item is None or not math.isfinite(proj.latency_s) or proj.latency_s <= 0:
            continue
        rps = batch / proj.latency_s / s.samples_per_request
        offers.append(DeviceOffer(device, item.usd_per_unit, {model: rps},
                                  {model: f"{proj.provenance}; batch {batch}; price {item.provenance}"}))
        rows.append((device, batch, rps, item.usd_per_unit))
    if len(offers) < 2:
        return None
    plan = plan_fleet([Demand(model, s.peak_rps, slo=f"latency <= {s.latency_slo_s} s" if s.latency_slo_s else "")],
                      offers)
    if not plan.ok or plan.usd_per_hour is None:
        return None
    serving = plan.usd_per_hour * s.horizon_hours
    total = dep.breakdown.total_usd - single.cost_usd + serving
    used = {d: n for d, n in plan.devices.items() if n}
    prov = (f"serving pool by plan_fleet (exact ILP, dedicated): {plan.message} Throughputs are each device's "
            f"projection at its cheapest SLO-meeting batch; prices are the price book's rows")
    return ServingPool(devices=used, usd_per_hour=plan.usd_per_hour, serving_usd=serving,
                       single_device=dep.device, single_serving_usd=single.cost_usd,
                       single_total_usd=dep.breakdown.total_usd, total_usd=min(total, dep.breakdown.total_usd),
                       offers=tuple(rows), provenance=prov, message=plan.message)
