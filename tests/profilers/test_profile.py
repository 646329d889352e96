"""profilers.profile (Timing, median_ci_rel, Profile JSON and summary) and profilers.report
(text and HTML rendering of a profile, through profilers.render)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from profilers.config import ConfigError, dumps, to_json_dict
from profilers.profile import DTYPE_BYTES, OpRecord, Profile, Timing, median_ci_rel
from profilers.render import fmt_bytes, fmt_flops, fmt_seconds
from profilers.report import profile_html, profile_text

# ---- Timing ------------------------------------------------------------------------------------

TEN = [0.3, 0.1, 0.2, 0.5, 0.4, 0.9, 0.7, 0.6, 0.8, 1.0]  # 0.1 .. 1.0, shuffled


def test_timing_from_samples_quantiles_match_numpy():
    t = Timing.from_samples(TEN, target_ci=0.02, method="time.perf_counter")
    q10, q50, q90 = np.quantile(TEN, [0.1, 0.5, 0.9])  # linear interpolation: 0.19, 0.55, 0.91
    assert t.p10_s == pytest.approx(q10, rel=1e-12) == pytest.approx(0.19)
    assert t.median_s == pytest.approx(q50, rel=1e-12) == pytest.approx(0.55)
    assert t.p90_s == pytest.approx(q90, rel=1e-12) == pytest.approx(0.91)
    assert t.runs == 10
    assert t.timed_s == pytest.approx(5.5)
    assert t.method == "time.perf_counter"


def test_median_ci_rel_by_hand():
    # n = 10: half = 1.96 * sqrt(10) / 2 = 3.099; lo = floor(5 - 3.099) = 1; hi = ceil(5 + 3.099) - 1 = 8
    # (xs[8] - xs[1]) / 2 / median = (0.9 - 0.2) / 2 / 0.55 = 0.636363...
    assert median_ci_rel(sorted(TEN)) == pytest.approx(0.7 / 2 / 0.55, rel=1e-12)


def test_median_ci_rel_edge_cases():
    assert median_ci_rel([1.0, 2.0]) == math.inf  # fewer than 3 runs: no interval
    assert median_ci_rel([0.0, 0.0, 0.0]) == math.inf  # a zero median has no relative width
    assert median_ci_rel([2.0] * 50) == 0.0  # identical runs: zero width


def test_timing_stability_flag_follows_target():
    ci = median_ci_rel(sorted(TEN))
    assert Timing.from_samples(TEN, target_ci=ci + 1e-9, method="m").stable is True
    assert Timing.from_samples(TEN, target_ci=ci - 1e-9, method="m").stable is False
    # two runs: infinite interval, never stable
    assert Timing.from_samples([1.0, 1.0], target_ci=100.0, method="m").stable is False


def test_timing_single_sample():
    t = Timing.from_samples([0.25], target_ci=0.02, method="m")
    assert t.median_s == t.p10_s == t.p90_s == 0.25 and t.runs == 1 and t.stable is False


def test_timing_needs_samples():
    with pytest.raises(ConfigError, match=r"^Timing\.samples must be at least one run; got 0\.$"):
        Timing.from_samples([], target_ci=0.02, method="m")


def test_timing_json_round_trip_with_infinite_ci():
    t = Timing.from_samples([1.0, 2.0], target_ci=0.02, method="m")
    assert t.ci_rel == math.inf
    text = dumps(t)
    json.loads(text)  # valid JSON
    from profilers.config import loads

    assert loads(text) == t


# ---- Profile -------------------------------------------------------------------------------------


def _profile(**kw) -> Profile:
    base = dict(
        model="TinyNet", source="measured", device="host", device_description="cpu: Test CPU (2 cores)",
        dtype="fp32", batch_size=8, torch_version="2.13.0", parameters=1234, parameter_bytes=4936,
        buffer_bytes=72, forward_flops=123_456_789, train_flops=370_370_367,
        latency=Timing(median_s=0.0025, p10_s=0.002, p90_s=0.003, runs=40, ci_rel=0.015, stable=True,
                       timed_s=0.1, method="time.perf_counter"),
        train_step=Timing(median_s=0.0075, p10_s=0.007, p90_s=0.009, runs=20, ci_rel=0.05, stable=False,
                          timed_s=0.15, method="time.perf_counter"),
        peak_memory_bytes=3 * 2**20, train_peak_memory_bytes=5 * 2**20, memory_method="torch profiler",
        serialized_bytes=6000,
        ops=(OpRecord("aten.addmm", "matmul", 2, 1000, 400), OpRecord("aten.relu", "memory", 1, 0, 64),
             OpRecord("aten.view", "free", 3, 0, 0)),
        train_ops=(OpRecord("aten.mm", "matmul", 4, 1000, 400),),
        created="2026-01-01T00:00:00+00:00", notes=("inputs Tensor[8, 16]:float32",),
    )
    base.update(kw)
    return Profile(**base)


def test_profile_json_round_trip_is_equal():
    p = _profile()
    text = p.to_json()
    d = json.loads(text)
    assert d["type"] == "profile" and d["version"] == 1
    assert d["latency"]["type"] == "timing" and d["ops"][0]["type"] == "op_record"
    back = Profile.from_json(text)
    assert back == p
    assert isinstance(back.ops, tuple) and isinstance(back.ops[0], OpRecord)
    assert isinstance(back.latency, Timing) and isinstance(back.notes, tuple)


def test_analyzed_profile_without_timings_round_trips():
    p = _profile(source="analyzed", device="meta", latency=None, train_step=None, peak_memory_bytes=None,
                 train_peak_memory_bytes=None, activation_bytes=10**9, gradient_bytes=4936,
                 optimizer_state_bytes=9872, seq_len=128)
    assert Profile.from_json(p.to_json()) == p


def test_profile_from_json_rejects_another_type():
    with pytest.raises(ConfigError, match=r"^Profile\.from_json\.type must be 'profile'; got 'Timing'\.$"):
        Profile.from_json(dumps(_profile().latency))


def test_profile_from_json_rejects_a_future_version():
    d = to_json_dict(_profile())
    d["version"] = 99
    with pytest.raises(ConfigError, match=r"^Profile\.version must be 1 .*; got 99\.$"):
        Profile.from_json(json.dumps(d))


@pytest.mark.parametrize("source", ["estimated", "", None])
def test_profile_source_is_validated(source):
    with pytest.raises(ConfigError, match=r"^Profile\.source must be 'measured', 'analyzed' or 'derived'; got "):
        _profile(source=source)


@pytest.mark.parametrize("bs", [0, -1, 2.0, "8", True])
def test_profile_batch_size_is_validated(bs):
    with pytest.raises(ConfigError, match=r"^Profile\.batch_size must be an integer >= 1; got "):
        _profile(batch_size=bs)


def test_profile_is_frozen():
    with pytest.raises(AttributeError):
        _profile().model = "x"  # type: ignore[misc]


def test_derived_figures_and_provenance():
    p = _profile()
    assert p.latency_s == 0.0025 and p.train_step_s == 0.0075
    assert p.throughput_per_s == pytest.approx(8 / 0.0025)  # 3200 samples/s
    assert p.provenance == "measured on cpu: Test CPU (2 cores), torch 2.13.0"
    a = _profile(source="analyzed", latency=None, train_step=None)
    assert a.latency_s is None and a.train_step_s is None and a.throughput_per_s is None
    assert a.provenance == "analyzed on the meta device (no execution), torch 2.13.0"


def test_op_record_totals():
    r = OpRecord("aten.addmm", "matmul", 3, 1000, 400)
    assert (r.total_flops, r.total_bytes) == (3000, 1200)


def test_with_notes_appends_and_keeps_the_original():
    p = _profile()
    q = p.with_notes("quality: 0.97", "b")
    assert q.notes == p.notes + ("quality: 0.97", "b")
    assert p.notes == ("inputs Tensor[8, 16]:float32",)


def test_summary_is_flat_and_exact():
    s = _profile().summary()
    assert s["model"] == "TinyNet" and s["device"] == "host" and s["dtype"] == "fp32" and s["batch_size"] == 8
    assert s["parameters"] == 1234 and s["parameter_bytes"] == 4936
    assert s["forward_flops"] == 123_456_789 and s["train_flops"] == 370_370_367
    assert s["latency_s"] == 0.0025 and s["latency_p90_s"] == 0.003
    assert s["throughput_per_s"] == pytest.approx(3200.0)
    assert s["train_step_s"] == 0.0075
    assert s["peak_memory_bytes"] == 3 * 2**20 and s["train_peak_memory_bytes"] == 5 * 2**20
    assert s["serialized_bytes"] == 6000
    assert s["provenance"].startswith("measured on ")
    assert all(not isinstance(v, (dict, list, tuple)) for v in s.values())
    json.dumps(s)  # plain data


def test_dtype_bytes():
    assert DTYPE_BYTES["fp32"] == 4 and DTYPE_BYTES["bf16"] == 2 and DTYPE_BYTES["fp16"] == 2
    assert DTYPE_BYTES["fp8"] == 1 and DTYPE_BYTES["int8"] == 1 and DTYPE_BYTES["int4"] == 0.5


# ---- rendering -------------------------------------------------------------------------------------


def test_formatters():
    assert fmt_bytes(None) == "-" and fmt_bytes(512) == "512 B" and fmt_bytes(3 * 2**20) == "3.00 MiB"
    assert fmt_seconds(None) == "-" and fmt_seconds(2.5) == "2.500 s"
    assert fmt_seconds(0.0025) == "2.500 ms" and fmt_seconds(2.5e-5) == "25.0 us"
    assert fmt_flops(None) == "-" and fmt_flops(123_456_789) == "123.457 MFLOP" and fmt_flops(500) == "500 FLOP"
    assert fmt_flops(2e12) == "2.000 TFLOP"


def test_profile_text_contains_the_figures():
    text = profile_text(_profile())
    assert text == _profile().to_text()
    for figure in ("TinyNet", "measured on cpu: Test CPU (2 cores), torch 2.13.0", "fp32 / 8",
                   "1,234", "4.82 KiB",  # 4936 B
                   "123.457 MFLOP", "370.370 MFLOP",
                   "2.500 ms [2.000 ms, 3.000 ms], 40 runs", "CI +-1.5%",
                   "3,200.0 samples/s", "7.500 ms [7.000 ms, 9.000 ms], 20 runs",
                   "3.00 MiB", "5.00 MiB", "5.86 KiB",  # serialized 6000 B
                   "torch profiler"):
        assert figure in text, figure
    assert "CI +-1.5% (time cap" not in text  # the inference timing was stable
    assert "CI +-5.0% (time cap hit before 2 % stability)" in text  # the training step's was not


def test_profile_text_flags_an_unstable_latency():
    lat = Timing(median_s=0.001, p10_s=0.001, p90_s=0.002, runs=5, ci_rel=0.3, stable=False, timed_s=0.005,
                 method="time.perf_counter")
    assert "time cap hit before 2 % stability" in profile_text(_profile(latency=lat))


def test_profile_text_of_an_analyzed_profile_has_no_timing_rows():
    p = _profile(source="analyzed", device="meta", latency=None, train_step=None, peak_memory_bytes=None,
                 train_peak_memory_bytes=None, activation_bytes=2**30, gradient_bytes=4936,
                 optimizer_state_bytes=9872, seq_len=128, serialized_bytes=None, memory_method="")
    text = profile_text(p)
    assert "latency" not in text and "throughput" not in text
    assert "x 128 tokens" in text and "1.00 GiB" in text and "analyzed on the meta device" in text


def test_repr_html_is_an_escaped_html_table():
    p = _profile(model="<script>alert(1)</script>")
    h = p._repr_html_()
    assert h == profile_html(p)
    assert "<table" in h and h.endswith("</table>")  # a Styler table: its style block comes first
    assert "<th" in h and "<td" in h and "<caption" in h
    assert "<script>" not in h and "&lt;script&gt;" in h
    assert "2.500 ms" in h and "123.457 MFLOP" in h
