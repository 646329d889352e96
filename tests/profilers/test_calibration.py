"""profilers.calibration and the runtime model of profilers.project: fused vs eager attention traffic
on a hand-sized example, the overhead floor, the fit on a toy table with a known answer, the
shipped calibration (refit = shipped, lookup and its labels, bands)."""

from __future__ import annotations

import json
import math
from importlib import resources

import pytest
import torch
from torch import nn

from profilers import ConfigError, Profile, count_flops, hardware, project
from profilers import calibration as cal
from profilers.hardware import DeviceSpec
from profilers.profile import OpRecord
from profilers.projection import kernel_table, kernel_time

# 100 TFLOP/s fp32, 1000 GB/s
TOY = DeviceSpec(name="Toy", kind="gpu", vendor="test", peak_tflops={"fp32": 100.0}, memory_gb=1.0,
                 memory_bandwidth_gbps=1000.0, generation="toygen", source="test fixture", date="2026-01-01")


class TinyAttention(nn.Module):
    """Attention as transformers runs it eagerly: QK^T, softmax, PV, inside a module named *Attention."""

    def forward(self, q, k, v):
        scores = torch.matmul(q, k.transpose(-1, -2))
        return torch.matmul(scores.softmax(-1), v)


def test_attention_matmuls_record_their_score_matrix_as_onchip_bytes():
    # b=1, s=8, d=4, fp32. QK^T: q 8x4 (128 B) + k^T 4x8 (128 B) read, scores 8x8 (256 B) written:
    # 512 B, of which the 256 B score matrix stays on chip in a fused kernel. PV: P 8x8 (256 B) +
    # v 8x4 (128 B) read, out 8x4 (128 B) written: 512 B, P (256 B) on chip.
    q = k = v = torch.zeros(1, 8, 4)
    fc = count_flops(TinyAttention(), (q, k, v))
    mm = [r for r in fc.ops if r.op_class == "matmul"]
    assert sum(r.calls for r in mm) == 2
    assert all(r.bytes == 512 and r.onchip_bytes == 256 for r in mm)
    soft = [r for r in fc.ops if "softmax" in r.op]
    assert soft and all(r.onchip_bytes == 0 for r in soft)
    # the same products outside an attention module are ordinary matmuls
    class Plain(nn.Module):
        forward = TinyAttention.forward

    assert all(r.onchip_bytes == 0 for r in count_flops(Plain(), (q, k, v)).ops)


def test_fused_runtime_drops_score_traffic_and_elementwise_kernels():
    ops = (OpRecord("aten.bmm", "matmul", 2, 0, 512, "fp32", 256),  # the two attention products above
           OpRecord("aten._softmax", "memory", 1, 0, 512, "fp32"),
           OpRecord("aten.view", "free", 3, 0, 0))
    eager = kernel_table(ops, TOY, "eager")
    fused = kernel_table(ops, TOY, "fused")
    # eager: 2 matmul kernels of 512 B + 1 softmax of 512 B, each 512 / 1e12 s; a matmul whose bytes
    # outweigh its FLOPs (here it has none) is priced as a bandwidth-bound "gemv"
    assert eager == [("gemv", 2, 0.0, 512e-12), ("memory", 1, 0.0, 512e-12)]
    # fused: one attention entry paying 512 - 256 B per product; softmax fused away
    assert fused == [("attention", 2, 0.0, 256e-12)]
    with pytest.raises(ConfigError, match="runtime"):
        kernel_table(ops, TOY, "tensorrt")


def test_no_projection_beats_kernels_times_overhead():
    # three tiny kernels: roofline 1e9 FLOP / 1e14 = 10 us each at e = 1; overhead 40 us each
    ks = [("matmul", 3, 1e-5, 1e-7)]
    assert kernel_time(ks, {"matmul": 1.0}, 40e-6) == pytest.approx(3 * 40e-6)
    # a big kernel is above the floor: 3 x 10 ms / 0.5
    assert kernel_time([("matmul", 3, 1e-2, 0.0)], {"matmul": 0.5}, 40e-6) == pytest.approx(0.06)
    # through project(): a GPU projection is never below kernels x the calibrated overhead
    prof = Profile(model="Tiny", source="analyzed", device="meta", device_description="meta", dtype="fp32",
                   batch_size=1, torch_version="2.13.0", parameters=10, parameter_bytes=40, buffer_bytes=0,
                   forward_flops=10, ops=(OpRecord("aten.mm", "matmul", 5, 10, 40, "fp32"),
                                          OpRecord("aten.relu", "memory", 5, 0, 40, "fp32")))
    for rt, kernels in (("eager", 10), ("fused", 5)):
        pr = project(prof, "A100-80GB", runtime=rt)
        assert pr.kernels == kernels and pr.runtime == rt
        assert pr.latency_s == pytest.approx(kernels * pr.overhead_s)
        assert any("floor" in n for n in pr.notes)
    with pytest.raises(ConfigError, match="project.runtime"):
        project(prof, "A100-80GB", runtime="trt")


def _synthetic(e: dict, o: float, gens: dict):
    """Rows whose published time is exactly the model's at known efficiencies and overhead."""
    rows, kernels = [], []
    i = 0
    for dev, gen in gens.items():
        for scale in (1e-6, 1e-5, 1e-4, 1e-3, 1e-2):
            for mix in (0.02, 0.3, 3.0):  # memory-bound share varies, so both classes are identifiable
                ks = [("matmul", 10, scale, scale / 10), ("memory", 20, 0.0, scale * mix)]
                t = kernel_time(ks, e[dev], o)
                rows.append({"id": i, "device": dev, "generation": gen, "runtime": "eager", "t_published_s": t})
                kernels.append(ks)
                i += 1
    return rows, kernels


def test_fit_recovers_known_efficiencies_and_overhead():
    e = {"D1": {"matmul": 0.6, "memory": 0.8}, "D2": {"matmul": 0.3, "memory": 0.5}}
    rows, ks = _synthetic(e, 20e-6, {"D1": "g", "D2": "g"})
    f = cal.fit(rows, ks, {"eager": 20e-6, "fused": 3e-6})
    assert f.overhead("D1", "eager") == pytest.approx(20e-6, rel=0.02)
    for dev in e:
        got = f.efficiency(dev, "g", "eager")
        for c in ("matmul", "memory"):
            assert got[c] == pytest.approx(e[dev][c], rel=0.03), (dev, c)
    # every row reproduced (the toy data is noise-free)
    for r, k in zip(rows, ks):
        assert cal.predict(f, r, k) == pytest.approx(r["t_published_s"], rel=0.03)
    # a device the fit never saw takes its generation's efficiency (between the two)
    new = f.efficiency("D3", "g", "eager")["matmul"]
    assert 0.3 < new < 0.6


def test_fit_with_a_wrong_overhead_prior_follows_the_rows():
    e = {"D1": {"matmul": 0.5, "memory": 0.5}}
    rows, ks = _synthetic(e, 50e-6, {"D1": "g"})
    f = cal.fit(rows, ks, {"eager": 10e-6, "fused": 3e-6})  # prior 5x too low
    assert f.overhead("D1", "eager") == pytest.approx(50e-6, rel=0.1)


def _shipped() -> dict:
    return json.loads(resources.files("profilers").joinpath("data", "calibration.json").read_text())


def test_shipped_calibration_is_the_fit_of_its_rows():
    d = _shipped()
    assert d["meta"]["rows"] == len(d["rows"]) >= 40
    f = cal.refit(d, cal.calibration_specs())
    shipped = cal.Fit.from_json(d["fit"])
    for k, v in shipped.global_.items():
        assert f.global_[k] == pytest.approx(v, abs=1e-3), k
    for k, v in shipped.overhead_s.items():
        assert f.overhead_s[k] == pytest.approx(v, rel=1e-3), k
    # every row was predicted out of sample, and the bands bracket 1
    assert set(d["validation"]["loo_s"]) == {str(r["id"]) for r in d["rows"]}
    for which in d["bands"].values():
        for lo, hi in which.values():
            assert 0 < lo <= 1 <= hi
    # the rows name their published source and are on catalog or calibration-only devices
    specs = cal.calibration_specs()
    assert all(r["device"] in specs and r["source"] for r in d["rows"])


def test_lookup_names_its_rows_and_falls_back_to_the_generation():
    c = cal.load()
    d_rows = {r["device"] for r in c.rows}
    with_rows = next(n for n in ("A100-80GB", "T4", "H100-SXM") if n in d_rows)
    lk = c.lookup(hardware.get(with_rows), "fused")
    assert lk.rows and f"of {with_rows}" in lk.source and "leave-one-out" in lk.source
    pr = project(Profile(model="M", source="analyzed", device="meta", device_description="meta", dtype="fp16",
                         batch_size=1, torch_version="2.13.0", parameters=1, parameter_bytes=2, buffer_bytes=0,
                         forward_flops=2 * 10**12,
                         ops=(OpRecord("aten.mm", "matmul", 1, 2 * 10**12, 10**8, "fp16"),)), with_rows,
                 runtime="fused")
    assert pr.calibration_rows == lk.rows
    lo, hi = pr.latency_band_s
    assert lo <= pr.latency_s <= hi
    assert str(lk.rows[0]) in pr.provenance and "measured" not in pr.provenance.split("from the")[0]
    # A10G has no fused rows of its own: the ampere generation's fit, said so, with the wider band
    assert not any(r["device"] == "A10G" and r["runtime"] == "fused" for r in c.rows)
    a10g = c.lookup(hardware.get("A10G"), "fused")
    assert "no published fused rows for A10G" in a10g.source and "ampere" in a10g.source
    assert a10g.band == tuple(c.bands["device without rows"]["fused"])
    # a generation without rows: the all-device fit
    b200 = c.lookup(hardware.get("B200"), "fused")
    assert "or its generation" in b200.source
    with pytest.raises(ConfigError, match="runtime"):
        c.lookup(hardware.get("T4"), "onnx")


def test_parallel_model_reads_the_calibration():
    from profilers.parallel.timing import TimeModel, gemm_efficiency

    from profilers.parallel.calibration import training

    # the training calibration's fit (its prior: the inference calibration's fused matmul efficiency)
    e = gemm_efficiency(hardware.get("A100-80GB"), TimeModel())
    assert e == pytest.approx(training().efficiency_by_device["A100-80GB"])
    assert training().prior_by_device["A100-80GB"] == pytest.approx(
        cal.load().lookup(hardware.get("A100-80GB"), "fused").efficiency["matmul"])
    assert gemm_efficiency(hardware.get("A100-80GB"), TimeModel(efficiency=0.4)) == 0.4
    assert math.isfinite(e) and 0 < e <= 1
