"""Properties (hypothesis): non-negative; monotone in every price and in traffic; affine in the
horizon when nothing reruns; owning costs the same as renting at the break-even utilization."""

import math

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from cost_models import (CostModel, DataPlan, Option, Ownership, PeoplePlan, Scenario, ServingPlan, TrainingPlan,
                         break_even)
from cost_models.prices import KINDS

from .conftest import TEST_DEVICE, figures, round_prices

PRICES = round_prices()
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TECHS = ("quantize_int8", "prune", "distill")


@st.composite
def cases(draw, retrain=True):
    techs = tuple(t for t in TECHS if draw(st.booleans()))
    fig = figures(batch_size=draw(st.integers(1, 64)), latency_s=draw(st.floats(1e-3, 0.5)),
                  train_step_s=draw(st.floats(1e-3, 1.0)), peak_memory_bytes=draw(st.integers(0, 20 * 10**9)),
                  parameter_bytes=draw(st.integers(0, 5 * 10**9)))
    avg = draw(st.floats(0, 500))
    serving = ServingPlan(avg_requests_per_s=avg, peak_requests_per_s=avg * draw(st.floats(1, 3)),
                          horizon_months=draw(st.floats(0.5, 36)), response_bytes=draw(st.floats(0, 1e5)),
                          samples_per_request=draw(st.floats(1, 4)))
    training = TrainingPlan(samples_per_epoch=draw(st.floats(0, 1e6)), epochs=draw(st.floats(0, 3)),
                            devices=draw(st.integers(1, 16)), scaling_efficiency=draw(st.floats(0.5, 1)),
                            retrain_every_months=draw(st.none() | st.floats(1, 12)) if retrain else None)
    data = DataPlan(labeled_samples={t: draw(st.floats(0, 1e4)) for t in techs}, usd_per_label=draw(st.floats(0, 1)),
                    dataset_gb=draw(st.floats(0, 100)), preprocessing_usd=draw(st.floats(0, 1000)))
    people = PeoplePlan(usd_per_hour=draw(st.floats(0, 200)))
    if draw(st.booleans()):
        own = Ownership(mode="own", utilization=draw(st.floats(0.1, 1)), lifetime_years=draw(st.floats(1, 6)),
                        pue=draw(st.floats(1, 2)), maintenance_fraction_per_year=draw(st.floats(0, 0.2)))
    else:
        own = Ownership(rent_tier=draw(st.sampled_from(["on_demand", "spot"])))
    sc = Scenario(techniques=techs, serving=serving, training=training, data=data, people=people, ownership=own)
    return CostModel(sc, PRICES), fig


@SETTINGS
@given(cases())
def test_non_negative_and_consistent(case):
    model, fig = case
    b = model.estimate(fig)
    assert b.ok
    assert all(it.cost_usd >= 0 and it.quantity >= 0 for it in b.items)
    assert b.total_usd >= 0
    assert sum(b.components.values()) == pytest.approx(b.total_usd, rel=1e-12, abs=1e-9)


@SETTINGS
@given(cases(), st.sampled_from(sorted(KINDS)), st.floats(1.0, 3.0))
def test_monotone_in_every_price(case, kind, factor):
    model, fig = case
    base = model.total_usd(fig)
    more = model.with_prices(model.prices.scaled(kind, factor)).total_usd(fig)
    assert more >= base * (1 - 1e-12) - 1e-9


@SETTINGS
@given(cases(), st.floats(1.0, 4.0))
def test_monotone_in_traffic(case, factor):
    model, fig = case
    s = model.scenario.serving
    busier = model.with_scenario(serving__avg_requests_per_s=s.avg_requests_per_s * factor,
                                 serving__peak_requests_per_s=s.peak_rps * factor)
    assert busier.total_usd(fig) >= model.total_usd(fig) * (1 - 1e-12) - 1e-9


@SETTINGS
@given(cases(retrain=False), st.floats(0.5, 12), st.floats(0.5, 12))
def test_affine_in_horizon_without_retraining(case, h1, dh):
    # one training run, one-off labels and hours; serving, storage, maintenance scale with months
    model, fig = case
    t = [model.with_scenario(serving__horizon_months=h1 + k * dh).total_usd(fig) for k in (0, 1, 2)]
    assert t[0] + t[2] == pytest.approx(2 * t[1], rel=1e-9, abs=1e-6)


@settings(max_examples=25, deadline=None)
@given(purchase=st.floats(1000, 50_000), lifetime=st.floats(1, 6), maint=st.floats(0, 0.2),
       watts=st.floats(50, 1000), pue=st.floats(1, 2), kwh=st.floats(0.02, 0.3), rent=st.floats(0.2, 10),
       rps=st.floats(1, 2000))
def test_owning_equals_renting_at_break_even_utilization(purchase, lifetime, maint, watts, pue, kwh, rent, rps):
    # per busy device-hour: own = (P / (L x 8760) + P x m / 8760) / u + W / 1000 x PUE x $/kWh; rent = R
    amort, mnt, energy = purchase / (lifetime * 8760), purchase * maint / 8760, watts / 1000 * pue * kwh
    assume(rent > energy)
    u_star = (amort + mnt) / (rent - energy)
    assume(0.02 < u_star < 0.98)
    book = PRICES.with_price("gpu_hour", TEST_DEVICE, rent, provider="h")
    serve = ServingPlan(avg_requests_per_s=rps, horizon_months=3)
    own_plan = Ownership(mode="own", purchase_usd=purchase, lifetime_years=lifetime, maintenance_fraction_per_year=maint,
                         power_watts=watts, pue=pue, usd_per_kwh=kwh, utilization=u_star)
    fig = figures(parameter_bytes=10**9)
    renting = CostModel(Scenario(serving=serve), book)
    owning = CostModel(Scenario(serving=serve, ownership=own_plan), book)
    assert owning.total_usd(fig) == pytest.approx(renting.total_usd(fig), rel=1e-9)
    # above u* owning is cheaper, below it renting is
    hi = owning.with_scenario(ownership__utilization=min(1.0, u_star * 1.05)).total_usd(fig)
    lo = owning.with_scenario(ownership__utilization=u_star * 0.95).total_usd(fig)
    assert hi < renting.total_usd(fig) < lo
    found = break_even(Option("rent", renting, fig), Option("own", owning, fig), over="utilization", bounds=(0.01, 1))
    assert found.value == pytest.approx(u_star, rel=1e-6)
    assert math.isclose(found.a_total_usd, found.b_total_usd, rel_tol=1e-6)
