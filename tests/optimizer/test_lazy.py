"""The lazy search against brute force on random monotone instances (hypothesis)."""

import itertools
import math

import pytest
from hypothesis import given, settings, strategies as st

from optimizer.lazy import LazyVariant, lazy_search
from profilers.config import ConfigError


@st.composite
def instances(draw):
    n_knobs = draw(st.integers(1, 3))
    levels = [draw(st.integers(1, 4)) for _ in range(n_knobs)]
    grid = list(itertools.product(*[range(n) for n in levels]))
    # quality: non-increasing in every knob = 1 - sum of per-level drops (drops >= 0)
    drops = [[draw(st.floats(0, 0.3)) for _ in range(n)] for n in levels]
    inf_costs = draw(st.lists(st.booleans(), min_size=len(grid), max_size=len(grid)))
    variants, q = [], {}
    for i, k in enumerate(grid):
        cost = math.inf if inf_costs[i] and draw(st.booleans()) else draw(st.floats(1, 100))
        variants.append(LazyVariant(key=k, cost=cost, knobs=k))
        q[k] = 1.0 - sum(sum(drops[j][: k[j] + 1]) for j in range(n_knobs))
    target = draw(st.floats(0.0, 1.0))
    return variants, q, target


def brute_force(variants, q, target):
    feas = [v.cost for v in variants if q[v.key] >= target and math.isfinite(v.cost)]
    return min(feas) if feas else math.inf


@settings(max_examples=300, deadline=None)
@given(instances())
def test_lazy_matches_brute_force(inst):
    variants, q, target = inst
    calls = []

    def evaluate(k):
        calls.append(k)
        return q[k]

    res = lazy_search(variants, evaluate, target)
    expected = brute_force(variants, q, target)
    assert res.best_cost == expected
    if math.isinf(expected):
        assert res.status == "infeasible" and res.best is None
    else:
        assert res.status == "optimal"
        assert q[res.best] >= target
        assert res.best in [r.key for r in res.certificate]  # the answer's quality was measured
    assert len(calls) == len(set(calls)) == res.evaluations  # nothing evaluated twice
    assert res.violations == ()


@settings(max_examples=100, deadline=None)
@given(instances())
def test_every_cheaper_variant_is_accounted_for_in_the_certificate(inst):
    variants, q, target = inst
    res = lazy_search(variants, lambda k: q[k], target)
    accounted = set()
    for r in res.certificate:
        accounted.add(r.key)
        accounted.update(r.ruled_out)
        accounted.update(r.proven_feasible)
    for v in variants:
        if math.isfinite(v.cost) and v.cost < res.best_cost:
            assert v.key in accounted


def test_one_knob_is_binary_search():
    # 64 levels of one knob; cost falls and quality falls with compression: threshold at level 40
    variants = [LazyVariant(i, 100.0 - i, (i,)) for i in range(64)]
    res = lazy_search(variants, lambda k: 1.0 if k < 40 else 0.0, 0.5)
    assert res.best == 39
    assert res.evaluations <= 7  # ceil(log2(64)) + 1


def test_budget_stops_with_best_so_far():
    variants = [LazyVariant(i, 100.0 - i, (i,)) for i in range(64)]
    res = lazy_search(variants, lambda k: 1.0 if k < 40 else 0.0, 0.5, max_evaluations=2)
    assert res.status == "budget" and res.evaluations == 2 and res.open


def test_violation_of_monotonicity_is_reported():
    # "a" is more compressed than "b" yet scores higher: contrary evidence, seen once both are evaluated
    variants = [LazyVariant("a", 1.0, (1,)), LazyVariant("b", 2.0, (0,))]
    q = {"a": 0.2, "b": 0.1}
    res = lazy_search(variants, lambda k: q[k], 0.5)
    assert res.evaluations == 2
    assert len(res.violations) == 1 and "'a' (more compressed) scored 0.2" in res.violations[0]
    assert res.status == "infeasible"


def test_after_a_violation_every_cheaper_variant_is_evaluated():
    # levels 0..3; "2" breaks monotonicity and is the true optimum; the violation is exposed by the
    # first two evaluations, after which the search evaluates directly and finds it
    q = {0: 0.9, 1: 0.3, 2: 0.95, 3: 0.35}
    variants = [LazyVariant(i, 10.0 - i, (i,)) for i in range(4)]
    res = lazy_search(variants, lambda k: q[k], 0.5)
    assert res.best == 2 and res.best_cost == 8.0


def test_an_implied_best_is_measured_and_a_wrong_implication_is_reported():
    # evaluating 1 (feasible) implies 0 feasible (less compressed, same cost 6); 0 is tied for the
    # best, so it is measured before being returned, which exposes the wrong implication
    variants = [LazyVariant(0, 6.0, (0,)), LazyVariant(1, 6.0, (1,)), LazyVariant(2, 3.0, (2,))]
    q = {0: 0.1, 1: 0.9, 2: 0.1}
    res = lazy_search(variants, lambda k: q[k], 0.5)
    assert res.best == 1 and res.best_cost == 6.0
    assert any("0 was implied feasible" in v for v in res.violations)
    assert res.evaluations == 3


def test_failed_evaluation_counts_only_for_itself():
    variants = [LazyVariant("a", 1.0, (2,)), LazyVariant("b", 2.0, (1,)), LazyVariant("c", 3.0, (0,))]
    res = lazy_search(variants, lambda k: None if k == "a" else 1.0, 0.5)
    assert res.best == "b"


def test_validation_messages():
    with pytest.raises(ConfigError, match=r"lazy_search.variants must be a non-empty sequence"):
        lazy_search([], lambda k: 1.0, 0.5)
    with pytest.raises(ConfigError, match=r"must be tuples of length 1"):
        lazy_search([LazyVariant("a", 1, (0,)), LazyVariant("b", 1, (0, 1))], lambda k: 1.0, 0.5)
