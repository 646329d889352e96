"""The Optuna methods of :func:`optimizer.search`: ``tpe``, ``random`` and ``nsga2``.

One trial = one model variant (its knob levels): the trial prices the variant (cheap), then
measures its quality (expensive) unless one of these settles it first:

* **no feasible deployment**: the trial fails with the reason (nothing to train);
* **dearer than the best feasible so far** (``skip_dearer``, single-objective only): the cost is
  known before any training, so a variant that cannot beat the incumbent is pruned untrained;
* **multi-fidelity** (``fidelities``, single-objective only): the variant is first trained with a
  fraction of its steps; after each rung the quality shortfall ``min_quality - q`` is reported
  (``trial.report``, step = rung number) and the pruner (Optuna's ``ThresholdPruner`` by default:
  prune when the shortfall exceeds ``prune_margin``; or ``median``, ``hyperband``,
  ``successive_halving``, or any ``optuna.pruners.BasePruner``) may stop it there. Each rung
  retrains from the base model, so a rung's result is reproducible under its own content key and
  the last rung is exactly the full evaluation the other methods share.

Counting: ``n_trials`` counts finished trials of the study (this worker's and others' on a
shared storage, from earlier runs too) except those cut short by Ctrl-C or a budget, which are
marked ``unfinished`` and do not use up a trial. A callback stops every worker once the count is
reached, so workers overshoot by at most the trials already running elsewhere.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

from profilers.config import to_json_dict
from profilers.render import usd

from .methods import Outcome, SearchContext, SearchMethod, register_method

__all__ = ["PRUNERS", "make_pruner", "rungs", "run_optuna", "study_name", "storage_for", "counted",
           "OptunaMethod", "TPE", "Random", "NSGA2"]

PRUNERS = ("threshold", "median", "hyperband", "successive_halving", "none")


def study_name(workload: Any, space: Any, cost_model: Any, min_quality: float, method: str, seed: int) -> str:
    payload = json.dumps({"space": to_json_dict(space), "scenario": to_json_dict(cost_model.scenario),
                          "min_quality": min_quality, "method": method, "seed": seed}, sort_keys=True, default=str)
    return f"sigmastar-{workload.name}-{method}-{hashlib.sha256(payload.encode()).hexdigest()[:12]}"


def storage_for(storage: Any, output_dir: Path | None):
    """An Optuna storage: None -> a journal file in ``output_dir`` (in memory without one); a URL
    with ``://`` -> RDBStorage (e.g. PostgreSQL, for several workers); a path -> a journal file."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    if storage is None:
        if output_dir is None:
            return None
        output_dir.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(output_dir / "study.journal")))
    if isinstance(storage, str) and "://" in storage:
        return optuna.storages.RDBStorage(storage)
    if isinstance(storage, (str, Path)):
        return optuna.storages.JournalStorage(JournalFileBackend(str(storage)))
    return storage  # an optuna storage object


def rungs(fidelities: Any) -> tuple[float, ...]:
    """The rungs of checked ``fidelities`` (see :mod:`optimizer.search_options`), ending at the full
    run 1.0 (appended when missing); () = single fidelity."""
    if fidelities is None:
        return ()
    vals = [float(f) for f in fidelities]
    return tuple(vals if vals[-1] >= 1 else [*vals, 1.0])


def make_pruner(pruner: Any, n_rungs: int, margin: float):
    """An Optuna pruner from a name (:data:`PRUNERS`) or a ``BasePruner`` instance (both checked by
    :mod:`optimizer.search_options`); ``margin`` in quality units for the threshold pruner."""
    import optuna

    if isinstance(pruner, optuna.pruners.BasePruner):
        return pruner
    if pruner == "threshold":
        return optuna.pruners.ThresholdPruner(upper=float(margin))
    if pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0)
    if pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, n_rungs), reduction_factor=3)
    if pruner == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    return optuna.pruners.NopPruner()


def counted(study: Any) -> int:
    """Finished trials that use up ``n_trials`` (not those cut short by Ctrl-C or a budget)."""
    return sum(1 for t in study.get_trials(deepcopy=False)
               if t.state.is_finished() and "unfinished" not in t.user_attrs)


def _best_feasible(study: Any, min_quality: float) -> float:
    import optuna

    costs = [t.values[0] for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
             if t.user_attrs.get("quality", -math.inf) >= min_quality]
    return min(costs, default=math.inf)


def run_optuna(ev: Any, variants: Sequence[Any], sampler: Any, single: bool, min_quality: float, *,
               n_trials: int | None, budget: Any, storage: Any, name: str, progress: Callable | None,
               fidelities: tuple[float, ...] = (), pruner: Any = "threshold", prune_margin: float = 0.05,
               skip_dearer: bool = True) -> Any:
    """Run (or resume, or join) the study; returns it. See the module docstring. One integer
    parameter per declared knob of the space (its level, 0 = least compressed)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    by_knobs = {v.knobs: v for v in variants}
    space = ev.space
    sizes = space.shape
    knob_names = [n for n, _ in space.knob_fields()]
    study = optuna.create_study(study_name=name, storage=storage, sampler=sampler,
                                directions=["minimize"] if single else ["minimize", "maximize"],
                                pruner=make_pruner(pruner if fidelities else "none", len(fidelities) - 1, prune_margin),
                                load_if_exists=True)
    remaining = None if n_trials is None else max(0, n_trials - counted(study))

    def stop_reason(fidelity: float = 1.0) -> str | None:
        return budget.exhausted(ev.quality_calls, ev.mean_seconds(fidelity))

    def cut_short(trial: Any, reason: str) -> None:
        trial.set_user_attr("unfinished", reason)
        trial.study.stop()
        raise optuna.TrialPruned(reason)

    def evaluate(trial: Any, v: Any, fidelity: float) -> float:
        if not ev.evaluated(v) or fidelity < 1:
            reason = stop_reason(fidelity)
            if reason:
                cut_short(trial, reason)
        q = ev.quality(v, fidelity)
        if q is None:
            err = ev.quality_error(v, fidelity) + ("" if fidelity >= 1 else f" (at fidelity {fidelity:g})")
            trial.set_user_attr("error", err)
            raise RuntimeError(err)
        return q

    def objective(trial: Any):
        knobs = tuple(trial.suggest_int(n, 0, s - 1) for n, s in zip(knob_names, sizes))
        v = by_knobs[knobs]
        trial.set_user_attr("variant", v.key)
        try:
            dep = ev.price(v)
            if not dep.feasible:
                trial.set_user_attr("error", dep.error or "no feasible deployment")
                trial.set_constraint("quality", 1.0)  # infeasible: nothing meets the scenario
                raise RuntimeError(dep.error or f"{v.key}: no feasible deployment")
            if single and skip_dearer and not ev.evaluated(v):
                best = _best_feasible(trial.study, min_quality)
                if dep.cost_usd >= best:
                    trial.set_user_attr("pruned", f"not trained: its cost {usd(dep.cost_usd)} cannot beat the best "
                                                  f"feasible so far ({usd(best)})")
                    raise optuna.TrialPruned("dearer than the best feasible so far")
            if fidelities and space.trains(v) and not ev.evaluated(v):
                for step, f in enumerate(fidelities[:-1], start=1):
                    qf = evaluate(trial, v, f)
                    trial.report(min_quality - qf, step)
                    if trial.should_prune():
                        trial.set_user_attr("pruned", f"quality {qf:.4f} after {f:.0%} of its training "
                                                      f"(target {min_quality:g}); pruned by {type(trial.study.pruner).__name__}")
                        trial.set_user_attr("partial_quality", qf)
                        raise optuna.TrialPruned(f"pruned at fidelity {f:g}")
            q = evaluate(trial, v, 1.0)
        except KeyboardInterrupt:
            trial.set_user_attr("unfinished", "interrupted (Ctrl-C)")
            raise
        trial.set_constraint("quality", min_quality - q)
        trial.set_user_attr("quality", q)
        if progress is not None:
            progress(trial.number + 1, n_trials, v, q, dep.cost_usd)
        return dep.cost_usd if single else (dep.cost_usd, q)

    def cap(study: Any, trial: Any) -> None:  # every worker stops once the study has its trials
        if (n_trials is not None and counted(study) >= n_trials) or stop_reason():
            study.stop()

    if (remaining is None or remaining > 0) and not stop_reason():
        timeout = None if budget.timeout_s is None else max(0.0, budget.timeout_s - budget.elapsed_s)
        study.optimize(objective, n_trials=remaining, timeout=timeout, catch=(Exception,), callbacks=[cap])
    return study


# ------------------------------------------------------------------------------------------------
# the search methods
# ------------------------------------------------------------------------------------------------
class OptunaMethod(SearchMethod):
    """One trial per variant on an Optuna study (see the module docstring); subclasses say which sampler."""

    single: ClassVar[bool] = True  # one objective (cost, quality as a constraint) or two (Pareto)
    options = frozenset({"n_trials", "fidelities", "pruner", "prune_margin", "skip_dearer", "storage"})

    #: the ``optuna.samplers`` class this method runs, seeded with the search's seed
    sampler_class: ClassVar[str]

    def sampler_kwargs(self, ctx: SearchContext) -> dict[str, Any]:
        return {}

    def sampler(self, ctx: SearchContext) -> Any:
        import optuna

        return getattr(optuna.samplers, self.sampler_class)(seed=ctx.seed, **self.sampler_kwargs(ctx))

    def run(self, ctx: SearchContext) -> Outcome:
        o = ctx.options
        steps = rungs(o.get("fidelities"))
        name = study_name(ctx.workload, ctx.ev.space, ctx.cost_model, ctx.min_quality, self.name, ctx.seed)
        n_trials = o.get("n_trials")
        study = run_optuna(ctx.ev, ctx.variants, self.sampler(ctx), self.single, ctx.min_quality,
                           n_trials=n_trials if n_trials is not None else len(ctx.variants), budget=ctx.budget,
                           storage=storage_for(o.get("storage"), ctx.output_dir), name=name, progress=ctx.progress,
                           fidelities=steps, pruner=o.get("pruner", "threshold"),
                           prune_margin=o.get("prune_margin", 0.05), skip_dearer=o.get("skip_dearer", True))
        # trials finished earlier (a resumed study, or other workers on a shared storage) count too:
        # price their variants (cheap) and take their measured quality from the study
        ev, pruned = ctx.ev, {}
        by_key = {v.key: v for v in ctx.variants}
        for t in study.trials:
            v = by_key.get(t.user_attrs.get("variant"))
            if v is not None and "quality" in t.user_attrs:
                ev.price(v)
                ev.record_quality(v, float(t.user_attrs["quality"]))  # kept if already known
            elif v is not None and "pruned" in t.user_attrs:
                ev.price(v)
                pruned.setdefault(v.key, t.user_attrs["pruned"])
        for v in ctx.variants:  # evaluations journaled in this folder (earlier runs, other workers)
            if ev.evaluated(v):
                ev.price(v)
        message = f"Optuna {self.name} study {name!r}: the best of the trials run"
        reason = ctx.stop()
        if reason:
            message += f"; stopped: {reason}"
        return Outcome("best found", message, stopped=bool(reason), pruned=pruned)


@register_method
class TPE(OptunaMethod):
    name = "tpe"
    rank = 2
    summary = "Optuna's TPESampler over the knob levels: cost as the objective, quality as a constraint"
    sampler_class = "TPESampler"


@register_method
class Random(OptunaMethod):
    name = "random"
    rank = 3
    summary = "Optuna's RandomSampler over the knob levels (a baseline for the other methods)"
    sampler_class = "RandomSampler"


@register_method
class NSGA2(OptunaMethod):
    name = "nsga2"
    rank = 4
    summary = "Optuna's NSGAIISampler on (cost, quality): the Pareto front"
    sampler_class = "NSGAIISampler"
    single = False
    options = frozenset({"n_trials", "storage"})

    def sampler_kwargs(self, ctx: SearchContext) -> dict[str, Any]:
        return {"population_size": max(4, min(20, len(ctx.variants) // 2))}
