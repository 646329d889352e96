"""Job files: a search (or a what-if) described in TOML, validated into a frozen :class:`Job`.

A job file names the workload, the search space, the scenario, price overrides, the quality
constraint, the method and its budget, the storage and the output folder::

    name = "digits-bulk-scan"
    workload = "digits"              # a built-in workload, "package.module:function" or "file.py:function"
    output = "runs/digits"           # default: runs/<name>

    [space]                          # optimizer.SearchSpace fields
    prune_amount = [0.0, 0.25, 0.5]
    quantize = ["none", "int8_dynamic"]
    devices = ["host", "T4", "H100-SXM"]

    [constraints]
    min_quality = 0.95

    [search]                         # method and budget
    method = "lazy"                  # lazy | exhaustive | tpe | random | nsga2

    [scenario.serving]               # cost_models plans: serving, training, data, people, ownership
    avg_requests_per_s = 50_000

    [prices]                         # overrides merged over the shipped price book
    file = "our_prices.toml"
    [[prices.price]]
    kind = "gpu_hour"
    item = "T4"
    usd_per_unit = 0.30
    source = "2026 contract"
    date = 2026-10-01

A what-if job (``kind = "whatif"``) prices transformer configs across devices instead of searching
over techniques; its ``[whatif]`` table is :class:`WhatIf`.

Paths naming inputs (a workload ``.py`` file, a price file, a model ``config.json``) are relative
to the job file; paths naming outputs (``output``, a journal ``storage``) are relative to where the
command runs. Every error names the field path, what is allowed and what was given, e.g.
``job.space.prune_amount[1] must be a fraction in [0, 1) (0.0 = no pruning); got 1.5.``
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import difflib
import importlib
import importlib.util
import json
import math
import re
import sys
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

from profilers._config import ConfigError, serializable

__all__ = ["Job", "WhatIf", "load_job", "parse_job", "default_job_path", "bundled_jobs", "KINDS",
           "SERVE_DTYPES"]

KINDS = ("search", "whatif")
#: dtypes a what-if may serve in (profilers' dtype names; each device supports a subset)
SERVE_DTYPES = ("fp32", "bf16", "fp16", "fp8", "int8", "int4")
_METHODS = ("lazy", "exhaustive", "tpe", "random", "nsga2")
_OPTUNA = ("tpe", "random", "nsga2")
_DECODER_TYPES = ("gpt2", "llama", "mistral")


# ----------------------------------------------------------------------------------------------
# errors in the one format, with the field path
# ----------------------------------------------------------------------------------------------
class _Nothing:
    def __repr__(self) -> str:
        return "nothing"


_MISSING = _Nothing()


def _show(v: Any) -> str:
    if isinstance(v, Mapping):
        return "a table"
    if isinstance(v, (_dt.date, _dt.datetime, _dt.time)):
        return f"{type(v).__name__} {v.isoformat()}"
    return repr(v)


def _err(path: str, allowed: str, got: Any) -> ConfigError:
    return ConfigError(f"{path} must be {allowed}; got {_show(got)}.")


def _remap(e: ConfigError, owner_pattern: str, path: str) -> ConfigError:
    """Rewrite an error raised by a config class (``ServingPlan.x must ...``) onto the job path."""
    msg = re.sub(rf"^{owner_pattern}\.", f"{path}.", str(e), count=1)
    return ConfigError(msg)


def _keys(path: str, table: Any, allowed: tuple[str, ...] | list[str]) -> dict:
    if not isinstance(table, Mapping):
        raise _err(path, "a table", table)
    for k in table:
        if k not in allowed:
            close = difflib.get_close_matches(k, allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{path} must be a table with keys among {', '.join(allowed)}; "
                              f"got unknown key {k!r}{hint}.")
    return dict(table)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int(path: str, v: Any, minimum: int) -> int:
    if not _is_int(v) or v < minimum:
        raise _err(path, f"an integer >= {minimum}", v)
    return v


def _positive(path: str, v: Any) -> float:
    if not _is_num(v) or v <= 0:
        raise _err(path, "a number > 0", v)
    return float(v)


def _string(path: str, v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise _err(path, "a non-empty string", v)
    return v


def _list(path: str, v: Any, check, *, unique: bool = True) -> tuple:
    if not isinstance(v, list) or not v:
        raise _err(path, "a non-empty list", v)
    out = []
    for i, x in enumerate(v):
        item = check(f"{path}[{i}]", x)
        if unique and item in out:
            raise _err(f"{path}[{i}]", "a value not listed before (no duplicates)", x)
        out.append(item)
    return tuple(out)


def _choice(allowed: tuple[str, ...]):
    def check(path: str, v: Any) -> str:
        if v not in allowed:
            raise _err(path, "one of " + ", ".join(repr(a) for a in allowed), v)
        return v

    return check


def _device_names(*, host: bool) -> list[str]:
    from profilers import hardware

    return hardware.names() + (["host"] if host else [])


def _device(host: bool):
    def check(path: str, v: Any) -> str:
        names = _device_names(host=host)
        match = next((n for n in names if isinstance(v, str) and n.lower() == v.lower()), None)
        if match is None:
            extra = "" if host else " (GPUs only: this host's CPU cannot serve these models)"
            raise _err(path, "a catalog device: one of " + ", ".join(repr(n) for n in names) + extra, v)
        return match

    return check


# ----------------------------------------------------------------------------------------------
# the what-if spec
# ----------------------------------------------------------------------------------------------
@serializable("whatif")
@dataclass(frozen=True)
class WhatIf:
    """An LLM what-if: each model config (no weights) served and trained on each device.

    * ``models``: bundled config names (``llama-2-7b``, ``llama-2-70b``, ``gpt2``) or
      ``config.json`` paths of decoder-only transformers (GPT-2, Llama, Mistral);
    * ``devices``: catalog GPUs (empty: every GPU in the catalog);
    * serving: one request = one forward pass over ``serve_seq_len`` tokens (prompt processing,
      scoring, embedding; token-by-token decoding with a KV cache is not modelled), at each of
      ``serve_batch_sizes`` and ``serve_dtypes`` the device supports, one model copy per device;
    * training: the scenario's training plan (tokens per run) with ``global_batch`` sequences of
      ``train_seq_len`` tokens per step, laid out by ``profilers.parallel.plan`` over
      ``train_device_counts`` devices (data, tensor and pipeline parallel, ZeRO, recomputation).
    """

    models: tuple[str, ...] = ("llama-2-7b", "llama-2-70b")
    devices: tuple[str, ...] = ()
    serve_seq_len: int = 512
    serve_batch_sizes: tuple[int, ...] = (1, 8, 32)
    serve_dtypes: tuple[str, ...] = ("bf16", "fp8", "int8")
    train_seq_len: int = 4096
    global_batch: int = 256
    train_device_counts: tuple[int, ...] = (8, 16, 32, 64)

    def __post_init__(self) -> None:
        o = "WhatIf"
        for f in ("models", "serve_batch_sizes", "serve_dtypes", "train_device_counts"):
            v = getattr(self, f)
            if isinstance(v, (str, bytes)) or not hasattr(v, "__iter__") or not tuple(v):
                raise _err(f"{o}.{f}", "a non-empty list", v)
            object.__setattr__(self, f, tuple(v))
        object.__setattr__(self, "devices", tuple(self.devices))
        for f in ("serve_seq_len", "train_seq_len", "global_batch"):
            _int(f"{o}.{f}", getattr(self, f), 1)
        for i, b in enumerate(self.serve_batch_sizes):
            _int(f"{o}.serve_batch_sizes[{i}]", b, 1)
        for i, n in enumerate(self.train_device_counts):
            _int(f"{o}.train_device_counts[{i}]", n, 1)
            if self.global_batch % n:
                raise _err(f"{o}.train_device_counts[{i}]", f"a divisor of global_batch ({self.global_batch}), so "
                           "that every device's share of a step is whole", n)
        for i, d in enumerate(self.serve_dtypes):
            _choice(SERVE_DTYPES)(f"{o}.serve_dtypes[{i}]", d)

    def device_list(self) -> list[str]:
        from profilers import hardware

        if self.devices:
            return list(self.devices)
        return [n for n in hardware.names() if hardware.get(n).kind == "gpu"]


def _bundled_configs() -> list[str]:
    d = resources.files("profilers").joinpath("data/hf_configs")
    return sorted(p.name.removesuffix(".json") for p in d.iterdir() if p.name.endswith(".json"))


def _model_config(path: str, v: Any, base: Path) -> str:
    names = _bundled_configs()
    if not isinstance(v, str) or not v.strip():
        raise _err(path, "a bundled config name (" + ", ".join(names) + ") or a config.json path", v)
    if v in names:
        data = json.loads(resources.files("profilers").joinpath(f"data/hf_configs/{v}.json").read_text())
        resolved = v
    else:
        p = (base / v) if not Path(v).is_absolute() else Path(v)
        if not p.is_file():
            raise _err(path, "a bundled config name (" + ", ".join(names) + ") or an existing config.json path", v)
        try:
            data = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise _err(path, f"a valid config.json ({e})", v) from None
        resolved = str(p.resolve())
    mt = data.get("model_type") if isinstance(data, dict) else None
    if mt not in _DECODER_TYPES:
        raise _err(path, "a decoder-only transformer config (model_type " + ", ".join(repr(t) for t in _DECODER_TYPES)
                   + f"); {v!r} has model_type {mt!r}", v)
    return resolved


def _parse_whatif(path: str, t: Any, base: Path) -> WhatIf:
    allowed = [f.name for f in dataclasses.fields(WhatIf)]
    t = _keys(path, t, allowed)
    kw: dict[str, Any] = {}
    if "models" in t:
        kw["models"] = _list(f"{path}.models", t["models"], lambda p, v: _model_config(p, v, base))
    if "devices" in t and t["devices"] != []:  # [] (or leaving it out): every GPU in the catalog
        kw["devices"] = _list(f"{path}.devices", t["devices"], _device(host=False))
    for f in ("serve_seq_len", "train_seq_len", "global_batch"):
        if f in t:
            kw[f] = _int(f"{path}.{f}", t[f], 1)
    for f in ("serve_batch_sizes", "train_device_counts"):
        if f in t:
            kw[f] = _list(f"{path}.{f}", t[f], lambda p, v: _int(p, v, 1))
    if "serve_dtypes" in t:
        kw["serve_dtypes"] = _list(f"{path}.serve_dtypes", t["serve_dtypes"], _choice(SERVE_DTYPES))
    try:
        return WhatIf(**kw)
    except ConfigError as e:
        raise _remap(e, "WhatIf", path) from None


# ----------------------------------------------------------------------------------------------
# the job
# ----------------------------------------------------------------------------------------------
@serializable("job")
@dataclass(frozen=True)
class Job:
    """A validated job. Build one with :func:`load_job` (a TOML file) or :func:`parse_job` (a dict).

    ``space`` is an :class:`optimizer.SearchSpace` (search jobs), ``whatif`` a :class:`WhatIf`
    (what-if jobs); ``scenario`` a :class:`cost_models.Scenario`; ``price_file`` and
    ``price_rows`` the overrides merged over the shipped price book (:meth:`prices`).
    """

    name: str
    kind: str = "search"
    description: str = ""
    workload: str | None = "digits"
    space: Any = None
    scenario: Any = None
    price_file: str | None = None
    price_rows: tuple[Any, ...] = ()
    min_quality: float | None = None
    method: str = "lazy"
    n_trials: int | None = None
    timeout_s: float | None = None
    max_evaluations: int | None = None
    seed: int = 0
    profile_time_cap_s: float = 0.5
    storage: str | None = None
    output: str = ""
    whatif: WhatIf | None = None
    source: str = ""  # the file the job came from ("" when built in Python)

    def __post_init__(self) -> None:
        from cost_models import Scenario

        from .space import SearchSpace

        o = "Job"
        _string(f"{o}.name", self.name)
        _choice(KINDS)(f"{o}.kind", self.kind)
        if self.scenario is None:
            object.__setattr__(self, "scenario", Scenario(name=self.name))
        if not isinstance(self.scenario, Scenario):
            raise _err(f"{o}.scenario", "a cost_models.Scenario", type(self.scenario).__name__)
        object.__setattr__(self, "price_rows", tuple(self.price_rows))
        if not self.output:
            object.__setattr__(self, "output", str(Path("runs") / _slug(self.name)))
        if self.kind == "search":
            if not isinstance(self.space, SearchSpace):
                raise _err(f"{o}.space", "an optimizer.SearchSpace", type(self.space).__name__)
            if not _is_num(self.min_quality):
                raise _err(f"{o}.min_quality", "a number (the quality target)", self.min_quality)
            _choice(_METHODS)(f"{o}.method", self.method)
            if not isinstance(self.workload, str) or not self.workload:
                raise _err(f"{o}.workload", "a workload name or 'module:function'", self.workload)
        else:
            object.__setattr__(self, "workload", None)
            if self.whatif is None:
                object.__setattr__(self, "whatif", WhatIf())
            if not isinstance(self.whatif, WhatIf):
                raise _err(f"{o}.whatif", "an optimizer.jobs.WhatIf", type(self.whatif).__name__)
        _int(f"{o}.seed", self.seed, 0)
        _positive(f"{o}.profile_time_cap_s", self.profile_time_cap_s)

    # ---- what the search needs ------------------------------------------------------------------
    @property
    def base_dir(self) -> Path:
        return Path(self.source).parent if self.source else Path.cwd()

    def prices(self) -> Any:
        """The shipped price book with the job's overrides merged over it (file first, then rows)."""
        from cost_models import PriceBook

        book = PriceBook.load(self.price_file) if self.price_file else PriceBook.default()
        return book.merged(self.price_rows) if self.price_rows else book

    def cost_model(self) -> Any:
        from cost_models import CostModel

        return CostModel(self.scenario, self.prices())

    def build_workload(self) -> Any:
        """The :class:`profilers.Workload`: a built-in one, or what the factory returns."""
        return _build_workload(self.workload, self.base_dir)

    def search_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`optimizer.search` (besides workload, space, cost model)."""
        return dict(min_quality=self.min_quality, method=self.method, n_trials=self.n_trials,
                    timeout_s=self.timeout_s, max_evaluations=self.max_evaluations, storage=self.storage,
                    seed=self.seed, profile_time_cap_s=self.profile_time_cap_s)

    def replace(self, **changes: Any) -> "Job":
        return dataclasses.replace(self, **changes)

    def to_json(self, **kw: Any) -> str:
        from profilers._config import dumps

        return dumps(self, **kw)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "job"


# ----------------------------------------------------------------------------------------------
# workloads: built-in names and factories
# ----------------------------------------------------------------------------------------------
_WORKLOAD_ALLOWED = "a built-in workload ({names}), 'package.module:function' or 'file.py:function'"


def _workload_allowed() -> str:
    from profilers import workloads

    return _WORKLOAD_ALLOWED.format(names=", ".join(repr(n) for n in workloads.names()))


def _check_workload(path: str, v: Any, base: Path) -> str:
    from profilers import workloads

    if not isinstance(v, str) or not v.strip():
        raise _err(path, _workload_allowed(), v)
    if ":" not in v:
        if v not in workloads.names():
            raise _err(path, _workload_allowed(), v)
        return v
    mod, _, fn = v.rpartition(":")
    if not mod or not fn.isidentifier():
        raise _err(path, _workload_allowed(), v)
    if mod.endswith(".py"):
        p = Path(mod) if Path(mod).is_absolute() else base / mod
        if not p.is_file():
            raise _err(path, f"{_workload_allowed()} naming an existing file (looked for {p})", v)
    return v


def _build_workload(spec: str, base: Path) -> Any:
    from profilers import Workload, workloads

    path = "job.workload"
    if ":" not in spec:
        return workloads.get(spec)
    mod_name, _, fn_name = spec.rpartition(":")
    try:
        if mod_name.endswith(".py"):
            p = Path(mod_name) if Path(mod_name).is_absolute() else base / mod_name
            name = f"sigmastar_job_{_slug(p.stem)}_{abs(hash(str(p.resolve()))) % 10**8}"
            if name in sys.modules:
                module = sys.modules[name]
            else:
                spec_ = importlib.util.spec_from_file_location(name, p)
                if spec_ is None or spec_.loader is None:
                    raise ImportError(f"cannot import {p}")
                module = importlib.util.module_from_spec(spec_)
                sys.modules[name] = module
                try:
                    spec_.loader.exec_module(module)
                except BaseException:
                    del sys.modules[name]
                    raise
        else:
            module = importlib.import_module(mod_name)
    except Exception as e:
        raise _err(path, f"an importable factory ({type(e).__name__}: {e})", spec) from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise _err(path, f"a function that exists in {mod_name!r}", spec)
    wl = fn()
    if not isinstance(wl, Workload):
        raise _err(path, f"a factory returning a profilers.Workload (it returned a {type(wl).__name__})", spec)
    return wl


# ----------------------------------------------------------------------------------------------
# parsing
# ----------------------------------------------------------------------------------------------
_TOP = ("name", "kind", "description", "workload", "output", "space", "scenario", "prices", "constraints", "search",
        "whatif")
_SEARCH_KEYS = ("method", "n_trials", "timeout_s", "max_evaluations", "seed", "profile_time_cap_s", "storage")
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
    # cost_models.Scenario accepts per-technique keys only for the techniques it applies, and the
    # search (and the what-if) set those per variant: a key for one technique would fail every variant
    # that does not apply it. Until that changes, only "base" keys are usable in a job.
    for plan, f in (("data", "labeled_samples"), ("data", "acquisition_usd"), ("data", "preprocessing_usd"),
                    ("training", "technique_epochs"), ("people", "hours"), ("people", "maintenance_hours_per_month")):
        for k in getattr(plans[plan], f):
            if k != "base":
                raise _err(f"{path}.{plan}.{f}[{k!r}]", "keyed by 'base' (per-technique overrides fail every variant "
                           "that does not apply that technique, so jobs cannot use them yet; the defaults come "
                           "from cost_models/data/techniques.toml)", k)
    sname = _string(f"{path}.name", t["name"]) if "name" in t else name
    try:
        return cost_models.Scenario(name=sname, **plans)
    except ConfigError as e:
        raise _remap(e, "Scenario", path) from None


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
    if "n_trials" in s:
        if method not in _OPTUNA:
            raise _err("job.search.n_trials", f"absent with method {method!r} (a trial budget is for 'tpe', 'random' "
                       "and 'nsga2'; cap 'lazy' with max_evaluations)", s["n_trials"])
        kw["n_trials"] = _int("job.search.n_trials", s["n_trials"], 1)
    if "timeout_s" in s:
        if method not in _OPTUNA:
            raise _err("job.search.timeout_s", f"absent with method {method!r} (a time budget is for 'tpe', "
                       "'random' and 'nsga2'; Ctrl-C stops any search and the same command resumes it)",
                       s["timeout_s"])
        kw["timeout_s"] = _positive("job.search.timeout_s", s["timeout_s"])
    if "max_evaluations" in s:
        if method != "lazy":
            raise _err("job.search.max_evaluations", f"absent with method {method!r} (it caps the 'lazy' search; "
                       "budget Optuna methods with n_trials or timeout_s)", s["max_evaluations"])
        kw["max_evaluations"] = _int("job.search.max_evaluations", s["max_evaluations"], 1)
    if "seed" in s:
        kw["seed"] = _int("job.search.seed", s["seed"], 0)
    if "profile_time_cap_s" in s:
        kw["profile_time_cap_s"] = _positive("job.search.profile_time_cap_s", s["profile_time_cap_s"])
    if "storage" in s:
        kw["storage"] = _string("job.search.storage", s["storage"])
        if method not in _OPTUNA:
            raise _err("job.search.storage", f"absent with method {method!r} (Optuna storage is for 'tpe', 'random' "
                       "and 'nsga2'; every method keeps its evaluations in the output folder)", s["storage"])
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


# ----------------------------------------------------------------------------------------------
# running a search job: the search itself, then the analyses its report shows
# ----------------------------------------------------------------------------------------------
@dataclass
class SearchRun:
    """What :func:`run_search` computed: the result and what the report needs besides it.

    ``breakdowns``: the itemized :class:`cost_models.CostBreakdown` of the best strategy and of
    the baseline (re-priced after the search, see :func:`analyze_best`); ``sensitivity``: the
    tornado of the best strategy (``None`` with the reason in ``sensitivity_note``).
    """

    job: Job
    output_dir: Path
    result: Any
    quality_metric: str
    evaluations_before: int
    evaluations_after: int
    seconds: float
    breakdowns: dict[str, Any] = field(default_factory=dict)
    sensitivity: Any = None
    sensitivity_note: str = ""
    environment: dict[str, str] = field(default_factory=dict)

    @property
    def resumed(self) -> bool:
        return self.evaluations_before > 0

    def _repr_html_(self) -> str:
        return self.result._repr_html_()


def finished_evaluations(output_dir: str | Path) -> int:
    """Quality evaluations already journaled in ``output_dir`` (what a resumed search reuses)."""
    p = Path(output_dir) / "evaluations.jsonl"
    if not p.exists():
        return 0
    return sum(1 for line in p.read_text().splitlines() if line.strip())


def environment() -> dict[str, str]:
    """Where the figures were made: versions and this machine (provenance of measured figures)."""
    import platform

    import torch

    from profilers import hardware

    try:
        host = hardware.get("host")
        host_txt = f"{host.name}: {host.source}"
    except Exception as e:  # pragma: no cover - host detection is best effort here
        host_txt = f"unknown ({type(e).__name__})"
    try:
        from importlib.metadata import version

        ver = version("sigmastar")
    except Exception:  # pragma: no cover - running from a source tree without install
        ver = "source tree"
    return {"sigmastar": ver, "python": platform.python_version(), "torch": torch.__version__,
            "platform": platform.platform(), "host": host_txt}


def analyze_best(job: Job, workload: Any, cost_model: Any, result: Any,
                 log: Any = None) -> tuple[dict[str, Any], Any, str]:
    """Itemized breakdowns of the best strategy and the baseline, and the best one's sensitivity.

    The search keeps each strategy's cost per component, not its line items or the figures it was
    priced from, so both are priced again here with the search's own pricing oracle. On a GPU the
    figures are projections from FLOP counts (deterministic); on the host CPU they come from a new
    timing measurement, so the totals can differ slightly from the search's (the report says so).
    """
    from cost_models import Option, sensitivity

    from .evaluate import Evaluator
    from .space import technique_names

    out: dict[str, Any] = {}
    if result.best is None:
        return out, None, "no strategy meets the constraints, so there is nothing to vary"
    ev = Evaluator(workload, job.space, cost_model, seed=job.seed, profile_time_cap_s=job.profile_time_cap_s,
                   log=log)
    by_key = {v.key: v for v in job.space.variants()}
    sens, note = None, ""
    for name, s in (("best", result.best), ("baseline", result.baseline)):
        if s is None or s.variant not in by_key:
            continue
        v = by_key[s.variant]
        dep = ev.price(v)
        if not dep.feasible or dep.breakdown is None:
            note = f"re-pricing the {name} failed: {dep.error or 'no feasible deployment'}"
            continue
        out[name] = dep.breakdown
        if name == "best":
            train = dep.projection if v.quantize == "none" else ev._base_train_projection(dep.device)
            opt = Option(f"{s.label} on {dep.device}", cost_model.with_scenario(techniques=technique_names(v)),
                         dep.projection, train)
            try:
                sens = sensitivity(opt)
            except ConfigError as e:
                note = f"sensitivity failed: {e}"
    return out, sens, note


def run_search(job: Job, output_dir: str | Path | None = None, *, storage: str | None = None, progress: Any = None,
               log: Any = None, analyze: bool = True) -> SearchRun:
    """Run a search job into ``output_dir`` (default ``job.output``); resumes what is there.

    Quality evaluations are journaled by :func:`optimizer.search` in ``evaluations.jsonl`` (and
    Optuna trials in ``study.journal`` or ``storage``), so running the same job into the same
    folder again reuses every finished evaluation. Writes nothing else: see
    :func:`optimizer.report.write_search_report`.
    """
    import time

    from .search import search

    if job.kind != "search":
        raise _err("job.kind", "'search' to run a search (run a what-if with run_whatif)", job.kind)
    out = Path(output_dir) if output_dir is not None else Path(job.output)
    out.mkdir(parents=True, exist_ok=True)
    before = finished_evaluations(out)
    t0 = time.perf_counter()
    wl = job.build_workload()
    cm = job.cost_model()
    kw = job.search_kwargs()
    if storage is not None:
        kw["storage"] = storage
    result = search(wl, job.space, cm, output_dir=out, progress=progress, log=log, raise_infeasible=False, **kw)
    breakdowns, sens, note = analyze_best(job, wl, cm, result, log) if analyze else ({}, None, "not computed")
    return SearchRun(job=job, output_dir=out, result=result, quality_metric=wl.quality_metric or "quality",
                     evaluations_before=before, evaluations_after=finished_evaluations(out),
                     seconds=time.perf_counter() - t0, breakdowns=breakdowns, sensitivity=sens,
                     sensitivity_note=note, environment=environment())


def price_rows_used(job: Job, devices: Any = None) -> list[Any]:
    """The price rows a job's scenario reads for its devices (and the services every plan uses)."""
    book = job.prices()
    own = job.scenario.ownership
    rows = []
    devs = list(devices) if devices is not None else (
        list(job.space.devices) if job.kind == "search" else job.whatif.device_list())
    for d in devs:
        try:
            if d.lower() == "host":
                rows.append(book.get("vcpu_hour", "vcpu", own.rent_tier if not own.owns else "on_demand"))
            elif own.owns:
                rows.append(book.purchase(d))
            else:
                rows.append(book.gpu_hour(d, own.rent_tier, own.provider))
        except ConfigError:
            continue
    for kind, item in (("storage", "object"), ("network", "internet_egress"), ("network", "inter_node")) + (
            (("electricity", "grid"),) if own.owns else ()):
        try:
            rows.append(book.get(kind, item))
        except ConfigError:
            continue
    return rows


# ----------------------------------------------------------------------------------------------
# running a what-if job: LLM configs across the GPU catalog, served and trained
# ----------------------------------------------------------------------------------------------
_DTYPE_TECHNIQUE = {"fp8": "quantize_fp8", "int8": "quantize_int8", "int4": "quantize_int4"}


@serializable("whatif_result")
@dataclass(frozen=True)
class WhatIfResult:
    """Serving rows (model x device x dtype x batch), training rows (model x device: the cheapest
    planned layout) and, per model, the cheapest plan priced as one :class:`CostBreakdown`."""

    job_name: str
    serving: tuple[dict, ...]
    training: tuple[dict, ...]
    plans: tuple[dict, ...]
    seconds: float
    notes: tuple[str, ...] = ()

    def to_json(self, **kw: Any) -> str:
        from profilers._config import dumps

        return dumps(self, **kw)

    def serving_dataframe(self):
        import pandas as pd

        return pd.DataFrame(list(self.serving))

    def training_dataframe(self):
        import pandas as pd

        return pd.DataFrame(list(self.training))

    def _repr_html_(self) -> str:
        from .report import whatif_html

        return whatif_html(self)


def _config_dict(model: str) -> dict:
    if model in _bundled_configs():
        return json.loads(resources.files("profilers").joinpath(f"data/hf_configs/{model}.json").read_text())
    return json.loads(Path(model).read_text())


def _model_label(model: str) -> str:
    return model if model in _bundled_configs() else Path(model).parent.name or Path(model).stem


def run_whatif(job: Job, *, log: Any = None) -> WhatIfResult:
    """Serve and train each model of ``job.whatif`` on each device, priced with the job's scenario.

    Serving: ``profilers.analyze`` (meta device, no weights) at each batch size, projected onto
    each device in each dtype it supports (roofline, default efficiency), priced with the serving
    plan (replicas for the peak, SLO, memory fit). Training: ``profilers.parallel.plan`` lays the
    model out over ``train_device_counts`` devices and keeps the cheapest layout that fits; the
    cost model prices its device-hours for the training plan's tokens.
    """
    import time

    from cost_models import CostModel, DataPlan, ModelFigures, PeoplePlan, ServingPlan, TrainingPlan
    from profilers import analyze, hardware, project
    from profilers.parallel import TransformerShape, plan

    log = log or (lambda m: None)
    if job.kind != "whatif":
        raise _err("job.kind", "'whatif' to run a what-if", job.kind)
    t0 = time.perf_counter()
    w, sc, book = job.whatif, job.scenario, job.prices()
    own = sc.ownership
    devices = w.device_list()
    serve_sc = sc.replace(training=TrainingPlan(), data=DataPlan())
    serving, training, plans, notes = [], [], [], []
    figs: dict[tuple, Any] = {}
    for model in w.models:
        label = _model_label(model)
        for b in w.serve_batch_sizes:
            log(f"analyzing {label} at batch {b} x {w.serve_seq_len} tokens on the meta device")
            prof = analyze(model, batch_size=b, seq_len=w.serve_seq_len, dtype="bf16", train=False, name=label)
            for d in devices:
                spec = hardware.get(d)
                for dt in w.serve_dtypes:
                    row = {"model": label, "device": d, "dtype": dt, "batch_size": b, "parameters": prof.parameters}
                    if not spec.supports(dt):
                        serving.append({**row, "status": "unsupported", "total_usd": math.inf,
                                        "message": f"{d} has no {dt} peak ({', '.join(spec.peak_tflops)})"})
                        continue
                    pr = project(prof, spec, dt)
                    techs = (_DTYPE_TECHNIQUE[dt],) if dt in _DTYPE_TECHNIQUE else ()
                    br = CostModel(serve_sc.replace(techniques=techs), book).estimate(pr, model_name=label)
                    serving.append({**row, "latency_s": pr.latency_s, "peak_memory_gb": pr.peak_memory_bytes / 1e9,
                                    "fits_memory": pr.fits_memory, "replicas": br.replicas,
                                    "total_usd": br.total_usd, "status": br.status,
                                    "message": br.message, "provenance": pr.provenance})
                    figs[("serve", label, d, dt, b)] = (pr, techs)
        trains = sc.training.samples_per_epoch > 0
        shape = TransformerShape.from_hf_config(_config_dict(model), seq_len=w.train_seq_len, name=label)
        for d in (devices if trains else ()):
            spec = hardware.get(d)
            precision = "bf16" if spec.supports("bf16") else "fp16"
            row = {"model": label, "device": d, "precision": precision, "parameters": shape.parameters()}
            try:
                usd_h = None if own.owns else book.gpu_hour(d, own.rent_tier, own.provider).usd_per_unit
            except ConfigError as e:
                training.append({**row, "status": "no price", "total_usd": math.inf, "message": str(e)})
                continue
            log(f"planning {label} training layouts on {d} ({', '.join(map(str, w.train_device_counts))} devices)")
            res = plan(shape, spec, list(w.train_device_counts), w.global_batch, usd_per_device_hour=usd_h,
                       precision=precision)
            if res.status != "ok":
                training.append({**row, "status": "infeasible", "total_usd": math.inf, "message": res.message,
                                 "layouts_evaluated": res.evaluated})
                continue
            c = res.cheapest
            cfg, n, step_s = c.config, c.config.devices, c.time.total_s
            layout = (f"dp{cfg.dp} tp{cfg.tp} pp{cfg.pp} zero{cfg.zero_stage} mb{cfg.micro_batch}"
                      + (f" v{cfg.interleave}" if cfg.interleave > 1 else "")
                      + (f" recompute={cfg.recompute}" if cfg.recompute != "none" else "")
                      + (" sp" if cfg.sequence_parallel else ""))
            mem = int(c.memory.total_bytes)
            tf = ModelFigures(device=d, dtype=precision, batch_size=w.global_batch // n, latency_s=step_s,
                              train_step_s=step_s, peak_memory_bytes=mem, train_peak_memory_bytes=mem,
                              parameter_bytes=shape.parameters() * 2,
                              provenance=f"{c.time.provenance}; layout {layout} (profilers.parallel.plan, cheapest "
                                         f"of {res.feasible} fitting layouts)")
            tsc = sc.replace(serving=ServingPlan(horizon_months=sc.serving.horizon_months), data=DataPlan(),
                             people=PeoplePlan(usd_per_hour=sc.people.usd_per_hour),
                             training=dataclasses.replace(sc.training, devices=n, scaling_efficiency=1.0))
            br = CostModel(tsc, book).estimate(tf, train_figures=tf, model_name=label)
            training.append({**row, "status": br.status, "devices": n, "layout": layout, "step_s": step_s,
                             "mfu": c.time.mfu, "tokens_per_s": c.time.tokens_per_s,
                             "memory_gb_per_device": mem / 1e9, "training_runs": br.training_runs,
                             "usd_per_run": br.usd_per_training_run, "total_usd": br.total_usd,
                             "message": br.message, "provenance": tf.provenance,
                             "layouts_evaluated": res.evaluated, "layouts_fitting": res.feasible})
            figs[("train", label, d)] = (tf, n)
        # the cheapest plan: the cheapest serving row + the cheapest training row, priced together
        srows = [r for r in serving if r["model"] == label and r["status"] == "ok"]
        trows = [r for r in training if r["model"] == label and r["status"] == "ok"]
        if not srows or (trains and not trows):
            plans.append({"model": label, "status": "infeasible",
                          "message": ("no device serves it within the SLO and memory" if not srows else
                                      "no device count trains it (see the training rows)")})
            continue
        s = min(srows, key=lambda r: r["total_usd"])
        spr, techs = figs[("serve", label, s["device"], s["dtype"], s["batch_size"])]
        pc = sc.replace(techniques=techs)
        tfig = None
        t = None
        if trains:
            t = min(trows, key=lambda r: r["total_usd"])
            tfig, n = figs[("train", label, t["device"])]
            pc = pc.replace(training=dataclasses.replace(sc.training, devices=n, scaling_efficiency=1.0))
        br = CostModel(pc, book).estimate(spr, train_figures=tfig, model_name=label)
        plans.append({"model": label, "status": br.status, "serve_device": s["device"], "serve_dtype": s["dtype"],
                      "serve_batch_size": s["batch_size"], "replicas": br.replicas,
                      "train_device": t["device"] if t else None, "train_devices": t["devices"] if t else None,
                      "train_layout": t["layout"] if t else None, "total_usd": br.total_usd, "breakdown": br})
    notes.append("serving: one request = one forward pass over serve_seq_len tokens, one model copy per device "
                 "(no tensor-parallel serving, no KV-cache decoding); memory is weights + the largest op's operands "
                 "(a lower bound)")
    notes.append("training: time per step from profilers.parallel (analytic FLOPs, default efficiency); the "
                 "scenario's scaling efficiency is set to 1.0 because the planned layout already models the "
                 "communication")
    return WhatIfResult(job_name=job.name, serving=tuple(serving), training=tuple(training), plans=tuple(plans),
                        seconds=time.perf_counter() - t0, notes=tuple(notes))
