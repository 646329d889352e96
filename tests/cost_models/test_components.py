"""Hand-computed scenarios. Test device TestGPU-24 (conftest): 24 GB, 4 per node, 500 W TDP;
round prices: $2.00/h on demand, $0.50/h spot, $8,760 to buy, $0.10/kWh, $0.02/GB-month,
$0.05/GB egress, $0.01/GB between nodes."""

import pytest

from cost_models import (COMPONENTS, CostModel, DataPlan, Ownership, PeoplePlan, Scenario, ServingPlan,
                         TrainingPlan)
from cost_models.components import device_hour_rate

from .conftest import figures

approx = pytest.approx


def names(b):
    return {it.name: it for it in b.items}


def test_rented_serving(prices):
    # throughput 8 / 0.02 s = 400 samples/s; peak 1000 req/s -> ceil(1000 / 400) = 3 replicas
    # 3 replicas x 730 h x $2.00 = $4,380
    sc = Scenario(serving=ServingPlan(avg_requests_per_s=500, peak_requests_per_s=1000, horizon_months=1))
    b = CostModel(sc, prices).estimate(figures())
    assert b.replicas == 3
    item = names(b)["serving compute (TestGPU-24, on_demand)"]
    assert (item.quantity, item.usd_per_unit, item.cost_usd) == (2190, 2.00, approx(4380))
    assert "3 replica(s)" in item.formula and item.formula.endswith("= $4,380.00")
    assert b.total_usd == approx(4380)
    assert b.components == {"hardware": 0, "train_deploy": approx(4380), "data": 0, "human": 0}
    # 500 req/s x 730 h x 3600 s = 1,314,000,000 requests; $4,380 / 1,314,000 = $0.0033333 per 1,000
    assert b.requests == approx(1.314e9)
    assert b.usd_per_1000_requests == approx(4380 / 1.314e6)
    assert b.usd_per_training_run is None


def test_spot_tier_and_responses_and_artifact(prices):
    # 1 replica x 730 h x $0.50 (spot) = $365
    # egress: 10 req/s x 2,628,000 s = 26,280,000 requests x 10 kB = 262.8 GB x $0.05 = $13.14
    # artifact: 2 GB x 1 month x $0.02 = $0.04
    sc = Scenario(serving=ServingPlan(avg_requests_per_s=10, horizon_months=1, response_bytes=10_000),
                  ownership=Ownership(rent_tier="spot"))
    b = CostModel(sc, prices).estimate(figures(parameter_bytes=2_000_000_000))
    n = names(b)
    assert n["serving compute (TestGPU-24, spot)"].cost_usd == approx(365)
    assert n["responses (internet egress)"].quantity == approx(262.8)
    assert n["responses (internet egress)"].cost_usd == approx(13.14)
    assert n["artifact storage"].cost_usd == approx(0.04)
    assert b.total_usd == approx(365 + 13.14 + 0.04)


def test_training_with_retraining(prices):
    # per run: 1e6 samples x 2 epochs / 100 per step = 20,000 steps x 0.18 s = 3,600 s = 1 device-h
    # retrain every 3 months over 12 -> 4 runs: 4 device-h x $2.00 = $8; per run $2
    sc = Scenario(training=TrainingPlan(samples_per_epoch=1e6, epochs=2, retrain_every_months=3),
                  serving=ServingPlan(horizon_months=12))
    b = CostModel(sc, prices).estimate(figures(batch_size=100, train_step_s=0.18))
    it = names(b)["training compute (base, TestGPU-24, on_demand)"]
    assert it.quantity == approx(4.0) and it.cost_usd == approx(8.0)
    # + the goodput loss (failures, checkpoints, evaluation: its own line, test_scenario.py)
    loss = names(b)["goodput loss (TestGPU-24, on_demand)"].cost_usd
    assert 0 < loss < 0.02 * 8.0
    assert b.training_runs == 4 and b.usd_per_training_run == approx((8.0 + loss) / 4)
    assert b.requests == 0 and b.usd_per_1000_requests is None


def test_multi_node_training_and_gradient_exchange(prices):
    # 8 devices, 4 per node -> 2 nodes, efficiency 0.8
    # device-h: 1.6e6 samples / 100 x 0.09 s = 1,440 s / 0.8 = 1,800 s = 0.5 device-h x $2 = $1
    # global steps 1.6e6 / (100 x 8) = 2,000; per step 2 x (2 - 1) x 1 GB = 2 GB -> 4,000 GB x $0.01 = $40
    sc = Scenario(training=TrainingPlan(samples_per_epoch=1.6e6, devices=8, scaling_efficiency=0.8))
    b = CostModel(sc, prices).estimate(figures(batch_size=100, train_step_s=0.09, parameter_bytes=10**9))
    n = names(b)
    assert n["training compute (base, TestGPU-24, on_demand)"].cost_usd == approx(1.0)
    g = n["gradient exchange across nodes"]
    assert g.quantity == approx(4000) and g.cost_usd == approx(40) and g.component == "train_deploy"
    loss = n["goodput loss (TestGPU-24, on_demand)"].cost_usd  # failures, checkpoints, evaluation
    assert b.usd_per_training_run == approx(41.0 + loss)  # compute + gradient traffic + goodput loss, one run


def test_single_node_has_no_gradient_item(prices):
    sc = Scenario(training=TrainingPlan(samples_per_epoch=1e5, devices=4))
    b = CostModel(sc, prices).estimate(figures(batch_size=100, train_step_s=0.1, parameter_bytes=10**9))
    assert "gradient exchange across nodes" not in names(b)


def test_owning(prices):
    # 1 replica busy 730 h; utilization 0.5 -> the workload bears 1,460 device-h
    # amortized: $8,760 / (2 y x 8,760 h) = $0.50/h x 1,460 = $730
    # maintenance: $8,760 x 0.1 / 8,760 h = $0.10/h x 1,460 = $146
    # energy: 730 h x 500 W x 1.5 PUE / 1000 = 547.5 kWh x $0.10 = $54.75
    sc = Scenario(serving=ServingPlan(avg_requests_per_s=100, horizon_months=1),
                  ownership=Ownership(mode="own", lifetime_years=2, utilization=0.5, maintenance_fraction_per_year=0.1,
                                      pue=1.5))
    b = CostModel(sc, prices).estimate(figures())
    n = names(b)
    assert n["amortized purchase (serving, TestGPU-24)"].cost_usd == approx(730)
    assert n["maintenance (serving, TestGPU-24)"].cost_usd == approx(146)
    e = n["serving energy (TestGPU-24)"]
    assert (e.quantity, e.cost_usd, e.component) == (approx(547.5), approx(54.75), "train_deploy")
    assert b.components["hardware"] == approx(876) and b.total_usd == approx(930.75)
    assert not any("compute" in k for k in n)  # no rent when owning


def test_owning_overrides(prices):
    # purchase $4,380 over 1 y -> $0.50/h; 730 h / utilization 1.0; energy 730 h x 200 W x 1.0 / 1000 x $0.20
    sc = Scenario(serving=ServingPlan(avg_requests_per_s=1, horizon_months=1),
                  ownership=Ownership(mode="own", purchase_usd=4380, lifetime_years=1, utilization=1.0,
                                      maintenance_fraction_per_year=0, power_watts=200, pue=1.0, usd_per_kwh=0.2))
    b = CostModel(sc, prices).estimate(figures())
    assert b.components["hardware"] == approx(365)  # 730 h x $0.50
    assert names(b)["serving energy (TestGPU-24)"].cost_usd == approx(29.2)  # 146 kWh x $0.20
    assert "maintenance (serving, TestGPU-24)" not in names(b)


def test_data_component(prices):
    # labels 10,000 x $0.05 = $500; acquisition $200; preprocessing $300;
    # dataset 50 GB x 12 months x $0.02 = $12
    sc = Scenario(techniques=("distill",), serving=ServingPlan(horizon_months=12),
                  data=DataPlan(labeled_samples={"distill": 10_000}, usd_per_label=0.05,
                                acquisition_usd={"distill": 200}, preprocessing_usd=300, dataset_gb=50),
                  people=PeoplePlan(hours={"distill": 0}, maintenance_hours_per_month={"distill": 0}),
                  training=TrainingPlan(technique_epochs={"distill": 0}))
    b = CostModel(sc, prices).estimate(figures())
    n = names(b)
    assert n["labeling (distill)"].cost_usd == approx(500)
    assert n["data acquisition (distill)"].cost_usd == approx(200)
    assert n["preprocessing (base)"].cost_usd == approx(300)
    assert n["dataset storage"].cost_usd == approx(12)
    assert b.components == {"hardware": 0, "train_deploy": 0, "data": approx(1012), "human": 0}


def test_human_component(prices):
    # quantize_int8: 8 h + distill: 120 h = 128 h x $100 = $12,800 (defaults from techniques.toml)
    # maintenance: (1 + 4) h/month x 12 months = 60 h x $100 = $6,000
    sc = Scenario(techniques=("quantize_int8", "distill"), serving=ServingPlan(horizon_months=12),
                  people=PeoplePlan(usd_per_hour=100), training=TrainingPlan(technique_epochs={"distill": 0}))
    b = CostModel(sc, prices).estimate(figures())
    n = names(b)
    assert n["apply and tune quantize_int8"].cost_usd == approx(800)
    assert n["apply and tune distill"].cost_usd == approx(12_000)
    assert n["maintain quantize_int8"].quantity == approx(12) and n["maintain distill"].quantity == approx(48)
    assert b.components["human"] == approx(18_800)
    assert "assumption" in n["apply and tune distill"].provenance


def test_technique_training_uses_its_data(prices):
    # prune fine-tunes 1 epoch over its 50,000 labeled samples: 50,000 / 50 x 0.36 s = 360 s = 0.1 device-h x $2
    sc = Scenario(techniques=("prune",), data=DataPlan(labeled_samples={"prune": 50_000}),
                  people=PeoplePlan(hours={"prune": 0}, maintenance_hours_per_month={"prune": 0}))
    b = CostModel(sc, prices).estimate(figures(batch_size=50, train_step_s=0.36))
    assert names(b)["training compute (prune, TestGPU-24, on_demand)"].cost_usd == approx(0.2)


def test_overrides_of_techniques_not_applied_cost_nothing(prices):
    # one scenario for a whole search: prune's 16 h and distill's 50,000 labels (x $0.05 = $2,500) are
    # priced only in the variants that apply them
    sc = Scenario(serving=ServingPlan(horizon_months=12),
                  data=DataPlan(labeled_samples={"distill": 50_000}, usd_per_label=0.05,
                                acquisition_usd={"distill": 200}, preprocessing_usd={"prune": 70}),
                  people=PeoplePlan(usd_per_hour=100, hours={"prune": 16, "distill": 0},
                                    maintenance_hours_per_month={"prune": 0, "distill": 0}),
                  training=TrainingPlan(technique_epochs={"prune": 0, "distill": 0}))
    m = CostModel(sc, prices)
    assert m.estimate(figures()).components == {"hardware": 0, "train_deploy": 0, "data": 0, "human": 0}
    pruned = names(m.with_scenario(techniques=("prune",)).estimate(figures()))
    assert pruned["apply and tune prune"].quantity == 16 and pruned["apply and tune prune"].cost_usd == approx(1600)
    assert "Scenario.people.hours" in pruned["apply and tune prune"].provenance
    assert pruned["preprocessing (prune)"].cost_usd == approx(70) and "labeling (distill)" not in pruned
    distilled = m.with_scenario(techniques=("distill",)).estimate(figures())
    assert names(distilled)["labeling (distill)"].cost_usd == approx(2500)  # 50,000 x $0.05
    assert distilled.components["data"] == approx(2700) and distilled.components["human"] == 0


def test_separate_training_figures_and_device(prices):
    # serve on TestGPU-24; train on H100-SXM at $6.88/h: 3,600 s of steps = 1 device-h
    sc = Scenario(training=TrainingPlan(samples_per_epoch=1000), serving=ServingPlan(avg_requests_per_s=1,
                                                                                     horizon_months=1))
    train = figures(batch_size=10, train_step_s=36.0, device="H100-SXM")
    b = CostModel(sc, prices).estimate(figures(), train_figures=train)
    assert names(b)["training compute (base, H100-SXM, on_demand)"].cost_usd == approx(6.88)
    assert b.train_device == "H100-SXM" and b.serve_device == "TestGPU-24"


def test_host_priced_from_vcpu_hours(prices):
    rate, src = device_hour_rate("host", Scenario(), prices)
    assert rate == approx(4 * 0.0408)  # 4 vCPU x $0.0408 (m7g.large $0.0816 / 2)
    assert "vCPU" in src


def test_every_item_in_exactly_one_component(prices):
    sc = Scenario(techniques=("prune",), training=TrainingPlan(samples_per_epoch=1e5, devices=8),
                  serving=ServingPlan(avg_requests_per_s=50, response_bytes=1000),
                  data=DataPlan(labeled_samples={"prune": 1000}, usd_per_label=0.1, dataset_gb=1),
                  ownership=Ownership(mode="own"))
    b = CostModel(sc, prices).estimate(figures(train_step_s=0.1, parameter_bytes=10**8))
    assert {it.component for it in b.items} <= set(COMPONENTS)
    assert len({it.name for it in b.items}) == len(b.items)
    assert sum(b.components.values()) == approx(b.total_usd)
    for it in b.items:
        assert it.cost_usd == approx(it.quantity * it.usd_per_unit) and it.formula and it.provenance
