"""Analyses on hand-computable cases (TestGPU-24 at $2.00/h on demand, see conftest)."""

import numpy as np
import pytest

from cost_models import (CostModel, Option, Ownership, PeoplePlan, Scenario, ServingPlan, break_even, knob_names,
                         sensitivity, tornado_plot, uncertainty)
from profilers.config import ConfigError

from .conftest import figures

approx = pytest.approx


def plain_and_quantized(prices, horizon=1.0):
    """A: 100 samples/s per replica. B: quantize_int8 doubles throughput, costs 8 h x $100 = $800 once.
    A(x) = ceil(x / 100) x 730 h x $2 x horizon; B(x) = $800 + ceil(x / 200) x 730 h x $2 x horizon."""
    serve = ServingPlan(avg_requests_per_s=50, horizon_months=horizon)
    a = Option("plain", CostModel(Scenario(serving=serve), prices), figures(batch_size=1, latency_s=0.01))
    people = PeoplePlan(usd_per_hour=100, hours={"quantize_int8": 8}, maintenance_hours_per_month={"quantize_int8": 0})
    b = Option("int8", CostModel(Scenario(techniques=("quantize_int8",), serving=serve, people=people), prices),
               figures(batch_size=1, latency_s=0.005))
    return a, b


def test_break_even_over_traffic_is_the_replica_jump(prices):
    # x <= 100 req/s: A = $1,460 < B = $2,260; 100 < x <= 200: A = $2,920 > B = $2,260 -> crossing at 100
    a, b = plain_and_quantized(prices)
    r = break_even(a, b, over="traffic_requests_per_s", bounds=(10, 150))
    assert r.status == "found" and r.value == approx(100, abs=1e-6)
    assert r.cheaper_below == "plain"


def test_break_even_over_horizon_is_continuous(prices):
    # at 150 req/s: A = 2 replicas x 730 x $2 x h = $2,920 h; B = $800 + $1,460 h -> h = 800 / 1460 months
    a, b = plain_and_quantized(prices)
    a = Option(a.name, a.model.with_scenario(serving__avg_requests_per_s=150), a.figures)
    b = Option(b.name, b.model.with_scenario(serving__avg_requests_per_s=150), b.figures)
    r = break_even(a, b, over="horizon_months", bounds=(0.01, 24))
    assert r.value == approx(800 / 1460, rel=1e-8)
    assert r.a_total_usd == approx(r.b_total_usd, rel=1e-8)
    assert "cost the same at horizon_months" in r.message


def test_break_even_without_crossing(prices):
    a, b = plain_and_quantized(prices)
    r = break_even(a, b, over="traffic_requests_per_s", bounds=(1, 90))
    assert r.status == "no_crossing" and r.value is None and r.cheaper == "plain"
    with pytest.raises(ConfigError, match="break_even.over must be a value knob"):
        break_even(a, b, over="price:gpu_hour", bounds=(1, 2))
    with pytest.raises(ConfigError, match="break_even.bounds must be finite"):
        break_even(a, b, over="horizon_months", bounds=(2, 1))


def test_break_even_utilization_rent_vs_own(prices):
    # own per busy hour: ($0.50 + $0.10) / u + energy 0.5 kW x 1.5 x $0.10 = $0.075; rent $2.00
    # -> u* = 0.60 / (2.00 - 0.075) = 0.311688...
    serve = ServingPlan(avg_requests_per_s=100, horizon_months=1)
    rent = Option("rent", CostModel(Scenario(serving=serve), prices), figures())
    own = Option("own", CostModel(Scenario(serving=serve, ownership=Ownership(
        mode="own", lifetime_years=2, maintenance_fraction_per_year=0.1, pue=1.5)), prices), figures())
    r = break_even(rent, own, over="utilization", bounds=(0.05, 1.0))
    assert r.value == approx(0.6 / 1.925, rel=1e-9)
    assert r.cheaper_below == "rent"  # at low utilization renting wins


def test_sensitivity_tornado(prices):
    # base: 3 replicas x 730 h x $2 = $4,380. +-20%: gpu_hour price and horizon swing $4,380 x 0.4 = $1,752;
    # traffic (or samples per request) 800 -> 2 replicas ($2,920), 1200 -> 3 replicas ($4,380): swing $1,460
    sc = Scenario(serving=ServingPlan(avg_requests_per_s=1000, horizon_months=1))
    res = sensitivity(Option("a", CostModel(sc, prices), figures()), delta=0.2)
    assert res.base_total_usd == approx(4380)
    top = res.rows[:4]
    assert {r.knob for r in top[:2]} == {"horizon_months", "price:gpu_hour"}
    assert top[0].swing_usd == approx(1752) and top[1].swing_usd == approx(1752)
    assert {r.knob for r in top[2:]} == {"traffic_requests_per_s", "samples_per_request"}
    assert top[2].swing_usd == approx(1460) and top[3].swing_usd == approx(1460)
    assert [r.swing_usd for r in res.rows] == sorted((r.swing_usd for r in res.rows), reverse=True)
    assert all(r.swing_usd > 0 for r in res.rows)  # zero-swing knobs dropped by default
    assert "price:gpu_hour" in res.to_table()
    assert len(res.to_dataframe()) == len(res.rows)
    full = sensitivity(Option("a", CostModel(sc, prices), figures()), include_zero=True)
    assert {r.knob for r in full.rows} == set(knob_names())


def test_tornado_plot_draws_bars(prices):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    sc = Scenario(serving=ServingPlan(avg_requests_per_s=1000, horizon_months=1))
    res = sensitivity(Option("a", CostModel(sc, prices), figures()))
    ax = tornado_plot(res)
    assert len(ax.patches) == 2 * len(res.rows)
    assert [t.get_text() for t in ax.get_yticklabels()][-1] == res.rows[0].knob


def rent_vs_own(prices):
    serve = ServingPlan(avg_requests_per_s=100, horizon_months=1)
    rent = Option("rent", CostModel(Scenario(serving=serve), prices), figures())
    own = Option("own", CostModel(Scenario(serving=serve, ownership=Ownership(
        mode="own", lifetime_years=2, maintenance_fraction_per_year=0.1, pue=1.5, utilization=0.4)), prices), figures())
    return rent, own


def test_uncertainty_cheapest_changes(prices):
    # rent: 730 h x $2 x f = $1,460 f. own (u = 0.4): 730 / 0.4 x $0.60 + 730 x $0.075 = $1,149.75
    # own is cheaper when f > 1149.75 / 1460 = 0.7875; f ~ U(0.5, 1.5) -> P(own cheapest) = 0.7125
    rent, own = rent_vs_own(prices)
    res = uncertainty([rent, own], {"price:gpu_hour": (0.5, 1.5)}, n=400, seed=7)
    assert res.nominal_totals == (approx(1460), approx(1149.75))
    assert res.nominal_cheapest == "own"
    assert res.p_cheapest()["own"] == approx(0.7125, abs=2 / 400)  # Latin hypercube: stratified
    assert res.p_cheapest_changes == approx(0.2875, abs=2 / 400)
    s = res.summary()
    assert s["own"]["p05"] == approx(1149.75) and 730 < s["rent"]["p05"] < s["rent"]["p95"] < 2190
    df = res.to_dataframe()
    assert list(df.columns) == ["factor:price:gpu_hour", "total_usd:rent", "total_usd:own", "cheapest"]


def test_uncertainty_is_seeded(prices):
    rent, own = rent_vs_own(prices)
    ranges = {"price:gpu_hour": (0.7, 1.3), "traffic_requests_per_s": (0.5, 2.0), "utilization": (0.5, 1.5)}
    r1 = uncertainty([rent, own], ranges, n=50, seed=1)
    r2 = uncertainty([rent, own], ranges, n=50, seed=1)
    r3 = uncertainty([rent, own], ranges, n=50, seed=2)
    assert np.array_equal(r1.totals, r2.totals) and np.array_equal(r1.factors, r2.factors)
    assert not np.array_equal(r1.factors, r3.factors)
    assert np.all(np.isfinite(r1.totals))


def test_uncertainty_validation(prices):
    rent, own = rent_vs_own(prices)
    with pytest.raises(ConfigError, match="knob.name must be one of"):
        uncertainty([rent], {"gpu_price": (0.5, 1.5)})
    with pytest.raises(ConfigError, match=r"uncertainty.ranges\['horizon_months'\] must be \(low factor, high factor\)"):
        uncertainty([rent], {"horizon_months": (2, 1)})
    with pytest.raises(ConfigError, match="uncertainty.options must be options with distinct names"):
        uncertainty([rent, rent], {})
