"""``optimizer.search``: σ* = argmin cost subject to quality >= target, over a SearchSpace.

Methods:

* ``"exhaustive"``: prices and evaluates every variant (ground truth on small spaces);
* ``"lazy"``: prices every variant (cheap), then evaluates quality only where needed to certify
  the cheapest feasible one (:mod:`optimizer.lazy`); reports the certificate;
* ``"tpe"`` / ``"random"``: Optuna's TPESampler / RandomSampler over the knob levels, cost as the
  objective and ``trial.set_constraint("quality", target - q)`` (feasible when <= 0);
* ``"nsga2"``: Optuna's NSGAIISampler on (cost, quality): the Pareto front.

Optuna studies persist in ``storage`` (default: a journal file in ``output_dir``; any RDB URL,
e.g. PostgreSQL, for several workers); every quality evaluation also persists in
``<output_dir>/evaluations.jsonl`` by content hash, so an interrupted search resumes without
re-training anything it finished.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from profilers._config import check_choice, invalid

from .budget import SearchBudget
from .evaluate import Evaluator
from .lazy import LazyVariant, lazy_search
from .optuna_search import check_fidelities, make_pruner, run_optuna, storage_for, study_name
from .result import InfeasibleError, SearchResult, Trial
from .space import SearchSpace, Variant

__all__ = ["search", "METHODS"]

METHODS = ("lazy", "exhaustive", "tpe", "random", "nsga2")


def _pareto(rows: list[tuple[Variant, float, float]]) -> list[tuple[Variant, float, float]]:
    """Rows (variant, cost, quality) not dominated in (lower cost, higher quality)."""
    front = []
    for v, c, q in sorted(rows, key=lambda r: (r[1], -r[2])):
        if not front or q > front[-1][2]:
            front.append((v, c, q))
    return front


def search(workload: Any, space: SearchSpace, cost_model: Any, *, min_quality: float, method: str = "lazy",
           n_trials: int | None = None, timeout_s: float | None = None, max_evaluations: int | None = None,
           budget_usd: float | None = None, usd_per_hour: float | None = None,
           fidelities: Sequence[float] | None = None, pruner: Any = "threshold", prune_margin: float = 0.05,
           skip_dearer: bool = True, storage: Any = None, output_dir: str | Path | None = None, seed: int = 0,
           profile_time_cap_s: float = 0.5, progress: Callable | None = None, log: Callable[[str], None] | None = None,
           on_evaluation: Callable | None = None, raise_infeasible: bool = True) -> SearchResult:
    """Find the cheapest strategy whose measured quality is at least ``min_quality``.

    ``workload``: a :class:`profilers.Workload` with an ``evaluate`` function (P(M)) and training data.
    ``cost_model``: a :class:`cost_models.CostModel` (the scenario and prices).

    Budgets (any combination; checked before every quality evaluation, see
    :mod:`optimizer.budget`): ``n_trials`` (Optuna methods), ``max_evaluations`` (quality
    evaluations), ``timeout_s`` (wall seconds) and ``budget_usd`` (the search's compute: wall time
    x ``usd_per_hour``, by default this machine's vCPUs at the price book's vCPU-hour price). The
    best strategy found so far is always returned; when none meets the constraints,
    :class:`InfeasibleError` is raised (``raise_infeasible=False`` returns the result instead).

    Callbacks: ``progress(done, total, variant, quality_or_None, cost_usd)`` after each priced
    variant (lazy, exhaustive) or finished trial (Optuna); ``on_evaluation(variant, quality_or_None,
    fidelity, error)`` after each quality evaluation this process runs; ``log(message)``.

    ``tpe`` / ``random`` only (see :mod:`optimizer.optuna_search`): ``fidelities`` (e.g.
    ``[0.25, 1.0]``: train each variant with 25 % of its steps first) with ``pruner`` /
    ``prune_margin``; ``skip_dearer`` prunes, untrained, a variant that cannot beat the best
    feasible cost so far.
    """
    from profilers import Workload

    t0 = time.perf_counter()
    check_choice("search", "method", method, METHODS)
    if not isinstance(workload, Workload):
        raise invalid("search", "workload", "a profilers.Workload", type(workload).__name__)
    if workload.evaluate is None:
        raise invalid("search", "workload.evaluate", "a quality function (higher is better)", None)
    if not isinstance(space, SearchSpace):
        raise invalid("search", "space", "an optimizer.SearchSpace", type(space).__name__)
    if not hasattr(cost_model, "estimate") or not hasattr(cost_model, "scenario"):
        raise invalid("search", "cost_model", "a cost_models.CostModel", type(cost_model).__name__)
    if not isinstance(min_quality, (int, float)) or isinstance(min_quality, bool) or not math.isfinite(min_quality):
        raise invalid("search", "min_quality", "a finite number", min_quality)
    rungs = check_fidelities(fidelities, method)
    if rungs:
        make_pruner(pruner, len(rungs) - 1, prune_margin)  # validates pruner and prune_margin up front
    budget = SearchBudget.for_search(cost_model, timeout_s=timeout_s, max_evaluations=max_evaluations,
                                     budget_usd=budget_usd, usd_per_hour=usd_per_hour)
    out = Path(output_dir) if output_dir is not None else None
    ev = Evaluator(workload, space, cost_model, seed=seed, output_dir=out, profile_time_cap_s=profile_time_cap_s, log=log,
                   on_evaluation=on_evaluation)
    variants = space.variants()
    certificate: tuple[dict, ...] = ()
    violations: tuple[str, ...] = ()
    status, message = "optimal", ""
    implied: set[str] = set()

    if method in ("exhaustive", "lazy"):
        for i, v in enumerate(variants):  # pricing: cheap, needs no training
            dep = ev.price(v)
            if progress is not None:
                progress(i + 1, len(variants), v, None, dep.cost_usd)

    def stop(_done: int = 0) -> str | None:  # counts this process's evaluations (journaled ones are free)
        return budget.exhausted(ev.quality_calls, ev.mean_seconds())

    pruned: dict[str, str] = {}
    stopped = False  # a budget ended the search
    if method == "exhaustive":
        message = "every variant with a feasible deployment was evaluated"
        for v in variants:
            if ev.price(v).feasible and not ev.evaluated(v):
                reason = stop()
                if reason:
                    status, message = "best found", f"stopped before evaluating every variant: {reason}"
                    stopped = True
                    break
                ev.quality(v)
    elif method == "lazy":
        lv = [LazyVariant(v.key, ev.price(v).cost_usd, v.knobs) for v in variants]
        by_key = {v.key: v for v in variants}
        res = lazy_search(lv, lambda k: ev.quality(by_key[k]), min_quality, max_evaluations=max_evaluations,
                          stop=stop)
        certificate = tuple({"evaluated": r.key, "quality": r.quality, "feasible": r.feasible,
                             "ruled_out": list(r.ruled_out), "proven_feasible": list(r.proven_feasible),
                             "error": r.error} for r in res.certificate)
        violations = res.violations
        implied = {k for r in res.certificate for k in r.proven_feasible}
        message = res.message
        if res.status == "budget":
            status, stopped = "best found", True
    else:
        name = study_name(workload, space, cost_model, min_quality, method, seed)
        study = run_optuna(ev, variants, method, min_quality, n_trials=n_trials if n_trials is not None else space.size,
                           budget=budget, storage=storage_for(storage, out), name=name, seed=seed, progress=progress,
                           fidelities=rungs, pruner=pruner, prune_margin=prune_margin, skip_dearer=skip_dearer)
        # trials finished earlier (a resumed study, or other workers on a shared storage) count too:
        # price their variants (cheap) and take their measured quality from the study
        by_key = {v.key: v for v in variants}
        for t in study.trials:
            v = by_key.get(t.user_attrs.get("variant"))
            if v is not None and "quality" in t.user_attrs:
                ev.price(v)
                ev.record_quality(v, float(t.user_attrs["quality"]))  # kept if already known
            elif v is not None and "pruned" in t.user_attrs:
                ev.price(v)
                pruned.setdefault(v.key, t.user_attrs["pruned"])
        for v in variants:  # evaluations journaled in this folder (earlier runs, other workers)
            if ev.evaluated(v):
                ev.price(v)
        status, message = "best found", f"Optuna {method} study {name!r}: the best of the trials run"
        reason = stop()
        if reason:
            message, stopped = message + f"; stopped: {reason}", True

    # ---- assemble the result from what the oracles know ----------------------------------------
    trials, rows = [], []
    for n, v in enumerate(variants):
        dep = ev._prices.get(v.key)
        q = ev.known_quality(v) if ev.evaluated(v) else None
        if dep is None:
            state = "not evaluated"
        elif not dep.feasible:
            state = "failed" if dep.error else "no deployment"
        elif ev.evaluated(v):
            state = "failed" if q is None else ("feasible" if q >= min_quality else "below target")
        elif v.key in implied:
            state = "implied feasible"
        elif v.key in pruned:
            state = "pruned"
        else:
            state = "not evaluated"
        err = (dep.error if dep is not None else "") or (ev.quality_error(v) if ev.evaluated(v) else "") \
            or pruned.get(v.key, "")
        trials.append(Trial(n, v.key, v.label, dep.cost_usd if dep else math.inf, (dep.device or "-") if dep else "-",
                            (dep.batch_size or 0) if dep else 0, q, state, err))
        if dep is not None and dep.feasible and q is not None:
            rows.append((v, dep.cost_usd, q))
    feasible = [(v, c, q) for v, c, q in rows if q >= min_quality]
    best_v = min(feasible, key=lambda r: r[1])[0] if feasible else None
    base_v = variants[0] if variants[0].knobs == (0, 0, 0) else None
    if base_v is not None and not ev.evaluated(base_v) and best_v is not None and not stop():
        ev.quality(base_v)  # the baseline's quality, for the savings table (when the budget allows)
    best = ev.strategy(best_v, "measured") if best_v is not None else None
    baseline = ev.strategy(base_v, "measured") if base_v is not None and ev.price(base_v).feasible else None
    pareto = tuple(ev.strategy(v, "measured") for v, _, _ in _pareto(rows))
    closest: tuple[dict, ...] = ()
    if best is None:
        status = "best found" if stopped else "infeasible"
        cands = sorted(rows, key=lambda r: -r[2])[:3]
        closest = tuple({"label": v.label, "quality": q, "cost_usd": c,
                         "missed": f"quality {q:.4f} < {min_quality:g}"} for v, c, q in cands)
        no_dep = [t for t in trials if t.state in ("no deployment", "failed")][:2]
        closest += tuple({"label": t.label, "quality": t.quality, "cost_usd": t.cost_usd,
                          "missed": t.error or "no (device, batch) meets the SLO and memory"} for t in no_dep)
        message = message or "no variant meets the constraints"
    result = SearchResult(
        method=method, status=status, message=message, min_quality=float(min_quality), best=best, baseline=baseline,
        pareto=pareto, trials=tuple(trials), quality_evaluations=sum(1 for v in variants if ev.evaluated(v)),
        seconds=time.perf_counter() - t0, certificate=certificate, violations=violations, closest=closest,
        spend=budget.describe())
    if out is not None:
        result.save(out / "results.json")
    if best is None and raise_infeasible:
        raise InfeasibleError(result)
    return result
