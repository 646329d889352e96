"""Benchmarks of the profilers themselves (issue: profilers, deliverable 8).

1. measure() overhead: its wall time over the time of the runs it times (latency + train-step
   loops), and stability: the coefficient of variation of the reported median over 5 calls.
2. analyze() wall time and peak RSS for the Llama-2-7B and -70B configs, each in a fresh
   subprocess (so the RSS is analyze's own, imports included).

    python benchmarks/profilers_bench.py [--out benchmarks/results/profilers.md]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _models():
    import torch
    from torch import nn

    from profilers import workloads

    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(256, 4, 1024, batch_first=True, dropout=0.0), 4,
                                enable_nested_tensor=False)
    return [
        ("digits CNN, batch 64", workloads.get("digits"), None),
        ("4-layer transformer encoder d=256, batch 8 x 128", enc, torch.randn(8, 128, 256)),
    ]


def bench_measure(repeats: int = 5) -> list[dict]:
    from profilers import measure

    rows = []
    for name, model, inputs in _models():
        medians, trains, overheads = [], [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            p = measure(model, inputs, time_cap_s=5.0)
            wall = time.perf_counter() - t0
            timed = p.latency.timed_s + (p.train_step.timed_s if p.train_step else 0.0)
            medians.append(p.latency.median_s)
            trains.append(p.train_step.median_s)
            overheads.append(wall / timed)
        rows.append({
            "model": name,
            "latency_median_s": statistics.median(medians),
            "latency_cv": statistics.stdev(medians) / statistics.mean(medians),
            "train_median_s": statistics.median(trains),
            "train_cv": statistics.stdev(trains) / statistics.mean(trains),
            "overhead_wall_over_timed": statistics.median(overheads),
            "runs": p.latency.runs,
        })
    return rows


_ANALYZE_CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from profilers import analyze
p = analyze(sys.argv[1], batch_size=1, seq_len=int(sys.argv[2]), dtype="bf16")
wall = time.perf_counter() - t0
print(json.dumps({"wall_s": wall, "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "parameters": p.parameters, "forward_flops": p.forward_flops, "train_flops": p.train_flops}))
"""


def bench_analyze() -> list[dict]:
    rows = []
    for cfg in ("llama-2-7b", "llama-2-70b"):
        out = subprocess.run([sys.executable, "-c", _ANALYZE_CHILD, cfg, "4096"], capture_output=True, text=True,
                             check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        rows.append({"config": cfg, **json.loads(out.stdout.strip().splitlines()[-1])})
    return rows


def render(mrows: list[dict], arows: list[dict], command: str) -> str:
    lines = ["## Profilers: measure() overhead and stability, analyze() cost", "",
             f"Command: `{command}` (2-core CPU machine, torch 2.13.0+cpu; shared and noisy).", "",
             "measure(): 5 calls each, default settings except time_cap_s=5; overhead = measure()'s wall time / "
             "the time of the runs it timed (warm-up, FLOP counting, memory passes and copies are the rest); "
             "CV = stdev / mean of the 5 reported medians.", "",
             "| model | latency median | latency CV | train-step median | train CV | overhead (wall / timed) |",
             "|---|---|---|---|---|---|"]
    for r in mrows:
        lines.append(f"| {r['model']} | {r['latency_median_s'] * 1e3:.3f} ms | {r['latency_cv']:.1%} | "
                     f"{r['train_median_s'] * 1e3:.3f} ms | {r['train_cv']:.1%} | {r['overhead_wall_over_timed']:.2f}x |")
    lines += ["", "analyze() on the meta device, batch 1, seq 4096, bf16, forward + train FLOPs and activations, "
              "in a fresh process (imports included). Targets: 70B under 30 s and 2 GiB RSS.", "",
              "| config | wall | peak RSS | parameters | forward FLOPs | train FLOPs |", "|---|---|---|---|---|---|"]
    for r in arows:
        lines.append(f"| {r['config']} | {r['wall_s']:.1f} s | {r['rss_mib']:.0f} MiB | {r['parameters']:,} | "
                     f"{r['forward_flops'] / 1e12:.1f} T | {r['train_flops'] / 1e12:.1f} T |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None, help="write the markdown section here")
    args = ap.parse_args()
    mrows = bench_measure()
    arows = bench_analyze()
    text = render(mrows, arows, "python benchmarks/profilers_bench.py" + (f" --out {args.out}" if args.out else ""))
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
