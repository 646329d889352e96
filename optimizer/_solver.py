"""One mixed-integer LP interface over four back ends, and one status vocabulary for all of them.

    min c @ x   subject to   row_lower <= A @ x <= row_upper,   col_lower <= x <= col_upper,
                             x[j] integer where integrality[j]

Back ends (``solver=``):

* ``"highs"``: highspy through its own API (the model is passed as arrays in one call; no
  per-variable Python objects, so building 10,000 columns takes milliseconds);
* ``"pulp-highs"``: the same HiGHS through PuLP's model objects (``prob.add_variable``);
* ``"cbc"``: CBC through PuLP's ``COIN_CMD`` (a ``cbc`` on PATH, else the binary PuLP 3 bundles;
  ``PULP_CBC_CMD`` is deprecated in PuLP 3.3);
* ``"scipy"``: ``scipy.optimize.milp`` (HiGHS inside scipy), for cross-checks.

Statuses, the same for every back end (:func:`classify`):

* ``"optimal"``: proven within the relative gap asked for;
* ``"feasible"``: a solution, but the solver stopped (time limit) with the gap open. PuLP reports
  ``LpStatus == "Optimal"`` after a HiGHS time limit; its ``sol_status`` says
  ``LpSolutionIntegerFeasible``, and that is what is read here;
* ``"infeasible"``: proven to have no solution;
* ``"not_solved"``: stopped without a solution (time limit, numerical trouble).

pulp, highspy and scipy are imported inside the functions that need them.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from profilers.config import invalid

__all__ = ["MILP_SOLVERS", "STATUSES", "MilpOutcome", "classify", "solve_milp"]

MILP_SOLVERS = ("highs", "pulp-highs", "cbc", "scipy")
STATUSES = ("optimal", "feasible", "infeasible", "not_solved")


@dataclass(frozen=True)
class MilpOutcome:
    status: str  # one of STATUSES
    x: np.ndarray | None  # column values, None without a solution
    objective: float | None  # c @ x as the solver reports it
    bound: float | None  # the solver's proven lower bound on the objective, if it reports one
    gap: float | None  # relative gap (objective - bound) / |objective|, if known
    solver: str
    raw_status: str  # what the back end said, for messages
    seconds: float


def classify(solver: str, raw: Any, has_solution: bool) -> str:
    """Map a back end's own status to one of :data:`STATUSES`.

    ``raw`` is: for ``"highs"`` the model-status string (``Highs.modelStatusToString``); for the
    PuLP back ends the pair ``(LpProblem.status, LpProblem.sol_status)``; for ``"scipy"`` the
    ``OptimizeResult.status`` integer.
    """
    if solver == "highs":
        if raw == "Optimal":
            return "optimal"
        if raw in ("Infeasible", "Primal infeasible or unbounded"):  # all columns are bounded here
            return "infeasible"
        return "feasible" if has_solution else "not_solved"
    if solver in ("pulp-highs", "cbc"):
        status, sol_status = raw  # LpStatus alone says "Optimal" after a time limit: read sol_status
        if sol_status == 1:  # LpSolutionOptimal
            return "optimal"
        if sol_status == 2:  # LpSolutionIntegerFeasible: stopped early with a solution
            return "feasible" if has_solution else "not_solved"
        if sol_status == -1 or status == -1:  # LpSolutionInfeasible; COIN_CMD sets only LpStatusInfeasible
            return "infeasible"
        return "not_solved"  # 0 no solution found, -2 unbounded (cannot happen with bounded columns)
    if solver == "scipy":
        if raw == 0:
            return "optimal"
        if raw == 2:
            return "infeasible"
        return "feasible" if has_solution else "not_solved"  # 1 time/iteration limit, 3, 4
    raise invalid("solve_milp", "solver", "one of " + ", ".join(repr(s) for s in MILP_SOLVERS), solver)


def _rel_gap(objective: float | None, bound: float | None) -> float | None:
    if objective is None or bound is None or not np.isfinite(bound):
        return None
    return max(0.0, objective - bound) / max(abs(objective), 1e-300)


def solve_milp(
    c: np.ndarray,
    A: Any,  # scipy.sparse matrix, shape (rows, cols)
    row_lower: np.ndarray,
    row_upper: np.ndarray,
    col_lower: np.ndarray,
    col_upper: np.ndarray,
    integrality: np.ndarray,
    *,
    solver: str = "highs",
    time_limit_s: float | None = None,
    mip_rel_gap: float = 1e-9,
) -> MilpOutcome:
    """Solve one MILP (minimization). Infinite row/column bounds are ``±np.inf``.

    The absolute gap tolerance is 0 where the back end lets us set it (HiGHS' default 1e-6 would
    stop early on objectives of order 1e-3), so "optimal" means the relative gap is closed.
    """
    if solver not in MILP_SOLVERS:
        raise invalid("solve_milp", "solver", "one of " + ", ".join(repr(s) for s in MILP_SOLVERS), solver)
    if time_limit_s is not None and time_limit_s <= 0:
        return MilpOutcome("not_solved", None, None, None, None, solver, "no time left", 0.0)
    import scipy.sparse as sp

    A = sp.csc_matrix(A, dtype=float)
    c = np.asarray(c, float)
    integrality = np.asarray(integrality, bool)
    t0 = time.perf_counter()
    if solver == "highs":
        out = _solve_highspy(c, A, row_lower, row_upper, col_lower, col_upper, integrality, time_limit_s, mip_rel_gap)
    elif solver == "scipy":
        out = _solve_scipy(c, A, row_lower, row_upper, col_lower, col_upper, integrality, time_limit_s, mip_rel_gap)
    else:
        out = _solve_pulp(solver, c, A, row_lower, row_upper, col_lower, col_upper, integrality, time_limit_s,
                          mip_rel_gap)
    status, x, obj, bound, raw = out
    if x is not None:
        obj = float(c @ x)
    gap = 0.0 if status == "optimal" and bound is None else _rel_gap(obj, bound)
    return MilpOutcome(status, x, obj, bound, gap, solver, str(raw), time.perf_counter() - t0)


def _solve_highspy(c, A, rlo, rhi, clo, chi, integ, time_limit_s, gap):
    import highspy

    inf = highspy.kHighsInf
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("mip_rel_gap", float(gap))
    h.setOptionValue("mip_abs_gap", 0.0)
    if time_limit_s is not None:
        h.setOptionValue("time_limit", float(time_limit_s))
    lp = highspy.HighsLp()
    lp.num_col_ = A.shape[1]
    lp.num_row_ = A.shape[0]
    lp.col_cost_ = c
    lp.col_lower_ = np.where(np.isfinite(clo), clo, -inf)
    lp.col_upper_ = np.where(np.isfinite(chi), chi, inf)
    lp.row_lower_ = np.where(np.isfinite(rlo), rlo, -inf)
    lp.row_upper_ = np.where(np.isfinite(rhi), rhi, inf)
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = A.indptr
    lp.a_matrix_.index_ = A.indices
    lp.a_matrix_.value_ = A.data
    if integ.any():
        lp.integrality_ = [highspy.HighsVarType.kInteger if i else highspy.HighsVarType.kContinuous for i in integ]
    h.passModel(lp)
    h.run()
    raw = h.modelStatusToString(h.getModelStatus())
    info = h.getInfo()
    has = info.primal_solution_status == 2  # kSolutionStatusFeasible
    x = np.asarray(h.getSolution().col_value, float) if has else None
    status = classify("highs", raw, has)
    bound = None
    if integ.any() and has:
        b = float(info.mip_dual_bound)
        bound = b if np.isfinite(b) else None
    return status, x, (float(info.objective_function_value) if has else None), bound, raw


def _solve_scipy(c, A, rlo, rhi, clo, chi, integ, time_limit_s, gap):
    from scipy.optimize import Bounds, LinearConstraint, milp

    options: dict[str, Any] = {"disp": False, "mip_rel_gap": float(gap)}
    if time_limit_s is not None:
        options["time_limit"] = float(time_limit_s)
    cons = [LinearConstraint(A, rlo, rhi)] if A.shape[0] else []
    res = milp(c, integrality=integ.astype(int), bounds=Bounds(clo, chi), constraints=cons, options=options)
    has = res.x is not None
    status = classify("scipy", int(res.status), has)
    bound = getattr(res, "mip_dual_bound", None)
    bound = float(bound) if bound is not None and np.isfinite(bound) and integ.any() else None
    return status, (np.asarray(res.x, float) if has else None), (float(res.fun) if has else None), bound, \
        f"{res.status}: {res.message}"


def _cbc_command(time_limit_s, gap):
    import pulp

    kwargs = dict(msg=False, gapRel=float(gap), gapAbs=0.0, timeLimit=time_limit_s)
    if shutil.which("cbc"):
        return pulp.COIN_CMD(**kwargs)
    try:  # the binary PuLP 3 bundles (gone in PuLP 4; then `pip install pulp[cbc]` puts one on PATH)
        from pulp.apis.coin_api import pulp_cbc_path
    except ImportError:  # pragma: no cover - PuLP 4
        pulp_cbc_path = None
    cmd = pulp.COIN_CMD(path=pulp_cbc_path, **kwargs) if pulp_cbc_path else None
    if cmd is None or not cmd.available():
        raise invalid("solve_milp", "solver", "an installed solver ('cbc' needs `pip install pulp[cbc]`)", "cbc")
    return cmd


def _solve_pulp(solver, c, A, rlo, rhi, clo, chi, integ, time_limit_s, gap):
    import pulp

    prob = pulp.LpProblem("sigmastar", pulp.LpMinimize)
    xs = [
        prob.add_variable(f"x{j}", None if not np.isfinite(clo[j]) else float(clo[j]),
                          None if not np.isfinite(chi[j]) else float(chi[j]),
                          pulp.LpInteger if integ[j] else pulp.LpContinuous)
        for j in range(A.shape[1])
    ]
    prob += pulp.LpAffineExpression([(xs[j], float(c[j])) for j in range(len(xs)) if c[j] != 0])
    R = A.tocsr()
    for r in range(R.shape[0]):
        lo, hi = R.indptr[r], R.indptr[r + 1]
        terms = [(xs[j], float(v)) for j, v in zip(R.indices[lo:hi], R.data[lo:hi])]
        if np.isfinite(rlo[r]) and np.isfinite(rhi[r]) and rlo[r] == rhi[r]:
            prob += pulp.LpConstraint(pulp.LpAffineExpression(terms), pulp.LpConstraintEQ, rhs=float(rhi[r]))
            continue
        if np.isfinite(rhi[r]):
            prob += pulp.LpConstraint(pulp.LpAffineExpression(terms), pulp.LpConstraintLE, rhs=float(rhi[r]))
        if np.isfinite(rlo[r]):
            prob += pulp.LpConstraint(pulp.LpAffineExpression(terms), pulp.LpConstraintGE, rhs=float(rlo[r]))
    if solver == "pulp-highs":
        cmd = pulp.HiGHS(msg=False, gapRel=float(gap), gapAbs=0.0, timeLimit=time_limit_s)
    else:
        cmd = _cbc_command(time_limit_s, gap)
    prob.solve(cmd)
    values = [v.varValue for v in xs]
    has = prob.sol_status in (1, 2) and all(v is not None for v in values)
    status = classify(solver, (prob.status, prob.sol_status), has)
    bound = None
    model = getattr(prob, "solverModel", None)
    if solver == "pulp-highs" and model is not None and has and integ.any():
        b = float(model.getInfo().mip_dual_bound)
        bound = b if np.isfinite(b) else None
    raw = f"LpStatus={pulp.LpStatus[prob.status]}, sol_status={prob.sol_status}"
    x = np.asarray(values, float) if has else None
    return status, x, (float(c @ x) if has else None), bound, raw
