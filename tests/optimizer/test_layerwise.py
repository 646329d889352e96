"""solve_layerwise against brute force, scipy.milp, and its own formulations; statuses; messages."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optimizer._solver import classify
from optimizer.layerwise import LayerOption, LayerwiseResult, solve_layerwise
from profilers.config import ConfigError, dumps, loads

pytest.importorskip("highspy")
TERMS = ("bytes", "bops")


# --------------------------------------------------------------------------------------------
# brute force: every combination, the caps checked directly
# --------------------------------------------------------------------------------------------


def brute_force(options, budgets, objective="sensitivity", groups=(), sensitivity_cap=None):
    layers = list(options)
    best = None
    for combo in itertools.product(*(list(options[l]) for l in layers)):
        a = dict(zip(layers, combo))
        if any(len({a[l] for l in g}) > 1 for g in groups):
            continue
        total = {t: sum(options[l][a[l]][t] for l in layers) for t in (*TERMS, "sensitivity")}
        if any(total[t] > cap + 1e-7 for t, cap in budgets.items()):
            continue
        if sensitivity_cap is not None and total["sensitivity"] > sensitivity_cap + 1e-7:
            continue
        if best is None or total[objective] < best:
            best = total[objective]
    return best  # None: infeasible


def milli(lo, hi):  # values with 3 decimals: sums are never ambiguous against a cap at 1e-9
    return st.integers(lo * 1000, hi * 1000).map(lambda v: v / 1000)


@st.composite
def small_instances(draw):
    n = draw(st.integers(1, 5))
    k = draw(st.integers(1, 3))
    options = {
        f"l{i}": {f"c{j}": {"sensitivity": draw(milli(-1, 3)), "bytes": draw(milli(0, 10)), "bops": draw(milli(0, 10))}
                  for j in range(k)}
        for i in range(n)
    }
    objective = draw(st.sampled_from(["sensitivity", "bytes"]))
    terms = draw(st.sampled_from([("bytes",), ("bops",), ("bytes", "bops")]))
    if objective == "bytes":
        terms = ("bops",)
    budgets = {t: draw(milli(0, 10 * n)) for t in terms}
    cap = draw(milli(-1, 3 * n)) if objective == "bytes" else None
    groups = ()
    if n >= 2 and draw(st.booleans()):
        groups = (("l0", "l1"),) if n < 4 or draw(st.booleans()) else (("l0", "l1"), ("l2", "l3"))
    return options, budgets, objective, groups, cap


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(small_instances())
def test_agrees_with_brute_force_every_formulation(inst):
    options, budgets, objective, groups, cap = inst
    expected = brute_force(options, budgets, objective, groups, cap)
    for formulation in ("core", "reduced", "plain"):  # dominance and the core never change the optimum
        r = solve_layerwise(options, budgets=budgets, objective=objective, same_choice=groups,
                            sensitivity_cap=cap, formulation=formulation)
        if expected is None:
            assert r.status == "infeasible", (formulation, r.message)
            assert r.assignment == {} and r.candidates
            continue
        assert r.status == "optimal", (formulation, r.message)
        assert r.objective == pytest.approx(expected, abs=1e-9)
        for g in groups:
            assert len({r.assignment[l] for l in g}) == 1
        for t, c in budgets.items():
            assert r.totals[t] <= c + 1e-7
        if cap is not None:
            assert r.totals["sensitivity"] <= cap + 1e-7


# --------------------------------------------------------------------------------------------
# medium instances: the core formulation against scipy.optimize.milp on the plain model
# --------------------------------------------------------------------------------------------


def random_options(seed, n, k):
    rng = np.random.default_rng(seed)
    c = rng.uniform(1, 10, size=(n, k, 2)).round(4)
    s = rng.uniform(0, 1, size=(n, k)).round(4)
    lo, mean = c.min(axis=1).sum(axis=0), c.mean(axis=1).sum(axis=0)
    caps = lo + 0.6 * (mean - lo)  # tight enough to bind both caps, loose enough to stay feasible
    options = {f"l{i}": {f"c{j}": LayerOption({"bytes": c[i, j, 0], "bops": c[i, j, 1]}, s[i, j]) for j in range(k)}
               for i in range(n)}
    return options, {"bytes": float(caps[0]), "bops": float(caps[1])}


@pytest.mark.parametrize("seed", range(4))
def test_core_agrees_with_scipy_milp_on_medium_instances(seed):
    options, budgets = random_options(seed, 40, 5)
    groups = (("l0", "l1", "l2"), ("l10", "l11")) if seed % 2 else ()
    core = solve_layerwise(options, budgets=budgets, same_choice=groups)
    ref = solve_layerwise(options, budgets=budgets, same_choice=groups, solver="scipy", formulation="plain")
    assert core.status == ref.status == "optimal", (core.message, ref.message)
    # scipy.milp keeps HiGHS' absolute gap 1e-6 (its options cannot set it)
    assert core.objective == pytest.approx(ref.objective, rel=1e-9, abs=2e-6)
    assert core.mip_gap == 0.0 and core.lower_bound == core.objective


@pytest.mark.parametrize("limit", ["MAX_STATES", "MAX_PAIRS"])
def test_core_hands_a_large_enumeration_to_the_milp_solver(monkeypatch, limit):
    import optimizer.layerwise as lw

    options, budgets = random_options(5, 40, 5)
    ref = solve_layerwise(options, budgets=budgets, solver="scipy", formulation="plain")
    monkeypatch.setattr(lw, limit, 3)
    r = solve_layerwise(options, budgets=budgets)
    assert r.status == "optimal" and "on the reduced-cost core" in r.message
    assert r.objective == pytest.approx(ref.objective, rel=1e-9, abs=2e-6)


def mixed_instance(seed):
    rng = np.random.default_rng(seed)
    n, k, T = int(rng.integers(3, 40)), int(rng.integers(2, 6)), int(rng.integers(1, 3))
    c = rng.uniform(0, 10, size=(n, k, T)).round(int(rng.integers(0, 3)))
    s = rng.uniform(0, 1, size=(n, k)).round(3)
    lo, mean = c.min(axis=1).sum(axis=0), c.mean(axis=1).sum(axis=0)
    caps = lo + rng.uniform(0.05, 0.8, T) * (mean - lo)
    terms = TERMS[:T]
    options = {f"l{i}": {f"c{j}": {"sensitivity": s[i, j], **{t: c[i, j, q] for q, t in enumerate(terms)}}
                         for j in range(k)} for i in range(n)}
    return options, {t: float(caps[q]) for q, t in enumerate(terms)}


@pytest.mark.parametrize("seed", [21, 46, 163, 174, 178])
def test_core_stays_exact_from_the_smallest_first_window(monkeypatch, seed):
    # on these instances the first assignment the widening windows find is not the optimum: only the
    # proof (value - L <= G) keeps the core from stopping there
    import optimizer.layerwise as lw

    monkeypatch.setattr(lw, "_FIRST_WINDOW", 0)
    options, budgets = mixed_instance(seed)
    r = solve_layerwise(options, budgets=budgets)
    ref = solve_layerwise(options, budgets=budgets, formulation="plain", solver="scipy")
    assert r.status == ref.status == "optimal"
    assert r.objective == pytest.approx(ref.objective, rel=1e-9, abs=2e-6)


def test_join_finds_pairs_anywhere_in_the_slack_box():
    # One cap, lam = 1, slack 1.2 before the join, windows G = Gq = 1. Half B: the base state (value - L
    # = lam * slack = 1.2 > 1, outside) and a state using 0.3 of the slack with F = -0.25 (D = F + lam * C
    # = 0.05): value - L = -0.25 + 1.2 = 0.95 <= 1, inside the box with remaining slack 0.9, near its far
    # edge (slack <= Gq / lam = 1). A grid of half the width would look only at C in [0.5, 1.5).
    from optimizer.layerwise import _join

    A = (np.zeros(1), np.zeros(1), np.zeros((1, 1)))
    B = (np.array([0.0, 0.05]), np.array([0.0, -0.25]), np.array([[0.0], [0.3]]))
    (val, qa, qb), pairs, state = _join(A, B, np.array([1.2]), np.array([1.0]), 1.0, 1.0, np.array([1e-12]), None)
    assert state == "done" and (qa, qb) == (0, 1) and val == pytest.approx(-0.25)


def test_cost_objective_under_a_sensitivity_cap_agrees_with_scipy():
    options, budgets = random_options(7, 40, 5)
    free = solve_layerwise(options, budgets={"bops": budgets["bops"]})
    cap = free.objective * 1.2
    core = solve_layerwise(options, budgets={"bops": budgets["bops"]}, objective="bytes", sensitivity_cap=cap)
    ref = solve_layerwise(options, budgets={"bops": budgets["bops"]}, objective="bytes", sensitivity_cap=cap,
                          solver="scipy", formulation="plain")
    assert core.status == ref.status == "optimal"
    assert core.objective == pytest.approx(ref.objective, rel=1e-8)
    assert core.totals["sensitivity"] <= cap + 1e-9
    assert core.caps == {"bops": budgets["bops"], "sensitivity": cap}


# --------------------------------------------------------------------------------------------
# dominance
# --------------------------------------------------------------------------------------------


def test_group_dominance_is_judged_on_the_groups_summed_costs():
    # In layer a, choice "y" dominates "x" (0.5 <= 1 bytes, 0.5 <= 1 sensitivity); in layer b "x" is far
    # cheaper. Summed over the group: x = (1 + 0 bytes, 1 + 0 sens), y = (0.5 + 2, 0.5 + 2) = (2.5, 2.5).
    # With bytes <= 2 only x fits; dropping x for being dominated in layer a alone would lose it.
    options = {"a": {"x": {"sensitivity": 1.0, "bytes": 1.0}, "y": {"sensitivity": 0.5, "bytes": 0.5}},
               "b": {"x": {"sensitivity": 0.0, "bytes": 0.0}, "y": {"sensitivity": 2.0, "bytes": 2.0}}}
    for formulation in ("core", "reduced"):
        r = solve_layerwise(options, budgets={"bytes": 2.0}, same_choice=[("a", "b")], formulation=formulation)
        assert r.status == "optimal" and r.assignment == {"a": "x", "b": "x"}
        assert r.objective == 1.0 and r.totals == {"bytes": 1.0, "sensitivity": 1.0}


def test_dominated_options_are_dropped_before_the_solve():
    options = {f"l{i}": {"fp16": {"sensitivity": 0.0, "bytes": 2.0}, "int8": {"sensitivity": 0.1, "bytes": 1.0},
                         "bad": {"sensitivity": 0.2, "bytes": 1.5},  # dominated by int8
                         "int8_copy": {"sensitivity": 0.1, "bytes": 1.0}}  # equal to int8: one is kept
               for i in range(3)}
    r = solve_layerwise(options, budgets={"bytes": 4.0}, formulation="reduced")
    assert r.stats["options"] == 12 and r.stats["options_after_dominance"] == 6
    assert r.status == "optimal" and r.objective == pytest.approx(0.2)  # 1 x fp16 + 2 x int8 = 4 bytes


# --------------------------------------------------------------------------------------------
# infeasible caps, time limits, status mapping
# --------------------------------------------------------------------------------------------


def test_infeasible_cap_reports_the_least_achievable_total():
    # least bytes per layer: 1 + 2 = 3 > cap 2.5
    options = {"a": {"x": {"sensitivity": 0.0, "bytes": 1.0}, "y": {"sensitivity": 1.0, "bytes": 4.0}},
               "b": {"x": {"sensitivity": 0.0, "bytes": 2.0}, "y": {"sensitivity": 1.0, "bytes": 5.0}}}
    r = solve_layerwise(options, budgets={"bytes": 2.5})
    assert r.status == "infeasible" and not r.ok and r.objective is None
    assert "bytes cannot be met: the least achievable total is 3 (cap 2.5)" in r.message
    (cand,) = r.candidates
    assert cand.assignment == {"a": "x", "b": "x"} and cand.misses == {"bytes": pytest.approx(0.5)}


def test_jointly_infeasible_caps_give_candidates_missing_each_cap():
    # each layer: "lo_bytes" (1 byte, 3 bops) or "lo_bops" (3 bytes, 1 bop); caps bytes <= 2, bops <= 2.
    # 2 x lo_bytes: bytes 2 fits, bops 6 misses by 4; 2 x lo_bops: the mirror image; one of each: 4 and 4.
    opt = {"lo_bytes": {"sensitivity": 0.0, "bytes": 1.0, "bops": 3.0},
           "lo_bops": {"sensitivity": 0.0, "bytes": 3.0, "bops": 1.0}}
    r = solve_layerwise({"a": opt, "b": opt}, budgets={"bytes": 2.0, "bops": 2.0})
    assert r.status == "infeasible"
    assert r.message.startswith("Each cap can be met alone but not all together")
    labels = {c.label: c for c in r.candidates}
    assert labels["least bytes"].misses == {"bops": pytest.approx(4.0)}  # 3 + 3 - 2
    assert labels["least bops"].misses == {"bytes": pytest.approx(4.0)}


def test_status_mapping_reads_sol_status_not_lpstatus():
    assert classify("pulp-highs", (1, 1), True) == "optimal"
    assert classify("pulp-highs", (1, 2), True) == "feasible"  # LpStatus "Optimal" after a time limit
    assert classify("cbc", (1, 2), True) == "feasible"
    assert classify("cbc", (-1, 0), False) == "infeasible"
    assert classify("pulp-highs", (0, 0), False) == "not_solved"
    assert classify("highs", "Optimal", True) == "optimal"
    assert classify("highs", "Time limit reached", True) == "feasible"
    assert classify("highs", "Time limit reached", False) == "not_solved"
    assert classify("highs", "Infeasible", False) == "infeasible"
    assert classify("scipy", 0, True) == "optimal"
    assert classify("scipy", 1, True) == "feasible"
    assert classify("scipy", 1, False) == "not_solved"
    assert classify("scipy", 2, False) == "infeasible"


@pytest.fixture(scope="module")
def hard_instance():
    # 1,000 layers x 8 choices, random: the plain model takes HiGHS 8-50 s to prove on this machine
    rng = np.random.default_rng(0)
    c = rng.uniform(1, 10, size=(1000, 8, 2))
    s = rng.uniform(0, 1, size=(1000, 8))
    caps = c.min(axis=1).sum(axis=0) + 0.3 * (c.mean(axis=1).sum(axis=0) - c.min(axis=1).sum(axis=0))
    options = {f"l{i}": {f"c{j}": {"sensitivity": s[i, j], "bytes": c[i, j, 0], "bops": c[i, j, 1]} for j in range(8)}
               for i in range(1000)}
    return options, {"bytes": caps[0], "bops": caps[1]}


@pytest.mark.parametrize("solver", ["highs", "pulp-highs"])
def test_time_limited_run_is_feasible_not_optimal(hard_instance, solver):
    options, budgets = hard_instance
    r = solve_layerwise(options, budgets=budgets, formulation="plain", solver=solver, time_limit_s=0.5)
    assert r.status in ("feasible", "not_solved"), r.message
    if r.status == "feasible":
        assert r.mip_gap is not None and r.mip_gap > 0 and r.lower_bound < r.objective
        assert r.message.startswith("Stopped before proving optimality")


def test_core_proves_the_hard_instance_quickly(hard_instance):
    options, budgets = hard_instance
    r = solve_layerwise(options, budgets=budgets)
    assert r.status == "optimal" and r.mip_gap == 0.0
    assert r.objective == pytest.approx(384.54699393671586, rel=1e-12)  # HiGHS on the plain model, gap 1e-9
    assert r.solve_s < 5


# --------------------------------------------------------------------------------------------
# input validation and serialization
# --------------------------------------------------------------------------------------------

OPTS = {"a": {"x": {"sensitivity": 0.1, "bytes": 1.0}, "y": {"sensitivity": 0.0, "bytes": 2.0}},
        "b": {"x": {"sensitivity": 0.1, "bytes": 1.0}, "y": {"sensitivity": 0.0, "bytes": 2.0}},
        "c": {"x": {"sensitivity": 0.1, "bytes": 1.0}, "z": {"sensitivity": 0.0, "bytes": 2.0}}}


@pytest.mark.parametrize("kwargs, message", [
    (dict(options=OPTS, budgets={"flops": 1.0}),
     "solve_layerwise.budgets must be keys among the options' cost terms ['bytes'] (cap sensitivity with "
     "sensitivity_cap); got 'flops'."),
    (dict(options=OPTS, budgets={"bytes": -1.0}), "solve_layerwise.budgets['bytes'] must be a finite number >= 0; got -1.0."),
    (dict(options={}, budgets={}), "solve_layerwise.options must be a non-empty mapping of layer -> {choice: option}; got {}."),
    (dict(options=OPTS, budgets={}, same_choice=[("a", "q")]),
     "solve_layerwise.same_choice must be groups of layer names that appear in options; got 'q'."),
    (dict(options=OPTS, budgets={}, same_choice=[("a", "c")]),
     "solve_layerwise.same_choice must be groups whose layers offer the same choice names; got \"'a' has ['y'] that "
     "'c' lacks, 'c' has ['z'] that 'a' lacks\"."),
    (dict(options=OPTS, budgets={}, objective="latency_s"),
     "solve_layerwise.objective must be 'sensitivity' or one of the cost terms ['bytes']; got 'latency_s'."),
    (dict(options=OPTS, budgets={}, solver="gurobi"),
     "solve_layerwise.solver must be one of 'highs', 'pulp-highs', 'cbc', 'scipy'; got 'gurobi'."),
    (dict(options={"a": {"x": {"bytes": 1.0}}}, budgets={}),
     "solve_layerwise.options['a']['x'] must be a LayerOption or a dict with 'sensitivity' and cost terms; "
     "got {'bytes': 1.0}."),
    (dict(options={"a": {"x": {"sensitivity": 0.0, "bytes": 1.0}, "y": {"sensitivity": 0.0}}}, budgets={}),
     "solve_layerwise.options['a']['y'] must be an option with the same cost terms as the others (['bytes']); got []."),
    (dict(options={"a": {}}, budgets={}),
     "solve_layerwise.options['a'] must be a non-empty mapping of choice -> option; got {}."),
    (dict(options=OPTS, budgets={}, time_limit_s=0), "solve_layerwise.time_limit_s must be None or a finite number > 0; got 0."),
])
def test_validation_messages(kwargs, message):
    options = kwargs.pop("options")
    with pytest.raises(ConfigError, match=re.escape(message)):
        solve_layerwise(options, **kwargs)


def test_layer_option_validation():
    with pytest.raises(ConfigError, match=re.escape("LayerOption.costs['bytes'] must be a finite number >= 0; got -1.")):
        LayerOption({"bytes": -1}, 0.0)
    with pytest.raises(ConfigError, match=re.escape("LayerOption.sensitivity must be a finite number; got nan.")):
        LayerOption({"bytes": 1}, float("nan"))


def test_result_round_trips_through_json_and_groups_are_respected():
    options, budgets = random_options(11, 12, 4)
    r = solve_layerwise(options, budgets=budgets, same_choice=[("l0", "l1"), ("l1", "l2")])  # overlapping: merged
    assert r.status == "optimal"
    assert len({r.assignment["l0"], r.assignment["l1"], r.assignment["l2"]}) == 1
    back = loads(dumps(r))
    assert isinstance(back, LayerwiseResult) and back == r
