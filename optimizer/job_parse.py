"""Parsing job files: a TOML table (or a dict) validated field by field into a :class:`Job`.

Every error names the field path, what is allowed and what was given, e.g.
``job.space.prune_amount[1] must be a fraction in [0, 1) (0.0 = no pruning); got 1.5.``
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import tomllib

from profilers._config import ConfigError

from ._job_fields import (
    _MISSING,
    _choice,
    _device,
    _err,
    _int,
    _is_num,
    _keys,
    _list,
    _positive,
    _remap,
    _string,
)
from .job_spec import _METHODS, KINDS, Job, _check_workload
from .optuna_search import PRUNERS
from .whatif import WhatIf, _parse_whatif

__all__ = ["bundled_jobs", "default_job_path", "load_job", "parse_job"]

_OPTUNA = ("tpe", "random", "nsga2")
# ----------------------------------------------------------------------------------------------
# parsing
# ----------------------------------------------------------------------------------------------
_TOP = ("name", "kind", "description", "workload", "output", "space", "scenario", "prices", "constraints", "search",
        "whatif")
def _fraction(path: str, v: Any) -> float:
    if not _is_num(v) or not 0 < v <= 1:
        raise _err(path, "a fraction in (0, 1]", v)
    return float(v)


def _fidelities(path: str, v: Any) -> tuple[float, ...]:
    vals = _list(path, v, _fraction)
    if any(b <= a for a, b in zip(vals, vals[1:])):
        raise _err(path, "an increasing list of fractions in (0, 1] (e.g. [0.25, 1.0])", v)
    return vals


def _non_negative(path: str, v: Any) -> float:
    if not _is_num(v) or v < 0:
        raise _err(path, "a number >= 0", v)
    return float(v)


def _bool(path: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise _err(path, "true or false", v)
    return v


_ALL = ("lazy", "exhaustive", *_OPTUNA)
_ONE_OBJECTIVE = ("tpe", "random")
_MF = "multi-fidelity pruning is for 'tpe' and 'random'"
# key -> (check, methods that take it, why the others do not); every budget applies to every method
_SEARCH_FIELDS: dict[str, tuple[Any, tuple[str, ...], str]] = {
    "n_trials": (lambda p, v: _int(p, v, 1), _OPTUNA,
                 "a trial budget is for 'tpe', 'random' and 'nsga2'; cap 'lazy' with max_evaluations"),
    "timeout_s": (_positive, _ALL, ""),
    "max_evaluations": (lambda p, v: _int(p, v, 1), _ALL, ""),
    "budget_usd": (_positive, _ALL, ""),
    "usd_per_hour": (_positive, _ALL, ""),
    "fidelities": (_fidelities, _ONE_OBJECTIVE, _MF),
    "pruner": (_choice(PRUNERS), _ONE_OBJECTIVE, _MF),
    "prune_margin": (_non_negative, _ONE_OBJECTIVE, _MF),
    "skip_dearer": (_bool, _ONE_OBJECTIVE, "pruning variants dearer than the incumbent is for 'tpe' and 'random'"),
    "seed": (lambda p, v: _int(p, v, 0), _ALL, ""),
    "profile_time_cap_s": (_positive, _ALL, ""),
    "storage": (_string, _OPTUNA, "Optuna storage is for 'tpe', 'random' and 'nsga2'; every method keeps its "
                                  "evaluations in the output folder"),
}
_SEARCH_KEYS = ("method", *_SEARCH_FIELDS)
_SCENARIO_PLANS = {"serving": "ServingPlan", "training": "TrainingPlan", "data": "DataPlan",
                   "people": "PeoplePlan", "ownership": "Ownership"}


def _parse_space(path: str, t: Any) -> Any:
    from .space import QUANT_ORDER, SearchSpace

    allowed = [f.name for f in dataclasses.fields(SearchSpace)]
    t = _keys(path, t, allowed)

    def width(p: str, v: Any) -> float:
        if not _is_num(v) or not 0 < v <= 1:
            raise _err(p, "a fraction in (0, 1] (1.0 = no distillation)", v)
        return float(v)

    def amount(p: str, v: Any) -> float:
        if not _is_num(v) or not 0 <= v < 1:
            raise _err(p, "a fraction in [0, 1) (0.0 = no pruning)", v)
        return float(v)

    kw: dict[str, Any] = {}
    if "distill_width" in t:
        kw["distill_width"] = _list(f"{path}.distill_width", t["distill_width"], width)
    if "prune_amount" in t:
        kw["prune_amount"] = _list(f"{path}.prune_amount", t["prune_amount"], amount)
    if "quantize" in t:
        kw["quantize"] = _list(f"{path}.quantize", t["quantize"], _choice(QUANT_ORDER))
    if "devices" in t:
        kw["devices"] = _list(f"{path}.devices", t["devices"], _device(host=True))
    if "batch_sizes" in t:
        kw["batch_sizes"] = _list(f"{path}.batch_sizes", t["batch_sizes"], lambda p, v: _int(p, v, 1))
    if "prune_method" in t:
        kw["prune_method"] = _choice(("structured", "l1_unstructured", "semi_structured_2_4"))(
            f"{path}.prune_method", t["prune_method"])
    if "finetune_steps" in t:
        kw["finetune_steps"] = _int(f"{path}.finetune_steps", t["finetune_steps"], 0)
    if "distill_steps" in t:
        kw["distill_steps"] = _int(f"{path}.distill_steps", t["distill_steps"], 1)
    try:
        return SearchSpace(**kw)
    except ConfigError as e:
        raise _remap(e, "SearchSpace", path) from None


def _parse_scenario(path: str, t: Any, name: str, *, whatif: WhatIf | None) -> Any:
    import cost_models

    t = _keys(path, t, ["name", "techniques", *_SCENARIO_PLANS])
    if "techniques" in t:
        raise _err(f"{path}.techniques", "absent (the search sets each variant's techniques from job.space)",
                   t["techniques"])
    plans: dict[str, Any] = {}
    for key, cls_name in _SCENARIO_PLANS.items():
        cls = getattr(cost_models, cls_name)
        sub = _keys(f"{path}.{key}", t.get(key, {}), [f.name for f in dataclasses.fields(cls)])
        if key == "training" and whatif is not None and sub.get("unit") == "tokens":
            sub.setdefault("tokens_per_sample", whatif.train_seq_len)
            if sub["tokens_per_sample"] != whatif.train_seq_len:
                raise _err(f"{path}.training.tokens_per_sample", f"job.whatif.train_seq_len "
                           f"({whatif.train_seq_len}) in a what-if (or absent)", sub["tokens_per_sample"])
        try:
            plans[key] = cls(**sub)
        except ConfigError as e:
            raise _remap(e, cls_name, f"{path}.{key}") from None
    # per-technique keys (people.hours = { prune = 16 }, data.labeled_samples = { distill = 50_000 })
    # may name any technique of cost_models/data/techniques.toml: the scenario checks the names, and
    # the search prices each variant with the keys of the techniques it applies
    sname = _string(f"{path}.name", t["name"]) if "name" in t else name
    try:
        return cost_models.Scenario(name=sname, **plans)
    except ConfigError as e:
        owner = str(e).split(".", 1)[0]  # the scenario checks its plans' per-technique keys
        plan = {cls_name: key for key, cls_name in _SCENARIO_PLANS.items()}.get(owner)
        raise (_remap(e, owner, f"{path}.{plan}") if plan else _remap(e, "Scenario", path)) from None


def _parse_prices(path: str, t: Any, base: Path) -> tuple[str | None, tuple[Any, ...]]:
    from cost_models import PriceBook, PriceRow

    t = _keys(path, t, ["file", "price"])
    price_file = None
    if "file" in t:
        v = t["file"]
        if not isinstance(v, str) or not v.strip():
            raise _err(f"{path}.file", "a path to a .toml or .json price file", v)
        p = Path(v) if Path(v).is_absolute() else base / v
        if not p.is_file() or p.suffix.lower() not in (".toml", ".json"):
            raise _err(f"{path}.file", f"an existing .toml or .json price file (looked for {p})", v)
        price_file = str(p.resolve())
        PriceBook.load(price_file)  # its own errors name the file and the row
    rows = []
    raw = t.get("price", [])
    if not isinstance(raw, list):
        raise _err(f"{path}.price", "an array of [[prices.price]] tables", raw)
    allowed = [f.name for f in dataclasses.fields(PriceRow)]
    for i, row in enumerate(raw):
        rp = f"{path}.price[{i}]"
        row = _keys(rp, row, allowed)
        for req in ("kind", "item", "usd_per_unit", "source", "date"):
            if req not in row:
                raise _err(f"{rp}.{req}", "present (every price names what it prices, and is dated and sourced)",
                           _MISSING)
        if isinstance(row["date"], _dt.date) and not isinstance(row["date"], _dt.datetime):
            row["date"] = row["date"].isoformat()
        row.setdefault("default", True)  # the user's price wins unless the row says otherwise
        if row["kind"] in ("gpu_hour", "vcpu_hour"):
            row.setdefault("tier", "on_demand")
        try:
            rows.append(PriceRow(**row))
        except ConfigError as e:
            raise _remap(e, r"PriceRow(\[[^\]]*\])?", rp) from None
    try:
        PriceBook.default().merged(rows)
    except ConfigError as e:
        raise ConfigError(re.sub(r"^PriceBook\.rows", f"{path}.price", str(e), count=1)) from None
    return price_file, tuple(rows)


def _check_prices_cover(job: Job) -> None:
    """Every rented GPU in the space needs a price at the scenario's tier (else nothing can be priced)."""
    own = job.scenario.ownership
    devices = job.space.devices if job.kind == "search" else job.whatif.device_list()
    key = "job.space.devices" if job.kind == "search" else "job.whatif.devices"
    book = job.prices()
    for i, d in enumerate(devices):
        if d.lower() == "host":
            continue
        try:
            if own.owns:
                if own.purchase_usd is None:
                    book.purchase(d)
            else:
                book.gpu_hour(d, own.rent_tier, own.provider)
        except ConfigError as e:
            what = "a purchase price" if own.owns else f"a {own.rent_tier!r} price" + (
                f" from {own.provider!r}" if own.provider else "")
            raise _err(f"{key}[{i}]", f"a device with {what} in the price book ({e}) To fix: add a "
                       "[[prices.price]] row, or change job.scenario.ownership", d) from None


def parse_job(data: Mapping[str, Any], *, source: str | Path | None = None) -> Job:
    """A :class:`Job` from a parsed job file (a dict); ``source``: the file, for relative paths."""
    base = Path(source).parent if source else Path.cwd()
    data = _keys("job", data, _TOP)
    kind = _choice(KINDS)("job.kind", data.get("kind", "search"))
    name = _string("job.name", data["name"]) if "name" in data else (Path(source).stem if source else "job")
    desc = data.get("description", "")
    if not isinstance(desc, str):
        raise _err("job.description", "a string", desc)
    output = data.get("output", "")
    if output != "":
        _string("job.output", output)

    if kind == "whatif":
        for k in ("space", "constraints", "search", "workload"):
            if k in data:
                raise _err(f"job.{k}", "absent in a 'whatif' job (it prices configs; it does not search)", data[k])
        whatif = _parse_whatif("job.whatif", data.get("whatif", {}), base)
        scenario = _parse_scenario("job.scenario", data.get("scenario", {}), name, whatif=whatif)
        pf, rows = _parse_prices("job.prices", data.get("prices", {}), base)
        job = Job(name=name, kind=kind, description=desc, workload=None, scenario=scenario, price_file=pf,
                  price_rows=rows, output=output, whatif=whatif, source=str(Path(source).resolve()) if source else "")
        _check_prices_cover(job)
        return job

    if "whatif" in data:
        raise _err("job.whatif", "absent in a 'search' job (set kind = \"whatif\" for a what-if)", data["whatif"])
    workload = _check_workload("job.workload", data.get("workload", "digits"), base)
    space = _parse_space("job.space", data.get("space", {}))
    cons = _keys("job.constraints", data.get("constraints", {}), ["min_quality"])
    if "min_quality" not in cons:
        raise _err("job.constraints.min_quality", "a number (the quality the chosen model must reach, e.g. 0.95)",
                   _MISSING)
    mq = cons["min_quality"]
    if not _is_num(mq):
        raise _err("job.constraints.min_quality", "a finite number (the quality target)", mq)
    s = _keys("job.search", data.get("search", {}), _SEARCH_KEYS)
    method = _choice(_METHODS)("job.search.method", s.get("method", "lazy"))
    kw: dict[str, Any] = {}
    for key, (check, methods, why) in _SEARCH_FIELDS.items():
        if key not in s:
            continue
        if method not in methods:
            raise _err(f"job.search.{key}", f"absent with method {method!r} ({why})", s[key])
        kw[key] = check(f"job.search.{key}", s[key])
    scenario = _parse_scenario("job.scenario", data.get("scenario", {}), name, whatif=None)
    pf, rows = _parse_prices("job.prices", data.get("prices", {}), base)
    job = Job(name=name, kind=kind, description=desc, workload=workload, space=space, scenario=scenario,
              price_file=pf, price_rows=rows, min_quality=float(mq), method=method, output=output,
              source=str(Path(source).resolve()) if source else "", **kw)
    _check_prices_cover(job)
    return job


def load_job(path: str | Path) -> Job:
    """Read and validate a job file (TOML)."""
    p = Path(path)
    if not p.is_file():
        raise _err("job.path", "an existing job file (TOML)", str(path))
    try:
        data = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"job.path must be a valid TOML file; got {str(path)!r} ({e}).") from None
    return parse_job(data, source=p)


def bundled_jobs() -> dict[str, Path]:
    """Jobs shipped inside the package (``optimizer/data/*.toml``): name -> path."""
    d = resources.files("optimizer").joinpath("data")
    return {p.name.removesuffix(".toml"): Path(str(p)) for p in d.iterdir() if p.name.endswith(".toml")}


def default_job_path(kind: str = "search") -> Path:
    """The job ``sigmastar search`` (or ``sigmastar whatif``) runs without a job file."""
    return bundled_jobs()["digits" if kind == "search" else "llama_whatif"]
