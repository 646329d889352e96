"""Running a search job: the search itself, then the analyses its report shows.

:func:`run_search` runs (or resumes) a job's search into its output folder; :func:`analyze_best`
itemizes the best strategy and the baseline; :func:`environment` and :func:`price_rows_used` are
the provenance the report prints beside the figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from profilers.config import ConfigError

from .job_spec import Job

__all__ = ["SearchRun", "analyze_best", "environment", "finished_evaluations", "price_rows_used", "run_search"]


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
    """Finished quality evaluations journaled in ``output_dir`` (what a resumed search reuses; failed
    attempts, which it retries, and rows that do not validate are not counted)."""
    from .durable import read_rows
    from .evaluate import journal_row_problem

    rows, _ = read_rows(Path(output_dir) / "evaluations.jsonl", journal_row_problem)
    return sum(1 for r in rows if r.get("quality") is not None and not r.get("error"))


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
                 log: Any = None, output_dir: str | Path | None = None) -> tuple[dict[str, Any], Any, str]:
    """Itemized breakdowns of the best strategy and the baseline, and the best one's sensitivity.

    The search keeps each strategy's cost per component, not its line items, so they are priced
    again here with the search's own pricing oracle. Given the search's ``output_dir``, the profiles
    it measured are read back from there, so the line items come from the same figures (without it,
    a CPU timing is measured anew and the report says when the totals differ).
    """
    from cost_models import Option, sensitivity

    from .evaluate import Evaluator
    from .space import Variant

    out: dict[str, Any] = {}
    if result.best is None:
        return out, None, "no strategy meets the constraints, so there is nothing to vary"
    # the search's output folder: its measured profiles are read back, so the line items are priced
    # from the very figures the search priced (one set of figures per run)
    ev = Evaluator(workload, job.space, cost_model, seed=job.seed, profile_time_cap_s=job.profile_time_cap_s,
                   log=log, output_dir=output_dir, pool=job.pool, runtime=job.runtime)
    by_key = {v.key: v for v in job.space.variants()}
    sens, note = None, ""
    for name, s in (("best", result.best), ("baseline", result.baseline)):
        if s is None:
            continue
        # a strategy outside the knob grid (the layerwise method's) carries its technique configs
        v = by_key.get(s.variant) or Variant(knobs=(), values=(), techniques=tuple(s.techniques), name=s.variant,
                                             description=s.label)
        dep = ev.price(v)
        if not dep.feasible or dep.breakdown is None:
            note = f"re-pricing the {name} failed: {dep.error or 'no feasible deployment'}"
            continue
        out[name] = dep.breakdown
        if name == "best":
            train = ev.training_projection(v, dep)
            opt = Option(f"{s.label} on {dep.device}", cost_model.with_scenario(techniques=job.space.cost_keys(v)),
                         dep.projection, train)
            try:
                sens = sensitivity(opt)
            except ConfigError as e:
                note = f"sensitivity failed: {e}"
    return out, sens, note


def run_search(job: Job, output_dir: str | Path | None = None, *, storage: str | None = None, progress: Any = None,
               log: Any = None, on_evaluation: Any = None, analyze: bool = True) -> SearchRun:
    """Run a search job into ``output_dir`` (default ``job.output``); resumes what is there.

    Quality evaluations are journaled by :func:`optimizer.search` in ``evaluations.jsonl`` (and
    Optuna trials in ``study.journal`` or ``storage``), so running the same job into the same
    folder again reuses every finished evaluation. Writes nothing else: see
    :func:`optimizer.report.write_search_report`.
    """
    import time

    from .search import search

    if job.kind != "search":
        raise ConfigError(f"job.kind must be 'search' to run a search (run a what-if with run_whatif); "
                          f"got {job.kind!r}.")
    from .durable import check_writable

    out = check_writable(output_dir if output_dir is not None else job.output)
    before = finished_evaluations(out)
    t0 = time.perf_counter()
    wl = job.build_workload()
    cm = job.cost_model()
    kw = job.search_kwargs()
    if storage is not None:
        kw["storage"] = storage
    result = search(wl, job.space, cm, output_dir=out, progress=progress, log=log, on_evaluation=on_evaluation,
                    raise_infeasible=False, **kw)
    breakdowns, sens, note = analyze_best(job, wl, cm, result, log, out) if analyze else ({}, None, "not computed")
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
