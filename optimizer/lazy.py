"""The lazy search: the cheapest variant whose quality meets the target, certified, with few
quality evaluations. Pure algorithm (no torch): variants, costs, a compression order, an oracle.

Setting. Each variant ``v`` has a cost ``c(v)`` (its cheapest feasible deployment; ``inf`` when none
is feasible), known before any training, and a knob vector ``k(v)`` of compression levels (higher =
more compressed: more pruning, fewer bits, a smaller student). Write ``u <= w`` when ``w`` is at
least as compressed as ``u`` in every knob. Quality is assumed non-increasing in compression:
``u <= w  =>  q(w) <= q(u)``. Then

* an infeasible ``u`` (``q(u) < target``) rules out every ``w >= u`` (the *up-set*);
* a feasible ``u`` proves every ``v <= u`` feasible too, and rules out every variant dearer
  than the cheapest proven-feasible one.

The search keeps the set of *open* variants: cheaper than the best proven-feasible cost and not
ruled out. It stops when that set is empty; the best proven-feasible variant is then the optimum
(evaluated before it is returned, if it was only implied feasible), and the certificate lists
which evaluation ruled out what. The next variant to evaluate maximizes
the number of open variants resolved in the worse of its two outcomes (bisection on the poset;
on one knob this is binary search on cost).

Evidence against the assumption (an evaluated ``w >= u`` with ``q(w) > q(u) + tol``) is recorded;
from then on only direct evaluations count (every cheaper variant is evaluated), so the answer
stays exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Hashable, Sequence

from profilers.config import invalid

__all__ = ["LazyVariant", "Ruling", "LazyResult", "lazy_search", "dominates"]


@dataclass(frozen=True)
class LazyVariant:
    key: Hashable
    cost: float
    knobs: tuple[int, ...]  # compression level per knob, higher = more compressed


@dataclass(frozen=True)
class Ruling:
    """One evaluation and what it settled."""

    key: Hashable
    quality: float | None  # None: the evaluation failed (reason in ``error``)
    feasible: bool
    ruled_out: tuple[Hashable, ...]  # variants this evaluation removed from the open set
    proven_feasible: tuple[Hashable, ...] = ()  # less compressed variants it proved feasible
    error: str = ""


@dataclass(frozen=True)
class LazyResult:
    status: str  # "optimal" | "infeasible" | "budget" (stopped by the evaluation budget)
    best: Hashable | None
    best_cost: float
    evaluations: int
    certificate: tuple[Ruling, ...]
    open: tuple[Hashable, ...]  # still unresolved (non-empty only with status "budget")
    violations: tuple[str, ...] = ()
    message: str = ""


def dominates(w: Sequence[int], u: Sequence[int]) -> bool:
    """True when ``w`` is at least as compressed as ``u`` in every knob (``u <= w``)."""
    return all(a >= b for a, b in zip(w, u))


def lazy_search(variants: Sequence[LazyVariant], evaluate: Callable[[Hashable], float | None], target: float, *,
                max_evaluations: int | None = None, tol: float = 0.0,
                on_event: Callable[[Ruling], None] | None = None,
                stop: Callable[[int], str | None] | None = None) -> LazyResult:
    """Find the cheapest variant with ``evaluate(key) >= target`` (see the module docstring).

    ``evaluate`` returns the quality, or None when the evaluation failed (the variant is then
    treated as infeasible for itself only: a failure says nothing about its neighbours).
    ``stop(evaluations_so_far)`` is asked before each evaluation; a reason (a string) ends the
    search with status "budget" and the best proven-feasible variant so far.
    """
    if not variants:
        raise invalid("lazy_search", "variants", "a non-empty sequence", variants)
    n_knobs = len(variants[0].knobs)
    keys = [v.key for v in variants]
    if len(set(keys)) != len(keys):
        raise invalid("lazy_search", "variants", "unique keys", "duplicates")
    for v in variants:
        if len(v.knobs) != n_knobs:
            raise invalid("lazy_search", "variants[].knobs", f"tuples of length {n_knobs}", v.knobs)
    by_key = {v.key: v for v in variants}
    quality: dict[Hashable, float | None] = {}
    proven: set[Hashable] = set()  # feasible, by evaluation or implication
    infeasible_by: dict[Hashable, Hashable] = {}  # ruled out by an infeasible evaluation of key
    certificate: list[Ruling] = []
    violations: list[str] = []
    trust = True  # the monotonicity assumption; dropped on contrary evidence

    def best() -> tuple[Hashable | None, float]:
        cands = [(by_key[k].cost, str(k), k) for k in proven if math.isfinite(by_key[k].cost)]
        if not cands:
            return None, math.inf
        c, _, k = min(cands)
        return k, c

    def open_set() -> list[LazyVariant]:
        _, bc = best()
        return [v for v in variants if v.cost < bc and math.isfinite(v.cost) and v.key not in quality
                and v.key not in proven and v.key not in infeasible_by]

    def outcome_sizes(v: LazyVariant, opened: list[LazyVariant]) -> tuple[int, int]:
        if not trust:
            return 1, 1
        # feasible: v and every open variant at least as dear are resolved, and those less compressed
        feas = sum(1 for u in opened if u.cost >= v.cost or dominates(v.knobs, u.knobs))
        infeas = sum(1 for u in opened if dominates(u.knobs, v.knobs))
        return feas, infeas

    while True:
        opened = open_set()
        if not opened:
            k, _ = best()
            if k is None or k in quality:
                break
            # the best is feasible only by implication: measure it (the deployed model's quality is
            # reported measured) and re-check the assumption against it
            opened = [by_key[k]]
        reason = None
        if max_evaluations is not None and len(quality) >= max_evaluations:
            reason = f"the evaluation budget ({max_evaluations}) is used"
        elif stop is not None:
            reason = stop(len(quality))
        if reason:
            k, c = best()
            return LazyResult("budget", k, c, len(quality), tuple(certificate), tuple(v.key for v in opened),
                              tuple(violations), f"stopped after {len(quality)} evaluations ({reason}) with "
                              f"{len(opened)} cheaper variants unresolved")
        if len(opened) == 1:
            pick = opened[0]
        elif trust:
            pick = max(opened, key=lambda v: (min(outcome_sizes(v, opened)), -v.cost, str(v.key)))
        else:
            pick = min(opened, key=lambda v: (v.cost, str(v.key)))
        q = evaluate(pick.key)
        quality[pick.key] = q
        feasible = q is not None and q >= target
        if not feasible and pick.key in proven:
            violations.append(f"{pick.key!r} was implied feasible by a more compressed variant but scored {q!r}")
            trust = False
        ruled: list[Hashable] = []
        newly_proven: list[Hashable] = []
        if q is not None:
            for k2, q2 in quality.items():  # check the assumption against every evaluated pair
                if k2 == pick.key or q2 is None:
                    continue
                a, b = by_key[k2], pick
                for lo, hi, qlo, qhi in ((a, b, q2, q), (b, a, q, q2)):
                    if lo.knobs != hi.knobs and dominates(hi.knobs, lo.knobs) and qhi > qlo + tol:
                        violations.append(f"{hi.key!r} (more compressed) scored {qhi:.6g} > {lo.key!r} {qlo:.6g}")
                        trust = False
        if feasible:
            proven.add(pick.key)
            if trust:
                for v in variants:
                    if v.key != pick.key and v.key not in proven and dominates(pick.knobs, v.knobs) and v.key not in quality:
                        proven.add(v.key)
                        newly_proven.append(v.key)
            _, bc = best()
            ruled = [v.key for v in opened if v.key != pick.key and v.cost >= bc and v.key not in proven]
        elif q is not None and trust:
            for v in opened:
                if v.key != pick.key and dominates(v.knobs, pick.knobs) and v.key not in infeasible_by:
                    infeasible_by[v.key] = pick.key
                    ruled.append(v.key)
        if not trust:
            infeasible_by.clear()  # re-open what the assumption ruled out
            proven = {k for k, qq in quality.items() if qq is not None and qq >= target}
        ruling = Ruling(pick.key, q, feasible, tuple(ruled), tuple(newly_proven),
                        "" if q is not None else "evaluation failed")
        certificate.append(ruling)
        if on_event is not None:
            on_event(ruling)
    k, c = best()
    if k is None:
        return LazyResult("infeasible", None, math.inf, len(quality), tuple(certificate), (), tuple(violations),
                          "no variant meets the quality target")
    return LazyResult("optimal", k, c, len(quality), tuple(certificate), (), tuple(violations),
                      f"certified: every variant cheaper than {k!r} was evaluated or ruled out")


# ------------------------------------------------------------------------------------------------
# the search method
# ------------------------------------------------------------------------------------------------
from .methods import Outcome, SearchContext, SearchMethod, register_method  # noqa: E402


@register_method
class Lazy(SearchMethod):
    name = "lazy"
    rank = 0
    summary = ("prices every variant, then evaluates quality only where needed to certify the cheapest "
               "feasible one (a certificate says which evaluation ruled out what)")
    certifies = True

    def run(self, ctx: SearchContext) -> Outcome:
        ctx.price_all()
        by_key = {v.key: v for v in ctx.variants}
        lv = [LazyVariant(v.key, ctx.ev.price(v).cost_usd, v.knobs) for v in ctx.variants]
        res = lazy_search(lv, lambda k: ctx.ev.quality(by_key[k]), ctx.min_quality,
                          max_evaluations=ctx.budget.max_evaluations, stop=lambda _n: ctx.stop())
        certificate = tuple({"evaluated": r.key, "quality": r.quality, "feasible": r.feasible,
                             "ruled_out": list(r.ruled_out), "proven_feasible": list(r.proven_feasible),
                             "error": r.error} for r in res.certificate)
        stopped = res.status == "budget"
        return Outcome("best found" if stopped else "optimal", res.message, stopped=stopped, certificate=certificate,
                       violations=res.violations, implied={k for r in res.certificate for k in r.proven_feasible})


@register_method
class Exhaustive(SearchMethod):
    name = "exhaustive"
    rank = 1
    summary = "prices and evaluates every variant with a feasible deployment (ground truth on small spaces)"
    certifies = True

    def run(self, ctx: SearchContext) -> Outcome:
        ctx.price_all()
        for v in ctx.variants:
            if ctx.ev.price(v).feasible and not ctx.ev.evaluated(v):
                reason = ctx.stop()
                if reason:
                    return Outcome("best found", f"stopped before evaluating every variant: {reason}", stopped=True)
                ctx.ev.quality(v)
        return Outcome("optimal", "every variant with a feasible deployment was evaluated")
