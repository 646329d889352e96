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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from profilers._config import serializable

from ._job_fields import _choice, _err, _int, _is_num, _positive, _string
from .whatif import WhatIf

__all__ = ["KINDS", "Job"]

KINDS = ("search", "whatif")
_METHODS = ("lazy", "exhaustive", "tpe", "random", "nsga2")


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
    budget_usd: float | None = None
    usd_per_hour: float | None = None
    fidelities: tuple[float, ...] | None = None
    pruner: str = "threshold"
    prune_margin: float = 0.05
    skip_dearer: bool = True
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
                    timeout_s=self.timeout_s, max_evaluations=self.max_evaluations, budget_usd=self.budget_usd,
                    usd_per_hour=self.usd_per_hour, fidelities=self.fidelities, pruner=self.pruner,
                    prune_margin=self.prune_margin, skip_dearer=self.skip_dearer, storage=self.storage,
                    seed=self.seed, profile_time_cap_s=self.profile_time_cap_s)

    def replace(self, **changes: Any) -> Job:
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

