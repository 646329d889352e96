import json
import math
import re
from types import SimpleNamespace

import pytest

from cost_models import (CostBreakdown, CostModel, InfeasibleCostError, ModelFigures, Scenario, ServingPlan,
                         TrainingPlan, devices_that_fit, figures_from, require_fit)
from profilers.config import ConfigError

from .conftest import TEST_DEVICE, figures


def serving(**kw):
    return Scenario(serving=ServingPlan(**{"avg_requests_per_s": 10, "horizon_months": 1, **kw}))


def test_latency_above_slo_is_infeasible_with_a_fix(prices):
    b = CostModel(serving(latency_slo_s=0.01), prices).estimate(figures(latency_s=0.02), model_name="resnet50")
    assert b.status == "infeasible" and not b.ok and b.total_usd == math.inf
    assert b.message.startswith("ServingPlan.latency_slo_s must be >= the latency of resnet50 on TestGPU-24 at "
                                "batch 8 (0.02 s); got 0.01. To fix:")
    with pytest.raises(InfeasibleCostError, match=re.escape("ServingPlan.latency_slo_s must be >= the latency")):
        b.raise_for_status()
    assert "INFEASIBLE" in b.to_table() and "Infeasible" in b._repr_html_()


def test_model_larger_than_device_names_model_device_and_sizes(prices):
    b = CostModel(serving(), prices).estimate(figures(peak_memory_bytes=30_000_000_000), model_name="big-lm")
    assert b.status == "infeasible"
    assert b.message.startswith("ModelFigures.peak_memory_bytes must be <= the memory of one TestGPU-24 (24.00 GB); "
                                "got '30.00 GB needed by big-lm'. To fix:")


def test_training_memory_checked(prices):
    sc = Scenario(training=TrainingPlan(samples_per_epoch=10))
    b = CostModel(sc, prices).estimate(figures(train_step_s=0.1, train_peak_memory_bytes=25 * 10**9))
    assert b.status == "infeasible" and "train_peak_memory_bytes" in b.message and "needed to train" in b.message


def test_training_without_step_time_is_an_input_error(prices):
    sc = Scenario(training=TrainingPlan(samples_per_epoch=10))
    with pytest.raises(ConfigError, match=re.escape("ModelFigures.train_step_s must be a measured or projected step "
                                                    "time when the scenario trains (base: 10 samples); got None.")):
        CostModel(sc, prices).estimate(figures())


def test_unknown_device(prices):
    with pytest.raises(ConfigError, match=r"ModelFigures.device must be one of .*H100-SXM.*'host'; got 'Z80'."):
        CostModel(serving(), prices).estimate(figures(device="Z80"))


def test_device_without_price_is_a_missing_price(prices):
    sc = serving().replace(ownership__rent_tier="reserved")
    with pytest.raises(ConfigError, match=re.escape("PriceBook.gpu_hour['TestGPU-24', 'reserved'] must be a price in "
                                                    "the book; have on_demand via test; spot via test; got 'missing'.")):
        CostModel(sc, prices).estimate(figures())


def test_model_fits_no_device():
    huge = figures(peak_memory_bytes=10**13)
    with pytest.raises(ConfigError, match=r"ModelFigures.peak_memory_bytes must be <= the memory of at least one device "
                                          r"\(largest: .*\); got '10000.00 GB needed by llm-10t'. To fix: shard"):
        require_fit(huge, model_name="llm-10t")
    small = figures(peak_memory_bytes=20 * 10**9)
    assert TEST_DEVICE in devices_that_fit(small) and "H100-SXM" in require_fit(small)
    assert devices_that_fit(figures(peak_memory_bytes=30 * 10**9), [TEST_DEVICE, "H100-SXM"]) == ["H100-SXM"]


def test_figures_from_duck_typing():
    class Projection:  # stands in for profilers.Projection: only the attribute names matter
        device, dtype, batch_size, latency_s, train_step_s = "H100-SXM", "bf16", 4, 0.01, 0.03
        peak_memory_bytes, train_peak_memory_bytes, parameter_bytes = 5e9, None, 2e9
        provenance = "projected for H100-SXM from profile p with efficiency 0.5"
        name = "proj-model"
        other_stuff = object()

    f = figures_from(Projection())
    assert f.peak_memory_bytes == 5_000_000_000 and isinstance(f.peak_memory_bytes, int)
    assert f.throughput_samples_per_s == pytest.approx(400)
    d = figures_from({k: getattr(f, k) for k in f.__dataclass_fields__})
    assert d == f
    with pytest.raises(ConfigError, match=re.escape("ModelFigures.latency_s must be an attribute of the "
                                                    "SimpleNamespace given; got 'missing'.")):
        figures_from(SimpleNamespace(device="T4", dtype="fp16", batch_size=1))
    b = CostModel(serving()).estimate(Projection())  # a Profile/Projection-like object directly
    assert b.model_name == "proj-model" and b.ok


def test_model_figures_validation():
    with pytest.raises(ConfigError, match=re.escape("ModelFigures.batch_size must be an integer >= 1; got 0.")):
        ModelFigures("T4", "fp16", 0, 0.1, None, 1, None, 1, "x")
    with pytest.raises(ConfigError, match=re.escape("ModelFigures.latency_s must be a finite number > 0; got 0.")):
        ModelFigures("T4", "fp16", 1, 0, None, 1, None, 1, "x")


def test_outputs_table_json_dataframe_html(prices):
    sc = Scenario(name="demo", training=TrainingPlan(samples_per_epoch=1e5),
                  serving=ServingPlan(avg_requests_per_s=10, horizon_months=1))
    b = CostModel(sc, prices).estimate(figures(train_step_s=0.05, parameter_bytes=10**9), model_name="m")
    text = b.to_table()
    for word in ("C_hardware", "C_train&deploy", "C_data", "C_human", "TOTAL", "per 1,000 requests",
                 "serving compute (TestGPU-24, on_demand)"):
        assert word in text
    again = CostBreakdown.from_json(b.to_json())
    assert again == b and again.total_usd == pytest.approx(b.total_usd)
    assert json.loads(b.to_json())["type"] == "cost_models.cost_breakdown"
    df = b.to_dataframe()
    assert list(df.columns[:6]) == ["component", "name", "quantity", "unit", "usd_per_unit", "cost_usd"]
    assert df["cost_usd"].sum() == pytest.approx(b.total_usd)
    html = b._repr_html_()
    assert html.startswith("<p><b>demo: m on TestGPU-24</b></p>") and "<table" in html and "</table>" in html


def test_infeasible_breakdown_round_trips(prices):
    b = CostModel(serving(latency_slo_s=0.001), prices).estimate(figures())
    assert CostBreakdown.from_json(b.to_json()) == b


def test_catalog_devices_price_end_to_end():
    # every device the catalog lists can be priced with the shipped book
    from profilers import hardware

    for name in hardware.names():
        if name == TEST_DEVICE:
            continue
        fig = figures(device=name, peak_memory_bytes=10**9)
        assert CostModel(serving()).estimate(fig).total_usd > 0


def test_figures_from_rejects_missing_measurements_and_meta():
    rec = dict(device="meta", dtype="fp32", batch_size=1, latency_s=None, train_step_s=None, peak_memory_bytes=10,
               train_peak_memory_bytes=None, parameter_bytes=10, provenance="analyzed on the meta device")
    with pytest.raises(ConfigError, match=re.escape("ModelFigures.latency_s must be a measured or projected value "
                                                    "(the dict has none); got None.")):
        figures_from(rec)
    fig = figures_from({**rec, "latency_s": 0.1})
    with pytest.raises(ConfigError, match=re.escape("ModelFigures.device must be a real device (project an analyzed "
                                                    "profile onto one first")):
        CostModel(serving()).estimate(fig)


def test_model_name_read_from_profile_like_object(prices):
    rec = SimpleNamespace(model="bert-base", **{k: getattr(figures(), k) for k in ModelFigures.__dataclass_fields__})
    b = CostModel(serving(), prices).estimate(rec)
    assert b.model_name == "bert-base"


# ---- error bands of projected times flow into dollars ----------------------------------------------


def test_a_latency_band_gives_low_and_high_totals(prices):
    # TestGPU-24 at $2.00/h, batch 8 in 20 ms = 400 samples/s per replica; peak 500 requests/s ->
    # 2 replicas. The band's fast end (10 ms: 800/s) needs 1, its slow end (40 ms: 200/s) 3: the
    # totals move by one replica-month (730 h x $2.00 = $1,460) either way.
    import dataclasses

    model = CostModel(serving(peak_requests_per_s=500), prices)
    fig = figures(latency_s=0.02, latency_band_s=(0.01, 0.04))
    br = model.estimate(fig)
    assert br.replicas == 2 and fig.batch_size == 8
    lo, mid, hi = br.band_usd
    assert mid == br.total_usd
    assert lo == pytest.approx(mid - 1460.0) and hi == pytest.approx(mid + 1460.0)
    assert "80 % band" in br.to_table()
    # no band: the three are the same figure
    plain = model.estimate(dataclasses.replace(fig, latency_band_s=None))
    assert plain.band_usd == (plain.total_usd,) * 3 and plain.low_usd is None
    # a slow end that misses the SLO is infinite
    tight = CostModel(serving(latency_slo_s=0.03), prices).estimate(fig)
    assert tight.ok and tight.high_usd == math.inf


def test_a_malformed_band_is_rejected(prices):
    with pytest.raises(ConfigError, match=r"ModelFigures.latency_band_s must be None or \(low, high\) seconds"):
        figures(latency_band_s=(0.03, 0.01))
