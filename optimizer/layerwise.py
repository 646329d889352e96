"""Per-layer choice assignment: pick one choice (bit width, pruning ratio, ...) per layer.

HAWQ-V3 / AutoQuantize style multiple-choice knapsack ILP: every layer takes exactly one choice;
each choice has named costs (``bytes``, ``bops``, ``latency_s``, ...) and a sensitivity (the loss
change when that layer alone is compressed, or a Hessian-trace estimate). Minimize total
sensitivity under caps on cost totals, or minimize one cost total under those caps and a cap on
total sensitivity. ``same_choice`` groups (residual pairs) must pick the same choice name.

Formulations (``formulation=``):

* ``"plain"``: one binary per (layer, choice), one row per layer, one per cap, to a MILP solver
  (a same_choice group is one item in every formulation: one binary per (group, choice)).
* ``"reduced"``: the same after merging each same_choice group into one item (summed costs) and
  dropping options dominated in the objective and every capped term (exact: a dominated option can
  be swapped for its dominator without losing feasibility or objective).
* ``"core"`` (default): ``"reduced"``, then the LP relaxation's duals ``lam`` give every option a
  reduced cost ``d = f + lam @ g - min over the item`` and a bound
  ``L = sum(min over items) - lam @ caps``. Any feasible assignment has
  ``value - L = sum(d) + lam @ slack >= sum(d)``, so one better than an incumbent ``U`` uses only
  options with ``d <= U - L`` and has ``sum(d) <= U - L``. That set is enumerated exactly by
  meet-in-the-middle (two halves of the free items, joined through a grid on the slack box
  ``lam_t * slack_t <= U - L``), widening ``G`` geometrically from a small start until the best
  assignment found satisfies ``value - L <= G``: then nothing better exists. If an enumeration
  grows past ``MAX_STATES``, the reduced-cost core goes to the MILP solver instead (still exact).

A cap counts as met when ``total <= cap + FEAS_RTOL * scale`` with ``scale`` the larger of the cap
and the largest single option value of that term. The MILP back ends get rows scaled to
``1e3 * total / scale``, so their default row tolerance (1e-6) is this one.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from profilers.config import check_non_negative, invalid, serializable

from ._solver import MILP_SOLVERS, solve_milp

__all__ = ["LayerOption", "LayerwiseCandidate", "LayerwiseResult", "solve_layerwise", "FORMULATIONS"]

OWNER = "solve_layerwise"
FORMULATIONS = ("core", "reduced", "plain")
FEAS_RTOL = 1e-9
_ROW_SCALE = 1e3  # MILP rows hold g / scale * 1e3: the solvers' 1e-6 row tolerance is FEAS_RTOL
_OBJ_SCALE = 1e3  # MILP/LP objective scaled to max |coefficient| = 1e3: solver tolerances (1e-7 to 1e-9
#                   absolute) then do not blur sensitivities that differ by 1e-7 of the largest one
MAX_STATES = 3_000_000  # per half of the meet-in-the-middle enumeration
MAX_PAIRS = 200_000_000  # candidate pairs in one join
_FIRST_WINDOW = 24  # the first round's G: the 25th smallest positive reduced cost
_PAIR_CHUNK = 4_000_000
_INF = math.inf


@serializable("LayerOption", 1)
@dataclass(frozen=True)
class LayerOption:
    """One choice for one layer: named non-negative costs and a (signed) sensitivity."""

    costs: dict[str, float]
    sensitivity: float

    def __post_init__(self) -> None:
        if not isinstance(self.costs, Mapping):
            raise invalid("LayerOption", "costs", "a mapping of cost term -> number", self.costs)
        for k, v in self.costs.items():
            if not isinstance(k, str) or not k or k == "sensitivity":
                raise invalid("LayerOption", "costs", "keys naming cost terms (not 'sensitivity')", k)
            check_non_negative("LayerOption", f"costs[{k!r}]", v)
        s = self.sensitivity
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s):
            raise invalid("LayerOption", "sensitivity", "a finite number", s)
        object.__setattr__(self, "costs", {k: float(v) for k, v in self.costs.items()})
        object.__setattr__(self, "sensitivity", float(s))


@serializable("LayerwiseCandidate", 1)
@dataclass(frozen=True)
class LayerwiseCandidate:
    """A near miss of an infeasible problem: its totals and by how much it misses each cap."""

    label: str
    assignment: dict[str, str]
    totals: dict[str, float]
    misses: dict[str, float]  # capped term -> amount over its cap (only terms it misses)


@serializable("LayerwiseResult", 1)
@dataclass(frozen=True)
class LayerwiseResult:
    status: str  # "optimal" | "feasible" (stopped with an open gap) | "infeasible" | "not_solved"
    message: str
    assignment: dict[str, str]  # layer -> choice; empty without a solution
    objective: float | None  # total of objective_term for the assignment
    objective_term: str
    totals: dict[str, float]  # every cost term and "sensitivity"
    caps: dict[str, float]  # the caps applied (budgets, and "sensitivity" when capped)
    solver: str
    formulation: str
    solve_s: float
    mip_gap: float | None  # relative gap between objective and the proven lower bound
    lower_bound: float | None
    candidates: tuple[LayerwiseCandidate, ...] = ()
    stats: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status in ("optimal", "feasible")


# ---------------------------------------------------------------------------------------------
# input
# ---------------------------------------------------------------------------------------------


def _as_option(layer: str, choice: str, value: Any) -> LayerOption:
    if isinstance(value, LayerOption):
        return value
    where = f"options[{layer!r}][{choice!r}]"
    if not isinstance(value, Mapping) or "sensitivity" not in value:
        raise invalid(OWNER, where, "a LayerOption or a dict with 'sensitivity' and cost terms", value)
    try:
        return LayerOption({k: v for k, v in value.items() if k != "sensitivity"}, value["sensitivity"])
    except Exception as e:  # re-own the message: the user passed a dict, not a LayerOption
        raise invalid(OWNER, where, "non-negative finite costs and a finite sensitivity", dict(value)) from e


@dataclass
class _Problem:
    layers: list[str]
    options: dict[str, dict[str, LayerOption]]
    terms: list[str]  # cost terms, sorted
    items: list[tuple[str, ...]]  # groups of layers that share a choice (singletons included)
    choices: list[list[str]]  # per item, its choice names (columns)
    f: np.ndarray  # (n, K) objective per option (0 where masked)
    g: np.ndarray  # (n, K, T) capped terms per option
    mask: np.ndarray  # (n, K) option exists
    cap_names: list[str]
    caps: np.ndarray  # (T,)
    scale: np.ndarray  # (T,) row scales for tolerances and MILP rows
    objective_term: str


def _union_groups(layers: Sequence[str], same_choice: Iterable[Sequence[str]], options) -> list[tuple[str, ...]]:
    parent = {l: l for l in layers}

    def find(a: str) -> str:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    if isinstance(same_choice, (str, bytes)):
        raise invalid(OWNER, "same_choice", "a sequence of groups (tuples of layer names)", same_choice)
    for group in same_choice:
        if isinstance(group, (str, bytes)) or not isinstance(group, Iterable):
            raise invalid(OWNER, "same_choice", "groups given as tuples of layer names", group)
        group = tuple(group)
        for name in group:
            if name not in parent:
                raise invalid(OWNER, "same_choice", "groups of layer names that appear in options", name)
        for a, b in zip(group, group[1:]):
            if set(options[a]) != set(options[b]):
                only_a = sorted(set(options[a]) - set(options[b]))
                only_b = sorted(set(options[b]) - set(options[a]))
                raise invalid(OWNER, "same_choice", "groups whose layers offer the same choice names",
                              f"{a!r} has {only_a} that {b!r} lacks, {b!r} has {only_b} that {a!r} lacks")
            parent[find(a)] = find(b)
    members: dict[str, list[str]] = {}
    for l in layers:
        members.setdefault(find(l), []).append(l)
    return [tuple(m) for m in members.values()]


def _build(options, budgets, objective, same_choice, sensitivity_cap) -> _Problem:
    if not isinstance(options, Mapping) or not options:
        raise invalid(OWNER, "options", "a non-empty mapping of layer -> {choice: option}", options)
    opts: dict[str, dict[str, LayerOption]] = {}
    terms: set[str] | None = None
    for layer, choices in options.items():
        if not isinstance(layer, str):
            raise invalid(OWNER, "options", "layer names that are strings", layer)
        if not isinstance(choices, Mapping) or not choices:
            raise invalid(OWNER, f"options[{layer!r}]", "a non-empty mapping of choice -> option", choices)
        opts[layer] = {}
        for choice, value in choices.items():
            if not isinstance(choice, str):
                raise invalid(OWNER, f"options[{layer!r}]", "choice names that are strings", choice)
            o = _as_option(layer, choice, value)
            if terms is None:
                terms = set(o.costs)
            elif set(o.costs) != terms:
                raise invalid(OWNER, f"options[{layer!r}][{choice!r}]",
                              f"an option with the same cost terms as the others ({sorted(terms)})", sorted(o.costs))
            opts[layer][choice] = o
    term_list = sorted(terms or ())
    if not isinstance(budgets, Mapping):
        raise invalid(OWNER, "budgets", "a mapping of cost term -> cap", budgets)
    for term, cap in budgets.items():
        if term not in term_list:
            raise invalid(OWNER, "budgets", f"keys among the options' cost terms {term_list} "
                          "(cap sensitivity with sensitivity_cap)", term)
        check_non_negative(OWNER, f"budgets[{term!r}]", cap)
    if objective != "sensitivity" and objective not in term_list:
        raise invalid(OWNER, "objective", "'sensitivity' or one of the cost terms " + repr(term_list), objective)
    if sensitivity_cap is not None and (isinstance(sensitivity_cap, bool) or not isinstance(sensitivity_cap, (int, float))
                                        or not math.isfinite(sensitivity_cap)):
        raise invalid(OWNER, "sensitivity_cap", "None or a finite number", sensitivity_cap)

    layers = list(opts)
    items = _union_groups(layers, same_choice, opts)
    choices = [list(opts[it[0]]) for it in items]
    cap_names = [t for t in term_list if t in budgets] + (["sensitivity"] if sensitivity_cap is not None else [])
    caps = np.array([float(budgets[t]) for t in cap_names if t != "sensitivity"]
                    + ([float(sensitivity_cap)] if sensitivity_cap is not None else []), float)
    n, K, T = len(items), max(len(c) for c in choices), len(cap_names)
    f = np.zeros((n, K))
    g = np.zeros((n, K, T))
    mask = np.zeros((n, K), bool)

    cols = [objective] + cap_names

    def row(o: LayerOption) -> list[float]:
        return [o.sensitivity if t == "sensitivity" else o.costs[t] for t in cols]

    for i, (item, chs) in enumerate(zip(items, choices)):
        mask[i, :len(chs)] = True
        if len(item) == 1:
            vals = np.array([row(o) for o in opts[item[0]].values()], float).reshape(len(chs), T + 1)
        else:
            vals = np.array([[row(opts[l][ch]) for l in item] for ch in chs], float).sum(axis=1)
        f[i, :len(chs)] = vals[:, 0]
        g[i, :len(chs)] = vals[:, 1:]
    big = np.abs(np.where(mask[:, :, None], g, 0.0)).max(axis=(0, 1)) if T else np.zeros(0)
    scale = np.maximum(np.maximum(np.abs(caps), big), 1e-300)
    return _Problem(layers, opts, term_list, items, choices, f, g, mask, cap_names, caps, scale, objective)


# ---------------------------------------------------------------------------------------------
# reductions and checks
# ---------------------------------------------------------------------------------------------


def _nondominated(P: _Problem) -> np.ndarray:
    """Mask of options not dominated (objective and every capped term) within their item."""
    X = np.concatenate([P.f[:, :, None], P.g], axis=2)
    X = np.where(P.mask[:, :, None], X, np.inf)
    n, K, _ = X.shape
    keep = P.mask.copy()
    earlier = np.triu(np.ones((K, K), bool), 1)  # [a, b]: a < b, so equal options keep the first
    step = max(1, 20_000_000 // (K * K * X.shape[2]))
    for lo in range(0, n, step):
        Y = X[lo:lo + step]
        le = (Y[:, :, None, :] <= Y[:, None, :, :]).all(-1)  # [i, a, b]: a <= b everywhere
        lt = (Y[:, :, None, :] < Y[:, None, :, :]).any(-1)
        dom = le & (lt | earlier[None]) & P.mask[lo:lo + step, :, None]
        keep[lo:lo + step] &= ~dom.any(axis=1)
    return keep


def _feasible(P: _Problem, totals_g: np.ndarray) -> bool:
    return bool((totals_g <= P.caps + FEAS_RTOL * P.scale).all())


def _item_totals(P: _Problem, pick: np.ndarray) -> tuple[float, np.ndarray]:
    ar = np.arange(len(pick))
    return float(P.f[ar, pick].sum()), P.g[ar, pick].sum(axis=0)


# ---------------------------------------------------------------------------------------------
# MILP formulations
# ---------------------------------------------------------------------------------------------


def _milp(P: _Problem, mask: np.ndarray, solver: str, time_limit_s, gap: float):
    import scipy.sparse as sp

    n, K, T = P.g.shape
    li, ci = np.nonzero(mask)
    m = len(li)
    fscale = max(float(np.abs(P.f[li, ci]).max(initial=0.0)), 1e-300) / _OBJ_SCALE
    rows = [li] + [np.full(m, n + t) for t in range(T)]
    vals = [np.ones(m)] + [P.g[li, ci, t] * (_ROW_SCALE / P.scale[t]) for t in range(T)]
    A = sp.csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.tile(np.arange(m), T + 1))), shape=(n + T, m))
    rlo = np.concatenate([np.ones(n), np.full(T, -np.inf)])
    rhi = np.concatenate([np.ones(n), P.caps * (_ROW_SCALE / P.scale)])
    out = solve_milp(P.f[li, ci] / fscale, A, rlo, rhi, np.zeros(m), np.ones(m), np.ones(m, bool),
                     solver=solver, time_limit_s=time_limit_s, mip_rel_gap=gap)
    pick = None
    if out.x is not None:
        xv = np.full((n, K), -1.0)
        xv[li, ci] = out.x
        pick = xv.argmax(axis=1)
    bound = out.bound * fscale if out.bound is not None else None
    return out, pick, bound


def _lp_duals(P: _Problem, mask: np.ndarray):
    """LP relaxation (scipy/HiGHS): (status, lam) with lam >= 0 in objective units per cost unit."""
    import scipy.sparse as sp
    from scipy.optimize import linprog

    n, K, T = P.g.shape
    li, ci = np.nonzero(mask)
    m = len(li)
    fscale = max(float(np.abs(P.f[li, ci]).max(initial=0.0)), 1e-300) / _OBJ_SCALE
    A_eq = sp.csr_matrix((np.ones(m), (li, np.arange(m))), shape=(n, m))
    A_ub = sp.csr_matrix((P.g[li, ci, :] / P.scale).T)
    res = linprog(P.f[li, ci] / fscale, A_ub=A_ub, b_ub=P.caps / P.scale, A_eq=A_eq, b_eq=np.ones(n),
                  bounds=(0, 1), method="highs")
    if res.status != 0:
        return ("infeasible" if res.status == 2 else "failed"), None
    lam = np.maximum(-np.asarray(res.ineqlin.marginals, float), 0.0) * fscale / P.scale
    return "ok", lam


def _lp_bound(P: _Problem, mask: np.ndarray) -> float | None:
    """The Lagrangian (= LP relaxation) lower bound, computed from the LP duals."""
    if not P.g.shape[2]:
        return float(np.where(mask, P.f, np.inf).min(axis=1).sum())
    status, lam = _lp_duals(P, mask)
    if status != "ok":
        return None
    return float(np.where(mask, P.f + P.g @ lam, np.inf).min(axis=1).sum() - lam @ P.caps)


# ---------------------------------------------------------------------------------------------
# exact reduced-cost core: meet-in-the-middle enumeration
# ---------------------------------------------------------------------------------------------


def _enumerate_half(items, G: float, T: int):
    """All option subsets of ``items`` (at most one non-base option each) with sum of d <= G.

    items: list of (d, df, dc, ...) arrays for each item's non-base options sorted by d. Returns
    (D, F, C, parent, code) or None past MAX_STATES; ``code = item * K + option``.
    """
    K = 1 + max((len(it[0]) for it in items), default=0)
    D, F, C = np.zeros(1), np.zeros(1), np.zeros((1, T))
    par, code = np.full(1, -1, np.int64), np.full(1, -1, np.int64)
    for k in range(len(items) - 1, -1, -1):  # largest d first: states grow late, scans stay short
        d, df, dc = items[k][:3]
        parts = [(D, F, C, par, code)]
        for o in range(len(d)):
            sel = np.nonzero(D <= G - d[o])[0]
            if not len(sel):
                break
            parts.append((D[sel] + d[o], F[sel] + df[o], C[sel] + dc[o], sel, np.full(len(sel), k * K + o)))
        if len(parts) > 1:
            D, F, C, par, code = (np.concatenate(z) for z in zip(*parts))
            if len(D) > MAX_STATES:
                return None
    return D, F, C, par, code, K


def _trace(half, idx: int) -> list[tuple[int, int]]:
    _, _, _, par, code, K = half
    out = []
    while idx >= 0 and code[idx] >= 0:
        out.append((int(code[idx] // K), int(code[idx] % K)))
        idx = int(par[idx])
    return out


def _join(A, B, sl, lam, G, Gq, ftol, deadline):
    """Best pair: min FA + FB with CB <= sl - CA (+ftol), DA + DB <= G and value - L <= Gq."""
    DA, FA, CA = A[:3]
    DB, FB, CB = B[:3]
    NA, T = len(DA), len(sl)
    R = sl[None, :] - CA
    Gm = G * (1 + 1e-9) + 1e-300
    Gqm = Gq * (1 + 1e-9) + 1e-300
    dims = [t for t in range(T) if lam[t] > 0]
    kR = np.zeros((NA, 0), np.int64)
    keyB = np.zeros(len(DB), np.int64)
    lo = mult = np.zeros(0, np.int64)
    if dims:  # grid on the slack box lam_t * slack_t <= Gq: a pair's cells differ by 0 or 1
        w = np.array([Gqm / lam[t] + ftol[t] for t in dims])
        kB = np.floor(CB[:, dims] / w)
        kR = np.floor((R[:, dims] + ftol[dims]) / w)
        lo = np.minimum(kB.min(0), kR.min(0) - 1)
        span = np.maximum(kB.max(0), kR.max(0)) - lo + 1
        use = np.cumprod(span) < 2.0 ** 60
        dims = [t for t, u in zip(dims, use) if u]
        if dims:
            kB, kR, lo, span = kB[:, use].astype(np.int64), kR[:, use].astype(np.int64), lo[use].astype(np.int64), span[use]
            mult = np.cumprod(np.concatenate([[1], span[:-1]])).astype(np.int64)
            keyB = ((kB - lo) * mult).sum(1)
        else:
            kR = np.zeros((NA, 0), np.int64)
    uniq, rank = np.unique(keyB, return_inverse=True)
    fkey = rank + 0.5 * np.minimum(DB / Gm, 1.0)  # within a cell, sorted by D
    order = np.argsort(fkey, kind="stable")
    fks = fkey[order]
    frac = 0.5 * np.clip((Gm - DA) / Gm, 0.0, 1.0) + 1e-7
    thr = Gqm - FA - float(lam @ sl)  # value - L = FA + FB + lam @ sl <= Gq
    # queries sorted by cell (and D): every offset shifts the cell key by a constant, so the needles
    # stay sorted and searchsorted walks the arrays in order instead of jumping around
    q0 = ((kR - lo) * mult).sum(1) if dims else np.zeros(NA, np.int64)
    perm = np.lexsort((-frac, q0))
    q0, frac, thr, R, FA = q0[perm], frac[perm], thr[perm], R[perm], FA[perm]
    ranges = []
    for offs in itertools.product((0, -1), repeat=len(dims)):
        q = q0 + int(np.dot(np.array(offs, np.int64), mult)) if dims else q0
        pos = np.minimum(np.searchsorted(uniq, q), len(uniq) - 1)
        l = np.searchsorted(fks, pos.astype(float), "left")
        h = np.searchsorted(fks, pos + frac, "right")
        ranges.append((l, np.where(uniq[pos] == q, np.maximum(h - l, 0), 0)))
    npairs = int(sum(int(cnt.sum()) for _, cnt in ranges))
    best = (_INF, -1, -1)
    if npairs > MAX_PAIRS:
        return best, npairs, "too_many"
    for l, cnt in ranges:
        ends = np.cumsum(cnt)
        a0 = 0
        while a0 < NA:  # chunks of queries with a bounded number of pairs
            base = ends[a0 - 1] if a0 else 0
            a1 = max(a0 + 1, int(np.searchsorted(ends, base + _PAIR_CHUNK, "right")))
            c = cnt[a0:a1]
            tot = int(c.sum())
            if tot:
                qi = np.repeat(np.arange(a0, a1), c)
                start = np.repeat(l[a0:a1] - (np.cumsum(c) - c), c)
                bi = order[start + np.arange(tot)]
                ok = (FB[bi] <= thr[qi]) & (CB[bi] <= R[qi] + ftol).all(1)
                if ok.any():
                    qi, bi = qi[ok], bi[ok]
                    val = FA[qi] + FB[bi]
                    k = int(np.argmin(val))
                    if val[k] < best[0]:
                        best = (float(val[k]), int(perm[qi[k]]), int(bi[k]))
            a0 = a1
            if deadline is not None and time.perf_counter() > deadline:
                return best, npairs, "timeout"
    return best, npairs, "done"


def _solve_core(P: _Problem, mask: np.ndarray, solver: str, deadline, gap: float, stats: dict):
    """Returns (status, pick, lower_bound, how)."""
    n, K, T = P.g.shape
    if T == 0:
        pick = np.where(mask, P.f, np.inf).argmin(axis=1)
        return "optimal", pick, _item_totals(P, pick)[0], "no caps: each layer takes its best choice"
    lp_status, lam = _lp_duals(P, mask)
    if lp_status == "infeasible":
        return "infeasible", None, None, "the LP relaxation is infeasible"
    if lp_status != "ok":
        out, pick, bound = _milp(P, mask, solver, _left(deadline), gap)
        return out.status, pick, bound, f"LP relaxation failed; {solver} on the reduced model"
    red = np.where(mask, P.f + P.g @ lam, np.inf)
    mu = red.min(axis=1)
    L = float(mu.sum() - lam @ P.caps)
    d = red - mu[:, None]
    base = red.argmin(axis=1)
    f0, c0 = _item_totals(P, base)
    sl = P.caps - c0
    ftol = FEAS_RTOL * P.scale
    Gmax = max(float(np.where(mask, P.f, -np.inf).max(axis=1).sum()) - L, 0.0)
    pos = np.sort(d[mask & (d > 0)])
    G = float(pos[min(len(pos) - 1, _FIRST_WINDOW)]) if len(pos) else 0.0
    U, best_pick = _INF, None
    stats.update(lp_bound=L, rounds=0, states=0, pairs=0)
    tol = 1e-12 * max(1.0, abs(L))
    while True:
        stats["rounds"] += 1
        core = mask & (d <= G * (1 + 1e-12) + tol)
        items = []
        for i in np.nonzero(core.sum(axis=1) > 1)[0]:
            js = np.nonzero(core[i])[0]
            js = js[js != base[i]]
            js = js[np.argsort(d[i, js], kind="stable")]
            items.append((d[i, js], P.f[i, js] - P.f[i, base[i]], P.g[i, js] - P.g[i, base[i]], i, js))
        items.sort(key=lambda it: it[0][0])
        halves = [_enumerate_half(items[0::2], G, T), _enumerate_half(items[1::2], G, T)]
        stats["core_items"] = len(items)
        joined = None
        if halves[0] is not None and halves[1] is not None:
            stats["states"] += len(halves[0][0]) + len(halves[1][0])
            Gq = max(G, min(2 * G, U - L)) if G > 0 else Gmax
            joined = _join(halves[0], halves[1], sl, lam, G, Gq, ftol, deadline)
            stats["pairs"] += joined[1]
        if joined is None or joined[2] == "too_many":  # enumeration too large: the MILP solver takes the core
            Gc = U - L if U < _INF else Gmax
            cmask = mask & (d <= Gc * (1 + 1e-9) + tol)
            stats["core_options"] = int(cmask.sum())
            out, pick, bound = _milp(P, cmask, solver, _left(deadline), gap)
            if pick is not None and (best_pick is None or _item_totals(P, pick)[0] < U):
                best_pick, U = pick, _item_totals(P, pick)[0]
            if out.status == "optimal":
                return "optimal", best_pick, U, f"{solver} on the reduced-cost core ({int(cmask.sum())} options)"
            if out.status == "infeasible" and best_pick is None:
                return "infeasible", None, None, f"{solver} on the reduced-cost core"
            lb = max(L, min(bound, U)) if bound is not None else L
            return ("feasible" if best_pick is not None else "not_solved"), best_pick, lb, \
                f"{solver} on the reduced-cost core stopped: {out.raw_status}"
        (val, qa, qb), _, state = joined
        done = state == "done"
        if qa >= 0 and f0 + val < U:
            pick = base.copy()
            for half, idx, group in ((halves[0], qa, items[0::2]), (halves[1], qb, items[1::2])):
                for k, o in _trace(half, idx):
                    pick[group[k][3]] = group[k][4][o]
            U, best_pick = _item_totals(P, pick)[0], pick
        if done and U - L <= G * (1 + 1e-12) + tol:
            stats["core_options"] = int(core.sum())
            return "optimal", best_pick, U, (f"proven by enumerating {stats['states']:,} partial assignments over "
                                            f"{len(items)} layers with reduced cost <= {G:.3g}")
        if done and G >= Gmax and best_pick is None:
            return "infeasible", None, None, "every assignment was enumerated"
        if not done or (deadline is not None and time.perf_counter() > deadline):
            return ("feasible" if best_pick is not None else "not_solved"), best_pick, L, "time limit reached"
        nxt = 2 * G if G > 0 else (float(pos[0]) if len(pos) else Gmax)
        G = min(nxt, U - L, Gmax) if U < _INF else min(nxt, Gmax)


def _left(deadline):
    return None if deadline is None else max(deadline - time.perf_counter(), 0.0)


# ---------------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------------


def _totals(P: _Problem, assignment: Mapping[str, str]) -> dict[str, float]:
    out = {t: math.fsum(P.options[l][c].costs[t] for l, c in assignment.items()) for t in P.terms}
    out["sensitivity"] = math.fsum(P.options[l][c].sensitivity for l, c in assignment.items())
    return out


def _assignment(P: _Problem, pick: np.ndarray) -> dict[str, str]:
    out = {}
    for item, chs, j in zip(P.items, P.choices, pick):
        for layer in item:
            out[layer] = chs[int(j)]
    return {l: out[l] for l in P.layers}


def _misses(P: _Problem, totals: Mapping[str, float]) -> dict[str, float]:
    return {t: totals[t] - cap for t, cap, s in zip(P.cap_names, P.caps, P.scale)
            if totals[t] > cap + FEAS_RTOL * s}


def _candidates(P: _Problem) -> tuple[LayerwiseCandidate, ...]:
    """Per capped term, the assignment with the least of it (ties: least of the others, scaled)."""
    out, seen = [], set()
    scaled = P.g / P.scale
    for t, term in enumerate(P.cap_names):
        others = scaled.sum(axis=2) - scaled[:, :, t]
        key = np.where(P.mask, scaled[:, :, t] + 1e-9 * others, np.inf)
        pick = key.argmin(axis=1)
        a = _assignment(P, pick)
        if tuple(a.values()) in seen:
            continue
        seen.add(tuple(a.values()))
        tot = _totals(P, a)
        out.append(LayerwiseCandidate(f"least {term}", a, tot, _misses(P, tot)))
    out.sort(key=lambda c: max((m / max(abs(P.caps[P.cap_names.index(t)]), 1e-300) for t, m in c.misses.items()),
                               default=0.0))
    return tuple(out)


def _infeasible_message(P: _Problem, candidates) -> str:
    lines = []
    for cand in candidates:
        term = cand.label.split(" ", 1)[1]
        cap = P.caps[P.cap_names.index(term)]
        if term in cand.misses:
            lines.append(f"{term} cannot be met: the least achievable total is {cand.totals[term]:.6g} "
                         f"(cap {cap:.6g})")
    if lines:
        return "No assignment meets the caps: " + "; ".join(lines) + "."
    parts = [f"{c.label} misses " + ", ".join(f"{t} by {m:.6g}" for t, m in c.misses.items()) for c in candidates]
    return ("Each cap can be met alone but not all together: " + "; ".join(parts)
            + ". Raise a cap or allow more choices.")


def solve_layerwise(
    options: Mapping[str, Mapping[str, LayerOption | Mapping[str, float]]],
    *,
    budgets: Mapping[str, float],
    objective: str = "sensitivity",
    same_choice: Iterable[Sequence[str]] = (),
    solver: str = "highs",
    time_limit_s: float | None = None,
    sensitivity_cap: float | None = None,
    formulation: str = "core",
    mip_rel_gap: float = 1e-9,
) -> LayerwiseResult:
    """Assign one choice per layer: minimize total ``objective`` subject to the caps.

    options: ``{layer: {choice: LayerOption(costs={...}, sensitivity=s)}}`` (or plain dicts
        ``{"sensitivity": s, "bytes": b, ...}``); every option names the same cost terms.
    budgets: ``{cost term: cap on its total}``.
    objective: ``"sensitivity"``, or a cost term (then ``sensitivity_cap`` caps total sensitivity).
    same_choice: groups of layers that must take the same choice name (overlapping groups merge).
    solver: MILP back end, one of ``"highs"`` (highspy), ``"pulp-highs"``, ``"cbc"``, ``"scipy"``;
        the core formulation uses it only when its enumeration grows too large.
    formulation: ``"core"`` (default), ``"reduced"`` or ``"plain"``; see the module docstring.

    Infeasible caps and time limits are results, not exceptions: check ``result.status``.
    """
    t0 = time.perf_counter()
    if solver not in MILP_SOLVERS:
        raise invalid(OWNER, "solver", "one of " + ", ".join(repr(s) for s in MILP_SOLVERS), solver)
    if formulation not in FORMULATIONS:
        raise invalid(OWNER, "formulation", "one of " + ", ".join(repr(s) for s in FORMULATIONS), formulation)
    if time_limit_s is not None and (isinstance(time_limit_s, bool) or not isinstance(time_limit_s, (int, float))
                                     or not time_limit_s > 0 or not math.isfinite(time_limit_s)):
        raise invalid(OWNER, "time_limit_s", "None or a finite number > 0", time_limit_s)
    check_non_negative(OWNER, "mip_rel_gap", mip_rel_gap)
    P = _build(options, budgets, objective, same_choice, sensitivity_cap)
    deadline = None if time_limit_s is None else t0 + time_limit_s
    stats: dict[str, float] = {"options": int(sum(len(c) for c in P.options.values())), "items": len(P.items)}
    mask = P.mask if formulation == "plain" else _nondominated(P)
    stats["options_after_dominance"] = int(mask.sum())
    if formulation == "core":
        status, pick, bound, how = _solve_core(P, mask, solver, deadline, mip_rel_gap, stats)
    else:
        out, pick, bound = _milp(P, mask, solver, _left(deadline), mip_rel_gap)
        status, how = out.status, f"{solver} ({out.raw_status})"
        if status == "feasible" and bound is None:  # CBC reports no bound: use the LP relaxation's
            bound = _lp_bound(P, mask)
    caps = dict(zip(P.cap_names, map(float, P.caps)))
    elapsed = time.perf_counter() - t0
    common = dict(objective_term=objective, caps=caps, solver=solver, formulation=formulation, solve_s=elapsed,
                  stats=stats)
    if pick is None or status in ("infeasible", "not_solved"):
        if status == "infeasible":
            cands = _candidates(P)
            return LayerwiseResult("infeasible", _infeasible_message(P, cands) + f" ({how})", {}, None, totals={},
                                   mip_gap=None, lower_bound=None, candidates=cands, **common)
        return LayerwiseResult("not_solved", f"No assignment found ({how}).", {}, None, totals={}, mip_gap=None,
                               lower_bound=bound, **common)
    assignment = _assignment(P, pick)
    totals = _totals(P, assignment)
    misses = _misses(P, totals)
    if misses:  # a back end returned something over a cap beyond tolerance
        return LayerwiseResult("not_solved", f"{solver} returned an assignment over its caps {misses} ({how}).",
                               {}, None, totals={}, mip_gap=None, lower_bound=bound, **common)
    value = totals[objective]
    if status == "optimal":
        bound = value if bound is None else min(bound, value)
    gap = None if bound is None else max(0.0, value - bound) / max(abs(value), 1e-300)
    if status == "optimal":
        msg = f"Optimal: {objective} = {value:.6g} ({how})."
    else:
        gtxt = "unknown" if gap is None else f"{gap:.3g}"
        msg = f"Stopped before proving optimality (gap {gtxt}): {objective} = {value:.6g} ({how})."
    return LayerwiseResult(status, msg, assignment, value, totals=totals, mip_gap=gap, lower_bound=bound, **common)
