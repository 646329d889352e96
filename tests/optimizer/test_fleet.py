"""plan_fleet against brute force, hand-computed plans, infeasible demand, validation."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optimizer.fleet import Demand, DeviceOffer, FleetPlan, plan_fleet
from profilers.config import ConfigError, dumps, loads

pytest.importorskip("highspy")


# --------------------------------------------------------------------------------------------
# brute force
# --------------------------------------------------------------------------------------------


def brute_dedicated(qps, thr, cap, price):
    """Every integer x[d, m] <= cap[d] with sum_m x[d, m] <= cap[d]; cheapest that meets every demand."""
    D, M = thr.shape
    best = None
    for x in itertools.product(*(range(cap[d] + 1) for d in range(D) for _ in range(M))):
        x = np.array(x).reshape(D, M)
        if (x.sum(axis=1) > cap).any() or ((thr * x).sum(axis=0) < qps - 1e-9).any():
            continue
        cost = float((price[:, None] * x).sum())
        best = cost if best is None else min(best, cost)
    return best


def brute_pooled(qps, thr, cap, price):
    """Every integer y[d] <= cap[d]; feasible if some split z[d, m] >= 0, sum_m z <= y, meets demand (LP)."""
    from scipy.optimize import linprog

    D, M = thr.shape
    best = None
    for y in itertools.product(*(range(c + 1) for c in cap)):
        cost = float(price @ np.array(y))
        if best is not None and cost >= best:
            continue
        # variables z[d, m] flattened; rows: sum_m z[d, m] <= y[d]; -sum_d thr z <= -qps
        A = [[1.0 if dd == d else 0.0 for dd in range(D) for _ in range(M)] for d in range(D)]
        A += [[-thr[dd, mm] if mm == m else 0.0 for dd in range(D) for mm in range(M)] for m in range(M)]
        b = list(map(float, y)) + [-q for q in qps]
        if linprog(np.zeros(D * M), A_ub=A, b_ub=b, bounds=(0, None), method="highs").status == 0:
            best = cost
    return best


@st.composite
def tiny_fleets(draw):
    D = draw(st.integers(1, 3))
    M = draw(st.integers(1, 2))
    thr = np.array([[draw(st.sampled_from([0, 3, 5, 8, 12, 20])) for _ in range(M)] for _ in range(D)], float)
    cap = np.array([draw(st.integers(0, 3)) for _ in range(D)])
    price = np.array([draw(st.integers(5, 50)) / 10 for _ in range(D)])
    qps = np.array([draw(st.integers(1, 40)) for _ in range(M)], float)
    return qps, thr, cap, price


def build(qps, thr, cap, price):
    demands = [Demand(f"m{m}", qps[m]) for m in range(len(qps))]
    offers = [DeviceOffer(f"d{d}", price[d], {f"m{m}": thr[d, m] for m in range(len(qps))}, "synthetic test figure",
                          max_count=int(cap[d])) for d in range(len(cap))]
    return demands, offers


@settings(max_examples=60, deadline=None, derandomize=True)
@given(tiny_fleets(), st.sampled_from(["dedicated", "pooled"]))
def test_agrees_with_brute_force(inst, sharing):
    qps, thr, cap, price = inst
    expected = (brute_dedicated if sharing == "dedicated" else brute_pooled)(qps, thr, cap, price)
    plan = plan_fleet(*build(qps, thr, cap, price), sharing=sharing)
    if expected is None:
        assert plan.status == "infeasible" and plan.unmet, plan.message
        assert plan.usd_per_hour is None
        return
    assert plan.status == "optimal", plan.message
    assert plan.usd_per_hour == pytest.approx(expected, abs=1e-9)
    for d, n in plan.devices.items():
        assert n <= cap[int(d[1:])]
    for m, q in enumerate(qps):  # every model's load is served, and nothing above 100 % busy
        assert sum(plan.load_qps[f"m{m}"].values()) == pytest.approx(q)
    assert all(u <= 1 + 1e-9 for u in plan.device_utilization.values())


# --------------------------------------------------------------------------------------------
# hand-computed plans
# --------------------------------------------------------------------------------------------


def test_hand_computed_mixed_fleet():
    # 100 QPS; A100 $4.00/h at 30 QPS; L4 $1.10/h at 8 QPS.
    #   4 A100 (120 QPS) = $16.00;   13 L4 (104 QPS) = $14.30;   3 A100 + 2 L4 (106) = 12.00 + 2.20 = $14.20
    #   1 A100 + 9 L4 (102) = 4.00 + 9.90 = $13.90;   2 A100 + 5 L4 (60 + 40 = 100) = 8.00 + 5.50 = $13.50  <- best
    offers = [DeviceOffer("A100", 4.0, {"llama": 30}, "projected for A100 from test profile", max_count=10),
              DeviceOffer("L4", 1.1, {"llama": 8}, "measured on L4, test", max_count=20)]
    plan = plan_fleet([Demand("llama", 100, slo="p99 <= 200 ms")], offers)
    assert plan.status == "optimal"
    assert plan.devices == {"A100": 2, "L4": 5} and plan.usd_per_hour == pytest.approx(13.5)
    assert plan.load_qps == {"llama": {"A100": pytest.approx(60.0), "L4": pytest.approx(40.0)}}
    assert plan.utilization == {"llama": pytest.approx(1.0)}
    assert plan.provenance == {"A100/llama": "projected for A100 from test profile", "L4/llama": "measured on L4, test"}
    # with only 4 L4 available, 2 A100 + 4 L4 = 92 QPS is short; 3 A100 + 2 L4 = $14.20 wins
    offers[1] = DeviceOffer("L4", 1.1, {"llama": 8}, "measured on L4, test", max_count=4)
    plan = plan_fleet([Demand("llama", 100)], offers)
    assert plan.devices == {"A100": 3, "L4": 2} and plan.usd_per_hour == pytest.approx(14.2)
    assert plan.utilization["llama"] == pytest.approx(100 / 106)


def test_pooling_packs_fractional_leftovers():
    # two models at 15 QPS each, one A100 ($4/h) serves either at 30 QPS:
    # dedicated: 1 device per model = $8/h, each half busy; pooled: 15/30 + 15/30 = 1 device = $4/h
    offer = DeviceOffer("A100", 4.0, {"a": 30, "b": 30}, "projected", max_count=10)
    dedicated = plan_fleet({"a": 15, "b": 15}, [offer])
    pooled = plan_fleet({"a": 15, "b": 15}, [offer], sharing="pooled")
    assert dedicated.usd_per_hour == 8.0 and dedicated.counts == {"A100": {"a": 1, "b": 1}}
    assert dedicated.device_utilization == {"A100": pytest.approx(0.5)}
    assert pooled.usd_per_hour == 4.0 and pooled.counts == {"A100": {"a": pytest.approx(0.5), "b": pytest.approx(0.5)}}
    assert pooled.device_utilization == {"A100": pytest.approx(1.0)}


# --------------------------------------------------------------------------------------------
# infeasible demand
# --------------------------------------------------------------------------------------------


def test_demand_beyond_every_device_names_the_model_and_the_max_qps():
    # 'a' needs 100 QPS; all 2 A100 at 30 QPS give 60
    offers = [DeviceOffer("A100", 4.0, {"a": 30, "b": 30}, "projected", max_count=2)]
    plan = plan_fleet({"a": 100, "b": 15}, offers)
    assert plan.status == "infeasible" and not plan.ok
    assert plan.unmet == ("a",) and plan.max_qps == {"a": 60.0}
    assert "'a' needs 100 QPS but every available device together serves at most 60 QPS (2 x A100 at 30 QPS)" \
        in plan.message


def test_demands_that_conflict_report_the_most_each_can_get():
    # 2 A100 (30 QPS each), dedicated: 'a' (45) needs 2 devices, 'b' (15) needs 1; 3 > 2.
    # With 'b' met (1 device) 'a' gets 1 x 30 = 30 QPS; with 'a' met (both devices) 'b' gets 0.
    offers = [DeviceOffer("A100", 4.0, {"a": 30, "b": 30}, "projected", max_count=2)]
    plan = plan_fleet({"a": 45, "b": 15}, offers)
    assert plan.status == "infeasible" and set(plan.unmet) == {"a", "b"}
    assert plan.max_qps == {"a": pytest.approx(30.0), "b": 0.0}
    assert "sharing='pooled'" in plan.message
    pooled = plan_fleet({"a": 45, "b": 15}, offers, sharing="pooled")  # 45/30 + 15/30 = 2 devices exactly
    assert pooled.status == "optimal" and pooled.devices == {"A100": 2}


def test_model_no_offer_serves():
    plan = plan_fleet({"a": 1}, [DeviceOffer("T4", 0.5, {"b": 10}, "measured")])
    assert plan.status == "infeasible" and plan.unmet == ("a",) and "(no offer serves it)" in plan.message


# --------------------------------------------------------------------------------------------
# validation, serialization
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make, message", [
    (lambda: Demand("a", 0), "Demand.qps must be a finite number > 0; got 0."),
    (lambda: DeviceOffer("L4", 1.0, {"a": -1}, "measured"), "DeviceOffer.throughput_qps['a'] must be a finite number >= 0; got -1."),
    (lambda: DeviceOffer("L4", 1.0, {"a": 5}, ""), "DeviceOffer.provenance must be a non-empty string, or one per model"),
    (lambda: DeviceOffer("L4", 0.0, {"a": 5}, "m"), "DeviceOffer.usd_per_hour must be a finite number > 0; got 0.0."),
    (lambda: DeviceOffer("L4", 1.0, {"a": 5}, "m", max_count=-1), "DeviceOffer.max_count must be None or an integer >= 0; got -1."),
    (lambda: plan_fleet({"a": 1}, [DeviceOffer("L4", 1.0, {"a": 5}, "m")], sharing="mixed"),
     "plan_fleet.sharing must be one of 'dedicated', 'pooled'; got 'mixed'."),
    (lambda: plan_fleet([Demand("a", 1), Demand("a", 2)], [DeviceOffer("L4", 1.0, {"a": 5}, "m")]),
     "plan_fleet.demands must be one Demand per model; got ['a', 'a']."),
    (lambda: plan_fleet({"a": 1}, []), "plan_fleet.offers must be a non-empty sequence of DeviceOffer; got []."),
])
def test_validation_messages(make, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        make()


def test_plan_round_trips_through_json():
    offers = [DeviceOffer("A100", 4.0, {"a": 30, "b": 20}, {"a": "measured on A100", "b": "projected"}, max_count=3),
              DeviceOffer("L4", 1.1, {"a": 8}, "measured on L4")]
    plan = plan_fleet({"a": 50, "b": 10}, offers)
    assert plan.status == "optimal"
    back = loads(dumps(plan))
    assert isinstance(back, FleetPlan) and back == plan
