"""profilers.projection: the roofline (hand-computed on hand-built profiles and devices), efficiency,
calibration against a measured host profile, provenance, memory fit, errors, JSON round trip."""

from __future__ import annotations

import math

import pytest

from profilers import ConfigError, Profile, Projection, analyze, hardware, measure, project
from profilers.config import dumps, from_json_dict, loads, to_json_dict
from profilers.hardware import DeviceSpec
from profilers.profile import OpRecord, Timing
from profilers.projection import DEFAULT_EFFICIENCY, calibrate, roofline_time

# A toy device: 100 TFLOP/s fp32, 200 TFLOP/s bf16, 1000 GB/s, 1 GB.
TOY = DeviceSpec(name="Toy", kind="gpu", vendor="test", peak_tflops={"fp32": 100.0, "bf16": 200.0}, memory_gb=1.0,
                 memory_bandwidth_gbps=1000.0, source="test fixture", date="2026-01-01")

MM = OpRecord("aten.mm", "matmul", 1, 10**12, 10**9)  # fp32: max(1e12 / 1e14, 1e9 / 1e12) = max(10 ms, 1 ms)
ADD = OpRecord("aten.add", "memory", 1, 0, 4 * 10**9)  # max(0, 4e9 / 1e12) = 4 ms
VIEW = OpRecord("aten.view", "free", 5, 10**15, 10**12)  # arithmetic-free: ignored whatever it says
MM3 = OpRecord("aten.mm", "matmul", 3, 10**12, 10**9)  # 3 calls x 10 ms = 30 ms


def _timing(median: float) -> Timing:
    return Timing(median_s=median, p10_s=median, p90_s=median, runs=10, ci_rel=0.0, stable=True,
                  timed_s=10 * median, method="time.perf_counter")


def hand_profile(**kw) -> Profile:
    base = dict(model="Hand", source="analyzed", device="meta", device_description="meta device (no execution)",
                dtype="fp32", batch_size=4, torch_version="2.13.0", parameters=25_000_000,
                parameter_bytes=100_000_000, buffer_bytes=0, forward_flops=10**12, train_flops=3 * 10**12,
                ops=(MM, ADD, VIEW), train_ops=(MM3,))
    base.update(kw)
    return Profile(**base)


# ---- the roofline by hand ------------------------------------------------------------------------


def test_roofline_time_by_hand():
    t, classes = roofline_time((MM, ADD, VIEW), TOY, "fp32")
    assert t == pytest.approx(0.014, rel=1e-12)  # 10 ms (compute-bound) + 4 ms (memory-bound); view ignored
    assert set(classes) == {"matmul", "memory"}
    assert classes["matmul"]["time_s"] == pytest.approx(0.010)
    assert classes["matmul"]["compute_s"] == pytest.approx(0.010)
    assert classes["matmul"]["memory_s"] == pytest.approx(0.001)
    assert classes["matmul"]["bound"] == "compute"
    assert classes["memory"]["time_s"] == pytest.approx(0.004)
    assert classes["memory"]["compute_s"] == 0.0
    assert classes["memory"]["bound"] == "memory"


def test_roofline_counts_calls_and_uses_the_dtype_peak_and_byte_scale():
    t, _ = roofline_time((MM3,), TOY, "fp32")
    assert t == pytest.approx(0.030)  # 3 x 10 ms
    # bf16 peak 200 TFLOP/s and half the bytes: mm max(5 ms, 0.5 ms) = 5 ms; add 2e9 / 1e12 = 2 ms
    t, classes = roofline_time((MM, ADD), TOY, "bf16", bytes_scale=0.5)
    assert t == pytest.approx(0.007)
    assert classes["memory"]["memory_s"] == pytest.approx(0.002)


def test_memory_bound_matmul():
    # 1e9 FLOPs (10 us) but 1e10 bytes (10 ms): memory-bound
    t, classes = roofline_time((OpRecord("aten.mm", "matmul", 2, 10**9, 10**10),), TOY, "fp32")
    assert t == pytest.approx(0.020)
    assert classes["gemv"]["bound"] == "memory"  # a memory-bound matmul is priced as a "gemv" kernel


def test_empty_ops_take_no_time():
    assert roofline_time((), TOY, "fp32") == (0.0, {})
    assert roofline_time((VIEW,), TOY, "fp32") == (0.0, {})


def test_project_default_efficiency_for_analyzed_profiles():
    from profilers import calibration

    pr = project(hand_profile(), TOY)
    # a GPU reads the calibration: Toy has no rows and no generation, so the all-device fit
    lk = calibration.load().lookup(TOY, "eager")
    em, ee = lk.efficiency["matmul"], lk.efficiency["memory"]
    assert pr.efficiency == {"matmul": em, "memory": ee}
    assert pr.latency_s == pytest.approx(0.010 / em + 0.004 / ee)  # both kernels far above the overhead
    assert pr.train_step_s == pytest.approx(0.030 / em)
    assert pr.throughput_per_s == pytest.approx(4 / pr.latency_s)
    assert pr.bound == {"matmul": "compute", "memory": "memory"}
    assert pr.dtype == "fp32" and pr.device == "Toy" and pr.batch_size == 4 and pr.model == "Hand"
    assert "no published eager rows for Toy or its generation" in pr.efficiency_source
    assert pr.efficiency_source in pr.provenance and pr.runtime == "eager" and pr.kernels == 2
    lo, hi = pr.latency_band_s
    assert lo == pytest.approx(pr.latency_s * lk.band[0]) and hi == pytest.approx(pr.latency_s * lk.band[1])
    assert DEFAULT_EFFICIENCY == 0.5  # what a CPU other than this one gets (no rows for CPUs)


@pytest.mark.parametrize("e", [1.0, 0.7, 0.25, 1])
def test_project_divides_by_a_given_efficiency(e):
    pr = project(hand_profile(), TOY, efficiency=e)
    assert pr.latency_s == pytest.approx(0.014 / e, rel=1e-12)
    assert pr.train_step_s == pytest.approx(0.030 / e, rel=1e-12)
    assert pr.efficiency == {"matmul": float(e), "memory": float(e)}
    assert pr.efficiency_source == "given by the caller"
    assert pr.latency_band_s is None and any("no error band" in n for n in pr.notes)


def test_project_bf16_scales_bytes_and_uses_the_bf16_peak():
    pr = project(hand_profile(), TOY, "bf16", efficiency=1.0)
    assert pr.latency_s == pytest.approx(0.007)  # see test_roofline_counts_calls_and_uses_the_dtype_peak...
    assert pr.train_step_s == pytest.approx(0.015)  # 3 x max(5 ms, 0.5 ms)
    assert pr.parameter_bytes == 50_000_000  # fp32 -> bf16 halves the bytes
    assert pr.forward_flops == 10**12 and pr.train_flops == 3 * 10**12  # FLOPs do not change


def test_project_memory_of_an_analyzed_profile():
    p = hand_profile(ops=(MM, ADD), gradient_bytes=100_000_000, optimizer_state_bytes=200_000_000,
                     activation_bytes=50_000_000)
    pr = project(p, TOY, efficiency=1.0)
    # inference: weights + the largest op's operands = 1e8 + 4e9
    assert pr.peak_memory_bytes == 100_000_000 + 4 * 10**9
    # training: weights + gradients + optimizer state + activations = 1e8 + 1e8 + 2e8 + 5e7
    assert pr.train_peak_memory_bytes == 450_000_000
    assert pr.memory_capacity_bytes == 10**9
    assert pr.fits_memory is False  # 4.1 GB > 1 GB
    small = project(hand_profile(ops=(OpRecord("aten.mm", "matmul", 1, 10**9, 10**6),)), TOY, efficiency=1.0)
    assert small.peak_memory_bytes == 100_000_000 + 10**6 and small.fits_memory is True
    assert small.train_peak_memory_bytes is None  # no activation figure: nothing derived
    # bf16: everything scales by 0.5 except the fp32 optimizer state
    pr16 = project(p, TOY, "bf16", efficiency=1.0)
    assert pr16.train_peak_memory_bytes == 50_000_000 + 50_000_000 + 200_000_000 + 25_000_000


def test_project_memory_of_a_measured_profile_scales_the_peaks():
    p = hand_profile(source="measured", device="A100-80GB", device_description="cuda: A100",
                     latency=_timing(0.028), train_step=_timing(0.06), peak_memory_bytes=1000,
                     train_peak_memory_bytes=3000)
    pr = project(p, TOY, "bf16", efficiency=0.5)
    assert (pr.peak_memory_bytes, pr.train_peak_memory_bytes) == (500, 1500)
    assert "measured peaks x 0.5" in pr.notes[0]


def test_projection_json_round_trip():
    pr = project(hand_profile(), TOY)
    d = to_json_dict(pr)
    assert d["type"] == "projection" and d["version"] == 1
    back = from_json_dict(d)
    assert back == pr and isinstance(back, Projection)
    assert loads(dumps(pr)) == pr


# ---- calibration ---------------------------------------------------------------------------------------


def test_calibrate_by_hand_on_a_given_device():
    p = hand_profile(source="measured", device="Toy", device_description="Toy", latency=_timing(0.028),
                     train_step=_timing(0.12), peak_memory_bytes=1, train_peak_memory_bytes=2)
    # inference: roofline 14 ms / measured 28 ms = 0.5; train: 30 ms / 120 ms = 0.25
    assert calibrate(p, TOY) == pytest.approx({"inference": 0.5, "train": 0.25})
    # faster than the roofline: capped at 1
    fast = hand_profile(source="measured", device="Toy", device_description="Toy", latency=_timing(0.007))
    assert calibrate(fast, TOY) == {"inference": 1.0}


def test_calibrate_needs_a_measured_profile():
    with pytest.raises(ConfigError, match=r"^calibrate\.profile\.source must be 'measured' .*; got 'analyzed'\.$"):
        calibrate(hand_profile(), TOY)
    with pytest.raises(ConfigError, match=r"^calibrate\.profile\.source must be 'measured'"):
        project(hand_profile(), TOY, efficiency="calibrated")


def test_calibrate_looks_up_only_the_host():
    p = hand_profile(source="measured", device="A100-80GB", device_description="cuda: A100", latency=_timing(0.03))
    with pytest.raises(ConfigError, match=r"^calibrate\.device must be the DeviceSpec of 'A100-80GB'"):
        calibrate(p)


@pytest.fixture(scope="module")
def host_profile() -> Profile:
    import torch
    from torch import nn

    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    return measure(m, torch.randn(32, 64), time_cap_s=0.2, min_runs=5, warmup=1)


def test_calibrated_efficiency_of_a_measured_host_profile(host_profile):
    eff = calibrate(host_profile)
    assert set(eff) == {"inference", "train"}
    assert all(0 < v <= 1 for v in eff.values())
    # by definition, projecting back onto the host reproduces the measured medians
    pr = project(host_profile, "host")
    assert set(pr.efficiency.values()) == {eff["inference"]} and pr.overhead_s == 0.0
    assert pr.efficiency_source.startswith("calibrated on ")
    assert math.isclose(pr.latency_s, host_profile.latency.median_s, rel_tol=1e-9)
    assert math.isclose(pr.train_step_s, host_profile.train_step.median_s, rel_tol=1e-9)
    assert pr.peak_memory_bytes == host_profile.peak_memory_bytes  # same dtype: scale 1


def test_projection_of_a_host_profile_onto_a_gpu(host_profile):
    # a measurement on this CPU calibrates only this CPU: a GPU reads the calibration against
    # published measurements (the rule the search uses, so `sigmastar profile` and `sigmastar search`
    # give one answer)
    from profilers import calibration

    pr = project(host_profile, "H100-SXM")
    assert pr.device == "H100-SXM" and pr.dtype == "fp32"
    assert pr.provenance.startswith("projected for H100-SXM (fp32, eager runtime) from the measured profile of "
                                    "Sequential")
    lk = calibration.load().lookup(hardware.get("H100-SXM"), "eager")
    assert pr.efficiency == {k: v for k, v in lk.efficiency.items() if k in pr.efficiency}
    assert lk.source in pr.provenance and "calibrated on " not in pr.provenance
    assert "calibrated on " in project(host_profile, "host").provenance
    assert host_profile.provenance in pr.provenance
    assert hardware.get("H100-SXM").source in pr.provenance
    # a far larger roofline, but 3 eager kernels (addmm, relu, addmm) of launch overhead: slower than this
    # CPU's measurement
    assert pr.latency_s == pytest.approx(pr.kernels * pr.overhead_s) and pr.kernels == 3
    assert pr.fits_memory is True
    pr16 = project(host_profile, "H100-SXM", "bf16")
    assert pr16.parameter_bytes == host_profile.parameter_bytes // 2
    assert pr16.peak_memory_bytes == host_profile.peak_memory_bytes // 2


def test_bf16_host_profile_projects_onto_a_gpu():
    import torch
    from torch import nn

    if hardware.get("host").supports("bf16"):
        pytest.skip("this host lists a bf16 peak: the bug needs a host without one")
    p = measure(nn.Linear(16, 8), torch.randn(4, 16), dtype="bf16", train=False, time_cap_s=0.1, min_runs=5)
    assert p.dtype == "bf16" and p.device == "host"
    pr = project(p, "H100-SXM")  # a supported dtype on the target device
    assert pr.latency_s > 0 and "efficiency" in pr.provenance


@pytest.fixture(scope="module")
def llama7b() -> Profile:
    return analyze("llama-2-7b", seq_len=16, train=False)  # bf16, 6.74 B parameters, meta device


def test_huge_analyzed_model_does_not_fit_a_small_device(llama7b):
    t4 = project(llama7b, "T4", "fp32")  # 6.74e9 x 4 B = 27 GB > 16 GB
    assert t4.parameter_bytes == 2 * llama7b.parameter_bytes
    assert t4.fits_memory is False and t4.memory_capacity_bytes == 16 * 10**9
    h100 = project(llama7b, "H100-SXM")  # 13.5 GB of bf16 weights in 80 GB
    assert h100.fits_memory is True
    for pr in (t4, h100):
        assert "published_measurements.csv" in pr.provenance and pr.calibration_rows
        assert "analyzed profile of llama-2-7b" in pr.provenance
    assert h100.provenance.startswith("projected for H100-SXM (bf16, eager runtime)")
    assert h100.latency_s > 0 and h100.train_step_s is None  # train=False: no training figure


# ---- bad input -------------------------------------------------------------------------------------


def test_unsupported_dtype_names_the_device_and_its_dtypes():
    with pytest.raises(ConfigError) as info:
        project(hand_profile(), "T4", "bf16")
    assert str(info.value) == ("DeviceSpec['T4'].dtype must be one of the dtypes this device supports: "
                               "fp32, fp16, int8; got 'bf16'.")


def test_unknown_device_lists_the_catalog():
    with pytest.raises(ConfigError) as info:
        project(hand_profile(), "Z100")
    msg = str(info.value)
    assert msg.startswith("hardware.device must be one of T4, ")
    assert "H100-SXM" in msg and "'host'" in msg and msg.endswith("; got 'Z100'.")


def test_unknown_dtype():
    with pytest.raises(ConfigError, match=r"^project\.dtype must be None \(each op at its own dtype\) or one of fp32, "
                       r"tf32, bf16, fp16, fp8, int8, int4; got 'fp64'\.$"):
        project(hand_profile(), TOY, "fp64")


@pytest.mark.parametrize("e", [0, 0.0, -0.5, 1.5, math.nan, math.inf, True, "fast", [0.5]])
def test_efficiency_out_of_range(e):
    with pytest.raises(ConfigError) as info:
        project(hand_profile(), TOY, efficiency=e)
    assert str(info.value) == ("project.efficiency must be a number in (0, 1], {'inference': e, 'train': e}, "
                               f"'calibrated' or None; got {e!r}.")


def test_project_needs_a_profile():
    with pytest.raises(ConfigError, match=r"^project\.profile must be a Profile .*; got 'dict'\.$"):
        project({"model": "x"}, TOY)


# ---- per-op precision ------------------------------------------------------------------------------

# A toy GPU with an int8 peak: 100 TFLOP/s fp32, 400 TOP/s int8, 1000 GB/s; no bf16.
TOY8 = DeviceSpec(name="Toy8", kind="gpu", vendor="test", peak_tflops={"fp32": 100.0, "int8": 400.0}, memory_gb=1.0,
                  memory_bandwidth_gbps=1000.0, source="test fixture", date="2026-01-01")
# a conv net whose only Linear was quantized (int8 x int8): the conv stays fp32
CONV = OpRecord("aten.convolution", "conv", 1, 4 * 10**12, 10**9, "fp32")  # max(4e12 / 1e14, 1e9 / 1e12) = 40 ms
LIN8 = OpRecord("aten._int_mm", "matmul", 1, 4 * 10**11, 10**8, "int8")  # max(4e11 / 4e14, 1e8 / 1e12) = 1 ms


def test_each_op_is_priced_at_its_own_dtype():
    p = hand_profile(dtype="int8", ops=(CONV, LIN8), train_ops=())
    # per op: 40 ms (conv at the fp32 peak) + 1 ms (int8 matmul at the int8 peak) = 41 ms at efficiency 1
    assert project(p, TOY8, efficiency=1.0).latency_s == pytest.approx(0.041)
    # the old all-int8 answer is now the explicit cast what-if: conv 4e12 / 4e14 = 10 ms, bytes x 1 (int8 over
    # the profile's int8 label) -> max(10 ms, 1 ms) + max(1 ms, 0.1 ms) = 11 ms
    cast = project(p, TOY8, "int8", efficiency=1.0)
    assert cast.latency_s == pytest.approx(0.011)
    assert "each op at its own dtype: fp32 x 1 op signature, int8 x 1 op signature" in \
        project(p, TOY8, efficiency=1.0).provenance
    assert "every op cast to int8 (a what-if" in cast.provenance


def test_a_device_without_the_peak_of_a_compute_op_cannot_run_it_but_element_wise_work_can():
    bf16_mm = OpRecord("aten.mm", "matmul", 1, 10**12, 10**9, "bf16")
    bf16_add = OpRecord("aten.add", "memory", 1, 0, 2 * 10**9, "bf16")
    with pytest.raises(ConfigError, match=r"^DeviceSpec\['Toy8'\]\.dtype must be one of the dtypes this device "
                                          r"supports: fp32, int8; got 'bf16'\.$"):
        project(hand_profile(dtype="bf16", ops=(bf16_mm,), train_ops=()), TOY8)
    # an element-wise bf16 op on a device without a bf16 peak: bandwidth-bound, 2e9 / 1e12 = 2 ms
    assert project(hand_profile(dtype="bf16", ops=(bf16_add,), train_ops=()), TOY8, efficiency=1.0).latency_s \
        == pytest.approx(0.002)


def test_count_flops_records_each_ops_compute_dtype():
    import torch

    from profilers import count_flops
    from profilers.flops import compute_dtype

    assert compute_dtype([torch.zeros(2, dtype=torch.int8), torch.zeros(2, dtype=torch.int8)]) == "int8"
    assert compute_dtype([torch.zeros(2), torch.zeros(2, dtype=torch.int8)]) == "fp32"  # weight-only int8
    assert compute_dtype([torch.zeros(2, dtype=torch.float8_e4m3fn), torch.zeros(1)]) == "fp8"  # fp32 scales
    assert compute_dtype([torch.zeros(2, dtype=torch.bfloat16), torch.zeros(2)]) == "fp32"
    assert compute_dtype([torch.zeros(2, dtype=torch.long)]) == ""
    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4).to(torch.bfloat16))
    # each layer in its own dtype (the second one's input cast by hand, as a mixed model does)
    mixed = torch.nn.Sequential(net[0], _Cast(net[1]))
    ops = count_flops(mixed, torch.randn(2, 4)).ops
    dtypes = {r.dtype for r in ops if r.op == "aten.addmm"}
    assert dtypes == {"fp32", "bf16"}


class _Cast(__import__("torch").nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        import torch

        return self.layer(x.to(torch.bfloat16)).float()


def test_a_profile_at_another_batch_is_derived_not_measured():
    import torch

    from profilers import count_flops
    from profilers.projection import at_batch

    net = torch.nn.Linear(8, 4)
    p = measure(net, torch.randn(2, 8), train=False, time_cap_s=0.05, min_runs=3, device="cpu")
    q = at_batch(p, count_flops(net, torch.randn(16, 8)), 16)
    assert p.source == "measured" and q.source == "derived" and q.latency is None
    assert "derived at batch 16 from a profile measured on" in q.provenance
    proj = project(q, "H100-SXM", efficiency=0.5)
    assert "from the derived profile" in proj.provenance and "measured peaks" not in proj.notes[0]
    assert "peaks derived from a measurement at another batch" in proj.notes[0]
    with pytest.raises(ConfigError, match=r"^at_batch\.profile\.source must be 'measured' or 'derived'"):
        at_batch(hand_profile(), count_flops(net, torch.randn(16, 8)), 16)
