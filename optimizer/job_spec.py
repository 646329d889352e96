"""The job: a validated, frozen description of a search (or a what-if), and its workload.

Build one with :func:`optimizer.jobs.load_job` (a TOML file) or :func:`optimizer.jobs.parse_job`
(a dict); the search reads its cost model, workload and search arguments from it.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cost_models import PriceRow, Scenario
from profilers.config import (
    is_number,
    at,
    check_choice,
    check_fields,
    invalid,
    serializable,
    where,
)

from .search_options import MAX_SEED, check_search_options
from .space import SearchSpace
from .whatif import WhatIf

__all__ = ["KINDS", "MAX_SEED", "Job", "search_method_names"]

KINDS = ("search", "whatif", "llm")
#: the search() keywords every method takes (the others are each method's ``options``)
_EVERY_METHOD = ("timeout_s", "max_evaluations", "budget_usd", "usd_per_hour", "seed", "profile_time_cap_s", "pool",
                 "runtime", "retries", "on_error")


def search_method_names() -> tuple[str, ...]:
    """The registered search methods (:data:`optimizer.methods.METHODS`), in registry order."""
    from .methods import method_names

    return method_names()


# ----------------------------------------------------------------------------------------------
# the job
# ----------------------------------------------------------------------------------------------
@serializable("job")
@dataclass(frozen=True)
class Job:
    """A validated job. Build one with :func:`load_job` (a TOML file), :func:`parse_job` (a dict)
    or in Python; the same checks run either way, once, here.

    ``space`` is an :class:`optimizer.SearchSpace` (search jobs), ``whatif`` a :class:`WhatIf`
    (what-if jobs); ``scenario`` a :class:`cost_models.Scenario`; ``price_file`` and
    ``price_rows`` the overrides merged over the shipped price book (:meth:`prices`). The search
    fields (``method``, ``n_trials``, ...) are :func:`optimizer.search`'s keywords; an option
    the method does not take must be None (see :data:`optimizer.methods.METHODS`).
    ``min_quality`` must lie in the workload's ``quality_range`` when it declares one.
    Field metadata ``path`` says where each field lives in a job file (``job.search.n_trials``);
    the fields of ``[search]`` besides ``method`` are :func:`optimizer.search`'s keywords.
    """

    name: str
    kind: str = "search"
    description: str = ""
    workload: str | None = "digits"
    space: SearchSpace | None = None
    scenario: Scenario | None = None
    price_file: str | None = field(default=None, metadata={"path": "prices.file"})
    price_rows: tuple[PriceRow, ...] = field(default=(), metadata={"path": "prices.price"})
    min_quality: float | None = field(default=None, metadata={"path": "constraints.min_quality"})
    method: str = field(default="lazy", metadata={"path": "search.method"})
    n_trials: int | None = field(default=None, metadata={"path": "search.n_trials"})
    timeout_s: float | None = field(default=None, metadata={"path": "search.timeout_s"})
    max_evaluations: int | None = field(default=None, metadata={"path": "search.max_evaluations"})
    budget_usd: float | None = field(default=None, metadata={"path": "search.budget_usd"})
    usd_per_hour: float | None = field(default=None, metadata={"path": "search.usd_per_hour"})
    fidelities: tuple[float, ...] | None = field(default=None, metadata={"path": "search.fidelities"})
    pruner: str | None = field(default=None, metadata={"path": "search.pruner"})
    prune_margin: float | None = field(default=None, metadata={"path": "search.prune_margin"})
    skip_dearer: bool | None = field(default=None, metadata={"path": "search.skip_dearer"})
    seed: int = field(default=0, metadata={"path": "search.seed"})
    profile_time_cap_s: float = field(default=0.5, metadata={"path": "search.profile_time_cap_s"})
    storage: str | None = field(default=None, metadata={"path": "search.storage"})
    layer_choices: tuple[Any, ...] | None = field(default=None, metadata={"path": "search.layer_choices"})
    max_bytes: float | None = field(default=None, metadata={"path": "search.max_bytes"})
    pool: bool = field(default=False, metadata={"path": "search.pool"})
    runtime: str = field(default="eager", metadata={"path": "search.runtime"})
    retries: int = field(default=2, metadata={"path": "search.retries"})
    on_error: str = field(default="raise", metadata={"path": "search.on_error"})
    output: str = ""
    whatif: WhatIf | None = None
    llm: Any = None  # optimizer.llm_search.LLMSpace (kind "llm")
    source: str = ""  # the file the job came from ("" when built in Python)

    def __post_init__(self) -> None:
        o = "Job"
        if not isinstance(self.name, str) or not self.name.strip():
            raise invalid(o, "name", "a non-empty string", self.name)
        if not isinstance(self.source, str):  # read (base_dir) before check_fields runs
            raise invalid(o, "source", "the path of the job file, or '' (built in Python)", self.source)
        check_choice(o, "kind", self.kind, KINDS)
        if not isinstance(self.output, str):
            raise invalid(o, "output", "a non-empty string", self.output)
        if not self.output:
            object.__setattr__(self, "output", str(Path("runs") / _slug(self.name)))
        if self.scenario is None:
            object.__setattr__(self, "scenario", Scenario(name=self.name))
        if not isinstance(self.scenario, Scenario):
            raise invalid(o, "scenario", "a cost_models.Scenario", type(self.scenario).__name__)
        self._check_prices()
        if self.kind == "search":
            if not isinstance(self.space, SearchSpace):
                raise invalid(o, "space", "an optimizer.SearchSpace", type(self.space).__name__)
            object.__setattr__(self, "workload", _check_workload(self.workload, self.base_dir))
            self._check_search()
        elif self.kind == "llm":
            from .llm_search import LLMSpace

            object.__setattr__(self, "workload", None)
            if self.llm is None:
                object.__setattr__(self, "llm", LLMSpace())
            if not isinstance(self.llm, LLMSpace):
                raise invalid(o, "llm", "an optimizer.llm_search.LLMSpace", type(self.llm).__name__)
            sv = self.scenario.serving
            if not sv.token_level:
                raise invalid(o, "scenario.serving.input_tokens", "given with output_tokens (or a request_mix file) "
                              "in an 'llm' job: it serves tokens", None)
            if sv.latency_slo_s is not None:
                raise invalid(o, "scenario.serving.latency_slo_s", "absent in an 'llm' job (set ttft_slo_s and "
                              "tpot_slo_s)", sv.latency_slo_s)
            if sv.request_mix is not None:
                p = Path(sv.request_mix) if Path(sv.request_mix).is_absolute() else self.base_dir / sv.request_mix
                if not p.is_file():
                    raise invalid(o, "scenario.serving.request_mix", f"an existing CSV file (looked for {p})",
                                  sv.request_mix)
        else:
            object.__setattr__(self, "workload", None)
            if self.whatif is None:
                object.__setattr__(self, "whatif", WhatIf())
            if not isinstance(self.whatif, WhatIf):
                raise invalid(o, "whatif", "an optimizer.jobs.WhatIf", type(self.whatif).__name__)
            tr = self.scenario.training
            if tr.unit == "tokens" and tr.tokens_per_sample != self.whatif.train_seq_len:
                raise invalid(o, "scenario.training.tokens_per_sample", f"{where(o, 'whatif.train_seq_len')} "
                              f"({self.whatif.train_seq_len}) in a what-if (or absent)", tr.tokens_per_sample)
        if self.kind != "search":  # a what-if's (a search's are checked with its other search options)
            check_search_options(o, {"seed": self.seed, "profile_time_cap_s": self.profile_time_cap_s})
        self._check_prices_cover()
        check_fields(self)

    # ---- the checks, one per concern ------------------------------------------------------------
    def _check_prices(self) -> None:
        o = "Job"
        if self.price_file is not None:
            v = self.price_file
            if not isinstance(v, str) or not v.strip():
                raise invalid(o, "price_file", "a path to a .toml or .json price file", v)
            p = Path(v) if Path(v).is_absolute() else self.base_dir / v
            if not p.is_file() or p.suffix.lower() not in (".toml", ".json"):
                raise invalid(o, "price_file", f"an existing .toml or .json price file (looked for {p})", v)
            object.__setattr__(self, "price_file", str(p.resolve()))
        if isinstance(self.price_rows, (str, bytes)) or not hasattr(self.price_rows, "__iter__"):
            raise invalid(o, "price_rows", "a list of cost_models.PriceRow", self.price_rows)
        rows = tuple(self.price_rows)
        for i, r in enumerate(rows):
            if not isinstance(r, PriceRow):
                raise invalid(o, f"price_rows[{i}]", "a cost_models.PriceRow", type(r).__name__)
        object.__setattr__(self, "price_rows", rows)
        from cost_models import PriceBook

        book = PriceBook.load(self.price_file) if self.price_file else PriceBook.default()  # errors name the file
        with at(PriceBook, where(o, "price_rows"), fields={"rows": ""}):  # PriceBook.rows = our rows here
            book.merged(rows)

    def _check_search(self) -> None:
        o = "Job"
        mq = self.min_quality
        if not is_number(mq):
            raise invalid(o, "min_quality", "a finite number (the quality target)", mq)
        _check_quality_range(self.workload, mq)
        from .methods import get_method

        method = get_method(self.method, o, "method")
        if self.layer_choices is not None:  # tables naming technique configs -> the configs
            object.__setattr__(self, "layer_choices", _layer_choices(self.layer_choices))
        given = {k: getattr(self, k) for k in _search_keywords()}
        method.check_options({k: v for k, v in given.items() if k not in _EVERY_METHOD and v is not None}, owner=o)
        for k, v in check_search_options(o, given).items():
            object.__setattr__(self, k, v)

    def _check_prices_cover(self) -> None:
        """Every rented GPU the job may use needs a price at the scenario's tier (else nothing can be priced)."""
        from profilers.config import ConfigError

        own = self.scenario.ownership
        devices, key = (self.space.devices, "space.devices") if self.kind == "search" else \
            (self.llm.device_list(), "llm.devices") if self.kind == "llm" else (self.whatif.device_list(), "whatif.devices")
        book = self.prices()
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
                raise invalid("Job", f"{key}[{i}]", f"a device with {what} in the price book ({e}) To fix: add a "
                              f"[[prices.price]] row, or change {where('Job', 'scenario.ownership')}", d) from None

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
        """The :class:`profilers.Workload`: a built-in one, or what the factory returns (whose
        ``quality_range``, if it declares one, must hold ``min_quality``). Errors name the job
        file's field (``job.workload``), the one place a workload spec comes from."""
        with at(Job, "job", _file_paths()):
            wl = _build_workload(self.workload, self.base_dir)
            if self.min_quality is not None and getattr(wl, "quality_range", None) is not None:
                _check_quality_range(self.workload, self.min_quality, wl.quality_range, wl.quality_metric)
        return wl

    def search_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`optimizer.search` (besides workload, space, cost model); an
        option the job leaves unset is None: the method's own default."""
        kw = dict(min_quality=self.min_quality, method=self.method)
        kw.update({k: getattr(self, k) for k in _search_keywords()})
        return kw

    def replace(self, **changes: Any) -> Job:
        return dataclasses.replace(self, **changes)

    def to_json(self, **kw: Any) -> str:
        from profilers.config import dumps

        return dumps(self, **kw)


def _search_keywords() -> tuple[str, ...]:
    """The Job fields that are :func:`optimizer.search` keywords: those of the file's [search] table."""
    return tuple(f.name for f in dataclasses.fields(Job)
                 if f.metadata.get("path", "").startswith("search.") and f.name != "method")


def _file_paths() -> dict[str, str]:
    """Job field -> where it lives in a job file (``n_trials`` -> ``search.n_trials``)."""
    return {f.name: f.metadata["path"] for f in dataclasses.fields(Job) if "path" in f.metadata}


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "job"


# ----------------------------------------------------------------------------------------------
# workloads: built-in names and factories
# ----------------------------------------------------------------------------------------------
_WORKLOAD_ALLOWED = "a built-in workload ({names}), 'package.module:function' or 'file.py:function'"


def _workload_allowed() -> str:
    from profilers import workloads

    return _WORKLOAD_ALLOWED.format(names=", ".join(repr(n) for n in workloads.names()))


def _check_workload(v: Any, base: Path) -> str:
    """A built-in workload name, ``package.module:function`` or ``file.py:function`` (the file
    relative to ``base``, the job file's folder, and existing)."""
    from profilers import workloads

    if not isinstance(v, str) or not v.strip():
        raise invalid("Job", "workload", _workload_allowed(), v)
    if ":" not in v:
        if v not in workloads.names():
            raise invalid("Job", "workload", _workload_allowed(), v)
        return v
    mod, _, fn = v.rpartition(":")
    if not mod or not fn.isidentifier():
        raise invalid("Job", "workload", _workload_allowed(), v)
    if mod.endswith(".py"):
        p = Path(mod) if Path(mod).is_absolute() else base / mod
        if not p.is_file():
            raise invalid("Job", "workload", f"{_workload_allowed()} naming an existing file (looked for {p})", v)
    return v


def _check_quality_range(workload: Any, min_quality: float, quality_range: Any = None, metric: str = "") -> None:
    """``min_quality`` within what the workload's metric can reach: a built-in workload's declared
    range (read without building the model), or the built workload's ``quality_range``."""
    from profilers.workload import check_quality_target

    if quality_range is None and isinstance(workload, str) and ":" not in workload:
        from profilers import workloads

        quality_range, metric = workloads.quality_range(workload), workloads.quality_metric(workload)
    check_quality_target("Job", "min_quality", min_quality, quality_range, metric, workload)



def _layer_choices(v: Any) -> tuple[Any, ...]:
    """Technique configs, each given as a config or a table naming it (``{technique = "quantize",
    mode = "int8_weight_only"}``: the config's JSON type tag and its fields, built and checked by the
    config class itself)."""
    from collections.abc import Mapping

    from profilers.config import build, described
    from profilers.techniques import technique_types

    types = {getattr(c, "_json_tag", ""): c for c in technique_types() if "layers" in c.__dataclass_fields__}
    allowed = "a table naming a technique that takes a layer selector (technique = " + \
        ", ".join(map(repr, types)) + ") and its fields"
    if isinstance(v, (str, bytes)) or not hasattr(v, "__iter__"):
        raise invalid("Job", "layer_choices", "a non-empty list of " + allowed.replace("a table", "tables"), v)
    out = []
    for i, c in enumerate(v):
        if isinstance(c, Mapping):
            rest = dict(c)
            tag = rest.pop("technique", None)
            cls = types.get(tag) if isinstance(tag, str) else None
            if cls is None:
                raise invalid("Job", f"layer_choices[{i}]", allowed, described(c))
            c = build(cls, rest, where("Job", f"layer_choices[{i}]"))
        out.append(c)
    return tuple(out)  # each checked as a layer choice with the other search options


def _build_workload(spec: str, base: Path) -> Any:
    from profilers import Workload, workloads

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
        raise invalid("Job", "workload", f"an importable factory ({type(e).__name__}: {e})", spec) from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise invalid("Job", "workload", f"a function that exists in {mod_name!r}", spec)
    wl = fn()
    if not isinstance(wl, Workload):
        raise invalid("Job", "workload", f"a factory returning a profilers.Workload (it returned a "
                      f"{type(wl).__name__})", spec)
    return wl

