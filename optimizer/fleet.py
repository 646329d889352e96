"""Serving fleet: how many devices of each type to run for each model's demand, cheapest per hour.

Mélange-style resource pooling over heterogeneous device offers. Each offer gives, per model, the
QPS one device sustains at that model's SLO (measured or projected: the offer carries where each
figure comes from), a price per hour and an availability cap.

Two models of sharing (``sharing=``):

* ``"dedicated"`` (default): every device serves one model. Integer ``x[d, m]`` devices of type
  ``d`` run model ``m``::

      min  sum_{d,m} usd_per_hour[d] * x[d, m]
      s.t. sum_d throughput[d, m] * x[d, m] >= qps[m]      for every model m
           sum_m x[d, m] <= max_count[d]                    for every device type d

  Exact whenever a device's throughput for a model is what it sustains when serving only that model,
  which is how throughput at an SLO is measured.

* ``"pooled"``: a device's time is divisible between the demands. Integer ``y[d]`` devices and
  continuous ``z[d, m] >= 0`` device-equivalents of type ``d`` given to model ``m``::

      min  sum_d usd_per_hour[d] * y[d]
      s.t. sum_d throughput[d, m] * z[d, m] >= qps[m],   sum_m z[d, m] <= y[d] <= max_count[d]

  This is Mélange's load-fraction model (a device serving rate r_m of class m is busy
  sum_m r_m / throughput[d, m] <= 1 of the time). It holds for request classes of one model
  (Mélange's request-size buckets, one copy of the weights) and for several models only when they
  fit in one device's memory together and keep their SLO throughput under the mix; otherwise use
  ``"dedicated"``. It never costs more than dedicated: pooling packs the fractional leftovers.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from profilers.config import check_positive, invalid, serializable

from ._solver import MILP_SOLVERS, solve_milp

__all__ = ["Demand", "DeviceOffer", "FleetPlan", "plan_fleet", "SHARING"]

OWNER = "plan_fleet"
SHARING = ("dedicated", "pooled")
_RTOL = 1e-9


@serializable("Demand", 1)
@dataclass(frozen=True)
class Demand:
    """Required QPS for one model, at the SLO the offers' throughputs were measured at."""

    model: str
    qps: float
    slo: str = ""  # e.g. "p99 latency <= 200 ms at batch <= 8": documentation, carried to the plan

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise invalid("Demand", "model", "a non-empty model name", self.model)
        check_positive("Demand", "qps", self.qps)
        object.__setattr__(self, "qps", float(self.qps))


@serializable("DeviceOffer", 1)
@dataclass(frozen=True)
class DeviceOffer:
    """One device type: price, availability cap, and per-model throughput at the SLO with its source."""

    device: str
    usd_per_hour: float
    throughput_qps: dict[str, float]  # model -> QPS one device sustains at that model's SLO
    provenance: dict[str, str]  # model -> "measured on L4, torch 2.5 ..." (a str applies to every model)
    max_count: int | None = None  # None: as many as wanted

    def __post_init__(self) -> None:
        if not isinstance(self.device, str) or not self.device:
            raise invalid("DeviceOffer", "device", "a non-empty device name", self.device)
        check_positive("DeviceOffer", "usd_per_hour", self.usd_per_hour)
        if not isinstance(self.throughput_qps, Mapping) or not self.throughput_qps:
            raise invalid("DeviceOffer", "throughput_qps", "a non-empty mapping of model -> QPS", self.throughput_qps)
        thr = {}
        for model, q in self.throughput_qps.items():
            if isinstance(q, bool) or not isinstance(q, (int, float)) or not math.isfinite(q) or q < 0:
                raise invalid("DeviceOffer", f"throughput_qps[{model!r}]", "a finite number >= 0", q)
            thr[str(model)] = float(q)
        prov = self.provenance
        if isinstance(prov, str):
            prov = {m: prov for m in thr}
        if not isinstance(prov, Mapping) or any(not isinstance(prov.get(m), str) or not prov.get(m) for m in thr):
            raise invalid("DeviceOffer", "provenance",
                          "a non-empty string, or one per model in throughput_qps (measured or projected how)", prov)
        mc = self.max_count
        if mc is not None and (isinstance(mc, bool) or not isinstance(mc, int) or mc < 0):
            raise invalid("DeviceOffer", "max_count", "None or an integer >= 0", mc)
        object.__setattr__(self, "usd_per_hour", float(self.usd_per_hour))
        object.__setattr__(self, "throughput_qps", thr)
        object.__setattr__(self, "provenance", {m: prov[m] for m in thr})


@serializable("FleetPlan", 1)
@dataclass(frozen=True)
class FleetPlan:
    status: str  # "optimal" | "feasible" (time limit, gap open) | "infeasible" | "not_solved"
    message: str
    sharing: str
    devices: dict[str, int]  # device type -> devices to run
    counts: dict[str, dict[str, float]]  # device -> model -> devices (dedicated) / device-equivalents (pooled)
    load_qps: dict[str, dict[str, float]]  # model -> device -> QPS it serves there
    usd_per_hour: float | None
    utilization: dict[str, float]  # model -> demand / capacity of the devices (shares) serving it
    device_utilization: dict[str, float]  # device -> busy fraction
    max_qps: dict[str, float]  # infeasible: per unmet model, the most QPS it can get (see message)
    unmet: tuple[str, ...]
    provenance: dict[str, str]  # "device/model" -> source of each throughput figure the plan uses
    solver: str
    solve_s: float
    mip_gap: float | None

    @property
    def ok(self) -> bool:
        return self.status in ("optimal", "feasible")


def _normalize(demands, offers) -> tuple[list[Demand], list[DeviceOffer]]:
    if isinstance(demands, Demand):
        demands = [demands]
    elif isinstance(demands, Mapping):
        demands = [Demand(m, q) for m, q in demands.items()]
    if not isinstance(demands, Sequence) or not demands or not all(isinstance(d, Demand) for d in demands):
        raise invalid(OWNER, "demands", "a non-empty sequence of Demand (or a mapping model -> qps)", demands)
    models = [d.model for d in demands]
    if len(set(models)) != len(models):
        raise invalid(OWNER, "demands", "one Demand per model", models)
    if isinstance(offers, DeviceOffer):
        offers = [offers]
    if not isinstance(offers, Sequence) or not offers or not all(isinstance(o, DeviceOffer) for o in offers):
        raise invalid(OWNER, "offers", "a non-empty sequence of DeviceOffer", offers)
    names = [o.device for o in offers]
    if len(set(names)) != len(names):
        raise invalid(OWNER, "offers", "one DeviceOffer per device type", names)
    return list(demands), list(offers)


def _model(demands, offers, sharing, maximize: int | None = None):
    """Matrix form. Columns: dedicated x[d, m] (integer); pooled y[d] (integer) then z[d, m]."""
    import scipy.sparse as sp

    D, M = len(offers), len(demands)
    thr = np.array([[o.throughput_qps.get(dm.model, 0.0) for dm in demands] for o in offers])
    cap = np.array([np.inf if o.max_count is None else o.max_count for o in offers], float)
    price = np.array([o.usd_per_hour for o in offers])
    qps = np.array([dm.qps for dm in demands])
    pairs = [(d, m) for d in range(D) for m in range(M) if thr[d, m] > 0 and cap[d] > 0]
    rows, cols, vals, rlo, rhi = [], [], [], [], []

    def add_row(entries, lo, hi):
        r = len(rlo)
        for c, v in entries:
            rows.append(r), cols.append(c), vals.append(v)
        rlo.append(lo), rhi.append(hi)

    if sharing == "dedicated":
        ncol = len(pairs)
        cost = np.array([price[d] for d, _ in pairs])
        integ = np.ones(ncol, bool)
        clo, chi = np.zeros(ncol), np.array([cap[d] for d, _ in pairs])
        serve = {m: [(k, thr[d, m] / qps[m]) for k, (d, mm) in enumerate(pairs) if mm == m] for m in range(M)}
        for d in range(D):
            ks = [k for k, (dd, _) in enumerate(pairs) if dd == d]
            if np.isfinite(cap[d]) and len(ks) > 1:
                add_row([(k, 1.0) for k in ks], -np.inf, cap[d])
    else:
        ncol = D + len(pairs)
        cost = np.concatenate([price, np.zeros(len(pairs))])
        integ = np.concatenate([np.ones(D, bool), np.zeros(len(pairs), bool)])
        clo, chi = np.zeros(ncol), np.concatenate([cap, np.full(len(pairs), np.inf)])
        serve = {m: [(D + k, thr[d, m] / qps[m]) for k, (d, mm) in enumerate(pairs) if mm == m] for m in range(M)}
        for d in range(D):
            add_row([(D + k, 1.0) for k, (dd, _) in enumerate(pairs) if dd == d] + [(d, -1.0)], -np.inf, 0.0)
    for m in range(M):
        if m == maximize:  # served QPS of m, as a fraction of its demand, capped at 1
            add_row(serve[m], -np.inf, 1.0)
        else:
            add_row(serve[m], 1.0, np.inf)
    if maximize is not None:
        cost = np.zeros(ncol)
        for k, v in serve[maximize]:
            cost[k] = -v
    A = sp.csc_matrix((vals, (rows, cols)), shape=(len(rlo), ncol))
    return dict(A=A, c=cost, rlo=np.array(rlo, float), rhi=np.array(rhi, float), clo=clo, chi=chi, integ=integ,
                pairs=pairs, thr=thr, cap=cap, price=price, qps=qps)


def _diagnose(demands, offers, sharing, solver, deadline) -> tuple[dict[str, float], tuple[str, ...], str]:
    """Per model: the most QPS it can get (alone if it cannot be met alone, else with the others met)."""
    base = _model(demands, offers, sharing)
    thr, cap = base["thr"], base["cap"]
    alone = {}
    for m, dm in enumerate(demands):
        servers = thr[:, m] > 0
        alone[dm.model] = float("inf") if np.isinf(cap[servers]).any() else float((thr[servers, m] * cap[servers]).sum())
    short = [dm.model for dm in demands if alone[dm.model] < dm.qps * (1 - _RTOL)]
    if short:
        parts = []
        for name in short:
            dm = next(d for d in demands if d.model == name)
            usable = [f"{o.max_count} x {o.device} at {o.throughput_qps[name]:g} QPS" for o in offers
                      if o.throughput_qps.get(name, 0) > 0 and o.max_count]
            parts.append(f"'{name}' needs {dm.qps:g} QPS but every available device together serves at most "
                         f"{alone[name]:g} QPS" + (f" ({', '.join(usable)})" if usable else " (no offer serves it)"))
        msg = "Demand cannot be met: " + "; ".join(parts) + ". To fix: add offers or raise max_count."
        return {n: alone[n] for n in short}, tuple(short), msg
    best, unmet = {}, []
    for m, dm in enumerate(demands):
        mod = _model(demands, offers, sharing, maximize=m)
        left = None if deadline is None else max(deadline - time.perf_counter(), 1e-3)
        out = solve_milp(mod["c"], mod["A"], mod["rlo"], mod["rhi"], mod["clo"], mod["chi"], mod["integ"],
                         solver=solver, time_limit_s=left)
        if out.x is not None:
            got = max(0.0, -out.objective * dm.qps) + 0.0
            if got < dm.qps * (1 - _RTOL):
                best[dm.model] = float(got)
                unmet.append(dm.model)
        else:
            unmet.append(dm.model)
    parts = [f"'{n}' gets at most {best[n]:g} of {next(d.qps for d in demands if d.model == n):g} QPS while the "
             f"others are met" if n in best else f"the others cannot all be met even without '{n}'" for n in unmet]
    msg = ("The demands cannot all be met together (each can alone): " + "; ".join(parts)
           + ". To fix: add offers, raise max_count" + (", or allow sharing='pooled'" if sharing == "dedicated" else "")
           + ".")
    return best, tuple(unmet), msg


def plan_fleet(
    demands: Sequence[Demand] | Mapping[str, float] | Demand,
    offers: Sequence[DeviceOffer] | DeviceOffer,
    *,
    sharing: str = "dedicated",
    solver: str = "highs",
    time_limit_s: float | None = None,
    mip_rel_gap: float = 1e-9,
) -> FleetPlan:
    """Cheapest device counts (USD per hour) that serve every demand at its SLO. See the module doc."""
    t0 = time.perf_counter()
    if sharing not in SHARING:
        raise invalid(OWNER, "sharing", "one of " + ", ".join(repr(s) for s in SHARING), sharing)
    if solver not in MILP_SOLVERS:
        raise invalid(OWNER, "solver", "one of " + ", ".join(repr(s) for s in MILP_SOLVERS), solver)
    if time_limit_s is not None:
        check_positive(OWNER, "time_limit_s", time_limit_s)
    demands, offers = _normalize(demands, offers)
    deadline = None if time_limit_s is None else t0 + time_limit_s
    mod = _model(demands, offers, sharing)
    servable = {m for _, m in mod["pairs"]}
    if len(servable) < len(demands):  # a model no offer serves: its demand row would be empty
        best, unmet, msg = _diagnose(demands, offers, sharing, solver, deadline)
        return FleetPlan("infeasible", msg, devices={}, counts={}, load_qps={}, usd_per_hour=None, utilization={},
                         device_utilization={}, provenance={}, max_qps=best, unmet=unmet,
                         solve_s=time.perf_counter() - t0, mip_gap=None, sharing=sharing, solver=solver)
    out = solve_milp(mod["c"], mod["A"], mod["rlo"], mod["rhi"], mod["clo"], mod["chi"], mod["integ"],
                     solver=solver, time_limit_s=time_limit_s, mip_rel_gap=mip_rel_gap)
    common = dict(sharing=sharing, solver=solver)
    empty = dict(devices={}, counts={}, load_qps={}, usd_per_hour=None, utilization={}, device_utilization={},
                 provenance={})
    if out.status == "infeasible" or (out.x is None and out.status != "not_solved"):
        best, unmet, msg = _diagnose(demands, offers, sharing, solver, deadline)
        return FleetPlan("infeasible", msg, max_qps=best, unmet=unmet, solve_s=time.perf_counter() - t0,
                         mip_gap=None, **empty, **common)
    if out.x is None:
        return FleetPlan("not_solved", f"No plan found ({solver}: {out.raw_status}).", max_qps={}, unmet=(),
                         solve_s=time.perf_counter() - t0, mip_gap=None, **empty, **common)
    plan = _read_plan(demands, offers, sharing, mod, out.x)
    gap = "unknown" if out.gap is None else f"{out.gap:.3g}"
    what = "Optimal" if out.status == "optimal" else f"Stopped before proving optimality (gap {gap})"
    fleet = ", ".join(f"{n} x {d}" for d, n in plan["devices"].items() if n)
    msg = f"{what}: {fleet} for ${plan['usd_per_hour']:.4g}/hour ({sharing})."
    return FleetPlan(out.status, msg, max_qps={}, unmet=(), solve_s=time.perf_counter() - t0,
                     mip_gap=out.gap, **plan, **common)


def _read_plan(demands, offers, sharing, mod, x) -> dict:
    D, M = len(offers), len(demands)
    thr, qps, pairs = mod["thr"], mod["qps"], mod["pairs"]
    share = np.zeros((D, M))  # device-equivalents of d given to m
    if sharing == "dedicated":
        for k, (d, m) in enumerate(pairs):
            share[d, m] = round(x[k])
        devices = share.sum(axis=1)
    else:
        devices = np.round(x[:D])
        for k, (d, m) in enumerate(pairs):
            share[d, m] = max(x[D + k], 0.0)
        served = (thr * share).sum(axis=0)
        share = share * np.where(served > 0, qps / np.maximum(served, 1e-300), 0.0)[None, :]  # exactly the demand
        used = share.sum(axis=1)
        share = share * np.where(used > 0, devices / np.maximum(used, 1e-300), 0.0)[:, None]  # idle time pro rata
    capacity = (thr * share).sum(axis=0)
    util = np.where(capacity > 0, qps / np.maximum(capacity, 1e-300), 0.0)
    load = thr * share * util[None, :]  # QPS each device type serves of each model
    busy = (share * util[None, :]).sum(axis=1)
    names = [o.device for o in offers]
    models = [d.model for d in demands]
    return dict(
        devices={names[d]: int(devices[d]) for d in range(D)},
        counts={names[d]: {models[m]: (int(share[d, m]) if sharing == "dedicated" else float(share[d, m]))
                           for m in range(M) if share[d, m] > 0} for d in range(D) if devices[d] > 0},
        load_qps={models[m]: {names[d]: float(load[d, m]) for d in range(D) if load[d, m] > 0} for m in range(M)},
        usd_per_hour=float(sum(offers[d].usd_per_hour * devices[d] for d in range(D))),
        utilization={models[m]: float(util[m]) for m in range(M)},
        device_utilization={names[d]: float(busy[d] / devices[d]) for d in range(D) if devices[d] > 0},
        provenance={f"{names[d]}/{models[m]}": offers[d].provenance[models[m]]
                    for d in range(D) for m in range(M) if share[d, m] > 0},
    )
