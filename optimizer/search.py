"""``optimizer.search``: σ* = argmin cost subject to quality >= target, over a SearchSpace.

The methods are classes in one registry, :data:`optimizer.methods.METHODS` (``lazy``,
``exhaustive``, ``tpe``, ``random``, ``nsga2``; see ``sigmastar search --help`` or
docs/architecture.md). :func:`search` validates its input, builds the pricing and quality oracles
(:class:`~optimizer.evaluate.Evaluator`), runs the method and assembles the
:class:`~optimizer.result.SearchResult` from what the oracles know.

Optuna studies persist in ``storage`` (default: a journal file in ``output_dir``; any RDB URL,
e.g. PostgreSQL, for several workers); every quality evaluation also persists in
``<output_dir>/evaluations.jsonl`` by content hash, so an interrupted search resumes without
re-training anything it finished.
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from profilers.config import invalid
from profilers.render import usd as usd_txt

from .budget import SearchBudget
from .durable import FolderLock
from .evaluate import Evaluator
from .methods import OPTIONS, Outcome, SearchContext, get_method
from .progress import progress_callbacks
from .result import InfeasibleError, RunSource, SearchResult, Trial
from .search_options import check_search_options
from .space import SearchSpace, Variant

__all__ = ["search"]


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
           fidelities: Sequence[float] | None = None, pruner: Any = None, prune_margin: float | None = None,
           skip_dearer: bool | None = None, storage: Any = None, layer_choices: Sequence[Any] | None = None,
           max_bytes: float | None = None, pool: bool = False, runtime: str = "eager",
           output_dir: str | Path | None = None, seed: int = 0,
           profile_time_cap_s: float = 0.5, retries: int = 2, on_error: str = "raise", progress: Callable | None = None,
           log: Callable[[str], None] | None = None,
           on_evaluation: Callable | None = None, raise_infeasible: bool = True) -> SearchResult:
    """Find the cheapest strategy whose measured quality is at least ``min_quality``.

    ``workload``: a :class:`profilers.Workload` with an ``evaluate`` function (P(M)) and training data.
    ``cost_model``: a :class:`cost_models.CostModel` (the scenario and prices).
    ``method``: a name in :data:`optimizer.methods.METHODS`.

    Budgets (any combination, every method; checked before every quality evaluation, see
    :mod:`optimizer.budget`): ``max_evaluations`` (quality evaluations), ``timeout_s`` (wall
    seconds) and ``budget_usd`` (the search's compute: wall time x ``usd_per_hour``, by default
    this machine's vCPUs at the price book's vCPU-hour price). The best strategy found so far is
    always returned; when none meets the constraints, :class:`InfeasibleError` is raised
    (``raise_infeasible=False`` returns the result instead).

    Method options (None = not given; a method that does not take one rejects it, see
    ``SearchMethod.options``): ``n_trials`` (Optuna methods), ``fidelities`` (e.g. ``[0.25, 1.0]``:
    train each variant with 25 % of its steps first) with ``pruner`` / ``prune_margin``,
    ``skip_dearer`` (prune, untrained, a variant that cannot beat the best feasible cost so far),
    ``storage`` (an Optuna storage); see :mod:`optimizer.optuna_search`. ``layerwise`` only
    (:mod:`optimizer.layerwise_search`): ``layer_choices`` (technique configs that take a layer
    selector; default ``profilers.layer_profile.DEFAULT_CHOICES``) and ``max_bytes`` (a cap on the
    assembled model's deployed bytes).

    ``pool=True``: serve each variant on the cheapest *mix* of the space's device types when that
    beats every single type (:mod:`optimizer.pool`, :func:`optimizer.plan_fleet`). ``runtime``: how
    the served model runs on a GPU, ``"eager"`` (PyTorch eager, the default) or ``"fused"``
    (TensorRT / torch.compile); see :func:`profilers.project`.

    Before anything is evaluated, every technique of the space is checked against what the
    workload offers (``SearchSpace.missing``): one error lists everything missing and how to supply it.

    Faults (:mod:`optimizer.evaluate`): when the workload's own ``evaluate(model)`` raises, the search
    stops with :class:`~optimizer.evaluate.EvaluationStopped` (its cause is the user's exception,
    with its traceback; finished evaluations are kept) unless ``on_error="skip"``. With "skip", and
    for every other fault (a technique or pricing that raises, a NaN, infinite or non-numeric
    quality), the variant is recorded as failed with its reason and traceback (in the output
    folder's journal), never as a quality; a later run of the same search retries it, up to ``retries``
    times. When a failed evaluation or pricing could change the answer (the variant is cheaper than
    the best, or its price is unknown), the status is ``"incomplete"`` and ``failures`` says which
    variants and why.

    Progress: ``progress=None`` (the default) shows a progress bar (tqdm; a widget in Jupyter) when
    stderr is interactive, nothing otherwise; True always (one line per event on a file or pipe);
    False never; a callable ``progress(done, total, variant, quality_or_None, cost_usd)`` is called
    after each priced variant (lazy, exhaustive) or finished trial (Optuna) instead of a bar
    (:func:`optimizer.progress.progress_callbacks`). ``on_evaluation(variant, quality_or_None,
    fidelity, error)`` after each quality evaluation this process runs; ``log(message)``.
    """
    from profilers import Workload

    t0 = time.perf_counter()
    cls = get_method(method)
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
    workload.check_target("search", "min_quality", min_quality)
    from cost_models.scenario import technique_defaults

    missing = space.missing(workload, set(technique_defaults()) | set(cost_model.scenario.people.hours))
    if missing:  # before anything is evaluated: one error with everything to supply
        from profilers.config import ConfigError

        raise ConfigError(f"search.space must hold only techniques that workload {workload.name!r} can run; "
                          f"got {len(missing)} that cannot (nothing was evaluated):\n  - " + "\n  - ".join(missing)
                          + "\nTo fix: supply what is named, or leave those values out of the space.")
    kw = dict(n_trials=n_trials, timeout_s=timeout_s, max_evaluations=max_evaluations, budget_usd=budget_usd,
              usd_per_hour=usd_per_hour, fidelities=fidelities, pruner=pruner, prune_margin=prune_margin,
              skip_dearer=skip_dearer, seed=seed, profile_time_cap_s=profile_time_cap_s, storage=storage,
              layer_choices=layer_choices, max_bytes=max_bytes, pool=pool, runtime=runtime, retries=retries,
              on_error=on_error)
    cls.check_options({k: v for k, v in kw.items() if k in OPTIONS and v is not None})  # the method's own options
    opts = check_search_options("search", kw)
    given = {k: v for k, v in opts.items() if k in OPTIONS}
    _check_batches(workload, space)
    budget = SearchBudget.for_search(cost_model, timeout_s=timeout_s, max_evaluations=max_evaluations,
                                     budget_usd=budget_usd, usd_per_hour=usd_per_hour)
    out = Path(output_dir) if output_dir is not None else None
    source = RunSource(workload=workload, space=space, cost_model=cost_model, seed=seed, output_dir=out,
                       options={"method": method, "min_quality": min_quality, **kw})
    # an output folder is one search's, or shared by the workers of one study (a shared storage: their
    # journal appends are locked, and evaluations are keyed by content); a second search there is refused
    with FolderLock(out, command=f"search(method={method!r})") if out is not None and storage is None \
            else contextlib.nullcontext():
        minimize = not workload.higher_is_better
        if minimize:  # searched as its negation (every method maximizes quality); reported in its own sign
            workload, min_quality = _negated(workload), -min_quality
        with progress_callbacks(progress, log=log, on_evaluation=on_evaluation, method=cls.name,
                                min_quality=float(min_quality), variants=space.size, n_trials=n_trials,
                                timeout_s=timeout_s, max_evaluations=max_evaluations) as (progress, log, on_evaluation):
            ev = Evaluator(workload, space, cost_model, seed=seed, output_dir=out, profile_time_cap_s=profile_time_cap_s,
                           log=log, on_evaluation=on_evaluation, pool=pool, runtime=runtime, retries=opts["retries"],
                           on_error=opts["on_error"])
            ctx = SearchContext(ev=ev, variants=space.variants(), min_quality=float(min_quality), budget=budget,
                                workload=workload, cost_model=cost_model, seed=seed, output_dir=out, options=given,
                                progress=progress)
            outcome = cls().run(ctx)
            result = _assemble(ctx, cls.name, outcome, time.perf_counter() - t0)  # may measure the baseline
        if minimize:
            result = result.flipped()
        result = result.with_source(source)
        if out is not None:
            result.save(out / "results.json")
        if result.best is None and raise_infeasible:
            raise InfeasibleError(result)
        return result


def _negated(workload: Any) -> Any:
    """``workload`` with its minimized metric negated, so that higher is better (the journal in the
    output folder then holds the negated values; the result and report show the metric itself)."""
    import dataclasses

    from profilers.techniques.quality import check_quality

    orig = workload.evaluate
    lo_hi = workload.quality_range
    where = f"workload {workload.name!r}: evaluate(model)"
    return dataclasses.replace(workload, evaluate=lambda model: -check_quality(orig(model), where), higher_is_better=True,
                               quality_range=None if lo_hi is None else (-lo_hi[1], -lo_hi[0]))


def _check_batches(workload: Any, space: SearchSpace) -> None:
    """Reject a serving batch whose inputs alone exceed the memory of every device in the space
    (pricing it would allocate those inputs here first): ``batch x bytes of one sample's inputs``,
    the sample's bytes measured on ``workload.inputs(1)``."""
    import torch
    from torch.utils._pytree import tree_leaves

    from profilers import hardware

    per_sample = sum(t.numel() * t.element_size() for t in tree_leaves(workload.inputs(1))
                     if isinstance(t, torch.Tensor))
    largest = max((hardware.get(d) for d in space.devices), key=lambda spec: spec.memory_bytes)
    for i, b in enumerate(space.batch_sizes):
        if b * per_sample > largest.memory_bytes:
            raise invalid("SearchSpace", f"batch_sizes[{i}]", f"a batch whose inputs fit in the largest device's "
                          f"memory ({largest.name}: {largest.memory_gb:g} GB; at {per_sample:,} bytes of inputs a "
                          f"sample, at most {int(largest.memory_bytes // per_sample):,} samples)", b)


def _assemble(ctx: SearchContext, method: str, outcome: Outcome, seconds: float) -> SearchResult:
    """The result, from what the oracles know: every variant's state, the best, the baseline, the front."""
    ev, variants, min_quality = ctx.ev, ctx.variants, ctx.min_quality
    status, message, implied, pruned = outcome.status, outcome.message, outcome.implied, outcome.pruned
    base_v = variants[0] if not any(variants[0].knobs) else None
    # the baseline's quality (for the savings table) is measured before the best is chosen: it may be the best
    if base_v is not None and not ev.evaluated(base_v) and ev.price(base_v).feasible and not ctx.stop():
        ev.quality(base_v)
    trials, rows = [], []
    for n, v in enumerate(variants):
        dep = ev.priced(v)
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
        device = "-" if dep is None else (dep.pool.describe() if dep.pool is not None and dep.pool.saving_usd > 0
                                          else dep.device or "-")
        trials.append(Trial(n, v.key, v.label, dep.cost_usd if dep else math.inf, device,
                            (dep.batch_size or 0) if dep else 0, q, state, err))
        if dep is not None and dep.feasible and q is not None:
            rows.append((v, dep.cost_usd, q))
    feasible = [(v, c, q) for v, c, q in rows if q >= min_quality]
    best_v = min(feasible, key=lambda r: r[1])[0] if feasible else None
    failures = _failures(ev, variants, trials, min(c for _, c, _ in feasible) if feasible else math.inf)
    best = ev.strategy(best_v, "measured") if best_v is not None else None
    baseline = ev.strategy(base_v, "measured") if base_v is not None and ev.price(base_v).feasible else None
    pareto = tuple(ev.strategy(v, "measured") for v, _, _ in _pareto(rows))
    closest: tuple[dict, ...] = ()
    if best is None:
        status = "best found" if outcome.stopped else "infeasible"
        cands = sorted(rows, key=lambda r: -r[2])[:3]
        closest = tuple({"label": v.label, "quality": q, "cost_usd": c,
                         "missed": f"quality {q:.4f} < {min_quality:g}"} for v, c, q in cands)
        no_dep = [t for t in trials if t.state in ("no deployment", "failed")][:2]
        closest += tuple({"label": t.label, "quality": t.quality, "cost_usd": t.cost_usd,
                          "missed": t.error or "no (device, batch) meets the SLO and memory"} for t in no_dep)
        message = message or "no variant meets the constraints"
    open_failures = [f for f in failures if f["could_change_answer"]]
    if open_failures:
        status = "incomplete"
        message = (f"{len(open_failures)} variant{'s' if len(open_failures) != 1 else ''} failed and could change the "
                   "answer (" + "; ".join(f"{f['label']}: {f['stage']} failed, {f['error']}" for f in open_failures[:3])
                   + (f"; and {len(open_failures) - 3} more" if len(open_failures) > 3 else "")
                   + "); run the same search again to retry them (finished evaluations are reused)")
    rivals, ranking_note = _rivals(ev, best_v, feasible) if best_v is not None else ((), "")
    return SearchResult(
        method=method, status=status, message=message, min_quality=float(min_quality), best=best, baseline=baseline,
        pareto=pareto, trials=tuple(trials), quality_evaluations=sum(1 for v in variants if ev.evaluated(v)),
        seconds=seconds, certificate=outcome.certificate, violations=outcome.violations, closest=closest,
        spend=ctx.budget.describe(), layerwise=outcome.layerwise, rivals=rivals, ranking_note=ranking_note,
        failures=tuple(failures))


def _failures(ev: Any, variants: Any, trials: list, best_usd: float) -> list[dict]:
    """Every variant whose pricing raised (its cost is unknown: it could change any answer) or whose
    evaluation failed (it could change the answer when it is cheaper than the best)."""
    out = []
    for v, t in zip(variants, trials):
        dep = ev.priced(v)
        if dep is not None and dep.fault:
            out.append({"variant": v.key, "label": v.label, "stage": "pricing", "error": dep.error, "attempts": 1,
                        "could_change_answer": True})
        elif t.state == "failed" and dep is not None and dep.feasible:
            out.append({"variant": v.key, "label": v.label, "stage": "quality", "error": t.error,
                        "attempts": ev.failed_attempts(v), "could_change_answer": dep.cost_usd < best_usd})
    return out


def _band(br: Any, usd: float) -> tuple[float, float]:
    if br is None or not br.ok:
        return usd, usd
    lo, _, hi = br.band_usd
    shift = usd - br.total_usd  # a pool's saving
    return lo + shift, hi + shift


def _rivals(ev: Any, best_v: Any, feasible: list) -> tuple[tuple[dict, ...], str]:
    """The deployments whose cost band overlaps the best's (other variants meeting the target at their
    cheapest deployment, and the best variant on other devices), and a sentence saying so and what
    measurement would settle it ("" when the ranking is certain within the bands)."""
    dep = ev.priced(best_v)
    b_lo, b_hi = _band(dep.breakdown, dep.cost_usd)
    out = []
    for v, usd, _ in feasible:
        if v.key == best_v.key:
            continue
        d = ev.priced(v)
        lo, hi = _band(d.breakdown, usd)
        if lo <= b_hi:
            out.append({"label": v.label, "device": d.device, "batch_size": d.batch_size, "cost_usd": usd,
                        "band_usd": (lo, hi)})
    for device, (b, br, _, usd) in dep.per_device.items():
        if device == dep.device or not math.isfinite(usd):
            continue
        lo, hi = _band(br, usd)
        if lo <= b_hi:
            out.append({"label": best_v.label, "device": device, "batch_size": b, "cost_usd": usd,
                        "band_usd": (lo, hi)})
    out.sort(key=lambda r: r["cost_usd"])
    if not out:
        return (), ""
    what = "; ".join(f"{r['label']} on {r['device']} ({usd_txt(r['cost_usd'])}, band {usd_txt(r['band_usd'][0])} - "
                     f"{usd_txt(r['band_usd'][1])})" for r in out[:3])
    more = f" and {len(out) - 3} more" if len(out) > 3 else ""
    devices = sorted({dep.device, *(r["device"] for r in out[:3])})
    note = (f"ranking not certain: the best ({best_v.label} on {dep.device}, {usd_txt(dep.cost_usd)}, band "
            f"{usd_txt(b_lo)} - {usd_txt(b_hi)}) overlaps {what}{more} within the 80 % bands of the projected "
            f"device times. Measuring the serving latency of these deployments on {', '.join(devices)} (the "
            "projection's calibration rows are in the provenance) would settle it.")
    return tuple(out), note
