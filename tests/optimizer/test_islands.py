"""The islands joined: serving pools (plan_fleet) inside the search's pricing, and the layer-wise
ILP as a search method reachable from Python, job files and the CLI."""

from types import SimpleNamespace

import pytest

from cost_models import Ownership, Scenario, ServingPlan
from cost_models.components import LineItem
from optimizer import SearchSpace, search
from optimizer.jobs import parse_job
from optimizer.layerwise_search import layerwise_variant
from optimizer.pool import serving_pool
from profilers.config import ConfigError
from profilers.techniques import Prune, Quantize


def _option(device: str, batch: int, latency_s: float, usd_per_hour: float, replicas: int, other_usd: float):
    hours = replicas * 730.0  # one month
    item = LineItem("train_deploy", f"serving compute ({device}, on_demand)", hours, "device-hour", usd_per_hour,
                    hours * usd_per_hour, "replicas x hours", f"{device} row", "serving")
    br = SimpleNamespace(items=(item,), total_usd=hours * usd_per_hour + other_usd)
    return batch, br, SimpleNamespace(latency_s=latency_s, provenance=f"projected for {device}"), br.total_usd


def test_a_pool_beats_every_single_type_when_replicas_round_up():
    # peak 140 req/s, one sample a request, one month (730 h); $100 of costs that do not depend on the device.
    # A: 10 / 0.1 s = 100 req/s at $1/h -> ceil(140/100) = 2 -> 2 x 730 x 1 = $1,460 + $100 = $1,560
    # B:  4 / 0.1 s =  40 req/s at $0.5/h -> ceil(140/40) = 4 -> 4 x 730 x 0.5 = $1,460 + $100 = $1,560
    # pool 1 A + 1 B = 140 req/s at $1.5/h -> 730 x 1.5 = $1,095 + $100 = $1,195: saves $365
    sc = Scenario(serving=ServingPlan(avg_requests_per_s=140, samples_per_request=1, horizon_months=1))
    a, b = _option("A", 10, 0.1, 1.0, 2, 100.0), _option("B", 4, 0.1, 0.5, 4, 100.0)
    dep = SimpleNamespace(per_device={"A": a, "B": b}, breakdown=a[1], device="A")
    pool = serving_pool("m", dep, sc)
    assert pool.devices == {"A": 1, "B": 1}
    assert pool.usd_per_hour == pytest.approx(1.5)
    assert pool.total_usd == pytest.approx(1195.0) and pool.saving_usd == pytest.approx(365.0)
    assert pool.describe() == "1x A + 1x B"
    assert "A row" in pool.provenance or "price book" in pool.provenance


def test_no_pool_for_owned_hardware_or_one_device_type():
    sc = Scenario(serving=ServingPlan(avg_requests_per_s=140, samples_per_request=1, horizon_months=1),
                  ownership=Ownership(mode="own"))
    a, b = _option("A", 10, 0.1, 1.0, 2, 0.0), _option("B", 4, 0.1, 0.5, 4, 0.0)
    assert serving_pool("m", SimpleNamespace(per_device={"A": a, "B": b}, breakdown=a[1], device="A"), sc) is None
    rent = Scenario(serving=ServingPlan(avg_requests_per_s=140, samples_per_request=1, horizon_months=1))
    assert serving_pool("m", SimpleNamespace(per_device={"A": a}, breakdown=a[1], device="A"), rent) is None


SPACE = SearchSpace(prune_amount=(0.0, 0.5), devices=("T4", "L4", "A10G"), batch_sizes=(16, 64))


def test_search_with_a_pool_never_costs_more_and_reports_the_pool(wl, cost_model, tmp_path):
    single = search(wl, SPACE, cost_model, min_quality=0.95, method="exhaustive", profile_time_cap_s=0.2,
                    output_dir=tmp_path / "single")
    pooled = search(wl, SPACE, cost_model, min_quality=0.95, method="exhaustive", profile_time_cap_s=0.2,
                    output_dir=tmp_path / "pooled", pool=True)
    by_variant = {t.variant: t for t in single.trials}
    for t in pooled.trials:  # a pool is used only when it is cheaper than the best single type
        assert t.cost_usd <= by_variant[t.variant].cost_usd + 1e-6
    b = pooled.best
    assert b.cost_usd <= single.best.cost_usd + 1e-6
    if b.pool:
        assert b.pool_saving_usd > 0 and sum(b.pool.values()) == b.replicas and " + " in b.device
        assert b.cost_usd == pytest.approx(by_variant[b.variant].cost_usd - b.pool_saving_usd)
    with pytest.raises(ConfigError, match=r"^search\.pool must be true or false \(serve on the cheapest mix of the "
                                          r"space's device types\); got 'yes'\.$"):
        search(wl, SPACE, cost_model, min_quality=0.95, pool="yes")


def test_layerwise_method_verifies_prices_and_reports_the_assembled_model(wl, cost_model, tmp_path):
    choices = (Quantize("bf16"), Prune("l1_unstructured", amount=0.5))
    # A10G: the assembled model mixes bf16 and fp32 layers (the T4 has no bf16 peak)
    res = search(wl, SearchSpace(devices=("A10G",), batch_sizes=(64,)), cost_model, min_quality=0.95,
                 method="layerwise", layer_choices=choices, output_dir=tmp_path, profile_time_cap_s=0.2)
    assert res.method == "layerwise" and res.layerwise
    lw = [t for t in res.trials if t.variant.startswith("layerwise-")]
    assert len(lw) == 1 and lw[0].label.startswith("layer-wise: ")
    # the assembled model, measured by the search's evaluator, meets the target as the verification measured
    assert lw[0].quality >= 0.95 and res.layerwise[-1]["measured_quality"] == pytest.approx(lw[0].quality)
    assert lw[0].cost_usd < float("inf")  # priced like any variant
    # the answer is the cheaper in dollars of the verified assignment and the unchanged model
    feasible = [t for t in res.trials if t.quality is not None and t.quality >= 0.95]
    assert len(feasible) == 2 and res.best.cost_usd == min(t.cost_usd for t in feasible)
    # the assignment's techniques: each choice restricted to the layers that took it, in composition order
    v = layerwise_variant({"a": "bf16", "b": "prune_l1_0.5", "c": "bf16", "d": "fp32"},
                          {"bf16": choices[0], "prune_l1_0.5": choices[1]})
    assert v.techniques == (Prune("l1_unstructured", amount=0.5).on("b"), Quantize("bf16").on("a", "c"))
    assert v.key == "layerwise-bf16x2-prune_l1_0.5x1"
    assert v.label == "layer-wise: bf16 on 2 layers, prune_l1_0.5 on 1 layer"
    assert res.baseline is not None and res.baseline.cost_usd > 0
    assert (tmp_path / "layer_profile.json").exists()
    with pytest.raises(ConfigError, match=r"^search\.layer_choices must be absent with method 'lazy' "
                                          r"\(per-layer choices are for 'layerwise'\)"):
        search(wl, SPACE, cost_model, min_quality=0.95, layer_choices=choices)
    with pytest.raises(ConfigError, match=r"^search\.layer_choices\[0\] must be a technique config that takes a "
                                          r"layer selector"):
        search(wl, SPACE, cost_model, min_quality=0.95, method="layerwise", layer_choices=["bf16"])


def _job(search_table: dict) -> dict:
    return {"name": "t", "workload": "digits", "space": {"devices": ["T4"], "batch_sizes": [64]},
            "constraints": {"min_quality": 0.95}, "search": search_table}


def test_job_files_take_the_pool_and_the_layerwise_method():
    job = parse_job(_job({"method": "layerwise", "max_bytes": 1e6, "pool": True, "layer_choices": [
        {"technique": "quantize", "mode": "int8_weight_only"},
        {"technique": "prune", "method": "l1_unstructured", "amount": 0.5}]}))
    assert job.layer_choices == (Quantize("int8_weight_only"), Prune("l1_unstructured", amount=0.5))
    kw = job.search_kwargs()
    assert kw["pool"] is True and kw["max_bytes"] == 1e6 and kw["layer_choices"] == job.layer_choices
    cases = [
        ({"method": "lazy", "max_bytes": 1e6},
         "job.search.max_bytes must be absent with method 'lazy' (a deployed-bytes budget is for 'layerwise'); got "
         "1000000.0."),
        ({"method": "layerwise", "layer_choices": [{"technique": "distill", "width": 0.5}]},
         "job.search.layer_choices[0] must be a table naming a technique that takes a layer selector (technique = "
         "'prune', 'quantize') and its fields; got a table."),
        ({"method": "layerwise", "layer_choices": [{"technique": "quantize", "mode": "int3"}]},
         "job.search.layer_choices[0].mode must be one of 'bf16', 'fp16', 'int8_weight_only', 'int8_dynamic', "
         "'fp8', 'int4_weight_only'; got 'int3'."),
        ({"pool": "yes"}, "job.search.pool must be true or false (serve on the cheapest mix of the space's device "
                          "types); got 'yes'."),
    ]
    for table, message in cases:
        with pytest.raises(ConfigError) as info:
            parse_job(_job(table))
        assert str(info.value) == message


def test_the_layerwise_example_job_runs_from_the_cli(tmp_path, capsys):
    from pathlib import Path

    from optimizer.cli import main

    job = Path(__file__).parents[2] / "examples" / "digits_layerwise.toml"
    assert main(["search", str(job), "--output", str(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "method               layerwise" in out
    report = (tmp_path / "report.md").read_text()
    assert "Layer-wise rounds" in report and "layer-wise: " in report  # the verified assignment is a priced trial
    assert "| round |" in report.replace(" ", "").replace("|round|", "| round |")
