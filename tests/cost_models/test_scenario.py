import re

import pytest

from cost_models import (CostModel, DataPlan, Ownership, PeoplePlan, Scenario, ServingPlan, TrainingPlan,
                         technique_defaults)
from cost_models.scenario import assumption
from profilers.config import ConfigError, dumps, loads


def test_slo_with_zero_traffic_is_an_error():
    with pytest.raises(ConfigError, match=re.escape(
            "ServingPlan.peak_requests_per_s must be > 0 when latency_slo_s is set (an SLO needs traffic); got 0.0.")):
        ServingPlan(latency_slo_s=0.1)


@pytest.mark.parametrize("kwargs, msg", [
    (dict(avg_requests_per_s=-1), "ServingPlan.avg_requests_per_s must be a finite number >= 0; got -1."),
    (dict(avg_requests_per_s=10, peak_requests_per_s=5), "ServingPlan.peak_requests_per_s must be >= avg_requests_per_s (10); got 5."),
    (dict(horizon_months=0), "ServingPlan.horizon_months must be a finite number > 0; got 0."),
    # a sane maximum: 100 years (1e300 months used to price to inf or nonsense)
    (dict(horizon_months=1e300), "ServingPlan.horizon_months must be a number of months in (0, 1200] (100 years); "
                                 "got 1e+300."),
])
def test_serving_validation(kwargs, msg):
    with pytest.raises(ConfigError, match=re.escape(msg)):
        ServingPlan(**kwargs)


def test_training_and_ownership_validation():
    with pytest.raises(ConfigError, match=re.escape("TrainingPlan.tokens_per_sample must be a number > 0 when unit is 'tokens'; got None.")):
        TrainingPlan(samples_per_epoch=1e9, unit="tokens")
    with pytest.raises(ConfigError, match=re.escape("TrainingPlan.scaling_efficiency must be a fraction in (0, 1]; got 1.5.")):
        TrainingPlan(scaling_efficiency=1.5)
    with pytest.raises(ConfigError, match=re.escape("Ownership.mode must be one of 'rent', 'own'; got 'lease'.")):
        Ownership(mode="lease")
    with pytest.raises(ConfigError, match=re.escape("Ownership.utilization must be a fraction in (0, 1]; got 1.2.")):
        Ownership(utilization=1.2)
    with pytest.raises(ConfigError, match=re.escape("Ownership.pue must be a number >= 1 (total facility power / IT power); got 0.9.")):
        Ownership(pue=0.9)


def test_unknown_technique_and_stray_keys():
    with pytest.raises(ConfigError, match=r"Scenario.techniques must be names from techniques.toml \(.*distill.*\) "
                                          r"or ones given PeoplePlan.hours; got 'magic'."):
        Scenario(techniques=("magic",))
    Scenario(techniques=("magic",), people=PeoplePlan(hours={"magic": 3}))  # user-defined technique
    with pytest.raises(ConfigError, match=r"^DataPlan.labeled_samples\['distil'\] must be keyed by 'base' or a "
                                          r"technique name: one of .*'distill', .*'prune', .*; got 'distil'.$"):
        Scenario(techniques=("distill",), data=DataPlan(labeled_samples={"distil": 10}))
    with pytest.raises(ConfigError, match=r"^PeoplePlan.hours\['pruning'\] must be keyed by 'base' or a technique "
                                          r"name: one of .*'prune'.*; got 'pruning'.$"):
        Scenario(people=PeoplePlan(hours={"pruning": 16}))
    # a technique's own name, applied or not: a search keeps one scenario for every variant
    sc = Scenario(techniques=("magic",), people=PeoplePlan(hours={"magic": 3, "prune": 16}))
    assert sc.engineer_hours("prune") == 16 and not sc.applies("prune") and sc.applies("magic")


def test_defaults_come_from_data_files():
    d = technique_defaults()
    assert d["quantize_int8"].engineer_hours == 8
    assert d["prune"].engineer_hours == 40
    assert d["distill"].engineer_hours == 120
    assert d["tensor_parallel"].engineer_hours == 160
    assert "assumption" in d["distill"].source
    assert PeoplePlan().usd_per_hour == assumption("engineer_usd_per_hour") == 69.50
    assert Ownership().pue == 1.58
    sc = Scenario(techniques=("distill",), people=PeoplePlan(hours={"distill": 200}))
    assert sc.engineer_hours("distill") == 200  # override wins
    assert sc.maintenance_hours_per_month("distill") == d["distill"].maintenance_hours_per_month


def test_training_runs_and_tokens():
    t = TrainingPlan(samples_per_epoch=1e6, retrain_every_months=3)
    assert t.runs(12) == 4  # retrain at months 0, 3, 6, 9
    assert t.runs(12.5) == 5
    assert TrainingPlan().runs(12) == 1
    tok = TrainingPlan(samples_per_epoch=2e9, unit="tokens", tokens_per_sample=1000)
    assert tok.samples_per_epoch_in_samples == 2e6


def test_preprocessing_number_means_base():
    assert DataPlan(preprocessing_usd=300).preprocessing_usd == {"base": 300}


def test_scenario_and_cost_model_round_trip_json():
    sc = Scenario(name="rt", techniques=("prune", "quantize_int8"),
                  training=TrainingPlan(samples_per_epoch=1e5, epochs=2, retrain_every_months=6, devices=8,
                                        technique_epochs={"prune": 2}),
                  serving=ServingPlan(avg_requests_per_s=5, peak_requests_per_s=20, latency_slo_s=0.2),
                  data=DataPlan(labeled_samples={"prune": 100}, usd_per_label=0.1, dataset_gb=3),
                  people=PeoplePlan(usd_per_hour=90, hours={"prune": 30}),
                  ownership=Ownership(mode="own", purchase_usd=1000, power_watts=300))
    assert loads(dumps(sc)) == sc
    m = CostModel(sc)
    again = loads(dumps(m))
    assert again.scenario == sc and again.prices == m.prices


def test_replace_plan_fields():
    sc = Scenario().replace(serving__horizon_months=3, ownership__mode="own", name="x")
    assert sc.serving.horizon_months == 3 and sc.ownership.owns and sc.name == "x"


def test_the_longest_horizon_is_100_years():
    assert ServingPlan(horizon_months=1200).horizon_hours == 1200 * 730


def test_scenario_from_a_table_reports_each_plan_at_its_path():
    from profilers.config import build

    with pytest.raises(ConfigError) as info:
        build(Scenario, {"ownership": {"provider": {"name": "aws"}}}, "scenario")
    assert str(info.value) == "scenario.ownership.provider must be a string; got a table."
    with pytest.raises(ConfigError) as info:
        build(Scenario, {"people": {"hours": {"pruning": 16}}}, "scenario")
    assert str(info.value).startswith("scenario.people.hours['pruning'] must be keyed by 'base' or a technique name")
    sc = build(Scenario, {"serving": {"avg_requests_per_s": 5}, "people": {"hours": {"prune": 16}}}, "scenario")
    assert sc == Scenario(serving=ServingPlan(avg_requests_per_s=5), people=PeoplePlan(hours={"prune": 16}))


def test_goodput_on_a_toy_failure_rate():
    # 1,000 devices failing 1e-5 / device-h -> 0.01 interruptions per wall hour; each loses 0.5 h restart
    # + half of a 2 h checkpoint interval = 1.5 h -> 1.5 % lost; a checkpoint of 1e9 parameters x 14 B =
    # 14 GB at 1,000 x 0.007 GB/s = 7 GB/s = 2 s every 2 h -> c = 2 / 7200; evaluation 2 %:
    # goodput = (1 - 0.02) x (1 - 0.015) / (1 + 2/7200) = 0.98 x 0.985 / 1.000278 = 0.965032
    from cost_models.scenario import goodput

    plan = TrainingPlan(samples_per_epoch=1, failures_per_device_hour=1e-5, restart_hours=0.5,
                        checkpoint_interval_hours=2.0, checkpoint_bytes_per_parameter=14, checkpoint_write_gbps_per_device=0.007,
                        evaluation_fraction=0.02)
    g, why = goodput(plan, 1000, 100.0, 1e9)
    assert g == pytest.approx(0.98 * 0.985 / (1 + 2 / 7200), rel=1e-12)
    assert why.startswith("productive time 96.5%: 1.5% lost to failures")
    with pytest.raises(ConfigError, match=r"^TrainingPlan.failures_per_device_hour must be < 1 / \(devices x"):
        goodput(plan, 10**5, 100.0, 1e9)  # 1 failure per wall hour, 1.5 h lost each: it never finishes


def test_goodput_is_its_own_line_item(prices):
    from cost_models import CostModel, ModelFigures
    from cost_models.scenario import goodput

    plan = TrainingPlan(samples_per_epoch=1e6, devices=8, failures_per_device_hour=1e-3, restart_hours=0.25,
                        checkpoint_interval_hours=1.0)
    # bf16 parameter bytes 2e9 -> 1e9 parameters
    fig = ModelFigures("H100-SXM", "bf16", 64, 0.05, 0.2, 10**9, 2 * 10**9, 2 * 10**9, "by hand")
    br = CostModel(Scenario(training=plan), prices).estimate(fig)
    ideal = next(it for it in br.items if it.name.startswith("training compute"))
    loss = [it for it in br.items if it.name.startswith("goodput loss")]
    assert len(loss) == 1 and "productive time" in loss[0].formula
    # the run's wall time is its ideal device-hours over the 8 devices
    g, _ = goodput(plan, 8, ideal.quantity / 8, 1e9)
    # 8 x 1e-3 = 0.008 failures / h x 0.75 h = 0.6 %; checkpoint 14 GB / (8 x 0.12 GB/s) = 14.6 s an hour
    # = 0.4 %; evaluation 0.7 % (BLOOM): goodput = 0.993 x 0.994 / 1.00405 = 0.9831
    assert g == pytest.approx(0.993 * 0.994 / (1 + 14e9 / 0.96e9 / 3600), rel=1e-9)
    assert loss[0].quantity == pytest.approx(ideal.quantity * (1 / g - 1), rel=1e-12)
    assert loss[0].usd_per_unit == ideal.usd_per_unit
