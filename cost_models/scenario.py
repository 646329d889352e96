"""Scenario: what the user plans to do (train, serve, label, staff, rent or own), as configs.

Frozen, validated dataclasses that round-trip through JSON. Defaults that are not prices
(engineer rate, PUE, lifetime, ...) come from ``data/assumptions.toml``; hours and extra
training per technique from ``data/techniques.toml``. Both files say which numbers are
assumptions. Techniques are named by strings ("quantize_int8", "prune", "distill", ...).
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Iterable, Mapping

from profilers.config import check_choice, check_non_negative, check_positive, invalid, is_number, serializable

__all__ = ["TrainingPlan", "ServingPlan", "DataPlan", "PeoplePlan", "Ownership", "Scenario",
           "TechniqueDefaults", "technique_defaults", "define_technique", "assumption", "HOURS_PER_MONTH", "MAX_HORIZON_MONTHS"]

#: 8,760 hours a year / 12 (the convention cloud bills use)
HOURS_PER_MONTH = 730.0
#: the longest horizon a plan may price: 100 years (beyond it no price or device figure means anything,
#: and totals overflow to nonsense long before 1e300 months)
MAX_HORIZON_MONTHS = 1200.0


def _load(name: str) -> dict[str, Any]:
    return tomllib.loads(resources.files("cost_models").joinpath(f"data/{name}").read_text())


_ASSUMPTIONS = {row["name"]: row for row in _load("assumptions.toml")["default"]}


def assumption(name: str) -> float:
    """A default from ``data/assumptions.toml`` (each row there carries its source)."""
    if name not in _ASSUMPTIONS:
        raise invalid("assumptions", "name", "one of " + ", ".join(sorted(_ASSUMPTIONS)), name)
    return _ASSUMPTIONS[name]["value"]


def goodput(plan: "TrainingPlan", devices: int, ideal_hours: float, parameters: float) -> tuple[float, str]:
    """(goodput, why): the fraction of paid device time that trains, for a run of ``ideal_hours`` of
    wall time on ``devices`` devices of a ``parameters``-parameter model.

        checkpoint   c = (checkpoint_bytes_per_parameter x parameters
                          / (checkpoint_write_gbps_per_device x devices) GB/s) / interval
        per failure  l = restart_hours + interval / 2            (restart + the work since the checkpoint)
        failures     f = failures_per_device_hour x devices      (per wall hour)
        wall         W = ideal x (1 + c) / (1 - evaluation_fraction) / (1 - f x l)
        goodput      = ideal / W

    (Failures also strike during checkpoints, evaluation and recovery, hence the division.) An
    infeasible run (f x l >= 1: it fails faster than it recovers) raises."""
    ck_h = plan.checkpoint_bytes_per_parameter * parameters / (plan.checkpoint_write_gbps_per_device * devices * 1e9) / 3600.0
    c = ck_h / plan.checkpoint_interval_hours
    fail = plan.failures_per_device_hour * devices
    loss = plan.restart_hours + plan.checkpoint_interval_hours / 2.0
    if fail * loss >= 1:
        raise invalid("TrainingPlan", "failures_per_device_hour", f"< 1 / (devices x (restart_hours + interval / 2)) "
                      f"= {1 / (devices * loss):.3g} for {devices} devices (the run would fail faster than it "
                      "recovers)", plan.failures_per_device_hour)
    g = (1 - plan.evaluation_fraction) * (1 - fail * loss) / (1 + c)
    why = (f"productive time {g:.1%}: {fail * loss:.1%} lost to failures ({fail:.3g}/h on {devices} device(s) x "
           f"{loss:g} h each), {c / (1 + c):.1%} to checkpoint writes ({ck_h * 3600:.0f} s every "
           f"{plan.checkpoint_interval_hours:g} h), {plan.evaluation_fraction:.0%} to evaluation")
    return g, why


@dataclass(frozen=True)
class TechniqueDefaults:
    name: str
    engineer_hours: float
    maintenance_hours_per_month: float
    training_epochs: float
    notes: str
    source: str
    date: str


def _load_techniques() -> dict[str, TechniqueDefaults]:
    data = _load("techniques.toml")
    out = {}
    for row in data["technique"]:
        out[row["name"]] = TechniqueDefaults(
            name=row["name"], engineer_hours=float(row["engineer_hours"]),
            maintenance_hours_per_month=float(row["maintenance_hours_per_month"]),
            training_epochs=float(row["training_epochs"]), notes=row.get("notes", ""),
            source=row.get("source", data["source"]), date=row.get("date", data["date"]))
    return out


_TECHNIQUES = _load_techniques()
_BUNDLED = frozenset(_TECHNIQUES)


def define_technique(name: str, *, engineer_hours: float, maintenance_hours_per_month: float = 0.0,
                     training_epochs: float = 0.0, notes: str = "", source: str = "") -> TechniqueDefaults:
    """Add a technique of your own (a custom search dimension) to the techniques this process
    prices, with its defaults as a techniques.toml row has them (``source``: where the figures come
    from; default "assumption: given by the user"). Redefining one of your own replaces it; a
    bundled name is refused. Scenarios then take ``name`` like any technique (``PeoplePlan.hours``
    overrides it)."""
    import datetime as _dt

    o = "define_technique"
    if not isinstance(name, str) or not name.isidentifier():
        raise invalid(o, "name", "a Python identifier", name)
    if name in _BUNDLED:
        raise invalid(o, "name", "a name not in cost_models/data/techniques.toml (" + ", ".join(sorted(_BUNDLED))
                      + "): override a bundled one with PeoplePlan.hours", name)
    for f, v in (("engineer_hours", engineer_hours), ("maintenance_hours_per_month", maintenance_hours_per_month),
                 ("training_epochs", training_epochs)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1e7:
            raise invalid(o, f, "a number in [0, 1e7)", v)
    row = TechniqueDefaults(name=name, engineer_hours=float(engineer_hours),
                            maintenance_hours_per_month=float(maintenance_hours_per_month),
                            training_epochs=float(training_epochs), notes=notes,
                            source=source or "assumption: given by the user (define_technique)",
                            date=_dt.date.today().isoformat())
    _TECHNIQUES[name] = row
    return row


def technique_defaults() -> dict[str, TechniqueDefaults]:
    """Name -> defaults for every technique in ``data/techniques.toml`` (assumptions)."""
    return dict(_TECHNIQUES)


def _mapping(owner: str, name: str, value: Any) -> dict[str, float]:
    if not isinstance(value, Mapping):
        raise invalid(owner, name, "a mapping name -> number", value)
    out = {}
    for k, v in value.items():
        if not isinstance(k, str):
            raise invalid(owner, name, "keyed by strings", k)
        check_non_negative(owner, f"{name}[{k!r}]", v)
        out[k] = v
    return out


#: sanity bounds, (owner, field) -> (lowest, highest, why): a value past them is a typo or a unit slip, and
#: the totals computed from it would overflow to inf (or divide by ~0) long before 1e308. Checked after the
#: field's own rule (sign, type), so a negative value still reads "must be a finite number >= 0"
_BOUNDS: dict[tuple[str, str], tuple[float, float, str]] = {
    ("ServingPlan", "avg_requests_per_s"): (0, 1e9, "a billion requests/s is past any service's traffic"),
    ("ServingPlan", "peak_requests_per_s"): (0, 1e9, "a billion requests/s is past any service's traffic"),
    ("ServingPlan", "samples_per_request"): (0, 1e9, "samples or tokens per request"),
    ("ServingPlan", "response_bytes"): (0, 1e12, "bytes per response: at most a terabyte"),
    ("ServingPlan", "latency_slo_s"): (0, 1e6, "seconds"),
    ("ServingPlan", "ttft_slo_s"): (0, 1e6, "seconds"),
    ("ServingPlan", "tpot_slo_s"): (0, 1e6, "seconds"),
    ("TrainingPlan", "samples_per_epoch"): (0, 1e15, "samples or tokens per epoch: at most a quadrillion"),
    ("TrainingPlan", "epochs"): (0, 1e6, "epochs per run"),
    ("TrainingPlan", "tokens_per_sample"): (0, 1e8, "tokens per sample"),
    ("TrainingPlan", "retrain_every_months"): (1 / HOURS_PER_MONTH, MAX_HORIZON_MONTHS,
                                               "months: at most one training run an hour"),
    ("TrainingPlan", "devices"): (1, 1e6, "devices sharing one run"),
    ("TrainingPlan", "scaling_efficiency"): (0.01, 1, "the fraction of linear speed-up"),
    ("TrainingPlan", "technique_epochs"): (0, 1e6, "epochs"),
    ("TrainingPlan", "failures_per_device_hour"): (0, 1e3, "failures per device-hour"),
    ("TrainingPlan", "restart_hours"): (0, 1e5, "hours"),
    ("TrainingPlan", "checkpoint_interval_hours"): (1e-3, 1e5, "hours: at most a checkpoint every 3.6 s"),
    ("TrainingPlan", "checkpoint_bytes_per_parameter"): (1e-3, 1e3, "bytes per parameter"),
    ("TrainingPlan", "checkpoint_write_gbps_per_device"): (1e-6, 1e6, "GB/s per device"),
    ("TrainingPlan", "evaluation_fraction"): (0, 0.99, "the fraction of time in evaluation pauses"),
    ("DataPlan", "labeled_samples"): (0, 1e15, "labels"),
    ("DataPlan", "usd_per_label"): (0, 1e6, "USD per label"),
    ("DataPlan", "acquisition_usd"): (0, 1e12, "USD"),
    ("DataPlan", "preprocessing_usd"): (0, 1e12, "USD"),
    ("DataPlan", "dataset_gb"): (0, 1e9, "GB: at most an exabyte"),
    ("DataPlan", "storage_months"): (0, MAX_HORIZON_MONTHS, "months (100 years)"),
    ("PeoplePlan", "usd_per_hour"): (0, 1e5, "USD per engineer-hour"),
    ("PeoplePlan", "hours"): (0, 1e7, "engineer-hours"),
    ("PeoplePlan", "maintenance_hours_per_month"): (0, HOURS_PER_MONTH * 1e3, "engineer-hours per month"),
    ("Ownership", "purchase_usd"): (0, 1e9, "USD per device"),
    ("Ownership", "lifetime_years"): (1 / 12, 100, "years: a month to a century"),
    ("Ownership", "utilization"): (1e-3, 1, "the fraction of the device's hours it is busy"),
    ("Ownership", "maintenance_fraction_per_year"): (0, 10, "of the purchase price per year"),
    ("Ownership", "power_watts"): (0, 1e7, "watts per device"),
    ("Ownership", "pue"): (1, 10, "total facility power / IT power"),
    ("Ownership", "usd_per_kwh"): (0, 1e3, "USD per kWh"),
    ("Ownership", "host_vcpus"): (1, 1e5, "vCPUs"),
}


def _check_bounds(plan: Any) -> None:
    """Each field of ``plan`` (each value, for a mapping) within its :data:`_BOUNDS`."""
    o = type(plan).__name__
    for f in dataclasses.fields(plan):
        b = _BOUNDS.get((o, f.name))
        v = getattr(plan, f.name)
        if b is None or v is None:
            continue
        lo, hi, why = b
        for name, x in ([(f"{f.name}[{k!r}]", x) for k, x in v.items()] if isinstance(v, Mapping) else [(f.name, v)]):
            if not is_number(x) or not lo <= x <= hi:
                raise invalid(o, name, f"a number in [{lo:.3g}, {hi:.3g}] ({why})", x)


def _opt_positive(owner: str, name: str, value: Any) -> None:
    if value is not None:
        check_positive(owner, name, value)


@serializable("cost_models.training_plan")
@dataclass(frozen=True)
class TrainingPlan:
    """Training per run, how often it reruns, and how many devices share it.

    ``samples_per_epoch`` counts ``unit`` ("samples", or "tokens" with ``tokens_per_sample``).
    0 means the scenario does not train the base model (e.g. quantizing a pre-trained one).
    ``retrain_every_months`` None: one run over the horizon; else ceil(horizon / cadence) runs.
    ``scaling_efficiency`` (fraction of linear speed-up) applies when ``devices`` > 1.
    ``technique_epochs`` overrides the extra epochs per technique from techniques.toml.

    Goodput (:func:`goodput`): ideal device-hours become paid ones through failures
    (``failures_per_device_hour`` x devices x wall hours interruptions, each losing ``restart_hours``
    plus half a ``checkpoint_interval_hours`` of work), blocking checkpoint writes
    (``checkpoint_bytes_per_parameter`` x parameters over ``checkpoint_write_gbps_per_device`` x devices,
    each interval) and
    ``evaluation_fraction`` of the time in evaluation pauses. Defaults: data/assumptions.toml.
    """

    samples_per_epoch: float = 0.0
    epochs: float = 1.0
    unit: str = "samples"
    tokens_per_sample: float | None = None
    retrain_every_months: float | None = None
    devices: int = 1
    scaling_efficiency: float = field(default_factory=lambda: assumption("scaling_efficiency"))
    technique_epochs: Mapping[str, float] = field(default_factory=dict)
    failures_per_device_hour: float = field(default_factory=lambda: assumption("failures_per_device_hour"))
    restart_hours: float = field(default_factory=lambda: assumption("restart_hours"))
    checkpoint_interval_hours: float = field(default_factory=lambda: assumption("checkpoint_interval_hours"))
    checkpoint_bytes_per_parameter: float = field(default_factory=lambda: assumption("checkpoint_bytes_per_parameter"))
    checkpoint_write_gbps_per_device: float = field(
        default_factory=lambda: assumption("checkpoint_write_gbps_per_device"))
    evaluation_fraction: float = field(default_factory=lambda: assumption("evaluation_fraction"))

    def __post_init__(self) -> None:
        o = "TrainingPlan"
        for f in ("failures_per_device_hour", "restart_hours", "evaluation_fraction"):
            check_non_negative(o, f, getattr(self, f))
        for f in ("checkpoint_interval_hours", "checkpoint_bytes_per_parameter", "checkpoint_write_gbps_per_device"):
            check_positive(o, f, getattr(self, f))
        if self.evaluation_fraction >= 1:
            raise invalid(o, "evaluation_fraction", "a fraction in [0, 1)", self.evaluation_fraction)
        check_non_negative(o, "samples_per_epoch", self.samples_per_epoch)
        check_non_negative(o, "epochs", self.epochs)
        check_choice(o, "unit", self.unit, ("samples", "tokens"))
        if self.unit == "tokens":
            if self.tokens_per_sample is None:
                raise invalid(o, "tokens_per_sample", "a number > 0 when unit is 'tokens'", None)
            check_positive(o, "tokens_per_sample", self.tokens_per_sample)
        _opt_positive(o, "retrain_every_months", self.retrain_every_months)
        if not isinstance(self.devices, int) or isinstance(self.devices, bool) or self.devices < 1:
            raise invalid(o, "devices", "an integer >= 1", self.devices)
        check_positive(o, "scaling_efficiency", self.scaling_efficiency)
        if self.scaling_efficiency > 1:
            raise invalid(o, "scaling_efficiency", "a fraction in (0, 1]", self.scaling_efficiency)
        object.__setattr__(self, "technique_epochs", _mapping(o, "technique_epochs", self.technique_epochs))
        _check_bounds(self)

    @property
    def samples_per_epoch_in_samples(self) -> float:
        if self.unit == "tokens":
            return self.samples_per_epoch / self.tokens_per_sample  # type: ignore[operator]
        return self.samples_per_epoch

    def runs(self, horizon_months: float) -> int:
        if self.retrain_every_months is None:
            return 1
        return max(1, math.ceil(horizon_months / self.retrain_every_months - 1e-9))


@serializable("cost_models.serving_plan")
@dataclass(frozen=True)
class ServingPlan:
    """Traffic over the horizon. Replicas are sized for ``peak_requests_per_s`` (None = average).

    ``samples_per_request``: forward samples one request needs (tokens for a token-step model).
    ``response_bytes``: bytes sent back per request (priced as internet egress).

    Token-level serving (large language models, :mod:`profilers.llm`): ``input_tokens`` and
    ``output_tokens`` per request (means), or ``request_mix``, a CSV of
    ``input_tokens,output_tokens[,count]`` (relative to the job file); ``ttft_slo_s`` and
    ``tpot_slo_s`` the 90th-percentile time to first token and time per output token. A per-sample
    workload leaves them unset.
    """

    avg_requests_per_s: float = 0.0
    peak_requests_per_s: float | None = None
    samples_per_request: float = 1.0
    latency_slo_s: float | None = None
    horizon_months: float = 12.0
    response_bytes: float = 0.0
    input_tokens: int | None = None
    output_tokens: int | None = None
    request_mix: str | None = None
    ttft_slo_s: float | None = None
    tpot_slo_s: float | None = None

    def __post_init__(self) -> None:
        o = "ServingPlan"
        check_non_negative(o, "avg_requests_per_s", self.avg_requests_per_s)
        if self.peak_requests_per_s is not None:
            check_non_negative(o, "peak_requests_per_s", self.peak_requests_per_s)
            if self.peak_requests_per_s < self.avg_requests_per_s:
                raise invalid(o, "peak_requests_per_s", f">= avg_requests_per_s ({self.avg_requests_per_s})",
                              self.peak_requests_per_s)
        check_positive(o, "samples_per_request", self.samples_per_request)
        _opt_positive(o, "latency_slo_s", self.latency_slo_s)
        for f in ("input_tokens", "output_tokens"):
            v = getattr(self, f)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise invalid(o, f, "an integer >= 1 (tokens per request) or absent", v)
        if (self.input_tokens is None) != (self.output_tokens is None):
            raise invalid(o, "output_tokens" if self.output_tokens is None else "input_tokens",
                          "given together with " + ("input_tokens" if self.output_tokens is None else "output_tokens"),
                          None)
        if self.request_mix is not None and (not isinstance(self.request_mix, str) or not self.request_mix.strip()):
            raise invalid(o, "request_mix", "a CSV path (input_tokens,output_tokens[,count]) or absent", self.request_mix)
        if self.request_mix is not None and self.input_tokens is not None:
            raise invalid(o, "request_mix", "absent when input_tokens / output_tokens are given (one request mix)",
                          self.request_mix)
        _opt_positive(o, "ttft_slo_s", self.ttft_slo_s)
        _opt_positive(o, "tpot_slo_s", self.tpot_slo_s)
        check_positive(o, "horizon_months", self.horizon_months)
        if self.horizon_months > MAX_HORIZON_MONTHS:
            raise invalid(o, "horizon_months", f"a number of months in (0, {MAX_HORIZON_MONTHS:g}] (100 years)",
                          self.horizon_months)
        check_non_negative(o, "response_bytes", self.response_bytes)
        if self.latency_slo_s is not None and self.peak_rps == 0:
            raise invalid(o, "peak_requests_per_s", "> 0 when latency_slo_s is set (an SLO needs traffic)",
                          self.peak_rps)
        _check_bounds(self)

    @property
    def token_level(self) -> bool:
        """Whether the plan describes token generation (lengths or a request mix given)."""
        return self.input_tokens is not None or self.request_mix is not None

    @property
    def peak_rps(self) -> float:
        return self.avg_requests_per_s if self.peak_requests_per_s is None else self.peak_requests_per_s

    @property
    def horizon_hours(self) -> float:
        return self.horizon_months * HOURS_PER_MONTH


@serializable("cost_models.data_plan")
@dataclass(frozen=True)
class DataPlan:
    """Data each technique needs, keyed by technique name (or "base" for the base model).

    ``labeled_samples`` x ``usd_per_label``; ``acquisition_usd`` and ``preprocessing_usd`` are
    lump sums (a number for preprocessing means {"base": number}); the dataset
    (``dataset_gb``) is stored ``storage_months`` (None = the serving horizon).
    """

    labeled_samples: Mapping[str, float] = field(default_factory=dict)
    usd_per_label: float = 0.0
    acquisition_usd: Mapping[str, float] = field(default_factory=dict)
    preprocessing_usd: Mapping[str, float] | float = field(default_factory=dict)
    dataset_gb: float = 0.0
    storage_months: float | None = None

    def __post_init__(self) -> None:
        o = "DataPlan"
        object.__setattr__(self, "labeled_samples", _mapping(o, "labeled_samples", self.labeled_samples))
        check_non_negative(o, "usd_per_label", self.usd_per_label)
        object.__setattr__(self, "acquisition_usd", _mapping(o, "acquisition_usd", self.acquisition_usd))
        pre = self.preprocessing_usd
        if isinstance(pre, (int, float)) and not isinstance(pre, bool):
            pre = {"base": pre} if pre else {}
        object.__setattr__(self, "preprocessing_usd", _mapping(o, "preprocessing_usd", pre))
        check_non_negative(o, "dataset_gb", self.dataset_gb)
        if self.storage_months is not None:
            check_non_negative(o, "storage_months", self.storage_months)
        _check_bounds(self)


@serializable("cost_models.people_plan")
@dataclass(frozen=True)
class PeoplePlan:
    """Engineer rate and hours; ``hours`` / ``maintenance_hours_per_month`` override the
    per-technique defaults in techniques.toml (which are assumptions)."""

    usd_per_hour: float = field(default_factory=lambda: assumption("engineer_usd_per_hour"))
    hours: Mapping[str, float] = field(default_factory=dict)
    maintenance_hours_per_month: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        o = "PeoplePlan"
        check_non_negative(o, "usd_per_hour", self.usd_per_hour)
        object.__setattr__(self, "hours", _mapping(o, "hours", self.hours))
        object.__setattr__(self, "maintenance_hours_per_month",
                           _mapping(o, "maintenance_hours_per_month", self.maintenance_hours_per_month))
        _check_bounds(self)


@serializable("cost_models.ownership")
@dataclass(frozen=True)
class Ownership:
    """Rent (``rent_tier``, optional ``provider``) or own (purchase, lifetime, utilization,
    maintenance, power, PUE, tariff). None means: take it from the PriceBook / device catalog.

    Owning: the workload bears its device-hours / ``utilization`` of the amortized purchase
    and maintenance (the idle share included), plus energy for its busy hours.
    """

    mode: str = "rent"
    rent_tier: str = "on_demand"
    provider: str | None = None
    purchase_usd: float | None = None
    lifetime_years: float = field(default_factory=lambda: assumption("lifetime_years"))
    utilization: float = field(default_factory=lambda: assumption("utilization"))
    maintenance_fraction_per_year: float = field(default_factory=lambda: assumption("maintenance_fraction_per_year"))
    power_watts: float | None = None
    pue: float = field(default_factory=lambda: assumption("pue"))
    usd_per_kwh: float | None = None
    host_vcpus: int = field(default_factory=lambda: int(assumption("host_vcpus")))

    def __post_init__(self) -> None:
        o = "Ownership"
        check_choice(o, "mode", self.mode, ("rent", "own"))
        check_choice(o, "rent_tier", self.rent_tier, ("on_demand", "spot", "reserved"))
        if self.purchase_usd is not None:
            check_non_negative(o, "purchase_usd", self.purchase_usd)
        check_positive(o, "lifetime_years", self.lifetime_years)
        check_positive(o, "utilization", self.utilization)
        if self.utilization > 1:
            raise invalid(o, "utilization", "a fraction in (0, 1]", self.utilization)
        check_non_negative(o, "maintenance_fraction_per_year", self.maintenance_fraction_per_year)
        if self.power_watts is not None:
            check_non_negative(o, "power_watts", self.power_watts)
        check_positive(o, "pue", self.pue)
        if self.pue < 1:
            raise invalid(o, "pue", "a number >= 1 (total facility power / IT power)", self.pue)
        if self.usd_per_kwh is not None:
            check_non_negative(o, "usd_per_kwh", self.usd_per_kwh)
        if not isinstance(self.host_vcpus, int) or isinstance(self.host_vcpus, bool) or self.host_vcpus < 1:
            raise invalid(o, "host_vcpus", "an integer >= 1", self.host_vcpus)
        _check_bounds(self)

    @property
    def owns(self) -> bool:
        return self.mode == "own"


@serializable("cost_models.scenario")
@dataclass(frozen=True)
class Scenario:
    """Everything the user plans; see the plan classes. ``techniques`` name what is applied.

    The plans' per-technique figures (``DataPlan.labeled_samples``, ``PeoplePlan.hours``, ...) may
    name any technique of techniques.toml (or of ``techniques``): only "base" and the applied
    techniques are priced, so one scenario serves every variant of a search.
    """

    name: str = "scenario"
    techniques: tuple[str, ...] = ()
    serving: ServingPlan = field(default_factory=ServingPlan)
    training: TrainingPlan = field(default_factory=TrainingPlan)
    data: DataPlan = field(default_factory=DataPlan)
    people: PeoplePlan = field(default_factory=PeoplePlan)
    ownership: Ownership = field(default_factory=Ownership)

    def __post_init__(self) -> None:
        o = "Scenario"
        if not isinstance(self.name, str) or not self.name:
            raise invalid(o, "name", "a non-empty string", self.name)
        techs = self.techniques
        if isinstance(techs, (bytes, Mapping)) or not isinstance(techs, (str, Iterable)):
            raise invalid(o, "techniques", "a list of technique names", techs)
        techs = (techs,) if isinstance(techs, str) else tuple(techs)
        object.__setattr__(self, "techniques", techs)
        for cls, f in ((TrainingPlan, "training"), (ServingPlan, "serving"), (DataPlan, "data"),
                       (PeoplePlan, "people"), (Ownership, "ownership")):
            if not isinstance(getattr(self, f), cls):
                raise invalid(o, f, f"a {cls.__name__}", type(getattr(self, f)).__name__)
        known = sorted(_TECHNIQUES)
        for t in techs:
            if not isinstance(t, str) or (t not in _TECHNIQUES and t not in self.people.hours):
                raise invalid(o, "techniques", "names from techniques.toml (" + ", ".join(known)
                              + ") or ones given PeoplePlan.hours", t)
        if len(set(techs)) != len(techs):
            raise invalid(o, "techniques", "distinct names", techs)
        # per-technique figures may name any known technique, applied here or not: a search keeps one
        # scenario and applies a different set of techniques per variant (keys of techniques this
        # scenario does not apply are kept and cost nothing, see :meth:`applies`)
        allowed = sorted(set(_TECHNIQUES) | set(techs))
        for owner, name, m in (("DataPlan", "labeled_samples", self.data.labeled_samples),
                               ("DataPlan", "acquisition_usd", self.data.acquisition_usd),
                               ("DataPlan", "preprocessing_usd", self.data.preprocessing_usd),
                               ("TrainingPlan", "technique_epochs", self.training.technique_epochs),
                               ("PeoplePlan", "hours", self.people.hours),
                               ("PeoplePlan", "maintenance_hours_per_month", self.people.maintenance_hours_per_month)):
            for k in m:
                if k != "base" and k not in allowed:
                    raise invalid(owner, f"{name}[{k!r}]", "keyed by 'base' or a technique name: one of "
                                  + ", ".join(repr(a) for a in allowed), k)

    def applies(self, key: str) -> bool:
        """Whether a per-technique key counts here: "base", or a technique this scenario applies."""
        return key == "base" or key in self.techniques

    # ---- per-technique figures, user override first, then techniques.toml ----------------
    def engineer_hours(self, technique: str) -> float:
        return self.people.hours.get(technique, _default(technique).engineer_hours)

    def maintenance_hours_per_month(self, technique: str) -> float:
        return self.people.maintenance_hours_per_month.get(technique, _default(technique).maintenance_hours_per_month)

    def technique_epochs(self, technique: str) -> float:
        return self.training.technique_epochs.get(technique, _default(technique).training_epochs)

    def replace(self, **changes: Any) -> "Scenario":
        """``dataclasses.replace`` for the scenario or, with "plan__field" keys, a plan's field."""
        top = {k: v for k, v in changes.items() if "__" not in k}
        per_plan: dict[str, dict[str, Any]] = {}
        for k, v in changes.items():
            if "__" in k:
                plan, f = k.split("__", 1)
                per_plan.setdefault(plan, {})[f] = v
        for plan, fields in per_plan.items():  # one replace per plan: fields validated together
            top[plan] = dataclasses.replace(top.get(plan, getattr(self, plan)), **fields)
        return dataclasses.replace(self, **top)


def _default(technique: str) -> TechniqueDefaults:
    return _TECHNIQUES.get(technique, TechniqueDefaults(technique, 0.0, 0.0, 0.0, "user-defined", "user", ""))
