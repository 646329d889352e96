"""Validate profilers.parallel against published Megatron-LM runs on A100 clusters.

    python benchmarks/megatron_validation.py            # print the tables
    python benchmarks/megatron_validation.py --fit      # also scan the efficiency that would fit these rows
    python benchmarks/megatron_validation.py --write    # (re)write its sections of results/parallel.md

Published figures and where they come from:

* Narayanan et al. 2021, "Efficient Large-Scale Language Model Training on GPU Clusters Using
  Megatron-LM" (SC'21, arXiv:2104.04473v5), **Table 1** (weak scaling, GPT, V=51200, s=2048,
  A100-80GB on Selene): heads, hidden, layers, t, p, GPUs, batch, achieved TFLOP/s per GPU. The
  paper's per-GPU throughput is FLOPs (eq. 3, :func:`profilers.parallel.megatron_flops`, which
  counts full recomputation) / (GPUs x iteration time), so the published iteration time is
  ``F / (n * X)``. **Table 2** (PTD-P vs ZeRO-3, 174.6B and 529.6B) the same way.
  (Transcribed from the paper; the rows match two independent public transcriptions.)
* Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models"
  (arXiv:2205.05198): **Table 5** end-to-end iteration times (full recompute vs sequence parallel
  + selective recompute) for 22B/175B/530B/1T; **Table 4** per-layer forward/backward times of the
  22B model; sec. 6.3: 530B on 2240 GPUs (dp=8) takes 39.15 s. Model configurations (t=8; p=1, 8,
  35, 64; 8, 64, 280, 512 GPUs; global batch 4, 64, 280, 512) are their Table 3; check: the
  published MFU (41.5/51.4/56.0/56.3 %, also in the Megatron-LM README) at these batch sizes gives
  back the published times within 0.5 %.

Beyond the two papers, for ZeRO-3 as implemented today: torchtitan's published FSDP2 runs
(pytorch/torchtitan ``docs/performance.md``: Llama 2 13B/70B and Llama 3 70B on 64 A100-80GB,
local batch 1-2, tokens/s per GPU "WPS"); iteration time = local batch x seq_len / WPS. Their
cluster's network is not stated; we give it Selene's (DGX A100). torchtitan's "no activation
checkpointing" runs use FlashAttention (SDPA), i.e. our ``recompute="selective"``.

Neither paper tabulates measured memory per device; the memory checks are (1) every published
configuration must be predicted to fit in 80 GB, (2) Narayanan sec. 5.2: 529.6B with ZeRO-3 and
micro-batch 4 did *not* fit on 560 GPUs (they moved to 640), (3) Korthikanti's stated activation
savings (selective recompute: 70 % for GPT-3 175B, 65 % for MT-NLG 530B at t=8).

Unknowns the papers do not list per row, set by one rule for all rows (stated in the output):
micro-batch 1 (Table 1/2 PTD-P rows), interleaving ``v`` = the smallest divisor > 1 of the layers
per stage (both papers use the interleaved schedule), 16-bit training, scatter/gather on.
Implementation facts of the time (not fitted): Megatron-LM 2021 overlapped neither data-parallel
nor tensor-parallel communication; the 2022 code overlaps the backward tensor-parallel all-reduce
with weight-gradient GEMMs (Korthikanti sec. 6.2). ZeRO-3 rows overlap their gathers (DeepSpeed).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from pathlib import Path

from profilers import hardware
from profilers.hardware import DeviceSpec
from profilers.parallel import (
    ParallelConfig, TimeModel, TransformerShape, activation_bytes_per_layer, gemm_efficiency,
    enumerate_configs, evaluate, layer_time, megatron_flops, memory_per_device, plan, step_time,
)

RESULTS = Path(__file__).parent / "results" / "parallel.md"
COMMAND = "python benchmarks/megatron_validation.py --write"
V, S = 51200, 2048


def selene_a100() -> DeviceSpec:
    """A100-80GB SXM as in Selene's DGX A100 nodes (8 GPUs, 8 x HDR 200 Gb/s IB per node)."""
    base = {"name": "A100-80GB (Selene)", "kind": "gpu", "vendor": "NVIDIA",
            "peak_tflops": {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0},
            "memory_gb": 80, "memory_bandwidth_gbps": 2039, "intra_node_gbps": 300,
            "source": "NVIDIA A100 datasheet (SXM4 80GB); Narayanan et al. 2021 sec. 5 (Selene: 8 HDR IB per node)",
            "date": "2021-04"}
    try:  # the catalog row, if present, must agree on the figures we use
        cat = hardware.get("A100-80GB")
        base.update(peak_tflops=dict(cat.peak_tflops), memory_gb=cat.memory_gb,
                    memory_bandwidth_gbps=cat.memory_bandwidth_gbps, intra_node_gbps=cat.intra_node_gbps or 300)
    except Exception:
        pass
    return DeviceSpec(**base, network_gbps=25.0, devices_per_node=8)


def best_layout(shape: TransformerShape, device: DeviceSpec, tm: TimeModel, micro_batches=(1,), **fixed) -> ParallelConfig:
    """The fastest layout that fits with the published degrees fixed and the unpublished knobs
    (micro-batch size where not given, interleaving) chosen by the model, as the authors tuned
    their runs for throughput. Falls back to the smallest-memory choice if none fits."""
    n = fixed["dp"] * fixed["tp"] * fixed["pp"]
    space = dict(max_tp=fixed["tp"], micro_batches=micro_batches, zero_stages=(fixed.get("zero_stage", 0),),
                 recompute=(fixed["recompute"],), sequence_parallel=(fixed.get("sequence_parallel", False),),
                 precision=fixed.get("precision", "bf16"))
    cands = [c for c in enumerate_configs(shape, n, fixed["global_batch"], **space)
             if (c.dp, c.tp, c.pp) == (fixed["dp"], fixed["tp"], fixed["pp"])]
    scored = [evaluate(shape, c, device, time_model=tm) for c in cands]
    ok = [c for c in scored if c.memory.fits]
    if ok:
        return min(ok, key=lambda c: c.time.total_s).config
    return min(scored, key=lambda c: c.memory.total_bytes).config


# ---- published rows -------------------------------------------------------------------------
# Narayanan Table 1: (params B, heads, hidden, layers, tp, pp, GPUs, batch, TFLOP/s per GPU)
NARAYANAN_T1 = [
    (1.7, 24, 2304, 24, 1, 1, 32, 512, 137), (3.6, 32, 3072, 30, 2, 1, 64, 512, 138),
    (7.5, 32, 4096, 36, 4, 1, 128, 512, 142), (18.4, 48, 6144, 40, 8, 1, 256, 1024, 135),
    (39.1, 64, 8192, 48, 8, 2, 512, 1536, 138), (76.1, 80, 10240, 60, 8, 4, 1024, 1792, 140),
    (145.6, 96, 12288, 80, 8, 8, 1536, 2304, 148), (310.1, 128, 16384, 96, 8, 16, 1920, 2160, 155),
    (529.6, 128, 20480, 105, 8, 35, 2520, 2520, 163), (1008.0, 160, 25600, 128, 8, 64, 3072, 3072, 163),
]
# Narayanan Table 2: (scheme, params B, heads, hidden, layers, tp, pp, GPUs, batch, micro-batch, TFLOP/s)
NARAYANAN_T2 = [
    ("PTD-P", 174.6, 96, 12288, 96, 8, 12, 384, 1536, 1, 153), ("PTD-P", 174.6, 96, 12288, 96, 8, 12, 768, 1536, 1, 149),
    ("PTD-P", 174.6, 96, 12288, 96, 8, 12, 1536, 1536, 1, 141), ("PTD-P", 529.6, 128, 20480, 105, 8, 35, 560, 2240, 1, 171),
    ("PTD-P", 529.6, 128, 20480, 105, 8, 35, 1120, 2240, 1, 167), ("PTD-P", 529.6, 128, 20480, 105, 8, 35, 2240, 2240, 1, 159),
    ("ZeRO-3", 174.6, 96, 12288, 96, 1, 1, 384, 1536, 4, 144), ("ZeRO-3", 174.6, 96, 12288, 96, 2, 1, 768, 1536, 2, 88),
    ("ZeRO-3", 174.6, 96, 12288, 96, 1, 1, 1536, 1536, 1, 44), ("ZeRO-3", 529.6, 128, 20480, 105, 1, 1, 640, 2560, 4, 138),
    ("ZeRO-3", 529.6, 128, 20480, 105, 2, 1, 1120, 2240, 2, 98), ("ZeRO-3", 529.6, 128, 20480, 105, 1, 1, 2240, 2240, 1, 48),
]
# Korthikanti Table 3 configs + Table 5 times: (name, heads, hidden, layers, tp, pp, GPUs, batch, micro, full s, present s)
KORTHIKANTI_T5 = [
    ("22B", 64, 6144, 48, 8, 1, 8, 4, 4, 1.42, 1.10), ("175B", 96, 12288, 96, 8, 8, 64, 64, 1, 18.13, 13.75),
    ("530B", 128, 20480, 105, 8, 35, 280, 280, 1, 49.05, 37.83), ("1T", 160, 25600, 128, 8, 64, 512, 512, 1, 94.42, 71.49),
]
# torchtitan docs/performance.md, FSDP2 on 64 A100-80GB: (name, shape kwargs, local batch, recompute, WPS)
TORCHTITAN = [
    ("Llama-2-13B, no AC", dict(layers=40, hidden=5120, heads=40, ffn_hidden=13824, vocab=32000, seq_len=4096), 2, "selective", 2162),
    ("Llama-2-70B, full AC", dict(layers=80, hidden=8192, heads=64, kv_heads=8, ffn_hidden=28672, vocab=32000, seq_len=4096), 2, "full", 353),
    ("Llama-3-70B, full AC", dict(layers=80, hidden=8192, heads=64, kv_heads=8, ffn_hidden=28672, vocab=128256, seq_len=8192), 1, "full", 331),
]
# Korthikanti Table 4, 22B per layer (ms): (experiment, recompute, sequence parallel, forward, backward)
KORTHIKANTI_T4 = [
    ("baseline, no recompute", "none", False, 7.7, 11.9), ("sequence parallelism", "none", True, 7.2, 11.8),
    ("baseline, full recompute", "full", False, 7.7, 19.5), ("selective recompute", "selective", False, 7.7, 13.2),
    ("selective + sequence parallel", "selective", True, 7.2, 13.1),
]


def gpt(layers: int, hidden: int, heads: int) -> TransformerShape:
    return TransformerShape(layers=layers, hidden=hidden, heads=heads, vocab=V, seq_len=S, layout="gpt")


def time_rows(eff: float, device: DeviceSpec) -> list[dict]:
    """Every published iteration time with its prediction."""
    tm21 = TimeModel(efficiency=eff, overlap_dp_comm=False, overlap_tp_comm="none", flash_attention=False)
    tm22 = TimeModel(efficiency=eff, overlap_dp_comm=False, overlap_tp_comm="backward", flash_attention=False)
    rows = []
    for pb, a, h, l, t, p, n, b, x in NARAYANAN_T1:
        cfg = best_layout(gpt(l, h, a), device, tm21, micro_batches=(1, 2, 4), dp=n // (t * p), tp=t, pp=p,
                          global_batch=b, recompute="full", precision="fp16")
        rows.append(dict(src="Narayanan T1", name=f"{pb}B", shape=gpt(l, h, a), cfg=cfg, tm=tm21,
                         published=megatron_flops(l, h, V, S, b) / (n * x * 1e12), note=f"{x} TFLOP/s/GPU"))
    for scheme, pb, a, h, l, t, p, n, b, mb, x in NARAYANAN_T2:
        z3 = scheme == "ZeRO-3"
        tm = dataclasses.replace(tm21, overlap_dp_comm=True) if z3 else tm21
        cfg = best_layout(gpt(l, h, a), device, tm, micro_batches=(mb,), dp=n // (t * p), tp=t, pp=p, global_batch=b,
                          recompute="full", zero_stage=3 if z3 else 0, precision="fp16")
        rows.append(dict(src=f"Narayanan T2 {scheme}", name=f"{pb}B/{n}", shape=gpt(l, h, a), cfg=cfg, tm=tm,
                         published=megatron_flops(l, h, V, S, b) / (n * x * 1e12), note=f"{x} TFLOP/s/GPU"))
    for name, a, h, l, t, p, n, b, mb, full, present in KORTHIKANTI_T5:
        for rc, sp, pub in (("full", False, full), ("selective", True, present)):
            cfg = best_layout(gpt(l, h, a), device, tm22, micro_batches=(mb,), dp=n // (t * p), tp=t, pp=p,
                              global_batch=b, recompute=rc, sequence_parallel=sp)
            rows.append(dict(src="Korthikanti T5", name=f"{name} {'full recompute' if rc == 'full' else 'SP+selective'}",
                             shape=gpt(l, h, a), cfg=cfg, tm=tm22, published=pub, note=""))
    cfg = best_layout(gpt(105, 20480, 128), device, tm22, dp=8, tp=8, pp=35, global_batch=2240,
                      recompute="selective", sequence_parallel=True)
    rows.append(dict(src="Korthikanti 6.3", name="530B dp=8 SP+selective", shape=gpt(105, 20480, 128), cfg=cfg,
                     tm=tm22, published=39.15, note="2240 GPUs"))
    for name, kw, mb, rc, wps in TORCHTITAN:
        shp = TransformerShape(**kw, layout="llama", tied_embeddings=False, dropout=False, name=name)
        cfg = ParallelConfig(dp=64, zero_stage=3, micro_batch=mb, global_batch=64 * mb, recompute=rc)
        rows.append(dict(src="torchtitan FSDP2", name=name, shape=shp, cfg=cfg, tm=TimeModel(efficiency=eff),
                         published=mb * kw["seq_len"] / wps, note=f"{wps} tokens/s/GPU"))
    for r in rows:
        st = step_time(r["shape"], r["cfg"], device, r["tm"])
        r.update(predicted=st.total_s, st=st, err=st.total_s / r["published"] - 1,
                 mem=memory_per_device(r["shape"], r["cfg"], device))
    return rows


def layer_rows(eff: float, device: DeviceSpec) -> list[dict]:
    tm = TimeModel(efficiency=eff, overlap_tp_comm="backward", flash_attention=False, step_overhead_s=0.0)
    out = []
    for name, rc, sp, f_ms, b_ms in KORTHIKANTI_T4:
        cfg = ParallelConfig(tp=8, micro_batch=4, global_batch=4, recompute=rc, sequence_parallel=sp)
        lt = layer_time(gpt(48, 6144, 64), cfg, device, tm)
        out.append(dict(name=name, pub_f=f_ms, pub_b=b_ms, f=lt.forward_s * 1e3, b=lt.backward_s * 1e3,
                        err=(lt.total_s * 1e3) / (f_ms + b_ms) - 1))
    return out


def memory_rows(device: DeviceSpec) -> list[dict]:
    out = []
    z3 = lambda n, b: ParallelConfig(dp=n, micro_batch=4, global_batch=b, recompute="full", zero_stage=3, precision="fp16")
    for n, b, published in ((560, 2240, False), (640, 2560, True)):
        m = memory_per_device(gpt(105, 20480, 128), z3(n, b), device)
        out.append(dict(name=f"529.6B ZeRO-3, micro-batch 4, {n} GPUs", published="fits" if published else "does not fit",
                        predicted=f"{m.total_bytes / 1e9:.1f} GB of {m.usable_bytes / 1e9:.0f} usable: {'fits' if m.fits else 'does not fit'}",
                        ok=m.fits == published))
    for name, l, h, a, claim in (("GPT-3 175B", 96, 12288, 96, 0.70), ("MT-NLG 530B", 105, 20480, 128, 0.65)):
        shp = gpt(l, h, a)
        base = activation_bytes_per_layer(shp, 1, 1, False, "none")
        sel = activation_bytes_per_layer(shp, 1, 1, False, "selective")
        out.append(dict(name=f"{name}: activation memory saved by selective recompute (sec. 5)", published=f"{claim:.0%}",
                        predicted=f"{1 - sel / base:.1%}", ok=abs(1 - sel / base - claim) < 0.01))
    shp = gpt(105, 20480, 128)
    ratio = activation_bytes_per_layer(shp, 1, 8, False, "none") / activation_bytes_per_layer(shp, 1, 8, True, "selective")
    out.append(dict(name="530B, t=8: tensor-parallel baseline / (SP + selective) (abstract: 5x)", published="~5x",
                    predicted=f"{ratio:.1f}x", ok=4.5 <= ratio <= 5.5))
    return out


def _megatron(r: dict) -> bool:
    return "ZeRO-3" not in r["src"] and "torchtitan" not in r["src"]


def calibrated_efficiency() -> float:
    """The catalog A100-80GB's fused-runtime matmul efficiency of the *inference* calibration (fitted to
    single-device rows, not to these runs; the training calibration, which did see them, is validated
    held out by benchmarks/training_fidelity.py)."""
    from profilers.calibration import load

    return load().lookup(hardware.get("A100-80GB"), "fused").efficiency["matmul"]


def fit(device: DeviceSpec) -> tuple[float, float]:
    best = (1.0, 1e9)
    for i in range(45, 81):
        e = i / 100
        worst = max(abs(r["err"]) for r in time_rows(e, device) if _megatron(r))
        worst = max(worst, max(abs(r["err"]) for r in layer_rows(e, device)))
        if worst < best[1]:
            best = (e, worst)
    return best


def llama_shapes() -> list[TransformerShape]:
    return [
        TransformerShape(layers=32, hidden=4096, heads=32, kv_heads=32, ffn_hidden=11008, vocab=32000, seq_len=4096,
                         layout="llama", tied_embeddings=False, dropout=False, name="Llama-2-7B"),
        TransformerShape(layers=80, hidden=8192, heads=64, kv_heads=8, ffn_hidden=28672, vocab=32000, seq_len=4096,
                         layout="llama", tied_embeddings=False, dropout=False, name="Llama-2-70B"),
    ]


# ---- rendering --------------------------------------------------------------------------------
def _pct(x: float) -> str:
    return f"{x * 100:+.1f} %"


def _cfg(c: ParallelConfig) -> str:
    extra = []
    if c.interleave > 1:
        extra.append(f"v={c.interleave}")
    if c.zero_stage:
        extra.append(f"ZeRO-{c.zero_stage}")
    if c.sequence_parallel:
        extra.append("SP")
    extra.append(f"recompute={c.recompute}")
    return f"dp{c.dp} tp{c.tp} pp{c.pp} mb{c.micro_batch} gb{c.global_batch} " + " ".join(extra)


def render_validation(eff: float, device: DeviceSpec) -> str:
    rows, lrows, mrows = time_rows(eff, device), layer_rows(eff, device), memory_rows(device)
    calibrated = eff == calibrated_efficiency()
    core = [r for r in rows if _megatron(r)]
    fitted, fitted_worst = fit(device)
    miss = [r for r in core if abs(r["err"]) > 0.15] + [r for r in lrows if abs(r["err"]) > 0.15]
    lines = [
        "## Parallel training model vs published Megatron-LM runs",
        "",
        f"Command: `{COMMAND}` (profilers.parallel; GEMM efficiency {eff:.3g}: "
        + (f"the A100-80GB fused matmul efficiency of profilers.calibration, fitted to published inference rows, "
           f"not to these runs; the efficiency fitted to these runs is {fitted:g})" if calibrated else "given") + ".",
        f"Device: {device.name}: {device.peak_tflops['fp16']} TFLOP/s fp16/bf16 dense, {device.memory_gb:.0f} GB, "
        f"HBM {device.memory_bandwidth_gbps:.0f} GB/s, NVLink {device.intra_node_gbps:.0f} GB/s per direction, "
        f"{device.network_gbps:.0f} GB/s network per GPU, {device.devices_per_node} per node ({device.source}).",
        "",
        "Published iteration time = published FLOPs / (GPUs x published TFLOP/s per GPU) for Narayanan et al. 2021 "
        "(arXiv:2104.04473, Tables 1-2, FLOPs by their eq. 3); measured seconds for Korthikanti et al. 2022 "
        "(arXiv:2205.05198, Tables 4-5, sec. 6.3). Assumed where the papers are silent (one rule for every row): "
        "the micro-batch size (Narayanan Table 1 and PTD-P rows; from 1, 2, 4) and the interleaving v are the model's fastest "
        "choice that fits in memory (the authors tuned for throughput); scatter/gather on; "
        "Megatron-LM 2021 overlapped no dp/tp communication, 2022 overlaps the backward tp all-reduce.",
        "",
        f"Efficiency {eff:.3g}; the value minimising the largest error over the Megatron-LM rows below (Tables 1, 2 PTD-P, "
        f"4, 5, 6.3) would be {fitted} (largest error {fitted_worst:.1%}). These rows are a validation of the calibrated "
        "efficiency, out of sample (they are multi-GPU training runs; the calibration saw single-GPU inference and "
        "training rows); everything else is counted from the shapes and the device sheet.",
        "",
        "### Iteration time",
        "",
        "| source | model | layout | published s | predicted s | error | compute / memory-bound / bubble / tp / pp / dp s | predicted GB/GPU |",
        "|---|---|---|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        st = r["st"]
        lines.append(
            f"| {r['src']} | {r['name']} | {_cfg(r['cfg'])} | {r['published']:.2f} | {r['predicted']:.2f} | {_pct(r['err'])} | "
            f"{st.compute_s:.2f} / {st.memory_bound_s:.2f} / {st.bubble_s:.2f} / {st.tp_comm_s:.2f} / {st.pp_comm_s:.2f} / {st.dp_comm_s:.2f} | "
            f"{r['mem'].total_bytes / 1e9:.1f}{'' if r['mem'].fits else ' (no fit)'} |")
    lines += ["", "### Per-layer time, 22B, t=8, micro-batch 4 (Korthikanti Table 4)", "",
              "| experiment | published fwd / bwd ms | predicted fwd / bwd ms | error (fwd+bwd) |", "|---|---|---|---:|"]
    for r in lrows:
        lines.append(f"| {r['name']} | {r['pub_f']} / {r['pub_b']} | {r['f']:.1f} / {r['b']:.1f} | {_pct(r['err'])} |")
    lines += ["", "### Memory", "",
              "Neither paper tabulates measured memory per GPU. Checks: every configuration above that the papers ran is "
              "predicted to fit (column `predicted GB/GPU`; 90 % of 80 GB usable), plus:", "",
              "| claim | published | predicted | agrees |", "|---|---|---|---|"]
    for r in mrows:
        lines.append(f"| {r['name']} | {r['published']} | {r['predicted']} | {'yes' if r['ok'] else 'NO'} |")
    nofit = [r for r in rows if not r["mem"].fits]
    errs = [abs(r["err"]) for r in core] + [abs(r["err"]) for r in lrows]
    z3 = [r for r in rows if "ZeRO-3" in r["src"]]
    tt = [r for r in rows if "torchtitan" in r["src"]]
    lines += ["", "### Summary", "",
              f"* Megatron-LM rows (time): {len(errs)} rows, largest error {max(errs):.1%}, mean |error| {sum(errs) / len(errs):.1%}; "
              f"{len(miss)} beyond 15 %" + (": " + ", ".join(r['name'] for r in miss) if miss else "") + ".",
              f"* ZeRO-3 rows (DeepSpeed, Narayanan Table 2): errors {', '.join(_pct(r['err']) for r in z3)}. **These miss badly**: "
              "the model prices ZeRO-3's per-layer weight all-gathers and reduce-scatters with NCCL's latency, hides them behind "
              "the neighbouring layer's compute (prefetch) and still predicts less than the published 3x loss of throughput "
              "from 384 to 1536 GPUs (DeepSpeed 2021's gathers did not overlap as modelled). Treat ZeRO-3 times at large dp as optimistic.",
              f"* torchtitan FSDP2 rows (ZeRO-3 today, Llama on 64 A100): errors {', '.join(_pct(r['err']) for r in tt)}: the model is "
              "pessimistic here; these runs reach 61 % MFU (13B) and ~68 % hardware FLOPs utilisation (70B, full AC), more than "
              "the calibrated GEMM efficiency allows. Their gathers are hidden, as modelled.",
              f"* Configurations predicted not to fit although the paper ran them: {', '.join(r['name'] + ' (' + r['src'] + ')' for r in nofit) or 'none'}.",
              ""]
    return "\n".join(lines)


def render_llama() -> str:
    h100 = hardware.get("H100-SXM")
    lines = ["## Planned layouts: Llama-2 7B and 70B on H100-SXM", "",
             f"Command: `{COMMAND}`. `profilers.parallel.plan(shape, hardware.get('H100-SXM'), n, global_batch=1024)`: "
             "global batch 1024 sequences x 4096 tokens (4M tokens, as Llama 2 was trained), bf16 mixed-precision Adam, "
             "GEMM efficiency: H100-SXM's training-calibration efficiency "
             f"({gemm_efficiency(h100, TimeModel()):.3g}, profilers.parallel.calibration; its per-step overhead and "
             "NCCL latency included), tp up to 8 (one node), overlap of dp gradients on, "
             "backward tp all-reduce overlapped. Projected, not measured.", "",
             "| model | GPUs | status | layout (fastest = cheapest at fixed count) | GB/GPU (params+grads+optim / activations / other) | s/step | MFU | tokens/s | layouts fit / enumerated |",
             "|---|---:|---|---|---|---:|---:|---:|---|"]
    for shp in llama_shapes():
        for n in (8, 64):
            res = plan(shp, h100, n, 1024, time_model=TimeModel())
            if res.status == "ok":
                c = res.fastest
                m, t = c.memory, c.time
                states = (m.parameters_bytes + m.gradients_bytes + m.optimizer_bytes) / 1e9
                lines.append(f"| {shp.name} | {n} | ok | {_cfg(c.config)} | {m.total_bytes / 1e9:.1f} ({states:.1f} / "
                             f"{m.activations_bytes / 1e9:.1f} / {m.other_bytes / 1e9:.1f}) | {t.total_s:.2f} | {t.mfu:.1%} | "
                             f"{t.tokens_per_s:,.0f} | {res.feasible} / {res.evaluated} |")
            else:
                c = res.closest[0]
                lines.append(f"| {shp.name} | {n} | **infeasible** | closest: {_cfg(c.config)} | needs {c.memory.total_bytes / 1e9:.1f} "
                             f"of {c.memory.usable_bytes / 1e9:.0f} usable | - | - | - | 0 / {res.evaluated} |")
    sel = []
    for shp in llama_shapes():
        for n in (8, 64):
            r = plan(shp, h100, n, 1024, time_model=TimeModel(), recompute=("selective", "full"))
            if r.status == "ok":
                sel.append(f"{shp.name} on {n}: {_cfg(r.fastest.config)}, {r.fastest.time.total_s:.2f} s/step, "
                           f"{r.fastest.memory.total_bytes / 1e9:.1f} GB")
    lines += ["", "`recompute=none` stores the attention probabilities (eager attention, Korthikanti's 5as/h term). "
              "FlashAttention-style kernels never store them and recompute them in the backward pass, which is "
              "`recompute=\"selective\"` here (its extra softmax traffic is counted as unfused, so it is an upper bound). "
              "Fastest layouts with selective or full recomputation only: " + "; ".join(sel) + "."]
    lines += ["", "Llama-2-70B cannot be trained with Adam on 8 x 80 GB at all: its model states alone are "
              f"16 B x {llama_shapes()[1].parameters() / 1e9:.1f}e9 = {16 * llama_shapes()[1].parameters() / 1e12:.2f} TB "
              "> 8 x 80 GB, whatever the sharding.", ""]
    return "\n".join(lines)


def write_section(tag: str, text: str) -> None:
    begin, end = f"<!-- BEGIN {tag} -->", f"<!-- END {tag} -->"
    old = RESULTS.read_text() if RESULTS.exists() else "# Parallel training: results\n\n"
    block = f"{begin}\n{text}\n{end}"
    if begin in old:
        new = re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _: block, old, flags=re.S)
    else:
        new = old.rstrip("\n") + "\n\n" + block + "\n"
    RESULTS.write_text(new)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--efficiency", type=float, default=None,
                    help="GEMM efficiency (default: the calibrated A100-80GB fused matmul efficiency)")
    ap.add_argument("--fit", action="store_true", help="scan the efficiency that minimises the largest error")
    ap.add_argument("--write", action="store_true", help=f"write the sections of {RESULTS.name}")
    args = ap.parse_args(argv)
    dev = selene_a100()
    if args.fit:
        e, worst = fit(dev)
        print(f"min-max efficiency: {e} (largest Megatron-row error {worst:.1%})")
    val = render_validation(args.efficiency if args.efficiency is not None else calibrated_efficiency(), dev)
    llama = render_llama()
    print(val)
    print(llama)
    if args.write:
        write_section("megatron_validation", val)
        write_section("llama_plans", llama)
        print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
