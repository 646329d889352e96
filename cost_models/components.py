"""The four cost components, each a pure function of (usage, scenario, prices) -> line items.

Which line item belongs where (and nowhere else):

=================  ==========================================================================
C_hardware         owning only: amortized purchase and maintenance share of the owned devices,
                   for the device-hours the workload uses / utilization. Empty when renting.
C_train_deploy     consuming compute: rented device-hours (training per technique, serving
                   replicas) or, when owning, their energy (power x PUE x $/kWh); network
                   (gradient exchange across nodes, responses to users); artifact storage.
C_data             data each technique needs: labeling, acquisition, preprocessing, and
                   storing the dataset.
C_human            engineer hours to apply and tune each technique (one-off) and to maintain it
                   (per month over the horizon), times the hourly rate.
=================  ==========================================================================

Every item is ``quantity x usd_per_unit = cost_usd`` with the arithmetic spelled out in
``formula`` and the price's source in ``provenance``.
"""

from __future__ import annotations

from profilers.render import usd

import math
from dataclasses import dataclass

from profilers.config import check_choice, check_non_negative, invalid, serializable

from .prices import PriceBook
from .scenario import Scenario
from .usage import Usage

__all__ = ["COMPONENTS", "ACTIVITIES", "LineItem", "c_hardware", "c_train_deploy", "c_data", "c_human",
           "all_items"]

COMPONENTS = ("hardware", "train_deploy", "data", "human")
ACTIVITIES = ("training", "serving", "storage", "data", "development")
HOURS_PER_YEAR = 8760.0


@serializable("cost_models.line_item")
@dataclass(frozen=True)
class LineItem:
    """One priced quantity: ``quantity`` [``unit``] x ``usd_per_unit`` = ``cost_usd``."""

    component: str
    name: str
    quantity: float
    unit: str
    usd_per_unit: float
    cost_usd: float
    formula: str
    provenance: str
    activity: str = "serving"

    def __post_init__(self) -> None:
        o = f"LineItem[{self.name!r}]"
        check_choice(o, "component", self.component, COMPONENTS)
        check_choice(o, "activity", self.activity, ACTIVITIES)
        for f in ("quantity", "usd_per_unit", "cost_usd"):
            check_non_negative(o, f, getattr(self, f))
        if not math.isclose(self.cost_usd, self.quantity * self.usd_per_unit, rel_tol=1e-9, abs_tol=1e-9):
            raise invalid(o, "cost_usd", f"quantity x usd_per_unit ({self.quantity * self.usd_per_unit!r})",
                          self.cost_usd)


def _item(component: str, name: str, quantity: float, unit: str, rate: float, formula: str, provenance: str,
          activity: str) -> LineItem:
    cost = quantity * rate
    return LineItem(component, name, quantity, unit, rate, cost, f"{formula} x ${rate:,.4g}/{unit} = {usd(cost)}",
                    provenance, activity)


# ----------------------------------------------------------------------------------------------
# rates: the prices a scenario uses, resolved once
# ----------------------------------------------------------------------------------------------
def device_hour_rate(device: str, scenario: Scenario, prices: PriceBook) -> tuple[float, str]:
    """USD per device-hour when renting ``device`` (host = vCPUs x vCPU-hour price)."""
    own = scenario.ownership
    if device.lower() == "host":
        row = prices.get("vcpu_hour", "vcpu", own.rent_tier, None)
        return own.host_vcpus * row.usd_per_unit, f"{own.host_vcpus} vCPU x {row.cite()}"
    row = prices.gpu_hour(device, own.rent_tier, own.provider)
    return row.usd_per_unit, row.cite()


def purchase_price(device: str, scenario: Scenario, prices: PriceBook) -> tuple[float, str]:
    own = scenario.ownership
    if own.purchase_usd is not None:
        return own.purchase_usd, "Scenario.ownership.purchase_usd"
    row = prices.purchase(device)
    return row.usd_per_unit, row.cite()


def kwh_price(scenario: Scenario, prices: PriceBook) -> tuple[float, str]:
    if scenario.ownership.usd_per_kwh is not None:
        return scenario.ownership.usd_per_kwh, "Scenario.ownership.usd_per_kwh"
    row = prices.get("electricity", "grid")
    return row.usd_per_unit, row.cite()


def _uses(usage: Usage) -> list[tuple[str, str, float]]:
    """(activity, device, busy device-hours) for training and serving."""
    out = []
    if usage.training_device_hours > 0:  # the paid hours: ideal / goodput
        out.append(("training", usage.train_device, usage.training_device_hours / usage.goodput))
    if usage.serving_device_hours > 0:
        out.append(("serving", usage.serve_device, usage.serving_device_hours))
    return out


# ----------------------------------------------------------------------------------------------
# the four components
# ----------------------------------------------------------------------------------------------
def c_hardware(usage: Usage, scenario: Scenario, prices: PriceBook) -> list[LineItem]:
    """Owning: amortized purchase + maintenance for the device-hours used / utilization.

    rate_amortized = purchase / (lifetime_years x 8760 h); rate_maintenance = purchase x
    maintenance_fraction_per_year / 8760 h; quantity = busy device-hours / utilization (the
    workload bears its share of idle time). Renting: no items (the rent already covers it).
    """
    own = scenario.ownership
    if not own.owns:
        return []
    items = []
    for activity, device, hours in _uses(usage):
        price, src = purchase_price(device, scenario, prices)
        qty = hours / own.utilization
        base = f"{hours:,.1f} busy device-h / {own.utilization:g} utilization"
        items.append(_item("hardware", f"amortized purchase ({activity}, {device})", qty, "device-hour",
                           price / (own.lifetime_years * HOURS_PER_YEAR),
                           f"{base} x ({usd(price)} / ({own.lifetime_years:g} y x 8760 h))", src, activity))
        if own.maintenance_fraction_per_year > 0:
            items.append(_item("hardware", f"maintenance ({activity}, {device})", qty, "device-hour",
                               price * own.maintenance_fraction_per_year / HOURS_PER_YEAR,
                               f"{base} x ({usd(price)} x {own.maintenance_fraction_per_year:g}/y / 8760 h)",
                               f"{src}; Ownership.maintenance_fraction_per_year", activity))
    return items


def c_train_deploy(usage: Usage, scenario: Scenario, prices: PriceBook) -> list[LineItem]:
    """Compute consumed: rented device-hours (or energy when owning), network, artifact storage."""
    own, s = scenario.ownership, scenario.serving
    items: list[LineItem] = []
    runs = usage.training_runs
    # -- training: one item per block (base model, each technique's extra training)
    for b in usage.blocks:
        hours = runs * b.device_hours_per_run
        how = (f"{runs} run(s) x {b.samples:,.0f} samples x {b.epochs:g} epochs at {usage.training_devices} "
               f"device(s), {usage.efficiency:g} efficiency = {hours:,.2f} device-h")
        if own.owns:
            items.append(_energy(f"training energy ({b.label}, {usage.train_device})", hours, usage.train_power_watts,
                                 scenario, prices, "training", how))
        else:
            rate, src = device_hour_rate(usage.train_device, scenario, prices)
            items.append(_item("train_deploy", f"training compute ({b.label}, {usage.train_device}, {own.rent_tier})",
                               hours, "device-hour", rate, how, src, "training"))
    # -- goodput: failures, restarts, checkpoint writes and evaluation pauses turn ideal into paid hours
    lost = usage.training_device_hours * (1.0 / usage.goodput - 1.0)
    if lost > 0:
        how = f"{usage.training_device_hours:,.2f} ideal device-h x (1 / {usage.goodput:.4g} - 1); {usage.goodput_note}"
        if own.owns:
            items.append(_energy(f"goodput loss ({usage.train_device})", lost, usage.train_power_watts, scenario,
                                 prices, "training", how))
        else:
            rate, src = device_hour_rate(usage.train_device, scenario, prices)
            items.append(_item("train_deploy", f"goodput loss ({usage.train_device}, {own.rent_tier})", lost,
                               "device-hour", rate, how, src + "; TrainingPlan goodput defaults: "
                               "cost_models/data/assumptions.toml", "training"))
    # -- serving: replicas always on for the horizon
    if usage.serving_device_hours > 0:
        how = (f"{usage.replicas} replica(s) [ceil({s.peak_rps:g} req/s x {s.samples_per_request:g} samples / "
               f"{usage.throughput_samples_per_s:,.4g} samples/s)]"
               + (f" x {usage.devices_per_replica} devices" if usage.devices_per_replica > 1 else "")
               + f" x {usage.horizon_hours:,.0f} h")
        if own.owns:
            items.append(_energy(f"serving energy ({usage.serve_device})", usage.serving_device_hours,
                                 usage.serve_power_watts, scenario, prices, "serving", how))
        else:
            rate, src = device_hour_rate(usage.serve_device, scenario, prices)
            items.append(_item("train_deploy", f"serving compute ({usage.serve_device}, {own.rent_tier})",
                               usage.serving_device_hours, "device-hour", rate, how, src, "serving"))
    # -- network
    if usage.gradient_gb_per_run > 0 and runs > 0:
        row = prices.get("network", "inter_node")
        gb = runs * usage.gradient_gb_per_run
        items.append(_item("train_deploy", "gradient exchange across nodes", gb, "GB", row.usd_per_unit,
                           f"{runs} run(s) x 2 x ({usage.training_nodes} - 1) nodes x parameters per global step "
                           f"= {gb:,.1f} GB", row.cite(), "training"))
    if usage.response_gb > 0:
        row = prices.get("network", "internet_egress")
        items.append(_item("train_deploy", "responses (internet egress)", usage.response_gb, "GB", row.usd_per_unit,
                           f"{usage.requests:,.0f} requests x {s.response_bytes:,.0f} B = {usage.response_gb:,.2f} GB",
                           row.cite(), "serving"))
    # -- the deployed artifact, kept for the horizon
    if usage.artifact_gb > 0:
        row = prices.get("storage", "object")
        q = usage.artifact_gb * usage.horizon_months
        items.append(_item("train_deploy", "artifact storage", q, "GB-month", row.usd_per_unit,
                           f"{usage.artifact_gb:,.3f} GB x {usage.horizon_months:g} months", row.cite(), "storage"))
    return items


def _energy(name: str, device_hours: float, watts: float, scenario: Scenario, prices: PriceBook, activity: str,
            how: str) -> LineItem:
    rate, src = kwh_price(scenario, prices)
    pue = scenario.ownership.pue
    kwh = device_hours * watts / 1000.0 * pue
    return _item("train_deploy", name, kwh, "kWh", rate, f"{how}; x {watts:g} W x {pue:g} PUE / 1000",
                 f"{src}; power: {'Ownership.power_watts' if scenario.ownership.power_watts is not None else 'device TDP'}",
                 activity)


def c_data(usage: Usage, scenario: Scenario, prices: PriceBook) -> list[LineItem]:
    """Labeling, acquisition and preprocessing per applied technique (or base), and dataset storage."""
    d = scenario.data
    items = []
    for key, n in sorted(d.labeled_samples.items()):
        if n > 0 and scenario.applies(key):
            items.append(_item("data", f"labeling ({key})", n, "label", d.usd_per_label, f"{n:,.0f} labels",
                               "Scenario.data.usd_per_label", "data"))
    for key, amount in sorted(d.acquisition_usd.items()):
        if amount > 0 and scenario.applies(key):
            items.append(_item("data", f"data acquisition ({key})", 1.0, "lump sum", amount, "1",
                               "Scenario.data.acquisition_usd", "data"))
    for key, amount in sorted(d.preprocessing_usd.items()):
        if amount > 0 and scenario.applies(key):
            items.append(_item("data", f"preprocessing ({key})", 1.0, "lump sum", amount, "1",
                               "Scenario.data.preprocessing_usd", "data"))
    months = usage.horizon_months if d.storage_months is None else d.storage_months
    if d.dataset_gb > 0 and months > 0:
        row = prices.get("storage", "object")
        items.append(_item("data", "dataset storage", d.dataset_gb * months, "GB-month", row.usd_per_unit,
                           f"{d.dataset_gb:,.2f} GB x {months:g} months", row.cite(), "storage"))
    return items


def c_human(usage: Usage, scenario: Scenario, prices: PriceBook) -> list[LineItem]:
    """Engineer hours per technique: apply and tune (one-off), maintain (per month)."""
    rate = scenario.people.usd_per_hour
    items = []
    for t in scenario.techniques:
        h = scenario.engineer_hours(t)
        src = "Scenario.people.hours" if t in scenario.people.hours else "assumption: data/techniques.toml"
        if h > 0:
            items.append(_item("human", f"apply and tune {t}", h, "engineer-hour", rate, f"{h:g} h",
                               f"{src}; rate: Scenario.people.usd_per_hour", "development"))
        m = scenario.maintenance_hours_per_month(t)
        src = ("Scenario.people.maintenance_hours_per_month" if t in scenario.people.maintenance_hours_per_month
               else "assumption: data/techniques.toml")
        if m > 0:
            q = m * usage.horizon_months
            items.append(_item("human", f"maintain {t}", q, "engineer-hour", rate,
                               f"{m:g} h/month x {usage.horizon_months:g} months", f"{src}; rate: "
                               "Scenario.people.usd_per_hour", "development"))
    return items


def all_items(usage: Usage, scenario: Scenario, prices: PriceBook) -> tuple[LineItem, ...]:
    """The four components in order; each item appears once, in exactly one component."""
    return tuple(c_hardware(usage, scenario, prices) + c_train_deploy(usage, scenario, prices)
                 + c_data(usage, scenario, prices) + c_human(usage, scenario, prices))
