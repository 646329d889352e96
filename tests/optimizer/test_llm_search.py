"""optimizer.llm_search: the LLM serving search (kind = "llm" jobs), its choices, costs and errors."""

from __future__ import annotations

import math

import pytest

from cost_models import CostModel, ModelFigures, Scenario, ServingPlan
from optimizer.jobs import parse_job
from optimizer.llm_search import LLMSpace, family_of, run_llm
from profilers.config import ConfigError

JOB = {
    "name": "llm-test", "kind": "llm",
    "llm": {"models": ["llama-2-7b"], "devices": ["L4", "A100-80GB", "H100-SXM"],
            "weights": ["bf16", "fp8", "int4_weight_only"], "kv": ["bf16", "fp8"], "tp": [1, 2],
            "batches": [1, 8, 32, 128], "ownership": ["rent"], "max_quality_loss": 0.05},
    "scenario": {"serving": {"avg_requests_per_s": 5, "peak_requests_per_s": 10, "input_tokens": 512,
                             "output_tokens": 128, "ttft_slo_s": 2.0, "tpot_slo_s": 0.08, "horizon_months": 1}},
}


def _job(**edits):
    import copy

    d = copy.deepcopy(JOB)
    for path, v in edits.items():
        t = d
        *head, last = path.split(".")
        for k in head:
            t = t.setdefault(k, {})
        if v is None:
            t.pop(last, None)
        else:
            t[last] = v
    return parse_job(d)


def test_the_search_picks_the_cheapest_qualifying_configuration():
    job = _job()
    res = run_llm(job)
    assert res.configurations == 1 * 3 * 3 * 2 * 2 * 4 * 1
    b = res.best["llama-2-7b"]
    # ground truth: the cheapest priced row whose published quality loss is within the bound
    ok = [r for r in res.rows if r["quality_loss"] is not None and r["quality_loss"] <= 0.05]
    assert b["total_usd"] == min(r["total_usd"] for r in ok)
    assert b["band_usd"][0] <= b["total_usd"] <= b["band_usd"][1]
    assert b["ttft_p90_s"] <= 2.0 and b["tpot_p90_s"] <= 0.08
    # $/M output tokens: the total over the output tokens served (5 req/s x 128 tokens x 730 h)
    assert b["usd_per_m_output"] == pytest.approx(b["total_usd"] / (5 * 128 * 730 * 3600) * 1e6)
    assert b["gpus"] == b["replicas"] * b["tp"]
    # fp8 needs an fp8 peak: never priced on the A100; KV fp8 has no published quality row here
    assert not any(r["device"] == "A100-80GB" and "fp8" in (r["weights"], r["kv"]) for r in res.rows)
    assert any(k.startswith("llm.weights must be a format A100-80GB can run") for k in res.rejected)
    assert any("quality unknown" in k for k in res.rejected)


def test_the_report_names_format_tp_devices_and_dollars_per_million_tokens(tmp_path):
    from optimizer.llm_search import write_llm_report

    job = _job()
    res = run_llm(job)
    files = write_llm_report(res, job, tmp_path)
    text = files["report"].read_text()
    b = res.best["llama-2-7b"]
    assert f"**{b['weights']}** weights" in text and "per million output tokens" in text
    assert "## Rejected configurations" in text and files["configs"].read_text().startswith("model,device")


def test_tensor_parallel_replicas_are_priced_per_gpu():
    # 2 GPUs per replica: twice the device-hours of one
    sc = Scenario(serving=ServingPlan(avg_requests_per_s=1, horizon_months=1))
    one = ModelFigures("A100-80GB", "fp16", 8, 1.0, None, 10**9, None, 10**9, "x")
    two = ModelFigures("A100-80GB", "fp16", 8, 1.0, None, 10**9, None, 10**9, "x", devices_per_replica=2)
    a, b = CostModel(sc).estimate(one), CostModel(sc).estimate(two)
    hours = lambda br: next(it.quantity for it in br.items if it.name.startswith("serving compute"))  # noqa: E731
    assert hours(b) == 2 * hours(a) == 2 * 730
    with pytest.raises(ConfigError, match="ModelFigures.devices_per_replica must be an integer >= 1"):
        ModelFigures("A100-80GB", "fp16", 8, 1.0, None, 1, None, 1, "x", devices_per_replica=0)


@pytest.mark.parametrize("edits, message", [
    ({"scenario.serving.input_tokens": None, "scenario.serving.output_tokens": None},
     r"^job.scenario.serving.input_tokens must be given with output_tokens \(or a request_mix file\)"),
    ({"scenario.serving.output_tokens": None}, r"^job.scenario.serving.output_tokens must be given together with input_tokens; got None."),
    ({"scenario.serving.latency_slo_s": 0.1}, r"scenario.serving.latency_slo_s must be absent in an 'llm' job"),
    ({"llm.weights": ["nf4"]}, r"^job.llm.weights\[0\] must be one of 'fp32', 'bf16'"),
    ({"llm.max_quality_loss": 2}, r"^job.llm.max_quality_loss must be a fraction in \[0, 1\)"),
    ({"llm.devices": ["TPU"]}, r"^job.llm.devices\[0\] must be a catalog device"),
    ({"llm.models": ["gpt-5"]}, r"^job.llm.models\[0\] must be a config.json path or one of"),
    ({"scenario.serving.request_mix": "nope.csv", "scenario.serving.input_tokens": None,
      "scenario.serving.output_tokens": None}, r"request_mix must be an existing CSV file"),
    ({"space": {"devices": ["T4"]}}, r"^job.space must be absent in an 'llm' job"),
])
def test_bad_llm_jobs_name_the_field(edits, message):
    with pytest.raises(ConfigError, match=message):
        _job(**edits)


def test_family_of_names():
    assert family_of("llama-2-70b") == ("llama-2", 70.0)
    assert family_of("llama-3.1-8b") == ("llama-3.1", 8.0)
    assert family_of("gpt2") is None


def test_the_bundled_example_job_loads():
    from optimizer.jobs import bundled_jobs, load_job

    job = load_job(bundled_jobs()["llm_serving"])
    assert job.kind == "llm" and isinstance(job.llm, LLMSpace) and job.llm.size >= 5000
    assert math.isclose(job.llm.max_quality_loss, 0.02)
